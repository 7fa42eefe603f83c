//! Membership changes as pure functions from one configuration to the next: a simple change of
//! at most one voter, entering a joint configuration, and leaving it.

use std::collections::BTreeSet;

use crate::types::{ConfigChange, ConfigChangeStep, ConfigState, ConfigTransition, NodeId};

/// Why a membership change cannot be applied to the current configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChangeError {
    /// Entering a joint configuration, or a simple change, while already joint.
    AlreadyJoint,
    /// Leaving a joint configuration that is not joint.
    NotJoint,
    /// A simple change may change at most one voter; use a joint change.
    TooManyVoterChanges,
    /// The change would leave no voters.
    NoVotersLeft,
    /// Node 0 is reserved.
    InvalidNode,
}

impl std::fmt::Display for ConfigChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigChangeError::AlreadyJoint => "the configuration is already joint",
            ConfigChangeError::NotJoint => "the configuration is not joint",
            ConfigChangeError::TooManyVoterChanges => {
                "a simple change may change at most one voter; use a joint change"
            }
            ConfigChangeError::NoVotersLeft => "the change would leave no voters",
            ConfigChangeError::InvalidNode => "node id 0 is reserved",
        })
    }
}

impl std::error::Error for ConfigChangeError {}

/// The configuration after applying `change` to `current`.
pub(crate) fn apply(
    current: &ConfigState,
    change: &ConfigChange,
) -> Result<ConfigState, ConfigChangeError> {
    if change.is_leave_joint() {
        return leave_joint(current);
    }
    if change.steps.iter().any(|step| step.node() == 0) {
        return Err(ConfigChangeError::InvalidNode);
    }
    match change.transition {
        ConfigTransition::Auto if change.steps.len() <= 1 => simple(current, &change.steps),
        ConfigTransition::Auto | ConfigTransition::JointAutoLeave => {
            enter_joint(current, &change.steps, true)
        }
        ConfigTransition::JointExplicitLeave => enter_joint(current, &change.steps, false),
    }
}

/// Sets, so that the steps read as set operations; turned back into sorted vectors at the end.
struct Sets {
    voters: BTreeSet<NodeId>,
    voters_outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    learners_next: BTreeSet<NodeId>,
}

impl Sets {
    fn from(config: &ConfigState) -> Sets {
        Sets {
            voters: config.voters.iter().copied().collect(),
            voters_outgoing: config.voters_outgoing.iter().copied().collect(),
            learners: config.learners.iter().copied().collect(),
            learners_next: config.learners_next.iter().copied().collect(),
        }
    }

    fn into_config(self, auto_leave: bool) -> ConfigState {
        let config = ConfigState {
            voters: self.voters.into_iter().collect(),
            voters_outgoing: self.voters_outgoing.into_iter().collect(),
            learners: self.learners.into_iter().collect(),
            learners_next: self.learners_next.into_iter().collect(),
            auto_leave,
        };
        check_invariants(&config);
        config
    }

    fn apply_steps(&mut self, steps: &[ConfigChangeStep]) {
        for step in steps {
            match *step {
                ConfigChangeStep::AddVoter(id) => {
                    self.learners.remove(&id);
                    self.learners_next.remove(&id);
                    self.voters.insert(id);
                }
                ConfigChangeStep::AddLearner(id) => {
                    self.voters.remove(&id);
                    self.learners.remove(&id);
                    self.learners_next.remove(&id);
                    // A voter of the outgoing half keeps voting there until the joint
                    // configuration is left; only then does it become a learner.
                    if self.voters_outgoing.contains(&id) {
                        self.learners_next.insert(id);
                    } else {
                        self.learners.insert(id);
                    }
                }
                ConfigChangeStep::RemoveNode(id) => {
                    self.voters.remove(&id);
                    self.learners.remove(&id);
                    self.learners_next.remove(&id);
                }
            }
        }
    }
}

fn simple(
    current: &ConfigState,
    steps: &[ConfigChangeStep],
) -> Result<ConfigState, ConfigChangeError> {
    if current.is_joint() {
        return Err(ConfigChangeError::AlreadyJoint);
    }
    let mut sets = Sets::from(current);
    sets.apply_steps(steps);
    let before: BTreeSet<NodeId> = current.voters.iter().copied().collect();
    if before.symmetric_difference(&sets.voters).count() > 1 {
        return Err(ConfigChangeError::TooManyVoterChanges);
    }
    if sets.voters.is_empty() {
        return Err(ConfigChangeError::NoVotersLeft);
    }
    Ok(sets.into_config(false))
}

fn enter_joint(
    current: &ConfigState,
    steps: &[ConfigChangeStep],
    auto_leave: bool,
) -> Result<ConfigState, ConfigChangeError> {
    if current.is_joint() {
        return Err(ConfigChangeError::AlreadyJoint);
    }
    if current.voters.is_empty() {
        return Err(ConfigChangeError::NoVotersLeft);
    }
    let mut sets = Sets::from(current);
    sets.voters_outgoing = sets.voters.clone();
    sets.apply_steps(steps);
    if sets.voters.is_empty() {
        return Err(ConfigChangeError::NoVotersLeft);
    }
    Ok(sets.into_config(auto_leave))
}

fn leave_joint(current: &ConfigState) -> Result<ConfigState, ConfigChangeError> {
    if !current.is_joint() {
        return Err(ConfigChangeError::NotJoint);
    }
    let mut sets = Sets::from(current);
    let learners_next = std::mem::take(&mut sets.learners_next);
    sets.learners.extend(learners_next);
    sets.voters_outgoing.clear();
    Ok(sets.into_config(false))
}

/// A configuration the changer produced must be well formed; anything else is a bug here.
fn check_invariants(config: &ConfigState) {
    for learner in &config.learners {
        assert!(
            !config.voters.contains(learner),
            "node {learner} is a voter and a learner"
        );
        assert!(
            !config.voters_outgoing.contains(learner),
            "node {learner} is an outgoing voter and a learner"
        );
    }
    for next in &config.learners_next {
        assert!(
            config.voters_outgoing.contains(next),
            "next learner {next} is not outgoing"
        );
        assert!(
            !config.voters.contains(next),
            "next learner {next} is an incoming voter"
        );
    }
    if !config.is_joint() {
        assert!(
            config.learners_next.is_empty(),
            "next learners outside a joint configuration"
        );
        assert!(
            !config.auto_leave,
            "auto-leave outside a joint configuration"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfigChangeStep::*;

    fn voters(ids: &[NodeId]) -> ConfigState {
        ConfigState::with_voters(ids.iter().copied())
    }

    #[test]
    fn simple_change_adds_one_voter() {
        let next = apply(&voters(&[1, 2, 3]), &ConfigChange::new([AddVoter(4)])).unwrap();
        assert_eq!(next.voters, vec![1, 2, 3, 4]);
        assert!(!next.is_joint());
    }

    #[test]
    fn two_voters_at_once_need_a_joint_configuration() {
        let change = ConfigChange {
            steps: vec![AddVoter(4), RemoveNode(1)],
            transition: ConfigTransition::Auto,
        };
        let joint = apply(&voters(&[1, 2, 3]), &change).unwrap();
        assert_eq!(joint.voters, vec![2, 3, 4]);
        assert_eq!(joint.voters_outgoing, vec![1, 2, 3]);
        assert!(joint.auto_leave);
        let left = apply(&joint, &ConfigChange::leave_joint()).unwrap();
        assert_eq!(left, voters(&[2, 3, 4]));
    }

    #[test]
    fn demoting_a_voter_waits_for_the_joint_configuration_to_end() {
        let change = ConfigChange {
            steps: vec![AddLearner(3)],
            transition: ConfigTransition::JointExplicitLeave,
        };
        let joint = apply(&voters(&[1, 2, 3]), &change).unwrap();
        assert_eq!(joint.learners_next, vec![3]);
        assert!(joint.learners.is_empty());
        let left = apply(&joint, &ConfigChange::leave_joint()).unwrap();
        assert_eq!(left.voters, vec![1, 2]);
        assert_eq!(left.learners, vec![3]);
    }

    #[test]
    fn invalid_changes_are_refused() {
        let single = voters(&[1]);
        assert_eq!(
            apply(&single, &ConfigChange::new([RemoveNode(1)])),
            Err(ConfigChangeError::NoVotersLeft)
        );
        assert_eq!(
            apply(&single, &ConfigChange::leave_joint()),
            Err(ConfigChangeError::NotJoint)
        );
        let joint = apply(
            &voters(&[1, 2]),
            &ConfigChange {
                steps: vec![AddVoter(3)],
                transition: ConfigTransition::JointAutoLeave,
            },
        )
        .unwrap();
        assert_eq!(
            apply(&joint, &ConfigChange::new([AddVoter(4)])),
            Err(ConfigChangeError::AlreadyJoint)
        );
    }

    #[test]
    fn promoting_a_learner_is_a_simple_change() {
        let with_learner = apply(&voters(&[1, 2, 3]), &ConfigChange::new([AddLearner(4)])).unwrap();
        assert_eq!(with_learner.learners, vec![4]);
        let promoted = apply(&with_learner, &ConfigChange::new([AddVoter(4)])).unwrap();
        assert_eq!(promoted.voters, vec![1, 2, 3, 4]);
        assert!(promoted.learners.is_empty());
    }
}
