//! A tenant's session with TEEMS (DESIGN §7): mutual TLS to one proxy
//! replica at a time, the TEEMS API with typed errors, a deadline on every
//! operation, retries, and failover to the next replica when the proxy dies.
//!
//! # Guarantees
//!
//! * **Never a hang.** Every operation finishes by its deadline
//!   ([`SessionConfig::deadline_ms`]): with an answer, a typed refusal, or
//!   [`ClientError::Unavailable`] / [`ClientError::NoProxy`].
//! * **Failover.** A connection that fails (refused, reset, closed by a dying
//!   proxy) moves the session to the next replica in its list, and the
//!   operation is sent again there, within the same deadline.
//! * **Retries carry the same idempotency token.** Every attempt of one
//!   logical operation sends the same 16-byte token. The policy state machine
//!   applies a retried `change_policy` once (POL-6). A retried register
//!   `write`/`delete` writes the *same value* again; it is safe in that no
//!   other value can appear, but — like any at-least-once register write — a
//!   retry may land after a concurrent writer's value. Callers needing
//!   exactly-once read-modify-write use the policy path or versions.
//!
//! * **Leases.** With [`SessionConfig::lease_ms`] set, reads ask for a
//!   lease, and so do writes of a value (on what they write); an answer the
//!   proxy leased is reused for reads of the same key until the lease ends
//!   (rules in [`crate::lease`]). Reads stay linearizable: while the lease
//!   lasts no other writer's write of the key can complete, and this
//!   session's own writes forget the key (and keep what they wrote only
//!   under the lease their answer brings).
//!
//! What this does not do: quorums, suspicion, recovery (the proxy's job), or
//! caching of file data (the filesystem's).
//!
//! ```no_run
//! # async fn demo(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<(), metadata_client::session::ClientError> {
//! use metadata_client::session::{ProxyAddr, Session, SessionConfig};
//! use metadata_client::wire::{Key, ShareId};
//! let proxies = vec![ProxyAddr { name: "replica-1".into(), addr: "127.0.0.1:7001".parse().unwrap() }];
//! let session = Session::connect(SessionConfig::new(proxies, ca, cert, key)).await?;
//! let share = ShareId([1; 16]);
//! session.write(share, Key::from_name("a"), b"v".to_vec()).await?;
//! let (value, _version) = session.read(share, Key::from_name("a")).await?;
//! assert_eq!(value, b"v");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::lease::{LeaseCache, Leased};
use crate::transport::{
    DEFAULT_MAX_FRAME_BYTES, FrameCodec, TlsSetupError, server_name, tls_client_config,
};
use crate::wire::{
    ErrorKind, Key, LeaseAsk, PolicyOp, Request, RequestFrame, Response, ResponseFrame, ShareId,
    SharePolicy, Version, decode_response, encode_request,
};

/// Default deadline of one operation, retries and failover included. Longer
/// than a proxy's own operation deadline (5 s by default), so that a proxy's
/// `Unavailable` answer arrives before the client gives up on its own.
pub const DEFAULT_DEADLINE_MS: u64 = 8_000;
/// Default bound on one connection attempt (TCP + TLS handshake).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Requests one connection may have queued for writing.
const REQUEST_QUEUE: usize = 1024;
/// Pause between attempts after a failure, so a dead cluster is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One replica a session may use as its proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAddr {
    /// The TLS server name its certificate carries: `replica-<i>`.
    pub name: String,
    /// Its client address.
    pub addr: SocketAddr,
}

/// How to reach the cluster and as whom.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Replicas to use as proxy, tried in order (starting at `first_proxy`).
    pub proxies: Vec<ProxyAddr>,
    /// The cluster CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// The tenant's certificate and key (PEM); the certificate's common name is
    /// the tenant id.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Deadline of one operation, retries and failover included.
    pub deadline_ms: u64,
    /// Bound on one connection attempt.
    pub connect_timeout_ms: u64,
    pub max_frame_bytes: usize,
    /// Index in `proxies` of the first proxy to try; spreading clients over
    /// replicas spreads the proxy work.
    pub first_proxy: usize,
    /// Lease to ask for on every read, in milliseconds (0: no leases). The
    /// cluster caps it at its own `lease_ms`.
    pub lease_ms: u32,
}

impl SessionConfig {
    /// Defaults: [`DEFAULT_DEADLINE_MS`], [`DEFAULT_CONNECT_TIMEOUT_MS`], the
    /// default frame limit, starting at the first proxy.
    pub fn new(
        proxies: Vec<ProxyAddr>,
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    ) -> SessionConfig {
        SessionConfig {
            proxies,
            ca_pem,
            cert_pem,
            key_pem,
            deadline_ms: DEFAULT_DEADLINE_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            first_proxy: 0,
            lease_ms: 0,
        }
    }
}

/// Why an operation did not succeed. The first four are TEEMS answers
/// (paper Table I); the rest are about reaching the service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("not found")]
    NotFound,
    #[error("denied")]
    Denied,
    #[error("not writer")]
    NotWriter,
    /// No quorum answered within the deadline (reported by a proxy, or the
    /// deadline passed with a proxy connected but silent).
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    /// The proxy refused the request as malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No proxy could be connected to before the deadline.
    #[error("no proxy reachable: {last_error}")]
    NoProxy { last_error: String },
    /// The TLS configuration could not be built, or a proxy failed the TLS
    /// handshake in a way retrying cannot fix (bad certificate).
    #[error("tls: {0}")]
    Tls(String),
    /// The proxy answered something that is not an answer to this request.
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no proxies configured")]
    NoProxies,
}

impl ClientError {
    /// A short stable name for the kind of error (CLI output, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::NotFound => "not found",
            ClientError::Denied => "denied",
            ClientError::NotWriter => "not writer",
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::BadRequest(_) => "bad request",
            ClientError::NoProxy { .. } => "unavailable",
            ClientError::Tls(_) => "tls",
            ClientError::Protocol(_) => "protocol",
            ClientError::NoProxies => "config",
        }
    }
}

impl From<TlsSetupError> for ClientError {
    fn from(e: TlsSetupError) -> ClientError {
        ClientError::Tls(e.to_string())
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ResponseFrame>>>>;

/// One live connection to one proxy: a writer task fed by `requests`, a
/// reader task that routes replies to their waiters by `request_id`.
struct Conn {
    proxy: usize,
    requests: mpsc::Sender<Bytes>,
    pending: Pending,
    dead: Arc<AtomicBool>,
}

fn kill(dead: &AtomicBool, pending: &Pending) {
    dead.store(true, Ordering::SeqCst);
    // Dropping the senders wakes every waiter with "connection lost".
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        kill(&self.dead, &self.pending);
    }
}

enum Attempt {
    Answer(ResponseFrame),
    Lost(String),
    DeadlinePassed,
}

impl Conn {
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst) || self.requests.is_closed()
    }

    async fn request(&self, frame: &RequestFrame, deadline: Instant) -> Attempt {
        let (tx, rx) = oneshot::channel();
        match self.pending.lock() {
            Ok(mut p) => {
                p.insert(frame.request_id, tx);
            }
            Err(_) => return Attempt::Lost("connection state poisoned".into()),
        }
        if self.is_dead() {
            return Attempt::Lost("connection closed".into());
        }
        let bytes = Bytes::from(encode_request(frame));
        if self.requests.send(bytes).await.is_err() {
            return Attempt::Lost("connection closed".into());
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => Attempt::Answer(answer),
            Ok(Err(_)) => Attempt::Lost("connection lost while waiting for the answer".into()),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&frame.request_id);
                }
                Attempt::DeadlinePassed
            }
        }
    }
}

struct Inner {
    cfg: SessionConfig,
    connector: TlsConnector,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    current: AtomicUsize,
    next_request: AtomicU64,
    /// This session's lease holder id (random, never 0).
    holder: u64,
    leases: Mutex<LeaseCache>,
}

/// A tenant session. Cheap to clone; clones share the connection, and many
/// operations may run concurrently over it.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("proxies", &self.inner.cfg.proxies)
            .field("current", &self.inner.current.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn random_token() -> [u8; 16] {
    // Uniqueness per operation is what matters (POL-6 keys applied changes by
    // tenant and token); a 128-bit value from the OS RNG is unique in practice.
    // If the RNG fails, fall back to time and a counter: still unique within
    // this process, which is the retry window that matters.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut token = [0u8; 16];
    if getrandom_fill(&mut token) {
        return token;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    token[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
    token[8..].copy_from_slice(&(n ^ u64::from(std::process::id()) << 32).to_be_bytes());
    token
}

fn getrandom_fill(out: &mut [u8]) -> bool {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .is_ok()
}

impl Session {
    /// Build a session without connecting (the first operation connects).
    pub fn new(cfg: SessionConfig) -> Result<Session, ClientError> {
        if cfg.proxies.is_empty() {
            return Err(ClientError::NoProxies);
        }
        let tls = tls_client_config(&cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem)?;
        let start = cfg.first_proxy % cfg.proxies.len();
        Ok(Session {
            inner: Arc::new(Inner {
                connector: TlsConnector::from(tls),
                conn: tokio::sync::Mutex::new(None),
                current: AtomicUsize::new(start),
                next_request: AtomicU64::new(1),
                holder: u64::from_le_bytes(random_token()[..8].try_into().unwrap_or([1; 8])) | 1,
                leases: Mutex::new(LeaseCache::default()),
                cfg,
            }),
        })
    }

    /// Build a session and connect to a proxy (failing over through the list)
    /// within the configured deadline.
    pub async fn connect(cfg: SessionConfig) -> Result<Session, ClientError> {
        let session = Session::new(cfg)?;
        let deadline = Instant::now() + Duration::from_millis(session.inner.cfg.deadline_ms);
        let mut last_error = String::from("no attempt made");
        while Instant::now() < deadline {
            match session.connection(deadline).await {
                Ok(_) => return Ok(session),
                Err(ConnectFailure::Fatal(e)) => return Err(e),
                Err(ConnectFailure::Retry(e)) => {
                    last_error = e;
                    tokio::time::sleep_until((Instant::now() + RETRY_PAUSE).min(deadline)).await;
                }
            }
        }
        Err(ClientError::NoProxy { last_error })
    }

    /// The proxy currently in use (its name), for logs and tests.
    pub fn current_proxy(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.cfg.proxies.len();
        self.inner
            .cfg
            .proxies
            .get(i)
            .map_or("", |p| p.name.as_str())
    }

    /// `read(id)`: the value and its version, or `NotFound` (also after a delete).
    ///
    /// With leases on, an answer leased earlier is returned while its lease
    /// lasts (see [`crate::lease`]).
    pub async fn read(&self, share: ShareId, key: Key) -> Result<(Vec<u8>, Version), ClientError> {
        let ms = self.inner.cfg.lease_ms;
        if ms == 0 {
            return match into_result(
                self.call(Request::Read { share, key }, LeaseAsk::NONE)
                    .await?
                    .0,
            )? {
                Response::Value { value, version } => Ok((value, version)),
                other => Err(unexpected(&other)),
            };
        }
        let now = std::time::Instant::now();
        let ticket = {
            let mut cache = self.leases();
            match cache.get(now, share, &key) {
                Some(Leased::Value(value, version)) => return Ok((value, version)),
                Some(Leased::NotFound) => return Err(ClientError::NotFound),
                None => (cache.read_started(&key, now), cache.may_lease(&key)),
            }
        };
        let (ticket, may_lease) = ticket;
        let ask = if may_lease {
            LeaseAsk {
                holder: self.inner.holder,
                ms,
            }
        } else {
            LeaseAsk::NONE
        };
        let (response, lease_ms) = self.call(Request::Read { share, key }, ask).await?;
        let answer = match &response {
            Response::Value { value, version } => Some(Leased::Value(value.clone(), *version)),
            Response::Error(ErrorKind::NotFound) => Some(Leased::NotFound),
            _ => None,
        };
        if let Some(answer) = answer {
            self.leases()
                .read_done(ticket, share, key, answer, lease_ms);
        }
        match into_result(response)? {
            Response::Value { value, version } => Ok((value, version)),
            other => Err(unexpected(&other)),
        }
    }

    /// Until when this session's lease keeps the answer `version` of `key`
    /// (see [`LeaseCache::valid_until`]); `None` without such a lease.
    pub fn leased_until(
        &self,
        share: ShareId,
        key: Key,
        version: Version,
    ) -> Option<std::time::Instant> {
        self.leases()
            .valid_until(std::time::Instant::now(), share, &key, version)
    }

    /// Whether reads ask for leases and keep answers under them.
    pub fn leases_reads(&self) -> bool {
        self.inner.cfg.lease_ms > 0
    }

    /// Reads answered from leases so far (for metrics and tests).
    pub fn lease_hits(&self) -> u64 {
        self.leases().hits()
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, LeaseCache> {
        // The cache holds no invariant a panicking holder could break
        // half-way (each method is one small update), so a poisoned lock is
        // taken over.
        self.inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A write or delete of `key` by this session: the lease cache forgets
    /// the key when it starts and when it ends (LEASE-C2). A write of a value
    /// asks for a lease on what it writes (LEASE-W1), and keeps it if the
    /// proxy reports one (LEASE-C4). `written` is the value, for a write.
    async fn call_write(
        &self,
        share: ShareId,
        key: Key,
        request: Request,
        written: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        /// Ends the write in the lease cache however the call ends, even if
        /// its future is dropped half-way.
        struct Writing<'a>(&'a Session, Key, bool);
        impl Drop for Writing<'_> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.leases().write_ended(self.1);
                }
            }
        }
        let ticket = self.leases().write_started(key, std::time::Instant::now());
        let mut writing = Writing(self, key, true);
        let ms = match &written {
            Some(_) if ticket.may_lease() => self.inner.cfg.lease_ms,
            _ => 0,
        };
        let ask = LeaseAsk {
            holder: self.inner.holder,
            ms,
        };
        let (response, lease_ms) = self.call(request, ask).await?;
        if let (Response::Written { version }, Some(value)) = (&response, written) {
            writing.2 = false;
            self.leases()
                .write_done(ticket, share, key, Leased::Value(value, *version), lease_ms);
        }
        drop(writing);
        into_result(response)
    }

    /// `write(id, value)`: the new version.
    pub async fn write(
        &self,
        share: ShareId,
        key: Key,
        value: Vec<u8>,
    ) -> Result<Version, ClientError> {
        let keep = (self.inner.cfg.lease_ms > 0).then(|| value.clone());
        match self
            .call_write(share, key, Request::Write { share, key, value }, keep)
            .await?
        {
            Response::Written { version } => Ok(version),
            other => Err(unexpected(&other)),
        }
    }

    /// `delete(id)`: writes a tombstone; returns its version.
    pub async fn delete(&self, share: ShareId, key: Key) -> Result<Version, ClientError> {
        match self
            .call_write(share, key, Request::Delete { share, key }, None)
            .await?
        {
            Response::Deleted { version } => Ok(version),
            other => Err(unexpected(&other)),
        }
    }

    /// `change_policy(share, op)`, ordered through RR-Paxos; the new epoch.
    pub async fn change_policy(&self, share: ShareId, op: PolicyOp) -> Result<u64, ClientError> {
        match into_result(
            self.call(Request::ChangePolicy { share, op }, LeaseAsk::NONE)
                .await?
                .0,
        )? {
            Response::PolicyChanged { epoch } => Ok(epoch),
            other => Err(unexpected(&other)),
        }
    }

    /// The share's policy as the state machine holds it.
    pub async fn read_policy(&self, share: ShareId) -> Result<SharePolicy, ClientError> {
        match into_result(
            self.call(Request::ReadPolicy { share }, LeaseAsk::NONE)
                .await?
                .0,
        )? {
            Response::Policy { policy } => Ok(policy),
            other => Err(unexpected(&other)),
        }
    }

    /// One logical operation: same idempotency token on every attempt,
    /// failover on connection loss, all within one deadline. The proxy's
    /// answer comes back as it is (errors included) with the lease it granted.
    async fn call(
        &self,
        request: Request,
        lease: LeaseAsk,
    ) -> Result<(Response, u32), ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.deadline_ms);
        let idempotency = random_token();
        let mut last_connect_error: Option<String> = None;
        let mut last_unavailable: Option<String> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(match (last_unavailable, last_connect_error) {
                    (Some(reason), _) => ClientError::Unavailable { reason },
                    (None, Some(last_error)) => ClientError::NoProxy { last_error },
                    (None, None) => ClientError::Unavailable {
                        reason: "deadline passed".into(),
                    },
                });
            }
            let conn = match self.connection(deadline).await {
                Ok(conn) => conn,
                Err(ConnectFailure::Fatal(e)) => return Err(e),
                Err(ConnectFailure::Retry(e)) => {
                    last_connect_error = Some(e);
                    tokio::time::sleep_until((Instant::now() + RETRY_PAUSE).min(deadline)).await;
                    continue;
                }
            };
            let request_id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
            let frame = RequestFrame {
                request_id,
                idempotency,
                request: request.clone(),
                lease,
            };
            match conn.request(&frame, deadline).await {
                Attempt::Answer(answer) if answer.request_id != request_id => {
                    return Err(ClientError::Protocol(format!(
                        "answer to request {} arrived for request {request_id}",
                        answer.request_id
                    )));
                }
                Attempt::Answer(ResponseFrame {
                    response: Response::Error(ErrorKind::Unavailable),
                    ..
                }) => {
                    // That proxy could not gather a quorum in its own
                    // deadline; another proxy might (it may be partitioned).
                    last_unavailable = Some(format!(
                        "proxy {} found no quorum in time",
                        self.proxy_name(conn.proxy)
                    ));
                    self.abandon(&conn).await;
                    tokio::time::sleep_until((Instant::now() + RETRY_PAUSE).min(deadline)).await;
                }
                Attempt::Answer(answer) => return Ok((answer.response, answer.lease_ms)),
                Attempt::Lost(reason) => {
                    last_connect_error = Some(format!("{}: {reason}", self.proxy_name(conn.proxy)));
                    self.abandon(&conn).await;
                }
                Attempt::DeadlinePassed => {
                    // A proxy that answers nothing — not even its own
                    // `Unavailable` — is stuck: the next operation starts
                    // at another one.
                    self.abandon(&conn).await;
                    return Err(ClientError::Unavailable {
                        reason: format!(
                            "no answer within {} ms (proxy {})",
                            self.inner.cfg.deadline_ms,
                            self.proxy_name(conn.proxy)
                        ),
                    });
                }
            }
        }
    }

    fn proxy_name(&self, i: usize) -> &str {
        self.inner
            .cfg
            .proxies
            .get(i)
            .map_or("?", |p| p.name.as_str())
    }

    /// Drop `conn` (if it is still the current one) and move to the next proxy.
    async fn abandon(&self, conn: &Arc<Conn>) {
        let mut slot = self.inner.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
            let n = self.inner.cfg.proxies.len();
            self.inner
                .current
                .store((conn.proxy + 1) % n, Ordering::Relaxed);
        }
    }

    /// The live connection, or a new one to the current proxy. A failed
    /// attempt moves `current` to the next proxy for the following one.
    async fn connection(&self, deadline: Instant) -> Result<Arc<Conn>, ConnectFailure> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_dead()) {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        let n = self.inner.cfg.proxies.len();
        let i = self.inner.current.load(Ordering::Relaxed) % n;
        let Some(proxy) = self.inner.cfg.proxies.get(i).cloned() else {
            return Err(ConnectFailure::Fatal(ClientError::NoProxies));
        };
        let limit = (Instant::now() + Duration::from_millis(self.inner.cfg.connect_timeout_ms))
            .min(deadline);
        match tokio::time::timeout_at(limit, self.open(i, &proxy)).await {
            Ok(Ok(conn)) => {
                let conn = Arc::new(conn);
                *slot = Some(Arc::clone(&conn));
                Ok(conn)
            }
            Ok(Err(failure)) => {
                self.inner.current.store((i + 1) % n, Ordering::Relaxed);
                Err(failure)
            }
            Err(_) => {
                self.inner.current.store((i + 1) % n, Ordering::Relaxed);
                Err(ConnectFailure::Retry(format!(
                    "{} ({}): connect timed out",
                    proxy.name, proxy.addr
                )))
            }
        }
    }

    async fn open(&self, index: usize, proxy: &ProxyAddr) -> Result<Conn, ConnectFailure> {
        let what = |e: &dyn std::fmt::Display| format!("{} ({}): {e}", proxy.name, proxy.addr);
        let tcp = TcpStream::connect(proxy.addr)
            .await
            .map_err(|e| ConnectFailure::Retry(what(&e)))?;
        let _ = tcp.set_nodelay(true);
        let name = server_name(&proxy.name).map_err(|e| ConnectFailure::Fatal(e.into()))?;
        let tls = self.inner.connector.connect(name, tcp).await.map_err(|e| {
            // InvalidData is rustls refusing the peer's certificate (or ours
            // being refused): retrying the same proxy cannot fix that, but
            // another replica might present a valid one, so only a
            // certificate *we* cannot use is fatal (caught at set-up).
            ConnectFailure::Retry(what(&e))
        })?;
        let (read_half, write_half) = tokio::io::split(tls);
        let max = self.inner.cfg.max_frame_bytes;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel::<Bytes>(REQUEST_QUEUE);

        let (w_dead, w_pending) = (Arc::clone(&dead), Arc::clone(&pending));
        tokio::spawn(async move {
            let mut out = FramedWrite::new(write_half, FrameCodec::new(max));
            while let Some(first) = rx.recv().await {
                let mut ok = out.feed(first).await.is_ok();
                while ok {
                    match rx.try_recv() {
                        Ok(next) => ok = out.feed(next).await.is_ok(),
                        Err(_) => break,
                    }
                }
                if !ok || SinkExt::<Bytes>::flush(&mut out).await.is_err() {
                    break;
                }
            }
            kill(&w_dead, &w_pending);
        });
        let (r_dead, r_pending) = (Arc::clone(&dead), Arc::clone(&pending));
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read_half, FrameCodec::new(max));
            while let Some(Ok(payload)) = frames.next().await {
                if r_dead.load(Ordering::SeqCst) {
                    break;
                }
                // A proxy that sends bytes we cannot decode is broken or not
                // ours: drop the connection; the operation fails over.
                let Ok(answer) = decode_response(&payload) else {
                    break;
                };
                let waiter = r_pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&answer.request_id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
            kill(&r_dead, &r_pending);
        });
        Ok(Conn {
            proxy: index,
            requests: tx,
            pending,
            dead,
        })
    }
}

enum ConnectFailure {
    /// Try again (another proxy, or the same one later).
    Retry(String),
    /// Retrying cannot help.
    Fatal(ClientError),
}

fn into_result(response: Response) -> Result<Response, ClientError> {
    match response {
        Response::Error(ErrorKind::NotFound) => Err(ClientError::NotFound),
        Response::Error(ErrorKind::Denied) => Err(ClientError::Denied),
        Response::Error(ErrorKind::NotWriter) => Err(ClientError::NotWriter),
        Response::Error(ErrorKind::Unavailable) => Err(ClientError::Unavailable {
            reason: "reported by the proxy".into(),
        }),
        Response::Error(ErrorKind::BadRequest(why)) => Err(ClientError::BadRequest(why)),
        ok => Ok(ok),
    }
}

fn unexpected(response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_errors_name_their_kind() {
        assert_ne!(random_token(), random_token());
        assert_eq!(ClientError::NotFound.to_string(), "not found");
        assert_eq!(
            ClientError::Unavailable { reason: "x".into() }.kind(),
            "unavailable"
        );
        assert_eq!(
            ClientError::NoProxy {
                last_error: "x".into()
            }
            .kind(),
            "unavailable"
        );
        assert!(matches!(
            into_result(Response::Error(ErrorKind::Denied)),
            Err(ClientError::Denied)
        ));
    }

    #[test]
    fn garbage_pem_is_a_setup_error() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let ca = b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec();
        let cfg = SessionConfig::new(
            vec![ProxyAddr {
                name: "replica-1".into(),
                addr,
            }],
            ca,
            vec![],
            vec![],
        );
        // Garbage PEM is a set-up error, not a hang.
        assert!(matches!(Session::new(cfg), Err(ClientError::Tls(_))));
    }
}
