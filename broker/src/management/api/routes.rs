//! The API's routes: each path and method to its handler, in the order of RabbitMQ's
//! management API reference (overview and node, health, queues, exchanges, bindings,
//! connections and channels, users and permissions, runtime configuration, metrics).

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};

use super::definitions::*;
use super::objects::*;
use super::users::*;
use super::vhosts::*;
use super::*;
use crate::management::ApiError;
use crate::shared::Shared;

/// Every route.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/nodes", get(node::nodes))
        .route("/api/nodes/{node}", get(node::node))
        .route("/api/nodes/{node}/memory", get(node::node_memory))
        .route("/api/nodes/{node}/plugins", get(node::node_plugins))
        .route("/api/cluster-name", get(node::cluster_name))
        .route(
            "/api/auth/attempts/{node}",
            get(node::auth_attempts).delete(node::reset_auth_attempts),
        )
        .route(
            "/api/auth/attempts/{node}/source",
            get(node::auth_attempts_by_source),
        )
        .route("/api/rebalance/queues", post(node::rebalance_queues))
        .route("/api/feature-flags", get(node::feature_flags))
        .route(
            "/api/feature-flags/{name}/enable",
            put(node::enable_feature_flag),
        )
        .route("/api/deprecated-features", get(node::deprecated_features))
        .route(
            "/api/deprecated-features/used",
            get(node::deprecated_features_used),
        )
        .route("/api/health/checks/alarms", get(health::cluster_alarms))
        .route("/api/health/checks/local-alarms", get(health::local_alarms))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(health::quorum_critical),
        )
        .route(
            "/api/health/checks/virtual-hosts",
            get(health::virtual_hosts),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(health::port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(health::protocol_listener),
        )
        .route("/api/whoami", get(whoami))
        .route("/api/queues", get(queues))
        .route("/api/queues/detailed", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(put_queue).delete(delete_queue),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(purge_queue))
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(topology::queue_bindings),
        )
        .route("/api/queues/{vhost}/{name}/get", post(messages::get))
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange)
                .put(topology::put_exchange)
                .delete(topology::delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(topology::exchange_bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(topology::exchange_bindings_destination),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(messages::publish),
        )
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{exchange}/q/{queue}",
            get(topology::bindings_to_queue).post(bind_queue),
        )
        .route(
            "/api/bindings/{vhost}/e/{exchange}/q/{queue}/{props}",
            delete(topology::delete_queue_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}",
            get(topology::bindings_to_exchange).post(topology::bind_exchange),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}/{props}",
            delete(topology::delete_exchange_binding),
        )
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(close_connection),
        )
        .route(
            "/api/connections/{name}/channels",
            get(conns::connection_channels),
        )
        .route(
            "/api/connections/username/{user}",
            get(conns::user_connections).delete(conns::close_user_connections),
        )
        .route(
            "/api/vhosts/{name}/connections",
            get(conns::vhost_connections),
        )
        .route("/api/vhosts/{name}/channels", get(conns::vhost_channels))
        .route(
            "/api/vhosts/{name}/permissions",
            get(lists::vhost_permissions),
        )
        .route(
            "/api/users/{name}/permissions",
            get(lists::user_permissions),
        )
        .route("/api/channels", get(channels))
        .route("/api/channels/{name}", get(conns::channel))
        .route("/api/topic-permissions", get(topic_permissions::all))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topic_permissions::get)
                .put(topic_permissions::put)
                .delete(topic_permissions::delete),
        )
        .route(
            "/api/vhosts/{name}/topic-permissions",
            get(topic_permissions::of_vhost),
        )
        .route(
            "/api/users/{name}/topic-permissions",
            get(topic_permissions::of_user),
        )
        .route("/api/policies", get(policies::policies))
        .route("/api/policies/{vhost}", get(policies::policies_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(policies::policy_get)
                .put(policies::policy_put)
                .delete(policies::policy_delete),
        )
        .route("/api/operator-policies", get(policies::operator_policies))
        .route(
            "/api/operator-policies/{vhost}",
            get(policies::operator_policies_in),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(policies::operator_policy_get)
                .put(policies::operator_policy_put)
                .delete(policies::operator_policy_delete),
        )
        .route("/api/parameters", get(parameters::parameters))
        .route("/api/parameters/{component}", get(parameters::component))
        .route(
            "/api/parameters/{component}/{vhost}",
            get(parameters::component_in),
        )
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            get(parameters::parameter)
                .put(parameters::put_parameter)
                .delete(parameters::delete_parameter),
        )
        .route("/api/global-parameters", get(parameters::global_parameters))
        .route(
            "/api/global-parameters/{name}",
            get(parameters::global_parameter)
                .put(parameters::put_global_parameter)
                .delete(parameters::delete_global_parameter),
        )
        .route("/api/vhost-limits", get(limits::vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(limits::vhost_limits_of))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(limits::put_vhost_limit).delete(limits::delete_vhost_limit),
        )
        .route("/api/user-limits", get(limits::user_limits))
        .route("/api/user-limits/{user}", get(limits::user_limits_of))
        .route(
            "/api/user-limits/{user}/{name}",
            put(limits::put_user_limit).delete(limits::delete_user_limit),
        )
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_in))
        .route("/api/users", get(users))
        .route(
            "/api/users/without-permissions",
            get(users_without_permissions),
        )
        .route(
            "/api/users/{name}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{name}",
            get(vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route(
            "/api/definitions",
            get(definitions).post(import_definitions),
        )
        .route(
            "/api/definitions/{vhost}",
            get(vhost_definitions).post(import_vhost_definitions),
        )
        .route("/metrics", get(metrics_aggregated))
        .route("/metrics/per-object", get(metrics_per_object))
        .merge(crate::management::dashboard::routes())
        // What is not here answers RabbitMQ's JSON 404, as a RabbitMQ node without
        // the plugin that would serve it (shovels, federation, streams).
        .fallback(|| async { ApiError::NotFound })
        .with_state(shared)
        .layer(axum::middleware::from_fn(
            crate::management::dashboard::no_auth_prompt,
        ))
}
