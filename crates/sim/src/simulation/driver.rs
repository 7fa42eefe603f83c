//! Driving one node: its shell handles every Ready with the simulator's checks as its
//! observer; what it sends goes onto the simulated network, its answers to the clients, its
//! snapshot files to a later event. Also what a crash does to a node.

use super::*;
use server::shell::ShellStateMachine as _;

impl SimNode {
    pub(super) fn shell(&mut self) -> &mut Shell {
        self.shell.as_mut().expect("the node is running")
    }

    pub(super) fn is_running(&self) -> bool {
        self.status == Status::Up && self.shell.is_some()
    }
}

/// Has the node's shell carry out every Ready it has, exactly as the server's runtime does,
/// with the simulator's checks as the shell's observer; then sends what the shell sent, hands
/// its answers to the clients, and schedules the snapshot file it asked for. Transport feedback
/// produced meanwhile (a cut link, a snapshot that did not get through) is given to the node
/// between rounds, as the core requires, and may produce more Readys.
pub(super) fn process(sim_node: &mut SimNode, world: &mut World) {
    for round in 0.. {
        if round == ROUNDS_PER_EVENT_MAX {
            world.fail_now(
                "the run ends",
                format!(
                    "n{} went through {ROUNDS_PER_EVENT_MAX} rounds of Readys and feedback for one event",
                    sim_node.id
                ),
            );
            return;
        }
        let id = sim_node.id;
        let incarnation = sim_node.incarnation;
        let Some(shell) = sim_node.shell.as_mut() else {
            return;
        };
        let mut outbox = Vec::new();
        let mut checks = Checks {
            world: &mut *world,
            id,
            incarnation,
            applied: &mut sim_node.applied,
            commit_seen: &mut sim_node.commit_seen,
            synced_hard_state: &mut sim_node.synced_hard_state,
            unsynced_hard_states: &mut sim_node.unsynced_hard_states,
            config_applied: None,
        };
        let handled = shell.handle_readies(&mut outbox, &mut checks);
        let config_applied = checks.config_applied;
        for message in outbox {
            world.send(message, incarnation);
        }
        let answers = shell.take_answers();
        for answer in answers {
            world.on_answer(id, incarnation, shell.state_machine(), answer);
        }
        if let Err(error) = handled {
            storage_failed(sim_node, world, &error);
            return;
        }
        after_readies(sim_node, world, config_applied);
        if world.feedback.is_empty() {
            return;
        }
        for feedback in std::mem::take(&mut world.feedback) {
            give_feedback(sim_node, feedback);
        }
    }
}

/// Gives one item of transport feedback to its sender, if that life of it still runs.
pub(super) fn give_feedback(sim_node: &mut SimNode, feedback: Feedback) {
    let (sender, incarnation) = match feedback {
        Feedback::Unreachable {
            sender,
            incarnation,
            ..
        }
        | Feedback::Snapshot {
            sender,
            incarnation,
            ..
        } => (sender, incarnation),
    };
    if sender != sim_node.id || incarnation != sim_node.incarnation || !sim_node.is_running() {
        return;
    }
    match feedback {
        Feedback::Unreachable { peer, .. } => sim_node.shell().report_unreachable(peer),
        Feedback::Snapshot { peer, success, .. } => sim_node.shell().report_snapshot(peer, success),
    }
}

/// The simulator's checks, as the observer of one node's shell for one call: each hook checks
/// what the shell just did against Raft's invariants and records it in the trace.
pub(super) struct Checks<'a> {
    world: &'a mut World,
    id: NodeId,
    incarnation: u64,
    applied: &'a mut u64,
    commit_seen: &'a mut u64,
    synced_hard_state: &'a mut HardState,
    unsynced_hard_states: &'a mut Vec<HardState>,
    /// The index of the last membership change applied during the call, if any.
    config_applied: Option<u64>,
}

impl ShellObserver<NodeStorage, KvMachine> for Checks<'_> {
    fn on_ready(&mut self, node: &Node<NodeStorage>, ready: &Ready) {
        let (id, world) = (self.id, &mut *self.world);
        let now = world.now;
        let Some(soft_state) = ready.soft_state else {
            return;
        };
        let term = node.term();
        world.record(Event::Role {
            node: id,
            role: soft_state.role,
            term,
            leader: soft_state.leader,
        });
        world.stats.max_term = world.stats.max_term.max(term);
        if soft_state.role == Role::Leader {
            let result = world.invariants.on_leader(now, term, id);
            world.check(result);
            let first_index = node.storage().first_index();
            let result = world
                .invariants
                .on_new_leader_log(now, id, term, first_index, |index| node.term_at(index));
            world.check(result);
            if now < world.leader_churn_until {
                churn_new_leader(world, id, self.incarnation);
            }
        }
    }

    fn on_persisted(
        &mut self,
        node: &Node<NodeStorage>,
        entries: &[raft::Entry],
        hard_state: Option<HardState>,
        must_sync: bool,
    ) {
        let (id, world) = (self.id, &mut *self.world);
        let now = world.now;
        // `MemoryStorage` has no unsynced writes: what it is given is durable at once.
        let durable = must_sync || world.config.storage == StorageKind::Memory;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            for entry in entries {
                let result = world.invariants.on_persist(now, id, entry);
                world.check(result);
            }
            world.record(Event::Persist {
                node: id,
                first: first.index,
                last: last.index,
                term: last.term,
            });
            if durable {
                world.stored.entry(id).or_default().persist(entries);
            }
        }
        if must_sync {
            self.unsynced_hard_states.clear();
        } else {
            self.unsynced_hard_states.extend(hard_state);
        }
        if let Some(hard_state) = hard_state.filter(|_| durable) {
            *self.synced_hard_state = hard_state;
        }
        let Some(hard_state) = hard_state else {
            return;
        };
        if hard_state.commit < *self.commit_seen {
            world.fail_now(
                "commit index never decreases",
                format!(
                    "n{id}'s commit index went from {} to {}",
                    self.commit_seen, hard_state.commit
                ),
            );
        }
        for index in *self.commit_seen + 1..=hard_state.commit {
            if let Some(term) = node.term_at(index) {
                let result = world
                    .invariants
                    .on_commit(now, id, hard_state.term, index, term);
                world.check(result);
            }
        }
        // The paper's rule (5.4.2): a leader commits by counting replicas only entries of its
        // own term, so its commit index only ever moves to one. Rationale: breaking the rule is
        // unsafe only in rare schedules (Figure 8); checking it directly catches it at once.
        if hard_state.commit > *self.commit_seen
            && node.role() == Role::Leader
            && world.config.check_commit_rule
        {
            let commit_term = node.term_at(hard_state.commit);
            if commit_term != Some(hard_state.term) {
                world.fail_now(
                    "a leader commits only entries of its own term by counting",
                    format!(
                        "n{id}, leader of term {}, moved its commit index to {} whose term is {commit_term:?}",
                        hard_state.term, hard_state.commit
                    ),
                );
            }
        }
        if hard_state.commit > *self.commit_seen && node.role() == Role::Leader {
            check_commit_quorum(world, node, hard_state.commit);
        }
        *self.commit_seen = (*self.commit_seen).max(hard_state.commit);
        world.stats.committed_index = world.stats.committed_index.max(hard_state.commit);
        world.record(Event::HardState {
            node: id,
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        });
    }

    fn on_send(&mut self, _node: &Node<NodeStorage>, messages: &[Message], early: bool) {
        let world = &mut *self.world;
        let id = self.id;
        let synced = *self.synced_hard_state;
        for message in messages {
            let pre_vote = matches!(
                message.body,
                MessageBody::VoteRequest { pre_vote: true, .. }
                    | MessageBody::VoteResponse { pre_vote: true, .. }
            );
            // A message carries its sender's term; every term but a pre-vote's (the term it
            // would campaign in) must be durable before anything in it leaves.
            if !pre_vote && message.term > synced.term {
                world.fail_now(
                    "a message leaves only once its term is durable",
                    format!(
                        "n{id} sends {} of term {} to n{} while its durable term is {}",
                        message.body.kind_name(),
                        message.term,
                        message.to,
                        synced.term
                    ),
                );
                return;
            }
            if let MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            } = message.body
            {
                if synced.term != message.term || synced.vote != Some(message.to) {
                    world.fail_now(
                        "a vote leaves only once it is durable",
                        format!(
                            "n{id} grants n{} its vote in term {} while its durable hard state is term {} vote {:?}",
                            message.to, message.term, synced.term, synced.vote
                        ),
                    );
                    return;
                }
                let earlier = world.votes_granted.insert((id, message.term), message.to);
                if let Some(earlier) = earlier.filter(|&earlier| earlier != message.to) {
                    world.fail_now(
                        "a node votes at most once in a term, across crashes",
                        format!(
                            "n{id} votes for n{} in term {} having voted for n{earlier}",
                            message.to, message.term
                        ),
                    );
                    return;
                }
            }
        }
        if !early
            && world.now < world.crash_voters_until
            && messages.iter().any(|message| {
                matches!(
                    message.body,
                    MessageBody::VoteResponse {
                        pre_vote: false,
                        granted: true
                    }
                )
            })
        {
            // Restart at once, so that the node can be asked again in the same term.
            let restart_at = world.now + world.rng.range(1, TICK);
            world.crash_requests.push((self.id, restart_at));
        }
    }

    fn on_applied(&mut self, node: &Node<NodeStorage>, entry: &raft::Entry, machine: &KvMachine) {
        let (id, world) = (self.id, &mut *self.world);
        let now = world.now;
        if entry.index != *self.applied + 1 {
            world.fail_now(
                "entries are applied in order, exactly once",
                format!(
                    "n{id} was handed index {} to apply after applying {}",
                    entry.index, self.applied
                ),
            );
            return;
        }
        *self.applied = entry.index;
        match &entry.payload {
            EntryPayload::Normal(data) => {
                if let Some((request_id, true)) = kv::decode_request(data.as_ref()) {
                    if world.probe_done_at.is_none() {
                        world.probe_done_at = Some(now);
                        world.note(format!(
                            "liveness probe (request {request_id}) applied on n{id}"
                        ));
                    }
                }
            }
            EntryPayload::ConfigChange(_) => self.config_applied = Some(entry.index),
            EntryPayload::Empty => {}
        }
        world.record(Event::Apply {
            node: id,
            index: entry.index,
            term: entry.term,
        });
        let state_hash = machine.hash_after(entry.index);
        let result = world
            .invariants
            .on_apply(now, id, node.term(), entry, state_hash);
        world.check(result);
    }

    fn on_restored(&mut self, _node: &Node<NodeStorage>, index: u64, machine: &KvMachine) {
        let (id, world) = (self.id, &mut *self.world);
        if index <= *self.applied {
            world.fail_now(
                "applied index never decreases",
                format!(
                    "n{id} installs a snapshot at {index} having applied {}",
                    self.applied
                ),
            );
        }
        *self.applied = index;
        world.stored.entry(id).or_default().install_snapshot(index);
        world.stats.snapshots_installed += 1;
        world.record(Event::InstallSnapshot { node: id, index });
        let result = world
            .invariants
            .check_state(world.now, id, index, machine.state_hash());
        world.check(result);
    }
}

/// The entries each node has durably stored, as far as the simulated disks know: the ground
/// truth the commit quorum check holds a leader's commit index against.
#[derive(Debug, Default)]
pub(super) struct StoredLog {
    /// Everything up to here came in a snapshot (committed, so held whatever its terms).
    snapshot_index: u64,
    /// Index to term of the entries durably in the log after the snapshot.
    entries: BTreeMap<u64, u64>,
}

impl StoredLog {
    /// A log that starts from a snapshot at `index` (0: empty).
    pub(super) fn from_snapshot(index: u64) -> StoredLog {
        StoredLog {
            snapshot_index: index,
            entries: BTreeMap::new(),
        }
    }

    /// What a node's storage holds as it opens after a restart: everything it reads back is
    /// on its disk now, including unsynced writes that happened to survive the crash.
    pub(super) fn from_storage(storage: &impl LogStorage) -> StoredLog {
        let snapshot_index = storage.first_index() - 1;
        let entries = (storage.first_index()..=storage.last_index())
            .map(|index| {
                (
                    index,
                    storage.term(index).expect("a stored entry has a term"),
                )
            })
            .collect();
        StoredLog {
            snapshot_index,
            entries,
        }
    }

    /// `entries` are durable: they replace whatever the log held from the first of them on.
    fn persist(&mut self, entries: &[raft::Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        self.entries.split_off(&first.index);
        self.entries
            .extend(entries.iter().map(|entry| (entry.index, entry.term)));
    }

    /// A snapshot at `index` was installed.
    fn install_snapshot(&mut self, index: u64) {
        self.snapshot_index = self.snapshot_index.max(index);
        self.entries = self.entries.split_off(&(index + 1));
    }

    fn holds(&self, index: u64, term: u64) -> bool {
        index <= self.snapshot_index || self.entries.get(&index) == Some(&term)
    }
}

/// A leader's new commit index must name an entry durably stored on a quorum of every
/// configuration it counts with (both halves while joint). Rationale: the end-to-end checks see
/// a commit without a real quorum only if a later leader happens to lack the entry; this sees
/// it the moment the index moves.
fn check_commit_quorum(world: &mut World, node: &Node<NodeStorage>, commit: u64) {
    let Some(term) = node.term_at(commit) else {
        return;
    };
    let config = node.config_state();
    for half in [&config.voters, &config.voters_outgoing] {
        if half.is_empty() {
            continue;
        }
        let holding: Vec<NodeId> = half
            .iter()
            .copied()
            .filter(|voter| {
                world
                    .stored
                    .get(voter)
                    .is_some_and(|log| log.holds(commit, term))
            })
            .collect();
        if holding.len() < half.len() / 2 + 1 {
            world.fail_now(
                "a committed entry is durable on a quorum of every configuration",
                format!(
                    "n{} commits index {commit} (term {term}) while only {holding:?} of the voters {half:?} hold it",
                    node.id()
                ),
            );
            return;
        }
    }
}

/// A write or fsync failed: the node must stop (FORMAT.md: after a failed fsync nothing written
/// can be trusted). It is modelled as a power failure in the middle of the write, so the crash
/// loses or tears what was not synced, and the node restarts from its disk a little later.
pub(super) fn storage_failed(sim_node: &mut SimNode, world: &mut World, error: &str) {
    let id = sim_node.id;
    world.stats.storage_failures += 1;
    world.note(format!("n{id}'s storage fails ({error}); the node stops"));
    power_off(sim_node, world, false);
    let at = world.now + world.disk_rng.range(1, 60) * TICK;
    world.schedule(at, Ev::Restart { node: id });
}

/// The node loses power: the process and everything in flight are gone, and so is whatever its
/// disk had not synced (with the WAL the seed chooses whether the unsynced tail is dropped or
/// torn). `between_events` says that no write was in progress, so that the restart can check
/// that everything synced is still there.
pub(super) fn power_off(sim_node: &mut SimNode, world: &mut World, between_events: bool) {
    let id = sim_node.id;
    let Some(shell) = sim_node.shell.take() else {
        return;
    };
    match shell.node().storage() {
        NodeStorage::Memory(memory) => sim_node.durable = Some(MemoryStorage::clone(memory)),
        NodeStorage::Wal(log) => {
            let unsynced = std::mem::take(&mut sim_node.unsynced_hard_states);
            sim_node.durable_at_crash = between_events.then(|| DurableLog::of(log, unsynced));
        }
    }
    sim_node.unsynced_hard_states.clear();
    drop(shell);
    let mut how = String::new();
    if let Some(disk) = &sim_node.disk {
        disk.disk.set_fail_syncs(false);
        let mode = crash_mode(&mut world.disk_rng);
        disk.disk.crash(mode);
        how = match mode {
            storage::CrashMode::DropUnsynced => " (unsynced writes lost)".to_owned(),
            storage::CrashMode::TearUnsynced { .. } => " (unsynced writes torn)".to_owned(),
        };
    }
    sim_node.status = Status::Crashed;
    sim_node.paused = false;
    abandon_held(std::mem::take(&mut sim_node.held), world);
    sim_node.snapshot_job = None;
    world.stats.crashes += 1;
    world.note(format!("n{id} crashes{how}"));
}

/// Messages held for a paused node that will now never be delivered: each snapshot among them
/// is reported failed to its sender, as a real transport reports a broken stream. Rationale:
/// the core leaves the snapshot state only on that report or on an answer from the follower;
/// without either, it would wait forever.
pub(super) fn abandon_held(held: Vec<(Message, u64)>, world: &mut World) {
    let now = world.now;
    for (message, sender_incarnation) in held {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            let feedback = Feedback::Snapshot {
                sender: message.from,
                incarnation: sender_incarnation,
                peer: message.to,
                success: false,
            };
            world.schedule(now, Ev::Feedback(feedback));
        }
    }
}

/// The nemesis strikes a leader moments after its election, before or while it replicates:
/// cut off from everyone (at once, so that not even its first AppendEntries leaves, or a few
/// network delays later), or crashed. Many short terms with divergent, partly replicated tails
/// follow: the ground of the paper's Figure 8.
pub(super) fn churn_new_leader(world: &mut World, id: NodeId, incarnation: u64) {
    let now = world.now;
    let strike_at = if world.rng.chance(400) {
        now
    } else {
        now + world.rng.range(1, 4 * world.params.delay_max)
    };
    if world.rng.chance(700) {
        let until = strike_at + world.rng.range(10, 6 * ELECTION_MAX_TICKS) * TICK;
        if strike_at == now {
            world.network.isolated_until.insert(id, until);
            world.note(format!("n{id} is cut off from everyone until t={until}"));
        } else {
            world.schedule(strike_at, Ev::Isolate { node: id, until });
        }
    } else {
        let restart_at = strike_at + world.rng.range(1, 20) * TICK;
        world.schedule(
            strike_at,
            Ev::Crash {
                node: id,
                incarnation,
                restart_at,
            },
        );
    }
}

/// After a round of Readys: track membership, and schedule the snapshot file the shell asked
/// for, to be written a little later, as the server writes it on another thread.
pub(super) fn after_readies(
    sim_node: &mut SimNode,
    world: &mut World,
    config_applied: Option<u64>,
) {
    let id = sim_node.id;
    if let Some(index) = config_applied {
        let config = sim_node.shell().node().config_state().clone();
        world.stats.config_changes += 1;
        if index > world.latest_config.0 {
            world.note(format!(
                "n{id} applied the configuration at {index}: {config:?}"
            ));
            for &member in &config.all_nodes() {
                world.ever_member.insert(member);
            }
            let all = config.all_nodes();
            world.to_remove = world
                .ever_member
                .iter()
                .copied()
                .filter(|member| !all.contains(member))
                .collect();
            world.latest_config = (index, config);
        }
    }
    if let Some(job) = sim_node.shell().take_snapshot_job() {
        world.note(format!(
            "n{id} takes a snapshot at {}",
            job.snapshot.meta.index
        ));
        sim_node.snapshot_job = Some(job);
        // Rationale: a large image takes the server's blocking thread a while to write (0.7 s
        // for 125 MB); up to ten ticks gives crashes, elections and compactions time to fall
        // in between.
        let at = world.now + world.rng.range(1, 10 * TICK);
        let incarnation = sim_node.incarnation;
        world.schedule(
            at,
            Ev::SnapshotWritten {
                node: id,
                incarnation,
            },
        );
    }
}

/// A node's shell over `storage`, in the node's life `incarnation`, with the state machine
/// restored from the log's snapshot, as the server's runtime builds it at start.
pub(super) fn build_shell(
    world: &World,
    config: Config,
    storage: NodeStorage,
    incarnation: u64,
) -> Shell {
    let snapshot = storage.snapshot().expect("storage has one");
    // As the runtime starts: an empty store, then the newest snapshot restored into it.
    let mut machine = KvMachine::new();
    machine
        .restore(&snapshot)
        .expect("a snapshot the simulated cluster made restores");
    let shell_config = ShellConfig {
        snapshot_entries: world.params.snapshot_every,
        // Rationale: longer than a client's own attempt timeout, so that the clients decide
        // when to try elsewhere, as etcd's clients do; the shell only bounds what it holds.
        request_timeout_ticks: OPERATION_DEADLINE_TICKS,
        waiters_max: 10_000,
        read_round_overdue_ticks: 2,
        // Rationale: ids must differ across nodes and across a node's lives, since the
        // durability check names acknowledged writes by id.
        first_request_id: (config.id << 48) | (incarnation << 32),
    };
    let node = Node::new(config, storage).expect("a valid configuration");
    #[allow(unused_mut)]
    let mut shell = NodeShell::new(node, machine, snapshot.meta.index, shell_config);
    #[cfg(feature = "planted-bugs")]
    if let Some(crate::config::PlantedBug::Shell(bug)) = world.config.planted_bug {
        shell.plant(bug);
    }
    shell
}
