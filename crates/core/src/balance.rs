//! Where a new connection goes: the one balancing rule of sluice, applied by the
//! local front (`sluice up`) and by `sluice proxy` with several upstreams alike
//! (and, planned, by whatever picks endpoints on Kubernetes).

/// One instance (or upstream) that may take a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its last connect or probe succeeded. An unhealthy one is chosen only when
    /// no healthy one is left, since it may have come back.
    pub healthy: bool,
    /// On the revision the fleet converges to
    /// ([`crate::engine::Status::target_revision`]): a client moved off an old
    /// instance must not land on another old one and be moved twice.
    pub preferred: bool,
    /// Connections it holds (or is estimated to hold).
    pub connections: u64,
}

/// The index of the candidate a new connection goes to: healthy first, then the
/// target revision's, then the least connected; the first one on a tie. `None`
/// when there is no candidate.
pub fn least_loaded(candidates: impl IntoIterator<Item = Candidate>) -> Option<usize> {
    candidates
        .into_iter()
        .enumerate()
        .min_by_key(|(_, c)| (!c.healthy, !c.preferred, c.connections))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(healthy: bool, preferred: bool, connections: u64) -> Candidate {
        Candidate {
            healthy,
            preferred,
            connections,
        }
    }

    #[test]
    fn healthy_then_target_revision_then_least_connected_then_first() {
        assert_eq!(least_loaded([]), None);
        assert_eq!(least_loaded([c(true, true, 5), c(true, true, 3)]), Some(1));
        assert_eq!(least_loaded([c(true, true, 3), c(true, true, 3)]), Some(0));
        assert_eq!(
            least_loaded([c(true, false, 0), c(true, true, 500)]),
            Some(1),
            "the target revision even when busier"
        );
        assert_eq!(
            least_loaded([c(false, true, 0), c(true, false, 9)]),
            Some(1),
            "healthy before anything"
        );
        assert_eq!(
            least_loaded([c(false, true, 2), c(false, true, 1)]),
            Some(1)
        );
    }
}
