//! The small key-value state machine the simulated clients use, and its command encoding.
//!
//! Every write carries its client id and request id. Rationale: a client that times out
//! retries the same request elsewhere, so one request can be committed twice; the state
//! machine remembers each client's last request and answers a repeat with the first answer
//! instead of executing it again, which keeps a retried compare-and-swap exactly-once.

use std::collections::BTreeMap;
use std::hash::Hasher;

use bytes::Bytes;

use crate::trace::Fnv64;

/// A client of the simulated store. Client 0 is the simulator's own liveness probe.
pub type ClientId = u64;

/// A write, as it travels in a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client that sent it.
    pub client: ClientId,
    /// The client's request number; grows by one per operation, repeats on a retry.
    pub request: u64,
    /// What to do.
    pub action: Action,
}

/// What a [`Command`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    CompareAndSwap {
        /// The key.
        key: u64,
        /// The value the key must hold.
        expected: Option<u64>,
        /// The value written on success.
        new: u64,
    },
    /// Changes nothing; the liveness probe commits one after the faults heal.
    Probe,
}

/// What a write answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The put was applied.
    Put,
    /// Whether the compare-and-swap swapped.
    CompareAndSwap(bool),
    /// The probe was applied.
    Probe,
}

const TAG_PUT: u8 = 1;
const TAG_COMPARE_AND_SWAP: u8 = 2;
const TAG_PROBE: u8 = 3;

impl Command {
    /// The bytes a log entry carries.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(48);
        let (tag, words): (u8, [u64; 4]) = match self.action {
            Action::Put { key, value } => (TAG_PUT, [key, value, 0, 0]),
            Action::CompareAndSwap { key, expected, new } => (
                TAG_COMPARE_AND_SWAP,
                [
                    key,
                    u64::from(expected.is_some()),
                    expected.unwrap_or(0),
                    new,
                ],
            ),
            Action::Probe => (TAG_PROBE, [0; 4]),
        };
        out.push(tag);
        for word in [self.client, self.request].iter().chain(&words) {
            out.extend_from_slice(&word.to_le_bytes());
        }
        Bytes::from(out)
    }

    /// Reads back what [`Command::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        let (&tag, rest) = bytes.split_first()?;
        if rest.len() != 48 {
            return None;
        }
        let word = |position: usize| {
            let start = position * 8;
            u64::from_le_bytes(rest[start..start + 8].try_into().expect("8 bytes"))
        };
        let action = match tag {
            TAG_PUT => Action::Put {
                key: word(2),
                value: word(3),
            },
            TAG_COMPARE_AND_SWAP => Action::CompareAndSwap {
                key: word(2),
                expected: (word(3) == 1).then(|| word(4)),
                new: word(5),
            },
            TAG_PROBE => Action::Probe,
            _ => return None,
        };
        Some(Command {
            client: word(0),
            request: word(1),
            action,
        })
    }
}

/// The replicated map, plus each client's last request and its answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    values: BTreeMap<u64, u64>,
    sessions: BTreeMap<ClientId, (u64, Answer)>,
}

impl KvStore {
    /// The value of `key`, if any.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.values.get(&key).copied()
    }

    /// Applies a command. Returns the answer for the client, or `None` for a request older than
    /// the client's last one (the client has moved on and nobody waits for it).
    pub fn apply(&mut self, command: &Command) -> Option<Answer> {
        if let Some(&(last_request, answer)) = self.sessions.get(&command.client) {
            if command.request == last_request {
                return Some(answer);
            }
            if command.request < last_request {
                return None;
            }
        }
        let answer = match command.action {
            Action::Put { key, value } => {
                self.values.insert(key, value);
                Answer::Put
            }
            Action::CompareAndSwap { key, expected, new } => {
                let swapped = self.values.get(&key).copied() == expected;
                if swapped {
                    self.values.insert(key, new);
                }
                Answer::CompareAndSwap(swapped)
            }
            Action::Probe => Answer::Probe,
        };
        self.sessions
            .insert(command.client, (command.request, answer));
        Some(answer)
    }

    /// What a compare-and-swap would answer now, without applying it. Only the planted bug that
    /// acknowledges writes before they commit uses it.
    pub fn peek(&self, action: &Action) -> Answer {
        match *action {
            Action::Put { .. } => Answer::Put,
            Action::CompareAndSwap { key, expected, .. } => {
                Answer::CompareAndSwap(self.values.get(&key).copied() == expected)
            }
            Action::Probe => Answer::Probe,
        }
    }

    /// The state as snapshot bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        let mut push = |word: u64| out.extend_from_slice(&word.to_le_bytes());
        push(self.values.len() as u64);
        for (&key, &value) in &self.values {
            push(key);
            push(value);
        }
        push(self.sessions.len() as u64);
        for (&client, &(request, answer)) in &self.sessions {
            push(client);
            push(request);
            push(match answer {
                Answer::Put => 0,
                Answer::CompareAndSwap(false) => 1,
                Answer::CompareAndSwap(true) => 2,
                Answer::Probe => 3,
            });
        }
        Bytes::from(out)
    }

    /// Reads back what [`KvStore::encode`] wrote. Empty bytes (the bootstrap snapshot) are the
    /// empty store.
    ///
    /// # Panics
    /// On bytes that [`KvStore::encode`] did not write: snapshots never leave the simulator.
    pub fn decode(bytes: &[u8]) -> KvStore {
        let mut store = KvStore::default();
        if bytes.is_empty() {
            return store;
        }
        let mut words = bytes
            .chunks_exact(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        let mut next = || words.next().expect("a well-formed snapshot");
        for _ in 0..next() {
            let key = next();
            let value = next();
            store.values.insert(key, value);
        }
        for _ in 0..next() {
            let client = next();
            let request = next();
            let answer = match next() {
                0 => Answer::Put,
                1 => Answer::CompareAndSwap(false),
                2 => Answer::CompareAndSwap(true),
                _ => Answer::Probe,
            };
            store.sessions.insert(client, (request, answer));
        }
        store
    }

    /// A hash of the whole state, to compare nodes cheaply.
    pub fn state_hash(&self) -> u64 {
        let mut hash = Fnv64::new();
        for (&key, &value) in &self.values {
            hash.write_u64(key);
            hash.write_u64(value);
        }
        hash.write_u64(u64::MAX);
        for (&client, &(request, answer)) in &self.sessions {
            hash.write_u64(client);
            hash.write_u64(request);
            hash.write_u64(match answer {
                Answer::Put => 0,
                Answer::CompareAndSwap(false) => 1,
                Answer::CompareAndSwap(true) => 2,
                Answer::Probe => 3,
            });
        }
        hash.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_encoding() {
        let commands = [
            Command {
                client: 3,
                request: 9,
                action: Action::Put { key: 1, value: 77 },
            },
            Command {
                client: 1,
                request: 2,
                action: Action::CompareAndSwap {
                    key: 4,
                    expected: None,
                    new: 5,
                },
            },
            Command {
                client: 1,
                request: 3,
                action: Action::CompareAndSwap {
                    key: 4,
                    expected: Some(0),
                    new: 6,
                },
            },
            Command {
                client: 0,
                request: 1,
                action: Action::Probe,
            },
        ];
        for command in commands {
            assert_eq!(Command::decode(&command.encode()), Some(command));
        }
        assert_eq!(Command::decode(b"not a command"), None);
    }

    #[test]
    fn a_repeated_request_is_answered_once_and_not_executed_again() {
        let mut store = KvStore::default();
        let swap = Command {
            client: 1,
            request: 1,
            action: Action::CompareAndSwap {
                key: 2,
                expected: None,
                new: 10,
            },
        };
        assert_eq!(store.apply(&swap), Some(Answer::CompareAndSwap(true)));
        let put = Command {
            client: 2,
            request: 1,
            action: Action::Put { key: 2, value: 11 },
        };
        assert_eq!(store.apply(&put), Some(Answer::Put));
        // The retry of the swap must not swap again (it would fail now) nor change the value.
        assert_eq!(store.apply(&swap), Some(Answer::CompareAndSwap(true)));
        assert_eq!(store.get(2), Some(11));
        let newer = Command {
            client: 1,
            request: 2,
            action: Action::Put { key: 3, value: 1 },
        };
        assert_eq!(store.apply(&newer), Some(Answer::Put));
        assert_eq!(store.apply(&swap), None, "an older request is ignored");
        assert_eq!(store.get(2), Some(11));
    }

    #[test]
    fn snapshots_restore_the_same_state() {
        let mut store = KvStore::default();
        store.apply(&Command {
            client: 1,
            request: 1,
            action: Action::Put { key: 5, value: 6 },
        });
        store.apply(&Command {
            client: 2,
            request: 4,
            action: Action::CompareAndSwap {
                key: 5,
                expected: Some(6),
                new: 7,
            },
        });
        let restored = KvStore::decode(&store.encode());
        assert_eq!(restored, store);
        assert_eq!(restored.state_hash(), store.state_hash());
        assert_eq!(KvStore::decode(&[]), KvStore::default());
        assert_ne!(KvStore::default().state_hash(), store.state_hash());
    }
}

/// The id under which the shell tracks a command's proposer: its client and request number.
/// Rationale: a retried request keeps its id, so whichever of its copies applies first answers
/// the client waiting on that node.
pub fn request_id(client: ClientId, request: u64) -> u64 {
    (client << 40) ^ request
}

/// The store as the node shell's state machine: applies commands from entries, remembers the
/// state's hash after each applied index of the last batch (for the per-index checks), and
/// snapshots and restores as [`KvStore::encode`] and [`KvStore::decode`].
#[derive(Clone, Debug, Default)]
pub struct KvMachine {
    /// The store.
    pub kv: KvStore,
    /// The state hash after each index of the last applied batch.
    hashes: Vec<(u64, u64)>,
}

impl KvMachine {
    /// The machine holding a snapshot's state.
    pub fn from_snapshot(data: &[u8]) -> KvMachine {
        KvMachine {
            kv: KvStore::decode(data),
            hashes: Vec::new(),
        }
    }

    /// The state hash right after `index` was applied, if it was in the last batch.
    pub fn hash_after(&self, index: u64) -> Option<u64> {
        self.hashes
            .iter()
            .find(|&&(applied, _)| applied == index)
            .map(|&(_, hash)| hash)
    }
}

impl server::shell::ShellStateMachine for KvMachine {
    type Response = Answer;

    fn apply(&mut self, entries: &[raft::Entry]) -> Result<Vec<(u64, Answer)>, String> {
        self.hashes.clear();
        let mut answers = Vec::new();
        for entry in entries {
            if let raft::EntryPayload::Normal(data) = &entry.payload {
                if let Some(command) = Command::decode(data.as_ref()) {
                    if let Some(answer) = self.kv.apply(&command) {
                        answers.push((request_id(command.client, command.request), answer));
                    }
                }
            }
            self.hashes.push((entry.index, self.kv.state_hash()));
        }
        Ok(answers)
    }

    fn snapshot(&mut self) -> Result<Bytes, String> {
        Ok(self.kv.encode())
    }

    fn restore(&mut self, snapshot: &raft::Snapshot) -> Result<(), String> {
        self.kv = KvStore::decode(&snapshot.data);
        self.hashes.clear();
        Ok(())
    }
}
