//! Scenario transcripts under `testdata/`: each file is a readable story of a cluster, with the
//! messages and states it must produce. See `harness/mod.rs` for the commands.

mod harness;

use std::path::PathBuf;

fn transcript(name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.txt"));
    harness::run_transcript(&path);
}

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                transcript(stringify!($name));
            }
        )*
    };
}

transcripts!(
    election,
    split_vote,
    pre_vote,
    no_pre_vote,
    check_quorum,
    figure_8,
    log_conflict,
    stale_append,
    snapshot_catch_up,
    joint_consensus,
    learner,
    leadership_transfer,
    read_index,
    lease_read,
    single_node,
    nine_nodes,
    bad_input,
    leader_removal,
);
