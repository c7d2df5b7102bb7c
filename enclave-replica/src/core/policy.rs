//! The policy state machine replicated by RR-Paxos (DESIGN §7, §11; PROTOCOLS.md
//! POL-1..POL-6). Pure and deterministic: the same entries in the same order
//! give the same state on every replica.

use std::collections::{BTreeMap, VecDeque};

use metadata_client::wire::{Access, ErrorKind, Key, PolicyOp, ShareId, SharePolicy, TenantId};
use serde::{Deserialize, Serialize};

use super::Slot;

/// How many applied idempotency tokens the state machine remembers (POL-6).
/// A client retries within seconds; 65 536 changes is far beyond that window
/// and bounds the snapshot size.
pub const TOKENS_REMEMBERED: usize = 65_536;

/// Per-file single-writer state (POL-4). Absent means: the writer is the
/// creator recorded with the register value, epoch 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub writer: TenantId,
    pub epoch: u64,
}

/// One share: its policy (epoch, owner, ACL) and the files that have an
/// explicit writer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareState {
    pub policy: SharePolicy,
    pub files: BTreeMap<Key, FileState>,
}

/// Result of a policy change, remembered per idempotency token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOutcome {
    /// Applied; `epoch` is the share's new epoch (or the file's, for
    /// `AcquireWriter`).
    Changed { epoch: u64 },
    /// Evaluated and refused; the state did not change.
    Refused(ErrorKind),
}

/// What a reader needs to know about one share (and optionally one file of
/// it): compared for unanimity in the optimized read (PAXOS-R2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub share: Option<SharePolicy>,
    pub file: Option<FileState>,
}

impl PolicyView {
    pub fn share_epoch(&self) -> u64 {
        self.share.as_ref().map_or(0, |p| p.epoch)
    }

    pub fn file_epoch(&self) -> u64 {
        self.file.as_ref().map_or(0, |f| f.epoch)
    }

    pub fn can_read(&self, tenant: &TenantId) -> bool {
        match &self.share {
            Some(p) => p.owner.as_ref() == Some(tenant) || p.acl.iter().any(|(t, _)| t == tenant),
            None => false,
        }
    }

    pub fn can_write(&self, tenant: &TenantId) -> bool {
        match &self.share {
            Some(p) => {
                p.owner.as_ref() == Some(tenant)
                    || p.acl
                        .iter()
                        .any(|(t, a)| t == tenant && *a == Access::ReadWrite)
            }
            None => false,
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyEntry {
    /// Fills a slot a new leader found empty (PAXOS-L3).
    Noop,
    /// `change_policy(share, op)` by `requester`; `token` is the client's
    /// idempotency token, so a retried change is applied once (POL-6).
    Change {
        share: ShareId,
        requester: TenantId,
        token: [u8; 16],
        op: PolicyOp,
    },
    /// An ordered read (the optimized read's fallback, PAXOS-R3). Changes
    /// nothing; its slot fixes where the read is linearized.
    Read { share: ShareId, key: Option<Key> },
}

impl PolicyEntry {
    /// Whether executing this entry may change `share`'s view. Only such
    /// entries count as "pending accepts" against that share (PAXOS-R1, POL-7).
    pub fn changes_share(&self, share: &ShareId) -> bool {
        matches!(self, PolicyEntry::Change { share: s, .. } if s == share)
    }
}

/// What executing an entry produced, handed to the proxy that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryOutcome {
    Noop,
    Change(ChangeOutcome),
    Read(PolicyView),
}

/// The replicated policy state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    pub shares: BTreeMap<ShareId, ShareState>,
    /// Outcome of every remembered change, by (requester, token).
    applied: BTreeMap<(TenantId, [u8; 16]), ChangeOutcome>,
    /// Insertion order of `applied`, oldest first, for bounded eviction.
    applied_order: VecDeque<(TenantId, [u8; 16])>,
}

impl PolicyState {
    /// The view of `share` (and `key`, if given).
    pub fn view(&self, share: &ShareId, key: Option<&Key>) -> PolicyView {
        match self.shares.get(share) {
            Some(s) => PolicyView {
                share: Some(s.policy.clone()),
                file: key.and_then(|k| s.files.get(k).cloned()),
            },
            None => PolicyView::default(),
        }
    }

    /// Execute one log entry (PAXOS-E1). `_slot` is only for symmetry with the
    /// log; the state machine does not depend on slot numbers.
    pub fn execute(&mut self, _slot: Slot, entry: &PolicyEntry) -> EntryOutcome {
        match entry {
            PolicyEntry::Noop => EntryOutcome::Noop,
            PolicyEntry::Read { share, key } => EntryOutcome::Read(self.view(share, key.as_ref())),
            PolicyEntry::Change {
                share,
                requester,
                token,
                op,
            } => {
                let id = (requester.clone(), *token);
                if let Some(done) = self.applied.get(&id) {
                    // POL-6: a retry of an applied change returns the first outcome.
                    return EntryOutcome::Change(done.clone());
                }
                let outcome = self.apply_change(share, requester, op);
                self.applied.insert(id.clone(), outcome.clone());
                self.applied_order.push_back(id);
                while self.applied_order.len() > TOKENS_REMEMBERED {
                    if let Some(old) = self.applied_order.pop_front() {
                        self.applied.remove(&old);
                    }
                }
                EntryOutcome::Change(outcome)
            }
        }
    }

    /// Outcome recorded for a token, if the change was already applied.
    pub fn applied_outcome(
        &self,
        requester: &TenantId,
        token: &[u8; 16],
    ) -> Option<&ChangeOutcome> {
        self.applied.get(&(requester.clone(), *token))
    }

    fn apply_change(
        &mut self,
        share: &ShareId,
        requester: &TenantId,
        op: &PolicyOp,
    ) -> ChangeOutcome {
        use ChangeOutcome::{Changed, Refused};
        if let PolicyOp::CreateShare = op {
            // POL-1
            if self.shares.contains_key(share) {
                return Refused(ErrorKind::BadRequest("share already exists".into()));
            }
            let state = ShareState {
                policy: SharePolicy {
                    epoch: 1,
                    owner: Some(requester.clone()),
                    acl: Vec::new(),
                },
                files: BTreeMap::new(),
            };
            self.shares.insert(*share, state);
            return Changed { epoch: 1 };
        }
        let Some(state) = self.shares.get_mut(share) else {
            return Refused(ErrorKind::NotFound);
        };
        let is_owner = state.policy.owner.as_ref() == Some(requester);
        match op {
            PolicyOp::CreateShare => Refused(ErrorKind::BadRequest("share already exists".into())),
            PolicyOp::Grant { tenant, access } => {
                // POL-2: owner only; replaces any earlier grant to `tenant`.
                if !is_owner {
                    return Refused(ErrorKind::Denied);
                }
                state.policy.acl.retain(|(t, _)| t != tenant);
                state.policy.acl.push((tenant.clone(), *access));
                state.policy.acl.sort_by(|a, b| a.0.cmp(&b.0));
                state.policy.epoch = state.policy.epoch.saturating_add(1);
                Changed {
                    epoch: state.policy.epoch,
                }
            }
            PolicyOp::Revoke { tenant } => {
                // POL-3
                if !is_owner {
                    return Refused(ErrorKind::Denied);
                }
                state.policy.acl.retain(|(t, _)| t != tenant);
                state.policy.epoch = state.policy.epoch.saturating_add(1);
                Changed {
                    epoch: state.policy.epoch,
                }
            }
            PolicyOp::AcquireWriter { key } => {
                // POL-4: any tenant with write access; bumps the file's epoch.
                let view = PolicyView {
                    share: Some(state.policy.clone()),
                    file: None,
                };
                if !view.can_write(requester) {
                    return Refused(ErrorKind::Denied);
                }
                let file = state.files.entry(*key).or_insert(FileState {
                    writer: requester.clone(),
                    epoch: 0,
                });
                file.writer = requester.clone();
                file.epoch = file.epoch.saturating_add(1);
                Changed { epoch: file.epoch }
            }
            PolicyOp::TransferOwner { to } => {
                // POL-5
                if !is_owner {
                    return Refused(ErrorKind::Denied);
                }
                state.policy.owner = Some(to.clone());
                state.policy.epoch = state.policy.epoch.saturating_add(1);
                Changed {
                    epoch: state.policy.epoch,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TenantId {
        TenantId(name.into())
    }

    fn change(share: ShareId, who: &str, token: u8, op: PolicyOp) -> PolicyEntry {
        PolicyEntry::Change {
            share,
            requester: t(who),
            token: [token; 16],
            op,
        }
    }

    #[test]
    fn pol_1_to_5_owner_only_ops_and_epochs() {
        let s = ShareId([1; 16]);
        let mut st = PolicyState::default();
        assert_eq!(
            st.execute(1, &change(s, "alice", 1, PolicyOp::CreateShare)),
            EntryOutcome::Change(ChangeOutcome::Changed { epoch: 1 })
        );
        // POL-2: a non-owner cannot grant.
        let grant = PolicyOp::Grant {
            tenant: t("bob"),
            access: Access::ReadWrite,
        };
        assert_eq!(
            st.execute(2, &change(s, "bob", 2, grant.clone())),
            EntryOutcome::Change(ChangeOutcome::Refused(ErrorKind::Denied))
        );
        assert_eq!(
            st.execute(3, &change(s, "alice", 3, grant)),
            EntryOutcome::Change(ChangeOutcome::Changed { epoch: 2 })
        );
        // POL-4: bob may acquire the writer role; file epoch bumps, share epoch does not.
        let k = Key([9; 16]);
        assert_eq!(
            st.execute(4, &change(s, "bob", 4, PolicyOp::AcquireWriter { key: k })),
            EntryOutcome::Change(ChangeOutcome::Changed { epoch: 1 })
        );
        let v = st.view(&s, Some(&k));
        assert_eq!((v.share_epoch(), v.file_epoch()), (2, 1));
        assert_eq!(v.file.map(|f| f.writer), Some(t("bob")));
        // POL-3 and POL-5.
        assert_eq!(
            st.execute(
                5,
                &change(s, "alice", 5, PolicyOp::Revoke { tenant: t("bob") })
            ),
            EntryOutcome::Change(ChangeOutcome::Changed { epoch: 3 })
        );
        assert!(!st.view(&s, None).can_write(&t("bob")));
        assert_eq!(
            st.execute(6, &change(s, "bob", 6, PolicyOp::AcquireWriter { key: k })),
            EntryOutcome::Change(ChangeOutcome::Refused(ErrorKind::Denied))
        );
        assert_eq!(
            st.execute(
                7,
                &change(s, "alice", 7, PolicyOp::TransferOwner { to: t("carol") })
            ),
            EntryOutcome::Change(ChangeOutcome::Changed { epoch: 4 })
        );
        assert!(st.view(&s, None).can_write(&t("carol")));
        assert!(!st.view(&s, None).can_read(&t("alice")));
    }

    #[test]
    fn pol_6_retry_with_same_token_applies_once() {
        let s = ShareId([1; 16]);
        let mut st = PolicyState::default();
        st.execute(1, &change(s, "alice", 1, PolicyOp::CreateShare));
        let grant = change(
            s,
            "alice",
            2,
            PolicyOp::Grant {
                tenant: t("bob"),
                access: Access::Read,
            },
        );
        let first = st.execute(2, &grant);
        let second = st.execute(3, &grant);
        assert_eq!(first, second);
        assert_eq!(st.view(&s, None).share_epoch(), 2);
        // Same token from another tenant is a different change.
        let other = change(s, "mallory", 2, PolicyOp::Revoke { tenant: t("bob") });
        assert_eq!(
            st.execute(4, &other),
            EntryOutcome::Change(ChangeOutcome::Refused(ErrorKind::Denied))
        );
    }

    #[test]
    fn missing_share_is_not_found_and_grants_nothing() {
        let mut st = PolicyState::default();
        let s = ShareId([2; 16]);
        assert_eq!(
            st.execute(
                1,
                &change(s, "alice", 1, PolicyOp::Revoke { tenant: t("x") })
            ),
            EntryOutcome::Change(ChangeOutcome::Refused(ErrorKind::NotFound))
        );
        assert!(!st.view(&s, None).can_read(&t("alice")));
    }
}
