//! The metadata service as the filesystem sees it (DESIGN §7, paper Table I).
//!
//! [`Teems`] is the narrow async interface the filesystem needs from TEEMS: linearizable
//! reads and writes of small values under 128-bit keys, deletes, and the share policy.
//! The network implementation lives with the metadata client and implements this trait;
//! [`MemTeems`] is an in-memory, trivially linearizable stand-in for unit tests and the
//! reference-model test, shared by several simulated clients.
//!
//! Not here: quorums, sessions, failover — those are the metadata client's and the
//! replicas' business. The filesystem only sees values, versions and typed errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
pub use metadata_client::wire::{
    Access, ErrorKind, Key, PolicyOp, ShareId, SharePolicy, TenantId, Version,
};

/// A metadata operation that did not succeed, one variant per [`ErrorKind`] plus the
/// transport-level failures a network client can report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata key not found")]
    NotFound,
    #[error("access denied by the share policy")]
    Denied,
    #[error("not the current writer of this key")]
    NotWriter,
    #[error("metadata service unavailable: {0}")]
    Unavailable(String),
    #[error("metadata request rejected: {0}")]
    BadRequest(String),
}

impl From<ErrorKind> for MetaError {
    fn from(kind: ErrorKind) -> MetaError {
        match kind {
            ErrorKind::NotFound => MetaError::NotFound,
            ErrorKind::Denied => MetaError::Denied,
            ErrorKind::NotWriter => MetaError::NotWriter,
            ErrorKind::Unavailable => MetaError::Unavailable("reported by the proxy".into()),
            ErrorKind::BadRequest(why) => MetaError::BadRequest(why),
        }
    }
}

/// Linearizable metadata operations on one tenant session (DESIGN §7).
///
/// Every call must reflect all writes that completed before it started, from any client:
/// the filesystem's freshness guarantee (DESIGN §10) rests on this.
#[async_trait]
pub trait Teems: Send + Sync + 'static {
    /// The current value and its version, or [`MetaError::NotFound`] (also after a delete).
    async fn read(&self, share: ShareId, key: Key) -> Result<(Vec<u8>, Version), MetaError>;
    /// Replaces the value; returns the new version, higher than every earlier one.
    async fn write(&self, share: ShareId, key: Key, value: Vec<u8>) -> Result<Version, MetaError>;
    /// Removes the key (a tombstone in TEEMS); later reads return `NotFound`.
    async fn delete(&self, share: ShareId, key: Key) -> Result<(), MetaError>;
    /// Orders a policy operation through the replicated state machine; returns the epoch.
    async fn change_policy(&self, share: ShareId, op: PolicyOp) -> Result<u64, MetaError>;
    /// The share's policy as the state machine currently holds it.
    async fn read_policy(&self, share: ShareId) -> Result<SharePolicy, MetaError>;
    /// Reads answered from a read lease without a round trip, so far (0 where there are
    /// no leases).
    fn lease_hits(&self) -> u64 {
        0
    }
    /// Until when a read lease of this client keeps `version` of `key` the current
    /// value (no other client's write of it can complete before then); `None` when no
    /// lease does, or leases are off.
    fn leased_until(&self, _share: ShareId, _key: Key, _version: Version) -> Option<Instant> {
        None
    }
    /// Whether reads ask for read leases and answers are kept under them, so a read
    /// made early is answered again without a round trip (the stat-ahead uses this).
    fn leases_reads(&self) -> bool {
        false
    }
}

#[derive(Default)]
struct MemState {
    /// Highest sequence number handed out; versions are `(seq, writer)` with a global seq,
    /// so every write is strictly newer than every earlier one, as in RR-ABD.
    seq: u64,
    values: HashMap<(ShareId, Key), (Vec<u8>, Version)>,
    policies: HashMap<ShareId, SharePolicy>,
    /// When set, every call fails with `Unavailable` (to test error propagation).
    unavailable: bool,
}

/// In-memory TEEMS for tests: one shared state, many client handles ([`MemTeems::client`]).
/// A single mutex makes every operation atomic, hence linearizable.
#[derive(Clone)]
pub struct MemTeems {
    state: Arc<Mutex<MemState>>,
    writer: u32,
    tenant: TenantId,
    /// Reported by `leased_until` for the current version of a key (tests of what
    /// callers do with a lease; nothing here holds other clients' writes back).
    lease: Option<std::time::Duration>,
    /// Yield to the scheduler before every read, write and delete, as a call over the
    /// network would: concurrent callers then interleave at each metadata operation.
    yields: bool,
}

impl Default for MemTeems {
    fn default() -> Self {
        Self::new()
    }
}

impl MemTeems {
    pub fn new() -> MemTeems {
        MemTeems {
            state: Arc::new(Mutex::new(MemState::default())),
            writer: 0,
            tenant: TenantId("tenant-0".into()),
            lease: None,
            yields: false,
        }
    }

    /// This handle yields before every read, write and delete (tests of concurrent
    /// callers: without it each call completes without ever letting another task run).
    pub fn yielding(mut self) -> MemTeems {
        self.yields = true;
        self
    }

    async fn maybe_yield(&self) {
        if self.yields {
            tokio::task::yield_now().await;
        }
    }

    /// This handle reports every current version as leased for `lease` from now.
    pub fn reporting_leases(mut self, lease: std::time::Duration) -> MemTeems {
        self.lease = Some(lease);
        self
    }

    /// Another client of the same service: shares all state, writes with its own writer id.
    pub fn client(&self, writer: u32) -> MemTeems {
        MemTeems {
            state: Arc::clone(&self.state),
            writer,
            tenant: TenantId(format!("tenant-{writer}")),
            lease: None,
            yields: self.yields,
        }
    }

    /// Makes every later call fail with `Unavailable` (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// Number of live keys (for tests that check nothing leaks).
    pub fn live_keys(&self) -> usize {
        self.lock().values.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A panic while holding the lock can only come from a bug in this file; the state
        // stays consistent because every operation mutates it in one step.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check(state: &MemState) -> Result<(), MetaError> {
        if state.unavailable {
            return Err(MetaError::Unavailable("MemTeems set unavailable".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Teems for MemTeems {
    async fn read(&self, share: ShareId, key: Key) -> Result<(Vec<u8>, Version), MetaError> {
        self.maybe_yield().await;
        let state = self.lock();
        Self::check(&state)?;
        state
            .values
            .get(&(share, key))
            .cloned()
            .ok_or(MetaError::NotFound)
    }

    async fn write(&self, share: ShareId, key: Key, value: Vec<u8>) -> Result<Version, MetaError> {
        self.maybe_yield().await;
        let mut state = self.lock();
        Self::check(&state)?;
        state.seq += 1;
        let version = Version {
            seq: state.seq,
            writer: self.writer,
        };
        state.values.insert((share, key), (value, version));
        Ok(version)
    }

    async fn delete(&self, share: ShareId, key: Key) -> Result<(), MetaError> {
        self.maybe_yield().await;
        let mut state = self.lock();
        Self::check(&state)?;
        state.seq += 1;
        state.values.remove(&(share, key));
        Ok(())
    }

    async fn change_policy(&self, share: ShareId, op: PolicyOp) -> Result<u64, MetaError> {
        let mut state = self.lock();
        Self::check(&state)?;
        let tenant = self.tenant.clone();
        let exists = state.policies.contains_key(&share);
        let policy = state.policies.entry(share).or_default();
        let is_owner = policy.owner.as_ref() == Some(&tenant);
        match op {
            PolicyOp::CreateShare => {
                if exists {
                    return Err(MetaError::BadRequest("share exists".into()));
                }
                policy.owner = Some(tenant.clone());
                policy.acl.push((tenant, Access::ReadWrite));
            }
            PolicyOp::Grant { tenant: to, access } => {
                if !is_owner {
                    return Err(MetaError::Denied);
                }
                policy.acl.retain(|(t, _)| *t != to);
                policy.acl.push((to, access));
            }
            PolicyOp::Revoke { tenant: from } => {
                if !is_owner {
                    return Err(MetaError::Denied);
                }
                policy.acl.retain(|(t, _)| *t != from);
            }
            PolicyOp::TransferOwner { to } => {
                if !is_owner {
                    return Err(MetaError::Denied);
                }
                policy.owner = Some(to);
            }
            // Per-file writers are not modelled here; accepting the op keeps callers simple.
            PolicyOp::AcquireWriter { .. } => {}
        }
        policy.epoch += 1;
        Ok(policy.epoch)
    }

    async fn read_policy(&self, share: ShareId) -> Result<SharePolicy, MetaError> {
        let state = self.lock();
        Self::check(&state)?;
        state
            .policies
            .get(&share)
            .cloned()
            .ok_or(MetaError::NotFound)
    }

    fn leases_reads(&self) -> bool {
        self.lease.is_some()
    }

    fn leased_until(&self, share: ShareId, key: Key, version: Version) -> Option<Instant> {
        let lease = self.lease?;
        let current = self.lock().values.get(&(share, key)).map(|(_, v)| *v);
        (current == Some(version)).then(|| Instant::now() + lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mem_teems_versions_grow_and_clients_share_state() {
        let a = MemTeems::new();
        let b = a.client(7);
        let share = ShareId([1; 16]);
        let key = Key([2; 16]);
        assert_eq!(a.read(share, key).await, Err(MetaError::NotFound));
        let v1 = a.write(share, key, b"one".to_vec()).await.expect("write");
        let v2 = b.write(share, key, b"two".to_vec()).await.expect("write");
        assert!(v2 > v1);
        assert_eq!(v2.writer, 7);
        assert_eq!(a.read(share, key).await, Ok((b"two".to_vec(), v2)));
        a.delete(share, key).await.expect("delete");
        assert_eq!(b.read(share, key).await, Err(MetaError::NotFound));
        a.set_unavailable(true);
        assert!(matches!(
            b.read(share, key).await,
            Err(MetaError::Unavailable(_))
        ));
    }

    #[test]
    fn error_kinds_map_one_to_one() {
        assert_eq!(MetaError::from(ErrorKind::NotWriter), MetaError::NotWriter);
        assert_eq!(MetaError::from(ErrorKind::Denied), MetaError::Denied);
        assert_eq!(MetaError::from(ErrorKind::NotFound), MetaError::NotFound);
    }
}
