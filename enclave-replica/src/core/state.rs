//! What a replica persists: [`Record`]s (one durable change each) and the
//! [`DurableState`] they build up. The runtime seals records into its
//! write-ahead log; on start it hands back whatever state it recovered, which
//! may be older than what the replica last persisted (rollback) or empty.
//!
//! Invariant: a [`super::Node`] mutates its durable state only through
//! [`DurableState::apply`], and every applied record is also emitted in a
//! [`super::Command::Persist`], so "what the node acts on" and "what the runtime
//! seals" are the same sequence.

use std::collections::BTreeMap;

use metadata_client::wire::{Key, ShareId, TenantId, Version};
use serde::{Deserialize, Serialize};

use super::policy::{PolicyEntry, PolicyState};
use super::{Ballot, Slot};

/// The value stored in one register (DESIGN §7): the share the key belongs to,
/// the tenant that created the file (its default writer), and the bytes, or
/// `None` for a tombstone written by `delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    pub share: ShareId,
    pub creator: TenantId,
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// One register replica's state for one key (RR §IV-B): the timestamp, the
/// stable bit, and the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterEntry {
    pub version: Version,
    /// Set by STABILIZE naming exactly `version` (ABD-S1): the value has been
    /// stored at a write quorum, so a reader may return it from one reply.
    pub stable: bool,
    pub value: StoredValue,
}

/// One durable change. Records are idempotent and monotone: applying one that
/// is already reflected (an older timestamp, a lower ballot, an executed slot)
/// changes nothing, so replaying a log twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Store `entry` for `key` if its version is higher than the one held (ABD-W2).
    RegisterPut { key: Key, entry: RegisterEntry },
    /// Mark `key` stable if it holds exactly `version` (ABD-S1).
    RegisterStable { key: Key, version: Version },
    /// Raise the promised ballot (PAXOS-A1).
    Promise { ballot: Ballot },
    /// Accept `entry` for `slot` at `ballot` (PAXOS-A2); also raises the promise.
    Accept {
        slot: Slot,
        ballot: Ballot,
        entry: PolicyEntry,
    },
    /// Execute the next slot against the policy state machine (PAXOS-E1).
    /// Ignored unless `slot == executed + 1`.
    Execute { slot: Slot, entry: PolicyEntry },
    /// Replace the policy state machine by a newer executed prefix (PAXOS-C2, REC-4).
    InstallSnapshot { executed: Slot, state: PolicyState },
}

/// Everything a replica has persisted. `Default` is the initial state (also
/// what a replica whose sealed store was lost restarts with).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// Register replicas, one per key.
    pub registers: BTreeMap<Key, RegisterEntry>,
    /// Highest ballot promised (PAXOS-A1).
    pub promised: Ballot,
    /// Accepted, not yet executed entries: only slots above `executed` are kept.
    pub accepted: BTreeMap<Slot, (Ballot, PolicyEntry)>,
    /// Last executed slot (0 = nothing executed).
    pub executed: Slot,
    /// The policy state machine after executing slots `1..=executed`.
    pub policy: PolicyState,
}

/// Bytes that are not a valid encoding of a core type.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {source}")]
pub struct CoreDecodeError {
    pub what: &'static str,
    #[source]
    pub source: postcard::Error,
}

impl DurableState {
    /// Apply one record. Returns whether anything changed.
    pub fn apply(&mut self, record: &Record) -> bool {
        match record {
            Record::RegisterPut { key, entry } => match self.registers.get_mut(key) {
                Some(held) if held.version >= entry.version => {
                    // Same version arriving again may carry a stable bit we lack.
                    if held.version == entry.version && entry.stable && !held.stable {
                        held.stable = true;
                        true
                    } else {
                        false
                    }
                }
                Some(held) => {
                    *held = entry.clone();
                    true
                }
                None => {
                    self.registers.insert(*key, entry.clone());
                    true
                }
            },
            Record::RegisterStable { key, version } => match self.registers.get_mut(key) {
                Some(held) if held.version == *version && !held.stable => {
                    held.stable = true;
                    true
                }
                _ => false,
            },
            Record::Promise { ballot } => {
                if *ballot > self.promised {
                    self.promised = *ballot;
                    true
                } else {
                    false
                }
            }
            Record::Accept {
                slot,
                ballot,
                entry,
            } => {
                let mut changed = false;
                if *ballot > self.promised {
                    self.promised = *ballot;
                    changed = true;
                }
                if *slot > self.executed {
                    let newer = match self.accepted.get(slot) {
                        Some((held, _)) => ballot > held,
                        None => true,
                    };
                    if newer {
                        self.accepted.insert(*slot, (*ballot, entry.clone()));
                        changed = true;
                    }
                }
                changed
            }
            Record::Execute { slot, entry } => {
                // checked: a restored state may claim any executed slot.
                if self.executed.checked_add(1) != Some(*slot) {
                    return false;
                }
                self.policy.execute(*slot, entry);
                self.executed = *slot;
                self.prune_accepted();
                true
            }
            Record::InstallSnapshot { executed, state } => {
                if *executed <= self.executed {
                    return false;
                }
                self.policy = state.clone();
                self.executed = *executed;
                self.prune_accepted();
                true
            }
        }
    }

    fn prune_accepted(&mut self) {
        match self.executed.checked_add(1) {
            Some(first_open) => self.accepted = self.accepted.split_off(&first_open),
            None => self.accepted.clear(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode sealed bytes; never panics on bad input.
    pub fn decode(bytes: &[u8]) -> Result<DurableState, CoreDecodeError> {
        postcard::from_bytes(bytes).map_err(|source| CoreDecodeError {
            what: "durable state",
            source,
        })
    }
}

impl Record {
    /// Whether anything may leave the replica before this record is synced. Only a
    /// stable bit may wait: it is a hint that the timestamp it names already sits at a
    /// write quorum (ABD-S1), and that stays true whether or not the bit survives a
    /// crash. A replica that loses it restarts suspicious (REC-0) and readers of the
    /// key merely take the longer ABD-R3 path until the next STABILIZE.
    pub fn needs_sync(&self) -> bool {
        !matches!(self, Record::RegisterStable { .. })
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode one sealed log record; never panics on bad input.
    pub fn decode(bytes: &[u8]) -> Result<Record, CoreDecodeError> {
        postcard::from_bytes(bytes).map_err(|source| CoreDecodeError {
            what: "log record",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register value's bytes are encoded as one slice (`serde_bytes`); postcard writes
    /// that exactly as the sequence of `u8` it was before, so sealed logs and snapshots
    /// written by earlier builds read back unchanged. `Old` is the encoding before.
    #[test]
    fn stored_values_encode_as_before() {
        #[derive(Serialize, Deserialize)]
        struct Old {
            share: ShareId,
            creator: TenantId,
            data: Option<Vec<u8>>,
        }
        for data in [
            None,
            Some(Vec::new()),
            Some(vec![7u8; 200]),
            Some((0..=255u8).cycle().take(40_000).collect()),
        ] {
            let (share, creator) = (ShareId([4; 16]), TenantId("alice".into()));
            let new = StoredValue {
                share,
                creator: creator.clone(),
                data: data.clone(),
            };
            let old = Old {
                share,
                creator,
                data,
            };
            let old_bytes = postcard::to_allocvec(&old).expect("encodes");
            assert_eq!(postcard::to_allocvec(&new).expect("encodes"), old_bytes);
            assert_eq!(
                postcard::from_bytes::<StoredValue>(&old_bytes).expect("decodes"),
                new
            );
        }
    }
}
