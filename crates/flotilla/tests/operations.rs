//! Monitoring and probes, with real processes: `/metrics` on every member parsed as
//! Prometheus parses it, with etcd's series; `/health`, `/livez` and `/readyz` on the client
//! port; and the probes flipping as a member loses its quorum and gets it back.
//! Ports 24450, 24550, 24650 and 24950 (backup.rs has 24250 to 24850).

mod support;

use support::{client, wait_for, Cluster, LIVENESS_TIMEOUT};

const BASE_PORT: u16 = 24450;

/// A plain HTTP/1.1 GET: the status code and the body.
fn get(endpoint: &str, path: &str) -> Result<(u16, String), String> {
    support::http_request(endpoint, "GET", path, "")
}

/// The value of the sample `name` (with all of `labels`), from a parsed scrape.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(label, value)| sample.labels.get(label) == Some(*value))
        })
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => value,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |bucket| bucket.count)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// How many peers `etcd_network_active_peers` counts as connected.
fn active_peers(scrape: &prometheus_parse::Scrape) -> usize {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == "etcd_network_active_peers")
        .filter(
            |sample| matches!(sample.value, prometheus_parse::Value::Gauge(value) if value == 1.0),
        )
        .count()
}

fn scrape(endpoint: &str) -> prometheus_parse::Scrape {
    let (code, body) = get(endpoint, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|line| Ok(line.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the exposition parses")
}

#[test]
fn metrics_and_probes_tell_what_an_operator_needs() {
    let mut cluster = Cluster::start(3, BASE_PORT, &[]);
    let endpoints = cluster.endpoints(&[0, 1, 2]);
    for number in 0..5 {
        client(&endpoints, &["put", &format!("k{number}"), "v"]).expect_ok("put");
    }

    let mut leaders = 0.0;
    for endpoint in &endpoints {
        let scrape = scrape(endpoint);
        assert_eq!(sample(&scrape, "etcd_server_has_leader", &[]), Some(1.0));
        leaders += sample(&scrape, "etcd_server_is_leader", &[]).expect("is_leader");
        assert!(sample(&scrape, "etcd_server_leader_changes_seen_total", &[]) >= Some(1.0));
        assert!(sample(&scrape, "etcd_server_proposals_committed_total", &[]) >= Some(5.0));
        assert!(sample(&scrape, "etcd_server_proposals_applied_total", &[]) >= Some(5.0));
        assert!(sample(&scrape, "etcd_disk_wal_fsync_duration_seconds_count", &[]) >= Some(1.0));
        assert!(sample(&scrape, "etcd_mvcc_db_total_size_in_bytes", &[]) > Some(0.0));
        assert_eq!(
            sample(&scrape, "etcd_server_quota_backend_bytes", &[]),
            Some(2147483648.0)
        );
        assert!(sample(&scrape, "process_resident_memory_bytes", &[]) > Some(0.0));
        let sent: f64 = scrape
            .samples
            .iter()
            .filter(|sample| sample.metric == "flotilla_network_peer_messages_sent_total")
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(value) => value,
                _ => 0.0,
            })
            .sum();
        assert!(sent > 0.0, "messages went to the peers");
    }
    // Every member is connected to both others (a connection may still be coming up).
    for endpoint in &endpoints {
        wait_for("two active peers", LIVENESS_TIMEOUT, || {
            let active = active_peers(&scrape(endpoint));
            if active == 2 {
                Ok(())
            } else {
                Err(format!("{active} active peers at {endpoint}"))
            }
        });
    }
    assert_eq!(leaders, 1.0, "exactly one member leads");
    // The puts went to the first endpoint that answered: it counted them.
    let first = scrape(&endpoints[0]);
    let puts = [
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "Put"),
        ("grpc_type", "unary"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(
        sample(&first, "grpc_server_handled_total", &puts),
        Some(5.0)
    );

    for endpoint in &endpoints {
        assert_eq!(
            get(endpoint, "/health").unwrap(),
            (200, r#"{"health":"true","reason":""}"#.to_string())
        );
        assert_eq!(get(endpoint, "/livez").unwrap(), (200, "ok\n".to_string()));
        assert_eq!(get(endpoint, "/readyz").unwrap(), (200, "ok\n".to_string()));
    }

    // A healthy start logs no warnings: peers that are not up yet and a clean replay are
    // the normal case.
    for node in &cluster.nodes {
        let log = std::fs::read_to_string(&node.log_path).expect("the log reads");
        let warnings: Vec<&str> = log.lines().filter(|line| line.contains(" WARN ")).collect();
        assert!(warnings.is_empty(), "{}: {warnings:#?}", node.name);
    }

    // The first member alone: alive, serving local reads, not ready, not healthy.
    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    let survivor = endpoints[0].clone();
    let (code, body) = wait_for("/readyz to fail without a quorum", LIVENESS_TIMEOUT, || {
        let answer = get(&survivor, "/readyz?verbose")?;
        if answer.0 == 503 {
            Ok(answer)
        } else {
            Err(format!("{answer:?}"))
        }
    });
    assert_eq!(code, 503);
    assert!(body.contains("[+]serializable_read ok"), "{body}");
    assert!(body.contains("[-]linearizable_read failed"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    assert_eq!(get(&survivor, "/livez").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(active_peers(&scrape(&survivor)), 0, "both peers are gone");
    let (code, body) = get(&survivor, "/health").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""health":"false""#), "{body}");
    assert_eq!(get(&survivor, "/health?serializable=true").unwrap().0, 200);
    assert_eq!(
        get(&survivor, "/readyz?exclude=linearizable_read").unwrap(),
        (200, "ok\n".to_string())
    );

    // The quorum back: ready again.
    cluster.nodes[1].start();
    cluster.nodes[2].start();
    wait_for("/readyz to pass again", LIVENESS_TIMEOUT, || {
        let answer = get(&survivor, "/readyz")?;
        if answer == (200, "ok\n".to_string()) {
            Ok(())
        } else {
            Err(format!("{answer:?}"))
        }
    });
}

/// `--auto-compaction-mode periodic --auto-compaction-retention 2s`: history older than the
/// retention goes, the current state stays; a wrong mode is refused at start.
#[test]
fn automatic_compaction_keeps_the_retention_and_no_more() {
    let cluster = Cluster::start(
        1,
        BASE_PORT + 100,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "2s",
        ],
    );
    let endpoints = cluster.endpoints(&[0]);
    client(&endpoints, &["put", "kept", "first"]).expect_ok("put");
    client(&endpoints, &["put", "kept", "second"]).expect_ok("put");
    // Right after the writes, the history is there.
    let old = client(&endpoints, &["get", "kept", "--rev", "2"]);
    assert_eq!(old.expect_ok("get --rev 2"), "kept\nfirst\n");
    let refused = wait_for("the history to be compacted", LIVENESS_TIMEOUT, || {
        let run = client(&endpoints, &["get", "kept", "--rev", "2"]);
        if run.success() {
            Err(format!("still readable: {run:?}"))
        } else {
            Ok(run)
        }
    });
    assert!(
        refused
            .stderr
            .contains("required revision has been compacted"),
        "{refused:?}"
    );
    let current = client(&endpoints, &["get", "kept"]);
    assert_eq!(current.expect_ok("get"), "kept\nsecond\n");

    let mut command = std::process::Command::new(support::FLOTILLA);
    command.args(["serve", "--auto-compaction-mode", "hourly"]);
    let wrong = support::run_with_timeout(command, "", support::COMMAND_TIMEOUT);
    assert!(!wrong.success());
    assert!(
        wrong
            .stderr
            .contains("--auto-compaction-mode \"hourly\": use periodic or revision"),
        "{wrong:?}"
    );
}

/// The NOSPACE alarm, as etcd raises it: a write past `--quota-backend-bytes` raises it, every
/// write that takes space is refused while it is raised (reads, deletes and compactions still
/// work), `/health` says so, and `alarm disarm` after freeing room lets writes in again.
#[test]
fn the_nospace_alarm_stops_writes_until_disarmed() {
    let etcdctl_binary = support::find_etcdctl();
    let cluster = Cluster::start(3, BASE_PORT + 200, &["--quota-backend-bytes", "3000"]);
    let endpoints = cluster.endpoints(&[0, 1, 2]);
    let etcdctl = |arguments: &[&str]| support::etcdctl(&etcdctl_binary, &endpoints, arguments, "");
    let value = "x".repeat(400);
    let mut refused = None;
    for number in 0..20 {
        let run = etcdctl(&["put", &format!("big/{number:02}"), &value]);
        if !run.success() {
            refused = Some(run);
            break;
        }
    }
    let refused = refused.expect("the quota refuses a write");
    assert!(
        refused
            .stderr
            .contains("etcdserver: mvcc: database space exceeded"),
        "{refused:?}"
    );
    let alarms = wait_for("the NOSPACE alarm", LIVENESS_TIMEOUT, || {
        let run = etcdctl(&["alarm", "list"]);
        let listed = run.stdout.clone();
        if listed.contains("alarm:NOSPACE") {
            Ok(listed)
        } else {
            Err(format!("{run:?}"))
        }
    });
    assert_eq!(alarms.lines().count(), 1, "{alarms}");
    // Raised for the whole cluster: even a small write is refused, on every member.
    for endpoint in &endpoints {
        let run = support::etcdctl(
            &etcdctl_binary,
            std::slice::from_ref(endpoint),
            &["put", "small", "x"],
            "",
        );
        assert!(!run.success(), "{run:?}");
        assert!(run.stderr.contains("database space exceeded"), "{run:?}");
        let (code, body) = get(endpoint, "/health").unwrap();
        assert_eq!(
            (code, body.as_str()),
            (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#)
        );
        assert_eq!(get(endpoint, "/health?exclude=NOSPACE").unwrap().0, 200);
    }
    let status = etcdctl(&["endpoint", "status"]);
    assert!(
        status.expect_ok("status").contains("alarm:NOSPACE"),
        "{status:?}"
    );
    // Reads, deletes and compactions still work; room is freed, then the alarm disarmed.
    assert!(etcdctl(&["get", "big/00"])
        .expect_ok("get")
        .contains("big/00"));
    etcdctl(&["del", "--prefix", "big/"]).expect_ok("del");
    let revision = json_revision(&etcdctl(&["get", "small", "-w", "json"]));
    etcdctl(&["compact", &revision.to_string()]).expect_ok("compact");
    let disarmed = etcdctl(&["alarm", "disarm"]);
    assert!(
        disarmed.expect_ok("disarm").contains("alarm:NOSPACE"),
        "{disarmed:?}"
    );
    wait_for("no alarm listed", LIVENESS_TIMEOUT, || {
        let run = etcdctl(&["alarm", "list"]);
        if run.success() && run.stdout.is_empty() {
            Ok(())
        } else {
            Err(format!("{run:?}"))
        }
    });
    wait_for("writes to be accepted again", LIVENESS_TIMEOUT, || {
        let run = etcdctl(&["put", "small", "x"]);
        if run.success() {
            Ok(())
        } else {
            Err(format!("{run:?}"))
        }
    });
}

fn json_revision(run: &support::Run) -> u64 {
    support::json_number(run.expect_ok("a JSON answer"), "revision").expect("a revision")
}

/// A plain HTTP/1.1 POST of `body`: the status code and the body.
fn post(endpoint: &str, path: &str, body: &str) -> (u16, String) {
    support::http_request(endpoint, "POST", path, body).expect("the member answers")
}

/// etcd's JSON gateway, as etcd's documentation uses it with curl: base64 keys and values,
/// 64-bit numbers as strings, fields in etcd's order, errors as grpc-gateway writes them.
#[test]
fn the_json_gateway_answers_as_etcds_does() {
    let cluster = Cluster::start(1, BASE_PORT + 500, &[]);
    let endpoint = cluster.nodes[0].endpoint();
    let member_id = cluster.member_id(0);
    let (code, put) = post(
        &endpoint,
        "/v3/kv/put",
        r#"{"key": "Zm9v", "value": "YmFy"}"#,
    );
    assert_eq!(code, 200, "{put}");
    assert!(
        put.starts_with(r#"{"header":{"cluster_id":""#),
        "the header first: {put}"
    );
    assert!(
        put.contains(&format!(r#""member_id":"{member_id}""#)),
        "{put}"
    );
    let (code, range) = post(&endpoint, "/v3/kv/range", r#"{"key": "Zm9v"}"#);
    assert_eq!(code, 200, "{range}");
    let kvs = range.split_once(r#""kvs":"#).expect("kvs").1;
    assert_eq!(
        kvs,
        r#"[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
    );
    // The same service code as gRPC's: the key is there for etcdctl-style clients too.
    assert_eq!(
        client(&[endpoint.as_str()], &["get", "foo"]).expect_ok("get"),
        "foo\nbar\n"
    );
    let (code, error) = post(
        &endpoint,
        "/v3/kv/range",
        r#"{"key": "Zm9v", "revision": "99"}"#,
    );
    assert_eq!(code, 400);
    assert_eq!(
        error,
        r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#
    );
    let txn = r#"{"compare":[{"result":"EQUAL","target":"VALUE","key":"Zm9v","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}},{"request_range":{"key":"Zm9v"}}]}"#;
    let (code, swapped) = post(&endpoint, "/v3/kv/txn", txn);
    assert_eq!(code, 200, "{swapped}");
    let after_header = swapped.split_once(r#""raft_term":"#).expect("a header").1;
    assert!(
        after_header.contains(r#""succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}},{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],"count":"1"}}]}"#),
        "{swapped}"
    );
    let (code, granted) = post(&endpoint, "/v3/lease/grant", r#"{"TTL": 30, "ID": 7}"#);
    assert_eq!(code, 200, "{granted}");
    assert!(granted.ends_with(r#","ID":"7","TTL":"30"}"#), "{granted}");
    let (code, leases) = post(&endpoint, "/v3/lease/leases", "{}");
    assert_eq!(code, 200, "{leases}");
    assert!(leases.ends_with(r#","leases":[{"ID":"7"}]}"#), "{leases}");
    let (code, remaining) = post(&endpoint, "/v3/kv/lease/timetolive", r#"{"ID": 7}"#);
    assert_eq!(code, 200, "{remaining}");
    assert!(remaining.contains(r#""grantedTTL":"30""#), "{remaining}");
    let (code, deleted) = post(
        &endpoint,
        "/v3/kv/deleterange",
        r#"{"key": "Zm9v", "prev_kv": true}"#,
    );
    assert_eq!(code, 200, "{deleted}");
    assert!(
        deleted.contains(r#""deleted":"1","prev_kvs":[{"key":"Zm9v""#),
        "{deleted}"
    );
    let (code, members) = post(&endpoint, "/v3/cluster/member/list", "{}");
    assert_eq!(code, 200, "{members}");
    assert!(
        members.contains(&format!(
            r#""members":[{{"ID":"{member_id}","name":"node1""#
        )),
        "{members}"
    );
    let (code, status) = post(&endpoint, "/v3/maintenance/status", "{}");
    assert_eq!(code, 200, "{status}");
    assert!(
        status.contains(&format!(r#""leader":"{member_id}""#)),
        "{status}"
    );
    let (code, hashed) = post(&endpoint, "/v3/maintenance/hashkv", "{}");
    assert_eq!(code, 200, "{hashed}");
    assert!(hashed.contains(r#""hash":"#), "{hashed}");
    let (code, alarms) = post(&endpoint, "/v3/maintenance/alarm", r#"{"action":"GET"}"#);
    assert_eq!((code, alarms.contains("alarms")), (200, false), "{alarms}");
    let (code, added) = post(
        &endpoint,
        "/v3/cluster/member/add",
        r#"{"peerURLs":["http://127.0.0.1:39999"],"isLearner":true}"#,
    );
    assert_eq!(code, 200, "{added}");
    let learner: u64 = added
        .split_once(r#""member":{"ID":""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or_else(|| panic!("the new member's id in {added}"));
    assert!(
        added.contains(r#""peerURLs":["http://127.0.0.1:39999"],"isLearner":true}"#),
        "{added}"
    );
    let (code, removed) = post(
        &endpoint,
        "/v3/cluster/member/remove",
        &format!(r#"{{"ID":"{learner}"}}"#),
    );
    assert_eq!(code, 200, "{removed}");
    assert!(!removed.contains("39999"), "{removed}");
    // etcd's gRPC codes for the store's refusals, and grpc-gateway's HTTP statuses for them.
    let refusals = [
        ("/v3/kv/compaction", r#"{"revision": "99"}"#, 400, 11),
        ("/v3/kv/lease/revoke", r#"{"ID": 12345}"#, 404, 5),
        ("/v3/lease/grant", r#"{"TTL": 30, "ID": 7}"#, 412, 9),
        ("/v3/kv/put", r#"{"key": "Zm9v", "lease": "999"}"#, 404, 5),
    ];
    for (path, body, status, code) in refusals {
        let (answered, refused) = post(&endpoint, path, body);
        assert_eq!(answered, status, "{path}: {refused}");
        assert!(
            refused.ends_with(&format!(r#","code":{code}}}"#)),
            "{path}: {refused}"
        );
    }
    let (code, refused) = post(&endpoint, "/v3/kv/put", "not json");
    assert_eq!(code, 400, "{refused}");
    assert!(refused.contains(r#""code":3"#), "{refused}");
    let (code, watch) = post(&endpoint, "/v3/watch", "{}");
    assert_eq!(code, 501, "{watch}");
    assert!(watch.contains("not served by Flotilla yet"), "{watch}");
}
