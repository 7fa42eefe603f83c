//! How often each planted bug is caught: runs the first N seeds (default 1000) with each bug
//! and prints the first catching seed and the share of seeds that catch it.
//!
//! `cargo run --release -p flotilla-sim --features planted-bugs --example planted_bug_rates [N]
//! [wal|memory] [FAULTS]`: the storage defaults to the WAL and the faults to all.

use sim::{run, FaultSet, PlantedBug, SimConfig, StorageKind};

fn main() {
    // Panics in the buggy core are caught and counted as violations; do not print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let seeds: u64 = std::env::args()
        .nth(1)
        .map_or(1000, |text| text.parse().expect("a number"));
    let storage: StorageKind = std::env::args().nth(2).map_or(StorageKind::Wal, |text| {
        text.parse().expect("wal or memory")
    });
    let faults: FaultSet = std::env::args()
        .nth(3)
        .map_or(FaultSet::all(), |text| text.parse().expect("a fault set"));
    let small = SimConfig {
        ops: 100,
        chaos_ticks: 600,
        storage,
        faults,
        ..SimConfig::default()
    };
    let cases = [
        (
            "VoteWithoutLogCheck",
            PlantedBug::Core(raft::PlantedBug::VoteWithoutLogCheck),
            true,
        ),
        (
            "CommitOlderTermByCounting",
            PlantedBug::Core(raft::PlantedBug::CommitOlderTermByCounting),
            true,
        ),
        (
            "CommitOlderTermByCounting (rule check off)",
            PlantedBug::Core(raft::PlantedBug::CommitOlderTermByCounting),
            false,
        ),
        (
            "TruncateOnEveryAppend",
            PlantedBug::Core(raft::PlantedBug::TruncateOnEveryAppend),
            true,
        ),
        (
            "JointCommitByIncomingOnly",
            PlantedBug::Core(raft::PlantedBug::JointCommitByIncomingOnly),
            true,
        ),
        (
            "ReadWithoutQuorumConfirmation",
            PlantedBug::Core(raft::PlantedBug::ReadWithoutQuorumConfirmation),
            true,
        ),
        ("AckBeforeCommit", PlantedBug::AckBeforeCommit, true),
        ("StaleLocalRead", PlantedBug::StaleLocalRead, true),
        (
            "HardStateOneReadyLate",
            PlantedBug::Shell(server::shell::ShellBug::HardStateOneReadyLate),
            true,
        ),
        (
            "SyncOnlyEntries",
            PlantedBug::Shell(server::shell::ShellBug::SyncOnlyEntries),
            true,
        ),
        (
            "AdoptBeforeSaved",
            PlantedBug::Shell(server::shell::ShellBug::AdoptBeforeSaved),
            true,
        ),
    ];
    for (name, bug, check_commit_rule) in cases {
        let config = SimConfig {
            planted_bug: Some(bug),
            check_commit_rule,
            ..small.clone()
        };
        let mut first = None;
        let mut caught = 0;
        let mut properties = std::collections::BTreeMap::new();
        for seed in 0..seeds {
            if let Some(violation) = run(seed, &config).violation {
                caught += 1;
                first.get_or_insert(seed);
                *properties.entry(violation.property).or_insert(0) += 1;
            }
        }
        println!("{name}: first caught by seed {first:?}; {caught} of {seeds} seeds catch it; {properties:?}");
    }
}
