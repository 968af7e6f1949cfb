#!/usr/bin/env bash
# Runs a list of rabbitmqadmin v2 commands against a management API and prints
# "ok" or "FAILED" with the first line of the output of each; exits with the number
# that failed. Objects are named radm-* and deleted at the end.
#
#   .ci/rabbitmqadmin.sh http://127.0.0.1:15672/api [AMQP_PORT]
#
# Needs rabbitmqadmin 2.x on PATH (or RABBITMQADMIN=path): cargo install rabbitmqadmin.
set -uo pipefail
base=$1
amqp_port=${2:-5672}
R=${RABBITMQADMIN:-rabbitmqadmin}
failed=0 total=0
run() {
    local out rc
    out=$("$R" --base-uri "$base" --username guest --password guest --non-interactive "$@" 2>&1)
    rc=$?
    total=$((total + 1))
    if [ $rc -eq 0 ]; then
        printf 'ok      %s\n' "$*"
    else
        failed=$((failed + 1))
        printf 'FAILED  %s: %s\n' "$*" "$(printf '%s' "$out" | grep -v '^\s*$' | head -3 | tr '\n' ' ' | cut -c1-220)"
    fi
}

node=$(curl -fsS -u guest:guest "$base/overview" | sed -n 's/.*"node":"\([^"]*\)".*/\1/p')
run show overview
run show churn
run show endpoint
run show memory_breakdown_in_bytes --node "$node"
run nodes memory_breakdown_in_percent --node "$node"
run nodes list
run list nodes
run list users
run list vhosts
run list permissions
run list connections
run list channels
run list queues
run list exchanges
run list bindings
run list consumers
run list parameters
run list policies
run list operator_policies
run list vhost_limits
run list user_limits
run list feature_flags
run list deprecated_features
run list deprecated_features_in_use
run list user_connections --username guest
run feature_flags list
run deprecated_features list
run plugins list_all
run health_check local_alarms
run health_check cluster_wide_alarms
run health_check node_is_quorum_critical
run health_check port_listener --port "$amqp_port"
run health_check protocol_listener --protocol amqp
run auth_attempts stats --node "$node"
run rebalance queues
run declare vhost --name radm-vh
run vhosts list
run declare user --name radm-user --password radm-pass --tags monitoring
run declare user --name radm-hashed --password-hash "$("$R" passwords salt_and_hash radm-pass 2>/dev/null | grep -oE '[A-Za-z0-9+/=]{40,}' | head -1)"
run users list
run declare vhost_limit --vhost radm-vh --name max-queues --value 100
run declare user_limit --username radm-user --name max-channels --value 50
run list vhost_limits --vhost radm-vh
run list user_limits --username radm-user
run delete vhost_limit --vhost radm-vh --name max-queues
run delete user_limit --username radm-user --name max-channels
run declare permissions --vhost radm-vh --username radm-user --configure '.*' --read '.*' --write '.*'
run permissions list
run users permissions
run users connections --username guest
run declare exchange --name radm-x --type topic --durable true
run exchanges list
run declare queue --name radm-q --type classic --durable true
run declare queue --name radm-qq --type quorum --durable true
run queues list
run queues show --name radm-q
run declare binding --source radm-x --destination-type queue --destination radm-q --routing-key 'a.#'
run declare binding --source radm-x --destination-type exchange --destination amq.fanout --routing-key b
run bindings list
run publish message --exchange radm-x --routing-key a.b --payload hello
run get messages --queue radm-q --count 1 --ack-mode ack_requeue_true
run purge queue --name radm-q
run queues purge --name radm-q
run definitions export --stdout
run definitions export_from_vhost --vhost radm-vh --stdout
run delete binding --source radm-x --destination-type queue --destination radm-q --routing-key 'a.#' --arguments '{}'
run delete binding --source radm-x --destination-type exchange --destination amq.fanout --routing-key b --arguments '{}'
run connections list
run channels list
run connections close_of_user --username radm-nobody
# Policies, operator policies, runtime and global parameters, vhost metadata.
run policies declare --name radm-pol --pattern '^radm-' --apply-to queues --priority 1 --definition '{"max-length": 100}'
run declare policy --name radm-pol2 --pattern '^radm-x' --apply-to exchanges --definition '{"alternate-exchange": "amq.fanout"}'
run list policies
run policies list
run policies list_in
run policies list_matching_object --name radm-q --type queues
run policies patch --name radm-pol --definition '{"message-ttl": 60000}'
run policies update_definition --name radm-pol --definition-key max-length --new-value 200
run policies delete_definition_keys --name radm-pol --definition-keys message-ttl
run policies update_definitions_of_all_in --definition-key max-length --new-value 300
run policies declare_override --name radm-pol --override-name radm-pol-override --definition '{"max-length": 50}'
run policies declare_blanket --name radm-blanket --apply-to queues --definition '{"max-length-bytes": 1000000}'
run policies list_conflicting
run policies delete_definition_keys_from_all_in --definition-keys max-length-bytes
run policies delete --name radm-pol-override
run policies delete --name radm-blanket
run delete policy --name radm-pol2
run delete policy --name radm-pol
run operator_policies declare --name radm-op --pattern '^radm-' --apply-to queues --definition '{"max-length": 1000}'
run declare operator_policy --name radm-op2 --pattern '^radm-z' --apply-to queues --definition '{"expires": 600000}'
run operator_policies list
run list operator_policies
run operator_policies patch --name radm-op --definition '{"message-ttl": 120000}'
run operator_policies delete --name radm-op
run delete operator_policy --name radm-op2
run -V radm-vh parameters set --component vhost-limits --name limits --value '{"max-queues": 10}'
run parameters list_all
run -V radm-vh parameters list --component vhost-limits
run -V radm-vh parameters list_in --component vhost-limits
run -V radm-vh parameters clear --component vhost-limits --name limits
run -V radm-vh declare parameter --component vhost-limits --name limits --value '{"max-connections": 10}'
run list parameters
run -V radm-vh delete parameter --component vhost-limits --name limits
run global_parameters set --name radm-gp --value '{"owner": "radm"}'
run global_parameters list
run global_parameters clear --name radm-gp
run vhosts declare --name radm-vh2 --description 'radm metadata' --default-queue-type quorum
run exchanges bind --source radm-x --destination-type queue --destination radm-q --routing-key 'c.#'
run exchanges unbind --source radm-x --destination-type queue --destination radm-q --routing-key 'c.#'
run declare queue --name radm-multi-1 --type classic --durable true
run queues delete_multiple --name-pattern '^radm-multi' --approve
run vhosts delete --name radm-vh2
run delete queue --name radm-q
run delete queue --name radm-qq
run delete exchange --name radm-x
run delete permissions --vhost radm-vh --username radm-user
run delete user --name radm-user
run delete user --name radm-hashed
run delete vhost --name radm-vh
echo "$((total - failed)) of $total commands worked"
exit "$failed"
