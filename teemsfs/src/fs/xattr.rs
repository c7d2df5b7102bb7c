//! Extended attributes, sealed as one blob per inode (DESIGN §9: stores see ciphertext
//! only). The metadata value names the blob; setting an attribute re-seals it.

use super::format::{self, Xattrs, derive_id};
use super::{Fs, FsError, FsResult};
use crate::meta::Key;

/// `setxattr` flags (Linux values).
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;
/// Largest value accepted (Linux's XATTR_SIZE_MAX).
const XATTR_VALUE_MAX_BYTES: usize = 65_536;

impl Fs {
    async fn xattrs_of(&self, inode: &format::Inode) -> FsResult<Xattrs> {
        match &inode.xattrs {
            None => Ok(Xattrs::new()),
            Some(b) => format::decode("xattrs", &self.get_blob(b).await?),
        }
    }

    fn check_xattr_name(name: &[u8]) -> FsResult<()> {
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::Range);
        }
        // POSIX ACLs are stored by the kernel as system.* attributes; we do not implement
        // ACL semantics, so refuse them rather than store rules nobody enforces.
        if name.starts_with(b"system.") {
            return Err(FsError::Unsupported("system.* extended attributes (POSIX ACLs)"));
        }
        Ok(())
    }

    pub async fn getxattr(&self, key: Key, name: &[u8]) -> FsResult<Vec<u8>> {
        Self::check_xattr_name(name)?;
        let (inode, _) = self.read_inode(key).await?;
        self.xattrs_of(&inode).await?.remove(name).ok_or(FsError::NoXattr)
    }

    pub async fn listxattr(&self, key: Key) -> FsResult<Vec<Vec<u8>>> {
        let (inode, _) = self.read_inode(key).await?;
        Ok(self.xattrs_of(&inode).await?.into_keys().collect())
    }

    pub async fn setxattr(&self, key: Key, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        Self::check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX_BYTES {
            return Err(FsError::Range);
        }
        self.change_xattrs(key, |x| {
            let exists = x.contains_key(name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(FsError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(FsError::NoXattr);
            }
            x.insert(name.to_vec(), value.to_vec());
            Ok(())
        })
        .await
    }

    pub async fn removexattr(&self, key: Key, name: &[u8]) -> FsResult<()> {
        Self::check_xattr_name(name)?;
        self.change_xattrs(key, |x| x.remove(name).map(|_| ()).ok_or(FsError::NoXattr)).await
    }

    async fn change_xattrs(
        &self,
        key: Key,
        change: impl FnOnce(&mut Xattrs) -> FsResult<()>,
    ) -> FsResult<()> {
        // ns_lock: a directory's value also holds its inline bucket; inode lock: a file's
        // holds its content reference, rewritten by commits (see `locks`).
        let _ns = self.ns_lock.lock().await;
        let _inode_lock = self.key_locks.lock(key).await;
        let (mut inode, _) = self.read_inode(key).await?;
        let mut xattrs = self.xattrs_of(&inode).await?;
        change(&mut xattrs)?;
        let old = inode.xattrs.take();
        if !xattrs.is_empty() {
            inode.blob_seq += 1;
            inode.xattrs = Some(
                self.put_blob(derive_id(&key, "xattrs", 0), inode.blob_seq, format::encode(&xattrs))
                    .await?,
            );
        }
        inode.ctime = format::Time::now();
        let version = self.write_inode(key, &inode).await?;
        self.note_version(key, version);
        self.retire(old.into_iter().collect());
        Ok(())
    }
}
