//! Applying the vhost's policies (see [`crate::policy`]) to its queues and exchanges:
//! at declare, after recovery and whenever the policies change.

use std::time::Instant;

use amq_protocol::types::ShortString;

use super::VHost;
use crate::policy::{Target, VhostPolicies};

impl VHost {
    /// Installs the vhost's policies and applies them to every queue and exchange at
    /// once; a lower length limit drops or dead-letters the excess right away (the
    /// housekeeping sweep runs).
    pub(crate) fn set_policies(&mut self, policies: VhostPolicies) {
        self.policies = policies;
        let names: Vec<ShortString> = self.queues.keys().cloned().collect();
        for name in names {
            self.apply_queue_policy(name.as_str());
        }
        for x in self.exchanges.values_mut() {
            x.applied = self.policies.applied(x.name.as_str(), Target::Exchange);
        }
        self.sweep(Instant::now());
    }

    /// Applies the policies that match queue `name` now.
    pub(super) fn apply_queue_policy(&mut self, name: &str) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        let target = if q.quorum {
            Target::QuorumQueue
        } else {
            Target::ClassicQueue
        };
        let applied = self.policies.applied(name, target);
        q.apply_policy(&self.name, applied);
    }
}
