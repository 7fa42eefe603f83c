//! The simulator on a correct cluster: a modest batch of seeds over every cluster size passes,
//! runs replay exactly, and the faults really happen.
//!
//! CI runs the big batch in release through the command line:
//! `cargo run --release -p flotilla -- sim --seeds 2000 --nodes 3,5 --jobs 2`.

use sim::{run, FaultSet, Outcome, SimConfig, StorageKind};

fn config(nodes: usize) -> SimConfig {
    SimConfig {
        nodes,
        ops: 80,
        chaos_ticks: 500,
        ..SimConfig::default()
    }
}

fn assert_passes(outcome: &Outcome, nodes: usize) {
    if let Some(violation) = &outcome.violation {
        panic!(
            "seed {} ({nodes} nodes): {violation}\n{}\nreplay: cargo run --release -p flotilla -- sim \
             --seed {} --nodes {nodes} --ops 80 --chaos-ticks 500 --trace",
            outcome.seed,
            outcome.recent_events.join("\n"),
            outcome.seed
        );
    }
}

#[test]
fn a_batch_of_seeds_over_every_cluster_size_passes() {
    let sizes = [(1, 6), (3, 30), (5, 16), (7, 4), (9, 3)];
    let mut total = sim::Stats::default();
    for (nodes, seeds) in sizes {
        for seed in 0..seeds {
            let outcome = run(seed, &config(nodes));
            assert_passes(&outcome, nodes);
            let stats = outcome.stats;
            total.ops_completed += stats.ops_completed;
            total.crashes += stats.crashes;
            total.messages_dropped += stats.messages_dropped;
            total.config_changes += stats.config_changes;
            total.snapshots_installed += stats.snapshots_installed;
            total.torn_tails += stats.torn_tails;
            total.storage_failures += stats.storage_failures;
            total.corrupted_nodes += stats.corrupted_nodes;
            total.replacements += stats.replacements;
            total.max_term = total.max_term.max(stats.max_term);
            assert!(
                stats.ops_completed > 0,
                "seed {seed} ({nodes} nodes) completed no operation"
            );
        }
    }
    // The faults happened: a run that injected nothing would pass for the wrong reason.
    assert!(total.crashes > 0);
    assert!(total.messages_dropped > 0);
    assert!(total.config_changes > 0);
    assert!(total.snapshots_installed > 0);
    assert!(total.max_term > 5);
    // And the disk faults: torn writes found on restart, failed fsyncs, damaged disks (each
    // refused, or the run would have failed), and failed nodes replaced by new members.
    assert!(total.torn_tails > 0);
    assert!(total.storage_failures > 0);
    assert!(total.corrupted_nodes > 0);
    assert!(total.replacements > 0);
}

#[test]
fn memory_storage_still_passes_and_replays() {
    let config = SimConfig {
        storage: StorageKind::Memory,
        ..config(3)
    };
    for seed in 0..10 {
        let outcome = run(seed, &config);
        assert_passes(&outcome, 3);
        assert_eq!(outcome.stats.torn_tails, 0, "no disk to tear");
        assert_eq!(outcome.stats.corrupted_nodes, 0, "no disk to damage");
        assert_eq!(run(seed, &config).trace_hash, outcome.trace_hash);
    }
}

#[test]
fn a_seed_replays_exactly_and_seeds_differ() {
    let config = config(3);
    let first = run(42, &config);
    let again = run(42, &config);
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.stats, again.stats);
    let other = run(43, &config);
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// Seeds whose runs damaged a disk, tore a write and failed an fsync replay exactly too: the
/// simulated disk and the WAL's recovery depend on nothing but the seed.
#[test]
fn runs_with_disk_faults_replay_exactly() {
    let config = config(5);
    let mut checked = 0;
    for seed in 0..40 {
        let first = run(seed, &config);
        let stats = first.stats;
        if stats.corrupted_nodes + stats.torn_tails + stats.storage_failures == 0 {
            continue;
        }
        let again = run(seed, &config);
        assert_eq!(first.trace_hash, again.trace_hash, "seed {seed}");
        assert_eq!(first.stats, again.stats, "seed {seed}");
        checked += 1;
        if checked == 5 {
            return;
        }
    }
    panic!("only {checked} of 40 seeds had disk faults");
}

#[test]
fn the_full_trace_is_kept_on_request() {
    let tracing = SimConfig {
        keep_trace: true,
        ..config(3)
    };
    let outcome = run(5, &tracing);
    let trace = outcome.trace.expect("kept");
    assert_eq!(trace.len() as u64, outcome.stats.events);
    assert!(trace[0].starts_with("t=0 seed 5: 3 nodes"));
    // Keeping the trace does not change the run.
    assert_eq!(run(5, &config(3)).trace_hash, outcome.trace_hash);
}

#[test]
fn without_faults_every_operation_completes() {
    let config = SimConfig {
        faults: FaultSet::none(),
        ..config(3)
    };
    for seed in 0..4 {
        let outcome = run(seed, &config);
        assert_passes(&outcome, 3);
        assert_eq!(outcome.stats.ops_indeterminate, 0);
        assert_eq!(outcome.stats.ops_completed, outcome.stats.ops_invoked);
        assert_eq!(outcome.stats.crashes, 0);
        assert_eq!(outcome.stats.messages_dropped, 0);
    }
}
