//! etcd's own client, etcdctl 3.4 (Debian's `etcd-client` package), against a real
//! three-node Flotilla cluster: the commands an etcd user runs work unchanged and print what
//! they print against etcd. Without etcdctl this test fails, saying how to install it:
//! compatibility with etcd's client is what the project promises, so it is not skipped.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    etcdctl, find_etcdctl, json_number, run_with_timeout, wait_for, Cluster, COMMAND_TIMEOUT,
};

#[test]
fn etcdctl_3_4_works_against_a_flotilla_cluster() {
    let etcdctl_binary = find_etcdctl();
    let version = run_with_timeout(
        {
            let mut command = Command::new(&etcdctl_binary);
            command.env("ETCDCTL_API", "3").arg("version");
            command
        },
        "",
        COMMAND_TIMEOUT,
    );
    assert!(
        version
            .expect_ok("etcdctl version")
            .contains("API version: 3"),
        "{version:?}"
    );

    let cluster = Cluster::start(3, 21700, &[]);
    let all = cluster.endpoints(&[0, 1, 2]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = cluster.endpoints(&[(leader + 1) % 3]);
    let run = |endpoints: &[String], arguments: &[&str]| {
        etcdctl(&etcdctl_binary, endpoints, arguments, "")
    };

    // put and get, through a follower and through the whole list.
    assert_eq!(
        run(&follower, &["put", "foo", "bar"]).expect_ok("put"),
        "OK\n"
    );
    assert_eq!(run(&all, &["put", "foo/a", "1"]).expect_ok("put"), "OK\n");
    assert_eq!(run(&all, &["put", "foo/b", "2"]).expect_ok("put"), "OK\n");
    assert_eq!(run(&all, &["get", "foo"]).expect_ok("get"), "foo\nbar\n");
    assert_eq!(
        run(&follower, &["get", "foo", "--prefix"]).expect_ok("get --prefix"),
        "foo\nbar\nfoo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(
        run(&all, &["get", "", "--prefix", "--keys-only"]).expect_ok("get every key"),
        "foo\n\nfoo/a\n\nfoo/b\n\n"
    );
    assert_eq!(
        run(&follower, &["get", "foo", "--consistency=s"]).expect_ok("serializable get"),
        "foo\nbar\n"
    );

    // --rev reads the past.
    let json = run(&all, &["get", "foo", "-w", "json"])
        .expect_ok("get -w json")
        .to_string();
    let first_revision = json_number(&json, "mod_revision").expect("mod_revision in the JSON");
    assert_eq!(run(&all, &["put", "foo", "baz"]).expect_ok("put"), "OK\n");
    assert_eq!(
        run(&all, &["get", "foo", &format!("--rev={first_revision}")]).expect_ok("get --rev"),
        "foo\nbar\n"
    );
    assert_eq!(run(&all, &["get", "foo"]).expect_ok("get"), "foo\nbaz\n");

    // txn from standard input: the success branch, then the failure branch.
    let transaction = "value(\"foo\") = \"baz\"\n\nput result yes\nget foo/a\n\nput result no\n\n";
    let succeeded = etcdctl(&etcdctl_binary, &follower, &["txn"], transaction);
    assert_eq!(succeeded.expect_ok("txn"), "SUCCESS\n\nOK\n\nfoo/a\n1\n");
    let transaction = "mod(\"foo\") < \"1\"\n\nput result yes\n\nput result no\n\n";
    let failed = etcdctl(&etcdctl_binary, &all, &["txn"], transaction);
    assert_eq!(failed.expect_ok("txn"), "FAILURE\n\nOK\n");
    assert_eq!(
        run(&all, &["get", "result"]).expect_ok("get"),
        "result\nno\n"
    );

    // del: one key, then a prefix.
    assert_eq!(run(&follower, &["del", "foo/a"]).expect_ok("del"), "1\n");
    assert_eq!(
        run(&all, &["del", "foo", "--prefix"]).expect_ok("del --prefix"),
        "2\n"
    );
    assert_eq!(run(&all, &["get", "foo", "--prefix"]).expect_ok("get"), "");

    // member list: every node, started, with its name and URLs. Each member publishes its
    // name and client URL through the log shortly after it starts (etcd lists it as unstarted
    // until then), so wait for all three before checking the listing.
    let members = wait_for(
        "every member to publish its client URL",
        Duration::from_secs(10),
        || {
            let members = run(&follower, &["member", "list"])
                .expect_ok("member list")
                .to_string();
            let published = members
                .lines()
                .filter(|line| line.contains(", started, ") && !line.contains(", , "))
                .count();
            if published == cluster.nodes.len() {
                Ok(members)
            } else {
                Err(members)
            }
        },
    );
    assert_eq!(members.lines().count(), 3, "{members}");
    for node in &cluster.nodes {
        let expected = format!(
            ", started, {}, {}, http://{}, false",
            node.name,
            node.peer_url(),
            node.endpoint()
        );
        assert!(
            members.lines().any(|line| line.ends_with(&expected)),
            "no {expected:?} in {members}"
        );
    }

    // endpoint status: one line per endpoint, one leader among them.
    let status = run(&all, &["endpoint", "status"])
        .expect_ok("endpoint status")
        .to_string();
    let lines: Vec<Vec<&str>> = status
        .lines()
        .map(|line| line.split(", ").collect())
        .collect();
    assert_eq!(lines.len(), 3, "{status}");
    for (fields, endpoint) in lines.iter().zip(&all) {
        assert_eq!(fields[0], endpoint, "{status}");
        assert_eq!(fields[2], "3.4.0", "{status}");
        assert_eq!(fields[5], "false", "not a learner: {status}");
    }
    let leaders = lines.iter().filter(|fields| fields[4] == "true").count();
    assert_eq!(leaders, 1, "{status}");
    let health = run(&all, &["endpoint", "health"]);
    assert!(health.success(), "{health:?}");
    for endpoint in &all {
        // etcdctl 3.4 reports health on standard error.
        assert!(
            health.stderr.contains(&format!("{endpoint} is healthy")),
            "{health:?}"
        );
    }

    // compaction: older revisions are gone, newer ones stay.
    let json = run(&all, &["get", "result", "-w", "json"])
        .expect_ok("get")
        .to_string();
    let revision = json_number(&json, "revision").expect("a header revision");
    assert_eq!(
        run(&all, &["compaction", &revision.to_string()]).expect_ok("compaction"),
        format!("compacted revision {revision}\n")
    );
    let compacted = run(&all, &["get", "result", &format!("--rev={first_revision}")]);
    assert!(!compacted.success(), "{compacted:?}");
    assert!(
        compacted
            .stderr
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{compacted:?}"
    );
    assert_eq!(
        run(&all, &["get", "result", &format!("--rev={revision}")]).expect_ok("get --rev"),
        "result\nno\n"
    );
}

/// etcdctl given endpoints with their scheme (`--endpoints=http://127.0.0.1:2379`), as etcd's
/// documentation writes them. For `endpoint status`, `health` and `hashkv` it then sends the
/// whole URL as the HTTP/2 `:authority`, which h2 alone would refuse with PROTOCOL_ERROR
/// (`stream terminated by RST_STREAM`); etcd accepts it, and so must Flotilla, for every call.
#[test]
fn etcdctl_3_4_works_with_endpoints_given_as_urls() {
    let etcdctl_binary = find_etcdctl();
    let cluster = Cluster::start(3, 23000, &[]);
    cluster.wait_for_leader(&[0, 1, 2]);
    let urls: Vec<String> = cluster
        .endpoints(&[0, 1, 2])
        .iter()
        .map(|endpoint| format!("http://{endpoint}"))
        .collect();
    let run = |endpoints: &[String], arguments: &[&str]| {
        etcdctl(&etcdctl_binary, endpoints, arguments, "")
    };

    // endpoint status: one line per endpoint, named as given, one leader among them.
    let status = run(&urls, &["endpoint", "status"]);
    let status = status.expect_ok("endpoint status").to_string();
    let lines: Vec<Vec<&str>> = status
        .lines()
        .map(|line| line.split(", ").collect())
        .collect();
    assert_eq!(lines.len(), 3, "{status}");
    for (fields, url) in lines.iter().zip(&urls) {
        assert_eq!(fields[0], url, "{status}");
        assert_eq!(fields[2], "3.4.0", "{status}");
    }
    let leaders = lines.iter().filter(|fields| fields[4] == "true").count();
    assert_eq!(leaders, 1, "{status}");
    // Each endpoint on its own too, as a user checking one member would.
    for url in &urls {
        let one = run(
            std::slice::from_ref(url),
            &["endpoint", "status", "-w", "json"],
        );
        let json = one.expect_ok("endpoint status -w json");
        assert!(json.contains(&format!("\"Endpoint\":\"{url}\"")), "{json}");
    }

    // endpoint health commits a read through each endpoint (reported on standard error).
    let health = run(&urls, &["endpoint", "health"]);
    assert!(health.success(), "{health:?}");
    for url in &urls {
        assert!(
            health.stderr.contains(&format!("{url} is healthy")),
            "{health:?}"
        );
    }

    // endpoint hashkv reaches the Maintenance service through the same endpoints.
    let hashkv = run(&urls[..1], &["endpoint", "hashkv"]);
    let hashkv = hashkv.expect_ok("endpoint hashkv");
    assert!(hashkv.starts_with(&format!("{}, ", urls[0])), "{hashkv}");

    // defrag too.
    let defrag = run(&urls[..1], &["defrag"]);
    assert_eq!(
        defrag.expect_ok("defrag"),
        format!("Finished defragmenting etcd member[{}]\n", urls[0])
    );

    // A call Flotilla does not serve yet answers its Unimplemented, naming the call, not a
    // reset stream.
    let auth = run(&urls[..1], &["auth", "enable"]);
    assert!(!auth.success(), "{auth:?}");
    assert!(!auth.stderr.contains("PROTOCOL_ERROR"), "{auth:?}");
    assert!(
        auth.stderr
            .contains("the Auth service's AuthEnable is not served by Flotilla yet"),
        "{auth:?}"
    );

    // The key-value calls take the same endpoints.
    assert_eq!(
        run(&urls, &["put", "url", "works"]).expect_ok("put"),
        "OK\n"
    );
    assert_eq!(
        run(&urls[2..], &["get", "url"]).expect_ok("get"),
        "url\nworks\n"
    );
}

/// `etcdctl watch` prints each change as it is made, with `--prev-kv` the value before, as
/// against etcd (the expected text is what etcd 3.4.23 printed for the same commands).
#[test]
fn etcdctl_watch_prints_each_change() {
    let binary = find_etcdctl();
    let cluster = Cluster::start(1, 23550, &[]);
    let endpoint = cluster.nodes[0].endpoint();
    let mut watch = Command::new(&binary);
    watch.env("ETCDCTL_API", "3").args([
        "--endpoints",
        &endpoint,
        "watch",
        "k",
        "--prefix",
        "--prev-kv",
    ]);
    let watcher = std::thread::spawn(move || run_with_timeout(watch, "", Duration::from_secs(5)));
    // The watch is created once etcdctl has connected; a put before that would be missed.
    std::thread::sleep(Duration::from_millis(1500));
    let endpoints = [endpoint.clone()];
    for (key, value) in [("k1", "one"), ("k1", "two"), ("k2", "three")] {
        let run = etcdctl(&binary, &endpoints, &["put", key, value], "");
        assert_eq!(run.expect_ok("put"), "OK\n");
    }
    let run = etcdctl(&binary, &endpoints, &["del", "k1"], "");
    assert_eq!(run.expect_ok("del"), "1\n");
    let printed = watcher.join().expect("the watcher thread").stdout;
    assert_eq!(
        printed, "PUT\nk1\none\nPUT\nk1\none\nk1\ntwo\nPUT\nk2\nthree\nDELETE\nk1\ntwo\nk1\n\n",
        "{printed:?}"
    );
}

/// `etcdctl lease` commands, and `etcdctl lock` and `elect` (clientv3's concurrency recipes:
/// a session lease, a txn on create revisions and a watch) work against Flotilla: a second
/// locker waits until the first holder's session ends.
#[test]
fn etcdctl_leases_locks_and_elections_work() {
    let binary = find_etcdctl();
    let cluster = Cluster::start(3, 23750, &[]);
    let endpoints = cluster.endpoints(&[0, 1, 2]);
    let granted = etcdctl(&binary, &endpoints, &["lease", "grant", "60"], "");
    let output = granted.expect_ok("lease grant").to_string();
    let id = output
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(" granted with TTL(60s)\n"))
        .unwrap_or_else(|| panic!("unexpected lease grant output: {output:?}"))
        .to_string();
    let put = etcdctl(
        &binary,
        &endpoints,
        &["put", "--lease", &id, "held", "v"],
        "",
    );
    assert_eq!(put.expect_ok("put --lease"), "OK\n");
    let live = etcdctl(
        &binary,
        &endpoints,
        &["lease", "timetolive", &id, "--keys"],
        "",
    );
    let text = live.expect_ok("lease timetolive").to_string();
    assert!(
        text.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{text}"
    );
    assert!(text.ends_with("attached keys([held])\n"), "{text}");
    let missing = etcdctl(
        &binary,
        &endpoints,
        &["put", "--lease", "1234", "k", "v"],
        "",
    );
    assert!(!missing.success());
    assert!(
        missing
            .stderr
            .contains("etcdserver: requested lease not found"),
        "{}",
        missing.stderr
    );
    let revoked = etcdctl(&binary, &endpoints, &["lease", "revoke", &id], "");
    assert_eq!(
        revoked.expect_ok("lease revoke"),
        format!("lease {id} revoked\n")
    );
    let gone = etcdctl(&binary, &endpoints, &["get", "held"], "");
    assert_eq!(gone.expect_ok("get after revoke"), "");

    // The first holder keeps the lock until it is stopped; the second waits for it.
    let endpoint_flag = format!("--endpoints={}", endpoints.join(","));
    let first = Command::new(&binary)
        .env("ETCDCTL_API", "3")
        .args([endpoint_flag.as_str(), "lock", "the-lock"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl lock starts");
    let first = support::ChildGuard(first);
    std::thread::sleep(Duration::from_millis(1500));
    let mut second = Command::new(&binary);
    second.env("ETCDCTL_API", "3").args([
        endpoint_flag.as_str(),
        "lock",
        "the-lock",
        "echo",
        "second holder",
    ]);
    let waiter = std::thread::spawn(move || run_with_timeout(second, "", Duration::from_secs(15)));
    std::thread::sleep(Duration::from_millis(2000));
    assert!(!waiter.is_finished(), "the second locker did not wait");
    // SIGTERM: etcdctl ends its session, which releases the lock.
    let stopped = Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let second = waiter.join().expect("the waiter thread");
    assert_eq!(second.stdout, "second holder\n", "{second:?}");
    drop(first);

    let mut elect = Command::new(&binary);
    elect
        .env("ETCDCTL_API", "3")
        .args([endpoint_flag.as_str(), "elect", "the-election", "alice"]);
    let campaign = run_with_timeout(elect, "", Duration::from_secs(3));
    let lines: Vec<&str> = campaign.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{campaign:?}");
    assert!(lines[0].starts_with("the-election/"), "{campaign:?}");
    assert_eq!(lines[1], "alice");
}
