//! Client ↔ proxy wire types of TEEMS (DESIGN §7, paper Table I).
//!
//! These are the only types a tenant's client and a proxy replica exchange. The
//! replica crate depends on this module; the peer (replica ↔ replica) messages
//! live in `enclave-replica::core` and never reach a tenant.
//!
//! Encoding is postcard; [`decode_request`] / [`decode_response`] are the only
//! entry points for untrusted bytes and never panic.

use serde::{Deserialize, Serialize};

/// A metadata key: 128-bit random id (DESIGN §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(pub [u8; 16]);

impl Key {
    /// Deterministic key for an operator-supplied string id (`teemsfs meta … ID`).
    pub fn from_name(name: &str) -> Key {
        // A fixed, documented mapping so the CLI and tests agree on keys; not a
        // security boundary (ids in the filesystem are random).
        let mut out = [0u8; 16];
        let digest = fnv1a128(name.as_bytes());
        out.copy_from_slice(&digest.to_be_bytes());
        Key(out)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

fn fnv1a128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// A share (policy id): every key belongs to exactly one share (DESIGN §7, §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShareId(pub [u8; 16]);

/// A tenant identity, as named in its certificate (CN) by the cluster CA.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(pub String);

/// Version of a register value: the RR-ABD timestamp `(seq, writer)`, compared
/// lexicographically (RR §IV-B a).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub seq: u64,
    pub writer: u32,
}

/// Access a tenant may hold on a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    ReadWrite,
}

/// Policy state-machine operations (DESIGN §7, §11). Each is evaluated inside
/// the replicas against the requesting tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyOp {
    /// Create the share with the requester as owner. Fails if it exists.
    CreateShare,
    /// Owner only: give `tenant` the access.
    Grant { tenant: TenantId, access: Access },
    /// Owner only: take all access from `tenant`.
    Revoke { tenant: TenantId },
    /// A tenant with write access becomes the single writer of `key`; bumps
    /// that file's epoch so the previous writer's next write is refused.
    AcquireWriter { key: Key },
    /// Owner only: hand the share to another tenant.
    TransferOwner { to: TenantId },
}

/// The policy of one share as the state machine holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePolicy {
    pub epoch: u64,
    pub owner: Option<TenantId>,
    pub acl: Vec<(TenantId, Access)>,
}

/// A tenant's request to its proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `teems-read(id)`; the client names the share the key belongs to, and the
    /// proxy checks it against the share recorded with the value.
    Read { share: ShareId, key: Key },
    /// `teems-write(id, val)`.
    Write {
        share: ShareId,
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// `teems-delete(id)`: writes a tombstone.
    Delete { share: ShareId, key: Key },
    /// `change_policy(share, op)`, ordered through RR-Paxos.
    ChangePolicy { share: ShareId, op: PolicyOp },
    /// Read a share's policy (optimized read, falling back to an ordered read).
    ReadPolicy { share: ShareId },
}

/// Errors a tenant can see. Expected conditions, not failures of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorKind {
    #[error("not found")]
    NotFound,
    #[error("denied")]
    Denied,
    #[error("not writer")]
    NotWriter,
    #[error("unavailable")]
    Unavailable,
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// A proxy's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Value {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        version: Version,
    },
    Written {
        version: Version,
    },
    Deleted {
        version: Version,
    },
    PolicyChanged {
        epoch: u64,
    },
    Policy {
        policy: SharePolicy,
    },
    Error(ErrorKind),
}

/// One request on the wire. `request_id` matches the reply; `idempotency` is
/// the same for every retry of one logical operation so a proxy (or the
/// replicas, for policy changes) can recognise a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub request_id: u64,
    pub idempotency: [u8; 16],
    pub request: Request,
    /// Read leases (PROTOCOLS.md LEASE-*): who is asking. A client session
    /// draws one random holder id and sends it with every request, so the
    /// replicas can tell its own writes (which end its leases on the key)
    /// from other writers' (which wait for the leases to end).
    pub lease: LeaseAsk,
}

/// The lease half of a request: `holder` 0 means "no holder" (no lease is
/// asked for and none is ended); `ms` 0 asks for no lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAsk {
    pub holder: u64,
    pub ms: u32,
}

impl LeaseAsk {
    pub const NONE: LeaseAsk = LeaseAsk { holder: 0, ms: 0 };
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub request_id: u64,
    pub response: Response,
    /// For a read that asked for a lease: the lease the proxy obtained, in
    /// milliseconds counted from when the client sent the request (0: none).
    /// Until it ends, no other writer's write of the key can complete, so
    /// the client may answer reads of the key from this response.
    pub lease_ms: u32,
}

/// Decoding error for untrusted wire bytes.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {source}")]
pub struct DecodeError {
    pub what: &'static str,
    #[source]
    pub source: postcard::Error,
}

pub fn encode_request(frame: &RequestFrame) -> Vec<u8> {
    postcard::to_allocvec(frame).expect("serialising owned wire types cannot fail")
}

pub fn encode_response(frame: &ResponseFrame) -> Vec<u8> {
    postcard::to_allocvec(frame).expect("serialising owned wire types cannot fail")
}

pub fn decode_request(bytes: &[u8]) -> Result<RequestFrame, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError {
        what: "request frame",
        source,
    })
}

pub fn decode_response(bytes: &[u8]) -> Result<ResponseFrame, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError {
        what: "response frame",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are encoded as one byte slice (`serde_bytes`) for speed; postcard writes a
    /// slice exactly as it wrote the sequence of `u8` it was before, so frames from
    /// either encoding decode the same. The mirror types are the encoding before.
    #[test]
    fn byte_values_encode_as_before() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum OldRequest {
            Read {
                share: ShareId,
                key: Key,
            },
            Write {
                share: ShareId,
                key: Key,
                value: Vec<u8>,
            },
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum OldResponse {
            Value { value: Vec<u8>, version: Version },
        }
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (share, key) = (ShareId([9; 16]), Key::from_name("k"));
            let new = postcard::to_allocvec(&Request::Write {
                share,
                key,
                value: value.clone(),
            })
            .expect("encodes");
            let old = postcard::to_allocvec(&OldRequest::Write {
                share,
                key,
                value: value.clone(),
            })
            .expect("encodes");
            assert_eq!(new, old, "request of {len} bytes");
            let version = Version { seq: 5, writer: 2 };
            let new = postcard::to_allocvec(&Response::Value {
                value: value.clone(),
                version,
            })
            .expect("encodes");
            let old = postcard::to_allocvec(&OldResponse::Value {
                value: value.clone(),
                version,
            })
            .expect("encodes");
            assert_eq!(new, old, "response of {len} bytes");
            assert_eq!(
                postcard::from_bytes::<Response>(&old).expect("decodes"),
                Response::Value { value, version }
            );
        }
    }

    #[test]
    fn request_round_trips_and_garbage_is_an_error() {
        let frame = RequestFrame {
            request_id: 7,
            idempotency: [3; 16],
            request: Request::Write {
                share: ShareId([1; 16]),
                key: Key::from_name("a"),
                value: b"v".to_vec(),
            },
            lease: LeaseAsk {
                holder: 77,
                ms: 1_000,
            },
        };
        let bytes = encode_request(&frame);
        assert_eq!(decode_request(&bytes).expect("valid frame"), frame);
        assert!(decode_request(&[0xff; 3]).is_err());
        assert!(decode_request(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn key_from_name_is_deterministic_and_distinct() {
        assert_eq!(Key::from_name("x"), Key::from_name("x"));
        assert_ne!(Key::from_name("x"), Key::from_name("y"));
    }
}
