//! The client commands: `put`, `get`, `del`, `txn`, `member`, `endpoint`. They speak only
//! etcd's v3 API, so they work against etcd too; the output follows etcdctl's.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use server::keys::prefix_end;
use server::proto::etcdserverpb::cluster_client::ClusterClient;
use server::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use server::proto::etcdserverpb::{
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, Member,
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, PutRequest,
    RangeRequest, RequestOp, ResponseOp, StatusRequest, StatusResponse, TxnRequest,
};
use server::proto::mvccpb::KeyValue;
use tonic::transport::Channel;

/// Options every client command takes.
#[derive(Clone, Debug, Args)]
pub struct ClientOptions {
    /// gRPC endpoints, comma separated (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Print responses as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long one request may take, in seconds.
    #[arg(long, global = true, default_value_t = 5)]
    pub command_timeout: u64,
}

/// `flotilla member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members.
    List,
    /// Add a member (as a learner with --learner).
    Add {
        /// The new member's name (for the printed --initial-cluster).
        name: String,
        /// Its peer URLs, comma separated.
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
        /// Add it as a learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by its hexadecimal id.
    Remove {
        /// The member id (hexadecimal).
        id: String,
    },
    /// Promote a learner to a voter.
    Promote {
        /// The member id (hexadecimal).
        id: String,
    },
}

/// `flotilla endpoint ...`.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Each endpoint's status: id, version, database size, leader, term, indexes.
    Status,
    /// Whether each endpoint answers a linearizable read.
    Health,
}

/// A client command.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Print the previous key-value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read a key, a prefix, or a range.
    Get {
        /// The key (or the start of the range).
        key: String,
        /// The end of the range (exclusive).
        range_end: Option<String>,
        /// Read every key with this prefix.
        #[arg(long)]
        prefix: bool,
        /// Read at this revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Return at most this many keys.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Serve the read locally without a linearizability round.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key, a prefix, or a range.
    Del {
        /// The key (or the start of the range).
        key: String,
        /// The end of the range (exclusive).
        range_end: Option<String>,
        /// Delete every key with this prefix.
        #[arg(long)]
        prefix: bool,
        /// Print the deleted key-values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// A transaction read from standard input, as etcdctl's: compares, a blank line, the
    /// operations on success, a blank line, the operations on failure.
    Txn {
        /// Prompt for each part (for a terminal).
        #[arg(long, short)]
        interactive: bool,
    },
    /// Compact the history up to a revision.
    Compaction {
        /// The revision.
        revision: i64,
    },
    /// Membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
}

fn endpoint_url(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

pub(crate) async fn connect(options: &ClientOptions) -> Result<Channel, String> {
    let mut last_error = String::from("no endpoint given");
    for endpoint in &options.endpoints {
        let url = endpoint_url(endpoint);
        let channel = Channel::from_shared(url.clone())
            .map_err(|error| format!("{endpoint}: {error}"))?
            .connect_timeout(Duration::from_secs(options.command_timeout))
            .timeout(Duration::from_secs(options.command_timeout));
        match channel.connect().await {
            Ok(channel) => return Ok(channel),
            Err(error) => last_error = format!("{endpoint}: {error}"),
        }
    }
    Err(last_error)
}

/// One member's Maintenance Status at `url` (`http://host:port`), or None if it does not
/// connect within `connect_timeout` or answer within `timeout`. For polling members' roles.
pub async fn member_status(
    url: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Option<StatusResponse> {
    let channel = Channel::from_shared(url.to_string())
        .ok()?
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .connect()
        .await
        .ok()?;
    let response = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .ok()?;
    Some(response.into_inner())
}

/// The key and range end of a prefix: every key when the prefix is empty. Rationale: etcd
/// refuses an empty key, so etcdctl asks for every key from "\0" on ("\0" as the range end
/// means "to the end").
fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_end(prefix))
    }
}

/// The key and range end a get or del asks for.
fn range_for(key: String, range_end: Option<&String>, prefix: bool) -> (Vec<u8>, Vec<u8>) {
    if prefix {
        prefix_range(key.as_bytes())
    } else {
        let range_end = range_end
            .map(|end| end.as_bytes().to_vec())
            .unwrap_or_default();
        (key.into_bytes(), range_end)
    }
}

fn print_key_values(
    kvs: &[KeyValue],
    keys_only: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    for kv in kvs {
        out.write_all(&kv.key)?;
        out.write_all(b"\n")?;
        if !keys_only {
            out.write_all(&kv.value)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn status_text(status: tonic::Status) -> String {
    format!("Error: {}", status.message())
}

fn parse_member_id(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("Error: bad member ID arg ({text:?}), expecting ID in Hex"))
}

fn print_members(members: &[Member], json: bool) {
    if json {
        let items: Vec<String> = members
            .iter()
            .map(|member| {
                format!(
                    "{{\"ID\":{},\"name\":{:?},\"peerURLs\":{:?},\"clientURLs\":{:?},\"isLearner\":{}}}",
                    member.id, member.name, member.peer_ur_ls, member.client_ur_ls, member.is_learner
                )
            })
            .collect();
        println!("{{\"members\":[{}]}}", items.join(","));
        return;
    }
    for member in members {
        let started = if member.name.is_empty() {
            "unstarted"
        } else {
            "started"
        };
        println!(
            "{:x}, {started}, {}, {}, {}, {}",
            member.id,
            member.name,
            member.peer_ur_ls.join(","),
            member.client_ur_ls.join(","),
            member.is_learner
        );
    }
}

/// Runs a client command; prints etcdctl-style output and returns the exit code.
pub async fn run(command: ClientCommand, options: ClientOptions) -> ExitCode {
    match run_inner(command, &options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(command: ClientCommand, options: &ClientOptions) -> Result<(), String> {
    match command {
        ClientCommand::Endpoint(command) => endpoint(command, options).await,
        ClientCommand::Member(command) => member(command, options).await,
        ClientCommand::Txn { interactive } => {
            let request = read_txn(interactive)?;
            with_retries(options, || {
                kv_command(
                    ClientCommand::Txn { interactive },
                    Some(request.clone()),
                    options,
                )
            })
            .await
        }
        command => {
            with_retries(options, || {
                kv_command(clone_kv_command(&command), None, options)
            })
            .await
        }
    }
}

/// Retries a command that failed because the cluster had no leader for a moment (an
/// election, a leader that just died), as etcd's clients do, until the command timeout.
async fn with_retries<F, Fut>(options: &ClientOptions, mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(options.command_timeout);
    let mut delay = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(Failure::Retryable(message)) if std::time::Instant::now() + delay < deadline => {
                tracing_retry(&message);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(Failure::Retryable(message) | Failure::Final(message)) => return Err(message),
        }
    }
}

fn tracing_retry(_message: &str) {
    // Retries are silent, as etcdctl's are unless asked to log.
}

/// Why an attempt failed.
enum Failure {
    /// No leader, or the leader changed: worth another try.
    Retryable(String),
    /// Anything else.
    Final(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Final(message)
    }
}

fn failure(status: tonic::Status) -> Failure {
    let message = status_text(status.clone());
    match status.code() {
        tonic::Code::Unavailable => Failure::Retryable(message),
        _ => Failure::Final(message),
    }
}

fn clone_kv_command(command: &ClientCommand) -> ClientCommand {
    match command {
        ClientCommand::Put {
            key,
            value,
            prev_kv,
        } => ClientCommand::Put {
            key: key.clone(),
            value: value.clone(),
            prev_kv: *prev_kv,
        },
        ClientCommand::Get {
            key,
            range_end,
            prefix,
            rev,
            keys_only,
            limit,
            serializable,
        } => ClientCommand::Get {
            key: key.clone(),
            range_end: range_end.clone(),
            prefix: *prefix,
            rev: *rev,
            keys_only: *keys_only,
            limit: *limit,
            serializable: *serializable,
        },
        ClientCommand::Del {
            key,
            range_end,
            prefix,
            prev_kv,
        } => ClientCommand::Del {
            key: key.clone(),
            range_end: range_end.clone(),
            prefix: *prefix,
            prev_kv: *prev_kv,
        },
        ClientCommand::Compaction { revision } => ClientCommand::Compaction {
            revision: *revision,
        },
        ClientCommand::Txn { interactive } => ClientCommand::Txn {
            interactive: *interactive,
        },
        ClientCommand::Member(_) | ClientCommand::Endpoint(_) => {
            unreachable!("membership and endpoint commands are not retried")
        }
    }
}

async fn kv_command(
    command: ClientCommand,
    txn: Option<TxnRequest>,
    options: &ClientOptions,
) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    let channel = connect(options).await.map_err(Failure::Retryable)?;
    let mut kv = KvClient::new(channel);
    match command {
        ClientCommand::Put {
            key,
            value,
            prev_kv,
        } => {
            let response = kv
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    prev_kv,
                    ..PutRequest::default()
                })
                .await
                .map_err(failure)?
                .into_inner();
            if options.json {
                let revision = response.header.map_or(0, |header| header.revision);
                println!("{{\"header\":{{\"revision\":{revision}}}}}");
            } else {
                println!("OK");
                if let Some(previous) = response.prev_kv {
                    print_key_values(&[previous], false, &mut stdout)
                        .map_err(|e| Failure::Final(e.to_string()))?;
                }
            }
        }
        ClientCommand::Get {
            key,
            range_end,
            prefix,
            rev,
            keys_only,
            limit,
            serializable,
        } => {
            let (key, range_end) = range_for(key, range_end.as_ref(), prefix);
            let response = kv
                .range(RangeRequest {
                    key,
                    range_end,
                    revision: rev,
                    keys_only,
                    limit,
                    serializable,
                    ..RangeRequest::default()
                })
                .await
                .map_err(failure)?
                .into_inner();
            if options.json {
                let revision = response.header.as_ref().map_or(0, |header| header.revision);
                let kvs: Vec<String> = response
                    .kvs
                    .iter()
                    .map(|kv| {
                        format!(
                            "{{\"key\":{:?},\"create_revision\":{},\"mod_revision\":{},\"version\":{},\"value\":{:?}}}",
                            String::from_utf8_lossy(&kv.key),
                            kv.create_revision,
                            kv.mod_revision,
                            kv.version,
                            String::from_utf8_lossy(&kv.value)
                        )
                    })
                    .collect();
                println!(
                    "{{\"header\":{{\"revision\":{revision}}},\"kvs\":[{}],\"count\":{}}}",
                    kvs.join(","),
                    response.count
                );
            } else {
                print_key_values(&response.kvs, keys_only, &mut stdout)
                    .map_err(|e| Failure::Final(e.to_string()))?;
            }
        }
        ClientCommand::Del {
            key,
            range_end,
            prefix,
            prev_kv,
        } => {
            let (key, range_end) = range_for(key, range_end.as_ref(), prefix);
            let response = kv
                .delete_range(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv,
                })
                .await
                .map_err(failure)?
                .into_inner();
            if options.json {
                println!("{{\"deleted\":{}}}", response.deleted);
            } else {
                println!("{}", response.deleted);
                print_key_values(&response.prev_kvs, false, &mut stdout)
                    .map_err(|e| Failure::Final(e.to_string()))?;
            }
        }
        ClientCommand::Txn { .. } => {
            let request = txn.expect("a txn command comes with its request");
            let response = kv.txn(request).await.map_err(failure)?.into_inner();
            if options.json {
                println!("{{\"succeeded\":{}}}", response.succeeded);
            } else {
                println!(
                    "{}",
                    if response.succeeded {
                        "SUCCESS"
                    } else {
                        "FAILURE"
                    }
                );
                for op in &response.responses {
                    println!();
                    print_response_op(op, &mut stdout)
                        .map_err(|e| Failure::Final(e.to_string()))?;
                }
            }
        }
        ClientCommand::Compaction { revision } => {
            kv.compact(CompactionRequest {
                revision,
                physical: false,
            })
            .await
            .map_err(failure)?;
            println!("compacted revision {revision}");
        }
        ClientCommand::Member(_) | ClientCommand::Endpoint(_) => unreachable!("handled above"),
    }
    Ok(())
}

fn print_response_op(op: &ResponseOp, out: &mut impl Write) -> std::io::Result<()> {
    match &op.response {
        Some(response_op::Response::ResponsePut(_)) => writeln!(out, "OK"),
        Some(response_op::Response::ResponseRange(range)) => {
            print_key_values(&range.kvs, false, out)
        }
        Some(response_op::Response::ResponseDeleteRange(delete)) => {
            writeln!(out, "{}", delete.deleted)
        }
        Some(response_op::Response::ResponseTxn(txn)) => {
            writeln!(out, "{}", if txn.succeeded { "SUCCESS" } else { "FAILURE" })
        }
        None => Ok(()),
    }
}

/// Splits a line into words, honouring double quotes (as etcdctl's txn input does).
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    let mut in_word = false;
    while let Some(character) = chars.next() {
        match character {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            _ => {
                current.push(character);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {line:?}"));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// Parses a compare such as `mod("key") > "0"` or `value("key") = "v"`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let bad = || format!("malformed comparison: {line:?}");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    let target_name = line[..open].trim();
    let key_words = words(&line[open + 1..close])?;
    let key = key_words.first().ok_or_else(bad)?.clone();
    let rest = words(line[close + 1..].trim())?;
    if rest.len() != 2 {
        return Err(bad());
    }
    let result = match rest[0].as_str() {
        "=" | "==" => CompareResult::Equal,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        "!=" => CompareResult::NotEqual,
        _ => return Err(bad()),
    };
    let operand = &rest[1];
    let number = || operand.parse::<i64>().map_err(|_| bad());
    let (target, union) = match target_name {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(operand.clone().into_bytes()),
        ),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number()?)),
        _ => return Err(bad()),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

/// Parses an operation such as `put key value`, `get key`, `del key`.
pub fn parse_operation(line: &str) -> Result<RequestOp, String> {
    let words = words(line)?;
    let bad = || format!("malformed operation: {line:?}");
    let request = match words.first().map(String::as_str) {
        Some("put") if words.len() == 3 => request_op::Request::RequestPut(PutRequest {
            key: words[1].clone().into_bytes(),
            value: words[2].clone().into_bytes(),
            ..PutRequest::default()
        }),
        Some("get") if words.len() >= 2 => {
            let prefix = words.iter().any(|word| word == "--prefix");
            let (key, range_end) = range_for(words[1].clone(), None, prefix);
            request_op::Request::RequestRange(RangeRequest {
                key,
                range_end,
                ..RangeRequest::default()
            })
        }
        Some("del") if words.len() >= 2 => {
            let prefix = words.iter().any(|word| word == "--prefix");
            let (key, range_end) = range_for(words[1].clone(), None, prefix);
            request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: false,
            })
        }
        _ => return Err(bad()),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

fn read_txn(interactive: bool) -> Result<TxnRequest, String> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut section = |prompt: &str| -> Result<Vec<String>, String> {
        if interactive {
            eprintln!("{prompt}");
        }
        let mut collected = Vec::new();
        for line in lines.by_ref() {
            let line = line.map_err(|error| error.to_string())?;
            if line.trim().is_empty() {
                break;
            }
            collected.push(line);
        }
        Ok(collected)
    };
    let compares = section("compares:")?;
    let success = section("success requests (get, put, del):")?;
    let failure = section("failure requests (get, put, del):")?;
    Ok(TxnRequest {
        compare: compares
            .iter()
            .map(|line| parse_compare(line))
            .collect::<Result<_, _>>()?,
        success: success
            .iter()
            .map(|line| parse_operation(line))
            .collect::<Result<_, _>>()?,
        failure: failure
            .iter()
            .map(|line| parse_operation(line))
            .collect::<Result<_, _>>()?,
    })
}

async fn member(command: MemberCommand, options: &ClientOptions) -> Result<(), String> {
    let mut cluster = ClusterClient::new(connect(options).await?);
    match command {
        MemberCommand::List => {
            let response = cluster
                .member_list(MemberListRequest {
                    linearizable: false,
                })
                .await
                .map_err(status_text)?
                .into_inner();
            print_members(&response.members, options.json);
        }
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            let response = cluster
                .member_add(MemberAddRequest {
                    peer_ur_ls: peer_urls.clone(),
                    is_learner: learner,
                })
                .await
                .map_err(status_text)?
                .into_inner();
            let id = response.member.as_ref().map_or(0, |member| member.id);
            let kind = if learner {
                "Member (learner)"
            } else {
                "Member"
            };
            println!("{kind} {id:x} added to cluster");
            let mut initial: Vec<String> = response
                .members
                .iter()
                .filter(|member| member.id != id)
                .flat_map(|member| {
                    member
                        .peer_ur_ls
                        .iter()
                        .map(move |url| format!("{}={url}", member.name))
                })
                .collect();
            initial.extend(peer_urls.iter().map(|url| format!("{name}={url}")));
            println!();
            println!("ETCD_NAME=\"{name}\"");
            println!("ETCD_INITIAL_CLUSTER=\"{}\"", initial.join(","));
            println!(
                "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"",
                peer_urls.join(",")
            );
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
        }
        MemberCommand::Remove { id } => {
            let id = parse_member_id(&id)?;
            cluster
                .member_remove(MemberRemoveRequest { id })
                .await
                .map_err(status_text)?;
            println!("Member {id:x} removed from cluster");
        }
        MemberCommand::Promote { id } => {
            let id = parse_member_id(&id)?;
            cluster
                .member_promote(MemberPromoteRequest { id })
                .await
                .map_err(status_text)?;
            println!("Member {id:x} promoted in cluster");
        }
    }
    Ok(())
}

async fn endpoint(command: EndpointCommand, options: &ClientOptions) -> Result<(), String> {
    let mut failed = false;
    for endpoint in &options.endpoints {
        let single = ClientOptions {
            endpoints: vec![endpoint.clone()],
            ..options.clone()
        };
        let channel = match connect(&single).await {
            Ok(channel) => channel,
            Err(error) => {
                failed = true;
                eprintln!("{endpoint} is unhealthy: {error}");
                continue;
            }
        };
        match command {
            EndpointCommand::Status => {
                match MaintenanceClient::new(channel)
                    .status(StatusRequest {})
                    .await
                {
                    Ok(response) => {
                        let status = response.into_inner();
                        let id = status.header.as_ref().map_or(0, |header| header.member_id);
                        if options.json {
                            println!(
                                "{{\"Endpoint\":{endpoint:?},\"Status\":{{\"member_id\":{id},\"version\":{:?},\"dbSize\":{},\"leader\":{},\"raftIndex\":{},\"raftTerm\":{},\"raftAppliedIndex\":{},\"isLearner\":{}}}}}",
                                status.version, status.db_size, status.leader, status.raft_index,
                                status.raft_term, status.raft_applied_index, status.is_learner
                            );
                        } else {
                            println!(
                                "{endpoint}, {id:x}, {}, {} B, {}, {}, {}, {}, {}, {}",
                                status.version,
                                status.db_size,
                                status.leader == id,
                                status.is_learner,
                                status.raft_term,
                                status.raft_index,
                                status.raft_applied_index,
                                status.errors.join(";")
                            );
                        }
                    }
                    Err(error) => {
                        failed = true;
                        eprintln!("{endpoint}: {}", error.message());
                    }
                }
            }
            EndpointCommand::Health => {
                let started = std::time::Instant::now();
                let result = KvClient::new(channel)
                    .range(RangeRequest {
                        key: b"health".to_vec(),
                        ..RangeRequest::default()
                    })
                    .await;
                let took = started.elapsed();
                match result {
                    Ok(_) => println!(
                        "{endpoint} is healthy: successfully committed proposal: took = {took:?}"
                    ),
                    Err(error) => {
                        failed = true;
                        println!(
                            "{endpoint} is unhealthy: failed to commit proposal: {}",
                            error.message()
                        );
                    }
                }
            }
        }
    }
    if failed {
        return Err("Error: unhealthy cluster".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_prefix_asks_for_every_key_with_a_key_etcd_accepts() {
        assert_eq!(range_for(String::new(), None, true), (vec![0], vec![0]));
        assert_eq!(
            range_for("ab".to_string(), None, true),
            (b"ab".to_vec(), b"ac".to_vec())
        );
        let end = "z".to_string();
        assert_eq!(
            range_for("a".to_string(), Some(&end), false),
            (b"a".to_vec(), b"z".to_vec())
        );
    }

    #[test]
    fn txn_lines_parse_like_etcdctl() {
        let compare = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(compare.key, b"key1");
        assert_eq!(compare.result, CompareResult::Greater as i32);
        assert_eq!(compare.target_union, Some(TargetUnion::ModRevision(0)));
        let compare = parse_compare(r#"value("k") = "a b""#).unwrap();
        assert_eq!(
            compare.target_union,
            Some(TargetUnion::Value(b"a b".to_vec()))
        );
        assert!(parse_compare("nonsense").is_err());
        let put = parse_operation(r#"put k "v w""#).unwrap();
        let Some(request_op::Request::RequestPut(put)) = put.request else {
            panic!("not a put")
        };
        assert_eq!(put.value, b"v w");
        assert!(parse_operation("frobnicate k").is_err());
    }
}
