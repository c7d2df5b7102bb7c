//! Lifecycle of a local cluster's `teems-replica` processes (DESIGN §12):
//! what `teemsfs cluster start|stop|status` do, as a library so that
//! `teemsfs bench meta`, `teemsfs up` and the tests share it.
//!
//! Files kept per replica, next to what `cluster init` wrote in
//! `DIR/replica-<i>/`:
//!
//! ```text
//! replica.pid    PID of the running process (written by start, removed by stop)
//! admin.addr     loopback address of its status/metrics endpoint (written by the replica)
//! replica.log    its tracing log
//! stdout.log     its stdout and stderr (start-up failures land here)
//! ```
//!
//! Processes are started detached (own process group, stdin closed), so
//! they outlive the command that started them and a Ctrl-C in the operator's
//! shell does not reach them. Stopping is by PID only, after checking that the
//! PID still belongs to `teems-replica --id <i>` (a stale PID file must never
//! make us signal an unrelated process).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use enclave_replica::net::admin::{ADMIN_ADDR_FILE, StatusReport, fetch};
use enclave_replica::provision::{ClusterFile, ClusterFileError};

/// Name of the replica binary, looked up next to the current executable.
pub const REPLICA_BINARY: &str = "teems-replica";
/// Environment variable that overrides where the replica binary is.
pub const REPLICA_BINARY_ENV: &str = "TEEMS_REPLICA_BIN";
pub const PID_FILE: &str = "replica.pid";
pub const STDOUT_FILE: &str = "stdout.log";
/// How long a started replica may take to answer its status endpoint.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replica may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum ReplicaCtlError {
    #[error(transparent)]
    ClusterFile(#[from] ClusterFileError),
    #[error("replica {id} is not in this cluster (ids are 1..={n})")]
    NoSuchReplica { id: u32, n: usize },
    #[error(
        "cannot find the `{REPLICA_BINARY}` binary next to {exe}; build it (cargo build --bins) or set {REPLICA_BINARY_ENV}"
    )]
    BinaryMissing { exe: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("replica {id} exited during start ({status}); last output:\n{output}")]
    ExitedAtStart {
        id: u32,
        status: String,
        output: String,
    },
    #[error("replica {id} did not answer its status endpoint within {secs} s; see {log}")]
    StartTimeout { id: u32, secs: u64, log: PathBuf },
    #[error("replica {id} (pid {pid}) did not exit after SIGKILL")]
    WontDie { id: u32, pid: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReplicaCtlError + '_ {
    move |source| ReplicaCtlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cluster's configuration from its directory.
pub fn load(cluster_dir: &Path) -> Result<ClusterFile, ReplicaCtlError> {
    Ok(ClusterFile::load(&ClusterFile::path_in(cluster_dir))?)
}

/// `ids`, or every replica when empty, checked against the cluster.
pub fn select(file: &ClusterFile, ids: &[u32]) -> Result<Vec<u32>, ReplicaCtlError> {
    if ids.is_empty() {
        return Ok(file.replicas.iter().map(|r| r.id).collect());
    }
    for id in ids {
        if file.replica(*id).is_none() {
            return Err(ReplicaCtlError::NoSuchReplica {
                id: *id,
                n: file.replicas.len(),
            });
        }
    }
    Ok(ids.to_vec())
}

/// Runtime threads for each of `replicas` replicas started on this host: its cores
/// shared among them, at least one each, at most two (what one replica's event loop and
/// sockets can use). Five replicas on two cores read faster with one thread each than
/// with two (`teemsfs bench meta`, one client: p50 0.24–0.27 vs 0.29–0.30 ms): the extra
/// threads only add context switches.
pub fn worker_threads_per_replica(replicas: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / replicas.max(1)).clamp(1, 2)
}

/// Where the replica binary is: `$TEEMS_REPLICA_BIN`, else next to the
/// current executable, else one directory up (test binaries live in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`).
pub fn replica_binary() -> Result<PathBuf, ReplicaCtlError> {
    if let Some(p) = std::env::var_os(REPLICA_BINARY_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io_err(Path::new("current executable")))?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(REPLICA_BINARY);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(ReplicaCtlError::BinaryMissing { exe })
}

fn replica_dir(file: &ClusterFile, id: u32) -> Result<PathBuf, ReplicaCtlError> {
    file.replica_paths(id)
        .map(|p| p.dir)
        .ok_or(ReplicaCtlError::NoSuchReplica {
            id,
            n: file.replicas.len(),
        })
}

fn read_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live (not zombie) `teems-replica` process with `--id id`.
fn is_our_replica(pid: u32, id: u32) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_replica = args
        .first()
        .is_some_and(|a| a.ends_with(REPLICA_BINARY.as_bytes()));
    let id_text = id.to_string();
    let has_id = args
        .windows(2)
        .any(|w| w.first() == Some(&&b"--id"[..]) && w.get(1) == Some(&id_text.as_bytes()));
    is_replica && has_id && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces, so
    // read the state after the last ')'.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The PID of replica `id` if it is running.
pub fn running_pid(file: &ClusterFile, id: u32) -> Result<Option<u32>, ReplicaCtlError> {
    let dir = replica_dir(file, id)?;
    Ok(read_pid(&dir).filter(|pid| is_our_replica(*pid, id)))
}

/// Start the replicas `ids` (all when empty) that are not running, and wait
/// until each answers its status endpoint. Returns `(id, pid, freshly_started)`.
pub fn start(cluster_dir: &Path, ids: &[u32]) -> Result<Vec<(u32, u32, bool)>, ReplicaCtlError> {
    let file = load(cluster_dir)?;
    let binary = replica_binary()?;
    let config_path = ClusterFile::path_in(cluster_dir);
    let workers = worker_threads_per_replica(file.replicas.len());
    let mut started = Vec::new();
    let mut out = Vec::new();
    for id in select(&file, ids)? {
        if let Some(pid) = running_pid(&file, id)? {
            out.push((id, pid, false));
            continue;
        }
        let dir = replica_dir(&file, id)?;
        // A stale address would make us wait on the previous incarnation.
        let _ = fs::remove_file(dir.join(ADMIN_ADDR_FILE));
        let log_path = dir.join(STDOUT_FILE);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let log2 = log.try_clone().map_err(io_err(&log_path))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--id")
            .arg(id.to_string());
        cmd.arg("--worker-threads").arg(workers.to_string());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(io_err(&binary))?;
        let pid = child.id();
        let pid_path = dir.join(PID_FILE);
        fs::write(&pid_path, format!("{pid}\n")).map_err(io_err(&pid_path))?;
        started.push((id, child, dir));
        out.push((id, pid, true));
    }
    // Wait for all of them together: replicas start in parallel. If one fails, stop the
    // others this call started, so a failed start leaves nothing running behind it.
    if let Err(e) = wait_started(&mut started) {
        for (_, child, dir) in &mut started {
            signal(child.id(), libc::SIGTERM);
            let until = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(dir.join(PID_FILE));
        }
        return Err(e);
    }
    // The processes live on after we return; nobody will wait() for them here, the init
    // process reaps them once they exit.
    Ok(out)
}

/// Waits until every started replica answers its status endpoint.
fn wait_started(
    started: &mut [(u32, std::process::Child, PathBuf)],
) -> Result<(), ReplicaCtlError> {
    let until = Instant::now() + START_TIMEOUT;
    for (id, child, dir) in started.iter_mut() {
        let id = *id;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ReplicaCtlError::ExitedAtStart {
                    id,
                    status: status.to_string(),
                    output: tail(&dir.join(STDOUT_FILE)),
                });
            }
            if status_of_dir(dir).is_some() {
                break;
            }
            if Instant::now() >= until {
                return Err(ReplicaCtlError::StartTimeout {
                    id,
                    secs: START_TIMEOUT.as_secs(),
                    log: dir.join("replica.log"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and has no memory effects; the PID
    // was just checked to belong to our replica.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn wait_gone(pid: u32, id: u32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if !is_our_replica(pid, id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_our_replica(pid, id)
}

/// Stop replicas `ids` (all when empty): SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]; with `kill`, SIGKILL at once (a crash, for tests). Returns
/// the ids that were running.
pub fn stop(cluster_dir: &Path, ids: &[u32], kill: bool) -> Result<Vec<u32>, ReplicaCtlError> {
    let file = load(cluster_dir)?;
    let mut targets = Vec::new();
    for id in select(&file, ids)? {
        let dir = replica_dir(&file, id)?;
        match read_pid(&dir) {
            Some(pid) if is_our_replica(pid, id) => {
                signal(pid, if kill { libc::SIGKILL } else { libc::SIGTERM });
                targets.push((id, pid, dir));
            }
            _ => {
                let _ = fs::remove_file(dir.join(PID_FILE));
            }
        }
    }
    let mut stopped = Vec::new();
    for (id, pid, dir) in targets {
        if !wait_gone(pid, id, STOP_GRACE) {
            signal(pid, libc::SIGKILL);
            if !wait_gone(pid, id, Duration::from_secs(2)) {
                return Err(ReplicaCtlError::WontDie { id, pid });
            }
        }
        let _ = fs::remove_file(dir.join(PID_FILE));
        let _ = fs::remove_file(dir.join(ADMIN_ADDR_FILE));
        stopped.push(id);
    }
    Ok(stopped)
}

/// One replica as `cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaState {
    pub id: u32,
    pub pid: Option<u32>,
    /// The status endpoint answered.
    pub up: bool,
    pub status: Option<StatusReport>,
}

fn status_of_dir(dir: &Path) -> Option<StatusReport> {
    let addr: std::net::SocketAddr = fs::read_to_string(dir.join(ADMIN_ADDR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let body = rt.block_on(fetch(addr, "/status", STATUS_TIMEOUT)).ok()?;
    serde_json::from_str(&body).ok()
}

/// Status of every replica. Blocking; call from outside an async runtime (or
/// in `spawn_blocking`).
pub fn status(cluster_dir: &Path) -> Result<Vec<ReplicaState>, ReplicaCtlError> {
    let file = load(cluster_dir)?;
    let mut out = Vec::new();
    for r in &file.replicas {
        let dir = replica_dir(&file, r.id)?;
        let pid = read_pid(&dir).filter(|pid| is_our_replica(*pid, r.id));
        let status = if pid.is_some() {
            status_of_dir(&dir)
        } else {
            None
        };
        out.push(ReplicaState {
            id: r.id,
            pid,
            up: status.is_some(),
            status,
        });
    }
    Ok(out)
}

/// Fetch replica `id`'s Prometheus metrics text.
pub fn metrics(cluster_dir: &Path, id: u32) -> Option<String> {
    let file = load(cluster_dir).ok()?;
    let dir = replica_dir(&file, id).ok()?;
    let addr: std::net::SocketAddr = fs::read_to_string(dir.join(ADMIN_ADDR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(fetch(addr, "/metrics", STATUS_TIMEOUT)).ok()
}
