//! Extended attributes, sealed as one blob per inode (DESIGN §9: stores see ciphertext
//! only). The metadata value names the blob; setting an attribute re-seals it.

use super::format::{self, Xattrs, derive_id};
use super::{Caller, Fs, FsError, FsResult, perm};
use crate::meta::Key;

/// `setxattr` flags (Linux values).
const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;
/// Largest value accepted (Linux's XATTR_SIZE_MAX).
const XATTR_VALUE_MAX_BYTES: usize = 65_536;
/// The attribute holding a file's capabilities, refused (see `check_xattr_name`).
const FILE_CAPABILITIES: &[u8] = b"security.capability";

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
            return Err(FsError::Unsupported(
                "system.* extended attributes (POSIX ACLs)",
            ));
        }
        // File capabilities would let one tenant grant privileges to a binary that another
        // tenant or the host runs; a shared network filesystem does not carry them.
        if name == FILE_CAPABILITIES {
            return Err(FsError::Unsupported(
                "file capabilities (security.capability)",
            ));
        }
        Ok(())
    }

    /// [`Fs::getxattr_by`] as root.
    pub async fn getxattr(&self, key: Key, name: &[u8]) -> FsResult<Vec<u8>> {
        self.getxattr_by(key, name, Caller::ROOT).await
    }

    pub async fn getxattr_by(&self, key: Key, name: &[u8], who: Caller) -> FsResult<Vec<u8>> {
        // Never stored (see `check_xattr_name`), so absent without a metadata read. The
        // kernel asks for it before every write(2) to decide whether to drop privileges.
        if name == FILE_CAPABILITIES {
            return Err(FsError::NoXattr);
        }
        Self::check_xattr_name(name)?;
        let (inode, _) = self.read_inode(key).await?;
        perm::check_xattr(&inode, who, name, false)?;
        self.xattrs_of(&inode)
            .await?
            .remove(name)
            .ok_or(FsError::NoXattr)
    }

    pub async fn listxattr(&self, key: Key) -> FsResult<Vec<Vec<u8>>> {
        let (inode, _) = self.read_inode(key).await?;
        Ok(self.xattrs_of(&inode).await?.into_keys().collect())
    }

    /// [`Fs::setxattr_by`] as root.
    pub async fn setxattr(&self, key: Key, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.setxattr_by(key, name, value, flags, Caller::ROOT)
            .await
    }

    pub async fn setxattr_by(
        &self,
        key: Key,
        name: &[u8],
        value: &[u8],
        flags: i32,
        who: Caller,
    ) -> FsResult<()> {
        Self::check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX_BYTES {
            return Err(FsError::Range);
        }
        self.change_xattrs(key, name, who, |x| {
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

    /// [`Fs::removexattr_by`] as root.
    pub async fn removexattr(&self, key: Key, name: &[u8]) -> FsResult<()> {
        self.removexattr_by(key, name, Caller::ROOT).await
    }

    pub async fn removexattr_by(&self, key: Key, name: &[u8], who: Caller) -> FsResult<()> {
        Self::check_xattr_name(name)?;
        self.change_xattrs(key, name, who, |x| {
            x.remove(name).map(|_| ()).ok_or(FsError::NoXattr)
        })
        .await
    }

    async fn change_xattrs(
        &self,
        key: Key,
        name: &[u8],
        who: Caller,
        change: impl FnOnce(&mut Xattrs) -> FsResult<()>,
    ) -> FsResult<()> {
        // Directory lock: a directory's value also holds its inline bucket; inode lock: a
        // file's holds its content reference, rewritten by commits (see `locks`).
        let _dir = self.dir_locks.lock(key).await;
        let _inode_lock = self.key_locks.lock(key).await;
        let (mut inode, _) = self.read_inode(key).await?;
        perm::check_xattr(&inode, who, name, true)?;
        let mut xattrs = self.xattrs_of(&inode).await?;
        change(&mut xattrs)?;
        let old = inode.xattrs.take();
        if !xattrs.is_empty() {
            inode.blob_seq += 1;
            inode.xattrs = Some(
                self.put_blob(
                    derive_id(&key, "xattrs", 0),
                    inode.blob_seq,
                    format::encode(&xattrs),
                )
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::fs::{Caller, Fs, FsConfig, FsError, MemBlobs};
    use crate::meta::{Key, MemTeems, ShareId};

    /// File capabilities are refused on set and absent on get (answered without a
    /// metadata read, so it works even when TEEMS is unreachable); other `security.`
    /// attributes are stored.
    #[tokio::test]
    async fn file_capabilities_are_refused_and_never_read() {
        let teems = MemTeems::new();
        let fs = Fs::new(
            Arc::new(teems.clone()),
            Arc::new(MemBlobs::new()),
            ShareId([1; 16]),
            Key([2; 16]),
            FsConfig::default(),
        );
        fs.init(Caller::default()).await.expect("init");
        let (attr, o) = fs
            .create(fs.root(), b"bin", 0o755, Caller::default())
            .await
            .expect("create");
        fs.release(o.fh).await.expect("close");
        assert!(matches!(
            fs.setxattr(attr.key, b"security.capability", b"\x01", 0)
                .await,
            Err(FsError::Unsupported(_))
        ));
        fs.setxattr(attr.key, b"security.selinux", b"label", 0)
            .await
            .expect("other security.* attributes are kept");
        assert_eq!(
            fs.getxattr(attr.key, b"security.selinux")
                .await
                .expect("get"),
            b"label"
        );
        teems.set_unavailable(true);
        assert!(matches!(
            fs.getxattr(attr.key, b"security.capability").await,
            Err(FsError::NoXattr)
        ));
        assert!(
            fs.getxattr(attr.key, b"security.selinux").await.is_err(),
            "others need the metadata"
        );
    }
}
