//! End-to-end tests of the filesystem through real mounts (DESIGN §10, §12, §13): the
//! `teemsfs` binary starts a real 5-replica cluster (`teemsfs up`), mounts it with a real
//! FUSE mount in a daemonised mount process, and the shell uses it; Redis and S3 stores are
//! real `redis-server` and `moto_server` processes.
//!
//! Needs root, /dev/fuse and fusermount3, and the binaries built (`cargo build --bins`,
//! which the test command does before `cargo test`). Fails — never skips — when any of
//! them is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use teemsfs::fs::{BlobIo, Caller, Fs, FsConfig};
use teemsfs::meta::{Key, MemTeems, ShareId};
use teemsfs::store::{BlobStore, BlobStoreConfig, Fault, FaultyStore, LocalStore, ObjectStore};
use teemsfs_tests::servers::{
    RedisServer, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3Server, S3ServerKind,
};

/// `target/<profile>/NAME`, next to this test binary's `deps/` directory.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`; scripts/test.sh does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn teemsfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut cmd = Command::new(bin("teemsfs"));
    for a in args {
        cmd.arg(a.as_ref());
    }
    // The replica binary is found next to teemsfs.
    String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned()
}

fn sh(dir: &Path, script: &str) -> String {
    let out = run(Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mounted(mountpoint: &Path) -> bool {
    teemsfs::deploy::is_fuse_mounted(mountpoint)
}

/// A deployment brought up with `teemsfs up`; `down` (also on drop) stops it.
struct Up {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    down_done: bool,
}

impl Up {
    fn start(config: Option<&str>) -> Up {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("deploy");
        let out = match config {
            Some(text) => {
                let file = tmp.path().join("config.toml");
                std::fs::write(&file, text).expect("config");
                teemsfs(&[&"up", &dir, &"--config", &file])
            }
            None => teemsfs(&[&"up", &dir]),
        };
        // It says what it did.
        for needle in ["cluster:", "stores:", "layout:", "mounted:", "teemsfs down"] {
            assert!(out.contains(needle), "`up` output lacks {needle:?}:\n{out}");
        }
        let up = Up {
            tmp,
            dir,
            down_done: false,
        };
        assert!(
            mounted(&up.mnt()),
            "{} is not mounted after `up`",
            up.mnt().display()
        );
        up
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    fn down(mut self) {
        let out = teemsfs(&[&"down", &self.dir]);
        self.down_done = true;
        assert!(out.contains("stopped 5 replicas"), "{out}");
        assert!(!mounted(&self.mnt()), "still mounted after down");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if !self.down_done {
            let _ = Command::new(bin("teemsfs"))
                .arg("down")
                .arg(&self.dir)
                .output();
        }
        let _ = &self.tmp;
    }
}

/// A small source tree made for the untar test: nested directories, text and binary files,
/// an empty file, a symlink, odd names.
fn make_source_tree(root: &Path) {
    for (i, dir) in ["src", "src/fs", "src/fs/deep/er", "docs", "empty-dir"]
        .iter()
        .enumerate()
    {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        for j in 0..5 {
            let text: String = (0..(200 * (i + 1) * (j + 1)))
                .map(|k| char::from(b'a' + ((k * 7 + j) % 26) as u8))
                .collect();
            std::fs::write(root.join(dir).join(format!("file-{j}.rs")), text).expect("write");
        }
    }
    let bin: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(root.join("docs/blob.bin"), bin).expect("write");
    std::fs::write(root.join("src/empty"), b"").expect("write");
    std::fs::write(root.join("docs/name with spaces & ünïcode.txt"), b"x\n").expect("write");
    std::os::unix::fs::symlink("fs/file-1.rs", root.join("src/link.rs")).expect("symlink");
}

/// The shell life of files in a mount (DESIGN §13), checked against a plain directory.
fn shell_life(mnt: &Path, scratch: &Path, big_mib: u32) {
    // cp, mv (within and across directories), rm -r, ln -s, ln, chmod, truncate, append.
    sh(
        mnt,
        "echo hello > a && cp a b && mkdir -p d/e && mv b d/e/c && mv d/e/c d/c2 && ln -s a s && ln a h",
    );
    assert_eq!(sh(mnt, "cat s d/c2"), "hello\nhello\n");
    assert_eq!(sh(mnt, "stat -c %h a").trim(), "2");
    sh(mnt, "chmod 640 a && echo more >> h && truncate -s 3 d/c2");
    assert_eq!(sh(mnt, "stat -c %a h").trim(), "640");
    assert_eq!(sh(mnt, "cat a"), "hello\nmore\n");
    assert_eq!(sh(mnt, "cat d/c2"), "hel");
    sh(mnt, "rm h && rm -r d");
    assert_eq!(sh(mnt, "stat -c %h a").trim(), "1");
    assert_eq!(sh(mnt, "ls -A | sort | tr '\\n' ' '"), "a s ");
    // fallocate(1): lengthening works and reads as zeros, KEEP_SIZE changes nothing,
    // punching a hole is refused (EOPNOTSUPP, docs/SEMANTICS.md §5) and loses nothing.
    sh(
        mnt,
        "printf abc > fa && fallocate -l 8192 fa && fallocate -n -o 0 -l 65536 fa",
    );
    assert_eq!(sh(mnt, "stat -c %s fa").trim(), "8192");
    assert_eq!(
        sh(mnt, "head -c 3 fa && tail -c +4 fa | tr -d '\\0' | wc -c").trim(),
        "abc0"
    );
    assert_eq!(
        sh(mnt, "fallocate -p -o 0 -l 2 fa 2>/dev/null || echo refused").trim(),
        "refused"
    );
    assert_eq!(
        sh(mnt, "head -c 3 fa && stat -c ' %s' fa").trim(),
        "abc 8192"
    );
    sh(mnt, "rm fa");
    // Four shells at once, each making files in its own directory, moving them into the
    // next one (a cycle of cross-directory renames) and removing half of them there. The
    // kernel serialises namespace changes within one directory and cross-directory
    // renames, and runs the rest in parallel: the mount's directory locks must neither
    // lose an entry nor deadlock.
    sh(
        mnt,
        "mkdir par && for i in 0 1 2 3; do mkdir par/d$i; done && pids= && \
         for i in 0 1 2 3; do ( n=$(( (i + 1) % 4 )) && for j in $(seq 1 30); do \
             echo $i-$j > par/d$i/f$j && mv par/d$i/f$j par/d$n/m$i-$j; done && \
           for j in $(seq 1 2 30); do rm par/d$n/m$i-$j; done ) & pids=\"$pids $!\"; done && \
         for p in $pids; do wait $p; done",
    );
    assert_eq!(
        sh(
            mnt,
            "for d in par/*; do ls $d | wc -l; stat -c %h $d; done | tr '\\n' ' '"
        ),
        "15 2 15 2 15 2 15 2 "
    );
    assert_eq!(sh(mnt, "cat par/d1/m0-30 par/d0/m3-2"), "0-30\n3-2\n");
    sh(mnt, "rm -r par");
    // Large sequential write, then random writes with dd, compared with the same done
    // on a local file.
    let script = format!(
        "head -c {big}M /dev/urandom > {s}/big && cp {s}/big big && cmp big {s}/big && \
         for off in 1 777 4194303 4194304 9000001 $(( {big} * 1048576 - 10 )); do \
           head -c 5000 /dev/urandom > {s}/patch; \
           dd if={s}/patch of=big bs=1 seek=$off conv=notrunc status=none; \
           dd if={s}/patch of={s}/big bs=1 seek=$off conv=notrunc status=none; done && \
         cmp big {s}/big && head -c 1000 /dev/urandom >> big && head -c 1000 big >/dev/null",
        big = big_mib,
        s = scratch.display()
    );
    sh(mnt, &script);
    // Untar a source tree and diff it byte for byte against the original.
    let src = scratch.join("tree");
    make_source_tree(&src);
    sh(scratch, "tar -C tree -cf tree.tar .");
    sh(
        mnt,
        &format!(
            "mkdir untarred && tar -C untarred -xf {}/tree.tar && diff -r --no-dereference {}/tree untarred",
            scratch.display(),
            scratch.display()
        ),
    );
    // git init + commit inside the mount.
    if Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        sh(
            mnt,
            "mkdir repo && cd repo && git init -q && cp -r ../untarred/src . && git add -A && \
             git -c user.name=t -c user.email=t@example.invalid commit -qm first && \
             echo change >> src/empty && git -c user.name=t -c user.email=t@example.invalid commit -qam second && \
             test \"$(git rev-list --count HEAD)\" = 2 && git fsck --no-progress 2>&1",
        );
    }
}

/// DESIGN §12: `teemsfs up DIR` with the embedded default (local stores, (2,1)), the
/// shell life of files, `gc --dry-run` and `fsck`, then `teemsfs down DIR`.
#[test]
fn up_shell_life_fsck_gc_and_down_on_local_stores() {
    let up = Up::start(None);
    let scratch = tempfile::tempdir().expect("scratch");
    shell_life(&up.mnt(), scratch.path(), 12);
    // DESIGN §12: the mount's Prometheus metrics, on the address it published.
    let metrics = mount_metrics(&up.dir);
    for op in [
        "lookup", "getattr", "create", "write", "read", "unlink", "rename",
    ] {
        let count = metric(&metrics, &requests_of(op));
        assert!(count > 0, "no {op} requests counted:\n{metrics}");
    }
    assert!(
        metrics.contains("teemsfs_ranged_reads_total ")
            && metrics.contains("teemsfs_blob_cache_bytes "),
        "{metrics}"
    );
    // The mount reads metadata under read leases (docs/PROTOCOLS.md LEASE): path walks
    // of the shell life reuse leased answers.
    let lease_hits = metric(&metrics, "teemsfs_meta_lease_hits_total");
    assert!(
        lease_hits > 0,
        "no metadata read answered from a lease:\n{metrics}"
    );
    let fsck = teemsfs(&[&"fsck", &up.dir]);
    assert!(fsck.contains("0 problems"), "{fsck}");
    let gc = teemsfs(&[&"gc", &up.dir, &"--dry-run"]);
    assert!(gc.contains("gc summary") && gc.contains("dry run"), "{gc}");
    up.down();
}

/// The counter `name` (with its labels) in a Prometheus text page.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// The name of the counter of kernel requests of kind `op`.
fn requests_of(op: &str) -> String {
    format!("teemsfs_fuse_request_seconds_count{{op=\"{op}\"}}")
}

/// `GET /metrics` from the mount of `dir`, at the address in `run/mount-*.metrics`.
fn mount_metrics(dir: &Path) -> String {
    metrics_from(&metrics_addr(dir))
}

/// The address the (first) mount of `dir` serves its metrics on.
fn metrics_addr(dir: &Path) -> String {
    let file = std::fs::read_dir(dir.join("run"))
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "metrics"))
        .expect("a metrics address file");
    std::fs::read_to_string(&file)
        .expect("address")
        .trim()
        .to_string()
}

/// `GET /metrics` from `addr`.
fn metrics_from(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// DESIGN §12: a config file switches the stores to Redis and S3 and the layout to (3,2).
#[test]
fn redis_and_s3_stores_with_a_3_2_layout_through_a_mount() {
    let redis = RedisServer::start().expect("redis-server");
    let s3 = S3Server::start(S3ServerKind::Moto).expect("moto_server");
    let s3_store = |bucket: &str| {
        format!(
            "s3://{bucket}?endpoint={}&access_key_id={S3_ACCESS_KEY_ID}&secret_access_key={S3_SECRET_ACCESS_KEY}",
            s3.endpoint_url()
        )
    };
    let config = format!(
        "stores = [\"{r}/1\", \"{r}/2\", \"{a}\", \"{b}\", \"{c}\"]\nlayout = {{ k = 3, m = 2 }}\nchunk_size_bytes = 1048576\n",
        r = redis.url(),
        a = s3_store("e2e-a"),
        b = s3_store("e2e-b"),
        c = s3_store("e2e-c"),
    );
    let up = Up::start(Some(&config));
    let scratch = tempfile::tempdir().expect("scratch");
    shell_life(&up.mnt(), scratch.path(), 6);
    let fsck = teemsfs(&[&"fsck", &up.dir]);
    assert!(
        fsck.contains("0 problems") && fsck.contains("0 blobs missing"),
        "{fsck}"
    );
    up.down();
}

/// DESIGN §10 freshness: a second mount of the same tenant writes a file; the first sees
/// the new content on its next open, even though its blob cache and the kernel page cache
/// hold the old one.
#[test]
fn a_second_mount_writes_and_the_first_sees_it_on_next_open() {
    let up = Up::start(None);
    let one = up.mnt();
    let two = up.dir.join("mnt2");
    let out = teemsfs(&[&"mount", &up.dir, &two]);
    assert!(out.contains("mounted"), "{out}");
    let mut current = "version one".to_string();
    std::fs::write(one.join("f"), &current).expect("write");
    for round in 0..3 {
        // Warm the first mount's blob cache and page cache.
        assert_eq!(
            std::fs::read_to_string(one.join("f")).expect("read"),
            current
        );
        current = format!("version {round} from the second mount");
        std::fs::write(two.join("f"), &current).expect("write from the second mount");
        assert_eq!(
            std::fs::read_to_string(one.join("f")).expect("read"),
            current,
            "round {round}: stale in the first"
        );
        current = format!("version {round} from the first mount, longer");
        std::fs::write(one.join("f"), &current).expect("write from the first mount");
        assert_eq!(
            std::fs::read_to_string(two.join("f")).expect("read"),
            current,
            "round {round}: stale in the second"
        );
    }
    std::fs::create_dir(two.join("made-in-two")).expect("mkdir");
    assert!(
        one.join("made-in-two").is_dir(),
        "a directory made by the other mount is visible"
    );
    // Replaced blobs leave the second mount's process deleting for a few seconds after
    // its unmount; mounting again at once waits for it rather than failing.
    std::fs::write(two.join("big"), vec![1u8; 64 << 10]).expect("write");
    std::fs::write(two.join("big"), vec![2u8; 64 << 10]).expect("rewrite");
    teemsfs(&[&"umount", &two]);
    assert!(!mounted(&two));
    let out = teemsfs(&[&"mount", &up.dir, &two]);
    assert!(out.contains("mounted"), "{out}");
    assert_eq!(
        std::fs::read(two.join("big")).expect("read after the remount"),
        vec![2u8; 64 << 10]
    );
    teemsfs(&[&"umount", &two]);
    assert!(!mounted(&two));
    up.down();
}

/// SEMANTICS §2: the kernel keeps a file's attributes, and names in directories anyone
/// may search, only for what is left of the read leases behind them. A `stat` then needs
/// no `getattr` after its lookup, and still, once another mount's change has returned,
/// the first mount shows it: an `fstat` (on a file opened before the change, whose
/// attributes the kernel took from that open's lookup) the new mode and size, a path
/// walk the new name and not the old.
#[test]
fn the_kernel_keeps_attributes_only_while_a_lease_keeps_them_current() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let up = Up::start(None);
    let one = up.mnt();
    std::fs::write(one.join("f"), "first").expect("write");
    let getattrs = || metric(&mount_metrics(&up.dir), &requests_of("getattr"));
    let before = getattrs();
    for _ in 0..20 {
        std::fs::metadata(one.join("f")).expect("stat");
    }
    let asked = getattrs() - before;
    assert!(
        asked < 10,
        "20 stats sent {asked} getattr requests: the kernel kept no attributes"
    );

    let two = up.dir.join("mnt2");
    let out = teemsfs(&[&"mount", &up.dir, &two]);
    assert!(out.contains("mounted"), "{out}");
    for (round, mode) in [0o640u32, 0o600, 0o644].into_iter().enumerate() {
        let held = std::fs::File::open(one.join("f")).expect("open in the first mount");
        let content = "x".repeat(10 + round * 7);
        std::fs::set_permissions(two.join("f"), std::fs::Permissions::from_mode(mode))
            .expect("chmod in the second mount");
        std::fs::write(two.join("f"), &content).expect("write in the second mount");
        let seen = held.metadata().expect("fstat in the first mount");
        assert_eq!(
            (seen.mode() & 0o7777, seen.len()),
            (mode, content.len() as u64),
            "round {round}: the first mount showed attributes older than a completed change"
        );
    }
    // Names: the first mount walks `d/g` (the kernel may keep both names for the rest of
    // their leases); once the second mount's rename has returned, the old name is gone
    // and the new one there for the first.
    std::fs::create_dir(one.join("d")).expect("mkdir");
    std::fs::write(one.join("d/g0"), "g").expect("write");
    for round in 0..3 {
        let (old, new) = (format!("d/g{round}"), format!("d/g{}", round + 1));
        std::fs::metadata(one.join(&old)).expect("stat in the first mount");
        std::fs::rename(two.join(&old), two.join(&new)).expect("rename in the second mount");
        assert!(
            !one.join(&old).exists() && one.join(&new).exists(),
            "round {round}: the first mount still walked a name another mount renamed"
        );
    }
    teemsfs(&[&"umount", &two]);
    up.down();
}

/// Stat-ahead (docs/SEMANTICS.md): stats walking a directory in name order find the
/// inodes already read, under read leases; a second mount's changes to files read ahead
/// are still seen once they have returned.
#[test]
fn a_directory_scan_reads_inodes_ahead_and_sees_another_mounts_changes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let up = Up::start(None);
    let one = up.mnt().join("scan");
    std::fs::create_dir(&one).expect("mkdir");
    let name = |i: usize| format!("f{i:03}");
    for i in 0..300 {
        std::fs::write(one.join(name(i)), "old").expect("write");
    }
    let addr = metrics_addr(&up.dir);
    let counts = || {
        let m = metrics_from(&addr);
        (
            metric(&m, "teemsfs_statahead_reads_total"),
            metric(&m, "teemsfs_statahead_hits_total"),
        )
    };
    let two = up.dir.join("mnt2");
    let out = teemsfs(&[&"mount", &up.dir, &two]);
    assert!(out.contains("mounted"), "{out}");
    // Past the leases the creates brought: the scan starts cold.
    std::thread::sleep(Duration::from_millis(1500));
    let before = counts();
    for i in 0..150 {
        std::fs::metadata(one.join(name(i))).expect("stat");
    }
    // Files the scan has read ahead of (or soon will): the second mount changes them,
    // waiting out the first mount's leases.
    let changed = two.join("scan");
    std::fs::set_permissions(
        changed.join(name(160)),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod in the second mount");
    std::fs::write(changed.join(name(170)), "new content").expect("write in the second mount");
    for i in 150..300 {
        let md = std::fs::metadata(one.join(name(i))).expect("stat");
        match i {
            160 => assert_eq!(md.mode() & 0o7777, 0o600, "a stale mode read ahead"),
            170 => assert_eq!(md.len(), 11, "a stale size read ahead"),
            _ => assert_eq!(md.len(), 3, "{}", name(i)),
        }
    }
    let (reads, hits) = counts();
    let (reads, hits) = (reads - before.0, hits - before.1);
    assert!(
        reads >= 250 && hits >= 250,
        "300 stats in order: {reads} inodes read ahead, {hits} lookups found theirs read ahead"
    );
    teemsfs(&[&"umount", &two]);
    up.down();
}

/// DESIGN §1 freshness against the stores: a store that returns an older, authentic
/// fragment for a name yields the current content (when at most m stores do it) or an I/O
/// error — never the old content. In-process `Fs` over local stores behind FaultyStore.
#[test]
fn stores_returning_older_objects_never_surface_old_content() {
    let config = FsConfig {
        inline_file_max_bytes: 0,
        ..FsConfig::default()
    };
    let ranged = stale_stores_never_surface_old_content(
        b"OLD content, version one".to_vec(),
        b"NEW content, version two".to_vec(),
        config,
        (0, 1 << 20),
    );
    assert_eq!(ranged, 0, "a small blob is read whole");
}

/// The same for a random read of 4 KiB in a large file, which reads just those bytes from
/// parts of the data fragments (docs/FORMAT.md F6): an older fragment's part fails its
/// check and the read falls back to the whole chunk, which is the current one or an error.
#[test]
fn random_reads_through_stores_returning_older_objects_never_surface_old_content() {
    let config = FsConfig {
        inline_file_max_bytes: 0,
        chunk_size_bytes: 1 << 20,
        ..FsConfig::default()
    };
    let v1: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let v2: Vec<u8> = (0..3u32 << 20).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    let ranged = stale_stores_never_surface_old_content(v1, v2, config, (2_500_000, 4096));
    assert!(ranged >= 1, "the clean read was a ranged read");
}

/// Writes `v1` then `v2` to one file (one chunk's fragments per store per version), then
/// reads `at` with fresh clients while up to all stores answer with version 1's
/// fragments. Returns how many ranged reads succeeded.
fn stale_stores_never_surface_old_content(
    v1: Vec<u8>,
    v2: Vec<u8>,
    config: FsConfig,
    at: (u64, u32),
) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let tmp = tempfile::tempdir().expect("tmp");
    let faulty: Vec<Arc<FaultyStore>> = (0..3)
        .map(|i| {
            let local = LocalStore::open(tmp.path().join(format!("s{i}"))).expect("store");
            Arc::new(FaultyStore::new(Arc::new(local), i))
        })
        .collect();
    let stores: Vec<Arc<dyn ObjectStore>> = faulty
        .iter()
        .map(|f| Arc::clone(f) as Arc<dyn ObjectStore>)
        .collect();
    let blob_store = Arc::new(
        BlobStore::new(
            stores.clone(),
            BlobStoreConfig::new(erasure::Layout { k: 2, m: 1 }),
        )
        .expect("blobs"),
    );
    let blobs: Arc<dyn BlobIo> = Arc::clone(&blob_store) as Arc<dyn BlobIo>;
    let teems = MemTeems::new();
    let new_fs = || {
        Fs::new(
            Arc::new(teems.clone()),
            Arc::clone(&blobs),
            ShareId([5; 16]),
            Key([6; 16]),
            config.clone(),
        )
    };
    let names = |stores: &[Arc<dyn ObjectStore>]| -> Vec<Vec<String>> {
        rt.block_on(async {
            let mut out = Vec::new();
            for s in stores {
                out.push(
                    s.list("")
                        .await
                        .expect("list")
                        .into_iter()
                        .map(|o| o.name)
                        .collect(),
                );
            }
            out
        })
    };
    let writer = new_fs();
    let me = Caller::default();
    let key = rt.block_on(async {
        writer.init(me).await.expect("init");
        let (attr, o) = writer
            .create(writer.root(), b"f", 0o644, me)
            .await
            .expect("create");
        writer.release(o.fh).await.expect("close");
        attr.key
    });
    let write = |content: &[u8]| {
        rt.block_on(async {
            let o = writer.open(key, true).await.expect("open");
            writer.write(o.fh, 0, content).await.expect("write");
            writer.release(o.fh).await.expect("close");
        })
    };
    let before = names(&stores);
    write(&v1);
    let after_v1 = names(&stores);
    write(&v2);
    let after_v2 = names(&stores);
    // Per store: the fragments v1's write left and those v2's left (chunks and manifest).
    // Each new name is answered with one of the old objects of the same store: authentic
    // fragments, of an older version.
    let fresh = |now: &Vec<String>, then: &Vec<String>| -> Vec<String> {
        now.iter().filter(|n| !then.contains(n)).cloned().collect()
    };
    let mut substitutions: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    for i in 0..3 {
        let old = fresh(&after_v1[i], &before[i]);
        let new = fresh(&after_v2[i], &after_v1[i]);
        assert_eq!(
            old.len(),
            new.len(),
            "as many fragments per store per version"
        );
        assert!(!new.is_empty());
        substitutions.insert(i, new.into_iter().zip(old).collect());
    }
    let (offset, len) = at;
    let end = (offset as usize + len as usize).min(v2.len());
    let (want_new, want_old) = (&v2[offset as usize..end], &v1[offset as usize..end]);
    let read_fresh = || -> Result<Vec<u8>, String> {
        // A new client each time: no blob cache, fresh metadata.
        let reader = new_fs();
        rt.block_on(async {
            let o = reader.open(key, false).await.map_err(|e| e.to_string())?;
            let r = reader
                .read(o.fh, offset, len)
                .await
                .map_err(|e| e.to_string());
            let _ = reader.release(o.fh).await;
            r
        })
    };
    assert!(
        read_fresh().expect("clean read") == want_new,
        "clean read: other bytes"
    );
    let ranged = blob_store.stats().ranged_reads;
    let substitute = |i: usize| {
        for (new, old) in &substitutions[&i] {
            faulty[i].set_fault(new, Fault::Substitute { with: old.clone() });
        }
    };
    // Up to m = 1 store rolled back: the current content, verified.
    for (i, store) in faulty.iter().enumerate() {
        substitute(i);
        assert!(
            read_fresh().expect("read with one stale store") == want_new,
            "store {i} stale: other bytes"
        );
        store.clear_all();
    }
    // Every store rolled back: an error, never the old content.
    for i in 0..3 {
        substitute(i);
    }
    match read_fresh() {
        Ok(content) => {
            assert!(content != want_old, "old content surfaced");
            assert!(content == want_new, "unverified bytes surfaced");
        }
        Err(e) => assert!(e.contains("blob") || e.contains("storage"), "{e}"),
    }
    // The writer's warm cache still names the current version only.
    let warm = rt.block_on(async {
        let o = writer.open(key, false).await.expect("open");
        let r = writer.read(o.fh, offset, len).await;
        let _ = writer.release(o.fh).await;
        r
    });
    if let Ok(content) = warm {
        assert!(content == want_new, "warm read: other bytes");
    }
    ranged
}

/// Crash (DESIGN §9, §10): kill the mount process in the middle of rewriting files; after
/// remounting every file is entirely its old or its new version, and `gc --dry-run` finds
/// the fragments the dead process left unnamed.
#[test]
fn killing_the_mount_mid_writes_leaves_old_or_new_files_and_gc_finds_orphans() {
    let up = Up::start(None);
    let mnt = up.mnt();
    let files = 24;
    let size = 300_000;
    for i in 0..files {
        std::fs::write(mnt.join(format!("f{i}")), vec![b'A'; size]).expect("write old");
    }
    // Rewrite them in the background with B's: cp opens each existing file with O_TRUNC,
    // writes and closes it once. (Neither dd nor a shell redirection would do: both dup
    // the descriptor and close the original before writing, and that close commits the
    // truncated, empty file — a legitimate version at a close, which a kill right after
    // leaves behind. This test once flaked on exactly that with dd.)
    let scratch = tempfile::tempdir().expect("scratch");
    let new_content = scratch.path().join("new");
    std::fs::write(&new_content, vec![b'B'; size]).expect("new content");
    let script = format!(
        "for i in $(seq 0 {}); do cp {} f$i; done",
        files - 1,
        new_content.display()
    );
    let mut writer = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&mnt)
        .spawn()
        .expect("writer");
    std::thread::sleep(Duration::from_millis(400));
    let pid_file = std::fs::read_dir(up.dir.join("run"))
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pid"))
        .expect("mount pid file");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    assert!(
        teemsfs::deploy::is_mount_process(pid),
        "pid {pid} is not our mount process"
    );
    run(Command::new("kill").arg("-9").arg(pid.to_string()));
    let _ = writer.wait();
    // The dead mount is still in the table ("transport endpoint is not connected").
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(&mnt)
        .output();
    let until = Instant::now() + Duration::from_secs(10);
    while mounted(&mnt) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&pid_file);
    teemsfs(&[&"mount", &up.dir, &mnt]);
    let (mut old, mut new) = (0, 0);
    for i in 0..files {
        let data = std::fs::read(mnt.join(format!("f{i}"))).expect("read after remount");
        if data == vec![b'A'; size] {
            old += 1;
        } else if data == vec![b'B'; size] {
            new += 1;
        } else {
            panic!("f{i} is a mix of versions ({} bytes)", data.len());
        }
    }
    assert_eq!(old + new, files);
    let gc = teemsfs(&[&"gc", &up.dir, &"--dry-run", &"--grace", &"0"]);
    assert!(
        gc.lines().any(|l| l.starts_with("orphan ")),
        "gc --dry-run found no orphans:\n{gc}"
    );
    let fsck = teemsfs(&[&"fsck", &up.dir]);
    assert!(fsck.contains("0 problems"), "{fsck}");
    up.down();
}
