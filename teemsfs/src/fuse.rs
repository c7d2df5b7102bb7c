//! Thin adapter from `fuser` callbacks to [`Fs`] (DESIGN §10).
//!
//! Each callback translates its arguments, spawns the matching `Fs` call on the tokio
//! runtime, and replies from there; errors become errnos through [`FsError::errno`] only.
//! The adapter's own state is the map between kernel inode numbers and inode keys. An
//! inode's number is derived from its key (so it is stable across mounts; a collision
//! falls back to a counter), and its entry in the map lives while the kernel holds a
//! reference: every reply that hands the kernel an entry (lookup, create, mkdir, mknod,
//! symlink, link, each readdirplus entry) counts one lookup, and `forget` drops them, so
//! the map shrinks as the kernel evicts inodes.
//!
//! Directories are read through [`Fs::opendir`] handles, whose listing snapshot makes
//! paging through a directory cost one listing; readdirplus reads attributes for one
//! page at a time. Mounting starts [`Fs::spawn_housekeeping`] (deleting retired blobs
//! after their grace period); unmounting runs [`Fs::drain_retired_for_unmount`].
//!
//! Kernel features used where fuser offers them: several FUSE threads, atomic `O_TRUNC`, a
//! large `max_write`, readdirplus, the writeback cache only when asked for (it makes the
//! kernel ignore other clients' size changes), and `FOPEN_KEEP_CACHE` when an
//! open finds the same content version this mount saw last (DESIGN §10: the page cache is
//! kept across opens only when the version did not change).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::fs::{Attr, Caller, Fs, FsError, FsResult, Kind, RenameFlags, SetAttr, perm};
use crate::meta::Key;
use crate::metrics::MountMetrics;

/// Options of one mount; every field has a documented default.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// FUSE worker threads. Default 4.
    pub threads: usize,
    /// Largest write the kernel sends in one request. Default 1 MiB.
    pub max_write_bytes: u32,
    /// Kernel writeback cache. Default off: with it, the kernel treats its cached file
    /// size as authoritative and ignores the size in fresh attributes, so a file another
    /// client changed could be read at its old length (SEMANTICS §2). Turn on only for a
    /// single-client mount.
    pub writeback_cache: bool,
    /// How long the kernel may reuse attributes and names without asking. Default 0:
    /// they are kept only while read leases keep them current (`Fs::attr_ttl`,
    /// `Fs::lookup_entry_by`), so every answer is as fresh as a TEEMS read (DESIGN §10).
    /// Set, it caches both for that long whatever other clients do.
    pub attr_ttl_ms: u64,
    /// Let users other than the mounting one in (needs `user_allow_other` for non-root).
    pub allow_other: bool,
    /// Name shown in `mount` output.
    pub fsname: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 4,
            max_write_bytes: 1 << 20,
            writeback_cache: false,
            attr_ttl_ms: 0,
            allow_other: false,
            fsname: "teemsfs".into(),
        }
    }
}

/// A mounted filesystem; dropping it unmounts (and waits for the session to end).
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    fs: Arc<Fs>,
    runtime: Handle,
    housekeeping: Option<tokio::task::JoinHandle<()>>,
    metrics: Arc<MountMetrics>,
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// This mount's metrics as Prometheus text (see [`crate::metrics`]).
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.fs)
    }

    /// A handler for [`enclave_replica::net::admin::serve_http`] answering `GET /metrics`.
    pub fn metrics_handler(&self) -> Arc<enclave_replica::net::admin::Handler> {
        let (metrics, fs) = (Arc::clone(&self.metrics), Arc::clone(&self.fs));
        Arc::new(move |path: &str| {
            (path == "/metrics").then(|| {
                (
                    enclave_replica::net::admin::PROMETHEUS_TEXT,
                    metrics.render(&fs),
                )
            })
        })
    }

    /// Whether the FUSE session has ended (e.g. `fusermount3 -u` from outside).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts (if still mounted), waits for the FUSE session to finish, stops the
    /// housekeeping task and deletes the retired blobs whose grace period ends within
    /// `FsConfig::unmount_drain_wait_ms` (the rest are left for `teemsfs gc`).
    pub fn unmount(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        let result = match self.session.take() {
            Some(s) if s.guard.is_finished() => s.join(),
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        };
        if let Some(task) = self.housekeeping.take() {
            task.abort();
        }
        let fs = Arc::clone(&self.fs);
        let runtime = self.runtime.clone();
        // Block on the runtime from a plain thread: this may be called from inside an
        // async context, where `Handle::block_on` would panic.
        let drained = std::thread::scope(|scope| {
            scope
                .spawn(move || runtime.block_on(fs.drain_retired_for_unmount()))
                .join()
        });
        match drained {
            Ok((deleted, 0)) => tracing::debug!(deleted, "retired blobs deleted at unmount"),
            Ok((deleted, left)) => {
                tracing::info!(
                    deleted,
                    left,
                    "retired blobs still in their grace period left for teemsfs gc"
                )
            }
            Err(_) => tracing::warn!("deleting retired blobs at unmount panicked"),
        }
        result
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if self.session.is_some()
            && let Err(e) = self.finish()
        {
            tracing::warn!(error = %e, mountpoint = %self.mountpoint.display(), "unmount failed");
        }
    }
}

/// Mounts `fs` at `mountpoint` in a background session whose callbacks run `Fs` calls on
/// `runtime`. `fs.init()` must have run.
pub fn mount(
    fs: Arc<Fs>,
    runtime: Handle,
    mountpoint: &Path,
    options: &MountOptions,
) -> io::Result<MountHandle> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(options.fsname.clone()),
        MountOption::Subtype("teemsfs".into()),
        MountOption::RW,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(options.threads.max(1));
    let housekeeping = fs.spawn_housekeeping(&runtime);
    let metrics = Arc::new(MountMetrics::default());
    let adapter = FuseAdapter {
        metrics: Arc::clone(&metrics),
        fs: Arc::clone(&fs),
        rt: runtime.clone(),
        inodes: Arc::new(Mutex::new(InodeMap::default())),
        ttl: Duration::from_millis(options.attr_ttl_ms),
        max_write_bytes: options.max_write_bytes,
        writeback_cache: options.writeback_cache,
    };
    let session = match fuser::spawn_mount(adapter, mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            housekeeping.abort();
            return Err(e);
        }
    };
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        fs,
        runtime,
        housekeeping: Some(housekeeping),
        metrics,
    })
}

/// Inode numbers the kernel holds, with their lookup counts.
/// Entries whose attributes readdirplus reads per round: about what one 4 KiB-page
/// reply buffer holds (each entry with attributes takes ~150 bytes).
const READDIRPLUS_WINDOW: usize = 32;

#[derive(Default)]
struct InodeMap {
    /// ino → (key, lookups the kernel has not forgotten).
    by_ino: HashMap<u64, (Key, u64)>,
    by_key: HashMap<Key, u64>,
    /// Fallback numbers for the (astronomically rare) derived-number collision; counted
    /// down from the top so they never meet derived numbers by construction order.
    next_fallback: u64,
}

/// An inode number derived from the key: stable across mounts and clients. 0 and 1 (the
/// root) are reserved.
fn derived_ino(key: Key) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.0[..8]);
    let n = u64::from_le_bytes(first) >> 1;
    if n < 2 { n + 2 } else { n }
}

impl InodeMap {
    /// The number for `key` without taking a reference: the one the kernel holds, else
    /// the derived one if free. Only for replies that do not create a kernel reference.
    fn peek(&mut self, key: Key) -> u64 {
        if let Some(ino) = self.by_key.get(&key) {
            return *ino;
        }
        let ino = derived_ino(key);
        if !self.by_ino.contains_key(&ino) {
            return ino;
        }
        // Collision with another key in use: a fallback number, kept (count 0) so that
        // the kernel's later lookup by it resolves.
        let ino = self.fallback();
        self.by_ino.insert(ino, (key, 0));
        self.by_key.insert(key, ino);
        ino
    }

    fn fallback(&mut self) -> u64 {
        if self.next_fallback == 0 {
            self.next_fallback = u64::MAX;
        }
        while self.by_ino.contains_key(&self.next_fallback) {
            self.next_fallback -= 1;
        }
        let ino = self.next_fallback;
        self.next_fallback -= 1;
        ino
    }

    /// The number for `key`, counting one kernel lookup of it.
    fn take_ref(&mut self, key: Key) -> u64 {
        let ino = self.peek(key);
        let slot = self.by_ino.entry(ino).or_insert((key, 0));
        slot.1 += 1;
        self.by_key.insert(key, ino);
        ino
    }

    /// The kernel dropped `n` lookups of `ino`; at zero the number is forgotten.
    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(slot) = self.by_ino.get_mut(&ino) {
            slot.1 = slot.1.saturating_sub(n);
            if slot.1 == 0 {
                let key = slot.0;
                self.by_ino.remove(&ino);
                self.by_key.remove(&key);
            }
        }
    }
}

struct FuseAdapter {
    fs: Arc<Fs>,
    rt: Handle,
    inodes: Arc<Mutex<InodeMap>>,
    ttl: Duration,
    max_write_bytes: u32,
    writeback_cache: bool,
    metrics: Arc<MountMetrics>,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn kind_of_mode(mode: u32) -> Option<Kind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(Kind::File),
        libc::S_IFIFO => Some(Kind::Fifo),
        libc::S_IFSOCK => Some(Kind::Socket),
        libc::S_IFCHR => Some(Kind::CharDev),
        libc::S_IFBLK => Some(Kind::BlockDev),
        _ => None,
    }
}

/// Shared pieces a spawned task needs.
#[derive(Clone)]
struct Ctx {
    fs: Arc<Fs>,
    inodes: Arc<Mutex<InodeMap>>,
    ttl: Duration,
}

impl Ctx {
    fn key(&self, ino: INodeNo) -> Result<Key, Errno> {
        if ino == INodeNo::ROOT {
            return Ok(self.fs.root());
        }
        let map = self.inodes.lock().map_err(|_| errno(&FsError::BadHandle))?;
        // An inode number the kernel holds no reference to (or from before a remount).
        map.by_ino
            .get(&ino.0)
            .map(|(k, _)| *k)
            .ok_or_else(|| errno(&FsError::Stale))
    }

    /// The number of `key` for a reply that gives the kernel no new reference.
    fn ino(&self, key: Key) -> INodeNo {
        if key == self.fs.root() {
            return INodeNo::ROOT;
        }
        match self.inodes.lock() {
            Ok(mut map) => INodeNo(map.peek(key)),
            Err(_) => INodeNo(0),
        }
    }

    /// The number of `key` for a reply that hands the kernel an entry (one lookup).
    fn ino_ref(&self, key: Key) -> INodeNo {
        if key == self.fs.root() {
            return INodeNo::ROOT;
        }
        match self.inodes.lock() {
            Ok(mut map) => INodeNo(map.take_ref(key)),
            Err(_) => INodeNo(0),
        }
    }

    fn forget(&self, ino: INodeNo, n: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        if let Ok(mut map) = self.inodes.lock() {
            map.forget(ino.0, n);
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        self.attr_as(a, self.ino(a.key))
    }

    fn attr_as(&self, a: &Attr, ino: INodeNo) -> FileAttr {
        FileAttr {
            ino,
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.ctime,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Answers with a name the kernel keeps only for the configured TTL (names made by
    /// this client's own writes, which no lease covers).
    fn entry(&self, reply: ReplyEntry, result: Result<Attr, FsError>) {
        self.entry_kept(reply, result.map(|a| (a, Duration::ZERO)));
    }

    /// Answers with a name the kernel may keep for `keep` ([`Fs::lookup_entry_by`]), or
    /// for the configured TTL if one is set.
    fn entry_kept(&self, reply: ReplyEntry, result: Result<(Attr, Duration), FsError>) {
        match result {
            Ok((a, keep)) => reply.entry_with_ttls(
                &self.attr_ttl(&a),
                if self.ttl.is_zero() { &keep } else { &self.ttl },
                &self.attr_as(&a, self.ino_ref(a.key)),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// How long the kernel may keep `a`: the configured TTL if one is set, else what
    /// is left of the read lease behind it ([`Fs::attr_ttl`]).
    fn attr_ttl(&self, a: &Attr) -> Duration {
        if self.ttl.is_zero() {
            self.fs.attr_ttl(a)
        } else {
            self.ttl
        }
    }
}

/// The kernel's `__FMODE_EXEC` open flag: the file is opened to be executed.
const FMODE_EXEC: i32 = 0o40;

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn time_of(t: Option<TimeOrNow>) -> Option<SystemTime> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    })
}

impl FuseAdapter {
    fn ctx(&self) -> Ctx {
        Ctx {
            fs: Arc::clone(&self.fs),
            inodes: Arc::clone(&self.inodes),
            ttl: self.ttl,
        }
    }

    /// Runs `work`, the kernel request `op`, on the runtime; it must reply. Its time from
    /// the callback to the reply goes into the mount's metrics.
    fn spawn<F>(&self, op: &'static str, work: impl FnOnce(Ctx) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let work = work(self.ctx());
        self.rt.spawn(async move {
            work.await;
            metrics.observe(op, started.elapsed());
        });
    }

    /// Runs `f` on the key of `ino` and answers `reply` with its outcome.
    fn keyed_empty<F>(
        &self,
        op: &'static str,
        ino: INodeNo,
        reply: ReplyEmpty,
        f: impl FnOnce(Arc<Fs>, Key) -> F + Send + 'static,
    ) where
        F: std::future::Future<Output = FsResult<()>> + Send + 'static,
    {
        self.spawn(op, |c| async move {
            match c.key(ino) {
                Ok(key) => reply_empty(reply, f(Arc::clone(&c.fs), key).await),
                Err(e) => reply.error(e),
            }
        });
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // ATOMIC_O_TRUNC: O_TRUNC arrives with the open instead of as a separate setattr,
        // so the truncation is committed together with the rewrite (Fs::open_truncating).
        let mut wanted = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES;
        if self.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        // Take what the kernel offers; a missing feature costs speed, not correctness.
        let supported = wanted & config.capabilities();
        if let Err(missing) = config.add_capabilities(supported) {
            tracing::info!(?missing, "kernel lacks some FUSE features");
        }
        if let Err(nearest) = config.set_max_write(self.max_write_bytes) {
            let _ = config.set_max_write(nearest);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.spawn("lookup", |c| async move {
            let parent = match c.key(parent) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            let r = c.fs.lookup_entry_by(parent, &name, who).await;
            c.entry_kept(reply, r);
        });
    }

    // batch_forget: fuser's default calls this once per node.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ctx().forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn("getattr", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c.fs.getattr(key).await {
                Ok(a) => reply.attr(&c.attr_ttl(&a), &c.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            times_now: [atime, mtime]
                .iter()
                .all(|t| matches!(t, None | Some(TimeOrNow::Now))),
            through_handle: fh.is_some(),
            atime: time_of(atime),
            mtime: time_of(mtime),
        };
        let who = caller(req);
        self.spawn("setattr", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c.fs.setattr_by(key, set, who).await {
                Ok(a) => reply.attr(&c.ttl, &c.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn("readlink", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c.fs.readlink(key).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.spawn("mknod", |c| async move {
            let Some(kind) = kind_of_mode(mode) else {
                return reply.error(errno(&FsError::Invalid("mknod file type")));
            };
            let parent = match c.key(parent) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            let perm = (mode & !umask & 0o7777) as u16;
            let r = c.fs.mknod(parent, &name, kind, perm, rdev, who).await;
            c.entry(reply, r);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.spawn("mkdir", |c| async move {
            let parent = match c.key(parent) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            let r =
                c.fs.mkdir(parent, &name, (mode & !umask & 0o7777) as u16, who)
                    .await;
            c.entry(reply, r);
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.keyed_empty("unlink", parent, reply, move |fs, parent| async move {
            fs.unlink_by(parent, &name, who).await
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.keyed_empty("rmdir", parent, reply, move |fs, parent| async move {
            fs.rmdir_by(parent, &name, who).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = link_name.as_bytes().to_vec();
        let target = target.as_os_str().as_bytes().to_vec();
        let who = caller(req);
        self.spawn("symlink", |c| async move {
            let parent = match c.key(parent) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            let r = c.fs.symlink(parent, &name, &target, who).await;
            c.entry(reply, r);
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.as_bytes().to_vec(), newname.as_bytes().to_vec());
        let flags = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE)
                || flags.contains(fuser::RenameFlags::RENAME_WHITEOUT),
        };
        let who = caller(req);
        self.spawn("rename", |c| async move {
            let (src, dst) = match (c.key(parent), c.key(newparent)) {
                (Ok(s), Ok(d)) => (s, d),
                (Err(e), _) | (_, Err(e)) => return reply.error(e),
            };
            reply_empty(
                reply,
                c.fs.rename_by(src, &name, dst, &newname, flags, who).await,
            );
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.as_bytes().to_vec();
        let who = caller(req);
        self.spawn("link", |c| async move {
            let (key, dst) = match (c.key(ino), c.key(newparent)) {
                (Ok(k), Ok(d)) => (k, d),
                (Err(e), _) | (_, Err(e)) => return reply.error(e),
            };
            let r = c.fs.link_by(key, dst, &newname, who).await;
            c.entry(reply, r);
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = writable && flags.0 & libc::O_TRUNC != 0;
        // An open to execute needs execute permission only (not read), as execve(2).
        let mask = if flags.0 & FMODE_EXEC != 0 {
            perm::MAY_EXEC
        } else {
            perm::open_mask(flags.acc_mode() != OpenAccMode::O_WRONLY, writable)
        };
        let who = caller(req);
        self.spawn("open", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            let opened = if truncate {
                c.fs.open_truncating(key, mask, who).await
            } else {
                c.fs.open_by(key, mask, who).await
            };
            match opened {
                Ok(o) => {
                    let keep = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(o.fh), keep)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn("read", |c| async move {
            match c.fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn("write", |c| async move {
            match c.fs.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.spawn("flush", |c| async move {
            reply_empty(reply, c.fs.flush(fh.0).await);
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", |c| async move {
            reply_empty(reply, c.fs.release(fh.0).await);
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsync", |c| async move {
            reply_empty(reply, c.fs.fsync(fh.0).await);
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let who = caller(req);
        self.spawn("opendir", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c.fs.opendir_by(key, who).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn("readdir", |c| async move {
            let listing = match c.fs.readdir_snapshot(fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            // Offsets are positions in the handle's snapshot: 1 = ".", 2 = "..", 3.. = entries.
            let dots = [
                (listing.dir, b".".as_slice()),
                (listing.parent, b"..".as_slice()),
            ];
            for (i, (key, name)) in dots.into_iter().enumerate().skip(offset as usize) {
                if reply.add(
                    c.ino(key),
                    i as u64 + 1,
                    FileType::Directory,
                    OsStr::from_bytes(name),
                ) {
                    return reply.ok();
                }
            }
            let skip = (offset as usize).saturating_sub(2);
            for (i, e) in listing.entries.iter().enumerate().skip(skip) {
                if reply.add(
                    c.ino(e.key),
                    i as u64 + 3,
                    file_type(e.kind),
                    OsStr::from_bytes(&e.name),
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.spawn("readdirplus", |c| async move {
            let listing = match c.fs.readdir_snapshot(fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            // "." and "..": the kernel takes no reference for these two.
            if offset < 2 {
                let (me, parent) =
                    match tokio::join!(c.fs.getattr(listing.dir), c.fs.getattr(listing.parent)) {
                        (Ok(m), Ok(p)) => (m, p),
                        (Err(e), _) | (_, Err(e)) => return reply.error(errno(&e)),
                    };
                let dots = [(me, b".".as_slice()), (parent, b"..".as_slice())];
                for (i, (attr, name)) in dots.into_iter().enumerate().skip(offset as usize) {
                    let fattr = c.attr(&attr);
                    if reply.add(
                        fattr.ino,
                        i as u64 + 1,
                        OsStr::from_bytes(name),
                        &c.ttl,
                        &fattr,
                        Generation(0),
                    ) {
                        return reply.ok();
                    }
                }
            }
            // Entries, a window at a time: attributes are read fresh for what one reply
            // buffer can take, not for the whole directory.
            let mut next = (offset as usize).saturating_sub(2);
            'pages: while next < listing.entries.len() {
                let end = (next + READDIRPLUS_WINDOW).min(listing.entries.len());
                let window = listing.entries.get(next..end).unwrap_or_default();
                let attrs = match c.fs.entry_attrs(listing.dir, window).await {
                    Ok(a) => a,
                    Err(e) => return reply.error(errno(&e)),
                };
                for (j, (e, attr)) in window.iter().zip(attrs).enumerate() {
                    let pos = (next + j) as u64 + 3;
                    // Removed since the snapshot: skip it, keep the offsets.
                    let Some(attr) = attr else { continue };
                    let ino = c.ino_ref(e.key);
                    let fattr = c.attr_as(&attr, ino);
                    if reply.add(
                        ino,
                        pos,
                        OsStr::from_bytes(&e.name),
                        &c.ttl,
                        &fattr,
                        Generation(0),
                    ) {
                        // Not sent: the kernel took no reference.
                        c.forget(ino, 1);
                        break 'pages;
                    }
                }
                next = end;
            }
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
        let who = caller(req);
        self.keyed_empty("setxattr", ino, reply, move |fs, key| async move {
            fs.setxattr_by(key, &name, &value, flags, who).await
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.spawn("getxattr", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c.fs.getxattr_by(key, &name, who).await {
                Ok(v) => reply_xattr(reply, size, &v),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn("listxattr", |c| async move {
            let key = match c.key(ino) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c.fs.listxattr(key).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(&n);
                        buf.push(0);
                    }
                    reply_xattr(reply, size, &buf)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.keyed_empty("removexattr", ino, reply, move |fs, key| async move {
            fs.removexattr_by(key, &name, who).await
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let who = caller(req);
        self.keyed_empty("access", ino, reply, move |fs, key| async move {
            fs.access(key, mask.bits() as u32, who).await
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.as_bytes().to_vec();
        let who = caller(req);
        self.spawn("create", |c| async move {
            let parent = match c.key(parent) {
                Ok(k) => k,
                Err(e) => return reply.error(e),
            };
            match c
                .fs
                .create(parent, &name, (mode & !umask & 0o7777) as u16, who)
                .await
            {
                Ok((a, o)) => {
                    let attr = c.attr_as(&a, c.ino_ref(a.key));
                    reply.created(
                        &c.ttl,
                        &attr,
                        Generation(0),
                        FileHandle(o.fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn("fallocate", move |c| async move {
            reply_empty(reply, c.fs.fallocate(fh.0, offset, length, mode).await);
        });
    }
}

fn reply_empty(reply: ReplyEmpty, result: FsResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; a too-small buffer is ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(errno(&FsError::Range));
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_live_while_the_kernel_holds_lookups() {
        let mut map = InodeMap::default();
        let a = Key([7; 16]);
        let peeked = map.peek(a);
        assert_eq!(
            peeked,
            derived_ino(a),
            "a number derived from the key, stable across mounts"
        );
        assert!(map.by_ino.is_empty(), "peeking takes no reference");
        let ino = map.take_ref(a);
        assert_eq!(ino, peeked);
        assert_eq!(map.take_ref(a), ino);
        map.forget(ino, 1);
        assert_eq!(map.by_ino.get(&ino).map(|(k, n)| (*k, *n)), Some((a, 1)));
        map.forget(ino, 1);
        assert!(
            map.by_ino.is_empty() && map.by_key.is_empty(),
            "forgotten to zero: gone"
        );
        // A collision of derived numbers falls back to a distinct number.
        let mut b_bytes = [7u8; 16];
        b_bytes[15] = 8;
        let b = Key(b_bytes);
        assert_eq!(derived_ino(b), derived_ino(a));
        let ia = map.take_ref(a);
        let ib = map.take_ref(b);
        assert_ne!(ia, ib);
        assert!(ib > 1);
        map.forget(ia, 1);
        map.forget(ib, 1);
        assert!(map.by_ino.is_empty());
    }
}
