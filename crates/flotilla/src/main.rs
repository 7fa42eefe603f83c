//! `flotilla`: Flotilla's command line: a node (`serve`), a local cluster (`dev`), etcdctl-style
//! client commands, the deterministic cluster simulator (`sim`) and storage inspection
//! (`wal`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sim::{FaultSet, Outcome, SimConfig, StorageKind};

mod bench;
mod client;
mod dev;
mod snapshot;
mod wal;

/// Flotilla: a Raft consensus engine and an etcd-compatible key-value store.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: client::ClientOptions,
}

/// The subcommands. Rationale: one enum, so that `serve`, `dev` and `bench` join as variants.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node (etcd's flags: --name, --data-dir, --initial-cluster, ...).
    Serve(Box<server::config::ServeArgs>),
    /// Run a local cluster of N node processes on loopback (data in ./flotilla-data).
    Dev(dev::DevArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Run the deterministic cluster simulator over many seeds, or replay one seed.
    Sim(SimArgs),
    /// Inspect or verify a node's storage directory (WAL segments and snapshot files) without
    /// changing it.
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Backups: save one from a member, check one, or build a new member's data directory
    /// from one.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Load an etcd-compatible cluster and measure throughput and latency (etcd's benchmark
    /// tool's workloads, over etcd's v3 API only).
    Bench(bench::BenchArgs),
}

/// Arguments of `flotilla sim`.
#[derive(Debug, Args)]
struct SimArgs {
    /// How many seeds to run, starting at --first-seed.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of the batch.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Run exactly this seed (a replay); prints its trace hash, and its events with --trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster sizes (founding voters), comma separated; seed i uses size i mod the list.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    nodes: Vec<usize>,
    /// Client operations per seed, at most.
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Ticks of fault injection before everything heals.
    #[arg(long, default_value_t = 1000)]
    chaos_ticks: u64,
    /// Faults the seeds may choose: all, none, or a comma-separated list of partition, loss,
    /// duplicate, delay, crash, pause, clock, membership, transfer, lease, disk, corrupt.
    #[arg(long, default_value = "all")]
    faults: FaultSet,
    /// What the nodes persist into: wal (the real WAL on a simulated disk, with torn writes,
    /// failed fsyncs and damaged records) or memory (MemoryStorage, faster).
    #[arg(long, default_value = "wal")]
    storage: StorageKind,
    /// With --seed: print every event.
    #[arg(long)]
    trace: bool,
    /// How many recent events a failure report shows.
    #[arg(long, default_value_t = 40)]
    last_events: usize,
    /// Worker threads; every seed's run is the same whatever the count.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => run_serve(*args),
        Command::Dev(args) => match tokio_runtime() {
            Ok(runtime) => runtime.block_on(dev::run(args)),
            Err(code) => code,
        },
        Command::Client(command) => match tokio_runtime() {
            Ok(runtime) => runtime.block_on(client::run(command, cli.client)),
            Err(code) => code,
        },
        Command::Sim(args) => run_sim(args),
        Command::Wal(command) => wal::run(command),
        Command::Snapshot(command) => match tokio_runtime() {
            Ok(runtime) => runtime.block_on(snapshot::run(command, cli.client)),
            Err(code) => code,
        },
        Command::Bench(args) => match tokio_runtime() {
            Ok(runtime) => runtime.block_on(bench::run(args, cli.client)),
            Err(code) => code,
        },
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("Error: starting the async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// Sets up the node's log from etcd's flags: `--log-level`, `--logger`, `--log-outputs`, and
/// `--log-format`.
fn init_logging(args: &server::config::ServeArgs) -> Result<(), String> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let level = match args.log_level.as_str() {
        "debug" | "info" | "warn" | "error" => args.log_level.clone(),
        // etcd's two most severe levels: Flotilla logs nothing more severe than an error.
        "dpanic" | "panic" | "fatal" => "error".to_string(),
        other => {
            return Err(format!(
                "--log-level {other:?}: use debug, info, warn or error"
            ))
        }
    };
    if args.logger != "zap" {
        return Err(format!(
            "--logger {:?}: only zap is supported (capnslog was removed in etcd 3.5)",
            args.logger
        ));
    }
    let mut writer: Option<BoxMakeWriter> = None;
    // Colours only for a terminal: files and pipes get plain text.
    let mut ansi = true;
    for output in args.log_outputs.split(',').map(str::trim) {
        ansi &= match output {
            "default" | "stderr" => std::io::IsTerminal::is_terminal(&std::io::stderr()),
            "stdout" => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            _ => false,
        };
        let next = match output {
            "default" | "stderr" => BoxMakeWriter::new(std::io::stderr),
            "stdout" => BoxMakeWriter::new(std::io::stdout),
            "" => return Err("--log-outputs names an empty output".to_string()),
            path => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| format!("--log-outputs: opening {path}: {error}"))?;
                BoxMakeWriter::new(std::sync::Arc::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(earlier) => BoxMakeWriter::new(earlier.and(next)),
        });
    }
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match args.log_format.as_str() {
        "console" => builder.init(),
        "json" => builder.json().init(),
        other => return Err(format!("--log-format {other:?}: use console or json")),
    }
    Ok(())
}

fn run_serve(args: server::config::ServeArgs) -> ExitCode {
    if let Err(error) = init_logging(&args) {
        eprintln!("Error: {error}");
        return ExitCode::FAILURE;
    }
    use_one_malloc_arena();
    let config = match args.resolve() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(server::serve::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

impl SimArgs {
    fn config(&self, nodes: usize, keep_trace: bool) -> SimConfig {
        SimConfig {
            nodes,
            ops: self.ops,
            clients: self.clients,
            chaos_ticks: self.chaos_ticks,
            faults: self.faults,
            storage: self.storage,
            recent_events: self.last_events,
            keep_trace,
            ..SimConfig::default()
        }
    }

    fn nodes_for(&self, seed: u64) -> usize {
        self.nodes[(seed % self.nodes.len() as u64) as usize]
    }

    /// The command that replays `seed` exactly.
    fn replay_command(&self, seed: u64, nodes: usize) -> String {
        format!(
            "cargo run --release -p flotilla -- sim --seed {seed} --nodes {nodes} --ops {} --clients {} \
             --chaos-ticks {} --faults {} --storage {} --trace",
            self.ops, self.clients, self.chaos_ticks, self.faults, self.storage
        )
    }
}

fn validate(args: &SimArgs) -> Result<(), String> {
    if args.nodes.is_empty() || args.nodes.iter().any(|&nodes| nodes == 0 || nodes > 32) {
        return Err("--nodes takes cluster sizes from 1 to 32".into());
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.chaos_ticks == 0 {
        return Err("--chaos-ticks must be at least 1".into());
    }
    Ok(())
}

fn run_sim(args: SimArgs) -> ExitCode {
    if let Err(message) = validate(&args) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    // Panics inside a run are caught and reported as violations with their message; the
    // default hook would also print each to stderr, in the middle of the progress bar.
    std::panic::set_hook(Box::new(|_| {}));
    match args.seed {
        Some(seed) => replay(&args, seed),
        None => batch(&args),
    }
}

fn replay(args: &SimArgs, seed: u64) -> ExitCode {
    let nodes = args.nodes[0];
    let started = Instant::now();
    let outcome = sim::run(seed, &args.config(nodes, args.trace));
    let elapsed = started.elapsed();
    if let Some(trace) = &outcome.trace {
        for line in trace {
            println!("{line}");
        }
    }
    let stats = outcome.stats;
    println!(
        "seed {seed} ({nodes} nodes): {} events, {} ticks, {} ops ({} completed, {} indeterminate), \
         term {}, commit {}, {} crashes ({} torn writes discarded, {} failed fsyncs, {} disks \
         damaged, {} replaced), {} reads; trace hash {:016x}; {:.1} ms",
        stats.events,
        stats.ticks,
        stats.ops_invoked,
        stats.ops_completed,
        stats.ops_indeterminate,
        stats.max_term,
        stats.committed_index,
        stats.crashes,
        stats.torn_tails,
        stats.storage_failures,
        stats.corrupted_nodes,
        stats.replacements,
        if stats.lease_reads { "lease" } else { "ReadIndex" },
        outcome.trace_hash,
        elapsed.as_secs_f64() * 1000.0
    );
    if outcome.violation.is_some() {
        report_failure(args, &outcome, nodes);
        return ExitCode::FAILURE;
    }
    println!("1 seeds, 0 violations");
    ExitCode::SUCCESS
}

fn report_failure(args: &SimArgs, outcome: &Outcome, nodes: usize) {
    let violation = outcome.violation.as_ref().expect("a failed outcome");
    println!("FAILED: seed {} ({nodes} nodes): {violation}", outcome.seed);
    println!("the last {} events before it:", outcome.recent_events.len());
    for line in &outcome.recent_events {
        println!("  {line}");
    }
    println!("replay: {}", args.replay_command(outcome.seed, nodes));
}

/// Sums of [`sim::Stats`]' disk fault counts over a batch.
#[derive(Debug, Default)]
struct DiskFaultTotals {
    crashes: u64,
    torn_tails: u64,
    storage_failures: u64,
    corrupted_nodes: u64,
    replacements: u64,
}

impl DiskFaultTotals {
    fn add(&mut self, stats: &sim::Stats) {
        self.crashes += stats.crashes;
        self.torn_tails += stats.torn_tails;
        self.storage_failures += stats.storage_failures;
        self.corrupted_nodes += stats.corrupted_nodes;
        self.replacements += stats.replacements;
    }
}

fn batch(args: &SimArgs) -> ExitCode {
    let progress = ProgressBar::new(args.seeds);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {per_sec}, eta {eta} {msg}")
            .expect("a valid template"),
    );
    let next = AtomicU64::new(0);
    let failures: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let ops = AtomicU64::new(0);
    // Totals of the faults that hit the disks, so that a passing batch shows they happened.
    let disk_faults = Mutex::new(DiskFaultTotals::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| loop {
                let offset = next.fetch_add(1, Ordering::Relaxed);
                if offset >= args.seeds {
                    break;
                }
                let seed = args.first_seed + offset;
                let outcome = sim::run(seed, &args.config(args.nodes_for(seed), false));
                ops.fetch_add(outcome.stats.ops_invoked, Ordering::Relaxed);
                disk_faults
                    .lock()
                    .expect("no worker panics")
                    .add(&outcome.stats);
                if outcome.violation.is_some() {
                    let mut failures = failures.lock().expect("no worker panics");
                    failures.push(outcome);
                    progress.set_message(format!("{} violations", failures.len()));
                }
                progress.inc(1);
            });
        }
    });
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut failures = failures.into_inner().expect("no worker panics");
    failures.sort_by_key(|outcome| outcome.seed);
    println!("{} seeds, {} violations", args.seeds, failures.len());
    println!(
        "({} client operations in {elapsed:.1} s: {:.0} seeds/s with {} job(s); cluster sizes {:?}, faults {}, storage {})",
        ops.load(Ordering::Relaxed),
        args.seeds as f64 / elapsed.max(1e-9),
        args.jobs.max(1),
        args.nodes,
        args.faults,
        args.storage
    );
    let disk_faults = disk_faults.into_inner().expect("no worker panics");
    if args.storage == StorageKind::Wal {
        println!(
            "(disk faults: {} crashes, {} torn writes discarded on restart, {} failed fsyncs, \
             {} disks damaged and refused, {} nodes replaced)",
            disk_faults.crashes,
            disk_faults.torn_tails,
            disk_faults.storage_failures,
            disk_faults.corrupted_nodes,
            disk_faults.replacements
        );
    }
    let Some(first) = failures.first() else {
        return ExitCode::SUCCESS;
    };
    if failures.len() > 1 {
        let seeds: Vec<String> = failures
            .iter()
            .map(|outcome| outcome.seed.to_string())
            .collect();
        println!("failing seeds: {}", seeds.join(" "));
    }
    report_failure(args, first, args.nodes_for(first.seed));
    ExitCode::FAILURE
}

/// Makes glibc's malloc serve every thread from one arena. Called before any thread starts.
///
/// Rationale, measured (docs/PERFORMANCE.md): the key-value store's versions are allocated on
/// the runtime's threads and freed (by compaction, or as replaced log entries) on others; with
/// an arena per thread the freed memory is not reused across them, and a 3-node cluster held
/// 890 MiB after 550,000 puts against 792 MiB with one arena, at no measurable CPU cost (small
/// allocations come from each thread's cache without the arena's lock).
fn use_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc parameter; it is called before other threads
        // exist, as glibc asks.
        let changed = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if changed == 0 {
            tracing::warn!("could not limit malloc to one arena");
        }
    }
}
