//! Open directories: one listing snapshot per handle (DESIGN §10, SEMANTICS §2).
//!
//! The kernel reads a directory in pages, each a `readdir` call with the offset where the
//! previous page ended. Listing the directory afresh for every page would cost a full
//! listing (every bucket, and for readdirplus every entry's metadata) per page: quadratic
//! in the directory size. Instead `opendir` allocates a handle, the first page (offset 0)
//! takes a snapshot from fresh metadata, and later pages are served from it. A `readdir`
//! at offset 0 again (`rewinddir`) takes a new snapshot, as POSIX asks. Entries created or
//! removed while the handle is open may or may not appear, which POSIX allows.
//!
//! readdirplus attributes are not part of the snapshot: [`Fs::entry_attrs`] reads them
//! fresh for just the entries of one page.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::{Attr, DirEntry, Fs, FsError, FsResult};
use crate::meta::Key;

/// Metadata reads in flight at once for one page of readdirplus.
const ATTRS_PARALLEL: usize = 16;

/// A directory's listing as of one fresh metadata read.
#[derive(Debug)]
pub struct DirListing {
    pub dir: Key,
    /// The directory's parent (the root's is itself), for `..`.
    pub parent: Key,
    /// Entries sorted by name, without `.` and `..`.
    pub entries: Vec<DirEntry>,
}

struct DirHandle {
    key: Key,
    listing: Option<Arc<DirListing>>,
}

#[derive(Default)]
pub(super) struct DirTable {
    handles: HashMap<u64, DirHandle>,
    next_fh: u64,
}

impl Fs {
    /// [`Fs::opendir_by`] as root.
    pub async fn opendir(&self, key: Key) -> FsResult<u64> {
        self.opendir_by(key, super::Caller::ROOT).await
    }

    /// Opens a directory for listing (fresh metadata: it must exist and be a directory);
    /// `who` needs read permission on it.
    pub async fn opendir_by(&self, key: Key, who: super::Caller) -> FsResult<u64> {
        let (dir, _) = self.read_dir_inode(key).await?;
        super::perm::check(&dir, who, super::perm::MAY_READ)?;
        let mut dirs = self.dirs.lock().map_err(|_| FsError::BadHandle)?;
        dirs.next_fh += 1;
        let fh = dirs.next_fh;
        dirs.handles.insert(fh, DirHandle { key, listing: None });
        Ok(fh)
    }

    /// The listing a `readdir` at `offset` of handle `fh` pages through: a new snapshot
    /// from fresh metadata at offset 0 (start, or `rewinddir`) or if none was taken yet,
    /// else the handle's snapshot.
    pub async fn readdir_snapshot(&self, fh: u64, offset: u64) -> FsResult<Arc<DirListing>> {
        let (key, existing) = {
            let dirs = self.dirs.lock().map_err(|_| FsError::BadHandle)?;
            let h = dirs.handles.get(&fh).ok_or(FsError::BadHandle)?;
            (h.key, h.listing.clone())
        };
        if offset != 0
            && let Some(listing) = existing
        {
            return Ok(listing);
        }
        let listing = Arc::new(self.list_dir(key).await?);
        let mut dirs = self.dirs.lock().map_err(|_| FsError::BadHandle)?;
        if let Some(h) = dirs.handles.get_mut(&fh) {
            h.listing = Some(Arc::clone(&listing));
        }
        Ok(listing)
    }

    /// Closes a directory handle (unknown handles are ignored).
    pub fn releasedir(&self, fh: u64) {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.handles.remove(&fh);
        }
    }

    /// Open directory handles (for tests: the table must not leak).
    pub fn open_dir_handles(&self) -> usize {
        self.dirs.lock().map(|d| d.handles.len()).unwrap_or(0)
    }

    /// A fresh listing: one metadata read of the directory plus its buckets.
    pub async fn list_dir(&self, key: Key) -> FsResult<DirListing> {
        let (dir, _) = self.read_dir_inode(key).await?;
        let entries = self.load_all_entries(key, &dir).await?;
        Ok(DirListing {
            dir: key,
            parent: dir.parent.unwrap_or(self.root),
            entries: entries
                .into_iter()
                .map(|(name, e)| DirEntry {
                    name,
                    key: e.key,
                    kind: e.kind,
                })
                .collect(),
        })
    }

    /// Fresh attributes of `entries` of directory `dir`, in order; `None` for an entry
    /// whose inode was removed since the listing.
    pub async fn entry_attrs(&self, dir: Key, entries: &[DirEntry]) -> FsResult<Vec<Option<Attr>>> {
        // Owned items: a stream of borrowing futures trips the higher-ranked `Send` check
        // when the caller's future is spawned.
        let entries: Vec<DirEntry> = entries.to_vec();
        stream::iter(entries)
            .map(|e| async move {
                match self.read_inode(e.key).await {
                    Ok((inode, version)) => {
                        self.names.remember_name(dir, &e.name, e.key, version);
                        self.remember_content(e.key, &inode, version);
                        Ok(Some(self.attr_of(e.key, &inode, version)))
                    }
                    Err(FsError::NotFound) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffered(ATTRS_PARALLEL)
            .try_collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use crate::fs::{Caller, Fs, FsConfig, Kind, MemBlobs};
    use crate::meta::{Key, MemTeems, MetaError, PolicyOp, ShareId, SharePolicy, Teems, Version};

    /// Counts metadata reads, to show how much work a listing costs.
    struct CountingTeems {
        inner: MemTeems,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl Teems for CountingTeems {
        async fn read(&self, share: ShareId, key: Key) -> Result<(Vec<u8>, Version), MetaError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.read(share, key).await
        }
        async fn write(
            &self,
            share: ShareId,
            key: Key,
            value: Vec<u8>,
        ) -> Result<Version, MetaError> {
            self.inner.write(share, key, value).await
        }
        async fn delete(&self, share: ShareId, key: Key) -> Result<(), MetaError> {
            self.inner.delete(share, key).await
        }
        async fn change_policy(&self, share: ShareId, op: PolicyOp) -> Result<u64, MetaError> {
            self.inner.change_policy(share, op).await
        }
        async fn read_policy(&self, share: ShareId) -> Result<SharePolicy, MetaError> {
            self.inner.read_policy(share).await
        }
    }

    #[tokio::test]
    async fn paging_through_an_open_directory_lists_it_once() {
        // DESIGN §10: a page of a large directory must not cost a whole listing.
        let teems = Arc::new(CountingTeems {
            inner: MemTeems::new(),
            reads: AtomicUsize::new(0),
        });
        let config = FsConfig {
            dir_bucket_max_entries: 64,
            ..FsConfig::default()
        };
        let fs = Fs::new(
            teems.clone(),
            Arc::new(MemBlobs::new()),
            ShareId([1; 16]),
            Key([2; 16]),
            config,
        );
        fs.init(Caller::default()).await.expect("init");
        let root = fs.root();
        for i in 0..500 {
            fs.mknod(
                root,
                format!("f{i:04}").as_bytes(),
                Kind::File,
                0o644,
                0,
                Caller::default(),
            )
            .await
            .expect("create");
        }
        let fh = fs.opendir(root).await.expect("opendir");
        let before = teems.reads.load(Ordering::SeqCst);
        let first = fs.readdir_snapshot(fh, 0).await.expect("first page");
        let one_listing = teems.reads.load(Ordering::SeqCst) - before;
        assert_eq!(first.entries.len(), 500);
        assert!(
            one_listing >= 2,
            "a listing reads the directory and its buckets"
        );
        // A file created after the snapshot: later pages keep the snapshot (POSIX allows
        // either), and cost no metadata reads at all.
        fs.mknod(root, b"late", Kind::File, 0o644, 0, Caller::default())
            .await
            .expect("create");
        let before_pages = teems.reads.load(Ordering::SeqCst);
        for offset in (10..500u64).step_by(10) {
            let page = fs.readdir_snapshot(fh, offset).await.expect("page");
            assert!(Arc::ptr_eq(&page, &first), "pages share the snapshot");
        }
        assert_eq!(
            teems.reads.load(Ordering::SeqCst),
            before_pages,
            "pages after the first read nothing"
        );
        // rewinddir: offset 0 again takes a fresh snapshot that sees the new file.
        let again = fs.readdir_snapshot(fh, 0).await.expect("rewind");
        assert_eq!(again.entries.len(), 501);
        // readdirplus attributes for one page only: one read per entry of the page.
        let before_attrs = teems.reads.load(Ordering::SeqCst);
        let attrs = fs
            .entry_attrs(root, &again.entries[..20])
            .await
            .expect("attrs");
        assert_eq!(attrs.len(), 20);
        assert!(
            attrs
                .iter()
                .all(|a| a.as_ref().is_some_and(|a| a.kind == Kind::File))
        );
        assert_eq!(teems.reads.load(Ordering::SeqCst) - before_attrs, 20);
        fs.releasedir(fh);
        assert_eq!(fs.open_dir_handles(), 0);
        assert!(
            fs.readdir_snapshot(fh, 5).await.is_err(),
            "a released handle is gone"
        );
    }
}
