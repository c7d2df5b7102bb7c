//! Sequential spec of one share's policy: the replicas' own policy state
//! machine ([`PolicyState`], DESIGN §7, PROTOCOLS POL-1..POL-6) run on one
//! copy. Checking the replicated service against the very machine each
//! replica executes isolates replication bugs (a lost, duplicated or
//! reordered change, a stale policy read after rollback) from questions of
//! policy semantics, which the state machine's own unit tests cover.
//!
//! Each change carries the client's idempotency token, as on the wire, so a
//! retried change is applied at most once here exactly as the replicas must.

use std::hash::{Hash, Hasher};

use enclave_replica::core::policy::{ChangeOutcome, EntryOutcome, PolicyEntry, PolicyState};
use metadata_client::wire::{ErrorKind, PolicyOp, Response, ShareId, TenantId};

use super::SequentialSpec;

#[derive(Clone, Debug)]
pub enum PolicyHistOp {
    /// `change_policy`; `result` is `None` if it never returned.
    Change {
        requester: TenantId,
        token: [u8; 16],
        op: PolicyOp,
        result: Option<Response>,
    },
    /// `read_policy` that returned `result`.
    Read { result: Response },
}

/// The state machine plus its encoding, which gives the memoization table a
/// cheap, exact `Hash`/`Eq` without asking the core to derive `Hash`.
#[derive(Clone, Debug)]
pub struct SpecState {
    pub state: PolicyState,
    encoded: Vec<u8>,
}

impl SpecState {
    fn new(state: PolicyState) -> Self {
        let encoded = postcard_bytes(&state);
        SpecState { state, encoded }
    }
}

fn postcard_bytes(state: &PolicyState) -> Vec<u8> {
    // `DurableState::encode` is the public encoder of the core's types.
    let durable = enclave_replica::core::DurableState {
        policy: state.clone(),
        ..Default::default()
    };
    durable.encode()
}

impl PartialEq for SpecState {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}
impl Eq for SpecState {}
impl Hash for SpecState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.encoded.hash(h);
    }
}

pub struct PolicySpec {
    pub share: ShareId,
}

impl SequentialSpec for PolicySpec {
    type State = SpecState;
    type Op = PolicyHistOp;

    fn init(&self) -> SpecState {
        SpecState::new(PolicyState::default())
    }

    fn step(&self, s: &SpecState, op: &PolicyHistOp) -> Option<SpecState> {
        match op {
            PolicyHistOp::Change {
                requester,
                token,
                op,
                result,
            } => {
                let mut next = s.state.clone();
                let entry = PolicyEntry::Change {
                    share: self.share,
                    requester: requester.clone(),
                    token: *token,
                    op: op.clone(),
                };
                let outcome = next.execute(0, &entry);
                let matches = match (result, outcome) {
                    (None, _) => true,
                    (
                        Some(Response::PolicyChanged { epoch }),
                        EntryOutcome::Change(ChangeOutcome::Changed { epoch: e }),
                    ) => *epoch == e,
                    (
                        Some(Response::Error(kind)),
                        EntryOutcome::Change(ChangeOutcome::Refused(k)),
                    ) => *kind == k,
                    _ => false,
                };
                matches.then(|| SpecState::new(next))
            }
            PolicyHistOp::Read { result } => {
                let view = s.state.view(&self.share, None);
                let ok = match (result, view.share) {
                    (Response::Policy { policy }, Some(p)) => *policy == p,
                    (Response::Error(ErrorKind::NotFound), None) => true,
                    _ => false,
                };
                ok.then(|| s.clone())
            }
        }
    }
}

/// Is this response one the checker can place (as opposed to an
/// `Unavailable` or an access refusal, which say nothing about the order)?
pub fn read_is_informative(resp: &Response) -> bool {
    matches!(
        resp,
        Response::Policy { .. } | Response::Error(ErrorKind::NotFound)
    )
}

#[cfg(test)]
mod tests {
    use metadata_client::wire::{Access, SharePolicy};

    use super::super::{Timed, check};
    use super::*;

    const S: ShareId = ShareId([1; 16]);

    fn t(name: &str) -> TenantId {
        TenantId(name.into())
    }
    fn change(who: &str, token: u8, op: PolicyOp, result: Option<Response>) -> PolicyHistOp {
        PolicyHistOp::Change {
            requester: t(who),
            token: [token; 16],
            op,
            result,
        }
    }
    fn policy(epoch: u64, acl: Vec<(TenantId, Access)>) -> Response {
        Response::Policy {
            policy: SharePolicy {
                epoch,
                owner: Some(t("a")),
                acl,
            },
        }
    }
    fn at(op: PolicyHistOp, call: u64, ret: Option<u64>) -> Timed<PolicyHistOp> {
        Timed { op, call, ret }
    }

    #[test]
    fn sequential_policy_history_is_accepted_and_stale_policy_read_rejected() {
        let grant = PolicyOp::Grant {
            tenant: t("b"),
            access: Access::Read,
        };
        let base = vec![
            at(
                change(
                    "a",
                    1,
                    PolicyOp::CreateShare,
                    Some(Response::PolicyChanged { epoch: 1 }),
                ),
                1,
                Some(2),
            ),
            at(
                change("a", 2, grant, Some(Response::PolicyChanged { epoch: 2 })),
                3,
                Some(4),
            ),
        ];
        let mut fresh = base.clone();
        fresh.push(at(
            PolicyHistOp::Read {
                result: policy(2, vec![(t("b"), Access::Read)]),
            },
            5,
            Some(6),
        ));
        assert_eq!(check(&PolicySpec { share: S }, &fresh), Ok(()));
        // After the grant completed, reading the epoch-1 policy is stale.
        let mut stale = base;
        stale.push(at(
            PolicyHistOp::Read {
                result: policy(1, vec![]),
            },
            5,
            Some(6),
        ));
        assert!(check(&PolicySpec { share: S }, &stale).is_err());
    }

    #[test]
    fn retried_change_is_applied_once_and_double_application_rejected() {
        let revoke = PolicyOp::Revoke { tenant: t("b") };
        let h = vec![
            at(
                change(
                    "a",
                    1,
                    PolicyOp::CreateShare,
                    Some(Response::PolicyChanged { epoch: 1 }),
                ),
                1,
                Some(2),
            ),
            // The same logical change seen twice (two records, one token).
            at(change("a", 7, revoke.clone(), None), 3, None),
            at(
                change(
                    "a",
                    7,
                    revoke.clone(),
                    Some(Response::PolicyChanged { epoch: 2 }),
                ),
                4,
                Some(5),
            ),
            at(
                PolicyHistOp::Read {
                    result: policy(2, vec![]),
                },
                6,
                Some(7),
            ),
        ];
        assert_eq!(check(&PolicySpec { share: S }, &h), Ok(()));
        // Epoch 3 after one revoke means the change ran twice.
        let mut twice = h.clone();
        twice[3] = at(
            PolicyHistOp::Read {
                result: policy(3, vec![]),
            },
            6,
            Some(7),
        );
        assert!(check(&PolicySpec { share: S }, &twice).is_err());
    }

    #[test]
    fn wrong_epoch_or_outcome_is_rejected() {
        let h = vec![at(
            change(
                "a",
                1,
                PolicyOp::CreateShare,
                Some(Response::PolicyChanged { epoch: 2 }),
            ),
            1,
            Some(2),
        )];
        assert!(check(&PolicySpec { share: S }, &h).is_err());
        let h = vec![at(
            change(
                "a",
                1,
                PolicyOp::CreateShare,
                Some(Response::Error(ErrorKind::Denied)),
            ),
            1,
            Some(2),
        )];
        assert!(check(&PolicySpec { share: S }, &h).is_err());
    }
}
