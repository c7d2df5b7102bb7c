//! Real FUSE mounts (DESIGN §10, §13): the shell life of files through the kernel, on
//! local-directory object stores and the in-memory TEEMS stand-in.
//!
//! Needs root, `/dev/fuse` and `fusermount3` (the `fuse3` package). These tests fail —
//! they do not skip — when the mount does not work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use teemsfs::fs::{BlobIo, Caller, Fs, FsConfig};
use teemsfs::fuse::{MountHandle, MountOptions, mount};
use teemsfs::meta::{Key, MemTeems, ShareId};
use teemsfs::store::{BlobStore, BlobStoreConfig, LocalStore, ObjectStore};

struct Mounted {
    handle: Option<MountHandle>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn mount_fresh(chunk_size_bytes: u64) -> Mounted {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let stores: Vec<Arc<dyn ObjectStore>> = (0..3)
        .map(|i| {
            let dir = tmp.path().join(format!("store{i}"));
            std::fs::create_dir_all(&dir).expect("store dir");
            Arc::new(LocalStore::open(&dir).expect("local store")) as Arc<dyn ObjectStore>
        })
        .collect();
    let blobs: Arc<dyn BlobIo> = Arc::new(
        BlobStore::new(stores, BlobStoreConfig::new(erasure::Layout { k: 2, m: 1 }))
            .expect("blobs"),
    );
    let config = FsConfig {
        chunk_size_bytes,
        ..FsConfig::default()
    };
    let fs = Arc::new(Fs::new(
        Arc::new(MemTeems::new()),
        blobs,
        ShareId([3; 16]),
        Key([4; 16]),
        config,
    ));
    rt.block_on(fs.init(Caller::ROOT)).expect("init");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir_all(&dir).expect("mountpoint");
    let handle = mount(fs, rt.handle().clone(), &dir, &MountOptions::default())
        .expect("mounting needs root, /dev/fuse and fusermount3 (apt: fuse3)");
    // The mount must really be there: a stat of the root goes through our getattr.
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(dir.to_str().unwrap_or("?")) && l.contains("fuse")),
        "mount point not in /proc/mounts"
    );
    Mounted {
        handle: Some(handle),
        dir,
        _tmp: tmp,
        _rt: rt,
    }
}

impl Mounted {
    fn unmount(mut self) {
        if let Some(h) = self.handle.take() {
            h.unmount().expect("clean unmount");
        }
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        assert!(
            !mounts.contains(self.dir.to_str().unwrap_or("?")),
            "still mounted after unmount"
        );
    }
}

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-euc")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "script failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// DESIGN §10: the usual shell life of files through a real mount.
#[test]
fn shell_life_of_files_through_the_kernel() {
    let m = mount_fresh(256 << 10);
    let d = m.dir.clone();
    std::fs::write(d.join("hello.txt"), b"hello world\n").expect("write");
    assert_eq!(
        std::fs::read(d.join("hello.txt")).expect("read"),
        b"hello world\n"
    );
    // append, cp, mv
    sh(
        &d,
        "echo more >> hello.txt && cp hello.txt copy.txt && mv copy.txt moved.txt",
    );
    assert_eq!(
        std::fs::read_to_string(d.join("moved.txt")).expect("read"),
        "hello world\nmore\n"
    );
    assert!(!d.join("copy.txt").exists());
    // mkdir -p, mv across directories, rm -r
    sh(
        &d,
        "mkdir -p a/b/c && echo x > a/b/c/f && mv a/b/c/f a/g && mv a/b z && rm -r z",
    );
    assert_eq!(std::fs::read_to_string(d.join("a/g")).expect("read"), "x\n");
    assert!(!d.join("z").exists());
    // symlinks and hard links
    sh(&d, "ln -s hello.txt sym && ln hello.txt hard");
    assert_eq!(
        std::fs::read_link(d.join("sym")).expect("readlink"),
        PathBuf::from("hello.txt")
    );
    assert_eq!(
        std::fs::read(d.join("sym")).expect("through symlink"),
        std::fs::read(d.join("hello.txt")).expect("read")
    );
    let nlink = sh(&d, "stat -c %h hello.txt");
    assert_eq!(nlink.trim(), "2");
    sh(&d, "rm hard");
    assert_eq!(sh(&d, "stat -c %h hello.txt").trim(), "1");
    // chmod, truncate
    sh(&d, "chmod 600 hello.txt");
    assert_eq!(sh(&d, "stat -c %a hello.txt").trim(), "600");
    sh(&d, "truncate -s 5 hello.txt");
    assert_eq!(std::fs::read(d.join("hello.txt")).expect("read"), b"hello");
    sh(&d, "truncate -s 8 hello.txt");
    assert_eq!(
        std::fs::read(d.join("hello.txt")).expect("read"),
        b"hello\0\0\0"
    );
    // rmdir of a non-empty directory fails; empty succeeds
    let out = Command::new("rmdir")
        .arg(d.join("a"))
        .output()
        .expect("rmdir");
    assert!(
        !out.status.success(),
        "rmdir of a non-empty directory must fail"
    );
    sh(&d, "rm a/g && rmdir a/b 2>/dev/null || true; rm -r a");
    assert!(!d.join("a").exists());
    // ls sees exactly what is left
    let listing = sh(&d, "ls -1A");
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        vec!["hello.txt", "moved.txt", "sym"]
    );
    m.unmount();
}

/// DESIGN §10: a large file is chunked; a sequential write and read back through the
/// kernel is byte-for-byte identical, and so is a rewrite of one chunk in the middle.
#[test]
fn large_sequential_write_reads_back_byte_for_byte() {
    let m = mount_fresh(1 << 20);
    let d = m.dir.clone();
    let data: Vec<u8> = (0..(6u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("big"), &data).expect("write big");
    assert_eq!(
        std::fs::metadata(d.join("big")).expect("stat").len(),
        data.len() as u64
    );
    assert!(
        std::fs::read(d.join("big")).expect("read big") == data,
        "big file differs"
    );
    // Overwrite 100 bytes in the middle of chunk 3 with dd (no truncation).
    sh(
        &d,
        "head -c 100 /dev/zero | dd of=big bs=1 seek=3500000 conv=notrunc status=none",
    );
    let mut expected = data.clone();
    expected[3_500_000..3_500_100].fill(0);
    assert!(
        std::fs::read(d.join("big")).expect("read big") == expected,
        "rewritten big file differs"
    );
    // cmp through the shell too, against a copy made by cp.
    sh(&d, "cp big big2 && cmp big big2 && rm big2");
    m.unmount();
}
