//! The filesystem as a plain async type, testable without a kernel (DESIGN §10).
//!
//! [`Fs`] implements the POSIX operations over two services: TEEMS ([`Teems`]) for every
//! inode's small metadata value, and sealed blobs ([`BlobIo`]) for contents, manifests,
//! directory buckets and extended attributes. Inodes are named by random 128-bit
//! [`Key`]s; the FUSE adapter maps them to inode numbers.
//!
//! Consistency (docs/SEMANTICS.md): close-to-open over linearizable metadata. Every
//! `lookup`, `getattr`, `open`, `readdir` reads the inode's metadata fresh from TEEMS;
//! caches only propose and are confirmed by that read. File writes are buffered per inode
//! while it is open in this client and committed on `flush`/`fsync`/`release`, whose
//! errors are returned. Committing puts the new blobs first, then writes the metadata, and
//! only then retires the old blobs after a grace period, so a crash at any point leaves
//! either the old or the new version.
//!
//! Superseded blobs wait in a queue for their grace period; [`Fs::spawn_housekeeping`]
//! deletes them on a timer and [`Fs::drain_retired_for_unmount`] at unmount. Open
//! directories keep a listing snapshot per handle ([`Fs::opendir`]), so a kernel that
//! pages through a large directory costs one listing, not one per page.
//!
//! Modules: [`format`] (encodings), [`blobs`] (blob interface), [`error`] (the error type
//! and its errno mapping), `dir` (directories, buckets, rename), `dirhandle` (open
//! directory snapshots), `file` (open files, chunks, commit), `locks` (per-inode locks),
//! [`walk`] (whole-tree walks for gc and fsck), `xattr`.

pub mod blobs;
mod dir;
mod dirhandle;
pub mod error;
mod file;
pub mod format;
mod locks;
pub mod perm;
mod statahead;
pub mod walk;
mod xattr;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use blobs::{BlobIo, BlobRef, MemBlobs};
pub use dirhandle::DirListing;
pub use error::{FsError, FsResult};
pub use format::Kind;
use format::{BucketData, Data, Inode, Time};

use crate::cache::{BlobCache, CacheConfig, DecodedCache, NameCache};
use crate::meta::{Key, ShareId, Teems, Version};

/// Longest name component accepted (as on most Linux filesystems).
pub const NAME_MAX_BYTES: usize = 255;

/// Taken off what is left of a lease before the kernel is told to keep attributes or a
/// name that long ([`Fs::attr_ttl`]): the kernel counts the time from when it takes in
/// the reply, a little after it is computed, and in jiffies rounded up — up to two
/// jiffies later, 20 ms at `HZ=100`. A lease the client uses already ends 2 % of a lease
/// before any replica's grant does (LEASE-C1); this keeps the kernel's copy inside the
/// client's part.
const KERNEL_LEASE_SLACK: Duration = Duration::from_millis(30);

/// Directories remembered in `Fs::kernel_names` before the ended ones are swept out.
const KERNEL_NAMES_SWEEP_AT: usize = 4096;

/// Added to the end of the names kept under a directory before a `chmod` that takes
/// search permission away returns, for the same reasons as [`KERNEL_LEASE_SLACK`]: the
/// kernel may keep a name up to two jiffies (20 ms at `HZ=100`) past the time it was
/// given, counted from when it took in the reply.
const KERNEL_NAME_MARGIN: Duration = Duration::from_millis(50);

/// Names under one directory the kernel was told to keep.
struct KernelNames {
    /// When the last of them ends (by this client's clock).
    until: Instant,
    /// `chmod`s taking search permission away from the directory under way.
    narrowing: u32,
}

/// A `chmod` narrowing a directory's search permission is under way ([`Fs::narrowing_search`]).
struct Narrowing<'a> {
    fs: &'a Fs,
    dir: Key,
}

impl Drop for Narrowing<'_> {
    fn drop(&mut self) {
        if let Ok(mut kept) = self.fs.kernel_names.lock()
            && let Some(k) = kept.get_mut(&self.dir)
        {
            k.narrowing = k.narrowing.saturating_sub(1);
        }
    }
}

/// Tunables of one mount; every field has a documented default.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Files up to this size are one blob; larger files are chunks of this size listed in
    /// a manifest blob. Default 4 MiB.
    pub chunk_size_bytes: u64,
    /// A directory bucket holding more entries than this is split (the directory's bucket
    /// count doubles). Default 128: with short names, a bucket of ~4 KiB, kept inline.
    /// Each create and unlink rewrites one bucket, and smaller buckets make them cheaper
    /// (BENCHMARKS.md, "Smaller directory buckets"); `readdir` reads more of them.
    pub dir_bucket_max_entries: usize,
    /// Files of at most this many bytes keep their content in their metadata value
    /// instead of a blob (no store round trip on write or read). Default 4 KiB; 0 puts
    /// every non-empty file in blobs.
    pub inline_file_max_bytes: u64,
    /// Directory buckets whose encoding is at most this many bytes are kept in the
    /// directory's (or bucket's) metadata value instead of a blob. Default 32 KiB.
    pub inline_bucket_max_bytes: usize,
    /// How long a superseded blob is kept before its fragments are deleted, since a reader
    /// elsewhere may still be fetching it (DESIGN §9). Default 30 s.
    pub delete_grace_ms: u64,
    /// Largest file size accepted. Default 1 TiB.
    pub max_file_size_bytes: u64,
    /// How often the housekeeping task deletes retired blobs whose grace is over.
    /// Default 1 s.
    pub housekeeping_interval_ms: u64,
    /// At unmount, how long to wait for retired blobs' grace periods to end before
    /// leaving the rest to `teemsfs gc`. Default 5 s.
    pub unmount_drain_wait_ms: u64,
    pub cache: CacheConfig,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            chunk_size_bytes: 4 << 20,
            dir_bucket_max_entries: 128,
            inline_file_max_bytes: 4096,
            inline_bucket_max_bytes: 32 << 10,
            delete_grace_ms: 30_000,
            max_file_size_bytes: 1 << 40,
            housekeeping_interval_ms: 1_000,
            unmount_drain_wait_ms: 5_000,
            cache: CacheConfig::default(),
        }
    }
}

/// Attributes of an inode as of a fresh metadata read (or of this client's own
/// uncommitted writes, for the size and times of a file open here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub key: Key,
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub nlink: u32,
    /// TEEMS version of the metadata this was read from.
    pub version: Version,
}

/// Changes requested by `setattr`; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
    /// The times given are "now" (`UTIME_NOW`), not values: write permission suffices.
    pub times_now: bool,
    /// The size change comes through an open file (`ftruncate`), checked at its open.
    pub through_handle: bool,
}

/// A directory entry as `readdir` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub key: Key,
    pub kind: Kind,
}

/// Flags of `rename(2)`/`renameat2(2)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

/// What `open` tells the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// The content version is the one this client saw at its last open or commit of the
    /// inode, so the kernel's page cache for it is still valid (FOPEN_KEEP_CACHE).
    pub keep_cache: bool,
}

/// Filesystem statistics (object stores have no fixed size; these are nominal).
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Who performs an operation: the owner of what it creates, and whose permissions the
/// checks in [`perm`] apply. `Default` is root, the in-process caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling process (thread) id, for its supplementary groups; 0 for none.
    pub pid: u32,
}

/// Times the housekeeping task tries to free an unlinked inode before leaving it.
const FREE_ATTEMPTS: u8 = 3;

/// Unlinked inodes queued before the housekeeping task is woken to free them; fewer wait
/// for its next tick (`housekeeping_interval_ms`). Freed together, 16 at a time, their
/// deletions share the replicas' fsyncs instead of each taking one between two unlinks:
/// a loop of 2,000 unlinks ran 25–30% faster than with one wake per unlink (BENCHMARKS).
const FREE_BATCH: usize = 64;

/// An inode whose last link is gone, queued to be freed (`Fs::free_later`).
struct Unlinked {
    key: Key,
    inode: Inode,
    failures: u8,
}

/// The filesystem of one share, for one client.
pub struct Fs {
    teems: Arc<dyn Teems>,
    blobs: Arc<dyn BlobIo>,
    share: ShareId,
    root: Key,
    config: FsConfig,
    blob_cache: BlobCache,
    names: NameCache,
    /// Directory inodes and buckets as decoded, by key, for the version they came from.
    decoded_dirs: DecodedCache<Inode>,
    decoded_buckets: DecodedCache<format::BucketMeta>,
    /// Per-directory locks: serialise this client's read-modify-writes of one directory
    /// (its buckets and its inode), so two operations of one client never lose each
    /// other's entries, while changes in different directories run in parallel. Other
    /// clients are not covered: see docs/SEMANTICS.md on concurrent namespace changes.
    dir_locks: locks::KeyLocks,
    /// Held by the operations that lock more than one directory (rename, rmdir, rename
    /// recovery); see `locks` for why that keeps the directory locks deadlock-free.
    tree_lock: tokio::sync::Mutex<()>,
    /// Background chunk uploads of long writes running at once, over all open files.
    upload_slots: Arc<tokio::sync::Semaphore>,
    files: Mutex<file::OpenTable>,
    /// Per-inode locks for metadata read-modify-writes (see `locks`).
    key_locks: locks::KeyLocks,
    /// Listing snapshots of open directories, by handle.
    dirs: Mutex<dirhandle::DirTable>,
    /// Blobs superseded by a committed version, deleted once their grace period is over.
    retired: Mutex<Vec<(Instant, BlobRef)>>,
    /// Inodes whose last name is gone (and that no handle of this client holds), waiting
    /// to be freed by the housekeeping task: an unlink returns once the name is removed.
    unlinked: Mutex<Vec<Unlinked>>,
    /// Wakes the housekeeping task when `unlinked` gets an inode.
    unlinked_wake: Arc<tokio::sync::Notify>,
    /// Content version this client last saw per key, for `Opened::keep_cache`.
    seen_versions: Mutex<HashMap<Key, Version>>,
    /// Per directory, until when the kernel may still hold names under it that it was
    /// told to keep ([`Fs::lookup_entry_by`]), and `chmod`s narrowing its search
    /// permission under way.
    kernel_names: Mutex<HashMap<Key, KernelNames>>,
    /// Reads inodes ahead of lookups that walk a directory in order.
    statahead: Arc<statahead::StatAhead>,
}

impl Fs {
    pub fn new(
        teems: Arc<dyn Teems>,
        blobs: Arc<dyn BlobIo>,
        share: ShareId,
        root: Key,
        config: FsConfig,
    ) -> Fs {
        let statahead = Arc::new(statahead::StatAhead::new(teems.leases_reads()));
        Fs {
            blob_cache: BlobCache::new(config.cache.blob_cache_bytes),
            names: NameCache::new(config.cache.name_cache_entries),
            decoded_dirs: DecodedCache::new(config.cache.decoded_cache_bytes / 2),
            decoded_buckets: DecodedCache::new(config.cache.decoded_cache_bytes / 2),
            teems,
            blobs,
            share,
            root,
            config,
            dir_locks: locks::KeyLocks::default(),
            tree_lock: tokio::sync::Mutex::new(()),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(file::UPLOAD_PARALLEL)),
            files: Mutex::new(file::OpenTable::default()),
            key_locks: locks::KeyLocks::default(),
            dirs: Mutex::new(dirhandle::DirTable::default()),
            retired: Mutex::new(Vec::new()),
            unlinked: Mutex::new(Vec::new()),
            unlinked_wake: Arc::new(tokio::sync::Notify::new()),
            seen_versions: Mutex::new(HashMap::new()),
            kernel_names: Mutex::new(HashMap::new()),
            statahead,
        }
    }

    /// Creates the root directory if the share has none, and completes a rename that a
    /// crashed client left half done (DESIGN §10). Call once before serving.
    pub async fn init(&self, owner: Caller) -> FsResult<()> {
        match self.read_inode(self.root).await {
            Ok(_) => {}
            Err(FsError::NotFound) => {
                let mut root = new_inode(
                    Kind::Dir,
                    0o755,
                    owner,
                    Data::Dir {
                        bucket_bits: 0,
                        single: BucketData::Empty,
                    },
                );
                root.parent = Some(self.root);
                self.write_inode(self.root, &root).await?;
            }
            Err(e) => return Err(e),
        }
        self.recover().await.map(|_| ())
    }

    pub fn root(&self) -> Key {
        self.root
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    // ---- metadata helpers -------------------------------------------------------------

    async fn read_inode(&self, key: Key) -> FsResult<(Inode, Version)> {
        let (bytes, version) = self.teems.read(self.share, key).await?;
        if let Some(inode) = self.decoded_dirs.get(key, version) {
            return Ok((inode, version));
        }
        let inode = format::decode_inode(&bytes)?;
        if inode.kind == Kind::Dir {
            self.decoded_dirs
                .insert(key, version, bytes.len(), inode.clone());
        }
        Ok((inode, version))
    }

    async fn write_inode(&self, key: Key, inode: &Inode) -> FsResult<Version> {
        let encoded = format::encode(inode);
        let len = encoded.len();
        let version = self.teems.write(self.share, key, encoded).await?;
        if inode.kind == Kind::Dir {
            self.decoded_dirs.insert(key, version, len, inode.clone());
        }
        Ok(version)
    }

    fn attr_of(&self, key: Key, inode: &Inode, version: Version) -> Attr {
        let mut attr = Self::stored_attr(key, inode, version);
        // This client's own uncommitted writes are visible to itself. Best effort: while
        // the open state is busy (a read, write or commit in progress) this reports the
        // stored attributes; `getattr`, which the kernel uses to revalidate an open
        // file's size, waits for the state instead.
        if let Ok(files) = self.files.lock()
            && let Some(open) = files.by_key.get(&key)
            && let Ok(state) = open.try_lock()
        {
            Self::overlay_open(&mut attr, &state);
        }
        attr
    }

    /// How long the kernel may keep `attr` (as `lookup` or `getattr` returned it) without
    /// asking again: what is left of the read lease that keeps its metadata version
    /// current, less [`KERNEL_LEASE_SLACK`] for the reply's way to the kernel; zero without
    /// such a lease, and zero while this client has the file open (its buffered writes and
    /// commits change attributes in ways the kernel does not see). Within that time no
    /// other client's change of the inode can complete (docs/PROTOCOLS.md LEASE), and this
    /// client's own changes all reach the kernel, which drops what it cached (write,
    /// setattr, link, unlink, rename, xattrs). So a `stat` the kernel answers from it is
    /// as fresh as one that reached TEEMS.
    pub fn attr_ttl(&self, attr: &Attr) -> Duration {
        let open = self
            .files
            .lock()
            .map_or(true, |f| f.by_key.contains_key(&attr.key));
        if open {
            return Duration::ZERO;
        }
        self.lease_left(attr.key, attr.version)
    }

    /// What is left of the read lease that keeps `version` of `key` current, less
    /// [`KERNEL_LEASE_SLACK`]; zero without one.
    fn lease_left(&self, key: Key, version: Version) -> Duration {
        self.teems
            .leased_until(self.share, key, version)
            .map_or(Duration::ZERO, |until| {
                until
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(KERNEL_LEASE_SLACK)
            })
    }

    /// How long the kernel may keep a name under `dir` (see [`Fs::lookup_entry_by`]):
    /// `keep()` — computed from the leases — unless a `chmod` taking search permission
    /// away from `dir` is under way here, in which case nothing. What is handed out is
    /// recorded under the same lock that such a `chmod` takes to start, so it waits for
    /// every name handed out before it started ([`Fs::narrowing_search`]).
    fn kernel_keeps_name(&self, dir: Key, keep: impl FnOnce() -> Duration) -> Duration {
        let Ok(mut kept) = self.kernel_names.lock() else {
            return Duration::ZERO;
        };
        if kept.get(&dir).is_some_and(|k| k.narrowing > 0) {
            return Duration::ZERO;
        }
        let ttl = keep();
        if ttl.is_zero() {
            return ttl;
        }
        let now = Instant::now();
        if kept.len() >= KERNEL_NAMES_SWEEP_AT {
            kept.retain(|_, k| k.until > now || k.narrowing > 0);
        }
        let k = kept.entry(dir).or_insert(KernelNames {
            until: now,
            narrowing: 0,
        });
        k.until = k.until.max(now + ttl);
        ttl
    }

    /// A `chmod` that takes search permission from some class on directory `dir` starts:
    /// until the returned guard is dropped, no name under `dir` is handed to the kernel
    /// to keep.
    fn narrowing_search(&self, dir: Key) -> Narrowing<'_> {
        if let Ok(mut kept) = self.kernel_names.lock() {
            kept.entry(dir)
                .or_insert(KernelNames {
                    until: Instant::now(),
                    narrowing: 0,
                })
                .narrowing += 1;
        }
        Narrowing { fs: self, dir }
    }

    /// Waits until the names the kernel was told to keep under `dir` have ended, with
    /// [`KERNEL_NAME_MARGIN`] for the kernel's clock granularity and the reply's way to
    /// it. The kernel would let anyone walk through them without asking teemsfs (which
    /// checks search permission per lookup); after this, every walk is checked against
    /// the new mode.
    async fn wait_out_kernel_names(&self, dir: Key) {
        let until = self
            .kernel_names
            .lock()
            .ok()
            .and_then(|kept| kept.get(&dir).map(|k| k.until));
        if let Some(until) = until {
            tokio::time::sleep_until((until + KERNEL_NAME_MARGIN).into()).await;
        }
    }

    /// Attributes as the stored metadata has them.
    fn stored_attr(key: Key, inode: &Inode, version: Version) -> Attr {
        Attr {
            key,
            kind: inode.kind,
            perm: inode.perm,
            uid: inode.uid,
            gid: inode.gid,
            rdev: inode.rdev,
            size: inode.size,
            atime: inode.atime.to_system(),
            mtime: inode.mtime.to_system(),
            ctime: inode.ctime.to_system(),
            nlink: inode.nlink,
            version,
        }
    }

    /// Size and times of this client's buffered, uncommitted changes.
    fn overlay_open(attr: &mut Attr, state: &file::OpenState) {
        if state.modified {
            attr.size = state.size;
            attr.mtime = state.mtime.to_system();
            attr.ctime = state.mtime.to_system();
        }
    }

    /// Fetches a blob's plaintext: from the blob cache if fresh metadata (the caller's
    /// `blob`) names a cached version, otherwise from the stores.
    async fn get_blob(&self, blob: &BlobRef) -> FsResult<Arc<Vec<u8>>> {
        if let Some(hit) = self.blob_cache.get(blob) {
            return Ok(hit);
        }
        self.fetch_blob(blob.clone()).await
    }

    /// Fetches a blob from the stores, checks its length against the metadata's and
    /// caches it; a task of its own (read-ahead runs it in the background).
    fn fetch_blob(
        &self,
        blob: BlobRef,
    ) -> impl std::future::Future<Output = FsResult<Arc<Vec<u8>>>> + Send + 'static {
        let blobs = Arc::clone(&self.blobs);
        let cache = self.blob_cache.clone();
        async move {
            let plain = Arc::new(blobs.get(&blob).await?);
            if plain.len() as u64 != blob.len {
                return Err(FsError::Blob(format!(
                    "blob has {} bytes, metadata says {}",
                    plain.len(),
                    blob.len
                )));
            }
            cache.insert(&blob, Arc::clone(&plain));
            Ok(plain)
        }
    }

    async fn put_blob(&self, id: [u8; 16], version: u64, plain: Vec<u8>) -> FsResult<BlobRef> {
        self.put_shared_blob(id, version, &Arc::new(plain)).await
    }

    /// [`Fs::put_blob`] for a caller that keeps the plaintext (to retry after a failure).
    async fn put_shared_blob(
        &self,
        id: [u8; 16],
        version: u64,
        shared: &Arc<Vec<u8>>,
    ) -> FsResult<BlobRef> {
        let blob = self.blobs.put(id, version, shared).await?;
        self.blob_cache.insert(&blob, Arc::clone(shared));
        Ok(blob)
    }

    /// Hands superseded blobs to the grace-period queue; the housekeeping task (or
    /// [`Fs::delete_due_retired`]) deletes them once their grace is over. Commits do not
    /// wait for deletions.
    fn retire(&self, blobs: Vec<BlobRef>) {
        if blobs.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.extend(blobs.into_iter().map(|b| (now, b)));
    }

    /// The blob layer's counters, when it keeps any (the object-store `BlobStore` does).
    pub fn blob_stats(&self) -> Option<crate::store::BlobStoreStats> {
        self.blobs.stats()
    }

    /// Metadata reads answered from read leases so far.
    pub fn meta_lease_hits(&self) -> u64 {
        self.teems.lease_hits()
    }

    /// (inodes read ahead of directory scans, lookups that found theirs read ahead).
    pub fn statahead_counts(&self) -> (u64, u64) {
        self.statahead.counts()
    }

    /// (hits, misses) of the blob cache so far.
    pub fn blob_cache_counts(&self) -> (u64, u64) {
        self.blob_cache.counts()
    }

    /// Plaintext bytes the blob cache holds.
    pub fn blob_cache_bytes(&self) -> u64 {
        self.blob_cache.weight_bytes()
    }

    /// Retired blobs not yet deleted (for tests and metrics).
    pub fn retired_len(&self) -> usize {
        self.retired.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Deletes the retired blobs whose grace period is over; returns how many were
    /// deleted. Deletion failures leave garbage for `teemsfs gc`, never a wrong read.
    pub async fn delete_due_retired(&self) -> usize {
        let grace = Duration::from_millis(self.config.delete_grace_ms);
        let now = Instant::now();
        let due: Vec<BlobRef> = {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            // Queued in time order: the due ones are a prefix.
            let n = retired
                .iter()
                .take_while(|(at, _)| now.duration_since(*at) >= grace)
                .count();
            retired.drain(..n).map(|(_, b)| b).collect()
        };
        let n = due.len();
        self.delete_blobs(due).await;
        n
    }

    async fn delete_blobs(&self, blobs: Vec<BlobRef>) {
        use futures::stream::{self, StreamExt};
        stream::iter(blobs)
            .for_each_concurrent(16, |blob| async move {
                if let Err(e) = self.blobs.delete(&blob).await {
                    tracing::warn!(error = %e, "deleting a superseded blob failed; gc will remove it");
                }
            })
            .await;
    }

    /// Queues an inode whose last link is gone for the housekeeping task to free (its
    /// name is already removed from TEEMS, so a crash before the free leaves only an
    /// unreachable key and blobs that `teemsfs gc` finds). The task is woken once
    /// [`FREE_BATCH`] are queued; fewer are freed at its next tick.
    fn free_later(&self, key: Key, inode: Inode) {
        let mut unlinked = self.unlinked.lock().unwrap_or_else(|p| p.into_inner());
        unlinked.push(Unlinked {
            key,
            inode,
            failures: 0,
        });
        let queued = unlinked.len();
        drop(unlinked);
        if queued >= FREE_BATCH {
            self.unlinked_wake.notify_one();
        }
    }

    /// Unlinked inodes not yet freed (for tests and metrics).
    pub fn unlinked_len(&self) -> usize {
        self.unlinked.lock().map(|u| u.len()).unwrap_or(0)
    }

    /// Frees the queued unlinked inodes (16 at once); returns how many were freed. One
    /// that fails is queued again, up to [`FREE_ATTEMPTS`] times in all, then left (an
    /// unreachable key; `teemsfs gc` finds its blobs).
    pub async fn free_unlinked(&self) -> usize {
        use futures::stream::{self, StreamExt};
        let batch: Vec<Unlinked> = {
            let mut unlinked = self.unlinked.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *unlinked)
        };
        stream::iter(batch)
            .map(|mut u| async move {
                match self.free_inode(u.key, &u.inode).await {
                    Ok(()) => true,
                    Err(e) if u.failures + 1 < FREE_ATTEMPTS => {
                        tracing::debug!(error = %e, "freeing an unlinked inode failed; will retry");
                        u.failures += 1;
                        self.unlinked.lock().unwrap_or_else(|p| p.into_inner()).push(u);
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "freeing an unlinked inode failed; its blobs are left for teemsfs gc");
                        false
                    }
                }
            })
            .buffer_unordered(16)
            .filter(|freed| std::future::ready(*freed))
            .count()
            .await
    }

    /// Frees every queued unlinked inode (retrying failures) and deletes every retired
    /// blob now, ignoring the grace period (tests).
    pub async fn drain_retired(&self) {
        while self.unlinked_len() > 0 {
            self.free_unlinked().await;
        }
        let all: Vec<BlobRef> = {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            retired.drain(..).map(|(_, b)| b).collect()
        };
        self.delete_blobs(all).await;
    }

    /// At unmount: frees the unlinked inodes still queued, then waits (at most `unmount_drain_wait_ms`) for the retired blobs' grace
    /// periods to end and deletes those whose grace is over. Younger ones are left in the
    /// stores — a reader elsewhere may still be fetching them — for `teemsfs gc`, which
    /// finds them because no live metadata names them. Returns (deleted, left).
    pub async fn drain_retired_for_unmount(&self) -> (usize, usize) {
        while self.unlinked_len() > 0 {
            self.free_unlinked().await;
        }
        let grace = Duration::from_millis(self.config.delete_grace_ms);
        let deadline = Instant::now() + Duration::from_millis(self.config.unmount_drain_wait_ms);
        let mut deleted = 0;
        loop {
            deleted += self.delete_due_retired().await;
            let next_due = self
                .retired
                .lock()
                .ok()
                .and_then(|r| r.first().map(|(at, _)| *at + grace));
            match next_due {
                None => return (deleted, 0),
                Some(t) if t <= deadline => tokio::time::sleep_until(t.into()).await,
                Some(_) => return (deleted, self.retired_len()),
            }
        }
    }

    /// Starts the task that frees unlinked inodes (at each tick, and whenever
    /// [`FREE_BATCH`] are queued) and deletes retired blobs every
    /// `housekeeping_interval_ms`. It holds only a weak reference, so
    /// it ends when the `Fs` is dropped (or when the returned handle is aborted).
    pub fn spawn_housekeeping(
        self: &Arc<Fs>,
        runtime: &tokio::runtime::Handle,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.unlinked_wake);
        let every = Duration::from_millis(self.config.housekeeping_interval_ms.max(10));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = tokio::select! {
                    _ = tick.tick() => true,
                    () = wake.notified() => false,
                };
                let Some(fs) = weak.upgrade() else { return };
                fs.free_unlinked().await;
                if due {
                    fs.delete_due_retired().await;
                }
            }
        })
    }

    /// Every blob an inode's own metadata references directly (content or manifest,
    /// directory bucket, xattrs); chunk blobs are listed by [`Fs::content_blobs`].
    fn direct_blobs(inode: &Inode) -> Vec<BlobRef> {
        let mut out = Vec::new();
        match &inode.data {
            Data::Single(b) => out.push(b.clone()),
            Data::Chunked { manifest } => out.push(manifest.clone()),
            Data::Dir {
                single: BucketData::Blob(b),
                ..
            } => out.push(b.clone()),
            _ => {}
        }
        if let Some(x) = &inode.xattrs {
            out.push(x.clone());
        }
        out
    }

    // ---- attributes -------------------------------------------------------------------

    /// Fresh attributes; for a file open in this client, including its buffered writes.
    ///
    /// The kernel takes the size in this reply as the file's size (a smaller one drops
    /// the page cache past it), so for an open file it must be exact: the open state is
    /// held while the metadata is read. Without that, a getattr that met a read in
    /// progress reported the committed size without the buffered writes, and one that
    /// read the metadata just before a commit and looked at the state just after it
    /// reported the size before the commit (fsx through a mount, SEMANTICS §6).
    pub async fn getattr(&self, key: Key) -> FsResult<Attr> {
        let open = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.by_key.get(&key).cloned());
        let Some(open) = open else {
            let (inode, version) = self.read_inode(key).await?;
            return Ok(self.attr_of(key, &inode, version));
        };
        // Lock order as in a commit: open state first, then (none needed here) the
        // inode lock; no caller of getattr holds either.
        let state = open.lock().await;
        let (inode, version) = self.read_inode(key).await?;
        let mut attr = Self::stored_attr(key, &inode, version);
        Self::overlay_open(&mut attr, &state);
        Ok(attr)
    }

    /// [`Fs::setattr_by`] as root.
    pub async fn setattr(&self, key: Key, set: SetAttr) -> FsResult<Attr> {
        self.setattr_by(key, set, Caller::ROOT).await
    }

    /// Changes attributes; `who` must be allowed to ([`perm::check_setattr`]: root, the
    /// owner, or for a truncation or a "now" time a writer).
    pub async fn setattr_by(&self, key: Key, mut set: SetAttr, who: Caller) -> FsResult<Attr> {
        if !who.is_root() {
            let (inode, _) = self.read_inode(key).await?;
            let times = set.atime.is_some() || set.mtime.is_some();
            let change = perm::AttrChange {
                perm: set.perm,
                uid: set.uid,
                gid: set.gid,
                truncate_by_path: set.size.is_some() && !set.through_handle,
                explicit_times: times && !set.times_now,
                times_now: times && set.times_now,
            };
            set.perm = perm::check_setattr(&inode, who, &change)?;
        }
        if let Some(size) = set.size {
            self.truncate(key, size).await?;
        }
        if let Some(t) = set.mtime {
            // An explicit mtime must survive the commit of buffered writes; set it in the
            // open state (waiting for a commit in progress) before taking the inode lock.
            self.set_open_mtime(key, Time::from_system(t)).await;
        }
        let no_meta_change = set.perm.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.atime.is_none()
            && set.mtime.is_none();
        if no_meta_change {
            return self.getattr(key).await;
        }
        // A directory's metadata value also carries its entries (inline bucket), which
        // namespace operations rewrite under its directory lock; a file's carries its
        // content reference, which commits rewrite under the inode lock. Hold both so
        // this read-modify-write loses neither (lock order: directory, then inode lock;
        // a file's directory lock is never contended).
        let _dir = self.dir_locks.lock(key).await;
        let _inode_lock = self.key_locks.lock(key).await;
        let (mut inode, _) = self.read_inode(key).await?;
        // Taking search permission away from a directory: stop handing names under it
        // to the kernel first, and before answering wait out those it holds.
        let narrowing = (inode.kind == Kind::Dir && set.perm.is_some_and(|p| p & 0o111 != 0o111))
            .then(|| self.narrowing_search(key));
        if let Some(perm) = set.perm {
            inode.perm = perm & 0o7777;
        }
        if let Some(uid) = set.uid {
            inode.uid = uid;
        }
        if let Some(gid) = set.gid {
            inode.gid = gid;
        }
        if let Some(t) = set.atime {
            inode.atime = Time::from_system(t);
        }
        if let Some(t) = set.mtime {
            inode.mtime = Time::from_system(t);
        }
        inode.ctime = Time::now();
        let version = self.write_inode(key, &inode).await?;
        self.note_version(key, version);
        if let Some(narrowing) = narrowing {
            drop(_inode_lock);
            drop(_dir);
            self.wait_out_kernel_names(key).await;
            drop(narrowing);
            return Ok(self.attr_of(key, &inode, version));
        }
        let open_here = self.files.lock().is_ok_and(|f| f.by_key.contains_key(&key));
        if open_here {
            // The reply's size must include buffered writes exactly (see `getattr`),
            // which needs the open state; a commit holding it waits for the inode lock.
            drop(_inode_lock);
            drop(_dir);
            return self.getattr(key).await;
        }
        Ok(self.attr_of(key, &inode, version))
    }

    /// Checks `mask` (R_OK=4, W_OK=2, X_OK=1; 0 = existence) for the caller against the
    /// inode's mode bits ([`perm::permits`]).
    pub async fn access(&self, key: Key, mask: u32, caller: Caller) -> FsResult<()> {
        let (inode, _) = self.read_inode(key).await?;
        perm::check(&inode, caller, mask)
    }

    pub fn statfs(&self) -> StatFs {
        // Object stores are unbounded as far as we can tell; report a large nominal size
        // so tools that check free space proceed.
        StatFs {
            blocks: 1 << 32,
            bfree: 1 << 31,
            bavail: 1 << 31,
            files: 1 << 32,
            ffree: 1 << 31,
            bsize: 4096,
            namelen: NAME_MAX_BYTES as u32,
            frsize: 4096,
        }
    }

    fn note_version(&self, key: Key, version: Version) {
        if let Ok(mut seen) = self.seen_versions.lock() {
            seen.insert(key, version);
        }
    }
}

/// A filesystem over in-memory TEEMS for unit tests: share 1, root key 2, blobs as given.
#[cfg(test)]
pub(crate) fn test_fs(blobs: Arc<dyn BlobIo>, config: FsConfig) -> Fs {
    Fs::new(
        Arc::new(crate::meta::MemTeems::new()),
        blobs,
        ShareId([1; 16]),
        Key([2; 16]),
        config,
    )
}

pub(crate) fn new_inode(kind: Kind, perm: u16, owner: Caller, data: Data) -> Inode {
    let now = Time::now();
    Inode {
        kind,
        perm: perm & 0o7777,
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        nlink: if kind == Kind::Dir { 2 } else { 1 },
        parent: None,
        data,
        blob_seq: 0,
        xattrs: None,
    }
}

pub(crate) fn random_key() -> Key {
    Key(rand::random::<[u8; 16]>())
}

pub(crate) fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid("bad name"));
    }
    if name.len() > NAME_MAX_BYTES {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MemTeems;

    #[tokio::test]
    async fn the_kernel_keeps_attributes_and_searchable_names_for_the_rest_of_their_lease() {
        async fn fs_over(teems: MemTeems) -> Fs {
            let fs = Fs::new(
                Arc::new(teems),
                Arc::new(MemBlobs::new()),
                ShareId([1; 16]),
                Key([2; 16]),
                FsConfig::default(),
            );
            fs.init(Caller::default()).await.expect("init");
            fs
        }
        let lease = Duration::from_millis(400);
        let fs = fs_over(MemTeems::new().reporting_leases(lease)).await;
        let (_, o) = fs
            .create(fs.root(), b"f", 0o644, Caller::default())
            .await
            .expect("create");
        fs.write(o.fh, 0, b"data").await.expect("write");
        let a = fs.lookup(fs.root(), b"f").await.expect("lookup");
        assert_eq!(fs.attr_ttl(&a), Duration::ZERO, "open here: nothing kept");
        fs.release(o.fh).await.expect("release");
        let a = fs.lookup(fs.root(), b"f").await.expect("lookup");
        let ttl = fs.attr_ttl(&a);
        assert!(
            ttl <= lease - KERNEL_LEASE_SLACK && ttl > lease / 2,
            "closed, leased: kept for the rest of the lease less the slack, not {ttl:?}"
        );
        // Attributes of an older version than the leased one are not kept.
        let stale = Attr {
            version: Version { seq: 0, writer: 0 },
            ..a
        };
        assert_eq!(fs.attr_ttl(&stale), Duration::ZERO);
        // Names: kept under a directory every class may search, for the rest of the lease;
        // not under one that some class may not search.
        let open_dir = fs
            .mkdir(fs.root(), b"open", 0o755, Caller::default())
            .await
            .expect("mkdir");
        let closed = fs
            .mkdir(fs.root(), b"closed", 0o750, Caller::default())
            .await
            .expect("mkdir");
        for dir in [open_dir.key, closed.key] {
            fs.mknod(dir, b"x", Kind::File, 0o644, 0, Caller::default())
                .await
                .expect("mknod");
        }
        let (_, keep) = fs
            .lookup_entry_by(open_dir.key, b"x", Caller::ROOT)
            .await
            .expect("lookup");
        assert!(keep > lease / 2 && keep <= lease, "{keep:?}");
        let (_, keep) = fs
            .lookup_entry_by(closed.key, b"x", Caller::ROOT)
            .await
            .expect("lookup");
        assert_eq!(
            keep,
            Duration::ZERO,
            "0750: others may not search, no name kept"
        );
        // Taking search permission away waits until the kept names have ended.
        let started = Instant::now();
        let set = SetAttr {
            perm: Some(0o700),
            ..SetAttr::default()
        };
        fs.setattr(open_dir.key, set.clone()).await.expect("chmod");
        assert!(
            started.elapsed() >= lease / 2,
            "chmod 0700 returned after {:?}, inside the names' lease",
            started.elapsed()
        );
        // Nothing kept any more: the next narrowing does not wait.
        let started = Instant::now();
        fs.setattr(open_dir.key, set).await.expect("chmod");
        assert!(started.elapsed() < lease / 2);
        // Without leases nothing is kept.
        let plain = fs_over(MemTeems::new()).await;
        let root = plain.getattr(plain.root()).await.expect("getattr");
        assert_eq!(plain.attr_ttl(&root), Duration::ZERO);
    }

    #[tokio::test]
    async fn superseded_blobs_are_deleted_by_the_timer_after_their_grace_only() {
        // DESIGN §9: old fragments go only after the metadata write, and only after a
        // grace period; the housekeeping task is what deletes them.
        let blobs = Arc::new(MemBlobs::new());
        // Nothing inline, so every version is blobs.
        let config = FsConfig {
            delete_grace_ms: 300,
            housekeeping_interval_ms: 20,
            inline_file_max_bytes: 0,
            inline_bucket_max_bytes: 0,
            ..FsConfig::default()
        };
        let fs = Arc::new(Fs::new(
            Arc::new(MemTeems::new()),
            blobs.clone(),
            ShareId([1; 16]),
            Key([2; 16]),
            config,
        ));
        fs.init(Caller::default()).await.expect("init");
        let task = fs.spawn_housekeeping(&tokio::runtime::Handle::current());
        let (_, o) = fs
            .create(fs.root(), b"f", 0o644, Caller::default())
            .await
            .expect("create");
        fs.write(o.fh, 0, b"one").await.expect("write");
        fs.flush(o.fh).await.expect("commit 1");
        let after_first = blobs.len();
        fs.write(o.fh, 0, b"two").await.expect("write");
        fs.flush(o.fh).await.expect("commit 2");
        fs.release(o.fh).await.expect("close");
        assert!(fs.retired_len() > 0, "the first version's blob is retired");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            blobs.len() > after_first,
            "within the grace period nothing is deleted"
        );
        let waited = Instant::now();
        while fs.retired_len() > 0 && waited.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fs.retired_len(), 0, "the timer deleted the retired blobs");
        assert_eq!(
            blobs.len(),
            after_first,
            "one version's worth of blobs left"
        );
        // At unmount, a blob still in its grace period is waited for (within the bound).
        let (_, o) = fs
            .create(fs.root(), b"g", 0o644, Caller::default())
            .await
            .expect("create");
        fs.write(o.fh, 0, b"x").await.expect("write");
        fs.flush(o.fh).await.expect("commit");
        fs.write(o.fh, 0, b"y").await.expect("write");
        fs.release(o.fh).await.expect("close");
        task.abort();
        let before = fs.retired_len();
        assert!(
            before >= 1,
            "the file's first version (and the old root bucket) are retired"
        );
        assert_eq!(fs.drain_retired_for_unmount().await, (before, 0));
    }
}
