//! A real TEEMS cluster for process-level tests: `teemsfs cluster init` in a
//! temporary directory, fast protocol timeouts, then real `teems-replica`
//! processes started, killed and restarted through the `teemsfs` CLI — the
//! same commands an operator uses.
//!
//! The binaries are not built by the tests (cargo cannot build another
//! package's binaries for an integration test): `scripts/test.sh` runs
//! `cargo build --workspace --all-targets` first, and [`binary`] finds them in
//! `target/<profile>/` from the test executable's own path, failing with a
//! message that says what to build when they are missing.
//!
//! Dropping a [`TestCluster`] kills its replicas (by PID) and removes the
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use enclave_replica::provision::ClusterFile;
use metadata_client::session::{ClientError, Session};
use metadata_client::wire::{Key, ShareId};
use teemsfs::replicas::ReplicaState;

/// A binary of this workspace, built into the same `target/<profile>/` as the
/// running test (which lives in `target/<profile>/deps/`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe.parent();
    for _ in 0..3 {
        let Some(d) = dir else { break };
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "binary `{name}` not found near {}: build it first with `cargo build --workspace --bins` \
         (scripts/test.sh does)",
        exe.display()
    )
}

/// Protocol timing for tests: short enough that failures and recoveries
/// happen in well under a second, long enough for a loaded 2-core machine.
pub fn fast_timing() -> enclave_replica::core::Timing {
    enclave_replica::core::Timing {
        rpc_retry_ms: 50,
        heartbeat_ms: 50,
        election_timeout_ms: 400,
        recovery_retry_ms: 200,
        ack_window_ms: 500,
        op_deadline_ms: 2_000,
        lease_ms: 500,
    }
}

/// A cluster of real replica processes in a temporary directory.
pub struct TestCluster {
    dir: tempfile::TempDir,
    teemsfs: PathBuf,
    pub file: ClusterFile,
}

impl TestCluster {
    /// `teemsfs cluster init` with `N=5, M_R=2, F=2` in `mode` (`rr`/`cft`),
    /// then test timing and frequent snapshots (so snapshots are exercised).
    pub fn init(mode: &str) -> Result<TestCluster> {
        let teemsfs = binary("teemsfs")?;
        binary("teems-replica")?;
        let dir = tempfile::Builder::new()
            .prefix("teems-cluster-")
            .tempdir()?;
        let out = Command::new(&teemsfs)
            .args(["cluster", "init"])
            .arg(dir.path())
            .args([
                "--replicas",
                "5",
                "--mr",
                "2",
                "--f",
                "2",
                "--mode",
                mode,
                "--tenant",
                "bob",
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "cluster init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let path = ClusterFile::path_in(dir.path());
        let mut file = ClusterFile::load(&path)?;
        file.timing = fast_timing();
        file.snapshot_every_records = 40;
        std::fs::write(&path, file.to_toml_string()?)?;
        let file = ClusterFile::load(&path)?;
        Ok(TestCluster { dir, teemsfs, file })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run `teemsfs <args>` (the cluster directory is not added).
    pub fn teemsfs(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(&self.teemsfs).args(args).output()?)
    }

    fn cluster_cmd(&self, verb: &str, id: Option<u32>, extra: &[&str]) -> Result<()> {
        let dir = self.path().to_string_lossy().into_owned();
        let id_text = id.map(|i| i.to_string());
        let mut args = vec!["cluster", verb, dir.as_str()];
        if let Some(i) = id_text.as_deref() {
            args.push(i);
        }
        args.extend_from_slice(extra);
        let out = self.teemsfs(&args)?;
        if !out.status.success() {
            bail!(
                "teemsfs cluster {verb} {id:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `teemsfs cluster start DIR [i]`.
    pub fn start(&self, id: Option<u32>) -> Result<()> {
        self.cluster_cmd("start", id, &[])
    }

    /// `teemsfs cluster stop DIR i` (SIGTERM).
    pub fn stop(&self, id: u32) -> Result<()> {
        self.cluster_cmd("stop", Some(id), &[])
    }

    /// `teemsfs cluster stop DIR i --kill` (SIGKILL: a crash).
    pub fn kill(&self, id: u32) -> Result<()> {
        self.cluster_cmd("stop", Some(id), &["--kill"])
    }

    /// `teemsfs cluster status DIR --json`.
    pub fn status(&self) -> Result<Vec<ReplicaState>> {
        let dir = self.path().to_string_lossy().into_owned();
        let out = self.teemsfs(&["cluster", "status", &dir, "--json"])?;
        if !out.status.success() {
            bail!(
                "cluster status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `teemsfs meta <verb> DIR <rest…>`.
    pub fn meta(&self, verb: &str, rest: &[&str]) -> Result<Output> {
        let dir = self.path().to_string_lossy().into_owned();
        let mut args = vec!["meta", verb, dir.as_str()];
        args.extend_from_slice(rest);
        self.teemsfs(&args)
    }

    /// Replica `id`'s sealed-state directory.
    pub fn sealed_dir(&self, id: u32) -> PathBuf {
        self.file
            .replica_paths(id)
            .map(|p| p.sealed_dir)
            .unwrap_or_default()
    }

    /// Replica `id`'s Prometheus metrics.
    pub fn metrics(&self, id: u32) -> Option<String> {
        teemsfs::replicas::metrics(self.path(), id)
    }

    /// A session as `tenant`, starting at replica `first` (1-based).
    pub fn session(&self, tenant: &str, first: u32) -> Result<Session> {
        let cfg = teemsfs::meta_remote::session_config(
            self.path(),
            tenant,
            first.saturating_sub(1) as usize,
        )?;
        Ok(Session::new(cfg)?)
    }

    /// Poll `status` until `pred` holds for it, up to `within`.
    pub fn wait_status(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[ReplicaState]) -> bool,
    ) -> Result<Vec<ReplicaState>> {
        let until = Instant::now() + within;
        loop {
            let s = self.status()?;
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() >= until {
                bail!("timed out after {within:?} waiting for {what}; last status: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = teemsfs::replicas::stop(self.dir.path(), &[], true);
    }
}

/// The admin tenant's home share, created on first use.
pub async fn admin_share(session: &Session) -> Result<ShareId> {
    let share = teemsfs::meta_remote::home_share("admin");
    // The cluster may still be electing its first leader: retry a few times.
    let mut last = None;
    for _ in 0..10 {
        match teemsfs::meta_remote::ensure_share(session, share).await {
            Ok(()) => return Ok(share),
            Err(e) => last = Some(e),
        }
    }
    bail!("cannot create the admin share: {last:?}")
}

/// Write until it succeeds or `within` passes (e.g. while a cluster recovers).
pub async fn write_eventually(
    session: &Session,
    share: ShareId,
    key: &str,
    value: &str,
    within: Duration,
) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        match session
            .write(share, Key::from_name(key), value.as_bytes().to_vec())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= until => {
                bail!("write {key} still failing after {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Read until it succeeds or `within` passes; every *successful* read is
/// returned to `check` first (so a stale value fails the test even if a later
/// read would have been fresh).
pub async fn read_eventually(
    session: &Session,
    share: ShareId,
    key: &str,
    within: Duration,
    mut check: impl FnMut(&str) -> Result<()>,
) -> Result<String> {
    let until = Instant::now() + within;
    loop {
        match session.read(share, Key::from_name(key)).await {
            Ok((v, _)) => {
                let v = String::from_utf8_lossy(&v).into_owned();
                check(&v)?;
                return Ok(v);
            }
            Err(e) if Instant::now() >= until => {
                bail!("read {key} still failing after {within:?}: {e}")
            }
            Err(ClientError::NotFound) => bail!("read {key}: not found"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Copy a directory tree (the adversary's "copy the sealed store aside").
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Replace `dir` by a copy of `from` (the adversary restoring an old copy).
pub fn restore_dir(from: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    copy_dir(from, dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Tests in one binary share the machine's 2 cores: run one cluster at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The adversarial rollback of `M_R = 2` replicas that a majority protocol
/// cannot survive (DESIGN §13: "CFT with rollbacks must show a violation"):
///
/// 1. all up; `k = v1` completes;
/// 2. replicas 4 and 5 crash (they keep `v1`);
/// 3. the adversary copies the sealed stores of 2 and 3 aside (`v1`);
/// 4. `k = v2` completes — on the write quorum {1, 2, 3};
/// 5. 2 and 3 are stopped and their old stores restored (`M_R` rollbacks);
/// 6. 1 crashes (one unreachable replica, within `F`); 2–5 are started;
/// 7. `k` is read through proxies 2 and 4.
///
/// Returns the outcomes of step 7 (value or error kind) and leaves replica 1
/// stopped. Every live replica now holds `v1`, so a protocol that trusts a
/// restarted replica's state returns `v1`, which is stale. RR must not:
/// the restarted replicas are suspicious, the read quorum grows to
/// `F + M_R + 1 = 5`, and with 4 replicas up the answer is `Unavailable`.
pub async fn adversarial_rollback(
    c: &TestCluster,
) -> Result<Vec<std::result::Result<String, ClientError>>> {
    let admin = c.session("admin", 1)?;
    let share = admin_share(&admin).await?;
    write_eventually(&admin, share, "k", "v1", Duration::from_secs(20)).await?;
    c.kill(4)?;
    c.kill(5)?;
    let aside = c.path().join("adversary");
    for id in [2, 3] {
        copy_dir(&c.sealed_dir(id), &aside.join(format!("sealed-{id}")))?;
    }
    admin
        .write(share, Key::from_name("k"), b"v2".to_vec())
        .await
        .context("write v2 on {1,2,3}")?;
    for id in [2, 3] {
        c.stop(id)?;
        restore_dir(&aside.join(format!("sealed-{id}")), &c.sealed_dir(id))?;
    }
    c.kill(1)?;
    for id in 2..=5 {
        c.start(Some(id))?;
    }
    let mut outcomes = Vec::new();
    for proxy in [2, 4] {
        let s = c.session("admin", proxy)?;
        let r = s
            .read(share, Key::from_name("k"))
            .await
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned());
        outcomes.push(r);
    }
    Ok(outcomes)
}
