//! `teemsfs bench meta`: throughput and latency of the metadata service
//! (issue 4, paper §VI): TEEMS in `rr` and `cft` mode on a local 5-replica
//! cluster (`M_R = 2, F = 2`), and optionally etcd, doing the same puts and
//! gets of small values from 1, 8 and 64 concurrent clients.
//!
//! Each point runs for a fixed time; every client issues one operation after
//! the other (closed loop) on its own connection, so throughput and latency
//! are the service's, not a queue's. etcd is driven through its HTTP/JSON
//! gateway (`/v3/kv/put`, `/v3/kv/range`; ranges are linearizable, etcd's
//! default), over keep-alive connections; `scripts/bench-meta.sh` starts a
//! loopback etcd cluster of the same size and passes its endpoints.
//!
//! Not a timed test: run on demand, results go to `BENCHMARKS.md`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_replica::core::Mode;
use enclave_replica::provision::{ADMIN_TENANT, InitOptions, init_cluster};
use metadata_client::session::Session;
use metadata_client::wire::Key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::meta_remote::{ensure_share, home_share, session_config_from};
use crate::replicas;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cluster set-up: {0}")]
    Setup(String),
    #[error("metadata: {0}")]
    Client(#[from] metadata_client::session::ClientError),
    #[error("etcd at {endpoint}: {reason}")]
    Etcd { endpoint: String, reason: String },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct MetaBenchOptions {
    /// Fresh directory for the clusters (`<dir>/rr`, `<dir>/cft`).
    pub work_dir: PathBuf,
    pub clients: Vec<usize>,
    /// Length of one measured point.
    pub point_ms: u64,
    pub value_bytes: usize,
    /// Distinct keys written and read.
    pub keys: usize,
    pub modes: Vec<Mode>,
    /// etcd HTTP endpoints (`host:port`); empty skips etcd.
    pub etcd: Vec<SocketAddr>,
}

impl MetaBenchOptions {
    pub fn new(work_dir: PathBuf) -> MetaBenchOptions {
        MetaBenchOptions {
            work_dir,
            clients: vec![1, 8, 64],
            point_ms: 5_000,
            value_bytes: 256,
            keys: 1_000,
            modes: vec![Mode::Rr, Mode::Cft],
            etcd: Vec::new(),
        }
    }
}

/// One measured point.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchPoint {
    pub system: String,
    pub op: &'static str,
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// Run `clients` closed-loop workers for `duration`; `op(client, i)` returns
/// whether the operation succeeded.
async fn measure<F, Fut>(
    system: &str,
    op_name: &'static str,
    clients: usize,
    duration: Duration,
    op: F,
) -> BenchPoint
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                if op(c, i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    BenchPoint {
        system: system.to_string(),
        op: op_name,
        clients,
        ops: all.len() as u64,
        errors,
        ops_per_sec: all.len() as f64 / secs,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}

fn value(bytes: usize, c: usize, i: u64) -> Vec<u8> {
    let mut v = format!("c{c}-i{i}-").into_bytes();
    v.resize(bytes, b'x');
    v
}

fn key_name(opts: &MetaBenchOptions, c: usize, i: u64) -> String {
    let k = (c as u64).wrapping_mul(7919).wrapping_add(i) % opts.keys.max(1) as u64;
    format!("bench-{k}")
}

/// TEEMS in one mode: init, start, measure writes then reads per client
/// count, stop.
pub async fn run_teems(mode: Mode, opts: &MetaBenchOptions) -> Result<Vec<BenchPoint>, BenchError> {
    let name = match mode {
        Mode::Rr => "teems-rr",
        Mode::Cft => "teems-cft",
    };
    let dir = opts.work_dir.join(name);
    let mut init = InitOptions::new(5, 2, 2);
    init.mode = mode;
    let file = init_cluster(&dir, &init).map_err(|e| BenchError::Setup(e.to_string()))?;
    let start_dir = dir.clone();
    tokio::task::spawn_blocking(move || replicas::start(&start_dir, &[]))
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let result = teems_points(name, &dir, &file, opts).await;
    let stop_dir = dir.clone();
    let _ = tokio::task::spawn_blocking(move || replicas::stop(&stop_dir, &[], false)).await;
    result
}

async fn teems_points(
    name: &str,
    _dir: &Path,
    file: &enclave_replica::provision::ClusterFile,
    opts: &MetaBenchOptions,
) -> Result<Vec<BenchPoint>, BenchError> {
    let share = home_share(ADMIN_TENANT);
    let max_clients = opts.clients.iter().copied().max().unwrap_or(1);
    let mut sessions = Vec::new();
    for c in 0..max_clients {
        let mut cfg = session_config_from(file, ADMIN_TENANT, c)
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        // The YCSB runs measure the quorum protocols themselves: a leased
        // read would not reach the replicas at all.
        cfg.lease_ms = 0;
        sessions.push(Session::new(cfg)?);
    }
    let first = sessions
        .first()
        .cloned()
        .ok_or_else(|| BenchError::Setup("no clients".into()))?;
    // The cluster may still be electing a leader: retry the share creation.
    let mut created = ensure_share(&first, share).await;
    for _ in 0..5 {
        if created.is_ok() {
            break;
        }
        created = ensure_share(&first, share).await;
    }
    created?;
    for k in 0..opts.keys {
        first
            .write(
                share,
                Key::from_name(&format!("bench-{k}")),
                value(opts.value_bytes, 0, 0),
            )
            .await?;
    }
    let sessions = Arc::new(sessions);
    let mut points = Vec::new();
    let duration = Duration::from_millis(opts.point_ms);
    for &clients in &opts.clients {
        let (s, o) = (Arc::clone(&sessions), opts.clone());
        points.push(
            measure(name, "write", clients, duration, move |c, i| {
                let (s, o) = (Arc::clone(&s), o.clone());
                async move {
                    let Some(session) = s.get(c) else {
                        return false;
                    };
                    let key = Key::from_name(&key_name(&o, c, i));
                    session
                        .write(share, key, value(o.value_bytes, c, i))
                        .await
                        .is_ok()
                }
            })
            .await,
        );
        let (s, o) = (Arc::clone(&sessions), opts.clone());
        points.push(
            measure(name, "read", clients, duration, move |c, i| {
                let (s, o) = (Arc::clone(&s), o.clone());
                async move {
                    let Some(session) = s.get(c) else {
                        return false;
                    };
                    session
                        .read(share, Key::from_name(&key_name(&o, c, i)))
                        .await
                        .is_ok()
                }
            })
            .await,
        );
    }
    Ok(points)
}

// ---- etcd over its HTTP/JSON gateway -------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (j, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if j <= chunk.len() {
                out.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive HTTP/1.1 connection to an etcd gateway.
struct Http {
    endpoint: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    fn new(endpoint: SocketAddr) -> Http {
        Http {
            endpoint,
            stream: None,
            buf: Vec::new(),
        }
    }

    async fn post(&mut self, path: &str, body: &str) -> Result<(u16, Vec<u8>), String> {
        let r = tokio::time::timeout(Duration::from_secs(10), self.post_inner(path, body)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err("timed out".into())
            }
        }
    }

    async fn post_inner(&mut self, path: &str, body: &str) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        let Some(s) = self.stream.as_mut() else {
            return Err("no connection".into());
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.endpoint,
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // Head.
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        };
        let head = String::from_utf8_lossy(self.buf.get(..head_end).unwrap_or(&[])).to_string();
        self.buf.drain(..head_end + 4);
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("bad status line")?;
        let lower = head.to_ascii_lowercase();
        let content_length = lower
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>())
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        let chunked = lower
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        let body = if let Some(len) = content_length {
            self.fill(len).await?;
            self.buf.drain(..len).collect()
        } else if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = self.line().await?;
                let size_line =
                    String::from_utf8_lossy(self.buf.get(..line_end).unwrap_or(&[])).to_string();
                self.buf.drain(..line_end + 2);
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|e| e.to_string())?;
                self.fill(size + 2).await?;
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            return Err("response without length".into());
        };
        Ok((code, body))
    }

    async fn fill(&mut self, len: usize) -> Result<(), String> {
        let Some(s) = self.stream.as_mut() else {
            return Err("no connection".into());
        };
        while self.buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        }
        Ok(())
    }

    async fn line(&mut self) -> Result<usize, String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(p);
            }
            let Some(s) = self.stream.as_mut() else {
                return Err("no connection".into());
            };
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        }
    }
}

async fn etcd_put(http: &mut Http, key: &str, value: &[u8]) -> Result<(), String> {
    let body = format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"}}",
        base64(key.as_bytes()),
        base64(value)
    );
    match http.post("/v3/kv/put", &body).await? {
        (200, _) => Ok(()),
        (code, b) => Err(format!(
            "put answered {code}: {}",
            String::from_utf8_lossy(&b)
        )),
    }
}

async fn etcd_get(http: &mut Http, key: &str) -> Result<(), String> {
    let body = format!("{{\"key\":\"{}\"}}", base64(key.as_bytes()));
    match http.post("/v3/kv/range", &body).await? {
        (200, b) if b.windows(5).any(|w| w == b"\"kvs\"") => Ok(()),
        (200, _) => Err("key missing".into()),
        (code, b) => Err(format!(
            "range answered {code}: {}",
            String::from_utf8_lossy(&b)
        )),
    }
}

/// etcd: the same keys, values and client counts as [`run_teems`].
pub async fn run_etcd(opts: &MetaBenchOptions) -> Result<Vec<BenchPoint>, BenchError> {
    let endpoints = opts.etcd.clone();
    let Some(first_ep) = endpoints.first().copied() else {
        return Ok(Vec::new());
    };
    let mut first = Http::new(first_ep);
    for k in 0..opts.keys {
        etcd_put(
            &mut first,
            &format!("bench-{k}"),
            &value(opts.value_bytes, 0, 0),
        )
        .await
        .map_err(|reason| BenchError::Etcd {
            endpoint: first_ep.to_string(),
            reason,
        })?;
    }
    let max_clients = opts.clients.iter().copied().max().unwrap_or(1);
    let conns: Arc<Vec<tokio::sync::Mutex<Http>>> = Arc::new(
        (0..max_clients)
            .map(|c| {
                tokio::sync::Mutex::new(Http::new(
                    endpoints
                        .get(c % endpoints.len())
                        .copied()
                        .unwrap_or(first_ep),
                ))
            })
            .collect(),
    );
    let mut points = Vec::new();
    let duration = Duration::from_millis(opts.point_ms);
    for &clients in &opts.clients {
        for op in ["write", "read"] {
            let (conns, o) = (Arc::clone(&conns), opts.clone());
            points.push(
                measure("etcd", op, clients, duration, move |c, i| {
                    let (conns, o) = (Arc::clone(&conns), o.clone());
                    async move {
                        let Some(conn) = conns.get(c) else {
                            return false;
                        };
                        let mut http = conn.lock().await;
                        let key = key_name(&o, c, i);
                        if op == "write" {
                            etcd_put(&mut http, &key, &value(o.value_bytes, c, i))
                                .await
                                .is_ok()
                        } else {
                            etcd_get(&mut http, &key).await.is_ok()
                        }
                    }
                })
                .await,
            );
        }
    }
    Ok(points)
}

/// Run everything the options ask for.
pub async fn run(opts: &MetaBenchOptions) -> Result<Vec<BenchPoint>, BenchError> {
    let mut points = Vec::new();
    for mode in &opts.modes {
        points.extend(run_teems(*mode, opts).await?);
    }
    points.extend(run_etcd(opts).await?);
    Ok(points)
}

/// A Markdown table of the points, with throughput ratios to `teems-rr`.
pub fn markdown(points: &[BenchPoint]) -> String {
    let mut out = String::from(
        "| system | op | clients | ops/s | p50 ms | p99 ms | errors | ops/s ÷ teems-rr |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let base = points
            .iter()
            .find(|b| b.system == "teems-rr" && b.op == p.op && b.clients == p.clients)
            .map(|b| b.ops_per_sec);
        let ratio = base
            .filter(|b| *b > 0.0)
            .map_or("-".to_string(), |b| format!("{:.2}", p.ops_per_sec / b));
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
            p.system, p.op, p.clients, p.ops_per_sec, p.p50_ms, p.p99_ms, p.errors, ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_answers() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), 51.0);
        assert_eq!(percentile(&d, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
