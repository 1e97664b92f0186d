//! Kubernetes' rolling-update arithmetic: how many instances may exist and how many
//! must stay available while old instances are replaced by new ones.
//!
//! `maxSurge` rounds up and `maxUnavailable` rounds down; if both resolve to 0 the
//! unavailability is raised to 1 so the update can progress (Kubernetes'
//! `ResolveFenceposts`). With 10 replicas and 25%/25%: surge 3, unavailable 2, at most
//! 13 instances, at least 8 available.

use serde::Serialize;

use crate::spec::RollingUpdate;

/// The resolved budget of a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Desired instance count.
    pub replicas: i32,
    /// Instances allowed above `replicas`.
    pub max_surge: i32,
    /// Instances allowed below `replicas`.
    pub max_unavailable: i32,
}

impl Budget {
    /// Resolves `rolling` against `replicas`.
    pub fn new(replicas: i32, rolling: &RollingUpdate) -> Budget {
        let max_surge = rolling.max_surge.resolve(replicas, true).max(0);
        let mut max_unavailable = rolling.max_unavailable.resolve(replicas, false).max(0);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Budget {
            replicas,
            max_surge,
            max_unavailable: max_unavailable.min(replicas),
        }
    }

    /// The most instances that may exist at once: `replicas + maxSurge`.
    pub fn max_pods(&self) -> i32 {
        self.replicas + self.max_surge
    }

    /// The fewest instances that must be available: `replicas − maxUnavailable`.
    pub fn min_available(&self) -> i32 {
        (self.replicas - self.max_unavailable).max(0)
    }

    /// How many new instances may be created now, given every instance that exists
    /// (old and new, ready or not) and the new ones already there.
    pub fn scale_up_allowance(&self, all_pods: i32, new_pods: i32) -> i32 {
        (self.max_pods() - all_pods)
            .min(self.replicas - new_pods)
            .max(0)
    }

    /// How many old instances may be removed now: `allPods − minAvailable −
    /// newUnavailable`, never more than `old_pods`. New instances that are not ready
    /// yet cannot be counted on.
    pub fn scale_down_allowance(&self, all_pods: i32, new_unavailable: i32, old_pods: i32) -> i32 {
        (all_pods - self.min_available() - new_unavailable)
            .min(old_pods)
            .max(0)
    }
}

/// One reconcile round of a rolling update as Kubernetes performs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// 1-based round number.
    pub round: u32,
    /// New instances created in this round (not ready yet when old ones are removed).
    pub scale_up: i32,
    /// Old instances removed in this round.
    pub scale_down: i32,
    /// Old instances left after the round.
    pub old: i32,
    /// New instances after the round.
    pub new: i32,
    /// Instances available right after the round, before the new ones are ready.
    pub available: i32,
    /// Instances in existence right after the round.
    pub total: i32,
}

/// Simulates a whole rolling update from `replicas` old instances, assuming new
/// instances become ready between rounds. Every step keeps
/// `total ≤ max_pods` and `available ≥ min_available`.
pub fn steps(budget: &Budget) -> Vec<Step> {
    let (mut old, mut new) = (budget.replicas, 0);
    let mut out = Vec::new();
    let mut round = 0;
    while old > 0 || new < budget.replicas {
        round += 1;
        let scale_up = budget.scale_up_allowance(old + new, new);
        new += scale_up;
        let scale_down = budget.scale_down_allowance(old + new, scale_up, old);
        old -= scale_down;
        if scale_up == 0 && scale_down == 0 {
            // Cannot happen with a resolved budget (unavailability ≥ 1 or surge ≥ 1),
            // but never loop forever on a future arithmetic change.
            break;
        }
        out.push(Step {
            round,
            scale_up,
            scale_down,
            old,
            new,
            available: old + new - scale_up,
            total: old + new,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::IntOrPercent::{Count, Percent};
    use proptest::prelude::*;

    fn budget(
        replicas: i32,
        surge: crate::spec::IntOrPercent,
        unavailable: crate::spec::IntOrPercent,
    ) -> Budget {
        Budget::new(
            replicas,
            &RollingUpdate {
                max_surge: surge,
                max_unavailable: unavailable,
            },
        )
    }

    #[test]
    fn ten_replicas_quarter_quarter() {
        let b = budget(10, Percent(25), Percent(25));
        assert_eq!((b.max_surge, b.max_unavailable), (3, 2));
        assert_eq!((b.max_pods(), b.min_available()), (13, 8));
        let s = steps(&b);
        assert_eq!(s[0].scale_up, 3);
        assert_eq!(s[0].scale_down, 2, "13 − 8 − 3 new unavailable");
        assert_eq!((s[0].old, s[0].new), (8, 3));
        let last = s.last().unwrap();
        assert_eq!((last.old, last.new), (0, 10));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn one_replica_no_unavailability_creates_before_deleting() {
        let b = budget(1, Count(1), Count(0));
        let s = steps(&b);
        assert_eq!((s[0].scale_up, s[0].scale_down), (1, 0));
        assert_eq!((s[1].scale_up, s[1].scale_down), (0, 1));
        assert_eq!((s[1].old, s[1].new), (0, 1));
    }

    #[test]
    fn both_zero_after_rounding_lets_one_go() {
        let b = budget(3, Percent(0), Percent(10));
        assert_eq!((b.max_surge, b.max_unavailable), (0, 1));
    }

    proptest! {
        #[test]
        fn steps_respect_the_budget(replicas in 1i32..60, surge in 0i32..=100, unavailable in 0i32..=100) {
            let b = budget(replicas, Percent(surge), Percent(unavailable));
            let s = steps(&b);
            let last = s.last().unwrap();
            prop_assert_eq!((last.old, last.new), (0, replicas));
            for step in &s {
                prop_assert!(step.total <= b.max_pods());
                prop_assert!(step.available >= b.min_available());
            }
        }
    }
}
