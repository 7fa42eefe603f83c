//! Node lifecycle: ticks, deliveries, crashes and restarts from disk, pauses, clock jumps and
//! the shutdown of removed nodes.

use super::*;

impl Simulation {
    pub(super) fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.incarnation != incarnation || !sim_node.is_running() {
            return;
        }
        let next = self.world.now + self.world.rng.range(TICK - 1, TICK + 1);
        self.world.schedule(
            next,
            Ev::Tick {
                node: id,
                incarnation,
            },
        );
        if sim_node.paused {
            sim_node.missed_ticks += 1;
            return;
        }
        self.world.record(Event::Tick { node: id, count: 1 });
        sim_node.shell().tick();
        process(sim_node, &mut self.world);
    }

    pub(super) fn deliver(&mut self, message: Message, sender_incarnation: u64) {
        let summary = summarize(&message);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let to = message.to;
        let running = self.nodes.get(&to).is_some_and(SimNode::is_running);
        if !running {
            self.world.drop_message(
                summary,
                DropReason::ReceiverDown,
                sender_incarnation,
                is_snapshot,
            );
            self.flush_feedback();
            return;
        }
        if self.world.network.is_cut(message.from, to, self.world.now) {
            self.world.drop_message(
                summary,
                DropReason::Partitioned,
                sender_incarnation,
                is_snapshot,
            );
            self.flush_feedback();
            return;
        }
        let sim_node = self.nodes.get_mut(&to).expect("running");
        if sim_node.paused {
            sim_node.held.push((message, sender_incarnation));
            return;
        }
        self.world.stats.messages_delivered += 1;
        self.world.record(Event::Deliver { message: summary });
        sim_node.shell().step(message);
        process(sim_node, &mut self.world);
        if is_snapshot {
            self.world.feedback.push(Feedback::Snapshot {
                sender: summary.from,
                incarnation: sender_incarnation,
                peer: to,
                success: true,
            });
            self.flush_feedback();
        }
    }

    /// Hands pending transport feedback to its senders.
    pub(super) fn flush_feedback(&mut self) {
        for feedback in std::mem::take(&mut self.world.feedback) {
            let now = self.world.now;
            self.world.schedule(now, Ev::Feedback(feedback));
        }
    }

    pub(super) fn crash(&mut self, id: NodeId) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        // Only what the persist step wrote (and, with the WAL, synced) survives.
        power_off(sim_node, &mut self.world, true);
    }

    /// Opens the node's storage after a crash: `MemoryStorage` as it was, or the WAL reopened
    /// from the disk. `None` if the node cannot start.
    pub(super) fn reopen_storage(&mut self, id: NodeId) -> Option<NodeStorage> {
        let sim_node = self.nodes.get_mut(&id).expect("exists");
        if let Some(memory) = sim_node.durable.take() {
            return Some(NodeStorage::Memory(Box::new(memory)));
        }
        let disk = sim_node
            .disk
            .as_ref()
            .expect("a node without memory storage has a disk");
        let opened = disk.open();
        let expected = sim_node.durable_at_crash.take();
        let corrupted = sim_node.corrupted.clone();
        let world = &mut self.world;
        match (opened, corrupted) {
            (Ok((log, report)), None) => {
                world.note(format!("n{id} reopens its storage: {report}"));
                if report.torn_tail.is_some() {
                    world.stats.torn_tails += 1;
                }
                if let Some(expected) = expected {
                    let reopened = DurableLog::of(&log, Vec::new());
                    if !expected.is_kept_by(&reopened) {
                        world.fail_now(
                            "what a sync made durable survives a crash",
                            format!(
                                "n{id} synced {expected:?} but reopened {reopened:?} ({report})"
                            ),
                        );
                    }
                }
                Some(NodeStorage::Wal(Box::new(log)))
            }
            (Ok(_), Some(damage)) => {
                world.fail_now(
                    "a damaged old record stops the node",
                    format!("n{id} started from a disk with a flipped {damage}"),
                );
                None
            }
            (Err(error @ storage::Error::Corrupt { .. }), Some(damage)) => {
                world.note(format!(
                    "n{id} refuses to start: {error} (the nemesis flipped {damage})"
                ));
                sim_node.status = Status::Failed;
                if world.disk_rng.chance(500) {
                    world.note(format!("operator: n{id} stays down"));
                } else {
                    world.note(format!("operator: n{id} is replaced by a new member"));
                    world.replacements.push_back(Replacement {
                        failed: id,
                        new: None,
                    });
                    if world.replacements.len() == 1 {
                        let at = world.now + TICK;
                        world.schedule(at, Ev::Operator);
                    }
                }
                None
            }
            (Err(error), damage) => {
                world.fail_now(
                    "a node restarts from its own disk",
                    format!("n{id} cannot open its storage: {error} (damage done: {damage:?})"),
                );
                sim_node.status = Status::Failed;
                None
            }
        }
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.status != Status::Crashed {
            return;
        }
        let Some(storage) = self.reopen_storage(id) else {
            return;
        };
        let snapshot = storage.snapshot().expect("storage has one");
        let sim_node = self.nodes.get(&id).expect("exists");
        let mut config = sim_node.config.clone();
        // The state machine restarts from the snapshot; the core replays committed entries
        // after it. Each life gets its own election-timeout stream.
        config.applied_index = snapshot.meta.index;
        config.random_seed = config.random_seed.wrapping_add(sim_node.incarnation);
        let commit_seen = storage.durable_hard_state().commit.max(snapshot.meta.index);
        let synced_hard_state = storage.durable_hard_state();
        let incarnation = sim_node.incarnation + 1;
        self.world
            .stored
            .insert(id, StoredLog::from_storage(&storage));
        let shell = build_shell(&self.world, config, storage, incarnation);
        let state = shell.state_machine().state_hash();
        let sim_node = self.nodes.get_mut(&id).expect("exists");
        sim_node.applied = snapshot.meta.index;
        sim_node.commit_seen = commit_seen;
        sim_node.synced_hard_state = synced_hard_state;
        sim_node.incarnation += 1;
        sim_node.status = Status::Up;
        sim_node.shell = Some(shell);
        let incarnation = sim_node.incarnation;
        self.world.note(format!(
            "n{id} restarts from its durable state (snapshot at {})",
            snapshot.meta.index
        ));
        let result =
            self.world
                .invariants
                .check_state(self.world.now, id, snapshot.meta.index, state);
        self.world.check(result);
        let at = self.world.now + self.world.rng.range(1, TICK);
        self.world.schedule(
            at,
            Ev::Tick {
                node: id,
                incarnation,
            },
        );
        let sim_node = self.nodes.get_mut(&id).expect("exists");
        process(sim_node, &mut self.world);
    }

    pub(super) fn pause(&mut self, id: NodeId, duration_ticks: u64) {
        let jump = self.world.params.lease_reads || self.world.rng.chance(500);
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !sim_node.is_running() || sim_node.paused {
            return;
        }
        sim_node.paused = true;
        sim_node.missed_ticks = 0;
        sim_node.jump_on_resume = jump;
        let incarnation = sim_node.incarnation;
        self.world
            .note(format!("n{id} pauses for {duration_ticks} ticks"));
        let at = self.world.now + duration_ticks * TICK;
        self.world.schedule(
            at,
            Ev::Resume {
                node: id,
                incarnation,
            },
        );
    }

    pub(super) fn resume(&mut self, id: NodeId, incarnation: u64) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.incarnation != incarnation || !sim_node.is_running() || !sim_node.paused {
            return;
        }
        sim_node.paused = false;
        let missed = std::mem::take(&mut sim_node.missed_ticks);
        // Rationale: a paused process whose clock kept running sees all the missed time at once
        // when it wakes; it must count it before it serves anything, or a lease would outlive
        // its term. Without the jump the node's clock simply stood still.
        if sim_node.jump_on_resume && missed > 0 {
            self.world.record(Event::Tick {
                node: id,
                count: missed,
            });
            for _ in 0..missed {
                sim_node.shell().tick();
            }
            process(sim_node, &mut self.world);
        }
        self.world
            .note(format!("n{id} resumes ({missed} ticks missed)"));
        let mut held = std::mem::take(&mut sim_node.held).into_iter();
        for (message, sender_incarnation) in held.by_ref() {
            let sim_node = self.nodes.get_mut(&id).expect("exists");
            let summary = summarize(&message);
            let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
            self.world.stats.messages_delivered += 1;
            self.world.record(Event::Deliver { message: summary });
            sim_node.shell().step(message);
            process(sim_node, &mut self.world);
            if is_snapshot {
                // The transport held the snapshot's stream open while the process was frozen;
                // now it went through, and the sender learns so, as in `deliver`.
                let now = self.world.now;
                let feedback = Feedback::Snapshot {
                    sender: summary.from,
                    incarnation: sender_incarnation,
                    peer: id,
                    success: true,
                };
                self.world.schedule(now, Ev::Feedback(feedback));
            }
            if !self.nodes[&id].is_running() {
                break;
            }
        }
        abandon_held(held.collect(), &mut self.world);
    }

    pub(super) fn clock_jump(&mut self, id: NodeId, ticks: u64) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !sim_node.is_running() || sim_node.paused {
            return;
        }
        self.world.record(Event::Tick {
            node: id,
            count: ticks,
        });
        for _ in 0..ticks {
            sim_node.shell().tick();
        }
        process(sim_node, &mut self.world);
    }

    /// Shuts down nodes whose removal from the configuration every remaining voter has
    /// applied.
    ///
    /// Rationale: the configuration takes effect when applied. Shut a removed node down as soon
    /// as the change commits, and voters that have not yet learned the commit still count it
    /// (in a joint configuration, they need its vote): with it gone they can never elect. The
    /// operator waits until the voters have applied the change.
    pub(super) fn remove_nodes(&mut self) {
        if self.world.to_remove.is_empty() {
            return;
        }
        let (config_index, config) = &self.world.latest_config;
        // A voter whose disk is damaged never starts again: the operator does not wait for it.
        let voters_applied = config
            .voters
            .iter()
            .chain(&config.voters_outgoing)
            .filter_map(|voter| self.nodes.get(voter))
            .filter(|sim_node| sim_node.status != Status::Failed)
            .all(|sim_node| sim_node.is_running() && sim_node.applied >= *config_index);
        if !voters_applied {
            return;
        }
        for id in std::mem::take(&mut self.world.to_remove) {
            let Some(sim_node) = self.nodes.get_mut(&id) else {
                continue;
            };
            if sim_node.status == Status::Removed {
                continue;
            }
            sim_node.shell = None;
            sim_node.status = Status::Removed;
            abandon_held(std::mem::take(&mut sim_node.held), &mut self.world);
            self.world
                .note(format!("n{id} is removed from the cluster and shut down"));
        }
    }

    /// The running, unpaused leader of the highest term.
    pub(super) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|sim_node| sim_node.is_running() && !sim_node.paused)
            .filter_map(|sim_node| {
                let node = sim_node.shell.as_ref()?.node();
                (node.role() == Role::Leader).then_some((node.term(), sim_node.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    pub(super) fn running_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|sim_node| sim_node.is_running())
            .map(|sim_node| sim_node.id)
            .collect()
    }

    /// Nodes not removed: the ones the network can name.
    pub(super) fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|sim_node| sim_node.status != Status::Removed)
            .map(|sim_node| sim_node.id)
            .collect()
    }
}
