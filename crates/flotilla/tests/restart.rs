//! Restarts as operators do them, with real `flotilla serve` processes on loopback: the whole
//! cluster killed with SIGKILL and started again with `--initial-cluster-state existing`, then
//! with `new`, then one member at a time; every acknowledged write must still be there, and
//! every data directory must pass `flotilla wal verify`. A data directory of another cluster is
//! refused. Base ports 22000 + 100 * k (cluster.rs has 21000 and up).

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{client, run_with_timeout, Cluster, LIVENESS_TIMEOUT};

/// Writes `count` keys `prefix/NNN` spread over the running nodes, retrying each until one
/// write is acknowledged (an election may be under way); records what was acknowledged.
fn write_spread(
    cluster: &Cluster,
    prefix: &str,
    count: usize,
    acknowledged: &mut BTreeMap<String, String>,
) {
    let endpoints = cluster.running_endpoints();
    let deadline = Instant::now() + LIVENESS_TIMEOUT;
    for number in 0..count {
        let (key, value) = (format!("{prefix}/{number:03}"), format!("value {number}"));
        let mut attempt = number;
        loop {
            assert!(
                Instant::now() < deadline,
                "writes through {endpoints:?} kept failing"
            );
            let endpoint = &endpoints[attempt % endpoints.len()];
            let run = client(
                &[endpoint.as_str()],
                &["--command-timeout", "3", "put", &key, &value],
            );
            if run.success() {
                assert_eq!(run.stdout, "OK\n");
                acknowledged.insert(key.clone(), value.clone());
                break;
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Asserts that every node answers a linearizable read with every acknowledged write.
#[track_caller]
fn assert_every_node_holds(cluster: &Cluster, acknowledged: &BTreeMap<String, String>) {
    for node in &cluster.nodes {
        let held = support::wait_for(
            &format!("{} to hold every acknowledged write", node.name),
            LIVENESS_TIMEOUT,
            || {
                let run = client(&[node.endpoint()], &["get", "", "--prefix"]);
                if !run.success() {
                    return Err(format!("the read failed: {run:?}"));
                }
                let lines: Vec<&str> = run.stdout.lines().collect();
                let held: BTreeMap<String, String> = lines
                    .chunks(2)
                    .map(|pair| (pair[0].to_string(), pair.get(1).unwrap_or(&"").to_string()))
                    .collect();
                let missing = acknowledged
                    .iter()
                    .filter(|(key, value)| held.get(*key) != Some(value))
                    .count();
                if missing == 0 {
                    Ok(held)
                } else {
                    Err(format!("{missing} of {} missing", acknowledged.len()))
                }
            },
        );
        assert_eq!(held.len(), acknowledged.len(), "{}", node.name);
    }
}

/// Sets `--initial-cluster-state` of every node to `state`, for their next start.
fn set_initial_cluster_state(cluster: &mut Cluster, state: &str) {
    for node in &mut cluster.nodes {
        let position = node
            .flags
            .iter()
            .position(|flag| flag == "--initial-cluster-state")
            .expect("founders are started with --initial-cluster-state");
        node.flags[position + 1] = state.to_string();
    }
}

fn kill_all_and_restart(cluster: &mut Cluster) {
    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.wait_for_leader(&[0, 1, 2]);
}

#[test]
fn whole_cluster_and_rolling_restarts_resume_with_every_acknowledged_write() {
    // Snapshots every 25 entries, so that restarts also start from snapshots.
    let mut cluster = Cluster::start(3, 22000, &["--snapshot-count", "25"]);
    let mut acknowledged = BTreeMap::new();
    write_spread(&cluster, "before", 40, &mut acknowledged);

    // As etcd operators restart members: same data directories, `existing`.
    set_initial_cluster_state(&mut cluster, "existing");
    kill_all_and_restart(&mut cluster);
    assert_every_node_holds(&cluster, &acknowledged);
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path).unwrap();
    assert!(
        log.contains("--initial-cluster-state and --initial-cluster-token are ignored"),
        "the restart should say the initial-cluster flags are ignored"
    );
    write_spread(&cluster, "after-existing", 40, &mut acknowledged);

    // And with `new`, which on a data directory with state means nothing either.
    set_initial_cluster_state(&mut cluster, "new");
    kill_all_and_restart(&mut cluster);
    assert_every_node_holds(&cluster, &acknowledged);
    write_spread(&cluster, "after-new", 40, &mut acknowledged);

    // One member at a time, writing while each is down.
    for index in 0..3 {
        cluster.nodes[index].kill();
        write_spread(&cluster, &format!("rolling-{index}"), 10, &mut acknowledged);
        cluster.nodes[index].start();
        cluster.wait_for_leader(&[0, 1, 2]);
    }
    assert_every_node_holds(&cluster, &acknowledged);

    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &cluster.nodes {
        let mut command = Command::new(support::FLOTILLA);
        command.args(["wal", "verify"]).arg(&node.data_dir);
        let run = run_with_timeout(command, "", Duration::from_secs(20));
        assert!(run.success(), "{}: {run:?}", node.name);
        assert!(run.stdout.contains("no problem found"), "{run:?}");
    }
}

/// The hexadecimal value of `field` in a member's identity file.
fn identity_field(cluster: &Cluster, index: usize, field: &str) -> String {
    let path = cluster.data_dir(index).join("member").join("identity");
    let text = std::fs::read_to_string(&path).expect("the identity file");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}\t")))
        .unwrap_or_else(|| panic!("{field} in {text:?}"))
        .to_string()
}

#[test]
fn a_data_directory_of_another_cluster_is_refused_naming_both_cluster_ids() {
    let mut cluster = Cluster::start(1, 22100, &[]);
    let stored_cluster_id = identity_field(&cluster, 0, "cluster_id");
    let stored_member_id = identity_field(&cluster, 0, "member_id");
    assert_eq!(stored_member_id, format!("{:x}", cluster.member_id(0)));
    cluster.nodes[0].kill();

    // Another cluster (another token, other peer URLs) handed the first one's data directory.
    let mut command = Command::new(support::FLOTILLA);
    command
        .args(["serve", "--name", "intruder", "--data-dir"])
        .arg(cluster.data_dir(0))
        .args(["--listen-client-urls", "http://127.0.0.1:22150"])
        .args(["--advertise-client-urls", "http://127.0.0.1:22150"])
        .args(["--listen-peer-urls", "http://127.0.0.1:22151"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:22151"])
        .args(["--initial-cluster", "intruder=http://127.0.0.1:22151"])
        .args(["--initial-cluster-token", "another-cluster"]);
    let run = run_with_timeout(command, "", Duration::from_secs(20));
    let status = run.status.expect("serve should refuse, not run");
    assert!(!status.success(), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("of cluster {stored_cluster_id}, but the flags")),
        "{}",
        run.stderr
    );
    let flags_cluster_id = run
        .stderr
        .split("of cluster ")
        .nth(2)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("a second cluster id in {}", run.stderr));
    assert_ne!(flags_cluster_id, stored_cluster_id);
    assert!(
        u64::from_str_radix(flags_cluster_id, 16).is_ok(),
        "{}",
        run.stderr
    );

    // The refused start changed nothing: the member resumes as before.
    cluster.nodes[0].start();
    cluster.wait_for_leader(&[0]);
    assert_eq!(identity_field(&cluster, 0, "cluster_id"), stored_cluster_id);
}
