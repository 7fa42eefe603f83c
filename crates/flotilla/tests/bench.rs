//! `flotilla bench` against a real single-node `flotilla serve` on loopback: the requests must
//! all succeed. Nothing here asserts speed; benchmarks measure that.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// This test's ports: a range of its own, so that it does not meet other tests' servers.
const PORTS: std::ops::Range<u16> = 47_300..47_400;
/// How long the node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `flotilla serve` process, killed when dropped.
struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two free ports next to each other (client, peer) in [`PORTS`].
fn free_port_pair() -> (u16, u16) {
    let mut port = PORTS.start;
    while port + 1 < PORTS.end {
        let client = TcpListener::bind(("127.0.0.1", port));
        let peer = TcpListener::bind(("127.0.0.1", port + 1));
        if client.is_ok() && peer.is_ok() {
            return (port, port + 1);
        }
        port += 2;
    }
    panic!("no free port pair in {PORTS:?}");
}

fn start_node(data_dir: &Path, client_port: u16, peer_port: u16) -> Node {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("serve")
        .args(["--name", "bench1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench1={peer_url}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flotilla serve starts");
    let node = Node { child };
    let address: SocketAddr = format!("127.0.0.1:{client_port}").parse().unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the node did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

fn bench(client_port: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--endpoints", &format!("127.0.0.1:{client_port}")])
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("flotilla bench runs")
}

#[test]
fn bench_put_against_a_single_node_has_no_errors() {
    let directory = tempfile::tempdir().unwrap();
    let (client_port, peer_port) = free_port_pair();
    let _node = start_node(&directory.path().join("bench1"), client_port, peer_port);
    let chart = directory.path().join("put.svg");
    let output = bench(
        client_port,
        &[
            "put",
            "--total",
            "200",
            "--clients",
            "4",
            "--conns",
            "2",
            "--val-size",
            "256",
            "--svg",
            chart.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Requests:    200 (200 succeeded, 0 failed)"),
        "{stdout}"
    );
    assert!(stdout.contains("Errors:      none"), "{stdout}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");

    // Linearizable reads over the same key space succeed too, and the JSON report counts them.
    let output = bench(
        client_port,
        &["range", "--total", "100", "--consistency", "l", "--json"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("\"failed\":0"), "{stdout}");
    assert!(stdout.contains("\"succeeded\":100"), "{stdout}");
}
