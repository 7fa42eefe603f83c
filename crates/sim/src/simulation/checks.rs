//! The end of a run: linearizability, durability of acknowledged writes, state machine safety.

use super::*;

impl Simulation {
    pub(super) fn final_checks(&mut self) {
        let result = linearizability::check(&self.world.history);
        if !result.is_ok() {
            self.world.fail_now("linearizability", result.to_string());
            return;
        }
        let committed: std::collections::BTreeSet<u64> =
            self.world.invariants.committed_requests().collect();
        let lost = self
            .world
            .acknowledged_writes
            .iter()
            .find(|write| !committed.contains(write))
            .copied();
        if let Some(request_id) = lost {
            self.world.fail_now(
                "acknowledged writes are durable",
                format!("request {request_id} was acknowledged but is not in the committed log"),
            );
            return;
        }
        // Every running node that has applied as far as the others must hold the same state;
        // the per-index state check has compared them all along, this compares the ends.
        let applied_max = self
            .nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.applied)
            .max();
        let mut states = self
            .nodes
            .values()
            .filter(|n| n.is_running() && Some(n.applied) == applied_max)
            .map(|n| {
                let shell = n.shell.as_ref().expect("running");
                (n.id, shell.state_machine().state_hash())
            });
        if let Some((first_id, first_state)) = states.next() {
            if let Some((other, _)) = states.find(|&(_, state)| state != first_state) {
                self.world.fail_now(
                    "state machine safety",
                    format!(
                        "n{first_id} and n{other} applied the same index but hold different states"
                    ),
                );
            }
        }
    }

    pub(super) fn outcome(self, seed: u64) -> Outcome {
        let world = self.world;
        let mut stats = world.stats;
        stats.events = world.trace.count();
        Outcome {
            seed,
            trace_hash: world.trace.hash(),
            recent_events: if world.violation.is_some() {
                world.violation_events
            } else {
                Vec::new()
            },
            violation: world.violation,
            trace: world.trace.all_lines(),
            stats,
        }
    }
}
