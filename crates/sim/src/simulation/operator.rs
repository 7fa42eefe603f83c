//! The operator, who replaces a node whose disk was damaged: remove it, add a new empty node
//! as a learner, promote it.

use super::*;

impl Simulation {
    /// The operator's next step in replacing the first failed node in line: remove it, start
    /// a new empty node and add it as a learner, promote it once it has applied the latest
    /// configuration. Each step is proposed again until the applied configuration shows it.
    pub(super) fn on_operator(&mut self) {
        let Some(mut replacement) = self.world.replacements.front().copied() else {
            return;
        };
        let again_at = self.world.now + ELECTION_MIN_TICKS * TICK;
        let Some(leader) = self.current_leader() else {
            self.world.schedule(again_at, Ev::Operator);
            return;
        };
        let (config_index, config) = self.world.latest_config.clone();
        let members = config.all_nodes();
        let change = if config.is_joint() {
            // Another change is under way; an explicit one waits for its leave.
            (!config.auto_leave).then(ConfigChange::leave_joint)
        } else {
            match replacement.new {
                None if members.contains(&replacement.failed) => {
                    Some(ConfigChange::new([ConfigChangeStep::RemoveNode(
                        replacement.failed,
                    )]))
                }
                None => {
                    let id = self.next_joiner;
                    self.next_joiner += 1;
                    let seed = self.world.rng.next_u64();
                    self.start_node(id, Bootstrap::Joiner, seed);
                    self.world.note(format!(
                        "operator: n{id} starts empty, to replace n{}",
                        replacement.failed
                    ));
                    replacement.new = Some(id);
                    Some(ConfigChange::new([ConfigChangeStep::AddLearner(id)]))
                }
                Some(new)
                    if config.voters.contains(&new)
                        || (self.world.ever_member.contains(&new) && !members.contains(&new))
                        || matches!(self.nodes[&new].status, Status::Failed | Status::Removed) =>
                {
                    // Promoted; or another change removed the new node again (it is shut down
                    // soon, and must not be added back), or its own disk failed for good:
                    // either way this replacement is over.
                    self.world.note(format!(
                        "operator: replacing n{} ends with n{new} {:?}",
                        replacement.failed, self.nodes[&new].status
                    ));
                    self.world.stats.replacements += 1;
                    self.world.replacements.pop_front();
                    if !self.world.replacements.is_empty() {
                        self.world.schedule(again_at, Ev::Operator);
                    }
                    return;
                }
                Some(new) if !members.contains(&new) => {
                    Some(ConfigChange::new([ConfigChangeStep::AddLearner(new)]))
                }
                Some(new) => (self.nodes[&new].applied >= config_index)
                    .then(|| ConfigChange::new([ConfigChangeStep::AddVoter(new)])),
            }
        };
        if let Some(front) = self.world.replacements.front_mut() {
            *front = replacement;
        }
        if let Some(change) = change {
            let quorums = quorums_after(&config, &change);
            if self.quorums_stay_healthy(&quorums, None) {
                self.propose_change(leader, change, &config);
            }
        }
        self.world.schedule(again_at, Ev::Operator);
    }
}
