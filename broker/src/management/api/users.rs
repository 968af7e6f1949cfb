//! `/api/users`: list and read users (with their `password_hash`, as RabbitMQ shows
//! it), create or change them (`PUT`, with `password` or, as rabbitmqadmin v2's
//! `users declare` sends, a salted `password_hash`) and delete them. Every change is
//! saved with the user table (see [`super::save_users`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiResult, St, auth_error, body_json, created, no_content, ok, save_users};
use crate::management::ApiError;
use crate::management::access::Admin;
use crate::shared::Shared;

/// A user as RabbitMQ lists and exports it, with its limits from `s`.
pub(super) fn user_json(s: &Shared, name: &str, tags: &[String], hash: &str) -> Value {
    let limits = s
        .resource_limits
        .read()
        .users
        .get(name)
        .cloned()
        .unwrap_or_default();
    json!({
        "name": name,
        "password_hash": hash,
        "tags": tags,
        "hashing_algorithm": crate::auth::SHA256_HASHING,
        "limits": limits,
    })
}

pub(super) async fn users(State(s): St, _: Admin) -> ApiResult {
    let list = s.users.read().list_users_with_hashes();
    ok(Value::Array(
        list.iter()
            .map(|(n, t, h)| user_json(&s, n, t, h))
            .collect(),
    ))
}

/// The users without permissions on any vhost.
pub(super) async fn users_without_permissions(State(s): St, _: Admin) -> ApiResult {
    let users = s.users.read();
    let with: std::collections::HashSet<String> = users
        .list_permissions()
        .into_iter()
        .map(|(u, _, _)| u)
        .collect();
    let list = users.list_users_with_hashes();
    ok(Value::Array(
        list.iter()
            .filter(|(n, _, _)| !with.contains(n.as_str()))
            .map(|(n, t, h)| user_json(&s, n, t, h))
            .collect(),
    ))
}

pub(super) async fn user(State(s): St, _: Admin, Path(name): Path<String>) -> ApiResult {
    let list = s.users.read().list_users_with_hashes();
    let (n, t, h) = list
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(ApiError::NotFound)?;
    ok(user_json(&s, n, t, h))
}

/// Tags as RabbitMQ takes them: a comma-separated string or a list.
pub(super) fn parse_tags(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::BadRequest("tags must be strings".into()))
            })
            .collect(),
        Some(_) => Err(ApiError::BadRequest(
            "tags must be a string or a list".into(),
        )),
    }
}

/// What a `PUT /api/users` body sets the password to, as RabbitMQ reads it:
/// `password` (hashed here), else `password_hash` (base64, under `hashing_algorithm`;
/// `""` is no password), else nothing.
enum NewPassword<'a> {
    Clear(&'a str),
    Hash(Vec<u8>),
    Unchanged,
}

fn new_password(body: &Value) -> Result<NewPassword<'_>, ApiError> {
    let string = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) => Ok(Some(p.as_str())),
        Some(_) => Err(ApiError::BadRequest(format!("{field} must be a string"))),
    };
    if let Some(p) = string("password")? {
        return Ok(NewPassword::Clear(p));
    }
    match string("password_hash")? {
        Some(h) => crate::auth::decode_hash(h, string("hashing_algorithm")?)
            .map(NewPassword::Hash)
            .map_err(|e| ApiError::BadRequest(e.to_string())),
        None => Ok(NewPassword::Unchanged),
    }
}

pub(super) async fn put_user(
    State(s): St,
    _: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = body_json(&body)?;
    let tags = parse_tags(body.get("tags"))?;
    let password = new_password(&body)?;
    let reply = {
        let mut users = s.users.write();
        let exists = users.list_users().iter().any(|(n, _)| *n == name);
        match (exists, password) {
            (false, NewPassword::Unchanged) => {
                return Err(ApiError::BadRequest(
                    "a new user needs a password or a password_hash".into(),
                ));
            }
            (false, NewPassword::Clear(p)) => {
                users.add_user(&name, p, tags);
                created()
            }
            (false, NewPassword::Hash(h)) => {
                users.add_user_with_hash(&name, h, tags);
                created()
            }
            (true, p) => {
                match p {
                    NewPassword::Clear(p) => users.change_password(&name, p),
                    NewPassword::Hash(h) => users.set_password_hash(&name, h),
                    NewPassword::Unchanged => Ok(()),
                }
                .map_err(auth_error)?;
                users.set_tags(&name, tags).map_err(auth_error)?;
                no_content()
            }
        }
    };
    save_users(&s).await?;
    reply
}

pub(super) async fn delete_user(State(s): St, _: Admin, Path(name): Path<String>) -> ApiResult {
    s.users.write().delete_user(&name).map_err(auth_error)?;
    save_users(&s).await?;
    // Its limits go with it, as RabbitMQ's do.
    if s.resource_limits.write().users.remove(&name).is_some() {
        let shared = std::sync::Arc::clone(&s);
        tokio::task::spawn_blocking(move || shared.save_resource_limits())
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("could not save the limits: {e}")))?;
    }
    no_content()
}
