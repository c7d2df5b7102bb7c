//! Per-key locks: serialise this client's read-modify-writes of one directory or one
//! inode's metadata.
//!
//! TEEMS has no compare-and-swap, so two operations of one client that each read a value,
//! change a field and write it back would lose one change — two creates in one directory
//! would lose an entry, and a `chmod` that read a file's value before a buffered-write
//! commit would write the *old* content reference back after it, reverting the file and
//! retiring the new blobs. So:
//! - every namespace change holds the **directory lock** of each directory whose buckets
//!   or inode it rewrites (create, link, unlink: the parent; rmdir: the parent and the
//!   removed directory; rename: both parents, a directory moved to another parent, a
//!   directory replaced). Changes in different directories run in parallel;
//! - every read-modify-write of an inode's metadata (commit, setattr, xattr changes,
//!   link-count changes) holds the **inode lock** from its read to its write. Setattr and
//!   xattr changes also hold the key's directory lock, since a directory's value carries
//!   its inline bucket.
//!
//! Lock order, to stay deadlock-free: the tree lock → directory locks → an open file's
//! state lock → one inode lock. Only holders of the **tree lock** (rename, rmdir, rename
//! recovery) hold more than one directory lock; every other operation holds at most one
//! and waits for no directory lock while holding it. So a tree-lock holder can take its
//! directory locks in any order: whoever holds one it waits for will release it without
//! waiting for a lock the tree-lock holder has. No operation holds two inode locks at
//! once, and none waits for a directory lock or a state lock while holding an inode lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::meta::Key;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// A lock per key, created on demand and dropped when nobody holds or waits for it, so
/// the table holds only keys in use.
#[derive(Default)]
pub(super) struct KeyLocks {
    map: Mutex<HashMap<Key, Slot>>,
}

/// Holds one key's lock until dropped.
pub(super) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub(super) async fn lock(&self, key: Key) -> KeyGuard<'_> {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(key).or_default())
        };
        let guard = slot.lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }

    /// Adds the locks of `keys` to `held`, skipping keys already in it (a key's lock is
    /// not reentrant). Only a holder of the tree lock locks more than one directory, so
    /// the order does not matter (see the module docs).
    pub(super) async fn lock_all<'a>(
        &'a self,
        keys: impl IntoIterator<Item = Key>,
        mut held: Vec<KeyGuard<'a>>,
    ) -> Vec<KeyGuard<'a>> {
        for key in keys {
            if !held.iter().any(|g| g.key == key) {
                held.push(self.lock(key).await);
            }
        }
        held
    }

    /// Keys with a live lock (for tests: the table must not grow without bound).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the table's own reference left: nobody holds or waits for this key.
        // New lockers clone under the same table mutex, so this check cannot race them.
        if map
            .get(&self.key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_lock_excludes_and_the_table_empties() {
        let locks = Arc::new(KeyLocks::default());
        let key = Key([1; 16]);
        let g = locks.lock(key).await;
        let other = Arc::clone(&locks);
        let waiter = tokio::spawn(async move {
            let _g = other.lock(key).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a second locker must wait");
        // Another key is independent.
        drop(locks.lock(Key([2; 16])).await);
        drop(g);
        waiter.await.expect("waiter");
        assert_eq!(locks.len(), 0, "unused locks are dropped from the table");
    }

    use async_trait::async_trait;

    use crate::fs::{Caller, Fs, FsConfig, MemBlobs, SetAttr};
    use crate::meta::{MemTeems, MetaError, PolicyOp, ShareId, SharePolicy, Teems, Version};

    /// TEEMS with a network's worth of scheduling: every call yields a few times, so
    /// concurrent operations interleave between their metadata read and write.
    struct SlowTeems(MemTeems);

    async fn hop() {
        for _ in 0..(rand::random::<u8>() % 4) {
            tokio::task::yield_now().await;
        }
    }

    #[async_trait]
    impl Teems for SlowTeems {
        async fn read(&self, share: ShareId, key: Key) -> Result<(Vec<u8>, Version), MetaError> {
            hop().await;
            let r = self.0.read(share, key).await;
            hop().await;
            r
        }
        async fn write(
            &self,
            share: ShareId,
            key: Key,
            value: Vec<u8>,
        ) -> Result<Version, MetaError> {
            hop().await;
            self.0.write(share, key, value).await
        }
        async fn delete(&self, share: ShareId, key: Key) -> Result<(), MetaError> {
            self.0.delete(share, key).await
        }
        async fn change_policy(&self, share: ShareId, op: PolicyOp) -> Result<u64, MetaError> {
            self.0.change_policy(share, op).await
        }
        async fn read_policy(&self, share: ShareId) -> Result<SharePolicy, MetaError> {
            self.0.read_policy(share).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn chmod_and_xattrs_during_commits_lose_neither_content_nor_mode() {
        // A chmod, or an xattr change, that read the inode before a buffered-write commit
        // and wrote it back after would revert the file's content (and retire the new
        // blobs); a commit that read before the chmod would revert the mode.
        let fs = Arc::new(Fs::new(
            Arc::new(SlowTeems(MemTeems::new())),
            Arc::new(MemBlobs::new()),
            ShareId([1; 16]),
            Key([2; 16]),
            FsConfig::default(),
        ));
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let root = fs.root();
        for round in 0..40u32 {
            let name = format!("f{round}");
            let (attr, opened) = fs
                .create(root, name.as_bytes(), 0o600, me)
                .await
                .expect("create");
            let content = vec![round as u8; 1000 + round as usize];
            fs.write(opened.fh, 0, &content).await.expect("write");
            let perm = 0o640 | (round as u16 & 0o7);
            let (f1, f2, f3) = (Arc::clone(&fs), Arc::clone(&fs), Arc::clone(&fs));
            let fh = opened.fh;
            let commit = tokio::spawn(async move { f1.flush(fh).await });
            let chmod = tokio::spawn(async move {
                f2.setattr(
                    attr.key,
                    SetAttr {
                        perm: Some(perm),
                        ..SetAttr::default()
                    },
                )
                .await
            });
            let xattr =
                tokio::spawn(async move { f3.setxattr(attr.key, b"user.round", b"x", 0).await });
            commit.await.expect("join").expect("flush");
            chmod.await.expect("join").expect("chmod");
            xattr.await.expect("join").expect("setxattr");
            fs.release(opened.fh).await.expect("close");
            let got = fs.getattr(attr.key).await.expect("stat");
            assert_eq!(got.perm, perm, "round {round}: the chmod was lost");
            assert_eq!(
                got.size,
                content.len() as u64,
                "round {round}: the commit was lost"
            );
            let reopened = fs.open(attr.key, false).await.expect("open");
            let back = fs.read(reopened.fh, 0, 1 << 20).await.expect("read");
            fs.release(reopened.fh).await.expect("close");
            assert!(back == content, "round {round}: content reverted");
            assert_eq!(
                fs.getxattr(attr.key, b"user.round").await.expect("xattr"),
                b"x"
            );
        }
        assert_eq!(fs.key_locks.len(), 0, "no lock left behind");
    }
}
