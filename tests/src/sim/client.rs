//! Simulated tenants' clients: what they ask for, and how they retry.
//!
//! A client has at most one logical operation outstanding. It sends each
//! attempt to one proxy replica; on a timeout or an `Unavailable` answer it
//! moves to another proxy and tries again. A register write or delete gets a
//! new history record (and a new value) per attempt, because the attempt
//! that timed out may still take effect under its own timestamp; a policy
//! change keeps one record and one idempotency token across attempts,
//! because the replicas are expected to recognise the retry and carry the
//! change out at most once.

use std::collections::BTreeMap;

use metadata_client::lease::{LeaseCache, ReadTicket, WriteTicket};
use metadata_client::wire::{Access, Key, PolicyOp, Request, ShareId, TenantId};
use rand::Rng;

/// The share every client works in, created during set-up.
pub const SHARE: ShareId = ShareId([0x5a; 16]);

pub fn tenant(i: usize) -> TenantId {
    TenantId(format!("t{i}"))
}

/// Tenant of each client: most clients act for the share's owner `t0`
/// (several sessions of one tenant write the same keys concurrently, which
/// is what stresses the register); the last client is `t1`, granted
/// read-write at set-up, so single-writer hand-overs (`AcquireWriter`) and
/// `NotWriter` refusals happen too.
pub fn tenant_of_client(client: usize, clients: usize) -> TenantId {
    if clients > 1 && client == clients - 1 {
        tenant(1)
    } else {
        tenant(0)
    }
}

pub fn key(i: usize) -> Key {
    Key::from_name(&format!("sim-key-{i}"))
}

/// What a client asks next. Writes get their value when sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Read(Key),
    Write(Key),
    Delete(Key),
    ReadPolicy,
    Change(PolicyOp),
}

impl Plan {
    pub fn is_register(&self) -> bool {
        matches!(self, Plan::Read(_) | Plan::Write(_) | Plan::Delete(_))
    }

    pub fn request(&self, value: Option<Vec<u8>>) -> Request {
        match self {
            Plan::Read(key) => Request::Read {
                share: SHARE,
                key: *key,
            },
            Plan::Write(key) => Request::Write {
                share: SHARE,
                key: *key,
                value: value.unwrap_or_default(),
            },
            Plan::Delete(key) => Request::Delete {
                share: SHARE,
                key: *key,
            },
            Plan::ReadPolicy => Request::ReadPolicy { share: SHARE },
            Plan::Change(op) => Request::ChangePolicy {
                share: SHARE,
                op: op.clone(),
            },
        }
    }
}

/// Draw the next operation of a workload client.
pub fn next_plan(rng: &mut impl Rng, is_owner: bool, keys: usize) -> Plan {
    let k = key(rng.random_range(0..keys));
    let roll = rng.random_range(0..100u32);
    match roll {
        0..40 => Plan::Read(k),
        40..75 => Plan::Write(k),
        75..80 => Plan::Delete(k),
        80..88 => Plan::ReadPolicy,
        _ if is_owner => {
            // Churn the ACL of a third tenant: every change bumps the share's
            // epoch, so in-flight register writes meet epoch mismatches.
            if rng.random_bool(0.5) {
                Plan::Change(PolicyOp::Grant {
                    tenant: tenant(2),
                    access: Access::ReadWrite,
                })
            } else {
                Plan::Change(PolicyOp::Revoke { tenant: tenant(2) })
            }
        }
        _ => Plan::Change(PolicyOp::AcquireWriter { key: k }),
    }
}

/// The attempt a client is waiting on.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub plan: Plan,
    /// History record of the current attempt.
    pub record: usize,
    /// Every record of this logical op (attempts of a register op).
    pub records: Vec<usize>,
    pub attempt: u32,
    pub request_id: u64,
    pub idempotency: [u8; 16],
    /// Only the timeout event carrying this token is live.
    pub timeout_token: u64,
    /// A read asking for a lease: where it started in the lease cache.
    pub lease_ticket: Option<ReadTicket>,
    /// A write or delete: where it started in the lease cache.
    pub write_ticket: Option<WriteTicket>,
}

#[derive(Clone, Debug)]
pub struct SimClient {
    pub tenant: TenantId,
    pub proxy: usize,
    /// Operations still to issue in the fault phase.
    pub remaining: usize,
    pub waiting: Option<Waiting>,
    /// Where a reply to each request id goes (late replies complete the
    /// attempt they answer, even after the client moved on).
    pub records_by_request: BTreeMap<u64, usize>,
    pub next_request_id: u64,
    pub logical_ops: u64,
    /// Set after a `NotWriter` refusal: take over the key next.
    pub acquire_next: Option<Key>,
    /// Lease holder id (0: this client asks for no leases).
    pub holder: u64,
    /// Leased read answers, exactly as a real session keeps them.
    pub leases: LeaseCache,
}

impl SimClient {
    pub fn new(tenant: TenantId, proxy: usize, remaining: usize) -> Self {
        SimClient {
            tenant,
            proxy,
            remaining,
            waiting: None,
            records_by_request: BTreeMap::new(),
            next_request_id: 1,
            logical_ops: 0,
            acquire_next: None,
            holder: 0,
            leases: LeaseCache::default(),
        }
    }

    pub fn idempotency(client: usize, logical: u64, attempt: u32) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&(client as u32).to_be_bytes());
        out[4..12].copy_from_slice(&logical.to_be_bytes());
        out[12..].copy_from_slice(&attempt.to_be_bytes());
        out
    }
}
