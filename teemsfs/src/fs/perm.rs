//! Permission checks, done here rather than by the kernel.
//!
//! The mount does not use the kernel's `default_permissions`: with it, the kernel checks
//! every path component against attributes it must first fetch with a `getattr` (the
//! attribute TTL is zero, so every check is a fresh TEEMS read), which doubled the
//! metadata round trips of a `stat` or an `open`. Instead each operation checks the
//! metadata it reads anyway: a lookup the directory it searches, a create the directory
//! it adds to, an open the file. The rules are the kernel's (`generic_permission`,
//! `setattr_prepare`, `xattr_permission`); the sticky-bit rule for removals and renames
//! stays with the kernel, which applies it whether or not `default_permissions` is set.
//!
//! Root (uid 0) is treated as holding `CAP_DAC_OVERRIDE`, `CAP_FOWNER`, `CAP_CHOWN` and
//! `CAP_FSETID`, as a root process normally does.

use super::format::{Inode, Kind};
use super::{Caller, FsError, FsResult};

/// Permission bits as `access(2)` and the kernel name them.
pub const MAY_READ: u32 = 4;
pub const MAY_WRITE: u32 = 2;
pub const MAY_EXEC: u32 = 1;

const S_ISUID: u16 = 0o4000;
const S_ISGID: u16 = 0o2000;

impl Caller {
    /// The caller every in-process user of [`super::Fs`] (tests, housekeeping) acts as.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the caller's group or one of its supplementary groups. The
    /// supplementary groups are read from `/proc` only when this is asked, which the
    /// checks below avoid whenever the answer would not change the outcome.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || supplementary_groups(self.pid).contains(&gid)
    }
}

/// The supplementary groups of process (or thread) `pid`, from `/proc/PID/status`; none
/// when it cannot be read (the process is gone, or `pid` is 0 for an in-process caller).
fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    parse_groups(&status)
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `who` may access `inode` for every bit in `mask` (`MAY_*`).
pub fn permits(inode: &Inode, who: Caller, mask: u32) -> bool {
    let mask = mask & 7;
    let perm = u32::from(inode.perm);
    if who.is_root() {
        // Everything but executing a file that nobody may execute.
        return mask & MAY_EXEC == 0 || inode.kind == Kind::Dir || perm & 0o111 != 0;
    }
    let class = if who.uid == inode.uid {
        perm >> 6
    } else if (perm >> 3) & 7 == perm & 7 || !who.in_group(inode.gid) {
        // (When the group and other bits agree, membership does not matter.)
        perm
    } else {
        perm >> 3
    };
    mask & !class == 0
}

/// [`permits`], as an `EACCES` error.
pub fn check(inode: &Inode, who: Caller, mask: u32) -> FsResult<()> {
    if permits(inode, who, mask) {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

/// Checks a directory for a search (`lookup`).
pub fn check_search(dir: &Inode, who: Caller) -> FsResult<()> {
    check(dir, who, MAY_EXEC)
}

/// Checks a directory for adding or removing a name.
pub fn check_modify(dir: &Inode, who: Caller) -> FsResult<()> {
    check(dir, who, MAY_WRITE | MAY_EXEC)
}

/// What a `setattr` asks to change, for [`check_setattr`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A size change by path (`truncate(2)`); one through an open file (`ftruncate`) was
    /// checked when the file was opened.
    pub truncate_by_path: bool,
    /// Times set to given values (`utimensat` with times).
    pub explicit_times: bool,
    /// Times set to the current time (`utimensat` with `UTIME_NOW`, `touch`).
    pub times_now: bool,
}

/// Checks a `setattr` by `who` against the inode's current metadata; returns the mode to
/// store when a `chmod` must drop `S_ISGID` (the caller is not in the file's group).
pub fn check_setattr(inode: &Inode, who: Caller, change: &AttrChange) -> FsResult<Option<u16>> {
    if who.is_root() {
        return Ok(change.perm);
    }
    let owner = who.uid == inode.uid;
    if change.truncate_by_path {
        check(inode, who, MAY_WRITE)?;
    }
    if let Some(uid) = change.uid {
        // Only root gives a file away; an owner may "change" it to itself.
        if !(owner && uid == inode.uid) {
            return Err(FsError::NotPermitted("only root changes a file's owner"));
        }
    }
    if let Some(gid) = change.gid
        && (!owner || !(gid == inode.gid || who.in_group(gid)))
    {
        return Err(FsError::NotPermitted(
            "the owner may change the group to one of its own",
        ));
    }
    let mut perm = change.perm;
    if let Some(new) = change.perm {
        if owner {
            let gid = change.gid.unwrap_or(inode.gid);
            if new & S_ISGID != 0 && !who.in_group(gid) {
                perm = Some(new & !S_ISGID);
            }
        } else {
            // The kernel drops set-id bits itself when someone who may write a file
            // writes or truncates it, and sends that as a mode change from the writer:
            // allow exactly that (clearing S_ISUID/S_ISGID, nothing else) to a writer.
            let only_clears_setid = new & !(S_ISUID | S_ISGID) == inode.perm & !(S_ISUID | S_ISGID)
                && new & !inode.perm == 0;
            if !(only_clears_setid && permits(inode, who, MAY_WRITE)) {
                return Err(FsError::NotPermitted(
                    "only the owner changes a file's mode",
                ));
            }
        }
    }
    if change.explicit_times && !owner {
        return Err(FsError::NotPermitted("only the owner sets a file's times"));
    }
    if change.times_now && !owner {
        check(inode, who, MAY_WRITE)?;
    }
    Ok(perm)
}

/// Checks access to extended attribute `name`: `user.*` attributes follow the file's
/// read (get) and write (set, remove) permission; the kernel has already applied its own
/// rules for `trusted.*` and `security.*` and for `user.*` on special files.
pub fn check_xattr(inode: &Inode, who: Caller, name: &[u8], write: bool) -> FsResult<()> {
    if !name.starts_with(b"user.") {
        return Ok(());
    }
    check(inode, who, if write { MAY_WRITE } else { MAY_READ })
}

/// The access an `open` for reading and/or writing asks for.
pub fn open_mask(read: bool, write: bool) -> u32 {
    (if read { MAY_READ } else { 0 }) | (if write { MAY_WRITE } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::format::Data;
    use crate::fs::new_inode;

    fn file(perm: u16, uid: u32, gid: u32) -> Inode {
        new_inode(Kind::File, perm, Caller { uid, gid, pid: 0 }, Data::Empty)
    }

    fn user(uid: u32, gid: u32) -> Caller {
        Caller { uid, gid, pid: 0 }
    }

    #[test]
    fn owner_group_and_other_bits_are_chosen_like_the_kernel() {
        let f = file(0o640, 10, 20);
        assert!(permits(&f, user(10, 99), MAY_READ | MAY_WRITE));
        assert!(!permits(&f, user(10, 99), MAY_EXEC));
        assert!(permits(&f, user(11, 20), MAY_READ));
        assert!(!permits(&f, user(11, 20), MAY_WRITE));
        assert!(!permits(&f, user(11, 21), MAY_READ));
        // The owner class applies even when it is stricter than the others.
        let g = file(0o077, 10, 20);
        assert!(!permits(&g, user(10, 20), MAY_READ));
        assert!(permits(&g, user(11, 21), MAY_READ | MAY_WRITE | MAY_EXEC));
        // Root: anything but executing a file with no x bit.
        assert!(permits(
            &file(0o000, 10, 20),
            Caller::ROOT,
            MAY_READ | MAY_WRITE
        ));
        assert!(!permits(&file(0o644, 10, 20), Caller::ROOT, MAY_EXEC));
        assert!(permits(&file(0o100, 10, 20), Caller::ROOT, MAY_EXEC));
        let mut d = file(0o000, 10, 20);
        d.kind = Kind::Dir;
        assert!(permits(&d, Caller::ROOT, MAY_EXEC));
    }

    #[test]
    fn supplementary_groups_come_from_proc_status() {
        let status = "Name:\tsh\nUid:\t1\t1\t1\t1\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), vec![4, 24, 1000]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("no such line"), Vec::<u32>::new());
        // This test process: its groups are whatever /proc says, and its own gid counts.
        let me = Caller {
            uid: 12345,
            gid: 777,
            pid: std::process::id(),
        };
        assert!(me.in_group(777));
    }

    #[test]
    fn setattr_rules_follow_setattr_prepare() {
        let f = file(0o2755 & 0o7777, 10, 20);
        let owner = user(10, 20);
        let stranger = user(11, 21);
        let chmod = |perm| AttrChange {
            perm: Some(perm),
            ..Default::default()
        };
        assert_eq!(
            check_setattr(&f, owner, &chmod(0o700)).ok(),
            Some(Some(0o700))
        );
        assert!(matches!(
            check_setattr(&f, stranger, &chmod(0o777)),
            Err(FsError::NotPermitted(_))
        ));
        // An owner outside the file's group cannot set S_ISGID: it is dropped.
        let outsider_owner = user(10, 99);
        assert_eq!(
            check_setattr(&f, outsider_owner, &chmod(0o2700)).ok(),
            Some(Some(0o700))
        );
        // chown: root only; chgrp: the owner, to one of its groups.
        let chown = AttrChange {
            uid: Some(11),
            ..Default::default()
        };
        assert!(check_setattr(&f, owner, &chown).is_err());
        assert!(check_setattr(&f, Caller::ROOT, &chown).is_ok());
        let to_own_group = AttrChange {
            gid: Some(20),
            ..Default::default()
        };
        assert!(check_setattr(&f, owner, &to_own_group).is_ok());
        let to_other_group = AttrChange {
            gid: Some(30),
            ..Default::default()
        };
        assert!(check_setattr(&f, owner, &to_other_group).is_err());
        // Times: explicit values need the owner; "now" needs write permission.
        let explicit = AttrChange {
            explicit_times: true,
            ..Default::default()
        };
        let now = AttrChange {
            times_now: true,
            ..Default::default()
        };
        assert!(check_setattr(&f, stranger, &explicit).is_err());
        assert!(matches!(
            check_setattr(&f, stranger, &now),
            Err(FsError::Access)
        ));
        let shared = file(0o666, 10, 20);
        assert!(check_setattr(&shared, stranger, &now).is_ok());
        assert!(check_setattr(&shared, stranger, &explicit).is_err());
        // truncate(2) by path needs write permission.
        let truncate = AttrChange {
            truncate_by_path: true,
            ..Default::default()
        };
        assert!(check_setattr(&f, stranger, &truncate).is_err());
        assert!(check_setattr(&shared, stranger, &truncate).is_ok());
    }

    #[test]
    fn a_writer_may_only_clear_set_id_bits_of_a_file_it_does_not_own() {
        let f = file(0o6777 & 0o7777, 10, 20);
        let writer = user(11, 21);
        let clear = AttrChange {
            perm: Some(0o0777),
            ..Default::default()
        };
        assert_eq!(check_setattr(&f, writer, &clear).ok(), Some(Some(0o0777)));
        let clear_and_more = AttrChange {
            perm: Some(0o0700),
            ..Default::default()
        };
        assert!(check_setattr(&f, writer, &clear_and_more).is_err());
        let not_writable = file(0o6755 & 0o7777, 10, 20);
        let clear = AttrChange {
            perm: Some(0o0755),
            ..Default::default()
        };
        assert!(check_setattr(&not_writable, writer, &clear).is_err());
    }

    #[test]
    fn user_xattrs_follow_read_and_write_permission() {
        let f = file(0o644, 10, 20);
        let stranger = user(11, 21);
        assert!(check_xattr(&f, stranger, b"user.a", false).is_ok());
        assert!(matches!(
            check_xattr(&f, stranger, b"user.a", true),
            Err(FsError::Access)
        ));
        assert!(check_xattr(&f, user(10, 20), b"user.a", true).is_ok());
        assert!(
            check_xattr(&f, stranger, b"trusted.a", true).is_ok(),
            "the kernel's rule"
        );
    }

    #[tokio::test]
    async fn every_operation_checks_the_metadata_it_reads() {
        use crate::fs::{FsConfig, RenameFlags, SetAttr, blobs::MemBlobs, test_fs};
        let fs = test_fs(std::sync::Arc::new(MemBlobs::new()), FsConfig::default());
        let alice = user(1000, 1000);
        let bob = user(1001, 1001);
        fs.init(alice).await.expect("init");
        let root = fs.root();
        fs.setattr(
            root,
            SetAttr {
                perm: Some(0o755),
                ..SetAttr::default()
            },
        )
        .await
        .expect("chmod root");
        let private = fs
            .mkdir(root, b"private", 0o700, alice)
            .await
            .expect("mkdir")
            .key;
        let (f, o) = fs
            .create(private, b"f", 0o600, alice)
            .await
            .expect("create");
        fs.release(o.fh).await.expect("close");
        let (shared, o) = fs
            .create(root, b"shared", 0o644, alice)
            .await
            .expect("create");
        fs.release(o.fh).await.expect("close");

        // Search permission on the directory: alice yes, bob no (EACCES, not ENOENT).
        assert!(fs.lookup_by(private, b"f", alice).await.is_ok());
        assert!(matches!(
            fs.lookup_by(private, b"f", bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.lookup_by(private, b"none", bob).await,
            Err(FsError::Access)
        ));
        // Adding or removing names needs write permission on the directory.
        assert!(matches!(
            fs.mkdir(root, b"b", 0o755, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.create(root, b"b", 0o644, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.unlink_by(root, b"shared", bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.link_by(shared.key, root, b"l", bob).await,
            Err(FsError::Access)
        ));
        let none = RenameFlags::default();
        assert!(matches!(
            fs.rename_by(root, b"shared", root, b"s2", none, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.rmdir_by(root, b"private", bob).await,
            Err(FsError::Access)
        ));
        // Opening: read and write permission on the file.
        assert!(fs.open_by(shared.key, MAY_READ, bob).await.is_ok());
        assert!(matches!(
            fs.open_by(shared.key, MAY_WRITE, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.open_by(f.key, MAY_READ, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.open_truncating(shared.key, 0, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.opendir_by(private, bob).await,
            Err(FsError::Access)
        ));
        assert!(fs.opendir_by(private, alice).await.is_ok());
        // Attributes: only the owner changes the mode; bob's chmod leaves it as it was.
        let chmod = SetAttr {
            perm: Some(0o666),
            ..SetAttr::default()
        };
        assert!(matches!(
            fs.setattr_by(shared.key, chmod.clone(), bob).await,
            Err(FsError::NotPermitted(_))
        ));
        assert_eq!(fs.getattr(shared.key).await.expect("stat").perm, 0o644);
        assert_eq!(
            fs.setattr_by(shared.key, chmod, alice)
                .await
                .expect("chmod")
                .perm,
            0o666
        );
        // user.* attributes: read and write permission.
        fs.setxattr_by(f.key, b"user.a", b"1", 0, alice)
            .await
            .expect("owner sets");
        assert!(matches!(
            fs.getxattr_by(f.key, b"user.a", bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.setxattr_by(f.key, b"user.a", b"2", 0, bob).await,
            Err(FsError::Access)
        ));
        assert!(matches!(
            fs.removexattr_by(f.key, b"user.a", bob).await,
            Err(FsError::Access)
        ));
        assert_eq!(
            fs.getxattr_by(f.key, b"user.a", alice).await.expect("get"),
            b"1"
        );
        // access(2) agrees.
        assert!(matches!(
            fs.access(f.key, MAY_READ, bob).await,
            Err(FsError::Access)
        ));
        assert!(
            fs.access(shared.key, MAY_READ | MAY_WRITE, bob)
                .await
                .is_ok()
        );
    }
}
