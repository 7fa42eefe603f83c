//! Automatic compaction of the store's history, with etcd's flags: `--auto-compaction-mode
//! periodic|revision` and `--auto-compaction-retention`.
//!
//! - **periodic** keeps at least the retention's worth of history: every tenth of the
//!   retention (at most every hour, as etcd) the leader notes the current revision, and it
//!   compacts to the newest noted revision that is at least the retention old.
//! - **revision** keeps the last `retention` revisions: every five minutes (as etcd) the leader
//!   compacts to the current revision minus the retention.
//!
//! Only the leader proposes, through the log like a client's Compact, so every member
//! compacts at the same revision. A member that becomes leader starts noting afresh (etcd's
//! compactor does the same), so a leader change delays a periodic compaction by at most the
//! retention. Rationale for on by default (periodic, 1 hour; etcd's default is off): the store
//! lives in memory and keeps every version until compacted, so a long-running cluster whose
//! clients never compact would grow until its quota refuses writes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::etcdserverpb::CompactionRequest;
use crate::proto::flotillapb::internal_request;
use crate::services::ServiceState;

/// How history is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionPolicy {
    /// No automatic compaction.
    Off,
    /// Keep at least this long of history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// How often the revision mode compacts, as etcd's revision compactor.
const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// The longest gap between two notes of the periodic mode, as etcd's.
const PERIODIC_NOTE_INTERVAL_MAX: Duration = Duration::from_secs(60 * 60);

impl CompactionPolicy {
    /// Reads etcd's two flags: `mode` is `periodic` or `revision`; `retention` is, for
    /// periodic, a number of hours or a duration such as `30m` (0: off), and for revision a
    /// number of revisions (0: off).
    pub fn parse(mode: &str, retention: &str) -> Result<CompactionPolicy, String> {
        match mode {
            "periodic" => {
                let duration = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 60 * 60),
                    Err(_) => crate::config::parse_duration(retention).map_err(|error| {
                        format!("--auto-compaction-retention {retention:?}: {error}")
                    })?,
                };
                Ok(if duration.is_zero() {
                    CompactionPolicy::Off
                } else {
                    CompactionPolicy::Periodic(duration)
                })
            }
            "revision" => {
                let revisions: i64 = retention.parse().map_err(|_| {
                    format!(
                        "--auto-compaction-retention {retention:?}: revision mode takes a number \
                         of revisions"
                    )
                })?;
                if revisions < 0 {
                    return Err(format!(
                        "--auto-compaction-retention {retention:?} must not be negative"
                    ));
                }
                Ok(if revisions == 0 {
                    CompactionPolicy::Off
                } else {
                    CompactionPolicy::Revision(revisions)
                })
            }
            other => Err(format!(
                "--auto-compaction-mode {other:?}: use periodic or revision"
            )),
        }
    }

    /// How often the compactor wakes.
    fn interval(&self) -> Option<Duration> {
        match *self {
            CompactionPolicy::Off => None,
            CompactionPolicy::Periodic(retention) => Some(
                (retention / 10)
                    .min(PERIODIC_NOTE_INTERVAL_MAX)
                    .max(Duration::from_millis(100)),
            ),
            CompactionPolicy::Revision(_) => Some(REVISION_MODE_INTERVAL),
        }
    }
}

/// The periodic mode's notes: (when, revision), oldest first.
#[derive(Debug, Default)]
pub struct PeriodicNotes {
    notes: VecDeque<(Instant, i64)>,
}

impl PeriodicNotes {
    /// Notes `revision` at `now`, and returns the revision to compact to, if one is due: the
    /// newest noted at least `retention` before `now`. The notes it passes are dropped.
    pub fn note(&mut self, now: Instant, revision: i64, retention: Duration) -> Option<i64> {
        self.notes.push_back((now, revision));
        let mut due = None;
        while let Some(&(noted_at, noted)) = self.notes.front() {
            if now.duration_since(noted_at) < retention {
                break;
            }
            due = Some(noted);
            self.notes.pop_front();
        }
        due
    }

    /// Forgets every note (leadership went).
    pub fn clear(&mut self) {
        self.notes.clear();
    }
}

/// Starts the compactor of `policy` on the current tokio runtime; nothing for `Off`.
pub fn start(state: Arc<ServiceState>, policy: CompactionPolicy) {
    let Some(interval) = policy.interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        let mut notes = PeriodicNotes::default();
        loop {
            ticks.tick().await;
            let status = state.node.status();
            if status.leader != Some(status.id) {
                notes.clear();
                continue;
            }
            let current = state.reader.current_revision();
            let target = match policy {
                CompactionPolicy::Off => None,
                CompactionPolicy::Periodic(retention) => {
                    notes.note(Instant::now(), current, retention)
                }
                CompactionPolicy::Revision(kept) => Some(current - kept),
            };
            let Some(revision) = target.filter(|&r| r > state.reader.compacted_revision()) else {
                continue;
            };
            let request = internal_request::Request::Compaction(CompactionRequest {
                revision,
                physical: false,
            });
            match state.node.propose(request).await {
                Ok(_) => tracing::info!("compacted the history up to revision {revision}"),
                Err(error) => tracing::info!("automatic compaction to {revision}: {error}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_read_as_etcd_reads_them() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            CompactionPolicy::parse("periodic", "1"),
            Ok(CompactionPolicy::Periodic(hour))
        );
        assert_eq!(
            CompactionPolicy::parse("periodic", "30m"),
            Ok(CompactionPolicy::Periodic(hour / 2))
        );
        assert_eq!(
            CompactionPolicy::parse("periodic", "0"),
            Ok(CompactionPolicy::Off)
        );
        assert_eq!(
            CompactionPolicy::parse("revision", "1000"),
            Ok(CompactionPolicy::Revision(1000))
        );
        assert!(CompactionPolicy::parse("revision", "1h").is_err());
        assert!(CompactionPolicy::parse("hourly", "1").is_err());
        assert_eq!(
            CompactionPolicy::Periodic(hour * 72).interval(),
            Some(hour),
            "at most hourly"
        );
        assert_eq!(
            CompactionPolicy::Periodic(hour / 2).interval(),
            Some(Duration::from_secs(180))
        );
    }

    #[test]
    fn periodic_notes_keep_at_least_the_retention() {
        let start = Instant::now();
        let retention = Duration::from_secs(10);
        let mut notes = PeriodicNotes::default();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(notes.note(at(0), 5, retention), None);
        assert_eq!(notes.note(at(4), 9, retention), None);
        assert_eq!(notes.note(at(8), 20, retention), None);
        // Ten seconds after the first note, its revision is the retention old.
        assert_eq!(notes.note(at(10), 25, retention), Some(5));
        assert_eq!(notes.note(at(12), 30, retention), None);
        // Both the notes of 4 s and 8 s are old enough now: the newer is the one to keep to.
        assert_eq!(notes.note(at(19), 31, retention), Some(20));
        notes.clear();
        assert_eq!(notes.note(at(40), 40, retention), None);
    }
}
