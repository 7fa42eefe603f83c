//! The nemesis: which fault strikes next, partitions, network faults, membership changes,
//! leadership transfers and damaged disks.

use super::*;

impl Simulation {
    pub(super) fn on_nemesis(&mut self) {
        if self.world.phase != Phase::Chaos {
            return;
        }
        // Beside the faults, now and then, an operator's compaction of the store's history, so
        // that compacted revisions, compaction in snapshots and rejected compactions (of a
        // revision compacted already) are part of the state every node must agree on.
        if self.world.rng.chance(250) {
            self.compact();
        }
        let faults = self.world.config.faults;
        let wal = self.world.config.storage == StorageKind::Wal;
        let candidates = [
            (Fault::Partition, faults.partition),
            (
                Fault::Network,
                faults.loss || faults.duplicate || faults.delay,
            ),
            (Fault::Crash, faults.crash),
            (Fault::CrashAll, faults.crash),
            (Fault::CrashVoters, faults.crash),
            (Fault::LeaderChurn, faults.crash || faults.partition),
            (Fault::Pause, faults.pause),
            (Fault::ClockJump, faults.clock),
            (Fault::Membership, faults.membership),
            (Fault::Transfer, faults.transfer),
            (Fault::DiskFailure, faults.disk && wal),
            (Fault::Corrupt, faults.corrupt && wal),
            (Fault::StaleLeaderReads, faults.partition),
        ];
        let allowed: Vec<Fault> = candidates
            .iter()
            .filter(|(_, enabled)| *enabled)
            .map(|(fault, _)| *fault)
            .collect();
        let swarm = self.world.params.fault_kinds;
        let chosen: Vec<Fault> = allowed
            .iter()
            .copied()
            .filter(|&fault| swarm & (1 << fault as u32) != 0)
            .collect();
        // A seed whose swarm keeps none of the allowed kinds runs with all of them.
        let kinds = if chosen.is_empty() { allowed } else { chosen };
        if !kinds.is_empty() {
            // A seed that holds joint configurations changes membership a third of the time.
            let fault = if self.world.params.hold_joint
                && kinds.contains(&Fault::Membership)
                && self.world.rng.chance(333)
            {
                Fault::Membership
            } else {
                self.world.rng.pick(&kinds)
            };
            match fault {
                Fault::Partition => self.start_partition(),
                Fault::Network => self.start_network_faults(),
                Fault::Crash => {
                    let targets = self.running_ids();
                    if !targets.is_empty() {
                        let target = self.pick_target(&targets);
                        self.crash(target);
                        let at = self.world.now + self.world.rng.range(5, 150) * TICK;
                        self.world.schedule(at, Ev::Restart { node: target });
                    }
                }
                Fault::CrashAll => {
                    // A power failure of the whole cluster: every node loses what it had not
                    // synced, and each comes back on its own a little later, from its disk
                    // alone, as a whole-cluster restart of the server does.
                    let targets = self.running_ids();
                    self.world
                        .note(format!("nemesis: every node crashes ({targets:?})"));
                    for target in targets {
                        self.crash(target);
                        let at = self.world.now + self.world.rng.range(5, 60) * TICK;
                        self.world.schedule(at, Ev::Restart { node: target });
                    }
                }
                Fault::CrashVoters => {
                    let until = self.world.now + self.world.rng.range(50, 300) * TICK;
                    self.world.note(format!(
                        "nemesis: nodes that grant a vote crash until t={until}"
                    ));
                    self.world.crash_voters_until = until;
                }
                Fault::LeaderChurn => {
                    let until = self.world.now + self.world.rng.range(50, 300) * TICK;
                    self.world.note(format!(
                        "nemesis: new leaders are cut off or crash until t={until}"
                    ));
                    self.world.leader_churn_until = until;
                }
                Fault::Pause => {
                    let targets = self.running_ids();
                    if !targets.is_empty() {
                        let target = self.pick_target(&targets);
                        let duration = self.world.rng.range(5, 3 * ELECTION_MAX_TICKS);
                        self.pause(target, duration);
                    }
                }
                Fault::ClockJump => {
                    // Rationale: with lease reads only a leader's clock may jump ahead (its
                    // lease then ends early, which is safe); a follower whose clock runs ahead
                    // breaks the documented assumption of lease reads.
                    let target = if self.world.params.lease_reads {
                        self.current_leader()
                    } else {
                        let targets = self.running_ids();
                        (!targets.is_empty()).then(|| self.world.rng.pick(&targets))
                    };
                    if let Some(target) = target {
                        let ticks = self
                            .world
                            .rng
                            .range(ELECTION_MIN_TICKS, 3 * ELECTION_MAX_TICKS);
                        self.world
                            .note(format!("n{target}'s clock jumps {ticks} ticks"));
                        self.clock_jump(target, ticks);
                    }
                }
                Fault::Membership => self.change_membership(),
                Fault::Transfer => self.transfer_leadership(),
                Fault::DiskFailure => {
                    let targets = self.running_ids();
                    if !targets.is_empty() {
                        let target = self.pick_target(&targets);
                        if let Some(disk) = &self.nodes[&target].disk {
                            disk.disk.set_fail_syncs(true);
                            self.world
                                .note(format!("nemesis: n{target}'s next fsync fails"));
                        }
                    }
                }
                Fault::Corrupt => self.corrupt_a_disk(),
                Fault::StaleLeaderReads => self.isolate_leader_for_reads(),
            }
        }
        let gap = self
            .world
            .rng
            .range(5, self.world.params.fault_gap_max_ticks);
        let at = self.world.now + gap * TICK;
        self.world.schedule(at, Ev::Nemesis);
    }

    /// Half the time the leader, otherwise any of `targets`.
    pub(super) fn pick_target(&mut self, targets: &[NodeId]) -> NodeId {
        if self.world.rng.chance(500) {
            if let Some(leader) = self.current_leader() {
                return leader;
            }
        }
        self.world.rng.pick(targets)
    }

    pub(super) fn start_partition(&mut self) {
        let mut ids = self.live_ids();
        if ids.len() < 2 {
            return;
        }
        self.world.rng.shuffle(&mut ids);
        // Put the leader first half the time, so that it lands in the smaller side (a leader
        // cut off with a minority) or, when the cut side is the larger, with the majority.
        if let Some(leader) = self.current_leader() {
            if self.world.rng.chance(500) {
                let position = ids.iter().position(|&id| id == leader).expect("live");
                ids.swap(0, position);
            }
        }
        let network = &mut self.world.network;
        network.blocked.clear();
        network.partition_generation += 1;
        let generation = network.partition_generation;
        let kind = if ids.len() >= 3 {
            self.world.rng.below(3)
        } else {
            self.world.rng.below(2)
        };
        let description = match kind {
            0 => {
                // Symmetric: a minority (or the majority) cut off from the rest.
                let split = self.world.rng.range(1, ids.len() as u64 - 1) as usize;
                let (side_a, side_b) = ids.split_at(split);
                self.world.network.cut(side_a, side_b, true);
                format!("partition {side_a:?} | {side_b:?}")
            }
            1 => {
                // One-way: the first group cannot reach the second, the reverse still works.
                let split = self.world.rng.range(1, ids.len() as u64 - 1) as usize;
                let (side_a, side_b) = ids.split_at(split);
                self.world.network.cut(side_a, side_b, false);
                format!("one-way partition {side_a:?} -/-> {side_b:?}")
            }
            _ => {
                // A bridge: two sides that cannot talk, and one node that sees both.
                let (bridge, rest) = ids.split_last().expect("three or more nodes");
                let split = self.world.rng.range(1, rest.len() as u64 - 1) as usize;
                let (side_a, side_b) = rest.split_at(split);
                self.world.network.cut(side_a, side_b, true);
                format!("bridge n{bridge} between {side_a:?} and {side_b:?}")
            }
        };
        self.world.note(description);
        let at = self.world.now + self.world.rng.range(10, 8 * ELECTION_MAX_TICKS) * TICK;
        self.world.schedule(at, Ev::EndPartition { generation });
    }

    pub(super) fn start_network_faults(&mut self) {
        let faults = self.world.config.faults;
        let rng = &mut self.world.rng;
        let loss = if faults.loss { rng.range(0, 200) } else { 0 };
        let duplicate = if faults.duplicate {
            rng.range(0, 100)
        } else {
            0
        };
        let spike = if faults.delay { rng.range(0, 150) } else { 0 };
        let spike_max = rng.range(2, 30) * TICK;
        let duration = rng.range(20, 6 * ELECTION_MAX_TICKS);
        let network = &mut self.world.network;
        network.loss_per_mille = loss;
        network.duplicate_per_mille = duplicate;
        network.spike_per_mille = spike;
        network.spike_max = spike_max;
        network.faults_generation += 1;
        let generation = network.faults_generation;
        self.world.note(format!(
            "network: loss {loss}/1000, duplication {duplicate}/1000, delay spikes {spike}/1000 up to {spike_max}"
        ));
        let at = self.world.now + duration * TICK;
        self.world.schedule(at, Ev::EndNetworkFaults { generation });
    }

    pub(super) fn clear_network_faults(&mut self) {
        let network = &mut self.world.network;
        network.loss_per_mille = 0;
        network.duplicate_per_mille = 0;
        network.spike_per_mille = 0;
        self.world.note("network faults end".into());
    }

    /// The applied configuration of a running node.
    pub(super) fn running_config(&self, id: NodeId) -> ConfigState {
        self.nodes[&id]
            .shell
            .as_ref()
            .expect("running")
            .node()
            .config_state()
            .clone()
    }

    pub(super) fn transfer_leadership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let voters = self.running_config(leader).voters;
        let others: Vec<NodeId> = voters.into_iter().filter(|&id| id != leader).collect();
        if others.is_empty() {
            return;
        }
        let target = self.world.rng.pick(&others);
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        let result = sim_node.shell().transfer_leadership(target);
        self.world.note(format!(
            "n{leader} transfers leadership to n{target}: {result:?}"
        ));
        process(sim_node, &mut self.world);
    }

    /// An operator's membership change, proposed at the leader.
    pub(super) fn change_membership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let config = self.running_config(leader);
        let founders = self.world.config.nodes;
        let hold_joint = self.world.params.hold_joint;
        let change = if config.is_joint() {
            if config.auto_leave {
                return;
            }
            if hold_joint && !self.world.rng.chance(200) {
                self.world.note(format!("nemesis: n{leader} stays joint"));
                return;
            }
            ConfigChange::leave_joint()
        } else {
            let mut options: Vec<u8> = Vec::new();
            let joiners = self.next_joiner - founders as u64 - 1;
            if config.learners.is_empty() && joiners < JOINERS_MAX {
                options.push(0);
            }
            if !config.learners.is_empty() && config.voters.len() <= founders + 1 {
                options.push(1);
                if config.voters.len() >= 2 {
                    options.push(3);
                }
            }
            if config.voters.len() > founders.saturating_sub(1).max(1) {
                options.push(2);
            }
            if options.is_empty() {
                return;
            }
            let voters = config.voters.clone();
            if hold_joint && options.contains(&3) && self.world.rng.chance(700) {
                options = vec![3];
            }
            match self.world.rng.pick(&options) {
                0 => {
                    let id = self.next_joiner;
                    self.next_joiner += 1;
                    let seed = self.world.rng.next_u64();
                    self.start_node(id, Bootstrap::Joiner, seed);
                    self.world
                        .note(format!("n{id} starts empty, to join as a learner"));
                    ConfigChange::new([ConfigChangeStep::AddLearner(id)])
                }
                1 => {
                    let learner = self.world.rng.pick(&config.learners);
                    ConfigChange::new([ConfigChangeStep::AddVoter(learner)])
                }
                2 => {
                    let voter = self.world.rng.pick(&voters);
                    if self.world.rng.chance(300) {
                        // A demotion goes through a joint configuration.
                        ConfigChange::new([ConfigChangeStep::AddLearner(voter)])
                    } else {
                        ConfigChange::new([ConfigChangeStep::RemoveNode(voter)])
                    }
                }
                _ => {
                    let learner = self.world.rng.pick(&config.learners);
                    let voter = self.world.rng.pick(&voters);
                    let transition = if hold_joint {
                        ConfigTransition::JointExplicitLeave
                    } else {
                        self.world.rng.pick(&[
                            ConfigTransition::Auto,
                            ConfigTransition::JointAutoLeave,
                            ConfigTransition::JointExplicitLeave,
                        ])
                    };
                    ConfigChange {
                        steps: vec![
                            ConfigChangeStep::AddVoter(learner),
                            ConfigChangeStep::RemoveNode(voter),
                        ],
                        transition,
                    }
                }
            }
        };
        // Rationale: with a node down for good (a damaged disk), a removal could leave a
        // configuration whose quorum can never be reached; an operator would not do that.
        let quorums = quorums_after(&config, &change);
        if !self.quorums_stay_healthy(&quorums, None) {
            return;
        }
        self.propose_change(leader, change, &config);
    }

    /// Proposes a membership change at `leader`, whose applied configuration is `config`, and
    /// remembers the quorums it will need.
    pub(super) fn propose_change(
        &mut self,
        leader: NodeId,
        change: ConfigChange,
        config: &ConfigState,
    ) {
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        let result = sim_node
            .shell()
            .propose_config_change(change.clone(), SimWaiter::Operator)
            .map_err(|refused| refused.error);
        self.world
            .note(format!("n{leader} proposes {change:?}: {result:?}"));
        if let Ok(index) = result {
            let applied_index = self.world.latest_config.0;
            let proposed = &mut self.world.proposed_quorums;
            proposed.retain(|(earlier, _)| *earlier > applied_index);
            proposed.push((index, quorums_after(config, &change)));
        }
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        process(sim_node, &mut self.world);
    }

    /// Whether a node counts against every quorum for good: its disk is damaged, or it was
    /// shut down after its removal.
    pub(super) fn is_stuck(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|sim_node| {
            matches!(sim_node.status, Status::Failed | Status::Removed)
                || sim_node.corrupted.is_some()
        })
    }

    /// The voter sets that need a quorum: the applied configuration's, and those of every
    /// proposed change until a configuration at or after it applies.
    pub(super) fn quorums_needed(&self) -> Vec<Vec<NodeId>> {
        let (applied_index, config) = &self.world.latest_config;
        let mut quorums = vec![config.voters.clone()];
        if config.is_joint() {
            quorums.push(config.voters_outgoing.clone());
        }
        for (index, proposed) in &self.world.proposed_quorums {
            if index > applied_index {
                quorums.extend(proposed.iter().cloned());
            }
        }
        quorums
    }

    /// How long after the heal a write must commit: longer while a voter is down for good.
    pub(super) fn liveness_bound_ticks(&self) -> u64 {
        let (_, config) = &self.world.latest_config;
        let voter_down_for_good = config
            .voters
            .iter()
            .chain(&config.voters_outgoing)
            .any(|&voter| self.is_stuck(voter));
        // A set of voters with no node to spare beyond its majority (two voters, as in a joint
        // configuration of {2, 4} and {1, 2}) elects only a node whose log all of it accepts,
        // often one node alone: the same odds as a bare quorum (seed 3526: n4 alone could win,
        // and lost the race to time out first for fifteen rounds in a row).
        let no_spare = [&config.voters, &config.voters_outgoing]
            .into_iter()
            .any(|voters| {
                let runnable = voters
                    .iter()
                    .filter(|&&voter| !self.is_stuck(voter))
                    .count();
                voters.len() > 1 && runnable <= voters.len() / 2 + 1
            });
        if voter_down_for_good || no_spare {
            LIVENESS_BOUND_BARE_QUORUM_TICKS
        } else {
            LIVENESS_BOUND_TICKS
        }
    }

    /// Whether each of `quorums` keeps a majority of nodes that can run, should `also_lost`
    /// also be lost for good; without pre-vote, a set that lost a node for good must keep a
    /// majority and one more.
    ///
    /// Rationale for the spare without pre-vote: a voter that lags in an older configuration
    /// keeps raising its term with elections it cannot win, and the core ignores vote requests
    /// of a lower term (as etcd does), so on a bare quorum the one node that can win may never
    /// catch up with that voter's term (seed 3710 before this rule: n2 down for good, n3 behind
    /// at term 44, n4 asking in terms 35 to 37).
    pub(super) fn quorums_stay_healthy(
        &self,
        quorums: &[Vec<NodeId>],
        also_lost: Option<NodeId>,
    ) -> bool {
        let spare = usize::from(!self.world.params.pre_vote);
        quorums.iter().all(|voters| {
            let healthy = voters
                .iter()
                .filter(|&&voter| Some(voter) != also_lost && !self.is_stuck(voter))
                .count();
            healthy == voters.len() || healthy > voters.len() / 2 + spare
        })
    }

    /// Flips a bit in an old record on the disk of one node, crashed for the purpose, on a
    /// minority of the nodes: at most (founders - 1) / 2 over the run, and only where every
    /// quorum keeps a majority of healthy nodes without it. Rationale: the simulator checks
    /// liveness after the faults heal, and no protocol survives losing a quorum's disks.
    pub(super) fn corrupt_a_disk(&mut self) {
        let budget = (self.world.config.nodes as u64).saturating_sub(1) / 2;
        if self.world.stats.corrupted_nodes >= budget {
            return;
        }
        let quorums = self.quorums_needed();
        let candidates: Vec<NodeId> = self
            .nodes
            .values()
            // Not a node removed but not yet shut down either: voters that have not applied
            // its removal still count on it.
            .filter(|sim_node| {
                sim_node.disk.is_some()
                    && matches!(sim_node.status, Status::Up | Status::Crashed)
                    && sim_node.corrupted.is_none()
                    && !self.world.to_remove.contains(&sim_node.id)
            })
            .map(|sim_node| sim_node.id)
            .filter(|&id| self.quorums_stay_healthy(&quorums, Some(id)))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let target = self.world.rng.pick(&candidates);
        if self.nodes[&target].is_running() {
            self.crash(target);
            let at = self.world.now + self.world.rng.range(5, 150) * TICK;
            self.world.schedule(at, Ev::Restart { node: target });
        }
        let sim_node = self.nodes.get_mut(&target).expect("exists");
        let disk = sim_node.disk.as_ref().expect("filtered");
        match disk.corrupt_old_record(&mut self.world.disk_rng) {
            Ok(damage) => {
                self.world
                    .note(format!("nemesis: on n{target}'s disk, flips {damage}"));
                self.world.stats.corrupted_nodes += 1;
                sim_node.corrupted = Some(damage);
            }
            Err(reason) => self.world.fail_now(
                "the simulator can damage an old record",
                format!("n{target}: {reason}"),
            ),
        }
    }

    /// Proposes, at the leader, a compaction up to a recent revision of its store.
    fn compact(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let behind = self.world.rng.range(0, 20) as i64;
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        let revision = (sim_node.shell().state_machine().current_revision() - behind).max(1);
        let id = sim_node.shell().next_request_id();
        let request = kv::compaction_request(revision);
        let result = sim_node
            .shell()
            .propose(id, encode_proposal(id, request), SimWaiter::Compaction)
            .map_err(|refused| refused.error);
        self.world.note(format!(
            "n{leader} is asked to compact up to revision {revision}: {result:?}"
        ));
        process(sim_node, &mut self.world);
    }

    /// A targeted schedule: cuts the leader off, and for as long as it is cut off sends half
    /// of the clients' reads to it, while the majority elects a new leader and writes. A
    /// leader that serves reads it has not confirmed answers from before those writes.
    fn isolate_leader_for_reads(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let until = self.world.now + self.world.rng.range(40, 150) * TICK;
        self.world.network.isolated_until.insert(leader, until);
        self.world.stale_reads_to = Some((leader, until));
        self.world.note(format!(
            "nemesis: leader n{leader} is cut off until t={until}; half the reads go to it"
        ));
    }
}
