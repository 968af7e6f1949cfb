//! Runtime and global parameters through the management API, as a RabbitMQ node
//! without the federation and shovel plugins answers (checked by hand against
//! RabbitMQ 3.10.8): a vhost's limits as the `vhost-limits` parameter `limits` (the
//! same limits `/api/vhost-limits` shows, enforced), any other component refused with
//! RabbitMQ's 400, global parameters kept, listed, exported and imported.

mod common;

use common::http::{GUEST, call, get_json, http};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("guest", "guest");

#[tokio::test]
async fn vhost_limits_are_a_runtime_parameter_and_other_components_are_refused()
-> anyhow::Result<()> {
    let (b, base) = common::http::start_with_api(broker::Broker::builder()).await?;
    let path = "/api/parameters/vhost-limits/%2F/limits";
    call(
        &base,
        ADMIN,
        "PUT",
        path,
        Some(json!({"value": {"max-queues": 5}})),
        201,
    )
    .await?;
    call(
        &base,
        ADMIN,
        "PUT",
        path,
        Some(json!({"value": {"max-queues": 6}})),
        204,
    )
    .await?;
    let limits = json!({"value": {"max-queues": 6}, "vhost": "/", "component": "vhost-limits", "name": "limits"});
    assert_eq!(get_json(&base, "/api/parameters").await?, json!([limits]));
    assert_eq!(
        get_json(&base, "/api/parameters/vhost-limits/%2F").await?,
        json!([limits])
    );
    assert_eq!(get_json(&base, path).await?, limits);
    // The same limits as /api/vhost-limits.
    assert_eq!(
        get_json(&base, "/api/vhost-limits").await?,
        json!([{"vhost": "/", "value": {"max-queues": 6}}])
    );
    let bad = call(
        &base,
        ADMIN,
        "PUT",
        path,
        Some(json!({"value": {"bogus": 5}})),
        400,
    )
    .await?;
    assert_eq!(
        bad["reason"],
        json!("Validation failed\n\nUnrecognised terms [{<<\"bogus\">>,5}] in limits\n")
    );
    let other = call(
        &base,
        ADMIN,
        "PUT",
        "/api/parameters/federation-upstream/%2F/up",
        Some(json!({"value": {"uri": "amqp://elsewhere"}})),
        400,
    )
    .await?;
    assert_eq!(
        other["reason"],
        json!("Validation failed\n\ncomponent federation-upstream not found\n")
    );
    assert_eq!(
        get_json(&base, "/api/parameters/federation-upstream").await?,
        json!([])
    );
    call(&base, ADMIN, "DELETE", path, None, 204).await?;
    call(&base, ADMIN, "DELETE", path, None, 404).await?;
    assert_eq!(get_json(&base, "/api/vhost-limits").await?, json!([]));
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn global_parameters_are_kept_across_a_restart_and_travel_with_the_definitions()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = || common::http::start_with_api(broker::Broker::builder().data_dir(dir.path()));
    let (b, base) = start().await?;
    let path = "/api/global-parameters/team";
    let (status, _) = http("GET", format!("{base}{path}"), GUEST, None).await?;
    assert_eq!(status, 404);
    call(
        &base,
        ADMIN,
        "PUT",
        path,
        Some(json!({"value": {"owner": "a"}})),
        201,
    )
    .await?;
    call(
        &base,
        ADMIN,
        "PUT",
        path,
        Some(json!({"value": {"owner": "b"}})),
        204,
    )
    .await?;
    let missing = call(&base, ADMIN, "PUT", path, Some(json!({"novalue": 1})), 400).await?;
    assert_eq!(missing["reason"], json!("[{key_missing,value}]"));
    assert_eq!(
        get_json(&base, path).await?,
        json!({"value": {"owner": "b"}, "name": "team"})
    );
    b.shutdown().await;

    let (b, base) = start().await?;
    assert_eq!(
        get_json(&base, "/api/global-parameters").await?,
        json!([{"value": {"owner": "b"}, "name": "team"}])
    );
    let defs = get_json(&base, "/api/definitions").await?;
    assert_eq!(
        defs["global_parameters"],
        json!([{"name": "team", "value": {"owner": "b"}}])
    );
    call(&base, ADMIN, "DELETE", path, None, 204).await?;
    call(&base, ADMIN, "DELETE", path, None, 404).await?;
    b.shutdown().await;

    // Into another broker, with RabbitMQ's own cluster identity skipped.
    let (c, base_c) = common::http::start_with_api(broker::Broker::builder()).await?;
    let mut file: Value = defs;
    file["global_parameters"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("a list"))?
        .push(json!({"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-x"}));
    call(&base_c, ADMIN, "POST", "/api/definitions", Some(file), 204).await?;
    assert_eq!(
        get_json(&base_c, "/api/global-parameters").await?,
        json!([{"value": {"owner": "b"}, "name": "team"}])
    );
    c.shutdown().await;
    Ok(())
}
