//! The clients: invoke operations, send them to a node, retry elsewhere, give up.
//!
//! A read, or a write no node accepted, is retried until its deadline. A write a node accepted
//! but did not answer in time may still commit, and etcd does not de-duplicate requests, so
//! its outcome is unknown: the client records it as indeterminate and goes on with a new
//! operation, as an etcd client whose call timed out does.

use super::*;

impl Simulation {
    pub(super) fn on_client_wake(&mut self, index: usize, generation: u64) {
        let client = &self.world.clients[index];
        if client.generation != generation {
            return;
        }
        match client.pending {
            Some(pending) => {
                let accepted = matches!(pending.target, Some((_, _, Waiting::Write(_))));
                let deadline = pending.invoked_at + OPERATION_DEADLINE_TICKS * TICK;
                if accepted || self.world.now >= deadline {
                    self.give_up(index);
                } else {
                    self.attempt(index);
                }
            }
            None => {
                let ops_left = (self.world.stats.ops_invoked as usize) < self.world.config.ops;
                if self.world.phase == Phase::Chaos && ops_left {
                    self.invoke(index);
                }
            }
        }
    }

    pub(super) fn give_up(&mut self, index: usize) {
        let client = &mut self.world.clients[index];
        let pending = client.pending.take().expect("pending");
        client.generation += 1;
        let generation = client.generation;
        let client_id = client.id;
        self.world.history.indeterminate(pending.history_id);
        self.world.stats.ops_indeterminate += 1;
        self.world.record(Event::GiveUp {
            client: client_id,
            op: pending.op,
        });
        let at = self.world.now + self.world.think_ticks() * TICK;
        self.world.wake_client(index, at, generation);
    }

    pub(super) fn invoke(&mut self, index: usize) {
        let world = &mut self.world;
        let key = world.rng.below(world.params.keys);
        let roll = world.rng.below(100);
        let op = if roll < 45 {
            let value = world.next_value;
            world.next_value += 1;
            OpSummary::Put { key, value }
        } else if roll < 75 {
            OpSummary::Get { key }
        } else {
            let known = world.known_values.get(&key).copied().flatten();
            let expected = if world.rng.chance(800) {
                known
            } else if world.rng.chance(500) {
                None
            } else {
                Some(world.rng.range(1, world.next_value))
            };
            let new = world.next_value;
            world.next_value += 1;
            OpSummary::CompareAndSwap { key, expected, new }
        };
        let client = &mut world.clients[index];
        let history_id = world.history.invoke(client.id, to_history_operation(op));
        world.stats.ops_invoked += 1;
        client.pending = Some(Pending {
            op,
            history_id,
            attempts: 0,
            invoked_at: world.now,
            target: None,
        });
        self.attempt(index);
    }

    /// Sends the pending operation to the node the client believes leads, or to any node.
    pub(super) fn attempt(&mut self, index: usize) {
        let running = self.running_ids();
        let client = &self.world.clients[index];
        let hinted = client.leader_hint.filter(|id| running.contains(id));
        let mut pending = client.pending.expect("pending");
        let is_read = matches!(pending.op, OpSummary::Get { .. });
        let cut_off_leader = self
            .world
            .stale_reads_to
            .filter(|&(node, until)| self.world.now < until && running.contains(&node))
            .map(|(node, _)| node);
        // While the old leader is cut off, writes go to the majority (where a new leader is
        // elected) and half the reads to the old leader.
        let target = match hinted {
            _ if is_read && cut_off_leader.is_some() && self.world.rng.chance(500) => {
                cut_off_leader
            }
            Some(id) if !is_read && Some(id) == cut_off_leader && running.len() > 1 => {
                let majority: Vec<NodeId> = running
                    .iter()
                    .copied()
                    .filter(|&other| other != id)
                    .collect();
                Some(self.world.rng.pick(&majority))
            }
            Some(id) if !(is_read && self.world.driver_bug(DriverBug::StaleLocalRead)) => Some(id),
            _ if running.is_empty() => None,
            _ => Some(self.world.rng.pick(&running)),
        };
        pending.attempts += 1;
        pending.target = None;
        let client = &mut self.world.clients[index];
        client.generation += 1;
        client.pending = Some(pending);
        let generation = client.generation;
        let client_id = client.id;
        let Some(target) = target else {
            let at = self.world.now + TICK;
            self.world.wake_client(index, at, generation);
            return;
        };
        self.world.record(Event::Invoke {
            client: client_id,
            node: target,
            op: pending.op,
            attempt: pending.attempts,
        });
        let sim_node = self.nodes.get_mut(&target).expect("running");
        let incarnation = sim_node.incarnation;
        if sim_node.paused {
            // The request sits unanswered in a frozen process: the client times out.
            let at = self.world.now + ATTEMPT_TIMEOUT_TICKS * TICK;
            self.world.wake_client(index, at, generation);
            return;
        }
        let retry_soon = self.world.now + self.world.rng.range(TICK / 2, 2 * TICK);
        match pending.op {
            OpSummary::Get { key } => {
                if self.world.driver_bug(DriverBug::StaleLocalRead) {
                    let value = sim_node.shell().state_machine().get(key);
                    self.world.complete(index, Response::Get(value));
                    return;
                }
                let attempt = self.world.next_read_attempt;
                self.world.next_read_attempt += 1;
                let waiting = Waiting::Read(attempt);
                self.set_target(index, target, incarnation, waiting);
                let at = self.world.now + ATTEMPT_TIMEOUT_TICKS * TICK;
                self.world.wake_client(index, at, generation);
                // The shell registers the read with the core when it handles its Readys, and
                // answers it (or refuses it, without a leader) then.
                let sim_node = self.nodes.get_mut(&target).expect("running");
                sim_node.shell().read(SimWaiter::Client { index, waiting });
            }
            OpSummary::Put { .. } | OpSummary::CompareAndSwap { .. } => {
                self.propose_write(index, target, incarnation, generation, retry_soon);
            }
        }
        let sim_node = self.nodes.get_mut(&target).expect("exists");
        process(sim_node, &mut self.world);
    }

    /// Proposes the pending write at `target`, as the server's runtime proposes a client's
    /// request: a fresh request id from the shell, the entry encoded as the runtime encodes it.
    pub(super) fn propose_write(
        &mut self,
        index: usize,
        target: NodeId,
        incarnation: u64,
        generation: u64,
        retry_soon: u64,
    ) {
        let op = self.world.clients[index].pending.expect("pending").op;
        let request = match op {
            OpSummary::Put { key, value } => kv::put_request(key, value),
            OpSummary::CompareAndSwap { key, expected, new } => {
                kv::compare_and_swap_request(key, expected, new)
            }
            OpSummary::Get { .. } => unreachable!("reads are not proposed"),
        };
        let sim_node = self.nodes.get_mut(&target).expect("running");
        let id = sim_node.shell().next_request_id();
        let data = encode_proposal(id, request);
        let waiting = Waiting::Write(id);
        // Set before proposing: the shell may answer within the call's handling.
        self.set_target(index, target, incarnation, waiting);
        let sim_node = self.nodes.get_mut(&target).expect("running");
        if self.world.driver_bug(DriverBug::AckBeforeCommit) {
            let proposed = sim_node.shell().propose(id, data.clone(), SimWaiter::Probe);
            if proposed.is_ok() {
                let machine = sim_node.shell().state_machine();
                let response = match op {
                    OpSummary::CompareAndSwap { key, expected, .. } => {
                        Response::CompareAndSwap(machine.would_swap(key, expected))
                    }
                    _ => Response::Put,
                };
                self.world.complete(index, response);
                return;
            }
        }
        let proposed = sim_node
            .shell()
            .propose(id, data, SimWaiter::Client { index, waiting });
        match proposed {
            Ok(_) => {
                self.world.clients[index].leader_hint = Some(target);
                let at = self.world.now + ATTEMPT_TIMEOUT_TICKS * TICK;
                self.world.wake_client(index, at, generation);
            }
            Err(Refused { error, .. }) => {
                if let Some(pending) = self.world.clients[index].pending.as_mut() {
                    pending.target = None;
                }
                let hint = match error {
                    ShellError::NotLeader { leader } => leader,
                    ShellError::NoLeader => None,
                    _ => Some(target),
                };
                self.world.clients[index].leader_hint = hint;
                self.world.wake_client(index, retry_soon, generation);
            }
        }
    }

    pub(super) fn set_target(
        &mut self,
        index: usize,
        node: NodeId,
        incarnation: u64,
        waiting: Waiting,
    ) {
        if let Some(pending) = self.world.clients[index].pending.as_mut() {
            pending.target = Some((node, incarnation, waiting));
        }
    }
}
