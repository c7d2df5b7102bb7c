//! Directories: lookup, create, remove, link and rename over bucketed directory blobs
//! (DESIGN §10).
//!
//! A directory's entries are split into `2^bucket_bits` buckets by a hash of the name. A
//! small directory (`bucket_bits == 0`) keeps its one bucket's blob reference inline in its
//! metadata, so a lookup is one metadata read plus one (usually cached) blob. A larger one
//! keeps bucket `i` under its own TEEMS key, so `create` and `lookup` touch one bucket
//! however many entries the directory has.
//!
//! Ordering, for crash safety: a new inode's metadata is written before the entry naming
//! it (a crash leaves an unnamed inode for gc, never a dangling name); a link count is
//! raised before a new name and lowered after a removed one. A rename that must change two
//! buckets writes a [`RenameIntent`] first and deletes it last; [`Fs::recover`] completes
//! any intent it finds, and every step of completing one is idempotent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};

use super::format::{
    self, Bucket, BucketData, BucketMeta, Data, Entry, Inode, Kind, RenameIntent, Time, bucket_key,
    bucket_of, derive_id,
};
use super::{
    Attr, Caller, DirEntry, Fs, FsError, FsResult, RenameFlags, check_name, new_inode, perm,
    random_key, statahead,
};
use crate::fs::blobs::BlobRef;
use crate::meta::{Key, Version};

/// Deepest directory chain walked when checking that a directory is not moved into itself.
const MAX_DEPTH: usize = 4096;
/// Metadata reads or blob fetches in flight at once for one readdir.
const READDIR_PARALLEL: usize = 16;

/// Where a loaded bucket came from, so it can be written back.
pub(super) struct BucketSlot {
    index: u64,
    /// For multi-bucket directories: the bucket's TEEMS value as read.
    meta: Option<BucketMeta>,
    /// And its version (`None` for an absent, empty bucket, or a single-bucket directory).
    version: Option<Version>,
}

/// Whether the stat-ahead may list `dir` (not too many buckets).
fn listable(dir: &Inode) -> bool {
    matches!(dir.data, Data::Dir { bucket_bits, .. }
        if 1u64 << bucket_bits <= statahead::MAX_LISTED_BUCKETS)
}

/// The bucket a single-bucket directory keeps in its own metadata.
fn single_bucket(dir: &Inode) -> FsResult<&BucketData> {
    match &dir.data {
        Data::Dir { single, .. } => Ok(single),
        _ => Err(FsError::NotDir),
    }
}

impl Fs {
    fn intent_key(&self) -> Key {
        Key(derive_id(&self.root, "rename-intent", 0))
    }

    pub(super) async fn read_dir_inode(&self, key: Key) -> FsResult<(Inode, Version)> {
        let (inode, version) = self.read_inode(key).await?;
        let (Kind::Dir, Data::Dir { bucket_bits, .. }) = (inode.kind, &inode.data) else {
            return Err(FsError::NotDir);
        };
        self.names.remember_dir_bits(key, *bucket_bits);
        Ok((inode, version))
    }

    async fn bucket_from(&self, data: &BucketData) -> FsResult<Bucket> {
        match data {
            BucketData::Empty => Ok(Bucket::new()),
            BucketData::Inline(entries) => Ok(Bucket::clone(entries)),
            BucketData::Blob(b) => format::decode("directory bucket", &self.get_blob(b).await?),
        }
    }

    /// A bucket's new stored form: inline when its encoding is small, else a new blob.
    async fn seal_bucket(
        &self,
        dir_key: Key,
        index: u64,
        seq: u64,
        bucket: &Bucket,
    ) -> FsResult<BucketData> {
        if bucket.is_empty() {
            return Ok(BucketData::Empty);
        }
        let encoded = format::encode(bucket);
        if encoded.len() <= self.config.inline_bucket_max_bytes {
            return Ok(BucketData::Inline(Arc::new(bucket.clone())));
        }
        Ok(BucketData::Blob(
            self.put_blob(derive_id(&dir_key, "bucket", index), seq, encoded)
                .await?,
        ))
    }

    /// Loads the bucket that holds (or would hold) `name`.
    pub(super) async fn load_bucket(
        &self,
        dir_key: Key,
        dir: &Inode,
        name: &[u8],
    ) -> FsResult<(Bucket, BucketSlot)> {
        let Data::Dir {
            bucket_bits,
            single,
        } = &dir.data
        else {
            return Err(FsError::NotDir);
        };
        let index = bucket_of(name, *bucket_bits);
        if *bucket_bits == 0 {
            let bucket = self.bucket_from(single).await?;
            return Ok((
                bucket,
                BucketSlot {
                    index,
                    meta: None,
                    version: None,
                },
            ));
        }
        let (meta, version) = self.read_bucket_meta_versioned(dir_key, index).await?;
        let bucket = self.bucket_from(&meta.data).await?;
        Ok((
            bucket,
            BucketSlot {
                index,
                meta: Some(meta),
                version,
            },
        ))
    }

    async fn read_bucket_meta(&self, dir_key: Key, index: u64) -> FsResult<BucketMeta> {
        Ok(self.read_bucket_meta_versioned(dir_key, index).await?.0)
    }

    /// A bucket's metadata and its TEEMS version (`None`: absent, an empty bucket).
    async fn read_bucket_meta_versioned(
        &self,
        dir_key: Key,
        index: u64,
    ) -> FsResult<(BucketMeta, Option<Version>)> {
        let key = bucket_key(&dir_key, index);
        match self.teems.read(self.share, key).await {
            Ok((bytes, version)) => {
                if let Some(meta) = self.decoded_buckets.get(key, version) {
                    return Ok((meta, Some(version)));
                }
                let meta: BucketMeta = format::decode("bucket metadata", &bytes)?;
                self.decoded_buckets
                    .insert(key, version, bytes.len(), meta.clone());
                Ok((meta, Some(version)))
            }
            Err(crate::meta::MetaError::NotFound) => Ok((BucketMeta::default(), None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes bucket `index` of `dir_key`, keeping it decoded for the version written.
    async fn write_bucket_meta(
        &self,
        dir_key: Key,
        index: u64,
        meta: BucketMeta,
    ) -> FsResult<Version> {
        let key = bucket_key(&dir_key, index);
        let encoded = format::encode(&meta);
        let len = encoded.len();
        let version = self.teems.write(self.share, key, encoded).await?;
        self.decoded_buckets.insert(key, version, len, meta);
        Ok(version)
    }

    /// All entries of a directory (every bucket, fetched in parallel).
    pub(super) async fn load_all_entries(&self, dir_key: Key, dir: &Inode) -> FsResult<Bucket> {
        let Data::Dir {
            bucket_bits,
            single,
        } = &dir.data
        else {
            return Err(FsError::NotDir);
        };
        if *bucket_bits == 0 {
            return self.bucket_from(single).await;
        }
        let buckets: Vec<Bucket> = stream::iter(0..(1u64 << bucket_bits))
            .map(|i| async move {
                let meta = self.read_bucket_meta(dir_key, i).await?;
                self.bucket_from(&meta.data).await
            })
            .buffered(READDIR_PARALLEL)
            .try_collect()
            .await?;
        Ok(buckets.into_iter().flatten().collect())
    }

    /// Writes a directory change: the modified bucket and the directory's metadata (with
    /// the times and counts the caller set). For a multi-bucket directory the two writes go
    /// out together; they are separate values either way, and a crash between them leaves
    /// the entry count or times off, which `fsck` reports. A split writes every new bucket
    /// before the directory metadata that names the new bucket count.
    pub(super) async fn store_dir(
        &self,
        dir_key: Key,
        dir: &mut Inode,
        slot: BucketSlot,
        bucket: &Bucket,
    ) -> FsResult<Version> {
        let Data::Dir { bucket_bits, .. } = &dir.data else {
            return Err(FsError::NotDir);
        };
        let splits = bucket.len() > self.config.dir_bucket_max_entries
            && *bucket_bits < format::MAX_BUCKET_BITS;
        match slot.meta {
            Some(mut meta) if !splits => {
                meta.blob_seq += 1;
                let old = meta.data.blob().cloned();
                meta.data = self
                    .seal_bucket(dir_key, slot.index, meta.blob_seq, bucket)
                    .await?;
                let (wrote_bucket, wrote_dir) = tokio::join!(
                    self.write_bucket_meta(dir_key, slot.index, meta),
                    self.write_inode(dir_key, dir)
                );
                wrote_bucket?;
                let version = wrote_dir?;
                self.retire(old.into_iter().collect());
                Ok(version)
            }
            meta => {
                self.store_bucket(
                    dir_key,
                    dir,
                    BucketSlot {
                        index: slot.index,
                        meta,
                        version: None,
                    },
                    bucket,
                )
                .await?;
                self.write_inode(dir_key, dir).await
            }
        }
    }

    /// Writes a modified bucket back (the directory's metadata is written after this, by
    /// [`Fs::store_dir`]). Splits the directory when the bucket is too big.
    async fn store_bucket(
        &self,
        dir_key: Key,
        dir: &mut Inode,
        slot: BucketSlot,
        bucket: &Bucket,
    ) -> FsResult<()> {
        let Data::Dir {
            bucket_bits,
            single,
        } = &dir.data
        else {
            return Err(FsError::NotDir);
        };
        let bucket_bits = *bucket_bits;
        if bucket.len() > self.config.dir_bucket_max_entries
            && bucket_bits < format::MAX_BUCKET_BITS
        {
            let old_single = single.blob().cloned();
            return self.rebucket(dir_key, dir, slot, bucket, old_single).await;
        }
        match slot.meta {
            None => {
                dir.blob_seq += 1;
                let old = single.blob().cloned();
                let new = self.seal_bucket(dir_key, 0, dir.blob_seq, bucket).await?;
                dir.data = Data::Dir {
                    bucket_bits: 0,
                    single: new,
                };
                self.retire(old.into_iter().collect());
            }
            Some(mut meta) => {
                meta.blob_seq += 1;
                let old = meta.data.blob().cloned();
                meta.data = self
                    .seal_bucket(dir_key, slot.index, meta.blob_seq, bucket)
                    .await?;
                self.write_bucket_meta(dir_key, slot.index, meta).await?;
                self.retire(old.into_iter().collect());
            }
        }
        Ok(())
    }

    /// Redistributes all entries over twice as many buckets (or more, until none is over
    /// the limit). Rare: amortised over `dir_bucket_max_entries` creates.
    async fn rebucket(
        &self,
        dir_key: Key,
        dir: &mut Inode,
        slot: BucketSlot,
        changed: &Bucket,
        old_single: Option<BlobRef>,
    ) -> FsResult<()> {
        let Data::Dir {
            bucket_bits: old_bits,
            ..
        } = dir.data
        else {
            return Err(FsError::NotDir);
        };
        // Every entry: the changed bucket as given, the others as stored.
        let mut all = Bucket::new();
        let mut old_blobs: Vec<BlobRef> = old_single.into_iter().collect();
        if old_bits == 0 {
            all.extend(changed.iter().map(|(k, v)| (k.clone(), *v)));
        } else {
            for i in 0..(1u64 << old_bits) {
                let meta = self.read_bucket_meta(dir_key, i).await?;
                old_blobs.extend(meta.data.blob().cloned());
                if i == slot.index {
                    all.extend(changed.iter().map(|(k, v)| (k.clone(), *v)));
                } else {
                    all.extend(self.bucket_from(&meta.data).await?);
                }
            }
        }
        let mut bits = old_bits.max(1);
        let split = loop {
            let mut split: Vec<Bucket> = vec![Bucket::new(); 1 << bits];
            for (name, entry) in &all {
                let i = bucket_of(name, bits) as usize;
                if let Some(b) = split.get_mut(i) {
                    b.insert(name.clone(), *entry);
                }
            }
            let fits = split
                .iter()
                .all(|b| b.len() <= self.config.dir_bucket_max_entries);
            if fits || bits >= 24 {
                break split;
            }
            bits += 1;
        };
        let seq = dir.blob_seq + 1;
        dir.blob_seq = seq;
        for (i, bucket) in split.iter().enumerate() {
            let i = i as u64;
            let meta = BucketMeta {
                data: self.seal_bucket(dir_key, i, seq, bucket).await?,
                blob_seq: seq,
            };
            self.write_bucket_meta(dir_key, i, meta).await?;
        }
        dir.data = Data::Dir {
            bucket_bits: bits,
            single: BucketData::Empty,
        };
        self.retire(old_blobs);
        Ok(())
    }

    /// The directory's fresh metadata and the bucket that holds (or would hold) `name`.
    pub(super) async fn load_dir_bucket(
        &self,
        dir_key: Key,
        name: &[u8],
    ) -> FsResult<(Inode, Version, Bucket, BucketSlot)> {
        let (dir, version, slot) = self.load_dir_slot(dir_key, name).await?;
        let bucket = match &slot.meta {
            Some(meta) => self.bucket_from(&meta.data).await?,
            None => self.bucket_from(single_bucket(&dir)?).await?,
        };
        Ok((dir, version, bucket, slot))
    }

    /// The directory's fresh metadata and the slot of the bucket that holds (or would
    /// hold) `name`, its entries not yet taken out (a lookup needs one of them, a change
    /// all of them).
    ///
    /// For a multi-bucket directory whose bucket count the name cache remembers, the
    /// name's bucket metadata is read alongside the directory's, and used only if the
    /// fresh directory metadata has that bucket count; otherwise it is read after.
    async fn load_dir_slot(
        &self,
        dir_key: Key,
        name: &[u8],
    ) -> FsResult<(Inode, Version, BucketSlot)> {
        let guessed = self.names.guess_dir_bits(dir_key).filter(|bits| *bits > 0);
        let ((dir, version), early_meta) = match guessed {
            Some(bits) => {
                let index = bucket_of(name, bits);
                let (dir, meta) = tokio::join!(
                    self.read_dir_inode(dir_key),
                    self.read_bucket_meta_versioned(dir_key, index)
                );
                (dir?, Some((bits, index, meta)))
            }
            None => (self.read_dir_inode(dir_key).await?, None),
        };
        let Data::Dir { bucket_bits, .. } = &dir.data else {
            return Err(FsError::NotDir);
        };
        let bits = *bucket_bits;
        let index = bucket_of(name, bits);
        let slot = match early_meta {
            Some((guess, index, meta)) if guess == bits => {
                let (meta, version) = meta?;
                BucketSlot {
                    index,
                    meta: Some(meta),
                    version,
                }
            }
            _ if bits == 0 => BucketSlot {
                index,
                meta: None,
                version: None,
            },
            _ => {
                let (meta, version) = self.read_bucket_meta_versioned(dir_key, index).await?;
                BucketSlot {
                    index,
                    meta: Some(meta),
                    version,
                }
            }
        };
        Ok((dir, version, slot))
    }

    /// The entry `name` in the bucket of `slot` (of directory `dir`), without copying the
    /// bucket.
    async fn slot_entry(
        &self,
        dir: &Inode,
        slot: &BucketSlot,
        name: &[u8],
    ) -> FsResult<Option<Entry>> {
        let data = match &slot.meta {
            Some(meta) => &meta.data,
            None => single_bucket(dir)?,
        };
        match data {
            BucketData::Empty => Ok(None),
            BucketData::Inline(entries) => Ok(entries.get(name).copied()),
            BucketData::Blob(_) => Ok(self.bucket_from(data).await?.get(name).copied()),
        }
    }

    /// The entry `name` in directory `dir_key`, from fresh metadata.
    pub(super) async fn find_entry(&self, dir_key: Key, name: &[u8]) -> FsResult<Option<Entry>> {
        let (dir, _, slot) = self.load_dir_slot(dir_key, name).await?;
        self.slot_entry(&dir, &slot, name).await
    }

    // ---- lookup and listing -----------------------------------------------------------

    /// [`Fs::lookup_by`] as root.
    pub async fn lookup(&self, parent: Key, name: &[u8]) -> FsResult<Attr> {
        self.lookup_by(parent, name, Caller::ROOT).await
    }

    /// The attributes of `parent/name`, from fresh metadata; `who` needs search
    /// permission on `parent`.
    pub async fn lookup_by(&self, parent: Key, name: &[u8], who: Caller) -> FsResult<Attr> {
        Ok(self.lookup_entry_by(parent, name, who).await?.0)
    }

    /// [`Fs::lookup_by`], and how long the kernel may keep the name without looking it up
    /// again. Zero unless `parent` lets every class search it — then no caller's lookup
    /// could be refused, so nothing is lost by the kernel not asking — and then what is
    /// left of the read leases on `parent` and on the name's bucket, in which no other
    /// client can change the name or `parent`'s mode. This client's own `chmod` of
    /// `parent` that takes search permission away waits until the names the kernel was
    /// told to keep have ended ([`Fs::setattr_by`]).
    pub async fn lookup_entry_by(
        &self,
        parent: Key,
        name: &[u8],
        who: Caller,
    ) -> FsResult<(Attr, Duration)> {
        if name.len() > super::NAME_MAX_BYTES {
            return Err(FsError::NameTooLong);
        }
        let find = async {
            let (dir, dir_version, slot) = self.load_dir_slot(parent, name).await?;
            perm::check_search(&dir, who)?;
            let entry = self.slot_entry(&dir, &slot, name).await?;
            let keep = move || {
                if dir.perm & 0o111 != 0o111 {
                    return Duration::ZERO;
                }
                let on_dir = self.lease_left(parent, dir_version);
                match (&slot.meta, slot.version) {
                    // One bucket: the names are part of the directory's own value.
                    (None, _) => on_dir,
                    (Some(_), Some(v)) => {
                        on_dir.min(self.lease_left(bucket_key(&parent, slot.index), v))
                    }
                    (Some(_), None) => Duration::ZERO,
                }
            };
            Ok::<_, FsError>((entry, keep))
        };
        // The name cache proposes the child's key, so its metadata read can run alongside
        // the directory's; the result is used only if the fresh directory confirms it.
        let guess = self.names.guess_name(parent, name);
        let (entry, guessed) = match guess {
            Some((child, _)) => {
                let (entry, child_read) = tokio::join!(find, self.read_looked_up(child));
                (entry?, Some((child, child_read)))
            }
            None => (find.await?, None),
        };
        let (Some(entry), keep) = entry else {
            self.names.forget_name(parent, name);
            return Err(FsError::NotFound);
        };
        let (inode, version) = match guessed {
            Some((child, Ok(read))) if child == entry.key => read,
            _ => self.read_looked_up(entry.key).await?,
        };
        self.names.remember_name(parent, name, entry.key, version);
        self.remember_content(entry.key, &inode, version);
        let keep = self.kernel_keeps_name(parent, keep);
        let attr = self.attr_of(entry.key, &inode, version);
        self.stat_ahead(parent, name).await;
        Ok((attr, keep))
    }

    /// The inode a lookup found, after any read ahead of it still in flight: that read's
    /// lease then answers this one.
    async fn read_looked_up(&self, key: Key) -> FsResult<(Inode, Version)> {
        self.statahead.settled(key).await;
        self.read_inode(key).await
    }

    /// Tells the stat-ahead of a lookup of `name` in `dir`, and starts what it asks for
    /// (`statahead` module).
    async fn stat_ahead(&self, dir: Key, name: &[u8]) {
        let mut next = self.statahead.looked_up(dir, name, Instant::now());
        if next == statahead::Next::List {
            let names = match self.read_dir_inode(dir).await {
                Ok((inode, _)) if listable(&inode) => self.load_all_entries(dir, &inode).await.ok(),
                _ => None,
            };
            let names = names.map(|b| b.into_iter().map(|(n, e)| (n, e.key)).collect());
            next = self.statahead.listed(dir, names, Instant::now());
        }
        if let statahead::Next::Read(keys) = next {
            self.statahead.read_ahead(&self.teems, self.share, keys);
        }
    }

    pub(super) fn remember_content(&self, key: Key, inode: &Inode, version: Version) {
        let blob = match &inode.data {
            Data::Single(b) => Some(b.clone()),
            Data::Chunked { manifest } => Some(manifest.clone()),
            _ => None,
        };
        self.names.remember_content(key, version, blob);
    }

    /// The directory's entries, sorted by name (without `.` and `..`).
    pub async fn readdir(&self, key: Key) -> FsResult<Vec<DirEntry>> {
        let (dir, _) = self.read_dir_inode(key).await?;
        let entries = self.load_all_entries(key, &dir).await?;
        Ok(entries
            .into_iter()
            .map(|(name, e)| DirEntry {
                name,
                key: e.key,
                kind: e.kind,
            })
            .collect())
    }

    /// `readdir` plus each entry's fresh attributes. An entry removed between the listing
    /// and its metadata read is left out.
    pub async fn readdirplus(&self, key: Key) -> FsResult<Vec<(DirEntry, Attr)>> {
        let entries = self.readdir(key).await?;
        let results: Vec<Option<(DirEntry, Attr)>> = stream::iter(entries)
            .map(|e| async move {
                match self.read_inode(e.key).await {
                    Ok((inode, version)) => {
                        self.names.remember_name(key, &e.name, e.key, version);
                        self.remember_content(e.key, &inode, version);
                        Ok(Some((e.clone(), self.attr_of(e.key, &inode, version))))
                    }
                    Err(FsError::NotFound) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffered(READDIR_PARALLEL)
            .try_collect()
            .await?;
        Ok(results.into_iter().flatten().collect())
    }

    /// The parent of a directory (the root is its own parent).
    pub async fn parent_of(&self, dir: Key) -> FsResult<Key> {
        let (inode, _) = self.read_dir_inode(dir).await?;
        Ok(inode.parent.unwrap_or(self.root))
    }

    // ---- creating ---------------------------------------------------------------------

    /// Adds a new inode under `parent/name`.
    pub(super) async fn create_node(
        &self,
        parent: Key,
        name: &[u8],
        inode: Inode,
        who: Caller,
    ) -> FsResult<Attr> {
        Ok(self.create_node_as(parent, name, inode, who).await?.0)
    }

    /// [`Fs::create_node`], also returning the inode as written and its version.
    pub(super) async fn create_node_as(
        &self,
        parent: Key,
        name: &[u8],
        mut inode: Inode,
        who: Caller,
    ) -> FsResult<(Attr, Inode, Version)> {
        check_name(name)?;
        let _dir = self.dir_locks.lock(parent).await;
        let (mut dir, _, mut bucket, slot) = self.load_dir_bucket(parent, name).await?;
        perm::check_search(&dir, who)?;
        if bucket.contains_key(name) {
            return Err(FsError::Exists);
        }
        perm::check_modify(&dir, who)?;
        let key = random_key();
        if inode.kind == Kind::Dir {
            inode.parent = Some(parent);
        }
        // The inode first: a crash before the entry leaves an unnamed inode, not a
        // name pointing nowhere.
        let version = self.write_inode(key, &inode).await?;
        bucket.insert(
            name.to_vec(),
            Entry {
                key,
                kind: inode.kind,
            },
        );
        touch_dir(&mut dir, 1, inode.kind == Kind::Dir, 1);
        self.store_dir(parent, &mut dir, slot, &bucket).await?;
        self.names.remember_name(parent, name, key, version);
        self.note_version(key, version);
        Ok((self.attr_of(key, &inode, version), inode, version))
    }

    pub async fn mkdir(
        &self,
        parent: Key,
        name: &[u8],
        perm: u16,
        caller: Caller,
    ) -> FsResult<Attr> {
        let inode = new_inode(
            Kind::Dir,
            perm,
            caller,
            Data::Dir {
                bucket_bits: 0,
                single: BucketData::Empty,
            },
        );
        self.create_node(parent, name, inode, caller).await
    }

    /// Creates a regular file or a special file (FIFO, socket, device node; stored as
    /// metadata only).
    pub async fn mknod(
        &self,
        parent: Key,
        name: &[u8],
        kind: Kind,
        perm: u16,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        if kind == Kind::Dir || kind == Kind::Symlink {
            return Err(FsError::Invalid("mknod of a directory or symlink"));
        }
        let mut inode = new_inode(kind, perm, caller, Data::Empty);
        inode.rdev = rdev;
        self.create_node(parent, name, inode, caller).await
    }

    pub async fn symlink(
        &self,
        parent: Key,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > 4095 {
            return Err(FsError::NameTooLong);
        }
        let mut inode = new_inode(Kind::Symlink, 0o777, caller, Data::Symlink(target.to_vec()));
        inode.size = target.len() as u64;
        self.create_node(parent, name, inode, caller).await
    }

    pub async fn readlink(&self, key: Key) -> FsResult<Vec<u8>> {
        let (inode, _) = self.read_inode(key).await?;
        match inode.data {
            Data::Symlink(target) => Ok(target),
            _ => Err(FsError::Invalid("not a symlink")),
        }
    }

    /// [`Fs::link_by`] as root.
    pub async fn link(&self, key: Key, new_parent: Key, new_name: &[u8]) -> FsResult<Attr> {
        self.link_by(key, new_parent, new_name, Caller::ROOT).await
    }

    /// A new name for an existing non-directory inode (a hard link).
    pub async fn link_by(
        &self,
        key: Key,
        new_parent: Key,
        new_name: &[u8],
        who: Caller,
    ) -> FsResult<Attr> {
        check_name(new_name)?;
        let _dir = self.dir_locks.lock(new_parent).await;
        let inode_lock = self.key_locks.lock(key).await;
        let (mut inode, _) = self.read_inode(key).await?;
        if inode.kind == Kind::Dir {
            return Err(FsError::NotPermitted("hard link to a directory"));
        }
        if inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if inode.nlink >= 65_000 {
            return Err(FsError::TooManyLinks);
        }
        let (mut dir, _, mut bucket, slot) = self.load_dir_bucket(new_parent, new_name).await?;
        perm::check_search(&dir, who)?;
        if bucket.contains_key(new_name) {
            return Err(FsError::Exists);
        }
        perm::check_modify(&dir, who)?;
        // Count first: a crash between leaves a count one too high (a leak gc can find),
        // never a name whose inode may be freed under it.
        inode.nlink += 1;
        inode.ctime = Time::now();
        let version = self.write_inode(key, &inode).await?;
        drop(inode_lock);
        bucket.insert(
            new_name.to_vec(),
            Entry {
                key,
                kind: inode.kind,
            },
        );
        touch_dir(&mut dir, 1, false, 1);
        self.store_dir(new_parent, &mut dir, slot, &bucket).await?;
        Ok(self.attr_of(key, &inode, version))
    }

    // ---- removing ---------------------------------------------------------------------

    /// [`Fs::unlink_by`] as root.
    pub async fn unlink(&self, parent: Key, name: &[u8]) -> FsResult<()> {
        self.unlink_by(parent, name, Caller::ROOT).await
    }

    /// Removes the name `parent/name` of a non-directory. (The sticky-bit rule is the
    /// kernel's, see [`perm`].)
    pub async fn unlink_by(&self, parent: Key, name: &[u8], who: Caller) -> FsResult<()> {
        check_name(name)?;
        let _dir = self.dir_locks.lock(parent).await;
        let (mut dir, _, mut bucket, slot) = self.load_dir_bucket(parent, name).await?;
        perm::check_search(&dir, who)?;
        let entry = *bucket.get(name).ok_or(FsError::NotFound)?;
        perm::check_modify(&dir, who)?;
        if entry.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        bucket.remove(name);
        touch_dir(&mut dir, -1, false, 1);
        // The inode's metadata is read while the name is removed; its link count is
        // lowered only after (lock order: the directory lock, then the inode lock).
        let _inode_lock = self.key_locks.lock(entry.key).await;
        let (stored, child) = tokio::join!(
            self.store_dir(parent, &mut dir, slot, &bucket),
            self.read_inode(entry.key)
        );
        stored?;
        self.names.forget_name(parent, name);
        self.drop_link_of(entry.key, child).await
    }

    /// Lowers a non-directory's link count; at zero queues it to be freed in the
    /// background, unless this client has it open, in which case the last release frees it.
    pub(super) async fn drop_link(&self, key: Key) -> FsResult<()> {
        let _inode_lock = self.key_locks.lock(key).await;
        let read = self.read_inode(key).await;
        self.drop_link_of(key, read).await
    }

    /// [`Fs::drop_link`] with the inode lock held and the inode's metadata read under it.
    async fn drop_link_of(&self, key: Key, read: FsResult<(Inode, Version)>) -> FsResult<()> {
        let (mut inode, _) = match read {
            Ok(read) => read,
            // Already gone (a second client freed it): nothing left to drop.
            Err(FsError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = Time::now();
        if inode.nlink > 0 {
            self.write_inode(key, &inode).await?;
            return Ok(());
        }
        if self.mark_orphan_if_open(key) {
            self.write_inode(key, &inode).await?;
            return Ok(());
        }
        // Nothing can reach the inode any more: free it after the caller has its answer.
        self.free_later(key, inode);
        Ok(())
    }

    /// Deletes an inode's metadata, then retires its blobs.
    pub(super) async fn free_inode(&self, key: Key, inode: &Inode) -> FsResult<()> {
        let mut blobs = Self::direct_blobs(inode);
        if let Data::Chunked { manifest } = &inode.data {
            match self.load_manifest(manifest).await {
                Ok(m) => blobs.extend(m.chunks.into_iter().flatten()),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable manifest; gc will find its chunks")
                }
            }
        }
        self.teems.delete(self.share, key).await?;
        self.retire(blobs);
        Ok(())
    }

    /// [`Fs::rmdir_by`] as root.
    pub async fn rmdir(&self, parent: Key, name: &[u8]) -> FsResult<()> {
        self.rmdir_by(parent, name, Caller::ROOT).await
    }

    /// Removes the empty directory `parent/name`.
    pub async fn rmdir_by(&self, parent: Key, name: &[u8], who: Caller) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid("rmdir ."));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        check_name(name)?;
        let _tree = self.tree_lock.lock().await;
        let _dir = self.dir_locks.lock(parent).await;
        let (mut dir, _, mut bucket, slot) = self.load_dir_bucket(parent, name).await?;
        perm::check_search(&dir, who)?;
        let entry = *bucket.get(name).ok_or(FsError::NotFound)?;
        perm::check_modify(&dir, who)?;
        if entry.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        // No name may be created in it between the emptiness check and its removal.
        let _child = self.dir_locks.lock(entry.key).await;
        let (child, _) = self.read_dir_inode(entry.key).await?;
        if !self.load_all_entries(entry.key, &child).await?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        bucket.remove(name);
        touch_dir(&mut dir, -1, true, -1);
        self.store_dir(parent, &mut dir, slot, &bucket).await?;
        self.names.forget_name(parent, name);
        self.free_dir(entry.key, &child).await
    }

    async fn free_dir(&self, key: Key, dir: &Inode) -> FsResult<()> {
        if let Data::Dir { bucket_bits, .. } = dir.data
            && bucket_bits > 0
        {
            for i in 0..(1u64 << bucket_bits) {
                let meta = self.read_bucket_meta(key, i).await?;
                self.teems.delete(self.share, bucket_key(&key, i)).await?;
                self.retire(meta.data.blob().cloned().into_iter().collect());
            }
        }
        self.free_inode(key, dir).await
    }

    // ---- rename -----------------------------------------------------------------------

    /// [`Fs::rename_by`] as root.
    pub async fn rename(
        &self,
        src_dir: Key,
        src_name: &[u8],
        dst_dir: Key,
        dst_name: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        self.rename_by(src_dir, src_name, dst_dir, dst_name, flags, Caller::ROOT)
            .await
    }

    /// Moves `src_dir/src_name` to `dst_dir/dst_name`, replacing what is there unless
    /// `flags.noreplace`. `who` needs write and search permission on both directories,
    /// and write permission on a directory it moves to another parent (its `..` changes).
    pub async fn rename_by(
        &self,
        src_dir: Key,
        src_name: &[u8],
        dst_dir: Key,
        dst_name: &[u8],
        flags: RenameFlags,
        who: Caller,
    ) -> FsResult<()> {
        if flags.exchange {
            return Err(FsError::Invalid("RENAME_EXCHANGE is not supported"));
        }
        check_name(src_name)?;
        check_name(dst_name)?;
        let _tree = self.tree_lock.lock().await;
        let parents = self
            .dir_locks
            .lock_all([src_dir, dst_dir], Vec::new())
            .await;
        let (src, _, src_bucket, src_slot) = self.load_dir_bucket(src_dir, src_name).await?;
        perm::check_search(&src, who)?;
        let entry = *src_bucket.get(src_name).ok_or(FsError::NotFound)?;
        perm::check_modify(&src, who)?;
        if src_dir == dst_dir && src_name == dst_name {
            return Ok(());
        }
        if entry.kind == Kind::Dir && self.is_ancestor_or_self(entry.key, dst_dir).await? {
            return Err(FsError::Invalid("directory moved into itself"));
        }
        let (dst, _) = if dst_dir == src_dir {
            (src.clone(), Version::default())
        } else {
            self.read_dir_inode(dst_dir).await?
        };
        perm::check_modify(&dst, who)?;
        if entry.kind == Kind::Dir && dst_dir != src_dir && !who.is_root() {
            let (moved, _) = self.read_dir_inode(entry.key).await?;
            perm::check(&moved, who, perm::MAY_WRITE)?;
        }
        let same_bucket = dst_dir == src_dir
            && matches!(src.data, Data::Dir { bucket_bits, .. }
                if bucket_of(src_name, bucket_bits) == bucket_of(dst_name, bucket_bits));
        let (dst_bucket, _) = if same_bucket {
            (src_bucket.clone(), None)
        } else {
            let (b, s) = self.load_bucket(dst_dir, &dst, dst_name).await?;
            (b, Some(s))
        };
        let existing = dst_bucket.get(dst_name).copied();
        // Besides the two parents, the directories whose own values this changes: one
        // moved to another parent (its `..`) and one replaced (checked empty, then freed).
        let moved_dir = (entry.kind == Kind::Dir && src_dir != dst_dir).then_some(entry.key);
        let replaced_dir = existing
            .filter(|old| old.kind == Kind::Dir)
            .map(|old| old.key);
        let _held = self
            .dir_locks
            .lock_all(moved_dir.into_iter().chain(replaced_dir), parents)
            .await;
        let mut replaced = None;
        if let Some(old) = existing {
            if flags.noreplace {
                return Err(FsError::Exists);
            }
            if old.key == entry.key {
                // Two names of one inode: POSIX says do nothing.
                return Ok(());
            }
            match (entry.kind == Kind::Dir, old.kind == Kind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    let (old_dir, _) = self.read_dir_inode(old.key).await?;
                    if !self.load_all_entries(old.key, &old_dir).await?.is_empty() {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
            let nlink = match self.read_inode(old.key).await {
                Ok((inode, _)) => inode.nlink,
                Err(FsError::NotFound) => 0,
                Err(e) => return Err(e),
            };
            replaced = Some((old, nlink));
        }
        self.names.forget_name(src_dir, src_name);
        self.names.forget_name(dst_dir, dst_name);

        if same_bucket {
            // One bucket write: atomic by itself (DESIGN §10).
            let mut bucket = src_bucket;
            let mut dir = src;
            bucket.remove(src_name);
            bucket.insert(dst_name.to_vec(), entry);
            let removed_dir = replaced.is_some_and(|(old, _)| old.kind == Kind::Dir);
            touch_dir(
                &mut dir,
                if replaced.is_some() { -1 } else { 0 },
                removed_dir,
                -1,
            );
            self.store_dir(src_dir, &mut dir, src_slot, &bucket).await?;
            if let Some((old, before)) = replaced {
                self.release_replaced(old, before).await?;
            }
            return Ok(());
        }

        let intent = RenameIntent {
            src_dir,
            src_name: src_name.to_vec(),
            dst_dir,
            dst_name: dst_name.to_vec(),
            entry,
            replaced,
        };
        self.teems
            .write(self.share, self.intent_key(), format::encode(&intent))
            .await?;
        self.apply_intent(&intent).await?;
        self.teems.delete(self.share, self.intent_key()).await?;
        Ok(())
    }

    /// Walks up from `dir` to the root: is `ancestor` on the way (or `dir` itself)?
    async fn is_ancestor_or_self(&self, ancestor: Key, mut dir: Key) -> FsResult<bool> {
        for _ in 0..MAX_DEPTH {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == self.root {
                return Ok(false);
            }
            dir = self.parent_of(dir).await?;
        }
        Err(FsError::corrupt(
            "directory tree",
            "parent chain longer than MAX_DEPTH",
        ))
    }

    /// Carries out a rename intent. Idempotent: each step checks whether it is done, so a
    /// crash anywhere (including during an earlier completion) is finished by running it
    /// again.
    async fn apply_intent(&self, intent: &RenameIntent) -> FsResult<()> {
        let moved_dir = intent.entry.kind == Kind::Dir;
        // 1. The new name (replacing the target).
        let (mut dst, _, mut bucket, slot) = self
            .load_dir_bucket(intent.dst_dir, &intent.dst_name)
            .await?;
        if bucket.get(&intent.dst_name) != Some(&intent.entry) {
            let had = bucket
                .insert(intent.dst_name.clone(), intent.entry)
                .is_some();
            touch_dir(&mut dst, if had { 0 } else { 1 }, false, 0);
            self.store_dir(intent.dst_dir, &mut dst, slot, &bucket)
                .await?;
        }
        // 2. The old name, if it still names the moved inode.
        let (mut src, _, mut bucket, slot) = self
            .load_dir_bucket(intent.src_dir, &intent.src_name)
            .await?;
        if bucket.get(&intent.src_name) == Some(&intent.entry) {
            bucket.remove(&intent.src_name);
            touch_dir(&mut src, -1, false, 0);
            self.store_dir(intent.src_dir, &mut src, slot, &bucket)
                .await?;
        }
        // 3. A moved directory's parent pointer, and the directories' link counts,
        //    recounted from their entries so that repeating this step is harmless.
        if moved_dir && intent.src_dir != intent.dst_dir {
            let (mut child, _) = self.read_dir_inode(intent.entry.key).await?;
            if child.parent != Some(intent.dst_dir) {
                child.parent = Some(intent.dst_dir);
                child.ctime = Time::now();
                self.write_inode(intent.entry.key, &child).await?;
            }
        }
        if moved_dir || intent.replaced.is_some_and(|(e, _)| e.kind == Kind::Dir) {
            self.recount_dir_links(intent.src_dir).await?;
            self.recount_dir_links(intent.dst_dir).await?;
        }
        // 4. The replaced inode loses the link the new name took.
        if let Some((old, before)) = intent.replaced {
            self.release_replaced(old, before).await?;
        }
        Ok(())
    }

    /// Drops the link a rename took from `old`, once: only if its count is still the one
    /// recorded before the rename.
    async fn release_replaced(&self, old: Entry, nlink_before: u32) -> FsResult<()> {
        let (inode, _) = match self.read_inode(old.key).await {
            Ok(read) => read,
            Err(FsError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if old.kind == Kind::Dir {
            return self.free_dir(old.key, &inode).await;
        }
        if inode.nlink == nlink_before {
            self.drop_link(old.key).await?;
        }
        Ok(())
    }

    async fn recount_dir_links(&self, key: Key) -> FsResult<()> {
        let (mut dir, _) = self.read_dir_inode(key).await?;
        let entries = self.load_all_entries(key, &dir).await?;
        let subdirs = entries.values().filter(|e| e.kind == Kind::Dir).count() as u32;
        let (nlink, size) = (2 + subdirs, entries.len() as u64);
        if dir.nlink != nlink || dir.size != size {
            dir.nlink = nlink;
            dir.size = size;
            self.write_inode(key, &dir).await?;
        }
        Ok(())
    }

    /// Completes a rename a crashed client left half done (DESIGN §10); returns whether
    /// there was one. Called by [`Fs::init`]; `teemsfs fsck` calls it too.
    pub async fn recover(&self) -> FsResult<bool> {
        let _tree = self.tree_lock.lock().await;
        let bytes = match self.teems.read(self.share, self.intent_key()).await {
            Ok((bytes, _)) => bytes,
            Err(crate::meta::MetaError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let intent: RenameIntent = format::decode("rename intent", &bytes)?;
        // The directories a rename locks (see `rename_by`).
        let dirs = [intent.src_dir, intent.dst_dir]
            .into_iter()
            .chain(
                (intent.entry.kind == Kind::Dir && intent.src_dir != intent.dst_dir)
                    .then_some(intent.entry.key),
            )
            .chain(
                intent
                    .replaced
                    .filter(|(old, _)| old.kind == Kind::Dir)
                    .map(|(old, _)| old.key),
            );
        let _held = self.dir_locks.lock_all(dirs, Vec::new()).await;
        tracing::info!(
            src = %intent.src_dir, dst = %intent.dst_dir,
            "completing an interrupted rename"
        );
        match self.apply_intent(&intent).await {
            // A directory of the intent was removed since: nothing left to complete.
            Ok(()) | Err(FsError::NotFound) | Err(FsError::NotDir) => {}
            Err(e) => return Err(e),
        }
        self.teems.delete(self.share, self.intent_key()).await?;
        Ok(true)
    }

    /// Writes a rename intent without carrying it out: what a client that crashes right
    /// after step 0 leaves behind. For crash tests of [`Fs::recover`].
    #[doc(hidden)]
    pub async fn write_intent_only(
        &self,
        src_dir: Key,
        src_name: &[u8],
        dst_dir: Key,
        dst_name: &[u8],
    ) -> FsResult<()> {
        let entry = self
            .find_entry(src_dir, src_name)
            .await?
            .ok_or(FsError::NotFound)?;
        let replaced = match self.find_entry(dst_dir, dst_name).await? {
            Some(old) => Some((old, self.read_inode(old.key).await?.0.nlink)),
            None => None,
        };
        let intent = RenameIntent {
            src_dir,
            src_name: src_name.to_vec(),
            dst_dir,
            dst_name: dst_name.to_vec(),
            entry,
            replaced,
        };
        self.teems
            .write(self.share, self.intent_key(), format::encode(&intent))
            .await?;
        Ok(())
    }
}

/// Updates a directory's times, entry count and (for subdirectory changes) link count.
fn touch_dir(dir: &mut Inode, entries_delta: i64, subdir: bool, subdir_delta: i32) {
    let now = Time::now();
    dir.mtime = now;
    dir.ctime = now;
    dir.size = dir.size.saturating_add_signed(entries_delta);
    if subdir {
        dir.nlink = dir.nlink.saturating_add_signed(subdir_delta).max(2);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::{FsConfig, MemBlobs};
    use crate::meta::{MemTeems, ShareId};

    fn fs_with(teems: &MemTeems, blobs: Arc<MemBlobs>, max_entries: usize) -> Fs {
        let config = FsConfig {
            dir_bucket_max_entries: max_entries,
            ..FsConfig::default()
        };
        fs_configured(teems, blobs, config)
    }

    fn fs_configured(teems: &MemTeems, blobs: Arc<MemBlobs>, config: FsConfig) -> Fs {
        Fs::new(
            Arc::new(teems.clone()),
            blobs,
            ShareId([1; 16]),
            Key([9; 16]),
            config,
        )
    }

    /// An unlink returns once the name is gone and queues the inode; the housekeeping
    /// task deletes its metadata after. A failed delete is queued again, and an inode
    /// that keeps a link is not queued at all.
    #[tokio::test]
    async fn unlinked_inodes_are_freed_after_the_unlink_and_failures_are_retried() {
        let teems = MemTeems::new();
        let fs = Arc::new(fs_with(&teems, Arc::new(MemBlobs::new()), 512));
        fs.init(Caller::default()).await.expect("init");
        let root = fs.root();
        let base = teems.live_keys();
        fs.mknod(root, b"a", Kind::File, 0o644, 0, Caller::default())
            .await
            .expect("create a");
        let b = fs
            .mknod(root, b"b", Kind::File, 0o644, 0, Caller::default())
            .await
            .expect("create b")
            .key;
        fs.link(b, root, b"b2").await.expect("link");
        assert_eq!(teems.live_keys(), base + 2);

        fs.unlink(root, b"a").await.expect("unlink a");
        assert!(
            matches!(fs.lookup(root, b"a").await, Err(FsError::NotFound)),
            "the name is gone at once"
        );
        assert_eq!(fs.unlinked_len(), 1);
        assert_eq!(
            teems.live_keys(),
            base + 2,
            "the inode is freed after the unlink, not in it"
        );
        teems.set_unavailable(true);
        assert_eq!(fs.free_unlinked().await, 0);
        assert_eq!(fs.unlinked_len(), 1, "a failed free is queued again");
        teems.set_unavailable(false);
        assert_eq!(fs.free_unlinked().await, 1);
        assert_eq!((fs.unlinked_len(), teems.live_keys()), (0, base + 1));

        fs.unlink(root, b"b").await.expect("unlink b");
        assert_eq!(fs.unlinked_len(), 0, "b2 still names the inode");
        assert_eq!(fs.getattr(b).await.expect("getattr").nlink, 1);

        // The housekeeping task frees without being asked.
        let task = fs.spawn_housekeeping(&tokio::runtime::Handle::current());
        fs.unlink(root, b"b2").await.expect("unlink b2");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while teems.live_keys() != base && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        task.abort();
        assert_eq!(
            teems.live_keys(),
            base,
            "the housekeeping task freed the last inode"
        );
    }

    /// Unlinked inodes are freed in batches: one waits for the housekeeping task's next
    /// tick, and `FREE_BATCH` of them wake it at once.
    #[tokio::test]
    async fn unlinked_inodes_wait_for_a_batch_or_the_next_tick() {
        let teems = MemTeems::new();
        let config = FsConfig {
            housekeeping_interval_ms: 600_000,
            ..FsConfig::default()
        };
        let fs = Arc::new(fs_configured(&teems, Arc::new(MemBlobs::new()), config));
        fs.init(Caller::default()).await.expect("init");
        let root = fs.root();
        let base = teems.live_keys();
        let task = fs.spawn_housekeeping(&tokio::runtime::Handle::current());
        // The interval's first tick comes at once; let it pass.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let batch = super::super::FREE_BATCH;
        for i in 0..batch {
            let name = format!("f{i}");
            fs.mknod(
                root,
                name.as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        for i in 0..batch - 1 {
            fs.unlink(root, format!("f{i}").as_bytes())
                .await
                .expect("unlink");
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            fs.unlinked_len(),
            batch - 1,
            "freed before a batch was queued or the tick came"
        );
        fs.unlink(root, format!("f{}", batch - 1).as_bytes())
            .await
            .expect("unlink");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while teems.live_keys() != base && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        task.abort();
        assert_eq!(
            (fs.unlinked_len(), teems.live_keys()),
            (0, base),
            "a full batch was not freed at once"
        );
    }

    /// SEMANTICS §2: a client holding a file open while another client unlinks it. A
    /// commit before the remover has freed the inode lands in the nameless file (and goes
    /// with it); a commit after that fails with `Stale`. The name is gone for both.
    #[tokio::test]
    async fn a_commit_racing_another_clients_unlink_lands_in_the_nameless_file_or_is_stale() {
        let teems = MemTeems::new();
        let blobs = Arc::new(MemBlobs::new());
        let one = fs_with(&teems, Arc::clone(&blobs), 512);
        let two = Fs::new(
            Arc::new(teems.client(1)),
            blobs,
            ShareId([1; 16]),
            Key([9; 16]),
            FsConfig::default(),
        );
        let me = Caller::default();
        one.init(me).await.expect("init");
        let root = one.root();
        let (attr, o) = one.create(root, b"f", 0o644, me).await.expect("create");
        one.write(o.fh, 0, b"old").await.expect("write");
        one.release(o.fh).await.expect("close");
        let base = teems.live_keys();

        let held = two
            .open(attr.key, true)
            .await
            .expect("open in the second client");
        two.write(held.fh, 0, b"new").await.expect("write");
        one.unlink(root, b"f").await.expect("unlink");
        two.flush(held.fh)
            .await
            .expect("a commit before the free lands in the nameless file");
        assert_eq!(
            teems.live_keys(),
            base,
            "the inode is still there, without a name"
        );
        assert_eq!(one.free_unlinked().await, 1);
        assert_eq!(
            teems.live_keys(),
            base - 1,
            "and goes when the remover frees it"
        );
        two.write(held.fh, 0, b"newer").await.expect("write");
        assert!(
            matches!(two.flush(held.fh).await, Err(FsError::Stale)),
            "a commit after the free"
        );
        assert!(matches!(two.release(held.fh).await, Err(FsError::Stale)));
        for fs in [&one, &two] {
            assert!(matches!(
                fs.lookup(root, b"f").await,
                Err(FsError::NotFound)
            ));
        }
    }

    #[tokio::test]
    async fn large_directories_split_into_buckets_and_lookup_touches_one() {
        let teems = MemTeems::new();
        let fs = fs_with(&teems, Arc::new(MemBlobs::new()), 8);
        fs.init(Caller::default()).await.expect("init");
        let root = fs.root();
        for i in 0..100 {
            fs.mknod(
                root,
                format!("f{i}").as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        let (dir, _) = fs.read_dir_inode(root).await.expect("root");
        let Data::Dir { bucket_bits, .. } = dir.data else {
            panic!("root is a dir")
        };
        assert!(
            bucket_bits >= 4,
            "100 entries at 8 per bucket need ≥ 16 buckets, got 2^{bucket_bits}"
        );
        assert_eq!(fs.readdir(root).await.expect("readdir").len(), 100);
        for i in 0..100 {
            fs.lookup(root, format!("f{i}").as_bytes())
                .await
                .expect("lookup");
        }
        for i in 0..100 {
            fs.unlink(root, format!("f{i}").as_bytes())
                .await
                .expect("unlink");
        }
        assert!(fs.readdir(root).await.expect("readdir").is_empty());
    }

    /// A bucket is kept inline in metadata while its encoding is at most
    /// `inline_bucket_max_bytes`, in a blob past that, and inline again when it shrinks;
    /// every entry is found either way.
    #[tokio::test]
    async fn small_buckets_are_inline_and_large_ones_blobs() {
        let blobs = Arc::new(MemBlobs::new());
        let config = FsConfig {
            inline_bucket_max_bytes: 200,
            delete_grace_ms: 0,
            ..FsConfig::default()
        };
        let fs = Fs::new(
            Arc::new(MemTeems::new()),
            Arc::clone(&blobs) as _,
            ShareId([1; 16]),
            Key([9; 16]),
            config,
        );
        fs.init(Caller::default()).await.expect("init");
        let root = fs.root();
        async fn stored_form(fs: &Fs, dir: Key) -> &'static str {
            let (dir, _) = fs.read_dir_inode(dir).await.expect("dir");
            match dir.data {
                Data::Dir {
                    single: BucketData::Inline(_),
                    ..
                } => "inline",
                Data::Dir {
                    single: BucketData::Blob(_),
                    ..
                } => "blob",
                _ => "empty",
            }
        }
        for i in 0..4 {
            fs.mknod(
                root,
                format!("f{i}").as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        assert_eq!(stored_form(&fs, root).await, "inline");
        assert_eq!(blobs.len(), 0, "nothing in the stores");
        for i in 4..20 {
            fs.mknod(
                root,
                format!("f{i}").as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        assert_eq!(
            stored_form(&fs, root).await,
            "blob",
            "20 entries are over 200 bytes"
        );
        fs.drain_retired().await;
        assert_eq!(
            blobs.len(),
            1,
            "one bucket blob once the superseded ones are deleted"
        );
        for i in 0..20 {
            fs.lookup(root, format!("f{i}").as_bytes())
                .await
                .expect("lookup");
        }
        for i in 4..20 {
            fs.unlink(root, format!("f{i}").as_bytes())
                .await
                .expect("unlink");
        }
        assert_eq!(stored_form(&fs, root).await, "inline");
        fs.drain_retired().await;
        assert_eq!(blobs.len(), 0, "the bucket blobs are retired and deleted");
        assert_eq!(fs.readdir(root).await.expect("readdir").len(), 4);
    }

    /// A client's remembered bucket count only steers which bucket it reads alongside the
    /// directory; after another client splits the directory, every name is still found
    /// (and a removed one is not).
    #[tokio::test]
    async fn a_stale_bucket_count_guess_never_hides_or_invents_an_entry() {
        let teems = MemTeems::new();
        let blobs = Arc::new(MemBlobs::new());
        let one = fs_with(&teems, Arc::clone(&blobs), 4);
        let two = fs_with(&teems, Arc::clone(&blobs), 4);
        one.init(Caller::default()).await.expect("init");
        two.init(Caller::default()).await.expect("init");
        let root = one.root();
        let d = one
            .mkdir(root, b"d", 0o755, Caller::default())
            .await
            .expect("mkdir")
            .key;
        for i in 0..8 {
            one.mknod(
                d,
                format!("f{i}").as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        async fn bits(fs: &Fs, d: Key) -> u8 {
            let (dir, _) = fs.read_dir_inode(d).await.expect("dir");
            let Data::Dir { bucket_bits, .. } = dir.data else {
                panic!("a dir")
            };
            bucket_bits
        }
        let before = bits(&one, d).await;
        assert!(before > 0);
        for i in 0..8 {
            assert!(
                one.find_entry(d, format!("f{i}").as_bytes())
                    .await
                    .expect("find")
                    .is_some()
            );
        }
        assert_eq!(one.names.guess_dir_bits(d), Some(before));
        // The other client splits the directory further and removes one name.
        for i in 8..64 {
            two.mknod(
                d,
                format!("f{i}").as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        two.unlink(d, b"f3").await.expect("unlink");
        assert!(bits(&two, d).await > before, "the directory was split");
        assert_eq!(
            one.names.guess_dir_bits(d),
            Some(before),
            "the first client's guess is stale"
        );
        for i in (0..64).filter(|i| *i != 3) {
            assert!(
                one.find_entry(d, format!("f{i}").as_bytes())
                    .await
                    .expect("find")
                    .is_some(),
                "f{i} hidden"
            );
        }
        assert!(
            one.find_entry(d, b"f3").await.expect("find").is_none(),
            "a removed name found"
        );
    }

    /// A directory made under a larger bucket limit (the default before `128`) splits,
    /// at the next create under a smaller one, into as many buckets as it takes for every
    /// bucket to fit, in one go, and loses no name.
    #[tokio::test]
    async fn a_directory_of_larger_buckets_splits_to_a_smaller_limit_at_the_next_create() {
        let teems = MemTeems::new();
        let blobs = Arc::new(MemBlobs::new());
        let before = fs_with(&teems, Arc::clone(&blobs), 512);
        before.init(Caller::default()).await.expect("init");
        let root = before.root();
        let d = before
            .mkdir(root, b"d", 0o755, Caller::default())
            .await
            .expect("mkdir")
            .key;
        for i in 0..600 {
            let name = format!("file-{i}");
            before
                .mknod(d, name.as_bytes(), Kind::File, 0o644, 0, Caller::default())
                .await
                .expect("create");
        }
        let bits = |dir: &Inode| match dir.data {
            Data::Dir { bucket_bits, .. } => bucket_bits,
            _ => panic!("not a directory"),
        };
        let (dir, _) = before.read_dir_inode(d).await.expect("dir");
        assert_eq!(bits(&dir), 1, "600 names in buckets of at most 512");

        let after = fs_with(&teems, blobs, 128);
        after
            .mknod(d, b"one-more", Kind::File, 0o644, 0, Caller::default())
            .await
            .expect("create");
        let (dir, _) = after.read_dir_inode(d).await.expect("dir");
        assert!(bits(&dir) >= 3, "601 names need at least 8 buckets of 128");
        for i in 0..(1u64 << bits(&dir)) {
            let meta = after.read_bucket_meta(d, i).await.expect("bucket");
            let bucket = after.bucket_from(&meta.data).await.expect("decode");
            assert!(bucket.len() <= 128, "bucket {i} holds {}", bucket.len());
        }
        let names = after.readdir(d).await.expect("readdir");
        assert_eq!(names.len(), 601);
        assert_eq!(after.getattr(d).await.expect("stat").size, 601);
        for i in (0..600).step_by(37) {
            let name = format!("file-{i}");
            let found = after.find_entry(d, name.as_bytes()).await.expect("find");
            assert!(found.is_some(), "{name} lost in the split");
        }
    }

    #[tokio::test]
    async fn an_interrupted_cross_directory_rename_is_completed_on_recover() {
        // DESIGN §10: a crash after the intent leaves a state the next mount completes.
        let teems = MemTeems::new();
        let blobs = Arc::new(MemBlobs::new());
        let fs = fs_with(&teems, Arc::clone(&blobs), 2048);
        fs.init(Caller::default()).await.expect("init");
        let root = fs.root();
        let a = fs
            .mkdir(root, b"a", 0o755, Caller::default())
            .await
            .expect("mkdir")
            .key;
        let b = fs
            .mkdir(root, b"b", 0o755, Caller::default())
            .await
            .expect("mkdir")
            .key;
        let file = fs
            .mknod(a, b"f", Kind::File, 0o644, 0, Caller::default())
            .await
            .expect("f")
            .key;
        let sub = fs
            .mkdir(a, b"d", 0o755, Caller::default())
            .await
            .expect("d")
            .key;
        fs.write_intent_only(a, b"f", b, b"g")
            .await
            .expect("intent");
        // The "next mount": a fresh client over the same services.
        let fs2 = fs_with(&teems, Arc::clone(&blobs), 2048);
        fs2.init(Caller::default()).await.expect("recover");
        assert!(fs2.find_entry(a, b"f").await.expect("read").is_none());
        assert_eq!(
            fs2.find_entry(b, b"g").await.expect("read").map(|e| e.key),
            Some(file)
        );
        // A directory move completed twice leaves correct parents and link counts.
        fs2.write_intent_only(a, b"d", b, b"d")
            .await
            .expect("intent");
        fs2.recover().await.expect("recover");
        fs2.write_intent_only(b, b"d", b, b"d2")
            .await
            .expect("intent");
        fs2.recover().await.expect("recover");
        assert_eq!(fs2.parent_of(sub).await.expect("parent"), b);
        assert_eq!(fs2.getattr(a).await.expect("a").nlink, 2);
        assert_eq!(fs2.getattr(b).await.expect("b").nlink, 3);
    }

    /// Namespace changes of one client in parallel, every metadata call a yield point:
    /// two tasks per directory create files, rename them within their directory and into
    /// the next one (four directories, each renaming into the next: a cycle a rename
    /// locking its two directories in turn could deadlock on), link them into a shared
    /// one, unlink them, chmod their directory (whose value
    /// holds its entries while it has one bucket), and make, fill, empty and remove a
    /// subdirectory, in directories small enough to split into buckets. Nothing is lost,
    /// no count drifts, and nothing deadlocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_namespace_changes_of_one_client_lose_nothing() {
        const TASKS: usize = 8;
        const DIRS: usize = 4;
        const FILES: usize = 25;
        let teems = MemTeems::new().yielding();
        let fs = Arc::new(fs_with(&teems, Arc::new(MemBlobs::new()), 8));
        let who = Caller::default();
        fs.init(who).await.expect("init");
        let root = fs.root();
        let mut dirs = Vec::new();
        for d in 0..DIRS {
            let name = format!("d{d}");
            dirs.push(
                fs.mkdir(root, name.as_bytes(), 0o755, who)
                    .await
                    .expect("mkdir")
                    .key,
            );
        }
        let shared = fs.mkdir(root, b"s", 0o755, who).await.expect("mkdir").key;
        let name = |t: usize, kind: &str, j: usize| format!("t{t}-{kind}{j}");
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let fs = Arc::clone(&fs);
            let dir = dirs[t % DIRS];
            let next = dirs[(t + 1) % DIRS];
            tasks.push(tokio::spawn(async move {
                let n = |kind: &str, j: usize| name(t, kind, j).into_bytes();
                let keep = RenameFlags::default();
                let sub = fs.mkdir(dir, &n("sub", 0), 0o755, who).await?.key;
                for j in 0..FILES {
                    let key = fs
                        .mknod(dir, &n("f", j), Kind::File, 0o644, 0, who)
                        .await?
                        .key;
                    fs.mknod(sub, &n("x", j), Kind::File, 0o644, 0, who).await?;
                    match j % 5 {
                        0 => fs.rename(dir, &n("f", j), next, &n("r", j), keep).await?,
                        1 => fs.rename(dir, &n("f", j), dir, &n("g", j), keep).await?,
                        2 => fs.unlink(dir, &n("f", j)).await?,
                        3 => {
                            fs.link(key, shared, &n("l", j)).await?;
                        }
                        _ => {
                            let perm = Some(if j % 2 == 0 { 0o700 } else { 0o755 });
                            let set = super::super::SetAttr {
                                perm,
                                ..Default::default()
                            };
                            fs.setattr(dir, set).await?;
                        }
                    }
                    fs.unlink(sub, &n("x", j)).await?;
                }
                fs.rmdir(dir, &n("sub", 0)).await
            }));
        }
        let all = async {
            for task in tasks {
                task.await.expect("a task panicked")?;
            }
            FsResult::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("deadlock: the tasks did not finish")
            .expect("an operation failed");

        let names_in = |entries: Vec<DirEntry>| -> std::collections::BTreeSet<String> {
            entries
                .into_iter()
                .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                .collect()
        };
        let mut in_shared = std::collections::BTreeSet::new();
        let mut in_dir = vec![std::collections::BTreeSet::new(); DIRS];
        for t in 0..TASKS {
            for j in 0..FILES {
                let (here, next) = (t % DIRS, (t + 1) % DIRS);
                match j % 5 {
                    0 => {
                        in_dir[next].insert(name(t, "r", j));
                    }
                    1 => {
                        in_dir[here].insert(name(t, "g", j));
                    }
                    2 => {}
                    3 => {
                        in_dir[here].insert(name(t, "f", j));
                        in_shared.insert(name(t, "l", j));
                    }
                    _ => {
                        in_dir[here].insert(name(t, "f", j));
                    }
                }
            }
        }
        for (d, (&dir, expected)) in dirs.iter().zip(in_dir).enumerate() {
            let found = names_in(fs.readdir(dir).await.expect("readdir"));
            assert_eq!(found, expected, "entries of d{d}");
            let attr = fs.getattr(dir).await.expect("stat");
            assert_eq!(
                (attr.size, attr.nlink),
                (expected.len() as u64, 2),
                "entry count and link count of d{d}"
            );
        }
        let found = names_in(fs.readdir(shared).await.expect("readdir"));
        assert_eq!(found, in_shared, "entries of the shared directory");
        let attr = fs.getattr(shared).await.expect("stat");
        assert_eq!((attr.size, attr.nlink), (in_shared.len() as u64, 2));
        for t in 0..TASKS {
            for j in (3..FILES).step_by(5) {
                let entry = fs.find_entry(shared, name(t, "l", j).as_bytes()).await;
                let key = entry.expect("find").expect("linked name").key;
                let links = fs.getattr(key).await.expect("stat").nlink;
                assert_eq!(links, 2, "links of {}", name(t, "f", j));
            }
        }
        let root_attr = fs.getattr(root).await.expect("stat");
        assert_eq!((root_attr.size, root_attr.nlink), (5, 7));
    }
}
