//! What happened in a run: every event is folded into a 64-bit hash (two runs of the same seed
//! must give the same hash), the most recent ones are kept in a bounded ring for the failure
//! report, and all of them can be kept for `--trace`.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

use raft::{NodeId, Role};

/// FNV-1a, 64 bits: small, fast and the same on every platform and Rust version.
///
/// Rationale: `std`'s default hasher is randomly keyed per process, so it cannot give a hash
/// that two runs can compare.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;

    /// The hash of nothing.
    pub fn new() -> Fnv64 {
        Fnv64(Fnv64::OFFSET)
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64::new()
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Fnv64::PRIME);
        }
    }

    // Integers are hashed as little-endian bytes whatever the platform, and `usize` as 64 bits,
    // so that the trace hash does not depend on the machine.
    fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn write_isize(&mut self, value: isize) {
        self.write_u64(value as u64);
    }
}

/// A client operation as the trace shows it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OpSummary {
    /// A put of `value` to `key`.
    Put {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// A read of `key`.
    Get {
        /// The key.
        key: u64,
    },
    /// A compare-and-swap on `key`.
    CompareAndSwap {
        /// The key.
        key: u64,
        /// The expected value (`None`: absent).
        expected: Option<u64>,
        /// The new value.
        new: u64,
    },
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OpSummary::Put { key, value } => write!(f, "put k{key}={value}"),
            OpSummary::Get { key } => write!(f, "get k{key}"),
            OpSummary::CompareAndSwap { key, expected, new } => match expected {
                Some(expected) => write!(f, "cas k{key} {expected}->{new}"),
                None => write!(f, "cas k{key} absent->{new}"),
            },
        }
    }
}

/// The shape of a message, without its entries.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct MessageSummary {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term.
    pub term: u64,
    /// The kind, as the core names it.
    pub kind: &'static str,
    /// The main index the message carries (previous index, match index, read index...).
    pub index: u64,
    /// A second number: entry count, commit index, or 1/0 for granted/rejected.
    pub detail: u64,
}

impl fmt::Display for MessageSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{} {} term={} index={} detail={}",
            self.from, self.to, self.kind, self.term, self.index, self.detail
        )
    }
}

/// Why the network did not deliver a message.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss.
    Lost,
    /// The link is cut.
    Partitioned,
    /// The receiver is down or removed.
    ReceiverDown,
}

/// One thing that happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Event {
    /// A node's clock advanced by `count` ticks (more than one is a clock jump).
    Tick {
        /// The node.
        node: NodeId,
        /// How many ticks.
        count: u64,
    },
    /// A message entered the network, to arrive after `delay`.
    Send {
        /// The message.
        message: MessageSummary,
        /// Its delay in time units.
        delay: u64,
    },
    /// A message arrived and was stepped.
    Deliver {
        /// The message.
        message: MessageSummary,
    },
    /// A message was dropped.
    Drop {
        /// The message.
        message: MessageSummary,
        /// Why.
        reason: DropReason,
    },
    /// A node changed role or leader.
    Role {
        /// The node.
        node: NodeId,
        /// Its new role.
        role: Role,
        /// Its term.
        term: u64,
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// A node persisted a hard state.
    HardState {
        /// The node.
        node: NodeId,
        /// Term.
        term: u64,
        /// Vote.
        vote: Option<NodeId>,
        /// Commit index.
        commit: u64,
    },
    /// A node persisted entries.
    Persist {
        /// The node.
        node: NodeId,
        /// First index written.
        first: u64,
        /// Last index written.
        last: u64,
        /// Term of the last entry.
        term: u64,
    },
    /// A node applied an entry.
    Apply {
        /// The node.
        node: NodeId,
        /// Index.
        index: u64,
        /// Term.
        term: u64,
    },
    /// A node installed a snapshot in its state machine.
    InstallSnapshot {
        /// The node.
        node: NodeId,
        /// Snapshot index.
        index: u64,
    },
    /// A client sent an operation to a node.
    Invoke {
        /// The client.
        client: u64,
        /// The node it sent to.
        node: NodeId,
        /// The operation.
        op: OpSummary,
        /// Which attempt (1 for the first send).
        attempt: u64,
    },
    /// A client got its answer (for a get, `value`; for a compare-and-swap, 1 if it swapped).
    Complete {
        /// The client.
        client: u64,
        /// The operation.
        op: OpSummary,
        /// The value read or the swap result.
        value: Option<u64>,
    },
    /// A client gave up on an operation: its outcome is unknown.
    GiveUp {
        /// The client.
        client: u64,
        /// The operation.
        op: OpSummary,
    },
    /// Something rarer (a fault, a membership change), described in words.
    Note(String),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Tick { node, count } => write!(f, "tick n{node} x{count}"),
            Event::Send { message, delay } => write!(f, "send {message} delay={delay}"),
            Event::Deliver { message } => write!(f, "deliver {message}"),
            Event::Drop { message, reason } => write!(f, "drop {message} ({reason:?})"),
            Event::Role {
                node,
                role,
                term,
                leader,
            } => {
                write!(f, "n{node} is {role:?} at term {term} (leader {leader:?})")
            }
            Event::HardState {
                node,
                term,
                vote,
                commit,
            } => {
                write!(
                    f,
                    "n{node} persists term={term} vote={vote:?} commit={commit}"
                )
            }
            Event::Persist {
                node,
                first,
                last,
                term,
            } => {
                write!(
                    f,
                    "n{node} persists entries {first}..={last} (last term {term})"
                )
            }
            Event::Apply { node, index, term } => write!(f, "n{node} applies {index}/{term}"),
            Event::InstallSnapshot { node, index } => {
                write!(f, "n{node} installs snapshot at {index}")
            }
            Event::Invoke {
                client,
                node,
                op,
                attempt,
            } => {
                write!(f, "client {client} -> n{node}: {op} (attempt {attempt})")
            }
            Event::Complete { client, op, value } => {
                write!(f, "client {client} <- {op} = {value:?}")
            }
            Event::GiveUp { client, op } => write!(f, "client {client} gives up on {op}"),
            Event::Note(text) => f.write_str(text),
        }
    }
}

/// The record of a run.
#[derive(Debug)]
pub struct Trace {
    hash: Fnv64,
    count: u64,
    recent: VecDeque<(u64, Event)>,
    recent_max: usize,
    all: Option<Vec<(u64, Event)>>,
}

impl Trace {
    /// A trace that keeps the last `recent_max` events, and every event if `keep_all`.
    pub fn new(recent_max: usize, keep_all: bool) -> Trace {
        Trace {
            hash: Fnv64::new(),
            count: 0,
            recent: VecDeque::with_capacity(recent_max),
            recent_max,
            all: keep_all.then(Vec::new),
        }
    }

    /// Records `event` at time `now`.
    pub fn record(&mut self, now: u64, event: Event) {
        now.hash(&mut self.hash);
        event.hash(&mut self.hash);
        self.count += 1;
        if let Some(all) = &mut self.all {
            all.push((now, event.clone()));
        }
        if self.recent_max == 0 {
            return;
        }
        if self.recent.len() == self.recent_max {
            self.recent.pop_front();
        }
        self.recent.push_back((now, event));
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// How many events were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The most recent events, oldest first, as text lines.
    pub fn recent_lines(&self) -> Vec<String> {
        self.recent
            .iter()
            .map(|(time, event)| format!("t={time} {event}"))
            .collect()
    }

    /// Every event as text lines, if the trace keeps them all.
    pub fn all_lines(&self) -> Option<Vec<String>> {
        self.all.as_ref().map(|all| {
            all.iter()
                .map(|(time, event)| format!("t={time} {event}"))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        let mut empty = Fnv64::new();
        empty.write(b"");
        assert_eq!(empty.finish(), 0xcbf2_9ce4_8422_2325);
        let mut a = Fnv64::new();
        a.write(b"a");
        assert_eq!(a.finish(), 0xaf63_dc4c_8601_ec8c);
        let mut foobar = Fnv64::new();
        foobar.write(b"foobar");
        assert_eq!(foobar.finish(), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_ring_keeps_only_the_latest_events() {
        let mut trace = Trace::new(2, false);
        for node in 1..=3 {
            trace.record(node, Event::Tick { node, count: 1 });
        }
        assert_eq!(trace.count(), 3);
        assert_eq!(
            trace.recent_lines(),
            vec!["t=2 tick n2 x1", "t=3 tick n3 x1"]
        );
        assert!(trace.all_lines().is_none());
    }

    #[test]
    fn different_events_give_different_hashes() {
        let mut first = Trace::new(0, false);
        let mut second = Trace::new(0, false);
        first.record(1, Event::Tick { node: 1, count: 1 });
        second.record(1, Event::Tick { node: 2, count: 1 });
        assert_ne!(first.hash(), second.hash());
    }
}
