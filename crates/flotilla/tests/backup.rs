//! Backups as etcd operators take and use them, with real processes: `etcdctl snapshot save`
//! from a running three-member cluster, `endpoint hashkv` equal on every member and equal to
//! what `flotilla snapshot status` reports of the file, a damaged copy refused, and a new
//! three-member cluster rebuilt with `flotilla snapshot restore` that holds every key.
//! Ports 24250, 24350, 24750 and 24850 (operations.rs has 24450 to 24950).

mod support;

use support::{client, etcdctl, find_etcdctl, json_number, wait_for, Cluster, FLOTILLA};

const BASE_PORT: u16 = 24250;

fn flotilla(arguments: &[&str]) -> support::Run {
    let mut command = std::process::Command::new(FLOTILLA);
    command.args(arguments);
    support::run_with_timeout(command, "", support::COMMAND_TIMEOUT)
}

/// Every member's HashKV (hash, compact revision) at the current revision of the first.
fn hashes(binary: &std::path::PathBuf, cluster: &Cluster, revision: u64) -> Vec<u64> {
    cluster
        .running_endpoints()
        .into_iter()
        .map(|endpoint| {
            let run = etcdctl(
                binary,
                std::slice::from_ref(&endpoint),
                &[
                    "endpoint",
                    "hashkv",
                    "--rev",
                    &revision.to_string(),
                    "-w",
                    "json",
                ],
                "",
            );
            let output = run.expect_ok("endpoint hashkv");
            json_number(output, "hash").unwrap_or_else(|| panic!("no hash in {output}"))
        })
        .collect()
}

/// Restores every node of `cluster` (configured, not started) from `backup` with the
/// cluster's flags, as an operator rebuilds a cluster, and starts each.
fn restore_and_start(backup: &str, mut cluster: Cluster) -> Cluster {
    let initial_cluster = cluster.initial_cluster();
    let token = cluster.token.clone();
    for node in &mut cluster.nodes {
        flotilla(&[
            "snapshot",
            "restore",
            backup,
            "--name",
            &node.name,
            "--data-dir",
            node.data_dir.to_str().expect("a UTF-8 path"),
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &node.peer_url(),
        ])
        .expect_ok("snapshot restore");
        node.start();
    }
    cluster
}

#[test]
fn a_backup_saved_with_etcdctl_rebuilds_a_cluster_with_every_key() {
    let etcdctl_binary = find_etcdctl();
    let cluster = Cluster::start(3, BASE_PORT, &[]);
    let endpoints = cluster.endpoints(&[0, 1, 2]);
    for number in 0..50 {
        let key = format!("backed/{number:02}");
        let value = format!("value {number}");
        etcdctl(&etcdctl_binary, &endpoints, &["put", &key, &value], "").expect_ok("put");
    }
    etcdctl(
        &etcdctl_binary,
        &endpoints,
        &["put", "backed/00", "rewritten"],
        "",
    )
    .expect_ok("put");
    etcdctl(&etcdctl_binary, &endpoints, &["del", "backed/49"], "").expect_ok("del");
    let revision = json_number(
        etcdctl(&etcdctl_binary, &endpoints, &["get", "x", "-w", "json"], "").expect_ok("get"),
        "revision",
    )
    .expect("a revision");

    // Every member holds the same history: wait until each has applied it all.
    let agreed = wait_for(
        "the members' HashKV to agree",
        support::LIVENESS_TIMEOUT,
        || {
            let hashes = hashes(&etcdctl_binary, &cluster, revision);
            if hashes.iter().all(|hash| *hash == hashes[0]) {
                Ok(hashes[0])
            } else {
                Err(format!("{hashes:?}"))
            }
        },
    );

    let file = cluster.directory.path().join("backup.db");
    let file_text = file.to_str().expect("a UTF-8 path");
    let saved = etcdctl(
        &etcdctl_binary,
        &endpoints[..1],
        &["snapshot", "save", file_text],
        "",
    );
    assert!(saved.success(), "etcdctl snapshot save failed: {saved:?}");
    assert!(
        saved
            .stdout
            .contains(&format!("Snapshot saved at {file_text}")),
        "{saved:?}"
    );

    let status = flotilla(&["snapshot", "status", "-w", "json", file_text]);
    let status_line = status.expect_ok("snapshot status");
    assert_eq!(json_number(status_line, "revision"), Some(revision));
    assert_eq!(json_number(status_line, "totalKey"), Some(49));
    assert_eq!(json_number(status_line, "hash"), Some(agreed));

    // One flipped bit anywhere: refused, and a restore creates nothing.
    let mut damaged = std::fs::read(&file).expect("the backup reads");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x04;
    let damaged_file = cluster.directory.path().join("damaged.db");
    std::fs::write(&damaged_file, &damaged).expect("the copy writes");
    let damaged_text = damaged_file.to_str().expect("a UTF-8 path");
    let refused = flotilla(&["snapshot", "status", damaged_text]);
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("damaged or truncated"),
        "{refused:?}"
    );
    let nowhere = cluster.directory.path().join("nowhere");
    let refused = flotilla(&[
        "snapshot",
        "restore",
        damaged_text,
        "--data-dir",
        nowhere.to_str().expect("a UTF-8 path"),
    ]);
    assert!(!refused.success());
    assert!(!nowhere.exists());

    // A new cluster, with its own ports and token, from the backup.
    let restored = restore_and_start(file_text, Cluster::configure(3, BASE_PORT + 100, &[]));
    restored.wait_for_leader(&[0, 1, 2]);
    for node in &restored.nodes {
        let read = wait_for(
            "the restored member to serve",
            support::LIVENESS_TIMEOUT,
            || {
                let run = client(&[node.endpoint()], &["get", "backed/", "--prefix"]);
                if run.success() {
                    Ok(run.stdout)
                } else {
                    Err(format!("{run:?}"))
                }
            },
        );
        let lines: Vec<&str> = read.lines().collect();
        assert_eq!(lines.len(), 98, "49 keys and their values: {read}");
        assert_eq!(&lines[..2], ["backed/00", "rewritten"]);
        assert_eq!(&lines[96..], ["backed/48", "value 48"]);
    }
    let restored_endpoints = restored.endpoints(&[0, 1, 2]);
    let members = etcdctl(
        &etcdctl_binary,
        &restored_endpoints,
        &["member", "list"],
        "",
    );
    let members = members.expect_ok("member list");
    assert_eq!(members.lines().count(), 3, "{members}");
    for node in &restored.nodes {
        assert!(members.contains(&node.peer_url()), "{members}");
    }
    for node in &cluster.nodes {
        assert!(
            !members.contains(&node.peer_url()),
            "old members: {members}"
        );
    }
    // The restored cluster goes on from the backup's revision.
    etcdctl(
        &etcdctl_binary,
        &restored_endpoints,
        &["put", "after", "restore"],
        "",
    )
    .expect_ok("put");
    let after = json_number(
        etcdctl(
            &etcdctl_binary,
            &restored_endpoints,
            &["get", "after", "-w", "json"],
            "",
        )
        .expect_ok("get"),
        "revision",
    )
    .expect("a revision");
    assert_eq!(after, revision + 1);
}

/// The corruption checks on a healthy cluster restored from a backup: every member hashes
/// the same history, so neither the leader's periodic check (every second here) nor each
/// member's check at start raises an alarm, and `/readyz` passes its corruption check.
#[test]
fn the_corruption_checks_find_nothing_on_members_that_agree() {
    let etcdctl_binary = find_etcdctl();
    let source = Cluster::start(1, BASE_PORT + 500, &[]);
    let source_endpoints = source.endpoints(&[0]);
    etcdctl(&etcdctl_binary, &source_endpoints, &["put", "a", "1"], "").expect_ok("put");
    let file = source.directory.path().join("backup.db");
    let file_text = file.to_str().expect("a UTF-8 path");
    etcdctl(
        &etcdctl_binary,
        &source_endpoints,
        &["snapshot", "save", file_text],
        "",
    )
    .expect_ok("snapshot save");

    let checks = [
        "--experimental-corrupt-check-time",
        "1s",
        "--experimental-initial-corrupt-check",
    ];
    let cluster = restore_and_start(file_text, Cluster::configure(3, BASE_PORT + 600, &checks));
    cluster.wait_for_leader(&[0, 1, 2]);
    let endpoints = cluster.endpoints(&[0, 1, 2]);
    for number in 0..20 {
        let key = format!("b{number}");
        etcdctl(&etcdctl_binary, &endpoints, &["put", &key, "1"], "").expect_ok("put");
    }
    etcdctl(&etcdctl_binary, &endpoints, &["compact", "5"], "").expect_ok("compact");
    wait_for(
        "every member's check at start",
        support::LIVENESS_TIMEOUT,
        || {
            let passed = cluster
                .nodes
                .iter()
                .filter(|node| {
                    std::fs::read_to_string(&node.log_path)
                        .unwrap_or_default()
                        .contains("initial corruption check passed")
                })
                .count();
            if passed == 3 {
                Ok(())
            } else {
                Err(format!("{passed} of 3"))
            }
        },
    );
    // A few periods of the leader's check.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let alarms = etcdctl(&etcdctl_binary, &endpoints, &["alarm", "list"], "");
    assert_eq!(alarms.expect_ok("alarm list"), "");
    for endpoint in &endpoints {
        let (_, body) =
            support::http_request(endpoint, "GET", "/readyz?verbose", "").expect("GET /readyz");
        assert!(body.contains("[+]data_corruption ok"), "{body}");
    }
}
