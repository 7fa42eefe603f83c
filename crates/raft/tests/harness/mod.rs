//! A scripted cluster for scenario transcripts.
//!
//! A transcript is a sequence of blocks: one or more command lines, a `----` line, the expected
//! output, and a blank line. The harness runs the commands against real nodes over an
//! in-memory network and compares what they print. Run with `REWRITE=1` to write the actual
//! output back into the file, then read the diff: that is the review of a behaviour change.
//!
//! Commands (node lists are space separated ids, or `all`):
//! - `cluster 1 2 3 [learners=4,5] [pre-vote=false] [check-quorum=false] [lease-reads] [seed=N]
//!   [election=MIN-MAX] [inflight=N] [message-bytes=N]`: nodes 1, 2, 3 voting, 4 and 5 learning.
//! - `add-node 4`: a node with an empty configuration, waiting to be added.
//! - `tick NODES [COUNT]`, `campaign NODE`, `propose NODE DATA`,
//!   `propose-config NODE add-voter=4 remove=1 add-learner=5 [joint|explicit]`, `leave-joint NODE`,
//!   `transfer NODE TARGET`, `read NODE CONTEXT...` (several contexts share one Ready).
//! - `deliver [FROM->TO ...]`: deliver the queued messages (all, or only those matching), once;
//!   replies are queued, not delivered. `stabilize`: deliver until nothing is queued.
//! - `drop [FROM->TO ...]`: discard queued messages. `queued`: list them. `duplicate FILTER`
//!   copies matching queued messages aside, `stash FILTER` moves them aside, `unstash` queues them
//!   again (late). `inject [at=N] FROM->TO Kind term=T ...`: hand a hand-written message to its
//!   receiver (or to node N). `elapse N [quiet]`: N rounds of tick-all-then-stabilize.
//!   `expect-one-leader`: exactly one leader in the highest term.
//! - `partition 1 2 | 3`: cut the network between the groups; `heal` restores it.
//! - `crash NODE`: the node loses everything not persisted and stops; `restart NODE` starts it
//!   again from its storage.
//! - `compact NODE INDEX`: snapshot the node's state at INDEX (applied) and compact its log.
//! - `status [NODES]`, `log NODE`, `applied NODE`, `reads NODE`, `counters NODE`.
//! - `expect NODE role=leader term=2 commit=3 applied=3 leader=1 last=3 vote=1`: an assertion;
//!   fails the test with a message naming the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use raft::{
    AppendOutcome, Config, ConfigChange, ConfigChangeStep, ConfigState, ConfigTransition, Entry,
    EntryPayload, LogStorage, MemoryStorage, Message, MessageBody, Node, NodeId, ReadMode,
    ReadState, Role,
};

/// A node, its storage and what it has applied.
struct Member {
    node: Option<Node<MemoryStorage>>,
    /// The storage survives a crash: it is what was persisted.
    storage: MemoryStorage,
    config: Config,
    applied: Vec<String>,
    reads: Vec<ReadState>,
}

/// The cluster under test.
pub struct Cluster {
    members: BTreeMap<NodeId, Member>,
    queue: Vec<Message>,
    /// Messages set aside by `stash`, to be delivered late by `unstash`.
    stash: Vec<Message>,
    /// Group number of each node while partitioned.
    partition: Option<BTreeMap<NodeId, usize>>,
    base_config: Config,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

fn describe_entry(entry: &Entry) -> String {
    let payload = match &entry.payload {
        EntryPayload::Empty => "empty".to_string(),
        EntryPayload::Normal(data) => format!("{:?}", String::from_utf8_lossy(data)),
        EntryPayload::ConfigChange(change) => describe_change(change),
    };
    format!("{}/{} {}", entry.index, entry.term, payload)
}

fn describe_change(change: &ConfigChange) -> String {
    if change.is_leave_joint() {
        return "leave-joint".to_string();
    }
    let steps: Vec<String> = change
        .steps
        .iter()
        .map(|step| match step {
            ConfigChangeStep::AddVoter(id) => format!("add-voter={id}"),
            ConfigChangeStep::AddLearner(id) => format!("add-learner={id}"),
            ConfigChangeStep::RemoveNode(id) => format!("remove={id}"),
        })
        .collect();
    let transition = match change.transition {
        ConfigTransition::Auto => "",
        ConfigTransition::JointAutoLeave => " joint",
        ConfigTransition::JointExplicitLeave => " explicit",
    };
    format!("config({}{})", steps.join(" "), transition)
}

fn describe_ids(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_config(config: &ConfigState) -> String {
    let mut text = format!("voters=({})", describe_ids(&config.voters));
    if config.is_joint() {
        write!(text, "&&({})", describe_ids(&config.voters_outgoing)).unwrap();
    }
    if !config.learners.is_empty() {
        write!(text, " learners=({})", describe_ids(&config.learners)).unwrap();
    }
    if !config.learners_next.is_empty() {
        write!(
            text,
            " learners-next=({})",
            describe_ids(&config.learners_next)
        )
        .unwrap();
    }
    text
}

/// One line per message, in the paper's vocabulary.
pub fn describe_message(message: &Message) -> String {
    let head = format!(
        "{}->{} {} term={}",
        message.from,
        message.to,
        message.body.kind_name(),
        message.term
    );
    let tail = match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            leadership_transfer,
            ..
        } => {
            let transfer = if *leadership_transfer {
                " transfer"
            } else {
                ""
            };
            format!(" last={last_log_index}/{last_log_term}{transfer}")
        }
        MessageBody::VoteResponse { granted, .. } => {
            if *granted {
                " granted".into()
            } else {
                " rejected".into()
            }
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            let entries: Vec<String> = entries.iter().map(describe_entry).collect();
            format!(
                " prev={prev_log_index}/{prev_log_term} commit={leader_commit} entries=[{}]",
                entries.join(", ")
            )
        }
        MessageBody::AppendEntriesResponse { outcome } => match outcome {
            AppendOutcome::Accepted { match_index } => format!(" accepted match={match_index}"),
            AppendOutcome::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                format!(" rejected index={rejected_index} hint={hint_index}/{hint_term}")
            }
        },
        MessageBody::Heartbeat {
            leader_commit,
            read_round,
        } => {
            format!(" commit={leader_commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => format!(" round={read_round}"),
        MessageBody::InstallSnapshot { snapshot } => format!(
            " snapshot={}/{} {}",
            snapshot.meta.index,
            snapshot.meta.term,
            describe_config(&snapshot.meta.config)
        ),
        MessageBody::TimeoutNow => String::new(),
        MessageBody::ReadIndexRequest { context } => format!(" context={context}"),
        MessageBody::ReadIndexResponse { context, index } => {
            format!(" context={context} index={index}")
        }
    };
    head + &tail
}

/// Parses `3->1` style filters; `*` matches any node.
fn matches_filters(message: &Message, filters: &[String]) -> bool {
    if filters.is_empty() {
        return true;
    }
    filters.iter().any(|filter| {
        let (from, to) = filter
            .split_once("->")
            .unwrap_or_else(|| panic!("bad filter {filter}"));
        let ok = |pattern: &str, id: NodeId| {
            pattern == "*" || pattern.parse::<NodeId>().ok() == Some(id)
        };
        ok(from, message.from) && ok(to, message.to)
    })
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            members: BTreeMap::new(),
            queue: Vec::new(),
            stash: Vec::new(),
            partition: None,
            base_config: Config::new(1),
        }
    }

    fn node_ids(&self, words: &[&str]) -> Vec<NodeId> {
        if words.first() == Some(&"all") {
            return self.members.keys().copied().collect();
        }
        words
            .iter()
            .map(|word| {
                word.parse()
                    .unwrap_or_else(|_| panic!("not a node id: {word}"))
            })
            .collect()
    }

    fn node(&mut self, id: NodeId) -> &mut Node<MemoryStorage> {
        self.members
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .node
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is crashed"))
    }

    fn start_member(&mut self, id: NodeId, storage: MemoryStorage) {
        let mut config = self.base_config.clone();
        config.id = id;
        config.random_seed = self
            .base_config
            .random_seed
            .wrapping_mul(31)
            .wrapping_add(id);
        let node = Node::new(config.clone(), storage.clone()).expect("valid config");
        self.members.insert(
            id,
            Member {
                node: Some(node),
                storage,
                config,
                applied: Vec::new(),
                reads: Vec::new(),
            },
        );
    }

    /// Handles every Ready of one node the way a server would; returns what it printed.
    fn process(&mut self, id: NodeId, out: &mut String) {
        let member = self.members.get_mut(&id).expect("member exists");
        let Some(node) = member.node.as_mut() else {
            return;
        };
        while node.has_ready() {
            let ready = node.ready();
            if let Some(soft) = ready.soft_state {
                let leader = soft
                    .leader
                    .map_or("none".to_string(), |leader| leader.to_string());
                writeln!(
                    out,
                    "{id} is {} at term {} (leader {leader})",
                    role_name(soft.role),
                    node.term()
                )
                .unwrap();
            }
            // Messages that need nothing persisted leave first.
            self.queue.extend(ready.early_messages);
            // 1. Persist.
            if let Some(snapshot) = &ready.snapshot {
                node.storage_mut().apply_snapshot(snapshot.clone());
            }
            node.storage_mut().append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                node.storage_mut().set_hard_state(hard_state);
            }
            member.storage = node.storage().clone();
            // 2. Send.
            self.queue.extend(ready.messages);
            // 3. Apply.
            if let Some(snapshot) = &ready.snapshot {
                member.applied.push(format!(
                    "snapshot {}/{}",
                    snapshot.meta.index, snapshot.meta.term
                ));
            }
            for entry in &ready.committed_entries {
                member.applied.push(describe_entry(entry));
            }
            // 4. Reads.
            for read in &ready.read_states {
                writeln!(
                    out,
                    "{id} read context={} index={}",
                    read.context, read.index
                )
                .unwrap();
            }
            member.reads.extend(ready.read_states);
            node.advance();
        }
    }

    fn process_all(&mut self, out: &mut String) {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        for id in ids {
            self.process(id, out);
        }
    }

    fn connected(&self, from: NodeId, to: NodeId) -> bool {
        match &self.partition {
            None => true,
            Some(groups) => groups.get(&from) == groups.get(&to),
        }
    }

    /// Delivers the queued messages that match; returns true if any was delivered.
    fn deliver(&mut self, filters: &[String], out: &mut String) -> bool {
        let queued = std::mem::take(&mut self.queue);
        let (chosen, kept): (Vec<Message>, Vec<Message>) = queued
            .into_iter()
            .partition(|message| matches_filters(message, filters));
        self.queue = kept;
        let delivered = !chosen.is_empty();
        for message in chosen {
            let alive = self
                .members
                .get(&message.to)
                .is_some_and(|member| member.node.is_some());
            if !self.connected(message.from, message.to) || !alive {
                writeln!(out, "{} (dropped)", describe_message(&message)).unwrap();
                continue;
            }
            writeln!(out, "{}", describe_message(&message)).unwrap();
            let to = message.to;
            self.node(to).step(message);
        }
        self.process_all(out);
        delivered
    }

    fn parse_config_change(words: &[&str]) -> ConfigChange {
        let mut change = ConfigChange::default();
        for word in words {
            match *word {
                "joint" => change.transition = ConfigTransition::JointAutoLeave,
                "explicit" => change.transition = ConfigTransition::JointExplicitLeave,
                _ => {
                    let (kind, id) = word
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad step {word}"));
                    let id: NodeId = id.parse().expect("node id");
                    change.steps.push(match kind {
                        "add-voter" => ConfigChangeStep::AddVoter(id),
                        "add-learner" => ConfigChangeStep::AddLearner(id),
                        "remove" => ConfigChangeStep::RemoveNode(id),
                        _ => panic!("unknown step {kind}"),
                    });
                }
            }
        }
        change
    }

    fn describe_status(&mut self, id: NodeId) -> String {
        let member = &self.members[&id];
        let Some(node) = member.node.as_ref() else {
            return format!("{id}: crashed");
        };
        let status = node.status();
        let leader = status
            .leader
            .map_or("none".to_string(), |leader| leader.to_string());
        let vote = status
            .hard_state
            .vote
            .map_or("none".to_string(), |vote| vote.to_string());
        format!(
            "{id}: {} term={} vote={vote} leader={leader} commit={} applied={} last={} {}",
            role_name(status.role),
            status.hard_state.term,
            status.hard_state.commit,
            status.applied_index,
            status.last_index,
            describe_config(&status.config)
        )
    }

    fn expect(&mut self, id: NodeId, checks: &[&str]) -> Result<(), String> {
        let member = &self.members[&id];
        let node = member
            .node
            .as_ref()
            .ok_or_else(|| format!("node {id} is crashed"))?;
        let status = node.status();
        for check in checks {
            let (field, want) = check
                .split_once('=')
                .ok_or_else(|| format!("bad check {check}"))?;
            let actual = match field {
                "role" => role_name(status.role).to_string(),
                "term" => status.hard_state.term.to_string(),
                "commit" => status.hard_state.commit.to_string(),
                "applied" => status.applied_index.to_string(),
                "last" => status.last_index.to_string(),
                "leader" => status
                    .leader
                    .map_or("none".into(), |leader| leader.to_string()),
                "vote" => status
                    .hard_state
                    .vote
                    .map_or("none".into(), |vote| vote.to_string()),
                "voters" => describe_ids(&status.config.voters),
                "learners" => describe_ids(&status.config.learners),
                "joint" => status.config.is_joint().to_string(),
                _ => return Err(format!("unknown field {field}")),
            };
            if actual != want {
                return Err(format!(
                    "node {id}: expected {field}={want}, found {field}={actual}"
                ));
            }
        }
        Ok(())
    }

    /// Runs one command line; returns its output or a failed assertion.
    pub fn run(&mut self, line: &str, out: &mut String) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&command, args)) = words.split_first() else {
            return Ok(());
        };
        match command {
            "cluster" => {
                let mut voters = Vec::new();
                let mut learners = Vec::new();
                let mut config = Config::new(1);
                for arg in args {
                    if let Some(list) = arg.strip_prefix("learners=") {
                        learners = list.split(',').map(|id| id.parse().expect("id")).collect();
                    } else if let Some(value) = arg.strip_prefix("seed=") {
                        config.random_seed = value.parse().expect("seed");
                    } else if let Some(value) = arg.strip_prefix("election=") {
                        let (min, max) = value.split_once('-').expect("MIN-MAX");
                        config.election_timeout_min_ticks = min.parse().expect("min");
                        config.election_timeout_max_ticks = max.parse().expect("max");
                    } else if let Some(value) = arg.strip_prefix("inflight=") {
                        config.inflight_messages_max = value.parse().expect("count");
                    } else if let Some(value) = arg.strip_prefix("message-bytes=") {
                        config.message_bytes_max = value.parse().expect("bytes");
                    } else if *arg == "pre-vote=false" {
                        config.pre_vote = false;
                    } else if *arg == "check-quorum=false" {
                        config.check_quorum = false;
                    } else if *arg == "lease-reads" {
                        config.read_mode = ReadMode::LeaseBased;
                    } else {
                        voters.push(
                            arg.parse::<NodeId>()
                                .unwrap_or_else(|_| panic!("bad argument {arg}")),
                        );
                    }
                }
                self.base_config = config;
                let state = ConfigState {
                    learners: learners.clone(),
                    ..ConfigState::with_voters(voters.clone())
                };
                for id in voters.iter().chain(&learners) {
                    self.start_member(*id, MemoryStorage::new_with_config(state.clone()));
                }
                writeln!(out, "{}", describe_config(&state)).unwrap();
            }
            "add-node" => {
                for id in self.node_ids(args) {
                    self.start_member(id, MemoryStorage::default());
                }
                writeln!(out, "ok").unwrap();
            }
            "tick" => {
                let count: u64 = if args.len() >= 2 {
                    args[args.len() - 1].parse().unwrap_or(1)
                } else {
                    1
                };
                let ids_words = if args.len() >= 2
                    && args[args.len() - 1].parse::<u64>().is_ok()
                    && args[0] != "all"
                {
                    &args[..args.len() - 1]
                } else if args.first() == Some(&"all") {
                    &args[..1]
                } else {
                    args
                };
                let ids = self.node_ids(ids_words);
                for _ in 0..count {
                    for &id in &ids {
                        if self.members[&id].node.is_some() {
                            self.node(id).tick();
                            self.process(id, out);
                        }
                    }
                }
            }
            "campaign" => {
                let id = self.node_ids(args)[0];
                self.node(id).campaign_now();
                self.process(id, out);
            }
            "propose" => {
                let id = self.node_ids(&args[..1])[0];
                let data = args[1..].join(" ");
                match self.node(id).propose(Bytes::from(data.into_bytes())) {
                    Ok(index) => writeln!(out, "{id} proposed at index {index}").unwrap(),
                    Err(error) => writeln!(out, "{id} refused: {error}").unwrap(),
                }
                self.process(id, out);
            }
            "propose-config" | "leave-joint" => {
                let id = self.node_ids(&args[..1])[0];
                let change = if command == "leave-joint" {
                    ConfigChange::leave_joint()
                } else {
                    Self::parse_config_change(&args[1..])
                };
                match self.node(id).propose_config_change(change) {
                    Ok(index) => writeln!(out, "{id} proposed at index {index}").unwrap(),
                    Err(error) => writeln!(out, "{id} refused: {error}").unwrap(),
                }
                self.process(id, out);
            }
            "transfer" => {
                let ids = self.node_ids(args);
                match self.node(ids[0]).transfer_leadership(ids[1]) {
                    Ok(()) => writeln!(out, "{} transferring to {}", ids[0], ids[1]).unwrap(),
                    Err(error) => writeln!(out, "{} refused: {error}", ids[0]).unwrap(),
                }
                self.process(ids[0], out);
            }
            "read" => {
                let id = self.node_ids(&args[..1])[0];
                // Several contexts are requested before the node's next Ready, so they share
                // one confirmation round.
                for context in &args[1..] {
                    let context: u64 = context.parse().expect("context");
                    if let Err(error) = self.node(id).read_index(context) {
                        writeln!(out, "{id} refused: {error}").unwrap();
                    }
                }
                self.process(id, out);
            }
            "deliver" => {
                let filters: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
                self.deliver(&filters, out);
            }
            "stabilize" => {
                let mut rounds = 0;
                self.process_all(out);
                while self.deliver(&[], out) {
                    rounds += 1;
                    if rounds > 1000 {
                        return Err("the cluster did not stabilize in 1000 rounds".into());
                    }
                }
            }
            "elapse" => {
                let count: u64 = args[0].parse().expect("tick count");
                let quiet = args.get(1) == Some(&"quiet");
                for _ in 0..count {
                    let mut step_out = String::new();
                    let ids: Vec<NodeId> = self.members.keys().copied().collect();
                    for id in ids {
                        if self.members[&id].node.is_some() {
                            self.node(id).tick();
                            self.process(id, &mut step_out);
                        }
                    }
                    let mut rounds = 0;
                    while self.deliver(&[], &mut step_out) {
                        rounds += 1;
                        if rounds > 1000 {
                            return Err("the cluster did not stabilize in 1000 rounds".into());
                        }
                    }
                    if quiet {
                        step_out = step_out
                            .lines()
                            .filter(|line| !line.contains("->"))
                            .map(|line| format!("{line}\n"))
                            .collect();
                    }
                    out.push_str(&step_out);
                }
            }
            "expect-one-leader" => {
                let mut leaders = Vec::new();
                let mut highest_term = 0;
                for (id, member) in &self.members {
                    if let Some(node) = &member.node {
                        highest_term = highest_term.max(node.term());
                        if node.role() == Role::Leader {
                            leaders.push((*id, node.term()));
                        }
                    }
                }
                let current: Vec<_> = leaders
                    .iter()
                    .filter(|(_, term)| *term == highest_term)
                    .collect();
                if current.len() != 1 {
                    return Err(format!(
                        "expected one leader at term {highest_term}, found {leaders:?}"
                    ));
                }
                writeln!(out, "leader {} at term {}", current[0].0, current[0].1).unwrap();
            }
            "duplicate" | "stash" => {
                let filters: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
                let queued = std::mem::take(&mut self.queue);
                for message in queued {
                    if matches_filters(&message, &filters) {
                        writeln!(out, "{} ({command}d)", describe_message(&message)).unwrap();
                        self.stash.push(message.clone());
                        if command == "duplicate" {
                            self.queue.push(message);
                        }
                    } else {
                        self.queue.push(message);
                    }
                }
            }
            "unstash" => {
                for message in std::mem::take(&mut self.stash) {
                    writeln!(out, "{} (queued again)", describe_message(&message)).unwrap();
                    self.queue.push(message);
                }
            }
            "inject" => {
                // `at=N` hands the message to node N whatever its address says.
                let receiver = args
                    .iter()
                    .find_map(|arg| arg.strip_prefix("at="))
                    .map(|id| id.parse::<NodeId>().expect("id"));
                let words: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|arg| !arg.starts_with("at="))
                    .collect();
                let message = parse_message(&words)?;
                writeln!(out, "{}", describe_message(&message)).unwrap();
                let to = receiver.unwrap_or(message.to);
                self.node(to).step(message);
                self.process(to, out);
            }
            "drop" => {
                let filters: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
                let queued = std::mem::take(&mut self.queue);
                for message in queued {
                    if matches_filters(&message, &filters) {
                        writeln!(out, "{} (dropped)", describe_message(&message)).unwrap();
                    } else {
                        self.queue.push(message);
                    }
                }
            }
            "queued" => {
                for message in &self.queue {
                    writeln!(out, "{}", describe_message(message)).unwrap();
                }
            }
            "partition" => {
                let mut groups = BTreeMap::new();
                let mut group = 0;
                for arg in args {
                    if *arg == "|" {
                        group += 1;
                    } else {
                        groups.insert(arg.parse::<NodeId>().expect("id"), group);
                    }
                }
                // Nodes not named form a group of their own each.
                let named: BTreeSet<NodeId> = groups.keys().copied().collect();
                for id in self.members.keys() {
                    if !named.contains(id) {
                        group += 1;
                        groups.insert(*id, group);
                    }
                }
                self.partition = Some(groups);
                writeln!(out, "ok").unwrap();
            }
            "heal" => {
                self.partition = None;
                writeln!(out, "ok").unwrap();
            }
            "crash" => {
                for id in self.node_ids(args) {
                    let member = self.members.get_mut(&id).expect("member");
                    member.node = None;
                    member.applied.clear();
                    self.queue
                        .retain(|message| message.to != id && message.from != id);
                    writeln!(out, "{id} crashed").unwrap();
                }
            }
            "restart" => {
                for id in self.node_ids(args) {
                    let member = self.members.get_mut(&id).expect("member");
                    let node = Node::new(member.config.clone(), member.storage.clone())
                        .expect("valid config");
                    member.node = Some(node);
                    writeln!(out, "{id} restarted").unwrap();
                    self.process(id, out);
                }
            }
            "compact" => {
                let id = self.node_ids(&args[..1])[0];
                let index: u64 = args[1].parse().expect("index");
                let node = self.node(id);
                let config = node.config_state().clone();
                assert!(
                    index <= node.applied_index(),
                    "compact beyond the applied index"
                );
                let storage = node.storage_mut();
                let created =
                    storage.create_snapshot(index, config, Bytes::from(format!("state@{index}")));
                storage.compact(index);
                let first = storage.first_index();
                self.members.get_mut(&id).unwrap().storage = self.node(id).storage().clone();
                writeln!(out, "{id} snapshot={created} first-index={first}").unwrap();
            }
            "status" => {
                let ids = if args.is_empty() {
                    self.members.keys().copied().collect()
                } else {
                    self.node_ids(args)
                };
                for id in ids {
                    let line = self.describe_status(id);
                    writeln!(out, "{line}").unwrap();
                }
            }
            "log" => {
                let id = self.node_ids(args)[0];
                let node = self.node(id);
                let first = node.storage().first_index();
                let last = node.last_index();
                let mut entries = Vec::new();
                if last >= first {
                    entries = node
                        .storage()
                        .entries(first, node.storage().last_index() + 1, u64::MAX)
                        .unwrap_or_default();
                }
                let described: Vec<String> = entries.iter().map(describe_entry).collect();
                writeln!(out, "{id}: first={first} [{}]", described.join(", ")).unwrap();
            }
            "applied" => {
                let id = self.node_ids(args)[0];
                let applied = self.members[&id].applied.join(", ");
                writeln!(out, "{id}: [{applied}]").unwrap();
            }
            "counters" => {
                let id = self.node_ids(args)[0];
                // Only the counters that moved, one per line.
                let counters = format!("{:?}", self.node(id).counters());
                let inner = counters
                    .trim_start_matches("Counters {")
                    .trim_end_matches('}');
                for field in inner.split(',') {
                    let field = field.trim();
                    if !field.is_empty() && !field.ends_with(": 0") {
                        writeln!(out, "{id}: {field}").unwrap();
                    }
                }
            }
            "expect" => {
                let id = self.node_ids(&args[..1])[0];
                self.expect(id, &args[1..])?;
                writeln!(out, "ok").unwrap();
            }
            _ => return Err(format!("unknown command {command}")),
        }
        Ok(())
    }
}

/// Runs a transcript file; with `REWRITE=1` in the environment, writes the actual output back.
pub fn run_transcript(path: &std::path::Path) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut cluster = Cluster::new();
    let mut rewritten = String::new();
    let mut mismatches = Vec::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().peekable();
    let mut line_number = 0;
    while let Some(line) = lines.next() {
        line_number += 1;
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        let block_start = line_number;
        let mut commands = vec![line.to_string()];
        for next in lines.by_ref() {
            line_number += 1;
            if next == "----" {
                break;
            }
            commands.push(next.to_string());
        }
        let mut expected = String::new();
        while let Some(next) = lines.peek() {
            if next.is_empty() {
                break;
            }
            expected.push_str(next);
            expected.push('\n');
            lines.next();
            line_number += 1;
        }
        let mut actual = String::new();
        for command in &commands {
            if let Err(failure) = cluster.run(command, &mut actual) {
                actual.push_str(&format!("FAILED: {failure}\n"));
                failures.push(format!(
                    "{}:{block_start}: `{command}` failed: {failure}",
                    path.display()
                ));
            }
        }
        if actual.is_empty() {
            actual.push_str("ok\n");
        }
        if actual != expected {
            mismatches.push(format!(
                "{}:{block_start}: {}\n--- expected\n{expected}--- actual\n{actual}",
                path.display(),
                commands.join(" / ")
            ));
        }
        for command in &commands {
            rewritten.push_str(command);
            rewritten.push('\n');
        }
        rewritten.push_str("----\n");
        rewritten.push_str(&actual);
    }
    if rewrite {
        std::fs::write(path, rewritten).expect("rewrite transcript");
    }
    assert!(
        failures.is_empty(),
        "assertions failed:\n{}",
        failures.join("\n")
    );
    if rewrite {
        return;
    }
    assert!(
        mismatches.is_empty(),
        "transcript differs:\n{}",
        mismatches.join("\n")
    );
}

/// Parses a message written as `describe_message` prints it (entries, if any, as `data` only).
fn parse_message(words: &[&str]) -> Result<Message, String> {
    let (from, to) = words[0].split_once("->").ok_or("expected FROM->TO")?;
    let from: NodeId = from.parse().map_err(|_| "bad sender")?;
    let to: NodeId = to.parse().map_err(|_| "bad receiver")?;
    let kind = words[1];
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    let mut flags: BTreeSet<&str> = BTreeSet::new();
    for word in &words[2..] {
        match word.split_once('=') {
            Some((key, value)) => {
                fields.insert(key, value);
            }
            None => {
                flags.insert(word);
            }
        }
    }
    let number = |key: &str| -> Result<u64, String> {
        fields
            .get(key)
            .ok_or(format!("missing {key}"))?
            .parse()
            .map_err(|_| format!("bad {key}"))
    };
    let pair = |key: &str| -> Result<(u64, u64), String> {
        let value = fields.get(key).ok_or(format!("missing {key}"))?;
        let (index, term) = value
            .split_once('/')
            .ok_or(format!("{key} is INDEX/TERM"))?;
        Ok((
            index.parse().map_err(|_| "bad index")?,
            term.parse().map_err(|_| "bad term")?,
        ))
    };
    let term = number("term")?;
    let body = match kind {
        "Vote" | "PreVote" => {
            let (last_log_index, last_log_term) = pair("last")?;
            MessageBody::VoteRequest {
                pre_vote: kind == "PreVote",
                last_log_index,
                last_log_term,
                leadership_transfer: flags.contains("transfer"),
            }
        }
        "VoteResponse" | "PreVoteResponse" => MessageBody::VoteResponse {
            pre_vote: kind == "PreVoteResponse",
            granted: flags.contains("granted"),
        },
        "AppendEntries" => {
            let (prev_log_index, prev_log_term) = pair("prev")?;
            let data: Vec<&str> = fields
                .get("entries")
                .map(|list| list.split(',').filter(|item| !item.is_empty()).collect())
                .unwrap_or_default();
            let entries = data
                .iter()
                .enumerate()
                .map(|(position, item)| Entry {
                    term,
                    index: prev_log_index + 1 + position as u64,
                    payload: EntryPayload::Normal(Bytes::from(item.to_string())),
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: number("commit")?,
            }
        }
        "AppendEntriesResponse" => {
            let outcome = if flags.contains("accepted") {
                AppendOutcome::Accepted {
                    match_index: number("match")?,
                }
            } else {
                let (hint_index, hint_term) = pair("hint")?;
                AppendOutcome::Rejected {
                    rejected_index: number("index")?,
                    hint_index,
                    hint_term,
                }
            };
            MessageBody::AppendEntriesResponse { outcome }
        }
        "Heartbeat" => MessageBody::Heartbeat {
            leader_commit: number("commit")?,
            read_round: number("round").unwrap_or(0),
        },
        "HeartbeatResponse" => MessageBody::HeartbeatResponse {
            read_round: number("round").unwrap_or(0),
        },
        "InstallSnapshot" => {
            let (index, snapshot_term) = pair("snapshot")?;
            let voters = fields
                .get("voters")
                .map(|list| {
                    list.split(',')
                        .map(|id| id.parse().expect("id"))
                        .collect::<Vec<NodeId>>()
                })
                .unwrap_or_default();
            MessageBody::InstallSnapshot {
                snapshot: raft::Snapshot {
                    meta: raft::SnapshotMeta {
                        index,
                        term: snapshot_term,
                        config: ConfigState::with_voters(voters),
                    },
                    data: Bytes::from_static(b"injected"),
                },
            }
        }
        "TimeoutNow" => MessageBody::TimeoutNow,
        "ReadIndexRequest" => MessageBody::ReadIndexRequest {
            context: number("context")?,
        },
        _ => return Err(format!("unknown message kind {kind}")),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}
