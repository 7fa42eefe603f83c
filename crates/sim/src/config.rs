//! What a simulation run may do: cluster size, workload and which faults the seed may choose.

use std::fmt;
use std::str::FromStr;

/// The kinds of fault the nemesis may inject. The seed chooses when, where and how hard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSet {
    /// Symmetric and one-way partitions, a minority or the majority cut off, a bridge node.
    pub partition: bool,
    /// Random message loss, up to 20%.
    pub loss: bool,
    /// Duplicated messages.
    pub duplicate: bool,
    /// Delay spikes, which also reorder messages.
    pub delay: bool,
    /// A node crashes, losing everything it had not persisted, and restarts later.
    pub crash: bool,
    /// A node is neither ticked nor stepped for a while.
    pub pause: bool,
    /// A node receives many ticks at once.
    pub clock: bool,
    /// Learners added and promoted, nodes removed, joint changes.
    pub membership: bool,
    /// Leadership transfers.
    pub transfer: bool,
    /// Some seeds use lease-based reads instead of ReadIndex.
    pub lease: bool,
    /// With the WAL: a node's fsync fails, so it stops in the middle of a write, and the power
    /// failure that follows loses or tears what it had not synced. (Every crash with the WAL
    /// also loses or tears the unsynced tail, as the seed chooses.)
    pub disk: bool,
    /// With the WAL: a bit flips in an old record (or the newest snapshot) of a crashed node,
    /// on a minority of the nodes. The node refuses to start; the operator leaves it down or
    /// replaces it with a new member.
    pub corrupt: bool,
}

/// The names `--faults` accepts, in the order [`FaultSet`]'s `Display` prints them.
pub const FAULT_NAMES: [&str; 12] = [
    "partition",
    "loss",
    "duplicate",
    "delay",
    "crash",
    "pause",
    "clock",
    "membership",
    "transfer",
    "lease",
    "disk",
    "corrupt",
];

impl FaultSet {
    /// Every fault.
    pub fn all() -> FaultSet {
        FaultSet {
            partition: true,
            loss: true,
            duplicate: true,
            delay: true,
            crash: true,
            pause: true,
            clock: true,
            membership: true,
            transfer: true,
            lease: true,
            disk: true,
            corrupt: true,
        }
    }

    /// No fault: a healthy network and nodes that never fail.
    pub fn none() -> FaultSet {
        FaultSet {
            partition: false,
            loss: false,
            duplicate: false,
            delay: false,
            crash: false,
            pause: false,
            clock: false,
            membership: false,
            transfer: false,
            lease: false,
            disk: false,
            corrupt: false,
        }
    }

    fn flags_mut(&mut self) -> [&mut bool; 12] {
        [
            &mut self.partition,
            &mut self.loss,
            &mut self.duplicate,
            &mut self.delay,
            &mut self.crash,
            &mut self.pause,
            &mut self.clock,
            &mut self.membership,
            &mut self.transfer,
            &mut self.lease,
            &mut self.disk,
            &mut self.corrupt,
        ]
    }

    fn flags(&self) -> [bool; 12] {
        [
            self.partition,
            self.loss,
            self.duplicate,
            self.delay,
            self.crash,
            self.pause,
            self.clock,
            self.membership,
            self.transfer,
            self.lease,
            self.disk,
            self.corrupt,
        ]
    }

    /// True if no fault is enabled.
    pub fn is_none(&self) -> bool {
        self.flags().iter().all(|flag| !flag)
    }
}

impl Default for FaultSet {
    fn default() -> Self {
        FaultSet::all()
    }
}

impl FromStr for FaultSet {
    type Err = String;

    /// `all`, `none`, or a comma-separated list of [`FAULT_NAMES`].
    fn from_str(text: &str) -> Result<FaultSet, String> {
        match text {
            "all" => return Ok(FaultSet::all()),
            "none" => return Ok(FaultSet::none()),
            _ => {}
        }
        let mut set = FaultSet::none();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let position = FAULT_NAMES
                .iter()
                .position(|known| *known == name)
                .ok_or_else(|| {
                    format!(
                        "unknown fault {name:?}; expected all, none or some of {}",
                        FAULT_NAMES.join(",")
                    )
                })?;
            *set.flags_mut()[position] = true;
        }
        Ok(set)
    }
}

impl fmt::Display for FaultSet {
    /// The form [`FaultSet::from_str`] reads back, so a replay command can print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultSet::all() {
            return f.write_str("all");
        }
        if self.is_none() {
            return f.write_str("none");
        }
        let names: Vec<&str> = FAULT_NAMES
            .iter()
            .zip(self.flags())
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What each node persists into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageKind {
    /// The real WAL and snapshot files (`storage::DiskLog`), each node on its own simulated
    /// disk (`storage::SimDisk`), so that crashes lose what was not synced, tear the last
    /// write, and can meet damaged records.
    #[default]
    Wal,
    /// `raft::MemoryStorage`: a crash keeps exactly what the persist step wrote. Faster, and
    /// blind to the WAL's bugs.
    Memory,
}

impl FromStr for StorageKind {
    type Err = String;

    /// `wal` or `memory`.
    fn from_str(text: &str) -> Result<StorageKind, String> {
        match text {
            "wal" => Ok(StorageKind::Wal),
            "memory" => Ok(StorageKind::Memory),
            _ => Err(format!("unknown storage {text:?}; expected wal or memory")),
        }
    }
}

impl fmt::Display for StorageKind {
    /// The form [`StorageKind::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageKind::Wal => "wal",
            StorageKind::Memory => "memory",
        })
    }
}

/// A deliberate bug for the detection tests: one of the core's, or one in the simulator's own
/// driver or state machine. Only with the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A bug planted in the Raft core.
    Core(raft::PlantedBug),
    /// The driver acknowledges a write when the leader accepts the proposal, before it commits.
    AckBeforeCommit,
    /// A get is served from the local state machine of whatever node the client reached,
    /// without ReadIndex.
    StaleLocalRead,
    /// A bug planted in the node shell the server runs (see `server::shell::ShellBug`).
    Shell(server::shell::ShellBug),
}

/// The settings of a simulation run; the seed chooses everything else.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Founding voters: 1, 3, 5, 7 or 9.
    pub nodes: usize,
    /// How many client operations to invoke, at most.
    pub ops: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// How long faults are injected, in ticks, before everything heals.
    pub chaos_ticks: u64,
    /// The faults the seed may choose from.
    pub faults: FaultSet,
    /// What the nodes persist into.
    pub storage: StorageKind,
    /// How many recent events a failure report shows.
    pub recent_events: usize,
    /// Keep every event, for `--trace`.
    pub keep_trace: bool,
    /// Check directly that a leader moves its commit index only to an entry of its own term
    /// (on by default). The detection tests switch it off to show that breaking the rule is
    /// also caught by its consequence, a committed entry overwritten.
    pub check_commit_rule: bool,
    /// A deliberate bug to plant.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            ops: 200,
            clients: 4,
            chaos_ticks: 1000,
            faults: FaultSet::all(),
            storage: StorageKind::default(),
            recent_events: 60,
            keep_trace: false,
            check_commit_rule: true,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_sets_print_what_they_parse() {
        for text in [
            "all",
            "none",
            "partition,crash",
            "loss,lease",
            "crash,disk,corrupt",
        ] {
            let set: FaultSet = text.parse().expect("valid");
            assert_eq!(set.to_string(), text);
        }
        let set: FaultSet = "crash".parse().expect("valid");
        assert!(set.crash);
        assert!(!set.partition);
        assert!("crash,meteor".parse::<FaultSet>().is_err());
    }

    #[test]
    fn storage_kinds_print_what_they_parse() {
        for kind in [StorageKind::Wal, StorageKind::Memory] {
            assert_eq!(kind.to_string().parse::<StorageKind>(), Ok(kind));
        }
        assert!("disk".parse::<StorageKind>().is_err());
    }
}
