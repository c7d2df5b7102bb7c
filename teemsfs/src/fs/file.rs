//! Open files: buffered writes, chunked contents and commits (DESIGN §9–10).
//!
//! While an inode is open in this client, one [`OpenState`] holds its content as of the
//! last open or commit (`base`) plus the chunks written since (`dirty`). All handles of the
//! inode in this client share it, so the kernel may send a write on any of them. A commit
//! (flush, fsync, last release, truncate) puts the changed chunks and, for a large file, a
//! new manifest, writes the metadata, and only then retires what the new version no longer
//! names. A file of at most one chunk is one blob; past that, chunks of `chunk_size` bytes
//! listed in a manifest, so writing one chunk re-seals that chunk and the manifest only.
//!
//! To bound memory on long sequential writes, complete dirty chunks are uploaded early
//! once `WRITE_BUFFER_BYTES` is exceeded (as blobs only; the metadata still names the old
//! version until the commit, so a crash leaves the old file plus garbage for gc). Those
//! uploads run in the background while the writer goes on; a write waits only when more
//! than `UPLOAD_IN_FLIGHT_BYTES` are in flight. A chunk keeps its bytes until its upload
//! is settled, so a failed upload puts it back in the buffer (the next write reports the
//! error; the commit uploads it again) and nothing written is lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::format::{self, Data, Inode, Kind, Manifest, Time, derive_id};
use super::{Attr, Fs, FsError, FsResult, Opened};
use crate::fs::blobs::BlobRef;
use crate::meta::{Key, Version};

/// Chunk puts in flight at once during a commit.
const COMMIT_PARALLEL: usize = 8;
/// Background chunk uploads in flight at once, over all of a client's open files.
pub(super) const UPLOAD_PARALLEL: usize = 8;
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: u64 = 4;
/// A read that is not sequential and wants at most this many bytes of a committed chunk
/// that is not cached fetches just those bytes (a ranged read of the fragments) instead
/// of the chunk.
const RANGE_READ_MAX: u64 = 256 << 10;

/// A blob's identity as the blob cache keys it: id and content hash.
type BlobKey = ([u8; 16], [u8; 32]);
/// Dirty bytes one open file may buffer before complete chunks are uploaded early.
const WRITE_BUFFER_BYTES: usize = 64 << 20;
/// Bytes of one open file's complete chunks that may be uploading in the background at
/// once; past it, a write waits for the oldest uploads.
const UPLOAD_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Which background uploads [`Fs::settle_uploads`] waits for.
#[derive(Clone, Copy)]
enum Settle {
    /// Only those already finished (never waits).
    Finished,
    /// The oldest, until at most this many bytes are in flight.
    DownTo(usize),
    All,
}

#[derive(Default)]
pub(super) struct OpenTable {
    pub(super) by_key: HashMap<Key, Arc<tokio::sync::Mutex<OpenState>>>,
    /// Handles open on each inode of `by_key`, counted under the table's mutex when the
    /// state is taken from `by_key` or put there: an open that found the state and a
    /// last release are then ordered, and a release never drops a state an open holds.
    opens: HashMap<Key, usize>,
    /// Open inodes whose last link was removed: the last release frees them. Kept here,
    /// under the table's mutex, not in the open state (whose lock a read or write may be
    /// holding): the unlink marking it and the last release removing it are then ordered.
    orphans: HashSet<Key>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

struct Handle {
    key: Key,
    writable: bool,
}

/// A blob fetch running in the background.
type Fetch = tokio::task::JoinHandle<FsResult<Arc<Vec<u8>>>>;

/// A chunk changed since the base.
enum Dirty {
    Bytes(Vec<u8>),
    /// Being uploaded in the background; the bytes stay here, for reads and in case the
    /// upload fails, until the upload is settled.
    Uploading(Arc<Vec<u8>>, tokio::task::JoinHandle<FsResult<BlobRef>>),
    /// Uploaded early as a blob, not yet named by metadata.
    Uploaded(BlobRef),
    /// Writes into a base chunk that was not fetched for them: the base is fetched and
    /// the writes applied when the chunk is read or committed (commits fetch chunks in
    /// parallel, so random writes across a file no longer wait for one chunk at a time),
    /// or not at all once the writes cover the base.
    Patched(Patches),
}

/// Writes to one chunk over its unfetched base, in the order they were made.
#[derive(Default)]
struct Patches {
    writes: Vec<(usize, Vec<u8>)>,
    bytes: usize,
    /// `[0, covered)` is written over entirely.
    covered: usize,
}

impl Patches {
    fn add(&mut self, at: usize, data: &[u8]) {
        if at <= self.covered {
            self.covered = self.covered.max(at + data.len());
        }
        self.bytes += data.len();
        self.writes.push((at, data.to_vec()));
    }

    /// `base` with the writes applied.
    fn apply(&self, mut base: Vec<u8>, chunk_size: usize) -> Vec<u8> {
        for (at, data) in &self.writes {
            write_into(&mut base, *at, data, chunk_size);
        }
        base
    }
}

pub(super) struct OpenState {
    chunk_size: u64,
    /// Content as of the last open/commit.
    base_data: Data,
    base_chunks: Vec<Option<BlobRef>>,
    /// The base content when it is inline in the metadata (chunk 0 only).
    base_inline: Option<Arc<Vec<u8>>>,
    /// Base bytes at or past this offset are gone (a truncate since the base).
    base_limit: u64,
    dirty: BTreeMap<u64, Dirty>,
    dirty_bytes: usize,
    pub(super) size: u64,
    pub(super) mtime: Time,
    pub(super) modified: bool,
    version: Version,
    next_seq: u64,
    /// Where the last read ended: a read starting there is sequential and fetches ahead.
    last_read_end: u64,
    /// Base chunks being fetched ahead, by exact blob version (so a fetch of a version the
    /// state no longer names is never used for another).
    read_ahead: std::sync::Mutex<HashMap<BlobKey, Fetch>>,
}

impl Fs {
    /// Sets the mtime a pending commit of this client's open state will write, waiting
    /// for a commit in progress (so an explicit `utimes` is never overwritten by it).
    pub(super) async fn set_open_mtime(&self, key: Key, mtime: Time) {
        let open = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.by_key.get(&key).cloned());
        if let Some(open) = open {
            open.lock().await.mtime = mtime;
        }
    }

    pub(super) fn mark_orphan_if_open(&self, key: Key) -> bool {
        let Ok(mut files) = self.files.lock() else {
            return false;
        };
        if !files.by_key.contains_key(&key) {
            return false;
        }
        files.orphans.insert(key);
        true
    }

    /// Counts one open of `key` (and its handle `fh`) closed; at the last, forgets the open
    /// state. Returns whether it was the last, and whether the inode lost its last link
    /// while open ([`Fs::mark_orphan_if_open`]), so the caller must free it.
    fn close_open(&self, key: Key, fh: Option<u64>) -> FsResult<(bool, bool)> {
        let mut files = self.files.lock().map_err(|_| FsError::BadHandle)?;
        if let Some(fh) = fh {
            files.handles.remove(&fh);
        }
        match files.opens.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok((false, false))
            }
            _ => {
                files.opens.remove(&key);
                files.by_key.remove(&key);
                Ok((true, files.orphans.remove(&key)))
            }
        }
    }

    /// Whether `key` is open here and lost its last link ([`Fs::mark_orphan_if_open`]).
    fn is_orphan(&self, key: Key) -> bool {
        self.files
            .lock()
            .is_ok_and(|files| files.orphans.contains(&key))
    }

    pub(super) async fn load_manifest(&self, manifest: &BlobRef) -> FsResult<Manifest> {
        let m: Manifest = format::decode("manifest", &self.get_blob(manifest).await?)?;
        if m.chunk_size == 0 {
            return Err(FsError::corrupt("manifest", "chunk size 0"));
        }
        Ok(m)
    }

    async fn base_of(&self, inode: &Inode) -> FsResult<(u64, Vec<Option<BlobRef>>)> {
        match &inode.data {
            Data::Empty | Data::Inline(_) => Ok((self.config.chunk_size_bytes, Vec::new())),
            Data::Single(b) => Ok((
                self.config.chunk_size_bytes.max(b.len),
                vec![Some(b.clone())],
            )),
            Data::Chunked { manifest } => {
                let m = self.load_manifest(manifest).await?;
                Ok((m.chunk_size, m.chunks))
            }
            Data::Dir { .. } => Err(FsError::IsDir),
            Data::Symlink(_) => Err(FsError::Invalid("open of a symlink")),
        }
    }

    async fn new_state(&self, inode: &Inode, version: Version) -> FsResult<OpenState> {
        let (chunk_size, base_chunks) = self.base_of(inode).await?;
        Ok(OpenState {
            chunk_size,
            base_data: inode.data.clone(),
            base_chunks,
            base_inline: match &inode.data {
                Data::Inline(bytes) => Some(Arc::new(bytes.clone())),
                _ => None,
            },
            base_limit: inode.size,
            dirty: BTreeMap::new(),
            dirty_bytes: 0,
            size: inode.size,
            mtime: inode.mtime,
            modified: false,
            version,
            next_seq: inode.blob_seq,
            last_read_end: 0,
            read_ahead: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// [`Fs::open_by`] as root, for reading or reading and writing.
    pub async fn open(&self, key: Key, writable: bool) -> FsResult<Opened> {
        let mask = super::perm::open_mask(true, writable);
        self.open_by(key, mask, super::Caller::ROOT).await
    }

    /// Opens a file: fresh metadata (close-to-open), fetched alongside the blob the name
    /// cache expects, which is kept only if the metadata names it. `who` needs the
    /// permissions in `mask` (`perm::MAY_*`) on the file; with `MAY_WRITE` the handle is
    /// writable.
    pub async fn open_by(&self, key: Key, mask: u32, who: super::Caller) -> FsResult<Opened> {
        let writable = mask & super::perm::MAY_WRITE != 0;
        let guess = self.names.guess_content(key).and_then(|(_, blob)| blob);
        let prefetch = async {
            match &guess {
                Some(b) if !self.blob_cache.contains(b) => Some(self.blobs.get(b).await),
                _ => None,
            }
        };
        let (read, fetched) = tokio::join!(self.read_inode(key), prefetch);
        let (inode, version) = read?;
        if inode.kind != Kind::Dir {
            super::perm::check(&inode, who, mask)?;
        }
        if let (Some(b), Some(Ok(plain))) = (&guess, fetched) {
            let confirmed = match &inode.data {
                Data::Single(fresh) | Data::Chunked { manifest: fresh } => fresh == b,
                _ => false,
            };
            if confirmed && plain.len() as u64 == b.len {
                self.blob_cache.insert(b, Arc::new(plain));
            }
        }
        self.open_as(key, writable, inode, version).await
    }

    /// Opens `key` whose metadata is `inode` at `version`, as just read (or written).
    async fn open_as(
        &self,
        key: Key,
        writable: bool,
        inode: Inode,
        version: Version,
    ) -> FsResult<Opened> {
        match inode.kind {
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid("open of a symlink")),
            _ => {}
        }
        self.remember_content(key, &inode, version);
        let existing = self.files.lock().ok().and_then(|mut f| {
            let state = f.by_key.get(&key).cloned()?;
            *f.opens.entry(key).or_default() += 1;
            Some(state)
        });
        let state = match existing {
            Some(state) => state,
            None => {
                let fresh = Arc::new(tokio::sync::Mutex::new(
                    self.new_state(&inode, version).await?,
                ));
                let mut files = self.files.lock().map_err(|_| FsError::BadHandle)?;
                let state = Arc::clone(files.by_key.entry(key).or_insert(fresh));
                *files.opens.entry(key).or_default() += 1;
                state
            }
        };
        {
            let mut s = state.lock().await;
            if !s.modified && s.version != version {
                // Someone committed since: start from their version.
                match self.new_state(&inode, version).await {
                    Ok(fresh) => *s = fresh,
                    Err(e) => {
                        drop(s);
                        self.close_open(key, None)?;
                        return Err(e);
                    }
                }
            }
        }
        let keep_cache = {
            let mut seen = self.seen_versions.lock().map_err(|_| FsError::BadHandle)?;
            seen.insert(key, version) == Some(version)
        };
        let mut files = self.files.lock().map_err(|_| FsError::BadHandle)?;
        files.next_fh += 1;
        let fh = files.next_fh;
        files.handles.insert(fh, Handle { key, writable });
        Ok(Opened { fh, keep_cache })
    }

    /// open(2) with `O_TRUNC` on a writable handle: the truncation joins the handle's
    /// buffered writes and is committed with them at close, so a crash while rewriting a
    /// file (`> file`) leaves its old or its new content, never an empty file in between.
    pub async fn open_truncating(
        &self,
        key: Key,
        mask: u32,
        who: super::Caller,
    ) -> FsResult<Opened> {
        let opened = self
            .open_by(key, mask | super::perm::MAY_WRITE, who)
            .await?;
        let (_, _, state) = self.handle(opened.fh)?;
        let mut s = state.lock().await;
        if s.size != 0
            && let Err(e) = self.set_size(&mut s, 0).await
        {
            drop(s);
            let _ = self.release(opened.fh).await;
            return Err(e);
        }
        Ok(Opened {
            keep_cache: false,
            ..opened
        })
    }

    /// Creates and opens a regular file.
    pub async fn create(
        &self,
        parent: Key,
        name: &[u8],
        perm: u16,
        caller: super::Caller,
    ) -> FsResult<(Attr, Opened)> {
        let inode = super::new_inode(Kind::File, perm, caller, Data::Empty);
        // Opened from the metadata the create wrote: no second read.
        let (attr, inode, version) = self.create_node_as(parent, name, inode, caller).await?;
        let opened = self.open_as(attr.key, true, inode, version).await?;
        Ok((attr, opened))
    }

    fn handle(&self, fh: u64) -> FsResult<(Key, bool, Arc<tokio::sync::Mutex<OpenState>>)> {
        let files = self.files.lock().map_err(|_| FsError::BadHandle)?;
        let h = files.handles.get(&fh).ok_or(FsError::BadHandle)?;
        let state = files.by_key.get(&h.key).ok_or(FsError::BadHandle)?;
        Ok((h.key, h.writable, Arc::clone(state)))
    }

    /// The key a handle refers to.
    pub fn handle_key(&self, fh: u64) -> FsResult<Key> {
        Ok(self.handle(fh)?.0)
    }

    /// Bytes of chunk `idx` as they are now (dirty or base), possibly shorter than the
    /// chunk (the rest reads as zeros).
    async fn chunk_bytes(&self, s: &OpenState, idx: u64) -> FsResult<Arc<Vec<u8>>> {
        match s.dirty.get(&idx) {
            Some(Dirty::Bytes(b)) => Ok(Arc::new(b.clone())),
            Some(Dirty::Uploading(bytes, _)) => Ok(Arc::clone(bytes)),
            Some(Dirty::Uploaded(blob)) => self.get_blob(blob).await,
            Some(Dirty::Patched(p)) => {
                let base = if p.covered >= Self::base_len(s, idx) {
                    Vec::new()
                } else {
                    self.base_chunk_bytes(s, idx).await?.as_ref().clone()
                };
                Ok(Arc::new(p.apply(base, s.chunk_size as usize)))
            }
            None => self.base_chunk_bytes(s, idx).await,
        }
    }

    /// Length of base chunk `idx` as the open state still sees it.
    fn base_len(s: &OpenState, idx: u64) -> usize {
        if idx.saturating_mul(s.chunk_size) >= s.base_limit {
            return 0;
        }
        if let (0, Some(inline)) = (idx, &s.base_inline) {
            return inline.len();
        }
        match s.base_chunks.get(idx as usize) {
            Some(Some(blob)) => blob.len as usize,
            _ => 0,
        }
    }

    /// Whether a write of chunk `idx` can be kept as a patch instead of loading the base
    /// first: the base is a blob (cached or not: a patch is the bytes written, where a
    /// loaded chunk is a whole chunk of buffered bytes that must upload again), and the
    /// chunk's patches stay within one chunk's worth of bytes (or cover the base, which
    /// then need not be fetched).
    fn patch_instead(&self, s: &OpenState, idx: u64, at: usize, len: usize) -> bool {
        let cs = s.chunk_size as usize;
        match s.dirty.get(&idx) {
            None => !(idx == 0 && s.base_inline.is_some()) && Self::base_len(s, idx) > 0,
            Some(Dirty::Patched(p)) => {
                p.bytes + len <= cs || (at <= p.covered && at + len >= Self::base_len(s, idx))
            }
            Some(_) => false,
        }
    }

    /// Bytes of base chunk `idx` (no dirty state), possibly shorter than the chunk.
    async fn base_chunk_bytes(&self, s: &OpenState, idx: u64) -> FsResult<Arc<Vec<u8>>> {
        if idx.saturating_mul(s.chunk_size) >= s.base_limit {
            return Ok(Arc::new(Vec::new()));
        }
        if let (0, Some(inline)) = (idx, &s.base_inline) {
            return Ok(Arc::clone(inline));
        }
        match s.base_chunks.get(idx as usize) {
            Some(Some(blob)) => self.base_blob(s, blob).await,
            _ => Ok(Arc::new(Vec::new())),
        }
    }

    /// A base chunk's bytes: from its read-ahead fetch if one was started (a failed one is
    /// retried here, so its error is this read's), else the cache or the stores.
    async fn base_blob(&self, s: &OpenState, blob: &BlobRef) -> FsResult<Arc<Vec<u8>>> {
        let pending = s
            .read_ahead
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&(blob.id, blob.content_hash())));
        if let Some(task) = pending
            && let Ok(Ok(plain)) = task.await
        {
            return Ok(plain);
        }
        self.get_blob(blob).await
    }

    /// Bytes `at .. at + len` of committed chunk `idx` by a ranged read, when the chunk is
    /// a blob that is neither dirty, cached, cut by a truncate nor being fetched ahead.
    /// `None`: read the chunk whole.
    async fn base_range(&self, s: &OpenState, idx: u64, at: u64, len: u64) -> Option<Vec<u8>> {
        if s.dirty.contains_key(&idx) || (idx == 0 && s.base_inline.is_some()) {
            return None;
        }
        let Some(Some(blob)) = s.base_chunks.get(usize::try_from(idx).ok()?) else {
            return None;
        };
        let chunk_start = idx.saturating_mul(s.chunk_size);
        if chunk_start.saturating_add(blob.len) > s.base_limit || self.blob_cache.contains(blob) {
            return None;
        }
        if s.read_ahead
            .lock()
            .ok()?
            .contains_key(&(blob.id, blob.content_hash()))
        {
            return None;
        }
        self.blobs.get_range(blob, at, len).await
    }

    /// Starts fetching the base chunks after `idx` that are neither dirty, cached nor
    /// already on their way (at most `READ_AHEAD_CHUNKS` ahead).
    fn read_ahead(&self, s: &OpenState, idx: u64) {
        let Ok(mut pending) = s.read_ahead.lock() else {
            return;
        };
        // A finished fetch has put its chunk in the blob cache; only running ones matter.
        pending.retain(|_, task| !task.is_finished());
        for next in idx + 1..=idx + READ_AHEAD_CHUNKS {
            if next.saturating_mul(s.chunk_size) >= s.base_limit || s.dirty.contains_key(&next) {
                break;
            }
            let Some(Some(blob)) = s.base_chunks.get(next as usize) else {
                continue;
            };
            let key = (blob.id, blob.content_hash());
            if pending.contains_key(&key) || self.blob_cache.contains(blob) {
                continue;
            }
            pending.insert(key, tokio::spawn(self.fetch_blob(blob.clone())));
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        let (_, _, state) = self.handle(fh)?;
        let mut s = state.lock().await;
        if offset >= s.size {
            return Ok(Vec::new());
        }
        let end = s.size.min(offset.saturating_add(u64::from(len)));
        // A sequential reader's next chunks are fetched while this read is served.
        let sequential = offset == s.last_read_end;
        if sequential && end > 0 {
            self.read_ahead(&s, (end - 1) / s.chunk_size);
        }
        // Reads of a sequential reader may arrive slightly out of order (the kernel sends
        // several at once): only one far from the last is random enough for a ranged read.
        let near = offset.abs_diff(s.last_read_end) <= s.chunk_size;
        s.last_read_end = end;
        let s = s;
        let mut out = vec![0u8; (end - offset) as usize];
        let cs = s.chunk_size;
        let mut pos = offset;
        while pos < end {
            let idx = pos / cs;
            let in_chunk = (pos % cs) as usize;
            let take = ((cs - pos % cs).min(end - pos)) as usize;
            let dst_from = (pos - offset) as usize;
            if !near
                && take as u64 <= RANGE_READ_MAX
                && let Some(part) = self.base_range(&s, idx, in_chunk as u64, take as u64).await
            {
                // Past the blob's end (within the file) the chunk reads as zeros.
                if let Some(dst) = out.get_mut(dst_from..dst_from + part.len().min(take)) {
                    dst.copy_from_slice(part.get(..dst.len()).unwrap_or_default());
                }
                pos += take as u64;
                continue;
            }
            let bytes = self.chunk_bytes(&s, idx).await?;
            if in_chunk < bytes.len() {
                let avail = (bytes.len() - in_chunk).min(take);
                if let (Some(dst), Some(src)) = (
                    out.get_mut(dst_from..dst_from + avail),
                    bytes.get(in_chunk..in_chunk + avail),
                ) {
                    dst.copy_from_slice(src);
                }
            }
            pos += take as u64;
        }
        Ok(out)
    }

    /// Makes chunk `idx` dirty as bytes (loading it from the base or an early upload).
    async fn dirty_chunk<'a>(&self, s: &'a mut OpenState, idx: u64) -> FsResult<&'a mut Vec<u8>> {
        // An upload in progress settles first: failed, its bytes are dirty again (what is
        // wanted here); done, its blob is loaded back below and deleted.
        let _ = self.settle_upload(s, idx).await;
        if !matches!(s.dirty.get(&idx), Some(Dirty::Bytes(_))) {
            let current = self.chunk_bytes(s, idx).await?;
            match s.dirty.remove(&idx) {
                Some(Dirty::Uploaded(blob)) => {
                    // Never named by metadata: no reader can be fetching it.
                    if let Err(e) = self.blobs.delete(&blob).await {
                        tracing::warn!(error = %e, "deleting an early-uploaded chunk failed");
                    }
                }
                Some(Dirty::Patched(p)) => s.dirty_bytes = s.dirty_bytes.saturating_sub(p.bytes),
                _ => {}
            }
            s.dirty_bytes += current.len();
            s.dirty.insert(idx, Dirty::Bytes(current.as_ref().clone()));
        }
        match s.dirty.get_mut(&idx) {
            Some(Dirty::Bytes(b)) => Ok(b),
            _ => Err(FsError::BadHandle),
        }
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (key, writable, state) = self.handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::TooBig)?;
        if end > self.config.max_file_size_bytes {
            return Err(FsError::TooBig);
        }
        let mut s = state.lock().await;
        let cs = s.chunk_size;
        let mut pos = offset;
        while pos < end {
            let idx = pos / cs;
            let in_chunk = (pos % cs) as usize;
            let take = ((cs - pos % cs).min(end - pos)) as usize;
            let src_from = (pos - offset) as usize;
            let src = data.get(src_from..src_from + take).unwrap_or_default();
            if self.patch_instead(&s, idx, in_chunk, take) {
                if let Dirty::Patched(p) = s
                    .dirty
                    .entry(idx)
                    .or_insert_with(|| Dirty::Patched(Patches::default()))
                {
                    p.add(in_chunk, src);
                }
                s.dirty_bytes += take;
                pos += take as u64;
                continue;
            }
            let chunk = self.dirty_chunk(&mut s, idx).await?;
            let before = chunk.len();
            write_into(chunk, in_chunk, src, cs as usize);
            let grown = chunk.len() - before;
            s.dirty_bytes += grown;
            pos += take as u64;
        }
        s.size = s.size.max(end);
        s.modified = true;
        s.mtime = Time::now();
        // This write's bytes are buffered whatever happens below; an error says that an
        // earlier background upload failed (its chunk is buffered again).
        let reaped = self.settle_uploads(&mut s, Settle::Finished).await;
        let mut fetched = Ok(());
        if s.dirty_bytes > WRITE_BUFFER_BYTES {
            // Patched chunks become whole chunks that can upload early, so buffered
            // writes stay bounded; the chunk this write ended in is likely still being
            // filled and keeps its patches.
            fetched = self
                .materialize_patches(&mut s, (end - 1) / cs, COMMIT_PARALLEL)
                .await;
            self.start_uploads(key, &mut s);
        }
        let waited = self
            .settle_uploads(&mut s, Settle::DownTo(UPLOAD_IN_FLIGHT_BYTES))
            .await;
        reaped.and(fetched).and(waited)?;
        Ok(data.len() as u32)
    }

    /// Turns up to `max` patched chunks other than `skip` into bytes, those holding the
    /// most patch bytes first: the base fetched (all of them at once) unless the patches
    /// cover it. On error nothing changes. Bounded so that buffered bytes stay bounded:
    /// each write past the buffer makes a few chunks whole and waits for their uploads.
    async fn materialize_patches(&self, s: &mut OpenState, skip: u64, max: usize) -> FsResult<()> {
        let mut patched: Vec<(usize, u64)> = s
            .dirty
            .iter()
            .filter_map(|(i, d)| match d {
                Dirty::Patched(p) if *i != skip => Some((p.bytes, *i)),
                _ => None,
            })
            .collect();
        patched.sort_unstable_by(|a, b| b.cmp(a));
        let patched: Vec<u64> = patched.into_iter().take(max).map(|(_, i)| i).collect();
        if patched.is_empty() {
            return Ok(());
        }
        let state: &OpenState = s;
        let built: Vec<(u64, Arc<Vec<u8>>)> = stream::iter(patched)
            .map(|idx| async move { Ok::<_, FsError>((idx, self.chunk_bytes(state, idx).await?)) })
            .buffered(COMMIT_PARALLEL)
            .try_collect()
            .await?;
        for (idx, bytes) in built {
            if let Some(Dirty::Patched(p)) = s.dirty.remove(&idx) {
                s.dirty_bytes = s.dirty_bytes.saturating_sub(p.bytes);
            }
            let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
            s.dirty_bytes += bytes.len();
            s.dirty.insert(idx, Dirty::Bytes(bytes));
        }
        Ok(())
    }

    /// Starts a background upload of every complete dirty chunk (at most `UPLOAD_PARALLEL`
    /// puts of this client run at once).
    fn start_uploads(&self, key: Key, s: &mut OpenState) {
        let cs = s.chunk_size as usize;
        let full: Vec<u64> = s
            .dirty
            .iter()
            .filter(|(_, d)| matches!(d, Dirty::Bytes(b) if b.len() == cs))
            .map(|(i, _)| *i)
            .collect();
        for idx in full {
            if let Some(Dirty::Bytes(bytes)) = s.dirty.remove(&idx) {
                s.next_seq += 1;
                s.dirty_bytes = s.dirty_bytes.saturating_sub(bytes.len());
                let bytes = Arc::new(bytes);
                let upload = self.upload(
                    derive_id(&key, "chunk", idx),
                    s.next_seq,
                    Arc::clone(&bytes),
                );
                s.dirty
                    .insert(idx, Dirty::Uploading(bytes, tokio::spawn(upload)));
            }
        }
    }

    /// One chunk's put, as a task that owns what it needs.
    fn upload(
        &self,
        id: [u8; 16],
        seq: u64,
        bytes: Arc<Vec<u8>>,
    ) -> impl std::future::Future<Output = FsResult<BlobRef>> + Send + 'static {
        let blobs = Arc::clone(&self.blobs);
        let cache = self.blob_cache.clone();
        let slots = Arc::clone(&self.upload_slots);
        async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|_| FsError::Blob("upload slots closed".into()))?;
            let blob = blobs.put(id, seq, &bytes).await?;
            cache.insert(&blob, bytes);
            Ok(blob)
        }
    }

    /// Waits for chunk `idx`'s background upload, if it has one: done, the chunk is
    /// `Uploaded`; failed, its bytes are dirty again and the error is returned.
    async fn settle_upload(&self, s: &mut OpenState, idx: u64) -> FsResult<()> {
        if !matches!(s.dirty.get(&idx), Some(Dirty::Uploading(..))) {
            return Ok(());
        }
        let Some(Dirty::Uploading(bytes, task)) = s.dirty.remove(&idx) else {
            return Ok(());
        };
        let result = match task.await {
            Ok(result) => result,
            Err(e) => Err(FsError::Blob(format!("background chunk upload: {e}"))),
        };
        match result {
            Ok(blob) => {
                s.dirty.insert(idx, Dirty::Uploaded(blob));
                Ok(())
            }
            Err(e) => {
                let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
                s.dirty_bytes += bytes.len();
                s.dirty.insert(idx, Dirty::Bytes(bytes));
                Err(e)
            }
        }
    }

    /// Settles background uploads as `mode` says, oldest chunk first; returns the first
    /// failure (every failed chunk is dirty again).
    async fn settle_uploads(&self, s: &mut OpenState, mode: Settle) -> FsResult<()> {
        let mut first_error = None;
        loop {
            let in_flight: usize = s
                .dirty
                .values()
                .map(|d| match d {
                    Dirty::Uploading(bytes, _) => bytes.len(),
                    _ => 0,
                })
                .sum();
            let next = s.dirty.iter().find_map(|(idx, d)| match d {
                Dirty::Uploading(_, task) => {
                    let due = match mode {
                        Settle::Finished => task.is_finished(),
                        Settle::DownTo(max) => in_flight > max,
                        Settle::All => true,
                    };
                    due.then_some(*idx)
                }
                _ => None,
            });
            let Some(idx) = next else { break };
            if let Err(e) = self.settle_upload(s, idx).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sets the size of an open state (truncate or extend).
    async fn set_size(&self, s: &mut OpenState, size: u64) -> FsResult<()> {
        if size > self.config.max_file_size_bytes {
            return Err(FsError::TooBig);
        }
        if size < s.size {
            // Failed uploads are dirty again; what the cut drops is dropped below.
            let _ = self.settle_uploads(s, Settle::All).await;
            let cs = s.chunk_size;
            let keep_chunks = size.div_ceil(cs);
            let dropped: Vec<u64> = s.dirty.range(keep_chunks..).map(|(i, _)| *i).collect();
            for i in dropped {
                match s.dirty.remove(&i) {
                    Some(Dirty::Bytes(b)) => s.dirty_bytes = s.dirty_bytes.saturating_sub(b.len()),
                    Some(Dirty::Patched(p)) => {
                        s.dirty_bytes = s.dirty_bytes.saturating_sub(p.bytes)
                    }
                    // Never named by metadata: no reader can be fetching it.
                    Some(Dirty::Uploaded(blob)) => {
                        if let Err(e) = self.blobs.delete(&blob).await {
                            tracing::warn!(error = %e, "deleting a cut early-uploaded chunk failed");
                        }
                    }
                    _ => {}
                }
            }
            if !size.is_multiple_of(cs) {
                let tail = (size % cs) as usize;
                let chunk = self.dirty_chunk(s, size / cs).await?;
                chunk.truncate(tail);
            }
            s.base_limit = s.base_limit.min(size);
        }
        s.size = size;
        s.modified = true;
        s.mtime = Time::now();
        Ok(())
    }

    /// truncate(2)/ftruncate(2): applied to this client's open state if there is one, and
    /// committed at once.
    pub(super) async fn truncate(&self, key: Key, size: u64) -> FsResult<()> {
        let existing = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.by_key.get(&key).cloned());
        match existing {
            Some(state) => {
                let mut s = state.lock().await;
                self.set_size(&mut s, size).await?;
                self.commit(key, &mut s).await
            }
            None => {
                let (inode, version) = self.read_inode(key).await?;
                match inode.kind {
                    Kind::Dir => return Err(FsError::IsDir),
                    Kind::File => {}
                    _ => return Err(FsError::Invalid("truncate of a special file")),
                }
                let mut s = self.new_state(&inode, version).await?;
                self.set_size(&mut s, size).await?;
                self.commit(key, &mut s).await
            }
        }
    }

    /// fallocate(2) on an open file. There is no space to reserve in an object store, so
    /// mode 0 only makes the file at least `offset + len` bytes long (the new bytes read as
    /// zeros and cost nothing until written), committed at once as `ftruncate` is, and
    /// `FALLOC_FL_KEEP_SIZE` changes nothing. Punching holes, zeroing, collapsing and
    /// inserting ranges are not supported (docs/SEMANTICS.md §5).
    pub async fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(FsError::Unsupported(
                "fallocate modes other than 0 and KEEP_SIZE",
            ));
        }
        if len == 0 {
            return Err(FsError::Invalid("fallocate of zero bytes"));
        }
        let (key, writable, state) = self.handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        let end = offset.checked_add(len).ok_or(FsError::TooBig)?;
        if end > self.config.max_file_size_bytes {
            return Err(FsError::TooBig);
        }
        let mut s = state.lock().await;
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 || end <= s.size {
            return Ok(());
        }
        self.set_size(&mut s, end).await?;
        self.commit(key, &mut s).await
    }

    /// Bytes chunk `idx` must have in a file of `size` bytes.
    fn chunk_len(size: u64, cs: u64, idx: u64) -> u64 {
        size.saturating_sub(idx * cs).min(cs)
    }

    /// A blob holding chunk `idx` as it must be stored: reused if it already has the right
    /// length, else re-sealed with the tail zero-filled or cut.
    async fn sealed_chunk(
        &self,
        key: Key,
        s: &OpenState,
        idx: u64,
        want: u64,
        seq: u64,
        reuse_base: bool,
    ) -> FsResult<Option<BlobRef>> {
        let reuse = match s.dirty.get(&idx) {
            Some(Dirty::Uploaded(b)) => Some(b.clone()),
            Some(Dirty::Bytes(_) | Dirty::Uploading(..) | Dirty::Patched(_)) => None,
            None if idx.saturating_mul(s.chunk_size) >= s.base_limit => return Ok(None),
            // Inline base bytes become a blob.
            None if idx == 0 && s.base_inline.is_some() => None,
            None => match s.base_chunks.get(idx as usize) {
                Some(Some(b)) if reuse_base => Some(b.clone()),
                Some(Some(_)) => None,
                // A hole stays a hole.
                _ => return Ok(None),
            },
        };
        if let Some(b) = reuse
            && b.len == want
        {
            return Ok(Some(b));
        }
        let mut bytes = self.chunk_bytes(s, idx).await?.as_ref().clone();
        bytes.resize(want as usize, 0);
        Ok(Some(
            self.put_blob(derive_id(&key, "chunk", idx), seq, bytes)
                .await?,
        ))
    }

    /// Commits buffered changes: blobs first, then metadata, then retiring the old blobs.
    async fn commit(&self, key: Key, s: &mut OpenState) -> FsResult<()> {
        if !s.modified {
            return Ok(());
        }
        // Background uploads finish first; one that failed left its chunk dirty, and it is
        // put again below (a failure then is returned).
        let _ = self.settle_uploads(s, Settle::All).await;
        // From the fresh read to the metadata write, no other read-modify-write of this
        // inode by this client (setattr, xattrs, link counts) may interleave.
        let _inode_lock = self.key_locks.lock(key).await;
        let (mut fresh, _) = match self.read_inode(key).await {
            Ok(read) => read,
            Err(FsError::NotFound) if self.is_orphan(key) => {
                s.modified = false;
                return Ok(());
            }
            // Another client removed the file while we had it open.
            Err(FsError::NotFound) => return Err(FsError::Stale),
            Err(e) => return Err(e),
        };
        let cs = s.chunk_size;
        // If another client committed since our base, its commit retires our base blobs
        // after the grace period: copy what we still use instead of naming them.
        let reuse_base = fresh.data == s.base_data;
        s.next_seq = s.next_seq.max(fresh.blob_seq) + 1;
        let seq = s.next_seq;
        let size = s.size;
        let (new_data, new_chunks) = if size == 0 {
            (Data::Empty, Vec::new())
        } else if size <= self.config.inline_file_max_bytes && size <= cs {
            let mut bytes = self.chunk_bytes(s, 0).await?.as_ref().clone();
            bytes.resize(size as usize, 0);
            (Data::Inline(bytes), Vec::new())
        } else if size <= cs {
            let blob = self.sealed_chunk(key, s, 0, size, seq, reuse_base).await?;
            match blob {
                Some(b) => (Data::Single(b.clone()), vec![Some(b)]),
                None => {
                    let b = self
                        .put_blob(derive_id(&key, "chunk", 0), seq, vec![0; size as usize])
                        .await?;
                    (Data::Single(b.clone()), vec![Some(b)])
                }
            }
        } else {
            let n = size.div_ceil(cs);
            let state: &OpenState = s;
            let chunks: Vec<Option<BlobRef>> = stream::iter(0..n)
                .map(|idx| {
                    self.sealed_chunk(
                        key,
                        state,
                        idx,
                        Self::chunk_len(size, cs, idx),
                        seq,
                        reuse_base,
                    )
                })
                .buffered(COMMIT_PARALLEL)
                .try_collect()
                .await?;
            let manifest = Manifest {
                chunk_size: cs,
                chunks: chunks.clone(),
            };
            let m = self
                .put_blob(
                    derive_id(&key, "manifest", 0),
                    seq,
                    format::encode(&manifest),
                )
                .await?;
            (Data::Chunked { manifest: m }, chunks)
        };
        // What the version being replaced named: its chunks are known when it is our base.
        let mut old: Vec<BlobRef> = match &fresh.data {
            Data::Single(b) => vec![b.clone()],
            Data::Chunked { manifest } => {
                let mut v = vec![manifest.clone()];
                if fresh.data == s.base_data {
                    v.extend(s.base_chunks.iter().flatten().cloned());
                }
                v
            }
            _ => Vec::new(),
        };
        // Early uploads that the final version does not name are garbage too.
        old.extend(s.dirty.values().filter_map(|d| match d {
            Dirty::Uploaded(b) => Some(b.clone()),
            Dirty::Bytes(_) | Dirty::Uploading(..) | Dirty::Patched(_) => None,
        }));
        let keep: std::collections::HashSet<&BlobRef> = new_chunks.iter().flatten().collect();
        let old: Vec<BlobRef> = old.into_iter().filter(|b| !keep.contains(b)).collect();
        fresh.data = new_data;
        fresh.size = size;
        fresh.mtime = s.mtime;
        fresh.ctime = Time::now();
        fresh.blob_seq = seq;
        let version = self.write_inode(key, &fresh).await?;
        self.retire(old);
        s.base_data = fresh.data.clone();
        s.base_chunks = new_chunks;
        s.base_inline = match &fresh.data {
            Data::Inline(bytes) => Some(Arc::new(bytes.clone())),
            _ => None,
        };
        s.base_limit = size;
        s.dirty.clear();
        s.dirty_bytes = 0;
        s.modified = false;
        s.version = version;
        self.note_version(key, version);
        self.remember_content(key, &fresh, version);
        Ok(())
    }

    /// flush(2) (every close): commit, returning any error to the caller.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let (key, _, state) = self.handle(fh)?;
        let mut s = state.lock().await;
        self.commit(key, &mut s).await
    }

    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh).await
    }

    /// Closes a handle; the last handle of an inode commits and drops the open state, and
    /// frees the inode if its last link went while it was open.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let (key, _, state) = self.handle(fh)?;
        let mut s = state.lock().await;
        let result = self.commit(key, &mut s).await;
        drop(s);
        let (last, orphaned) = self.close_open(key, Some(fh))?;
        if last && orphaned {
            // Under the inode lock, as `link` checks the count: no new name can
            // appear between the read and the free.
            let _inode_lock = self.key_locks.lock(key).await;
            match self.read_inode(key).await {
                Ok((inode, _)) if inode.nlink == 0 => self.free_inode(key, &inode).await?,
                Ok(_) | Err(FsError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        result
    }
}

/// Writes `src` into a chunk buffer at `at`, zero-filling a hole before it. Appended bytes
/// are copied once (no zero-fill first), and a buffer that a long write is filling gets
/// the whole chunk's capacity at once instead of growing (and being copied) step by step.
fn write_into(chunk: &mut Vec<u8>, at: usize, src: &[u8], chunk_size: usize) {
    /// Writes at least this long fill a chunk sequentially: reserve all of it.
    const STREAMING_WRITE_BYTES: usize = 64 << 10;
    let end = at + src.len();
    if end > chunk.capacity() && src.len() >= STREAMING_WRITE_BYTES {
        chunk.reserve_exact(chunk_size.max(end) - chunk.len());
    }
    if chunk.len() < at {
        chunk.resize(at, 0);
    }
    let overwrite = chunk.len().min(end) - at;
    if let (Some(dst), Some(head)) = (chunk.get_mut(at..at + overwrite), src.get(..overwrite)) {
        dst.copy_from_slice(head);
    }
    chunk.extend_from_slice(src.get(overwrite..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::write_into;
    use crate::fs::{Caller, Fs, FsConfig, MemBlobs, SetAttr};
    use crate::meta::{Key, MemTeems, ShareId};

    /// Blobs whose puts fail while `failing` is set (a store outage during a long write).
    struct OutageBlobs {
        inner: MemBlobs,
        failing: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl crate::fs::BlobIo for OutageBlobs {
        async fn put(
            &self,
            id: [u8; 16],
            version: u64,
            plain: &[u8],
        ) -> crate::fs::FsResult<crate::fs::BlobRef> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::fs::FsError::Blob("stores unreachable".into()));
            }
            self.inner.put(id, version, plain).await
        }
        async fn get(&self, blob: &crate::fs::BlobRef) -> crate::fs::FsResult<Vec<u8>> {
            self.inner.get(blob).await
        }
        async fn delete(&self, blob: &crate::fs::BlobRef) -> crate::fs::FsResult<()> {
            self.inner.delete(blob).await
        }
    }

    /// The open state of a file while a read or write holds it (its lock), as one waiting
    /// on a store does: an unlink then still has the last release free the inode, and an
    /// open that found the state while its last release waited keeps it.
    #[tokio::test]
    async fn unlinks_and_opens_racing_the_last_release_keep_the_open_table_right() {
        let fs = Arc::new(crate::fs::test_fs(
            Arc::new(MemBlobs::new()),
            FsConfig::default(),
        ));
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let root = fs.root();
        let state_of = |key| {
            fs.files
                .lock()
                .expect("table")
                .by_key
                .get(&key)
                .cloned()
                .expect("open state")
        };

        // The last name goes while the state is busy.
        let (f, opened) = fs.create(root, b"f", 0o644, me).await.expect("create");
        fs.write(opened.fh, 0, b"hello").await.expect("write");
        let state = state_of(f.key);
        let busy = state.lock().await;
        fs.unlink(root, b"f").await.expect("unlink");
        drop(busy);
        fs.release(opened.fh).await.expect("release");
        assert!(
            matches!(
                fs.read_inode(f.key).await,
                Err(crate::fs::FsError::NotFound)
            ),
            "the inode unlinked while open was not freed by its last release"
        );

        // A release and an open both wait for the busy state; the release goes first.
        let (g, opened) = fs.create(root, b"g", 0o644, me).await.expect("create");
        fs.write(opened.fh, 0, b"data").await.expect("write");
        let state = state_of(g.key);
        let busy = state.lock().await;
        let release = {
            let fs = Arc::clone(&fs);
            tokio::spawn(async move { fs.release(opened.fh).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reopen = {
            let fs = Arc::clone(&fs);
            tokio::spawn(async move { fs.open(g.key, false).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(busy);
        release.await.expect("join").expect("release");
        let reopened = reopen.await.expect("join").expect("open");
        // Opened concurrently with the commit: either content is allowed, a lost handle is not.
        let read = fs
            .read(reopened.fh, 0, 10)
            .await
            .expect("read through the new handle");
        assert!(read.is_empty() || read == b"data", "{read:?}");
        fs.release(reopened.fh).await.expect("release");
        let files = fs.files.lock().expect("table");
        assert!(
            files.by_key.is_empty() && files.opens.is_empty() && files.orphans.is_empty(),
            "open state left behind"
        );
    }

    /// fallocate: mode 0 lengthens the file (committed at once, the new bytes zeros),
    /// KEEP_SIZE and ranges inside the file change nothing, other modes are refused, and
    /// so are a read-only handle, an empty range and a size past the limit.
    #[tokio::test]
    async fn fallocate_lengthens_a_file_and_refuses_what_it_does_not_support() {
        let config = FsConfig::default();
        let max = config.max_file_size_bytes;
        let fs = crate::fs::test_fs(Arc::new(MemBlobs::new()), config);
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let (f, opened) = fs.create(fs.root(), b"f", 0o644, me).await.expect("create");
        fs.write(opened.fh, 0, b"hello").await.expect("write");
        async fn committed_size(fs: &Fs, key: Key) -> u64 {
            fs.read_inode(key).await.expect("inode").0.size
        }

        fs.fallocate(opened.fh, 2, 98, 0).await.expect("fallocate");
        assert_eq!(committed_size(&fs, f.key).await, 100, "committed at once");
        let read = fs.read(opened.fh, 0, 200).await.expect("read");
        assert_eq!(&read[..5], b"hello");
        assert_eq!(read.len(), 100);
        assert!(read[5..].iter().all(|b| *b == 0));

        // Inside the file, and with KEEP_SIZE past its end: nothing changes.
        fs.fallocate(opened.fh, 0, 10, 0).await.expect("inside");
        fs.fallocate(opened.fh, 50, 1000, libc::FALLOC_FL_KEEP_SIZE)
            .await
            .expect("keep size");
        assert_eq!(committed_size(&fs, f.key).await, 100);

        let refused = [
            (
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                10,
                libc::EOPNOTSUPP,
            ),
            (libc::FALLOC_FL_ZERO_RANGE, 0, 10, libc::EOPNOTSUPP),
            (0, 0, 0, libc::EINVAL),
            (0, max, 1, libc::EFBIG),
            (0, u64::MAX, 1, libc::EFBIG),
        ];
        for (mode, offset, len, errno) in refused {
            let e = fs
                .fallocate(opened.fh, offset, len, mode)
                .await
                .expect_err("refused");
            assert_eq!(e.errno(), errno, "mode {mode:#x} at {offset}+{len}: {e}");
        }
        fs.release(opened.fh).await.expect("release");

        let ro = fs.open(f.key, false).await.expect("open read-only");
        let e = fs
            .fallocate(ro.fh, 0, 1000, 0)
            .await
            .expect_err("read-only");
        assert_eq!(e.errno(), libc::EBADF);
        fs.release(ro.fh).await.expect("release");
        assert_eq!(committed_size(&fs, f.key).await, 100);
    }

    /// A file of at most `inline_file_max_bytes` keeps its bytes in its metadata: writing
    /// and reading it touch no store. Growing past the limit moves it to a blob, shrinking
    /// back moves it inline again and retires the blob; the content is right throughout.
    #[tokio::test]
    async fn small_files_live_inline_and_move_to_a_blob_and_back() {
        let blobs = Arc::new(MemBlobs::new());
        let config = FsConfig {
            inline_file_max_bytes: 100,
            delete_grace_ms: 0,
            ..FsConfig::default()
        };
        let teems = MemTeems::new();
        let fs = Fs::new(
            Arc::new(teems.clone()),
            Arc::clone(&blobs) as Arc<dyn crate::fs::BlobIo>,
            ShareId([1; 16]),
            Key([2; 16]),
            config.clone(),
        );
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let stored = blobs.len();
        async fn read_all(fs: &Fs, key: Key) -> Vec<u8> {
            let o = fs.open(key, false).await.expect("open");
            let got = fs.read(o.fh, 0, 1 << 20).await.expect("read");
            fs.release(o.fh).await.expect("close");
            got
        }
        let (attr, o) = fs
            .create(fs.root(), b"small", 0o644, me)
            .await
            .expect("create");
        fs.write(o.fh, 0, &[7u8; 100]).await.expect("write");
        fs.release(o.fh).await.expect("close");
        assert_eq!(
            blobs.len(),
            stored,
            "a 100-byte file (and a one-entry directory) is stored inline"
        );
        // Another client, no caches: the bytes come from the metadata alone.
        let other = Fs::new(
            Arc::new(teems.clone()),
            Arc::clone(&blobs) as Arc<dyn crate::fs::BlobIo>,
            ShareId([1; 16]),
            Key([2; 16]),
            config,
        );
        assert_eq!(read_all(&other, attr.key).await, vec![7u8; 100]);

        let o = fs.open(attr.key, true).await.expect("open");
        fs.write(o.fh, 100, &[8u8; 1])
            .await
            .expect("append past the limit");
        fs.release(o.fh).await.expect("close");
        assert_eq!(blobs.len(), stored + 1, "101 bytes are one blob");
        let mut want = vec![7u8; 100];
        want.push(8);
        assert_eq!(read_all(&other, attr.key).await, want);

        fs.setattr(
            attr.key,
            SetAttr {
                size: Some(50),
                ..SetAttr::default()
            },
        )
        .await
        .expect("truncate");
        assert_eq!(
            read_all(&other, attr.key).await,
            vec![7u8; 50],
            "back inline, cut"
        );
        fs.drain_retired().await;
        assert_eq!(
            blobs.len(),
            stored,
            "the blob version is retired and deleted"
        );
    }

    /// Blobs whose puts wait until the gate opens (a slow store).
    struct GatedBlobs {
        inner: MemBlobs,
        open: tokio::sync::watch::Receiver<bool>,
    }

    #[async_trait::async_trait]
    impl crate::fs::BlobIo for GatedBlobs {
        async fn put(
            &self,
            id: [u8; 16],
            version: u64,
            plain: &[u8],
        ) -> crate::fs::FsResult<crate::fs::BlobRef> {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
            self.inner.put(id, version, plain).await
        }
        async fn get(&self, blob: &crate::fs::BlobRef) -> crate::fs::FsResult<Vec<u8>> {
            self.inner.get(blob).await
        }
        async fn delete(&self, blob: &crate::fs::BlobRef) -> crate::fs::FsResult<()> {
            self.inner.delete(blob).await
        }
    }

    /// Early uploads run in the background: with the stores stalled, a long write goes on
    /// until `UPLOAD_IN_FLIGHT_BYTES` are in flight (it does not wait for each upload), the
    /// chunks being uploaded read back from memory, and once the stores move the commit
    /// names every byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_write_goes_on_while_its_chunks_upload() {
        let (gate, open) = tokio::sync::watch::channel(false);
        let blobs = Arc::new(GatedBlobs {
            inner: MemBlobs::new(),
            open,
        });
        let fs = crate::fs::test_fs(Arc::clone(&blobs) as _, FsConfig::default());
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let (attr, opened) = fs
            .create(fs.root(), b"big", 0o600, me)
            .await
            .expect("create");
        let block = 1usize << 20;
        // Past the buffer, plus a little: the chunks over it are uploading, none done.
        let blocks = (super::WRITE_BUFFER_BYTES + super::UPLOAD_IN_FLIGHT_BYTES) / block - 8;
        let fill = |i: usize| vec![(i % 251) as u8 + 1; block];
        for i in 0..blocks {
            tokio::time::timeout(
                Duration::from_secs(10),
                fs.write(opened.fh, (i * block) as u64, &fill(i)),
            )
            .await
            .unwrap_or_else(|_| panic!("write of block {i} waited for a stalled upload"))
            .expect("write");
        }
        assert_eq!(
            blobs.inner.len(),
            0,
            "no put has finished: the stores are stalled"
        );
        let got = fs
            .read(opened.fh, 0, block as u32)
            .await
            .expect("read an uploading chunk");
        assert!(
            got == fill(0),
            "a chunk being uploaded reads back from memory"
        );
        gate.send(true).expect("open the gate");
        fs.flush(opened.fh).await.expect("flush");
        fs.release(opened.fh).await.expect("close");
        let reader = fs.open(attr.key, false).await.expect("open");
        for i in 0..blocks {
            let got = fs
                .read(reader.fh, (i * block) as u64, block as u32)
                .await
                .expect("read");
            assert!(
                got == fill(i),
                "block {i} wrong after the background uploads"
            );
        }
        fs.release(reader.fh).await.expect("close");
    }

    /// Blobs that count `get`s and ranged reads.
    struct CountingBlobs {
        inner: MemBlobs,
        gets: std::sync::atomic::AtomicUsize,
        ranges: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl crate::fs::BlobIo for CountingBlobs {
        async fn put(
            &self,
            id: [u8; 16],
            version: u64,
            plain: &[u8],
        ) -> crate::fs::FsResult<crate::fs::BlobRef> {
            self.inner.put(id, version, plain).await
        }
        async fn get(&self, blob: &crate::fs::BlobRef) -> crate::fs::FsResult<Vec<u8>> {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get(blob).await
        }
        async fn get_range(
            &self,
            blob: &crate::fs::BlobRef,
            start: u64,
            len: u64,
        ) -> Option<Vec<u8>> {
            self.ranges
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get_range(blob, start, len).await
        }
        async fn delete(&self, blob: &crate::fs::BlobRef) -> crate::fs::FsResult<()> {
            self.inner.delete(blob).await
        }
    }

    /// A sequential reader's next `READ_AHEAD_CHUNKS` chunks are fetched ahead (each once),
    /// a read elsewhere in the file fetches only what it reads, and every byte read is
    /// the file's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_reads_fetch_ahead_and_random_ones_do_not() {
        let blobs = Arc::new(CountingBlobs {
            inner: MemBlobs::new(),
            gets: 0.into(),
            ranges: 0.into(),
        });
        let teems = MemTeems::new();
        let config = FsConfig {
            chunk_size_bytes: 64 << 10,
            ..FsConfig::default()
        };
        let make = || {
            Fs::new(
                Arc::new(teems.clone()),
                Arc::clone(&blobs) as Arc<dyn crate::fs::BlobIo>,
                ShareId([1; 16]),
                Key([2; 16]),
                config.clone(),
            )
        };
        let writer = make();
        let me = Caller::default();
        writer.init(me).await.expect("init");
        let chunks = 16u64;
        let byte = |pos: u64| (pos / 4096 % 251) as u8;
        let content: Vec<u8> = (0..chunks * (64 << 10)).map(byte).collect();
        let (attr, o) = writer
            .create(writer.root(), b"f", 0o644, me)
            .await
            .expect("create");
        writer.write(o.fh, 0, &content).await.expect("write");
        writer.release(o.fh).await.expect("close");
        let gets = || blobs.gets.load(std::sync::atomic::Ordering::SeqCst);
        let settle = || tokio::time::sleep(Duration::from_millis(200));

        // A fresh client (empty blob cache): the open fetches the manifest.
        let reader = make();
        let o = reader.open(attr.key, false).await.expect("open");
        let after_open = gets();
        let got = reader.read(o.fh, 0, 4096).await.expect("read");
        assert_eq!(got, content[..4096]);
        settle().await;
        assert_eq!(
            gets() - after_open,
            1 + super::READ_AHEAD_CHUNKS as usize,
            "chunk 0 and the ones ahead"
        );
        // Not where the last read ended: no fetching ahead, and only the bytes read are
        // fetched (a ranged read), not their chunk.
        let far = 12 * (64 << 10) + 100;
        let got = reader.read(o.fh, far, 4096).await.expect("read");
        assert_eq!(got, content[far as usize..far as usize + 4096]);
        settle().await;
        assert_eq!(
            gets() - after_open,
            1 + super::READ_AHEAD_CHUNKS as usize,
            "no chunk fetched"
        );
        assert_eq!(
            blobs.ranges.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one ranged read"
        );
        // A random read in a chunk already fetched (ahead) is served from the cache.
        let got = reader
            .read(o.fh, 2 * (64 << 10) + 7, 100)
            .await
            .expect("read");
        assert_eq!(got, content[2 * (64 << 10) + 7..2 * (64 << 10) + 107]);
        assert_eq!(
            blobs.ranges.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "cached chunk: no ranged read"
        );
        // The whole file, sequentially from the start: right bytes, each chunk fetched once.
        let mut all = Vec::new();
        let mut pos = 0u64;
        while pos < content.len() as u64 {
            let got = reader.read(o.fh, pos, 128 << 10).await.expect("read");
            pos += got.len() as u64;
            all.extend(got);
        }
        assert!(
            all == content,
            "sequential read with read-ahead returned other bytes"
        );
        settle().await;
        assert_eq!(
            gets() - after_open,
            chunks as usize,
            "every chunk fetched exactly once"
        );
        reader.release(o.fh).await.expect("close");
    }

    /// Writes into chunks of the committed file fetch nothing: they are kept as patches,
    /// a read applies them over the fetched base, the commit fetches the bases it still
    /// needs, and a chunk the writes cover is never fetched. Past
    /// `WRITE_BUFFER_BYTES` of patches the chunks are fetched and made whole so they can
    /// upload early. Every byte ends up where it was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_over_unfetched_chunks_are_patches_until_read_or_commit() {
        let blobs = Arc::new(CountingBlobs {
            inner: MemBlobs::new(),
            gets: 0.into(),
            ranges: 0.into(),
        });
        let teems = MemTeems::new();
        const CS: u64 = 64 << 10;
        let config = FsConfig {
            chunk_size_bytes: CS,
            ..FsConfig::default()
        };
        let make = || {
            Fs::new(
                Arc::new(teems.clone()),
                Arc::clone(&blobs) as Arc<dyn crate::fs::BlobIo>,
                ShareId([1; 16]),
                Key([2; 16]),
                config.clone(),
            )
        };
        let first = make();
        let me = Caller::default();
        first.init(me).await.expect("init");
        let mut model: Vec<u8> = (0..16 * CS).map(|i| (i / 4096 % 251) as u8).collect();
        let (attr, o) = first
            .create(first.root(), b"f", 0o644, me)
            .await
            .expect("create");
        first.write(o.fh, 0, &model).await.expect("write");
        first.release(o.fh).await.expect("close");
        let gets = || blobs.gets.load(std::sync::atomic::Ordering::SeqCst);

        // A second client: nothing cached.
        let second = make();
        let o = second.open(attr.key, true).await.expect("open");
        let opened = gets();
        let mut write = |at: u64, data: Vec<u8>| {
            model[at as usize..at as usize + data.len()].copy_from_slice(&data);
            (at, data)
        };
        let writes = vec![
            write(3 * CS + 100, vec![1; 4096]),
            write(7 * CS + 5000, vec![2; 4096]),
            write(3 * CS + 2000, vec![3; 4096]),
            write(11 * CS - 10, vec![4; 20]), // across the end of chunk 10 into chunk 11
            // Chunk 5 written over completely, in order.
            write(5 * CS, vec![5; (CS / 4) as usize]),
            write(5 * CS + CS / 4, vec![6; (CS / 4) as usize]),
            write(5 * CS + CS / 2, vec![7; (CS / 2) as usize]),
        ];
        for (at, data) in &writes {
            second.write(o.fh, *at, data).await.expect("write");
        }
        assert_eq!(gets(), opened, "writes fetched no chunk");
        let got = second.read(o.fh, 3 * CS, 8192).await.expect("read");
        assert_eq!(
            got,
            model[3 * CS as usize..3 * CS as usize + 8192],
            "a read sees the patches over the base"
        );
        assert_eq!(gets(), opened + 1, "the read fetched chunk 3's base");
        second.release(o.fh).await.expect("close");
        // Chunks 7, 10 and 11 fetched; 3 was cached by the read; 5 was covered.
        assert_eq!(
            gets(),
            opened + 4,
            "the commit fetched exactly the bases it needed"
        );

        let third = make();
        let o = third.open(attr.key, false).await.expect("open");
        let got = third.read(o.fh, 0, model.len() as u32).await.expect("read");
        assert!(
            got == model,
            "content after the commit differs from what was written"
        );
        third.release(o.fh).await.expect("close");

        // Past the write buffer: patched chunks are fetched and made whole. 1,500 chunks of
        // 64 KiB, three quarters of each written (70 MiB of patches > WRITE_BUFFER_BYTES).
        let big: Vec<u8> = (0..1500 * CS).map(|i| (i % 253) as u8).collect();
        let (attr, o) = first
            .create(first.root(), b"big", 0o644, me)
            .await
            .expect("create");
        first.write(o.fh, 0, &big).await.expect("write");
        first.release(o.fh).await.expect("close");
        let fourth = make();
        let o = fourth.open(attr.key, true).await.expect("open");
        let before = gets();
        let mut big_model = big;
        for c in 0..1500u64 {
            let at = c * CS + CS / 8;
            fourth
                .write(o.fh, at, &vec![9; (CS * 3 / 4) as usize])
                .await
                .expect("write");
            big_model[at as usize..(at + CS * 3 / 4) as usize].fill(9);
        }
        assert!(
            gets() > before,
            "patches past the write buffer were made whole"
        );
        fourth.release(o.fh).await.expect("close");
        let o = third.open(attr.key, false).await.expect("open");
        let got = third
            .read(o.fh, 0, big_model.len() as u32)
            .await
            .expect("read");
        assert!(got == big_model, "content after the patched commit differs");
        third.release(o.fh).await.expect("close");
    }

    /// A long sequential write uploads complete chunks early (past `WRITE_BUFFER_BYTES`).
    /// When those uploads fail, the write reports the error and the chunks stay buffered:
    /// once the stores are back, the commit stores every byte written, none lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_early_upload_loses_no_written_bytes() {
        let blobs = Arc::new(OutageBlobs {
            inner: MemBlobs::new(),
            failing: true.into(),
        });
        let fs = crate::fs::test_fs(Arc::clone(&blobs) as _, FsConfig::default());
        let me = Caller::default();
        blobs
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        fs.init(me).await.expect("init");
        let (attr, opened) = fs
            .create(fs.root(), b"big", 0o600, me)
            .await
            .expect("create");
        blobs
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);

        let block = 1usize << 20;
        let blocks = super::WRITE_BUFFER_BYTES / block + 8;
        let fill = |i: usize| vec![(i % 251) as u8 + 1; block];
        let mut failed = 0;
        for i in 0..blocks {
            if fs
                .write(opened.fh, (i * block) as u64, &fill(i))
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        // A failed upload is reported by the next write that finds it finished; the loop
        // above can end before the spawned uploads have run. Rewrite the last block (same
        // bytes) until one reports it.
        let last = blocks - 1;
        for _ in 0..500 {
            if failed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            if fs
                .write(opened.fh, (last * block) as u64, &fill(last))
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        assert!(
            failed > 0,
            "with the stores down, the early upload must report an error"
        );

        blobs
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        fs.flush(opened.fh)
            .await
            .expect("flush once the stores are back");
        fs.release(opened.fh).await.expect("close");
        let reader = fs.open(attr.key, false).await.expect("open");
        for i in 0..blocks {
            let got = fs
                .read(reader.fh, (i * block) as u64, block as u32)
                .await
                .expect("read");
            assert!(
                got == fill(i),
                "block {i} lost or wrong after the failed early upload"
            );
        }
        fs.release(reader.fh).await.expect("close");
    }

    /// fsx through a mount (SEMANTICS §6): grow by truncate (committed at once), write past
    /// the new end (buffered), then the kernel revalidates the size with a getattr while a
    /// read of the same open file is still being served. The getattr must report the
    /// buffered size: the kernel believes it, and a smaller size makes it drop the cached
    /// pages past it and the file's tail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn getattr_during_a_read_reports_the_buffered_size() {
        let fs = Arc::new(crate::fs::test_fs(
            Arc::new(MemBlobs::new()),
            FsConfig::default(),
        ));
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let (attr, opened) = fs
            .create(fs.root(), b"fsx", 0o600, me)
            .await
            .expect("create");
        fs.write(opened.fh, 0, &[1u8; 100]).await.expect("write");
        fs.flush(opened.fh).await.expect("flush");
        fs.setattr(
            attr.key,
            SetAttr {
                size: Some(200),
                ..SetAttr::default()
            },
        )
        .await
        .expect("grow");
        fs.write(opened.fh, 300, &[2u8; 100])
            .await
            .expect("write past the end");

        // A read in progress holds the open state (as one waiting on a store fetch does).
        let state = fs
            .files
            .lock()
            .expect("table")
            .by_key
            .get(&attr.key)
            .cloned()
            .expect("open state");
        let busy = state.lock().await;
        let stat = {
            let fs = Arc::clone(&fs);
            tokio::spawn(async move { fs.getattr(attr.key).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(busy);
        let got = tokio::time::timeout(Duration::from_secs(10), stat)
            .await
            .expect("getattr finishes once the read is done")
            .expect("join")
            .expect("getattr");
        assert_eq!(
            got.size, 400,
            "getattr must include the buffered write past the end"
        );

        // And with nothing in progress, and after the commit, the same size.
        assert_eq!(fs.getattr(attr.key).await.expect("getattr").size, 400);
        fs.release(opened.fh).await.expect("close");
        assert_eq!(fs.getattr(attr.key).await.expect("getattr").size, 400);
    }

    #[test]
    fn writes_into_a_chunk_buffer_overwrite_append_and_fill_holes() {
        let mut c = Vec::new();
        write_into(&mut c, 0, b"abc", 16);
        assert_eq!(c, b"abc");
        write_into(&mut c, 1, b"XY", 16);
        assert_eq!(c, b"aXY", "inside: overwritten");
        write_into(&mut c, 2, b"ZZZ", 16);
        assert_eq!(c, b"aXZZZ", "across the end: overwritten, then appended");
        write_into(&mut c, 7, b"h", 16);
        assert_eq!(c, b"aXZZZ\0\0h", "past the end: a hole of zeros");
        write_into(&mut c, 8, b"", 16);
        assert_eq!(c.len(), 8, "an empty write past the end changes nothing");
        let mut big = Vec::new();
        write_into(&mut big, 0, &[7u8; 64 << 10], 1 << 20);
        assert!(
            big.capacity() >= 1 << 20,
            "a long write reserves the whole chunk"
        );
        assert_eq!(big.len(), 64 << 10);
    }
}
