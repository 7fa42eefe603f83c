//! Healing at the end of the chaos, and the liveness probe that must commit within its bound.

use super::*;

impl Simulation {
    pub(super) fn heal(&mut self) {
        for sim_node in self.nodes.values() {
            if let Some(disk) = &sim_node.disk {
                disk.disk.set_fail_syncs(false);
            }
        }
        self.world.network.blocked.clear();
        self.world.network.partition_generation += 1;
        self.world.network.faults_generation += 1;
        self.clear_network_faults();
        self.world.crash_voters_until = 0;
        self.world.leader_churn_until = 0;
        self.world.network.isolated_until.clear();
        self.world.note("all faults heal".into());
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let sim_node = &self.nodes[&id];
            if sim_node.status == Status::Crashed {
                self.restart(id);
            } else if sim_node.paused {
                let incarnation = sim_node.incarnation;
                self.resume(id, incarnation);
            }
        }
        self.world.phase = Phase::Healed { at: self.world.now };
        let now = self.world.now;
        self.world
            .schedule(now + ELECTION_MAX_TICKS * TICK, Ev::Probe);
    }

    /// After the heal: a leader must be elected and a write commit within the bound; then the
    /// clients finish what they have in flight.
    pub(super) fn on_probe(&mut self) {
        let Phase::Healed { at: healed_at } = self.world.phase else {
            return;
        };
        let elapsed_ticks = (self.world.now - healed_at) / TICK;
        if let Some(done_at) = self.world.probe_done_at {
            let clients_idle = self
                .world
                .clients
                .iter()
                .all(|client| client.pending.is_none());
            let bound_ticks = self.liveness_bound_ticks();
            if clients_idle || elapsed_ticks > bound_ticks + OPERATION_DEADLINE_TICKS {
                self.world.note(format!(
                    "liveness: a write committed {} ticks after the heal",
                    (done_at - healed_at) / TICK
                ));
                self.world.phase = Phase::Done;
                return;
            }
        } else if elapsed_ticks > self.liveness_bound_ticks() {
            let bound_ticks = self.liveness_bound_ticks();
            let leader = self.current_leader();
            self.world.fail_now(
                "liveness",
                format!(
                    "no write committed within {bound_ticks} ticks of the heal (leader now: {leader:?})"
                ),
            );
            return;
        } else if let Some(leader) = self.current_leader() {
            self.world.probe_request += 1;
            let number = self.world.probe_request;
            let sim_node = self.nodes.get_mut(&leader).expect("exists");
            let id = sim_node.shell().next_request_id();
            let data = encode_proposal(id, kv::probe_request(number));
            let result = sim_node
                .shell()
                .propose(id, data, SimWaiter::Probe)
                .map_err(|refused| refused.error);
            self.world.note(format!(
                "liveness probe {number} proposed at n{leader}: {result:?}"
            ));
            process(sim_node, &mut self.world);
        }
        let at = self.world.now + ELECTION_MIN_TICKS * TICK;
        self.world.schedule(at, Ev::Probe);
    }
}
