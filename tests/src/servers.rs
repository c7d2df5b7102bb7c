//! Real storage servers for end-to-end tests: `redis-server` and an S3-compatible server,
//! each started as a child process on a free loopback port, waited for until it answers,
//! and killed by its PID when the handle is dropped.
//!
//! No mocks: the point of these tests is the real wire protocol. A missing server binary is
//! an error whose message says to run `scripts/setup.sh`, so a test that needs the server
//! fails loudly instead of silently passing on a machine that lacks it.
//!
//! Only `127.0.0.1` is ever bound. Every wait is bounded in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a server may take from spawn to its first good answer. moto (Python) needs
/// 1–3 s on an idle machine; many times that under a parallel build.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts with a fresh port when a server exits at start (e.g. the port was taken
/// between choosing it and the server binding it).
const START_ATTEMPTS: usize = 3;

/// Access key and secret the S3 test servers accept (moto accepts any; fixed so tests and
/// a future credential-checking server agree).
pub const S3_ACCESS_KEY_ID: &str = "teemsfs-test";
pub const S3_SECRET_ACCESS_KEY: &str = "teemsfs-test-secret";

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Finds `program` on `PATH`, or fails with the set-up hint.
pub fn find_program(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{program}` is not on PATH: run scripts/setup.sh to install the test servers")
}

/// A child process killed (by PID) and reaped on drop, with its output in a temp dir.
#[derive(Debug)]
struct ServerProcess {
    name: &'static str,
    child: Child,
    /// Holds the server's data and log; removed after the process is gone.
    dir: tempfile::TempDir,
}

impl ServerProcess {
    fn spawn(name: &'static str, command: &mut Command, dir: tempfile::TempDir) -> Result<Self> {
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(ServerProcess { name, child, dir })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2_000);
        log.get(start..).unwrap_or_default().to_owned()
    }

    /// Polls `ready` until it returns true, the process exits, or the time is up.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited at start with {status}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "{} not ready after {READY_TIMEOUT:?}; log:\n{}",
            self.name,
            self.log_tail()
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID; wait reaps it so no zombie remains.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` to `addr` and returns whatever comes back within a short timeout.
fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(request).ok()?;
    let mut reply = vec![0u8; 256];
    let n = stream.read(&mut reply).ok()?;
    reply.truncate(n);
    Some(reply)
}

/// Starts a server with `spawn(port)` and waits until `ready(addr)`, retrying on a fresh
/// port if it dies at start.
fn start_on_free_port(
    mut spawn: impl FnMut(u16) -> Result<ServerProcess>,
    ready: impl Fn(SocketAddr) -> bool,
) -> Result<(ServerProcess, u16)> {
    let mut last_error = None;
    for _attempt in 0..START_ATTEMPTS {
        let port = free_port()?;
        let mut process = spawn(port)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match process.wait_ready(|| ready(addr)) {
            Ok(()) => return Ok((process, port)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("server did not start")))
}

/// A `redis-server` with no persistence, on a free loopback port.
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
    port: u16,
}

impl RedisServer {
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with_args(&[])
    }

    /// Starts `redis-server` with extra arguments (e.g. cluster mode).
    pub fn start_with_args(extra: &[&str]) -> Result<RedisServer> {
        let program = find_program("redis-server")?;
        let (process, port) = start_on_free_port(
            |port| {
                let dir = tempfile::tempdir()?;
                let mut command = Command::new(&program);
                command
                    .arg("--port")
                    .arg(port.to_string())
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir.path())
                    .args(extra);
                ServerProcess::spawn("redis-server", &mut command, dir)
            },
            |addr| exchange(addr, b"PING\r\n").is_some_and(|reply| reply.starts_with(b"+PONG")),
        )?;
        Ok(RedisServer { process, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's data directory (for tests that inspect or roll back its files).
    pub fn dir(&self) -> &Path {
        self.process.dir.path()
    }
}

/// A Redis cluster of `primaries` `redis-server` processes (no replicas) on loopback,
/// with the slots spread by `redis-cli --cluster create` and every node reporting
/// `cluster_state:ok` before this returns.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(primaries: usize) -> Result<RedisCluster> {
        let cli = find_program("redis-cli")?;
        let mut nodes = Vec::with_capacity(primaries);
        for _ in 0..primaries {
            nodes.push(RedisServer::start_with_args(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for node in &nodes {
            let addr = SocketAddr::from(([127, 0, 0, 1], node.port()));
            loop {
                let ok = exchange(addr, b"CLUSTER INFO\r\n").is_some_and(|reply| {
                    String::from_utf8_lossy(&reply).contains("cluster_state:ok")
                });
                if ok {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("Redis cluster node {addr} not ready after {READY_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(RedisCluster { nodes })
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// Which S3-compatible server to run. Each variant is one program with its own command
/// line and readiness check; moto is the default because it ships with the machine image
/// (`pip install 'moto[server]'` on a fresh one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3ServerKind {
    /// `moto_server` (Python moto); accepts any credentials.
    Moto,
}

/// An S3-compatible server on a free loopback port.
#[derive(Debug)]
pub struct S3Server {
    process: ServerProcess,
    port: u16,
    kind: S3ServerKind,
}

impl S3Server {
    pub fn start(kind: S3ServerKind) -> Result<S3Server> {
        let (process, port) = match kind {
            S3ServerKind::Moto => {
                let program = find_program("moto_server")?;
                start_on_free_port(
                    |port| {
                        let dir = tempfile::tempdir()?;
                        let mut command = Command::new(&program);
                        command
                            .args(["-H", "127.0.0.1", "-p"])
                            .arg(port.to_string());
                        ServerProcess::spawn("moto_server", &mut command, dir)
                    },
                    |addr| {
                        exchange(addr, b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                            .is_some_and(|reply| reply.starts_with(b"HTTP/1."))
                    },
                )?
            }
        };
        Ok(S3Server {
            process,
            port,
            kind,
        })
    }

    pub fn kind(&self) -> S3ServerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A store configuration for `bucket` on this server, with the test credentials.
    pub fn store_config(&self, bucket: &str) -> teemsfs::store::S3Config {
        let mut config = teemsfs::store::S3Config::new(&self.endpoint_url(), bucket);
        config.access_key_id = Some(S3_ACCESS_KEY_ID.to_owned());
        config.secret_access_key = Some(S3_SECRET_ACCESS_KEY.to_owned());
        config
    }

    /// Server log so far (to attach to a failure message).
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
