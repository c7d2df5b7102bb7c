//! teemsfs: the tenant-side filesystem client of the design (DESIGN §9–§12).
//!
//! Its job is to keep file contents in untrusted object stores — encrypted, erasure-coded
//! and verified on every read — and everything needed to read them correctly in TEEMS.
//! It does not hold keys or metadata of its own beyond caches: correctness and freshness
//! come from TEEMS (`metadata-client`), confidentiality and integrity of contents from
//! `erasure`.
//!
//! Modules:
//! - [`store`]: the `ObjectStore` trait and its S3, Redis, local-directory, in-memory and
//!   fault-injecting implementations, their conformance suite, and the `BlobStore` that
//!   places, reads back, hedges and repairs the fragments of sealed blobs.
//! - [`meta`]: the `Teems` trait — the metadata operations the filesystem needs — and
//!   `MemTeems`, an in-memory stand-in for tests.
//! - [`fs`]: the filesystem as a plain async type (`Fs`), testable without a kernel.
//! - [`cache`]: the name cache and the blob cache; they only propose, fresh metadata decides.
//! - [`fuse`]: the thin `fuser` adapter and `mount()`.
//! - [`meta_remote`]: `Teems` over a real cluster (`metadata_client::Session`), share
//!   naming, and opening a session from a cluster directory.
//! - [`replicas`]: starting, stopping and querying a local cluster's `teems-replica`
//!   processes (`teemsfs cluster start|stop|status`).
//! - [`bench`]: benchmarks run by `teemsfs bench …`.
//! - [`deploy`]: a deployment directory and its TOML config; building the whole client
//!   from it (`teemsfs up|down|mount|umount`).
//! - [`housekeeping`]: `teemsfs gc` and `teemsfs fsck` over a tree walk.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use teemsfs::store::{BlobStore, BlobStoreConfig, MemoryStore, ObjectStore};
//!
//! let stores: Vec<Arc<dyn ObjectStore>> =
//!     (0..3).map(|_| Arc::new(MemoryStore::new()) as Arc<dyn ObjectStore>).collect();
//! let blobs = BlobStore::new(stores, BlobStoreConfig::new(erasure::Layout { k: 2, m: 1 }))?;
//! let id = erasure::BlobId([7; 16]);
//! let stored = blobs.put_blob(&id, 1, b"hello").await?;
//! assert_eq!(blobs.get_blob(&id, 1, &stored).await?, b"hello");
//! # Ok(())
//! # }
//! ```

pub mod bench;
pub mod cache;
pub mod deploy;
pub mod fs;
pub mod fuse;
pub mod housekeeping;
pub mod meta;
pub mod meta_remote;
pub mod metrics;
pub mod replicas;
pub mod store;
