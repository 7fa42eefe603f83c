//! Corruption checks, with etcd's flags: members compare their HashKV at one revision, and a
//! member whose history differs gets the CORRUPT alarm.
//!
//! - `--experimental-initial-corrupt-check`: once a member serves clients after a start, it
//!   compares its own hash with every reachable peer's at its current revision. etcd refuses to
//!   start on a mismatch; Flotilla raises CORRUPT for itself instead, so that the member stays
//!   up to be inspected while `/readyz` fails and load balancers route around it.
//! - `--experimental-corrupt-check-time D`: every D the leader compares its hash with every
//!   member's at its own current revision, and raises CORRUPT for each member that differs.
//!
//! Hashes compare only between members with the same compacted revision (the hash covers what
//! compaction kept); a member that has not reached the revision yet, or cannot be reached, is
//! skipped, as etcd skips it.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{AlarmType, HashKvRequest};
use crate::services::ServiceState;

/// How long one peer's HashKV may take before the check skips it.
const PEER_HASH_TIMEOUT: Duration = Duration::from_secs(5);

/// The members whose HashKV at this member's current revision differs from this member's.
pub async fn mismatched_members(state: &ServiceState) -> Vec<u64> {
    let own = match state.reader.hash_kv(0) {
        Ok(own) => own,
        Err(error) => {
            tracing::warn!("corruption check: hashing the store failed: {error}");
            return Vec::new();
        }
    };
    let own_id = state.node.id();
    let mut mismatched = Vec::new();
    let members = crate::members::all_members(&state.reader);
    for member in members.iter().filter(|m| m.id != own_id && !m.removed) {
        let Ok(channel) = state.leader_channel(member.id) else {
            continue;
        };
        let request = HashKvRequest {
            revision: own.hash_revision,
        };
        let answer = tokio::time::timeout(
            PEER_HASH_TIMEOUT,
            MaintenanceClient::new(channel).hash_kv(request),
        )
        .await;
        let theirs = match answer {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                tracing::info!(
                    "corruption check: member {:x} cannot hash revision {}: {}",
                    member.id,
                    own.hash_revision,
                    status.message()
                );
                continue;
            }
            Err(_) => {
                tracing::info!("corruption check: member {:x} did not answer", member.id);
                continue;
            }
        };
        if differs(&own, theirs.hash, theirs.compact_revision) {
            tracing::error!(
                "corruption check: member {:x}'s hash at revision {} is {:08x}, member {:x}'s \
                 is {:08x}",
                member.id,
                own.hash_revision,
                theirs.hash,
                own_id,
                own.hash
            );
            mismatched.push(member.id);
        }
    }
    tracing::debug!(
        "corruption check at revision {}: {} mismatched",
        own.hash_revision,
        mismatched.len()
    );
    mismatched
}

/// Whether a peer's hash at our revision shows a different history: only hashes of the same
/// compacted revision compare.
fn differs(own: &crate::mvcc::KvHash, their_hash: u32, their_compact_revision: i64) -> bool {
    their_compact_revision == own.compact_revision && their_hash != own.hash
}

/// The check at start: after the member first serves clients, compares it with its peers; on
/// a mismatch, raises CORRUPT for this member.
pub fn check_at_start(state: Arc<ServiceState>) {
    tokio::spawn(async move {
        let mismatched = mismatched_members(&state).await;
        if mismatched.is_empty() {
            tracing::info!("initial corruption check passed");
            return;
        }
        tracing::error!(
            "member {:x} found data inconsistency with peers {mismatched:x?}; raising CORRUPT",
            state.node.id()
        );
        state.raise_alarm_for(state.node.id(), AlarmType::Corrupt);
    });
}

/// The leader's check every `interval`: raises CORRUPT for each member whose hash differs.
pub fn check_periodically(state: Arc<ServiceState>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        // A check that took longer than the interval (peers that time out) is not made up for
        // with a burst of checks.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let status = state.node.status();
            if status.leader != Some(status.id) {
                continue;
            }
            for member in mismatched_members(&state).await {
                state.raise_alarm_for(member, AlarmType::Corrupt);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KvHash;

    #[test]
    fn only_hashes_of_the_same_compacted_revision_compare() {
        let own = KvHash {
            hash: 7,
            hash_revision: 40,
            compact_revision: 10,
            keys: 3,
        };
        assert!(!differs(&own, 7, 10));
        assert!(differs(&own, 8, 10));
        assert!(!differs(&own, 8, 12), "another compaction: not comparable");
    }
}
