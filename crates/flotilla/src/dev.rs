//! `flotilla dev`: a local cluster of N node processes on loopback, in etcd's Procfile
//! convention (client ports 2379, 22379, 32379, ...; peer ports 2380, 22380, 32380, ...), with
//! data under ./flotilla-data. It prints the endpoints and each node's role as it changes, and
//! stops every node on Ctrl-C. Run again, it resumes the same data.

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;

/// The flags of `flotilla dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many nodes (1 to 9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: u16,
    /// Where the nodes keep their data.
    #[arg(long, default_value = "flotilla-data")]
    pub data_dir: PathBuf,
    /// Heartbeat interval in milliseconds, passed to every node.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Election timeout in milliseconds, passed to every node.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
}

/// The (client, peer) ports of node `index` (0-based): etcd's Procfile convention, 2379/2380,
/// 22379/22380, 32379/32380 and so on up to 62379/62380; the convention runs out of 16-bit
/// ports after six nodes, so nodes seven to nine use 2479/2480, 2579/2580 and 2679/2680.
pub fn ports(index: u16) -> (u16, u16) {
    let client = match index {
        0 => 2379,
        1..=5 => (index + 1) * 10_000 + 2379,
        _ => 2379 + 100 * (index - 5),
    };
    (client, client + 1)
}

struct DevNode {
    name: String,
    client_url: String,
    child: Child,
}

fn spawn_nodes(args: &DevArgs) -> Result<Vec<DevNode>, String> {
    let executable =
        std::env::current_exe().map_err(|error| format!("finding this executable: {error}"))?;
    let names: Vec<String> = (1..=args.nodes)
        .map(|number| format!("node{number}"))
        .collect();
    let initial_cluster: Vec<String> = (0..args.nodes)
        .map(|index| {
            format!(
                "{}=http://127.0.0.1:{}",
                names[index as usize],
                ports(index).1
            )
        })
        .collect();
    let initial_cluster = initial_cluster.join(",");
    let mut nodes = Vec::new();
    for index in 0..args.nodes {
        let (client_port, peer_port) = ports(index);
        let name = names[index as usize].clone();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data_dir = args.data_dir.join(&name);
        let child = Command::new(&executable)
            .arg("serve")
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "flotilla-dev"])
            .args(["--heartbeat-interval", &args.heartbeat_interval.to_string()])
            .args(["--election-timeout", &args.election_timeout.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting {name}: {error}"))?;
        nodes.push(DevNode {
            name,
            client_url,
            child,
        });
    }
    Ok(nodes)
}

async fn role_of(url: &str) -> Option<(bool, u64, u64)> {
    let status =
        crate::client::member_status(url, Duration::from_millis(300), Duration::from_millis(500))
            .await?;
    let id = status.header.map_or(0, |header| header.member_id);
    Some((
        status.leader == id && id != 0,
        status.raft_term,
        status.leader,
    ))
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> ExitCode {
    let mut nodes = match spawn_nodes(&args) {
        Ok(nodes) => nodes,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|node| node.client_url.trim_start_matches("http://").to_string())
        .collect();
    println!(
        "flotilla dev: {} nodes, data in {}",
        nodes.len(),
        args.data_dir.display()
    );
    for node in &nodes {
        println!("  {}: {}", node.name, node.client_url);
    }
    println!(
        "  try: flotilla --endpoints {} put hello world",
        endpoints.join(",")
    );
    println!("  stop: Ctrl-C");
    let mut roles: Vec<Option<String>> = vec![None; nodes.len()];
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = interval.tick() => {
                for (position, node) in nodes.iter_mut().enumerate() {
                    if let Ok(Some(status)) = node.child.try_wait() {
                        let text = format!("exited ({status})");
                        if roles[position].as_deref() != Some(text.as_str()) {
                            println!("{} {text}", node.name);
                            roles[position] = Some(text);
                        }
                        continue;
                    }
                    let role = match role_of(&node.client_url).await {
                        Some((true, term, _)) => format!("leader (term {term})"),
                        Some((false, term, 0)) => format!("without a leader (term {term})"),
                        Some((false, term, _)) => format!("follower (term {term})"),
                        None => "not answering".to_string(),
                    };
                    if roles[position].as_deref() != Some(role.as_str()) {
                        println!("{} is {role}", node.name);
                        roles[position] = Some(role);
                    }
                }
            }
        }
    }
    println!("stopping {} nodes", nodes.len());
    stop_nodes(&mut nodes).await;
    ExitCode::SUCCESS
}

async fn stop_nodes(nodes: &mut [DevNode]) {
    // Ctrl-C in a terminal reaches the whole process group, so the nodes are stopping
    // already; a node that is still running after a grace period is killed.
    for node in nodes.iter_mut() {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .args(["-TERM", &node.child.id().to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_procfile_convention() {
        assert_eq!(ports(0), (2379, 2380));
        assert_eq!(ports(1), (22379, 22380));
        assert_eq!(ports(2), (32379, 32380));
        assert_eq!(ports(5), (62379, 62380));
        assert_eq!(ports(8), (2679, 2680));
    }
}
