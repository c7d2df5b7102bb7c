//! Quorum arithmetic: the only place in the project where a quorum size is
//! computed (DESIGN §3, RR §III-D eqs. 12–14). Every protocol step asks this
//! module how many replies it needs; nothing else does arithmetic on `N`.
//!
//! In [`Mode::Rr`] the sizes are
//!
//! ```text
//! N    = max(M_R, F) + F + 1
//! W_Q  = max(M_R, F) + 1
//! R_Q  = F + min(s, M_R) + 1        (s = suspicious replies among those received)
//! S_Q  = max(R_Q(s), W_Q)
//! ```
//!
//! In [`Mode::Cft`] (the paper's crash-fault baseline) the same `N` replicas are
//! used with plain majorities for every quorum and `s` is ignored.

use super::Mode;

/// Largest cluster the cores accept. Replica ids and per-replica maps stay
/// small, and a config asking for more is almost certainly a typo.
pub const MAX_REPLICAS: u32 = 64;

/// A configuration that violates one of the quorum formulas.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `N = max(M_R, F) + F + 1` must not exceed [`MAX_REPLICAS`].
    #[error(
        "N = max(M_R, F) + F + 1 = {n} exceeds the supported maximum of {max} replicas (m_r={m_r}, f={f})"
    )]
    TooManyReplicas { m_r: u32, f: u32, n: u64, max: u32 },
    /// RR requires `W_Q > M_R` (eq. 3, durability); only violated by overflow.
    #[error("W_Q = max(M_R, F) + 1 = {w} must exceed M_R = {m_r} (RR eq. 3, durability)")]
    WriteQuorumTooSmall { m_r: u32, w: u32 },
    /// `N - F >= W_Q` (eq. 4, write liveness).
    #[error("N - F = {n_minus_f} is smaller than W_Q = {w} (RR eq. 4, write liveness)")]
    WriteNotLive { n_minus_f: u32, w: u32 },
    /// `R_Q(M_R) = F + M_R + 1 <= N` so that recovery after a simultaneous
    /// restart of every replica can still gather a read quorum (DESIGN §4).
    #[error("R_Q(s>=M_R) = F + M_R + 1 = {r_max} exceeds N = {n} (recovery after a full restart)")]
    ReadQuorumExceedsN { r_max: u32, n: u32 },
    /// A timing parameter is unusable (zero, or the acknowledgement window is
    /// not longer than the retransmission interval).
    #[error("timing: {0}")]
    Timing(String),
}

/// Quorum sizes for one cluster configuration. Cheap to copy; built only by
/// [`Quorums::new`], which validates the formulas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    mode: Mode,
    m_r: u32,
    f: u32,
    n: u32,
    /// Test-only fault (see [`super::Faults::read_quorum_minus_one`]).
    read_minus_one: bool,
}

impl Quorums {
    /// Validate `(M_R, F)` and derive `N`.
    pub fn new(mode: Mode, m_r: u32, f: u32) -> Result<Quorums, ConfigError> {
        let n_wide = u64::from(m_r.max(f)) + u64::from(f) + 1;
        if n_wide > u64::from(MAX_REPLICAS) {
            return Err(ConfigError::TooManyReplicas {
                m_r,
                f,
                n: n_wide,
                max: MAX_REPLICAS,
            });
        }
        // Cannot overflow: n_wide <= MAX_REPLICAS.
        let n = n_wide as u32;
        let q = Quorums {
            mode,
            m_r,
            f,
            n,
            read_minus_one: false,
        };
        let w = q.write();
        if mode == Mode::Rr && w <= m_r {
            return Err(ConfigError::WriteQuorumTooSmall { m_r, w });
        }
        if n - f < w {
            return Err(ConfigError::WriteNotLive {
                n_minus_f: n - f,
                w,
            });
        }
        if mode == Mode::Rr && f + m_r + 1 > n {
            return Err(ConfigError::ReadQuorumExceedsN {
                r_max: f + m_r + 1,
                n,
            });
        }
        Ok(q)
    }

    /// Same sizes, but every read quorum one smaller than it must be. Only the
    /// simulator's "the checker catches bugs" test turns this on.
    pub(crate) fn with_read_minus_one(mut self, on: bool) -> Quorums {
        self.read_minus_one = on;
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn m_r(&self) -> u32 {
        self.m_r
    }

    pub fn f(&self) -> u32 {
        self.f
    }

    /// Number of replicas, eq. 12 (the CFT baseline uses the same `N`).
    pub fn n(&self) -> u32 {
        self.n
    }

    fn majority(&self) -> u32 {
        self.n / 2 + 1
    }

    /// `W_Q`: acknowledgements a durable step waits for (eq. 13).
    pub fn write(&self) -> u32 {
        match self.mode {
            Mode::Rr => self.m_r.max(self.f) + 1,
            Mode::Cft => self.majority(),
        }
    }

    /// `R_Q(s)`: replies a step that observes earlier writes waits for, where
    /// `s` is the number of suspicious replies among those received (eq. 14).
    pub fn read(&self, suspicious: u32) -> u32 {
        let size = match self.mode {
            Mode::Rr => self.f + suspicious.min(self.m_r) + 1,
            Mode::Cft => self.majority(),
        };
        if self.read_minus_one {
            size.saturating_sub(1).max(1)
        } else {
            size
        }
    }

    /// `S_Q(s) = max(R_Q(s), W_Q)`: a step that both reads and writes.
    pub fn super_(&self, suspicious: u32) -> u32 {
        self.read(suspicious).max(self.write())
    }

    /// Whether `replies` replies of which `suspicious` are suspicious form a
    /// read quorum. Growing `s` can only raise the bar, so callers re-check
    /// after every reply.
    pub fn is_read_quorum(&self, replies: u32, suspicious: u32) -> bool {
        replies >= self.read(suspicious)
    }

    pub fn is_super_quorum(&self, replies: u32, suspicious: u32) -> bool {
        replies >= self.super_(suspicious)
    }

    pub fn is_write_quorum(&self, acks: u32) -> bool {
        acks >= self.write()
    }

    /// Whether suspicion changes anything in this mode (RR: yes; CFT: no —
    /// the baseline trusts whatever state a replica restarts with).
    pub fn uses_suspicion(&self) -> bool {
        self.mode == Mode::Rr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_examples_design_section_3() {
        let q = Quorums::new(Mode::Rr, 2, 2).expect("valid");
        assert_eq!((q.n(), q.write(), q.read(0), q.read(5)), (5, 3, 3, 5));
        let q = Quorums::new(Mode::Rr, 4, 2).expect("valid");
        assert_eq!((q.n(), q.write(), q.read(0), q.read(7)), (7, 5, 3, 7));
        assert_eq!(q.super_(3), 6);
    }

    #[test]
    fn read_minus_one_fault_shrinks_only_reads() {
        let q = Quorums::new(Mode::Rr, 2, 2)
            .expect("valid")
            .with_read_minus_one(true);
        assert_eq!((q.read(0), q.write()), (2, 3));
    }

    #[test]
    fn rr_intersection_properties_hold_for_all_small_configs() {
        // RR Appendix A: |R_Q(s) ∩ W_Q| >= min(s, M_R) + 1, so a read quorum
        // always meets a write quorum in a replica that was not rolled back.
        for m_r in 0..8 {
            for f in 0..8 {
                let q = Quorums::new(Mode::Rr, m_r, f).expect("valid");
                assert!(q.write() > m_r);
                for s in 0..=q.n() {
                    let r = q.read(s);
                    assert!(r <= q.n());
                    assert!(r + q.write() - q.n() > s.min(m_r));
                }
                // Two write quorums intersect (used by RR-Paxos, PROTOCOLS.md PAXOS-0).
                assert!(2 * q.write() > q.n());
            }
        }
    }
}
