//! A harness for tests that run real `flotilla serve` processes on loopback: each node gets its
//! own ports, temporary data directory and log file; every process is killed when its guard is
//! dropped, whether the test passed or panicked; and a failing test prints every node's log.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");

/// How long a cluster may take to elect a leader, or a node to catch up, before a test gives
/// up. Generous: CI runs these on two loaded cores, in debug builds.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one client command may run before it is killed. The client's own timeout
/// (`--command-timeout`, 5 s by default) should end it well before.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The finished run of a child process.
#[derive(Debug)]
pub struct Run {
    /// Its exit status; None when it was killed for overrunning its time.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to standard output.
    pub stdout: String,
    /// Everything it wrote to standard error.
    pub stderr: String,
}

impl Run {
    /// True when the process exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// Standard output, asserting that the process succeeded.
    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> &str {
        assert!(self.success(), "{what} failed: {self:?}");
        &self.stdout
    }
}

/// Kills a child when dropped, so no process outlives a test, even a panicking one.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` to completion with `stdin` as its input, killing it after `timeout`.
/// Rationale: a client that hangs must fail the test, not stall the whole run.
pub fn run_with_timeout(mut command: Command, stdin: &str, timeout: Duration) -> Run {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(command.spawn().expect("the command starts"));
    let mut input = child.0.stdin.take().expect("piped stdin");
    let input_text = stdin.to_string();
    // A writer thread, so that a child that does not read its input cannot block the test.
    let writer = thread::spawn(move || {
        let _ = input.write_all(input_text.as_bytes());
    });
    let stdout = read_in_background(child.0.stdout.take().expect("piped stdout"));
    let stderr = read_in_background(child.0.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.0.try_wait().expect("waiting for the child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.0.kill();
                break None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    drop(child);
    let _ = writer.join();
    Run {
        status,
        stdout: stdout.join().expect("the reader thread"),
        stderr: stderr.join().expect("the reader thread"),
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `flotilla --endpoints <endpoints> <arguments>` (a client command).
pub fn client(endpoints: &[impl AsRef<str>], arguments: &[&str]) -> Run {
    client_with_input(endpoints, arguments, "")
}

/// As [`client`], with `input` on standard input (for `txn`).
pub fn client_with_input(endpoints: &[impl AsRef<str>], arguments: &[&str], input: &str) -> Run {
    let endpoints: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
    let mut command = Command::new(FLOTILLA);
    command.arg("--endpoints").arg(endpoints.join(","));
    command.args(arguments);
    let run = run_with_timeout(command, input, COMMAND_TIMEOUT);
    assert!(
        !run.stderr.contains("panicked"),
        "the client panicked: {run:?}"
    );
    run
}

/// etcdctl: /usr/bin/etcdctl (where Debian installs it), else the first on PATH.
pub fn find_etcdctl() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/etcdctl");
    if debian.is_file() {
        return debian;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|directory| directory.join("etcdctl"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "etcdctl is not installed (looked in /usr/bin and on PATH). This test checks \
             compatibility with etcd's client, version 3.4; install it with \
             `sudo apt-get install etcd-client` (Debian/Ubuntu), or put an etcdctl 3.4 binary on \
             PATH. .ci/run installs it on CI."
        )
    })
}

/// Runs etcdctl against `endpoints` with `input` on standard input.
pub fn etcdctl(binary: &PathBuf, endpoints: &[String], arguments: &[&str], input: &str) -> Run {
    let mut command = Command::new(binary);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--command-timeout=10s")
        .args(arguments);
    run_with_timeout(command, input, COMMAND_TIMEOUT)
}

/// One plain HTTP/1.1 request to `endpoint` (`host:port`): the status code and the body.
pub fn http_request(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect(endpoint).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| error.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((code, body.to_string()))
}

/// Polls `probe` until it returns Ok, or panics after `timeout` with `what` and the last
/// thing the probe saw (its Err), which is what tells why it never got there.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The number after `"field":` in a line of the client's JSON output.
pub fn json_number(line: &str, field: &str) -> Option<u64> {
    let pattern = format!("\"{field}\":");
    let start = line.find(&pattern)? + pattern.len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One node's status, from `flotilla endpoint status --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's member id.
    pub member_id: u64,
    /// The leader it knows of (0 for none).
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// One node of a test cluster: its flags, data directory and process.
pub struct Node {
    /// `--name`.
    pub name: String,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    /// The peer port on 127.0.0.1.
    pub peer_port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Where the process's standard error (its log) goes, across restarts.
    pub log_path: PathBuf,
    /// The running process, if any.
    pub process: Option<ChildGuard>,
    /// Flags this node is started with besides the identity and address flags.
    pub flags: Vec<String>,
}

impl Node {
    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<peer port>`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Starts the node's process (again, after a stop, with the same data directory).
    pub fn start(&mut self) {
        assert!(self.process.is_none(), "{} is running already", self.name);
        let client_url = format!("http://{}", self.endpoint());
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("the log file opens");
        let child = Command::new(FLOTILLA)
            .arg("serve")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(&self.flags)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("flotilla serve starts");
        self.process = Some(ChildGuard(child));
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        drop(self.process.take().expect("the node is running"));
    }

    /// Its status, or None if it does not answer.
    pub fn status(&self) -> Option<Status> {
        let run = client(
            &[&self.endpoint()],
            &["--json", "--command-timeout", "2", "endpoint", "status"],
        );
        if !run.success() {
            return None;
        }
        let line = run.stdout.lines().next()?;
        Some(Status {
            member_id: json_number(line, "member_id")?,
            leader: json_number(line, "leader")?,
            term: json_number(line, "raftTerm")?,
            applied_index: json_number(line, "raftAppliedIndex")?,
            is_learner: line.contains("\"isLearner\":true"),
        })
    }
}

/// A cluster of nodes on loopback, with ports `base_port + 10 * i` (client) and
/// `base_port + 10 * i + 1` (peer) for node i.
pub struct Cluster {
    /// The nodes, in the order they were created.
    pub nodes: Vec<Node>,
    /// The first port of this cluster's range.
    pub base_port: u16,
    /// `--initial-cluster-token`, unique per test.
    pub token: String,
    /// Holds every data directory and log; removed when the cluster is dropped.
    pub directory: tempfile::TempDir,
    /// Timing and other flags every node gets.
    pub common_flags: Vec<String>,
}

impl Cluster {
    /// Starts `size` founding members with short timings and `extra_flags`, and waits until
    /// every one of them knows the same leader. Each test passes its own `base_port` so that
    /// tests can run in parallel; ports stay below Linux's ephemeral range (32768 and up), so
    /// that no outgoing connection can be holding one of them.
    pub fn start(size: usize, base_port: u16, extra_flags: &[&str]) -> Cluster {
        let cluster = Cluster::launch(size, base_port, extra_flags);
        cluster.wait_for_leader(&(0..size).collect::<Vec<_>>());
        cluster
    }

    /// [`Cluster::start`] without waiting for anything: every process is started and the
    /// cluster returned at once.
    pub fn launch(size: usize, base_port: u16, extra_flags: &[&str]) -> Cluster {
        let mut cluster = Cluster::configure(size, base_port, extra_flags);
        for node in &mut cluster.nodes {
            node.start();
        }
        cluster
    }

    /// [`Cluster::launch`] without starting anything: every node has its flags and data
    /// directory (not created yet), for a test that prepares the directories first.
    pub fn configure(size: usize, base_port: u16, extra_flags: &[&str]) -> Cluster {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let mut common_flags: Vec<String> = [
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--initial-cluster-token",
        ]
        .iter()
        .map(|flag| flag.to_string())
        .collect();
        let token = format!("flotilla-test-{base_port}");
        common_flags.push(token.clone());
        common_flags.extend(extra_flags.iter().map(|flag| flag.to_string()));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            base_port,
            token,
            directory,
            common_flags,
        };
        for index in 0..size {
            let node = cluster.new_node(index);
            cluster.nodes.push(node);
        }
        let initial_cluster = cluster.initial_cluster();
        for node in &mut cluster.nodes {
            node.flags.extend([
                "--initial-cluster".to_string(),
                initial_cluster.clone(),
                "--initial-cluster-state".to_string(),
                "new".to_string(),
            ]);
        }
        cluster
    }

    fn new_node(&self, index: usize) -> Node {
        let client_port = self.base_port + 10 * index as u16;
        let name = format!("node{}", index + 1);
        Node {
            data_dir: self.directory.path().join(&name),
            log_path: self.directory.path().join(format!("{name}.log")),
            name,
            client_port,
            peer_port: client_port + 1,
            process: None,
            flags: self.common_flags.clone(),
        }
    }

    /// `name=peer-url` for every node created so far.
    pub fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("{}={}", node.name, node.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds a node to `nodes` (not started, no cluster flags yet) and returns its index.
    pub fn add_node(&mut self) -> usize {
        let node = self.new_node(self.nodes.len());
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Endpoints of the nodes at `indexes`.
    pub fn endpoints(&self, indexes: &[usize]) -> Vec<String> {
        indexes
            .iter()
            .map(|&index| self.nodes[index].endpoint())
            .collect()
    }

    /// Endpoints of every running node.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| node.process.is_some())
            .map(Node::endpoint)
            .collect()
    }

    /// Waits until every node at `indexes` answers and names the same leader, which is one
    /// of them; returns that leader's index.
    #[track_caller]
    pub fn wait_for_leader(&self, indexes: &[usize]) -> usize {
        wait_for("a leader all nodes agree on", LIVENESS_TIMEOUT, || {
            let statuses: Vec<Option<Status>> = indexes
                .iter()
                .map(|&index| self.nodes[index].status())
                .collect();
            let leader = statuses[0].map_or(0, |status| status.leader);
            let agreed = statuses
                .iter()
                .all(|status| status.is_some_and(|status| status.leader == leader));
            indexes
                .iter()
                .zip(&statuses)
                .find(|(_, status)| agreed && status.is_some_and(|s| s.member_id == leader))
                .map(|(&index, _)| index)
                .ok_or_else(|| format!("{statuses:?}"))
        })
    }

    /// The member id of the node at `index` (it must be running).
    pub fn member_id(&self, index: usize) -> u64 {
        wait_for("the node to answer status", LIVENESS_TIMEOUT, || {
            self.nodes[index]
                .status()
                .ok_or_else(|| "no answer".to_string())
        })
        .member_id
    }

    /// Every node's log, for a failing test's output.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            // The end of each log is where a failure shows; the whole would drown it.
            let lines: Vec<&str> = log.lines().collect();
            let shown = &lines[lines.len().saturating_sub(80)..];
            text.push_str(&format!(
                "----- {} ({}), last {} lines of {} -----\n{}\n",
                node.name,
                node.endpoint(),
                shown.len(),
                node.log_path.display(),
                shown.join("\n")
            ));
        }
        text
    }

    /// The data directory of the node at `index`.
    pub fn data_dir(&self, index: usize) -> &Path {
        &self.nodes[index].data_dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The nodes' own guards kill them; a failing test also shows what they logged.
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            node.process.take();
        }
    }
}
