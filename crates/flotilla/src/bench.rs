//! `flotilla bench`: load for an etcd-compatible cluster, in the manner of etcd's benchmark
//! tool. It speaks only etcd's v3 API, so it measures etcd and Flotilla the same way.
//!
//! `--clients` workers share `--conns` gRPC connections round-robin. Each request has a number;
//! its key (and, for `mixed`, whether it reads) is a function of that number, so a run's keys do
//! not depend on how many clients there are. Without `--rate` the run is closed-loop: each
//! worker sends its next request when the last one answers. With `--rate` it is open-loop:
//! request `n` is due at `n / rate` seconds after the start and its latency is measured from
//! then, not from when a worker got round to sending it, so a stall shows in the figures
//! instead of being hidden by the workers waiting (coordinated omission).
//!
//! Before the clock starts, it waits until every endpoint reports the same leader (and with `--target-leader` sends everything
//! to it). It prints throughput, latency percentiles from an HDR histogram and errors by gRPC
//! code and message, as text or (with `--json`) JSON, and can write an SVG chart. It exits with
//! status 1 if any request failed, so that a script can fail on errors.

mod grpc;
mod keys;
mod report;
mod svg;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use server::proto::etcdserverpb::{
    request_op, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse,
};
use tokio::time::Instant;

use crate::client::ClientOptions;
use keys::{mix64, KeyGenerator, KeyOrder};
use report::Recorder;

/// The most concurrent clients.
const CLIENTS_MAX: usize = 10_000;
/// The most gRPC connections.
const CONNS_MAX: usize = 1_000;
/// The largest value: below etcd's default request limit (1.5 MiB) with room for the key.
const VALUE_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// The most puts in one transaction: etcd's default --max-txn-ops.
const TXN_OPS_MAX: usize = 128;
/// The most watch streams a run opens.
const WATCHERS_MAX: usize = 10_000;
/// How long to wait for a leader before the run starts.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long one status request may take while looking for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the progress bar is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// The longest error message kept in an error kind; longer ones are cut, so that a message
/// carrying a request's details does not make every error a kind of its own.
const ERROR_MESSAGE_CHARS_MAX: usize = 160;
/// Bins per decade of the chart's latency histogram.
const CHART_BINS_PER_DECADE: u32 = 20;
/// Requests a run makes when neither --total nor --duration is given.
const TOTAL_DEFAULT: u64 = 10_000;

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Write one key.
    Put,
    /// Read one key (see --consistency).
    Range,
    /// A transaction of --txn-ops puts to distinct keys, without compares.
    TxnPut,
    /// Reads and writes of single keys, --read-percent of them reads.
    Mixed,
}

/// How ranges are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: the read is confirmed with a quorum (etcd's default).
    #[value(name = "l", alias = "linearizable")]
    Linearizable,
    /// Serializable: the member answers from its own state.
    #[value(name = "s", alias = "serializable")]
    Serializable,
}

/// The flags of `flotilla bench` (with the global --endpoints, --json and --command-timeout,
/// the last being each request's timeout).
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Concurrent workers, each with one request outstanding at a time.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections, shared round-robin by the clients (and spread round-robin over the
    /// endpoints).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// How many requests to make (10,000 if neither this nor --duration is given).
    #[arg(long, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// How long to run instead: 5s, 500ms, 2m, or a number of seconds.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Size of each value.
    #[arg(long = "val-size", value_name = "BYTES", default_value_t = 8)]
    pub value_size_bytes: usize,
    /// Size of each key (keys are zero-padded decimal numbers).
    #[arg(long = "key-size", value_name = "BYTES", default_value_t = 8)]
    pub key_size_bytes: usize,
    /// How many distinct keys the requests use.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Take keys in order (request n uses key n mod --key-space) instead of uniformly.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Open-loop: requests per second over all clients, latency measured from each request's
    /// scheduled send time; 0 sends as fast as the clients can (closed-loop).
    #[arg(long = "rate", value_name = "PER_SECOND", default_value_t = 0)]
    pub rate_per_s: u64,
    /// Ranges: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// txn-put: puts per transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    /// mixed: the percentage of requests that are ranges.
    #[arg(long, default_value_t = 50)]
    pub read_percent: u8,
    /// Send every request to the leader (found with Status), not to all the endpoints.
    #[arg(long)]
    pub target_leader: bool,
    /// Write a chart of the run (latency over time and a latency histogram) to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Seed of the uniform key choice and of the mixed workload's choice of reads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Watch streams (spread over the endpoints) that each watch every key during the run;
    /// the report adds how long each write took from its send to its event's arrival.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
}

/// Parses a duration: a number with an optional unit (ms, s, m, h); seconds without one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 5s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (ms, s, m or h)"
            ))
        }
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?}: the duration must be positive"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// After this many requests.
    Total(u64),
    /// When this much time has passed (requests due later are not sent).
    After(Duration),
}

/// A validated run.
#[derive(Clone, Debug)]
struct Plan {
    workload: Workload,
    endpoint_urls: Vec<String>,
    clients: usize,
    conns: usize,
    stop: Stop,
    rate_per_s: Option<u64>,
    value: Vec<u8>,
    keys: KeyGenerator,
    serializable: bool,
    txn_ops: usize,
    read_percent: u8,
    request_timeout: Duration,
    seed: u64,
    target_leader: bool,
    watchers: usize,
}

fn endpoint_url(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Checks the flags and makes the plan of the run.
fn plan(args: &BenchArgs, options: &ClientOptions) -> Result<Plan, String> {
    let endpoint_urls: Vec<String> = options
        .endpoints
        .iter()
        .filter(|endpoint| !endpoint.trim().is_empty())
        .map(|endpoint| endpoint_url(endpoint.trim()))
        .collect();
    if endpoint_urls.is_empty() {
        return Err("--endpoints must name at least one endpoint".into());
    }
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        return Err(format!("--clients must be from 1 to {CLIENTS_MAX}"));
    }
    if args.conns == 0 || args.conns > CONNS_MAX {
        return Err(format!("--conns must be from 1 to {CONNS_MAX}"));
    }
    if args.conns > args.clients {
        return Err(format!(
            "--conns {} is more than --clients {}: the extra connections would carry nothing",
            args.conns, args.clients
        ));
    }
    let stop = match (args.total, args.duration) {
        (Some(0), _) => return Err("--total must be at least 1".into()),
        (Some(total), None) => Stop::Total(total),
        (None, Some(duration)) => Stop::After(duration),
        (None, None) => Stop::Total(TOTAL_DEFAULT),
        (Some(_), Some(_)) => return Err("give --total or --duration, not both".into()),
    };
    if args.value_size_bytes > VALUE_SIZE_MAX_BYTES {
        return Err(format!(
            "--val-size must be at most {VALUE_SIZE_MAX_BYTES} bytes"
        ));
    }
    let order = if args.sequential_keys {
        KeyOrder::Sequential
    } else {
        KeyOrder::Uniform
    };
    let keys = KeyGenerator::new(args.key_size_bytes, args.key_space, order, args.seed)?;
    if args.txn_ops == 0 || args.txn_ops > TXN_OPS_MAX {
        return Err(format!("--txn-ops must be from 1 to {TXN_OPS_MAX}"));
    }
    if args.txn_ops as u64 > args.key_space {
        return Err(format!(
            "--txn-ops {} needs at least as many keys in --key-space ({}): a transaction may \
             not write a key twice",
            args.txn_ops, args.key_space
        ));
    }
    if args.read_percent > 100 {
        return Err("--read-percent must be from 0 to 100".into());
    }
    if args.watchers > WATCHERS_MAX {
        return Err(format!("--watchers must be at most {WATCHERS_MAX}"));
    }
    if options.command_timeout == 0 {
        return Err("--command-timeout must be at least 1 second".into());
    }
    Ok(Plan {
        workload: args.workload,
        endpoint_urls,
        clients: args.clients,
        conns: args.conns,
        stop,
        rate_per_s: (args.rate_per_s > 0).then_some(args.rate_per_s),
        // The same bytes in every request: what is measured is the store, not a generator.
        value: vec![b'v'; args.value_size_bytes],
        keys,
        serializable: args.consistency == Consistency::Serializable,
        txn_ops: args.txn_ops,
        read_percent: args.read_percent,
        request_timeout: Duration::from_secs(options.command_timeout),
        seed: args.seed,
        target_leader: args.target_leader,
        watchers: args.watchers,
    })
}

/// One request of a run.
#[derive(Clone, Debug, PartialEq)]
enum Operation {
    Put(PutRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
}

impl Plan {
    /// Whether request `request` of a mixed run reads.
    fn reads(&self, request: u64) -> bool {
        // A different stream from the key choice's, so that reads do not favour some keys.
        mix64(self.seed ^ 0x6d69_7865_6400_0000 ^ mix64(request)) % 100
            < u64::from(self.read_percent)
    }

    fn put(&self, key: Vec<u8>) -> PutRequest {
        PutRequest {
            key,
            value: self.value.clone(),
            ..PutRequest::default()
        }
    }

    /// Request number `request`.
    fn operation(&self, request: u64) -> Operation {
        let range = || {
            Operation::Range(RangeRequest {
                key: self.keys.key_for(request),
                serializable: self.serializable,
                ..RangeRequest::default()
            })
        };
        match self.workload {
            Workload::Put => Operation::Put(self.put(self.keys.key_for(request))),
            Workload::Range => range(),
            Workload::TxnPut => Operation::Txn(TxnRequest {
                compare: Vec::new(),
                success: self
                    .keys
                    .distinct_keys_for(request, self.txn_ops)
                    .into_iter()
                    .map(|key| RequestOp {
                        request: Some(request_op::Request::RequestPut(self.put(key))),
                    })
                    .collect(),
                failure: Vec::new(),
            }),
            Workload::Mixed if self.reads(request) => range(),
            Workload::Mixed => Operation::Put(self.put(self.keys.key_for(request))),
        }
    }

    /// When request `request` is due, for a run that started at `start`; `None` once the run
    /// is over.
    fn due(&self, request: u64, start: Instant, now: Instant) -> Option<Instant> {
        let due = match self.rate_per_s {
            Some(rate) => start + Duration::from_secs_f64(request as f64 / rate as f64),
            None => now,
        };
        match self.stop {
            Stop::Total(total) if request >= total => None,
            Stop::After(duration) if due >= start + duration => None,
            _ => Some(due),
        }
    }

    fn workload_name(&self) -> &'static str {
        match self.workload {
            Workload::Put => "put",
            Workload::Range => "range",
            Workload::TxnPut => "txn-put",
            Workload::Mixed => "mixed",
        }
    }

    /// One line saying what the run does.
    fn description(&self, endpoints: &[String]) -> String {
        let mut parts = vec![self.workload_name().to_string()];
        if matches!(self.workload, Workload::Range | Workload::Mixed) {
            parts.push(
                if self.serializable {
                    "serializable"
                } else {
                    "linearizable"
                }
                .into(),
            );
        }
        if self.workload == Workload::Mixed {
            parts.push(format!("{}% reads", self.read_percent));
        }
        if self.workload == Workload::TxnPut {
            parts.push(format!("{} puts per txn", self.txn_ops));
        }
        parts.push(format!(
            "{} clients over {} connections to {}",
            self.clients,
            self.conns,
            endpoints.join(",")
        ));
        parts.push(format!(
            "{}-byte values, keys from {}",
            self.value.len(),
            self.keys.key_space()
        ));
        parts.push(match self.rate_per_s {
            Some(rate) => format!("open loop at {rate} requests/s"),
            None => "closed loop".into(),
        });
        parts.join(", ")
    }

    fn settings_json(&self, endpoints: &[String]) -> serde_json::Value {
        let (total, duration_s) = match self.stop {
            Stop::Total(total) => (Some(total), None),
            Stop::After(duration) => (None, Some(duration.as_secs_f64())),
        };
        serde_json::json!({
            "workload": self.workload_name(),
            "endpoints": endpoints,
            "clients": self.clients,
            "conns": self.conns,
            "total": total,
            "duration_s": duration_s,
            "rate_per_s": self.rate_per_s,
            "value_size_bytes": self.value.len(),
            "key_space": self.keys.key_space(),
            "serializable": self.serializable,
            "txn_ops": self.txn_ops,
            "read_percent": self.read_percent,
            "seed": self.seed,
        })
    }
}

/// What a status request says about the cluster.
async fn status_of(url: &str) -> Option<(u64, u64)> {
    let status = crate::client::member_status(url, STATUS_TIMEOUT, STATUS_TIMEOUT).await?;
    let member_id = status.header.map_or(0, |header| header.member_id);
    Some((member_id, status.leader))
}

/// Waits until every endpoint answers and all report the same leader (a member that has not
/// yet heard from the leader would refuse requests, and those errors would measure the start-up,
/// not the cluster); returns the endpoints to load: the leader's alone with --target-leader,
/// else all of them.
async fn wait_for_leader(plan: &Plan) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + LEADER_WAIT_MAX;
    loop {
        let mut members = Vec::new();
        let mut silent = Vec::new();
        for url in &plan.endpoint_urls {
            match status_of(url).await {
                Some((member_id, leader)) => members.push((url.clone(), member_id, leader)),
                None => silent.push(url.clone()),
            }
        }
        let leader = members.first().map_or(0, |(_, _, leader)| *leader);
        let agreed = silent.is_empty()
            && leader != 0
            && members.iter().all(|(_, _, reported)| *reported == leader);
        if agreed {
            if !plan.target_leader {
                return Ok(plan.endpoint_urls.clone());
            }
            if let Some((url, _, _)) = members.iter().find(|(_, id, _)| *id == leader) {
                return Ok(vec![url.clone()]);
            }
        }
        if Instant::now() >= deadline {
            let waited_s = LEADER_WAIT_MAX.as_secs();
            return Err(if !silent.is_empty() {
                format!("{} did not answer within {waited_s} s", silent.join(", "))
            } else if !agreed {
                format!("the endpoints did not agree on a leader within {waited_s} s")
            } else {
                format!("the leader ({leader:x}) is not among --endpoints")
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(plan: &Plan, urls: &[String]) -> Result<Vec<grpc::Connection>, String> {
    let mut connections = Vec::with_capacity(plan.conns);
    for index in 0..plan.conns {
        let url = &urls[index % urls.len()];
        connections.push(grpc::Connection::connect(url, plan.request_timeout).await?);
    }
    Ok(connections)
}

/// A worker's connection and the methods it calls on it.
struct KvCaller {
    connection: grpc::Connection,
    put: http::Uri,
    range: http::Uri,
    txn: http::Uri,
}

impl KvCaller {
    fn new(connection: grpc::Connection) -> KvCaller {
        KvCaller {
            put: connection.method_uri("/etcdserverpb.KV/Put"),
            range: connection.method_uri("/etcdserverpb.KV/Range"),
            txn: connection.method_uri("/etcdserverpb.KV/Txn"),
            connection,
        }
    }
}

/// What the workers share.
struct Shared {
    plan: Plan,
    start: Instant,
    next_request: AtomicU64,
    recorder: Mutex<Recorder>,
    /// With --watchers: when each write was sent, by its revision.
    write_times: Option<watch::WriteTimes>,
}

fn error_kind(status: &tonic::Status) -> String {
    let message: String = status
        .message()
        .chars()
        .take(ERROR_MESSAGE_CHARS_MAX)
        .collect();
    format!("{:?}: {message}", status.code())
}

/// Sends one request; for a write, returns the revision its answer names.
async fn send(caller: &KvCaller, operation: Operation) -> Result<Option<i64>, tonic::Status> {
    let connection = &caller.connection;
    let revision = |header: Option<server::proto::etcdserverpb::ResponseHeader>| {
        header.map(|header| header.revision)
    };
    match operation {
        Operation::Put(request) => connection
            .unary::<_, PutResponse>(&caller.put, &request)
            .await
            .map(|response| revision(response.header)),
        Operation::Range(request) => connection
            .unary::<_, RangeResponse>(&caller.range, &request)
            .await
            .map(|_| None),
        Operation::Txn(request) => connection
            .unary::<_, TxnResponse>(&caller.txn, &request)
            .await
            .map(|response| revision(response.header)),
    }
}

async fn worker(shared: Arc<Shared>, caller: KvCaller) {
    let plan = &shared.plan;
    loop {
        let request = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let Some(due) = plan.due(request, shared.start, Instant::now()) else {
            break;
        };
        // Rationale: tokio's timer rounds a deadline up to its next 1 ms tick, so sleeping
        // until "now" would add up to a millisecond to every closed-loop request.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let operation = plan.operation(request);
        let sent = Instant::now();
        let outcome = tokio::time::timeout(plan.request_timeout, send(&caller, operation)).await;
        let completed = Instant::now();
        let offset = completed - shared.start;
        if let (Ok(Ok(Some(revision))), Some(times)) = (&outcome, &shared.write_times) {
            times.record(*revision, sent);
        }
        let mut recorder = shared.recorder.lock().expect("no worker panics");
        match outcome {
            Ok(Ok(_)) => recorder.record_success(offset, completed - due),
            Ok(Err(status)) => recorder.record_error(offset, &error_kind(&status)),
            Err(_) => recorder.record_error(
                offset,
                &format!(
                    "client timeout: no answer within {} s",
                    plan.request_timeout.as_secs()
                ),
            ),
        }
    }
}

fn progress_bar(stop: Stop) -> ProgressBar {
    match stop {
        Stop::Total(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} requests, {per_sec}, eta {eta} {msg}",
                )
                .expect("a valid template"),
            );
            bar
        }
        Stop::After(duration) => {
            let bar = ProgressBar::new(duration.as_millis() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {msg}").expect("a valid template"),
            );
            bar
        }
    }
}

/// Redraws the progress bar until the run ends.
async fn show_progress(shared: Arc<Shared>, bar: ProgressBar) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        interval.tick().await;
        let (completed, failed) = {
            let recorder = shared.recorder.lock().expect("no worker panics");
            (recorder.completed(), recorder.failed())
        };
        let elapsed = shared.start.elapsed();
        let errors = if failed > 0 {
            format!(", {failed} errors")
        } else {
            String::new()
        };
        match shared.plan.stop {
            Stop::Total(_) => {
                bar.set_position(completed);
                bar.set_message(errors);
            }
            Stop::After(duration) => {
                bar.set_position((elapsed.as_millis() as u64).min(duration.as_millis() as u64));
                bar.set_message(format!(
                    "{:.1} s of {:.1} s, {completed} requests ({:.0}/s){errors}",
                    elapsed.as_secs_f64(),
                    duration.as_secs_f64(),
                    completed as f64 / elapsed.as_secs_f64().max(1e-9)
                ));
            }
        }
    }
}

/// Runs `flotilla bench` and returns the exit code: 0 if every request succeeded, 1 if any
/// failed or the run could not start, 2 for bad flags.
pub async fn run(args: BenchArgs, options: ClientOptions) -> ExitCode {
    let plan = match plan(&args, &options) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::from(2);
        }
    };
    match run_plan(plan, &args, options.json).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_plan(plan: Plan, args: &BenchArgs, json: bool) -> Result<ExitCode, String> {
    let urls = wait_for_leader(&plan).await?;
    let connections = connect(&plan, &urls).await?;
    let endpoints: Vec<String> = urls
        .iter()
        .map(|url| url.trim_start_matches("http://").to_string())
        .collect();
    let description = plan.description(&endpoints);
    let settings = plan.settings_json(&endpoints);
    let watchers = if plan.watchers > 0 {
        Some(watch::Watchers::open(&urls, plan.watchers).await?)
    } else {
        None
    };
    let bar = progress_bar(plan.stop);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        write_times: watchers.as_ref().map(|_| watch::WriteTimes::default()),
        plan,
        next_request: AtomicU64::new(0),
        recorder: Mutex::new(Recorder::new()),
    });
    let progress = tokio::spawn(show_progress(shared.clone(), bar.clone()));
    let workers: Vec<_> = (0..shared.plan.clients)
        .map(|index| {
            let caller = KvCaller::new(connections[index % connections.len()].clone());
            tokio::spawn(worker(shared.clone(), caller))
        })
        .collect();
    for worker in workers {
        worker
            .await
            .map_err(|error| format!("a worker failed: {error}"))?;
    }
    let elapsed = shared.start.elapsed();
    progress.abort();
    bar.finish_and_clear();
    let recorder = shared.recorder.lock().expect("no worker panics").clone();
    let summary = recorder.summary(elapsed);
    if json {
        println!("{}", summary.to_json(settings));
    } else {
        print!("{}", summary.to_text(&description));
    }
    let mut watch_failed = false;
    if let (Some(watchers), Some(times)) = (watchers, &shared.write_times) {
        let report = watchers.finish(times).await;
        let [p50, p90, p99, max] = report.latency_ms;
        println!(
            "  Watchers:    {} ({} of {} events received)",
            report.watchers, report.events, report.expected
        );
        println!(
            "  Watch ms:    p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  max {max:.3}  (write sent to event received)"
        );
        for error in &report.errors {
            println!("  Watch error: {error}");
        }
        watch_failed = !report.errors.is_empty() || report.events < report.expected;
    }
    if let Some(path) = &args.svg {
        let chart = svg::Chart {
            title: format!("flotilla bench {}", shared.plan.workload_name()),
            lines: vec![
                description,
                format!(
                "{} requests in {:.2} s: {:.1} requests/s; latency p50 {:.3} ms, p99 {:.3} ms, \
                 max {:.3} ms; {} errors",
                summary.requests,
                summary.elapsed_s,
                summary.throughput_per_s,
                summary.latency_ms.p50,
                summary.latency_ms.p99,
                summary.latency_ms.max,
                summary.failed
            ),
            ],
            timeline: recorder.timeline_points(),
            timeline_bucket_width_s: recorder.timeline_bucket_width_s(),
            bins: recorder.latency_bins(CHART_BINS_PER_DECADE),
        };
        std::fs::write(path, svg::render(&chart))
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(if summary.failed == 0 && !watch_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: BenchArgs,
        #[command(flatten)]
        options: ClientOptions,
    }

    fn parse(line: &str) -> Result<(BenchArgs, ClientOptions), String> {
        let words = std::iter::once("bench").chain(line.split_whitespace());
        let cli = TestCli::try_parse_from(words).map_err(|error| error.to_string())?;
        Ok((cli.args, cli.options))
    }

    fn plan_of(line: &str) -> Result<Plan, String> {
        let (args, options) = parse(line)?;
        plan(&args, &options)
    }

    #[test]
    fn defaults_make_a_closed_loop_run_of_ten_thousand_puts() {
        let plan = plan_of("put").unwrap();
        assert_eq!(plan.workload, Workload::Put);
        assert_eq!(plan.stop, Stop::Total(TOTAL_DEFAULT));
        assert_eq!(plan.rate_per_s, None);
        assert_eq!(
            plan.endpoint_urls,
            vec!["http://127.0.0.1:2379".to_string()]
        );
        assert_eq!(plan.clients, 1);
        assert_eq!(plan.conns, 1);
    }

    #[test]
    fn the_issues_flags_parse() {
        let plan = plan_of(
            "range --endpoints 127.0.0.1:1,http://127.0.0.1:2 --clients 64 --conns 8 \
             --total 50000 --val-size 256 --key-size 16 --key-space 10000 --consistency s \
             --rate 5000 --target-leader",
        )
        .unwrap();
        assert_eq!(plan.workload, Workload::Range);
        assert_eq!(
            plan.endpoint_urls,
            vec![
                "http://127.0.0.1:1".to_string(),
                "http://127.0.0.1:2".to_string()
            ]
        );
        assert_eq!((plan.clients, plan.conns), (64, 8));
        assert_eq!(plan.stop, Stop::Total(50_000));
        assert_eq!(plan.value.len(), 256);
        assert!(plan.serializable);
        assert_eq!(plan.rate_per_s, Some(5000));
        assert!(plan.target_leader);
        assert!(plan_of("txn-put --txn-ops 4").is_ok());
        assert!(plan_of("mixed --read-percent 90 --consistency linearizable").is_ok());
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let refused = |line: &str, reason: &str| {
            let error = plan_of(line).unwrap_err();
            assert!(error.contains(reason), "{line}: {error}");
        };
        refused("put --clients 0", "--clients");
        refused("put --conns 0", "--conns");
        refused("put --clients 2 --conns 3", "more than --clients");
        refused("put --total 0", "--total");
        refused("put --total 5 --duration 5s", "cannot be used with");
        refused("put --duration 0s", "positive");
        refused("put --duration 5 parsecs", "unexpected argument");
        refused("put --key-size 2 --key-space 1000", "at least 3 bytes");
        refused("put --key-space 0", "--key-space");
        refused("put --val-size 2000000", "--val-size");
        refused("txn-put --txn-ops 0", "--txn-ops");
        refused("txn-put --txn-ops 5 --key-space 4", "write a key twice");
        refused("mixed --read-percent 101", "--read-percent");
        refused("range --consistency x", "invalid value");
        refused("scan", "invalid value");
        refused("put --endpoints ,", "--endpoints");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("0").is_err());
    }

    #[test]
    fn a_total_run_ends_after_its_last_request() {
        let plan = plan_of("put --total 3").unwrap();
        let start = Instant::now();
        assert_eq!(plan.due(2, start, start), Some(start));
        assert_eq!(plan.due(3, start, start), None);
    }

    #[test]
    fn an_open_loop_run_schedules_requests_at_the_rate() {
        let plan = plan_of("put --rate 100 --duration 1s").unwrap();
        let start = Instant::now();
        // The schedule does not depend on when a worker asks.
        let late = start + Duration::from_secs(5);
        assert_eq!(plan.due(0, start, late), Some(start));
        assert_eq!(
            plan.due(50, start, late),
            Some(start + Duration::from_millis(500))
        );
        assert_eq!(
            plan.due(99, start, late),
            Some(start + Duration::from_millis(990))
        );
        assert_eq!(plan.due(100, start, start), None);
    }

    #[test]
    fn a_closed_loop_duration_run_stops_at_its_end() {
        let plan = plan_of("put --duration 2s").unwrap();
        let start = Instant::now();
        let before = start + Duration::from_millis(1999);
        assert_eq!(plan.due(1_000_000, start, before), Some(before));
        assert_eq!(plan.due(0, start, start + Duration::from_secs(2)), None);
    }

    #[test]
    fn requests_carry_the_workloads_operation() {
        let plan =
            plan_of("put --val-size 4 --key-size 3 --key-space 10 --sequential-keys").unwrap();
        match plan.operation(12) {
            Operation::Put(put) => {
                assert_eq!(put.key, b"002");
                assert_eq!(put.value, b"vvvv");
            }
            other => panic!("not a put: {other:?}"),
        }
        let plan = plan_of("range --consistency s --key-space 10 --sequential-keys").unwrap();
        match plan.operation(3) {
            Operation::Range(range) => {
                assert_eq!(range.key, b"00000003");
                assert!(range.serializable);
                assert!(range.range_end.is_empty());
            }
            other => panic!("not a range: {other:?}"),
        }
        let plan = plan_of("txn-put --txn-ops 3").unwrap();
        match plan.operation(7) {
            Operation::Txn(txn) => {
                assert!(txn.compare.is_empty());
                assert_eq!(txn.success.len(), 3);
            }
            other => panic!("not a txn: {other:?}"),
        }
    }

    #[test]
    fn a_mixed_run_reads_about_its_read_percentage() {
        let plan = plan_of("mixed --read-percent 30").unwrap();
        let reads = (0..10_000)
            .filter(|&request| matches!(plan.operation(request), Operation::Range(_)))
            .count();
        assert!((2700..3300).contains(&reads), "{reads} reads of 10,000");
        let none = plan_of("mixed --read-percent 0").unwrap();
        assert!((0..1000).all(|request| !none.reads(request)));
        let all = plan_of("mixed --read-percent 100").unwrap();
        assert!((0..1000).all(|request| all.reads(request)));
    }

    #[test]
    fn the_description_names_the_load() {
        let plan = plan_of("range --clients 64 --conns 8 --val-size 256 --consistency s").unwrap();
        let text = plan.description(&["127.0.0.1:2379".to_string()]);
        assert!(
            text.starts_with("range, serializable, 64 clients over 8 connections"),
            "{text}"
        );
        assert!(text.contains("256-byte values"), "{text}");
        assert!(text.ends_with("closed loop"), "{text}");
    }

    #[test]
    fn error_kinds_name_the_code_and_a_bounded_message() {
        let kind = error_kind(&tonic::Status::unavailable("etcdserver: no leader"));
        assert_eq!(kind, "Unavailable: etcdserver: no leader");
        let long = error_kind(&tonic::Status::internal("x".repeat(1000)));
        assert_eq!(long.len(), "Internal: ".len() + ERROR_MESSAGE_CHARS_MAX);
    }
}
