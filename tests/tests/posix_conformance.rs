//! POSIX conformance through a real mount (DESIGN §13, docs/SEMANTICS.md §6): a short
//! subset of pjdfstest and a few thousand fsx operations. The full pjdfstest run and
//! 100,000 fsx operations are `scripts/pjdfstest.sh`.
//!
//! Needs `pjdfstest` and `fsx` (`cargo install pjdfstest fsx --locked`; scripts/setup.sh
//! installs them), root, /dev/fuse, and the binaries built. Fails when any is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// pjdfstest groups run here; each is a test-name filter.
const GROUPS: [&str; 8] = [
    "chmod::",
    "posix_fallocate::",
    "mkdir::",
    "rename::",
    "unlink::",
    "symlink::",
    "link::",
    "truncate::",
];
/// fsx operations in the default run.
const FSX_OPS: u32 = 2_000;

fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: run scripts/setup.sh (cargo install {name} --locked)")
        })
}

fn teemsfs_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("teemsfs");
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`)",
        path.display()
    );
    path
}

struct Deployment {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = Command::new(teemsfs_bin())
            .arg("down")
            .arg(&self.dir)
            .output();
    }
}

fn up() -> Deployment {
    let tmp = tempfile::tempdir().expect("tmp");
    // tempdir() is 0700; pjdfstest's unprivileged users must be able to walk to the mount.
    assert!(
        Command::new("chmod")
            .arg("0755")
            .arg(tmp.path())
            .status()
            .expect("chmod")
            .success()
    );
    let dir = tmp.path().join("deploy");
    let config = tmp.path().join("teemsfs.toml");
    // pjdfstest switches to other users: the mount must let them in.
    std::fs::write(&config, "[mount]\nallow_other = true\n").expect("config");
    let out = Command::new(teemsfs_bin())
        .arg("up")
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("up");
    assert!(
        out.status.success(),
        "teemsfs up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Deployment { _tmp: tmp, dir }
}

/// `Summary: N failed, N skipped, N passed, …` → (passed, failed).
fn summary(log: &str) -> Option<(u32, u32)> {
    let line = log.lines().rev().find(|l| l.starts_with("Summary:"))?;
    let number_before = |word: &str| -> Option<u32> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some((number_before("passed")?, number_before("failed")?))
}

#[test]
fn pjdfstest_subset_and_fsx_pass_through_a_real_mount() {
    let pjdfstest = tool("pjdfstest");
    let fsx = tool("fsx");
    let d = up();
    let mnt = d.dir.join("mnt");
    let work = mnt.join("pjdfstest");
    std::fs::create_dir(&work).expect("mkdir");
    assert!(
        Command::new("chmod")
            .arg("0777")
            .arg(&work)
            .status()
            .expect("chmod")
            .success()
    );
    let conf = d._tmp.path().join("pjdfstest.toml");
    std::fs::write(
        &conf,
        "[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\n[settings]\nnaptime = 0.01\n\
         [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n",
    )
    .expect("pjdfstest config");
    let out = Command::new(&pjdfstest)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&work)
        .args(GROUPS)
        .current_dir(&work)
        .output()
        .expect("run pjdfstest");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (passed, failed) = summary(&log).unwrap_or_else(|| panic!("no pjdfstest summary:\n{log}"));
    println!("pjdfstest subset: {passed} passed, {failed} failed");
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(passed > 100, "suspiciously few cases ran: {passed}\n{log}");
    assert_eq!(failed, 0, "pjdfstest failures:\n{}", failures.join("\n"));

    let fsx_dir = mnt.join("fsx");
    std::fs::create_dir(&fsx_dir).expect("mkdir");
    let out = Command::new(&fsx)
        .arg("-N")
        .arg(FSX_OPS.to_string())
        .arg("-S")
        .arg("7")
        .arg("-P")
        .arg(d._tmp.path())
        .arg("testfile")
        .current_dir(&fsx_dir)
        .output()
        .expect("run fsx");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && log.contains("All operations completed A-OK"),
        "fsx failed:\n{log}"
    );
}

#[test]
fn the_summary_parser_reads_pjdfstest_output() {
    assert_eq!(
        summary("x\nSummary: 3 failed, 28 skipped, 349 passed, 0 expected failures, 380 total\n"),
        Some((349, 3))
    );
    assert_eq!(summary("no summary"), None);
}

/// Runs `script` with `sh` as user nobody (uid/gid 65534) with the given supplementary
/// groups; whether it exited 0.
fn as_nobody(groups: &[u32], script: &str) -> bool {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    let out = cmd
        .args(["sh", "-c", script])
        .current_dir("/")
        .output()
        .expect("run setpriv");
    out.status.success()
}

/// The mount checks permissions itself (no `default_permissions`, docs/SEMANTICS.md §4):
/// another user is held to the mode bits through the kernel, supplementary groups count,
/// and executing needs the execute bit of the caller's class, not read.
#[test]
fn other_users_are_held_to_the_mode_bits_through_a_real_mount() {
    let d = up();
    let mnt = d.dir.join("mnt");
    let p = |name: &str| mnt.join(name).display().to_string();
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
            .expect("sh")
            .success();
        assert!(ok, "setup failed: {script}");
    };
    sh(&format!(
        "chmod 0755 {m} && echo secret > {s} && chmod 0600 {s}",
        m = mnt.display(),
        s = p("secret")
    ));
    sh(&format!(
        "echo team > {g} && chown 0:4242 {g} && chmod 0640 {g}",
        g = p("team")
    ));
    sh(&format!(
        "mkdir {c} && echo x > {c}/f && chmod 0700 {c}",
        c = p("closed")
    ));
    sh(&format!("mkdir {o} && chmod 0777 {o}", o = p("open")));
    sh(&format!("echo x > {w} && chmod 0666 {w}", w = p("shared")));
    sh(&format!(
        "cp /bin/true {x} && chmod 0711 {x} && cp /bin/true {y} && chmod 0744 {y}",
        x = p("run"),
        y = p("norun")
    ));

    // Reading: owner-only is refused; a group member (by supplementary group) may read.
    assert!(
        !as_nobody(&[], &format!("cat {}", p("secret"))),
        "0600 root file read by nobody"
    );
    assert!(
        as_nobody(&[4242], &format!("cat {}", p("team"))),
        "group member reads a 0640 file"
    );
    assert!(
        !as_nobody(&[], &format!("cat {}", p("team"))),
        "non-member reads a 0640 file"
    );
    // Searching and listing a 0700 directory.
    assert!(
        !as_nobody(&[], &format!("stat {}/f", p("closed"))),
        "lookup in a 0700 dir"
    );
    assert!(
        !as_nobody(&[], &format!("ls {}", p("closed"))),
        "listing a 0700 dir"
    );
    // Writing, creating, removing.
    assert!(
        !as_nobody(&[], &format!("echo y >> {}", p("secret"))),
        "append to a 0600 file"
    );
    assert!(
        !as_nobody(&[], &format!("touch {}", p("new"))),
        "create in a 0755 root dir"
    );
    assert!(
        !as_nobody(&[], &format!("rm -f {}", p("shared"))),
        "unlink in a 0755 root dir"
    );
    assert!(as_nobody(
        &[],
        &format!(
            "touch {o}/mine && echo z > {o}/mine && rm {o}/mine",
            o = p("open")
        )
    ));
    // Attributes: chmod needs the owner; `touch` (now) needs write; explicit times the owner.
    assert!(
        !as_nobody(&[], &format!("chmod 0777 {}", p("secret"))),
        "chmod by a non-owner"
    );
    assert!(
        as_nobody(&[], &format!("touch {}", p("shared"))),
        "touch of a 0666 file"
    );
    assert!(
        !as_nobody(&[], &format!("touch -d 2001-01-01 {}", p("shared"))),
        "explicit times by a non-owner"
    );
    // Executing: the execute bit of the caller's class, without read permission.
    assert!(as_nobody(&[], &p("run")), "exec of a 0711 binary");
    assert!(
        !as_nobody(&[], &p("norun")),
        "exec of a 0744 binary by others"
    );
    // Taking search permission away works at once, although the kernel may keep names
    // under a directory everyone can search (SEMANTICS §2): nobody walks `gate/f`, which
    // leaves both names in the kernel, then root closes `gate`; the next walk is refused.
    sh(&format!(
        "mkdir {g} && chmod 0755 {g} && echo x > {g}/f && chmod 0644 {g}/f",
        g = p("gate")
    ));
    for round in 0..3 {
        assert!(
            as_nobody(&[], &format!("cat {}/f && stat {}/f", p("gate"), p("gate"))),
            "round {round}: walk into a 0755 dir"
        );
        sh(&format!("chmod 0700 {}", p("gate")));
        assert!(
            !as_nobody(&[], &format!("stat {}/f", p("gate"))),
            "round {round}: walked into a dir just made 0700, through names the kernel kept"
        );
        sh(&format!("chmod 0755 {}", p("gate")));
    }
    // And the files are as root left them.
    assert_eq!(
        std::fs::read_to_string(mnt.join("secret")).expect("read"),
        "secret\n"
    );
    assert!(mnt.join("shared").exists());
}
