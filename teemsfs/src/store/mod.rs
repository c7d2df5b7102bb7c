//! Untrusted object storage (DESIGN §9): one [`ObjectStore`] trait and its implementations.
//!
//! Every store holds opaque, immutable-by-convention objects under flat names. The stores
//! are *untrusted*: whatever they return is checked by the caller (fragment hashes in
//! [`blob`]), so this layer only moves bytes and reports, as typed [`StoreError`]s, which
//! store and which object an operation failed on.
//!
//! Implementations:
//! - [`s3::S3Store`]: any S3-compatible endpoint (aws-sdk-s3, rustls with the ring provider,
//!   path-style addressing).
//! - [`redis::RedisStore`]: one Redis server (reconnecting connection manager) or a Redis
//!   cluster.
//! - [`local::LocalStore`]: a local directory; atomic, durable puts (temp file, fsync,
//!   rename, fsync of the directory).
//! - [`memory::MemoryStore`]: a map in memory, for tests and the simulator.
//! - [`faulty::FaultyStore`]: a seeded wrapper that drops, corrupts, delays, fails, or
//!   substitutes objects; every reliability test uses it.
//!
//! On top of the stores, [`blob::BlobStore`] places the erasure-coded fragments of a sealed
//! blob, reads them back with hedging and verification, and repairs what it finds damaged.
//! [`conformance::run_all`] is the one behavioural suite every implementation passes.
//!
//! Not here: retries with back-off (the blob layer reads spare fragments instead of
//! retrying a slow store), caching, and garbage collection policy.

pub mod blob;
pub mod conformance;
pub mod faulty;
pub mod local;
pub mod memory;
pub mod redis;
pub mod s3;

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub use blob::{BlobStore, BlobStoreConfig, BlobStoreError, BlobStoreStats, StoredBlob};
pub use faulty::{Fault, FaultConfig, FaultyStore};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore};
pub use s3::{S3Config, S3Store};

/// Longest object name any store accepts. S3 keys may be 1024 bytes and Redis keys far
/// more, but local file names are limited to 255 bytes on common filesystems, and our
/// own names are short (a prefix and 32 hex digits).
pub const MAX_NAME_LEN: usize = 200;

/// Default bound on one network call (put, get, delete, one list page). Redis cluster
/// calls can hang forever on a topology change, and an S3 endpoint can stall; a bounded
/// call turns both into an error the blob layer can route around.
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 30_000;

/// The operation a [`StoreError`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Connect,
    Put,
    Get,
    GetRange,
    Delete,
    List,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Connect => "connect",
            Op::Put => "put",
            Op::Get => "get",
            Op::GetRange => "get range",
            Op::Delete => "delete",
            Op::List => "list",
        })
    }
}

/// An object store operation that failed. Every variant names the store (its
/// [`ObjectStore::describe`] string) and, where there is one, the object, so that an error
/// surfacing from the blob layer says exactly where the problem is.
///
/// A missing object is not an error: [`ObjectStore::get`] and [`ObjectStore::get_range`]
/// return `Ok(None)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{store}: invalid object name {name:?}: {reason}")]
    InvalidName {
        store: String,
        name: String,
        reason: &'static str,
    },
    #[error("{store}: {op} {name:?} timed out after {timeout_ms} ms")]
    Timeout {
        store: String,
        op: Op,
        name: String,
        timeout_ms: u64,
    },
    #[error("{store}: {op} {name:?} failed: {detail}")]
    Backend {
        store: String,
        op: Op,
        name: String,
        detail: String,
    },
    #[error("{store}: {op} {name:?} failed: injected fault")]
    Injected { store: String, op: Op, name: String },
    #[error("{store}: bad configuration: {detail}")]
    Config { store: String, detail: String },
}

impl StoreError {
    pub(crate) fn backend(
        store: &str,
        op: Op,
        name: &str,
        detail: impl fmt::Display,
    ) -> StoreError {
        StoreError::Backend {
            store: store.to_owned(),
            op,
            name: name.to_owned(),
            detail: detail.to_string(),
        }
    }
}

/// One entry of [`ObjectStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub name: String,
    pub size_bytes: u64,
    /// Last modification as the store reports it; `None` where the store keeps no time
    /// (Redis). Garbage collection uses it for the grace period when present.
    pub modified: Option<SystemTime>,
}

/// A flat namespace of opaque objects in untrusted storage.
///
/// Contract, checked by [`conformance::run_all`]:
/// - names satisfy [`validate_name`]; any other name is rejected with
///   [`StoreError::InvalidName`] before the store is contacted;
/// - `put` of an existing name replaces the object (last writer wins); teemsfs never does
///   this for fragments except to repair them with identical bytes;
/// - `get` of a missing name is `Ok(None)`;
/// - `get_range(name, start, len)` is the slice `start .. start + len` of what `get` would
///   return, clipped to the object's length: empty (`Some`) when `len` is 0 or `start` is at
///   or past the end, and `Ok(None)` exactly when `get` would be; a networked store
///   fetches only the range, not the whole object;
/// - `delete` is idempotent: deleting a missing name succeeds;
/// - `list(prefix)` returns exactly the objects whose names start with `prefix`, sorted
///   by name, each once;
/// - every network call is bounded by a timeout.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// A short, human-readable name of this store for error messages and logs, e.g.
    /// `s3://bucket@http://127.0.0.1:9000`. Contains no credentials.
    fn describe(&self) -> String;

    /// Stores `bytes` under `name`, durably as far as the store allows, before returning.
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StoreError>;

    /// The bytes stored under `name`, or `None` if there is no such object.
    async fn get(&self, name: &str) -> Result<Option<Bytes>, StoreError>;

    /// Bytes `start .. start + len` of the object under `name`, clipped to its length
    /// (empty if `start` is at or past the end), or `None` if there is no such object.
    async fn get_range(
        &self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError>;

    /// Removes `name`; succeeds if it does not exist.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// All objects whose name starts with `prefix`, sorted by name.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
}

/// Checks that `name` is one every store can hold without escaping: 1 to
/// [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `-`, `_` and `.`, not starting with `.`
/// (which also excludes `.` and `..`, and keeps the local store's temp files, which start
/// with `.`, out of the namespace).
///
/// No `/` means a name is always one path component on a local disk and one S3 key with no
/// implied "directories"; no glob characters means a Redis `SCAN MATCH` prefix pattern needs
/// no escaping.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    validate_prefix(name)?;
    if name.starts_with('.') {
        return Err("starts with '.'");
    }
    Ok(())
}

/// Checks a listing prefix: like [`validate_name`] but may be empty (list everything).
pub fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.len() > MAX_NAME_LEN {
        return Err("longer than MAX_NAME_LEN bytes");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("contains a character other than A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

pub(crate) fn check_name(store: &str, name: &str) -> Result<(), StoreError> {
    validate_name(name).map_err(|reason| StoreError::InvalidName {
        store: store.to_owned(),
        name: name.to_owned(),
        reason,
    })
}

pub(crate) fn check_prefix(store: &str, prefix: &str) -> Result<(), StoreError> {
    validate_prefix(prefix).map_err(|reason| StoreError::InvalidName {
        store: store.to_owned(),
        name: prefix.to_owned(),
        reason,
    })
}

/// `start .. start + len` clipped to an object of `size` bytes, as
/// [`ObjectStore::get_range`] promises: `start <= end <= size`, and empty at `size` when
/// `start` is at or past the end. No overflow for any `start` and `len`.
pub(crate) fn clip_range(size: u64, start: u64, len: u64) -> Range<u64> {
    start.min(size)..start.saturating_add(len).min(size)
}

/// The part of a whole object that [`ObjectStore::get_range`]`(name, start, len)` returns.
pub(crate) fn slice_range(object: &Bytes, start: u64, len: u64) -> Bytes {
    let range = clip_range(object.len() as u64, start, len);
    // Both ends are at most `object.len()`, so they fit a usize and the slice is in bounds.
    object.slice(range.start as usize..range.end as usize)
}

/// Runs one network call under `timeout_ms`, turning expiry into [`StoreError::Timeout`].
pub(crate) async fn with_timeout<T>(
    store: &str,
    op: Op,
    name: &str,
    timeout_ms: u64,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(StoreError::Timeout {
            store: store.to_owned(),
            op,
            name: name.to_owned(),
            timeout_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_a_directory_or_a_pattern_are_rejected() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", ".hidden", "a*", "a?", "a[b]", "a\\b", "a b",
            "é", "a\0b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        for good in [
            "f",
            "frag-0123456789abcdef",
            "A.b_c-D",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert!(validate_name(good).is_ok(), "{good:?} must be accepted");
        }
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("a/").is_err());
    }

    #[test]
    fn ranges_are_clipped_without_overflow() {
        assert_eq!(clip_range(100, 10, 20), 10..30);
        assert_eq!(clip_range(100, 90, 20), 90..100);
        assert_eq!(clip_range(100, 100, 5), 100..100);
        assert_eq!(clip_range(100, 500, 5), 100..100);
        assert_eq!(clip_range(100, 50, 0), 50..50);
        assert_eq!(clip_range(100, u64::MAX, u64::MAX), 100..100);
        assert_eq!(clip_range(100, 1, u64::MAX), 1..100);
        assert_eq!(clip_range(0, 0, 10), 0..0);
        let object = Bytes::from_static(b"0123456789");
        assert_eq!(slice_range(&object, 3, 4), "3456");
        assert_eq!(slice_range(&object, 8, 4), "89");
        assert_eq!(slice_range(&object, 10, 4), "");
        assert_eq!(slice_range(&object, u64::MAX, 1), "");
    }
}
