//! Sequential spec of one TEEMS metadata key: a register holding a value
//! (or nothing) with a version (DESIGN §5, §7).
//!
//! Every write in the simulator writes a value no other write uses, so a read
//! names the write it observed. Versions are checked too: the RR-ABD
//! linearization order is timestamp order (RR §IV-B e), so along the order
//! the checker finds, every write and delete carries a strictly higher
//! version than the one before, and a read returns exactly the version the
//! write of that value got.
//!
//! Outcomes the history cannot pin down are handled soundly (no false
//! alarms): a write that never returned gets its version from a read that
//! observed it, and is dropped if nobody observed it (removing an unobserved
//! write from any valid order leaves a valid order); a delete that never
//! returned keeps the previous version only as a lower bound.

use metadata_client::wire::Version;

use super::{SequentialSpec, Timed};

/// Identifies a written value: the simulator numbers every write attempt.
pub type ValueId = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// `version` is `None` for a write whose outcome is unknown.
    Write {
        value: ValueId,
        version: Option<Version>,
    },
    Delete {
        version: Option<Version>,
    },
    ReadValue {
        value: ValueId,
        version: Version,
    },
    ReadNotFound,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegState {
    pub value: Option<ValueId>,
    /// Exact when `value` is `Some`; a lower bound after a delete whose
    /// version is unknown.
    pub version: Version,
}

/// `versions: false` checks values only (a diagnostic: tells a failure
/// that is only about versions — one write's value seen under two
/// timestamps — from one where a read saw the wrong value).
pub struct RegisterSpec {
    pub versions: bool,
}

impl RegisterSpec {
    pub const STRICT: RegisterSpec = RegisterSpec { versions: true };
    pub const VALUES_ONLY: RegisterSpec = RegisterSpec { versions: false };
}

impl SequentialSpec for RegisterSpec {
    type State = RegState;
    type Op = RegOp;

    fn init(&self) -> RegState {
        RegState {
            value: None,
            version: Version::default(),
        }
    }

    fn step(&self, s: &RegState, op: &RegOp) -> Option<RegState> {
        if !self.versions {
            return match op {
                RegOp::Write { value, .. } => Some(RegState {
                    value: Some(*value),
                    version: Version::default(),
                }),
                RegOp::Delete { .. } => Some(RegState {
                    value: None,
                    version: Version::default(),
                }),
                RegOp::ReadValue { value, .. } => (s.value == Some(*value)).then_some(s.clone()),
                RegOp::ReadNotFound => s.value.is_none().then_some(s.clone()),
            };
        }
        match op {
            RegOp::Write {
                value,
                version: Some(v),
            } => (*v > s.version).then_some(RegState {
                value: Some(*value),
                version: *v,
            }),
            // Unknown versions are resolved by `prepare` before checking; one
            // that is still unknown was never observed and has been dropped.
            RegOp::Write { version: None, .. } => None,
            RegOp::Delete { version: Some(v) } => (*v > s.version).then_some(RegState {
                value: None,
                version: *v,
            }),
            RegOp::Delete { version: None } => Some(RegState {
                value: None,
                version: s.version,
            }),
            RegOp::ReadValue { value, version } => {
                (s.value == Some(*value) && s.version == *version).then_some(s.clone())
            }
            RegOp::ReadNotFound => s.value.is_none().then_some(s.clone()),
        }
    }
}

/// Resolve unknown write versions from the reads that observed them and
/// drop never-returned reads and unobserved never-returned writes (they
/// constrain nothing). Returns the history to hand to [`super::check`].
pub fn prepare(history: &[Timed<RegOp>]) -> Vec<Timed<RegOp>> {
    let mut observed: std::collections::HashMap<ValueId, Version> =
        std::collections::HashMap::new();
    for t in history {
        if let RegOp::ReadValue { value, version } = t.op {
            observed.entry(value).or_insert(version);
        }
    }
    let mut out = Vec::with_capacity(history.len());
    for t in history {
        match &t.op {
            RegOp::ReadValue { .. } | RegOp::ReadNotFound if t.ret.is_none() => {}
            RegOp::Write {
                value,
                version: None,
            } => {
                if let Some(v) = observed.get(value) {
                    out.push(Timed {
                        op: RegOp::Write {
                            value: *value,
                            version: Some(*v),
                        },
                        call: t.call,
                        ret: t.ret,
                    });
                }
            }
            _ => out.push(t.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{LinError, check};
    use super::*;

    fn v(seq: u64, writer: u32) -> Version {
        Version { seq, writer }
    }
    fn t(op: RegOp, call: u64, ret: Option<u64>) -> Timed<RegOp> {
        Timed { op, call, ret }
    }
    fn run(h: &[Timed<RegOp>]) -> Result<(), LinError> {
        check(&RegisterSpec::STRICT, &prepare(h))
    }

    #[test]
    fn write_then_read_is_linearizable() {
        let h = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(1, 0)),
                },
                1,
                Some(2),
            ),
            t(
                RegOp::ReadValue {
                    value: 1,
                    version: v(1, 0),
                },
                3,
                Some(4),
            ),
            t(
                RegOp::Delete {
                    version: Some(v(2, 1)),
                },
                5,
                Some(6),
            ),
            t(RegOp::ReadNotFound, 7, Some(8)),
        ];
        assert_eq!(run(&h), Ok(()));
    }

    /// The property RR exists for (DESIGN §1 freshness): a read that starts
    /// after a write completed must not return the value before it.
    #[test]
    fn stale_read_is_rejected() {
        let h = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(1, 0)),
                },
                1,
                Some(2),
            ),
            t(
                RegOp::Write {
                    value: 2,
                    version: Some(v(2, 0)),
                },
                3,
                Some(4),
            ),
            t(
                RegOp::ReadValue {
                    value: 1,
                    version: v(1, 0),
                },
                5,
                Some(6),
            ),
        ];
        assert!(matches!(
            run(&h),
            Err(LinError::NotLinearizable { stuck: 2, .. })
        ));
    }

    #[test]
    fn read_after_completed_write_cannot_be_not_found() {
        let h = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(1, 0)),
                },
                1,
                Some(2),
            ),
            t(RegOp::ReadNotFound, 3, Some(4)),
        ];
        assert!(run(&h).is_err());
    }

    #[test]
    fn concurrent_writes_and_reads_in_version_order() {
        // Two overlapping writes; reads during them see either, but once one
        // read saw the higher version a later read may not see the lower.
        let w1 = t(
            RegOp::Write {
                value: 1,
                version: Some(v(1, 0)),
            },
            1,
            Some(10),
        );
        let w2 = t(
            RegOp::Write {
                value: 2,
                version: Some(v(1, 1)),
            },
            2,
            Some(11),
        );
        let ok = [
            w1.clone(),
            w2.clone(),
            t(
                RegOp::ReadValue {
                    value: 1,
                    version: v(1, 0),
                },
                3,
                Some(4),
            ),
            t(
                RegOp::ReadValue {
                    value: 2,
                    version: v(1, 1),
                },
                5,
                Some(6),
            ),
        ];
        assert_eq!(run(&ok), Ok(()));
        let backwards = [
            w1,
            w2,
            t(
                RegOp::ReadValue {
                    value: 2,
                    version: v(1, 1),
                },
                3,
                Some(4),
            ),
            t(
                RegOp::ReadValue {
                    value: 1,
                    version: v(1, 0),
                },
                5,
                Some(6),
            ),
        ];
        assert!(run(&backwards).is_err());
    }

    #[test]
    fn version_must_match_the_write() {
        let h = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(3, 0)),
                },
                1,
                Some(2),
            ),
            t(
                RegOp::ReadValue {
                    value: 1,
                    version: v(4, 0),
                },
                3,
                Some(4),
            ),
        ];
        assert!(run(&h).is_err());
        // The values-only diagnostic accepts it: only the version is wrong.
        assert_eq!(check(&RegisterSpec::VALUES_ONLY, &prepare(&h)), Ok(()));
    }

    #[test]
    fn later_write_with_lower_version_is_rejected() {
        // The second write starts after the first completed but got a lower
        // timestamp: a reader after both would keep seeing the first value.
        let h = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(5, 0)),
                },
                1,
                Some(2),
            ),
            t(
                RegOp::Write {
                    value: 2,
                    version: Some(v(4, 1)),
                },
                3,
                Some(4),
            ),
        ];
        assert!(run(&h).is_err());
    }

    #[test]
    fn pending_write_seen_by_a_read_is_placed_and_unseen_one_dropped() {
        let h = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(1, 0)),
                },
                1,
                Some(2),
            ),
            t(
                RegOp::Write {
                    value: 2,
                    version: None,
                },
                3,
                None,
            ),
            t(
                RegOp::Write {
                    value: 3,
                    version: None,
                },
                4,
                None,
            ),
            t(
                RegOp::ReadValue {
                    value: 2,
                    version: v(2, 1),
                },
                5,
                Some(6),
            ),
            t(
                RegOp::ReadValue {
                    value: 2,
                    version: v(2, 1),
                },
                7,
                Some(8),
            ),
        ];
        assert_eq!(run(&h), Ok(()));
        // A read may not see the pending write's value before it was called.
        let h = [
            t(
                RegOp::ReadValue {
                    value: 2,
                    version: v(2, 1),
                },
                1,
                Some(2),
            ),
            t(
                RegOp::Write {
                    value: 2,
                    version: None,
                },
                3,
                None,
            ),
        ];
        assert!(run(&h).is_err());
    }

    #[test]
    fn value_never_written_is_rejected() {
        let h = [t(
            RegOp::ReadValue {
                value: 9,
                version: v(1, 0),
            },
            1,
            Some(2),
        )];
        assert!(run(&h).is_err());
    }

    #[test]
    fn pending_delete_is_optional() {
        let base = [
            t(
                RegOp::Write {
                    value: 1,
                    version: Some(v(1, 0)),
                },
                1,
                Some(2),
            ),
            t(RegOp::Delete { version: None }, 3, None),
        ];
        for read in [
            RegOp::ReadNotFound,
            RegOp::ReadValue {
                value: 1,
                version: v(1, 0),
            },
        ] {
            let mut h = base.to_vec();
            h.push(t(read, 4, Some(5)));
            assert_eq!(run(&h), Ok(()));
        }
    }
}
