//! Loopback admin endpoint: `GET /status` (JSON [`StatusReport`], read by
//! `teemsfs cluster status`) and `GET /metrics` (Prometheus text), served by
//! [`serve_http`], which the mount's metrics endpoint uses too.
//!
//! It binds `127.0.0.1` on a port the kernel picks and writes the address to
//! `<replica dir>/admin.addr` ([`ADMIN_ADDR_FILE`]), so `cluster.toml` needs no
//! extra port and two clusters on one host never collide. It is plain HTTP on
//! purpose: it discloses only what the host can already observe (whether the
//! replica is suspicious, how many keys it holds, counters), never metadata
//! values, and it accepts no commands.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// File in the replica directory holding the admin endpoint's address.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";
/// Largest request head read; anything longer is not ours.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What `GET /status` returns: the core's `NodeStatus` plus process facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub id: u32,
    pub pid: u32,
    /// `"rr"` or `"cft"`.
    pub mode: String,
    pub suspicious: bool,
    pub recovering: bool,
    pub leader: Option<u32>,
    pub is_leader: bool,
    pub executed_slot: u64,
    pub keys: usize,
    pub ops_in_flight: usize,
    /// How the sealed store loaded at start: `empty`, `loaded`,
    /// `loaded-torn-tail` or `corrupt: <file> at byte <offset>: <why>`.
    pub sealed_at_start: String,
    pub uptime_ms: u64,
    pub bad_frames: u64,
    pub recoveries: u64,
}

/// Write the endpoint address next to the replica's other files, atomically
/// (temporary file + rename) so a reader never sees half an address.
pub fn publish_addr(replica_dir: &Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tmp = replica_dir.join(format!("{ADMIN_ADDR_FILE}.tmp"));
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, replica_dir.join(ADMIN_ADDR_FILE))
}

/// Serve until the task is dropped.
pub async fn serve_admin(
    listener: TcpListener,
    status: Arc<Mutex<StatusReport>>,
    metrics: Arc<Metrics>,
    me: u32,
) {
    let handler = move |path: &str| match path {
        "/status" => {
            let report = status.lock().map(|s| s.clone()).unwrap_or_default();
            let body = serde_json::to_string(&report).unwrap_or_else(|_| "{}".to_string());
            Some(("application/json", body))
        }
        "/metrics" => Some((PROMETHEUS_TEXT, metrics.render(me))),
        _ => None,
    };
    serve_http(listener, Arc::new(handler), "try /status or /metrics\n").await;
}

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// What a read-only endpoint answers to `GET path`: content type and body, or `None`
/// for a 404.
pub type Handler = dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync;

/// A minimal read-only HTTP/1.1 server (one request per connection, `GET` only, request
/// heads bounded in size and time), until the task is dropped. The replica's admin
/// endpoint and the mount's metrics endpoint use it.
pub async fn serve_http(listener: TcpListener, handler: Arc<Handler>, not_found: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            if let Err(e) =
                tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &*handler, not_found)).await
            {
                tracing::debug!(error = %e, "admin request timed out");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, handler: &Handler, not_found: &str) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or(&[])),
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let answer = if method == "GET" { handler(path) } else { None };
    let (code, content_type, body) = match answer {
        Some((content_type, body)) => ("200 OK", content_type, body),
        None => ("404 Not Found", "text/plain", not_found.to_string()),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Fetch `path` from an admin endpoint (used by `teemsfs cluster status` and
/// the tests): the body of a 200 answer, or an error naming what failed.
pub async fn fetch(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| "malformed HTTP answer".to_string())?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "admin endpoint answered {}",
                head.lines().next().unwrap_or("")
            ));
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("admin endpoint {addr} timed out"))?
}
