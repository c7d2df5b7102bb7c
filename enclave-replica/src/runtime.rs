//! The replica process's event loop (DESIGN §2, §4): it owns one protocol
//! [`Node`], feeds it network events and timer expiries, and carries out the
//! commands it returns.
//!
//! # Ordering and group commit
//!
//! The core's contract is that a batch's commands run in order and every
//! `Persist` is durable before any later command, with one exception it states
//! itself: a register request (`Query`, `Write`) depends on no record of its
//! sender (PERSIST-1 in docs/PROTOCOLS.md). The loop handles every event that
//! is ready (up to [`MAX_EVENTS_PER_BATCH`]) into one batch. It sends the
//! batch's register requests at once, appends *all* the batch's records to the
//! sealed log with one fsync, and only then performs the other sends, replies
//! and timer settings, in order. Delaying a send past a later persist is always
//! allowed, and one fsync per batch instead of per event is what keeps a loaded
//! replica from being bound by disk latency. Nothing else leaves the process —
//! no reply to a peer, no tenant reply — before the records it depends on are
//! sealed and synced.
//!
//! Sending the requests first matters for writes. A proxy's write round is its
//! `Write` to every peer, then its own copy's record. Sent behind the batch's sync,
//! the round reached the peers only after the proxy's fsync, and two writes
//! finishing their query rounds in one batch reached them apart. Sent first, both
//! rounds leave together: the peers sync both with one fsync each, and the
//! proxy's fsync overlaps theirs.
//!
//! One kind of record does not force a sync: a stable bit (ABD-S1, see
//! [`Record::needs_sync`]). A batch holding only those appends nothing; the records
//! wait in memory and go to the log in front of the next batch that syncs (in their
//! order, so the log is still the history of changes), or at shutdown. Without
//! this, every register write cost each replica a second fsync, right after the
//! write's own, which the next operation queued behind.
//!
//! A persist that fails (disk full, I/O error) stops the replica: it may not
//! acknowledge what it could not make durable, and a restart is a rollback the
//! protocol tolerates.
//!
//! # Start
//!
//! The sealed store is loaded as found. A stale store loads as stale (the
//! core marks itself suspicious and recovers, REC-0); a corrupt one — bytes
//! that do not unseal or do not decode — is logged with its file and byte
//! offset, quarantined by the store, and the replica starts empty and
//! suspicious, recovering everything from its peers.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use metadata_client::transport::{ClientAuth, TlsSetupError, tls_client_config, tls_server_config};
use metadata_client::wire::ResponseFrame;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::core::{
    ClientId, Command, DurableState, Millis, Mode, Node, PeerMessage, Record, ReplicaId, Timer,
};
use crate::enclave::MeasurementPolicy;
use crate::enclave::attestation::{
    Attestation, AttestationError, SoftwareAttestation, measure_current_exe,
};
use crate::enclave::sealed_log::{Recovered, SealedLog, SealedStoreError};
use crate::enclave::sealer::{SealerSetupError, SoftwareSealer};
use crate::metrics::{Metrics, op_kind_index, outcome_index};
use crate::net::Event;
use crate::net::admin::{StatusReport, publish_addr, serve_admin};
use crate::net::client::{ClientContext, serve_clients};
use crate::net::peer::{AcceptContext, DialContext, PeerLinks, serve_peers, spawn_dialers};
use crate::provision::{ClusterFile, ClusterFileError};

/// Events handled before their records are synced together. Bounds the
/// latency one batch adds to the first event in it.
pub const MAX_EVENTS_PER_BATCH: usize = 256;
/// Records that need no sync held back at most; beyond that they are synced on their
/// own, so memory stays bounded on a replica that only ever sees stable bits.
const MAX_DEFERRED_RECORDS: usize = 4096;
/// Events the network may queue ahead of the loop; beyond that, readers wait
/// (back-pressure on the TLS connections instead of unbounded memory).
const EVENT_QUEUE: usize = 8192;

/// What to run: which replica of which cluster.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Path of `cluster.toml`.
    pub cluster_file: PathBuf,
    pub id: ReplicaId,
}

/// The replica could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ClusterFileError),
    #[error("replica {0} is not in the cluster file")]
    UnknownReplica(ReplicaId),
    #[error("cannot read {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS set-up: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("attestation: {0}")]
    Attestation(#[from] AttestationError),
    #[error("cannot measure the running binary: {0}")]
    Measure(std::io::Error),
    #[error("sealing key: {0}")]
    Sealer(#[from] SealerSetupError),
    #[error("sealed store: {0}")]
    Store(#[from] SealedStoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
}

/// How the sealed store loaded; shown by `cluster status`.
fn load_state(
    log: &mut SealedLog,
    recovered: Recovered,
    metrics: &Metrics,
) -> Result<(DurableState, String), SealedStoreError> {
    let corrupt = |what: String| {
        metrics.sealed_corruptions.fetch_add(1, Ordering::Relaxed);
        tracing::error!(corruption = %what, "sealed state unusable; starting empty and suspicious, recovering from peers");
        format!("corrupt: {what}")
    };
    match recovered {
        Recovered::Empty => Ok((DurableState::default(), "empty".to_string())),
        Recovered::Corrupt(c) => Ok((DurableState::default(), corrupt(c.to_string()))),
        Recovered::State {
            snapshot,
            records,
            torn_tail,
        } => {
            let mut state = match snapshot {
                None => DurableState::default(),
                Some(bytes) => match DurableState::decode(&bytes) {
                    Ok(s) => s,
                    Err(e) => {
                        let file = log.dir().join("snapshot.sealed");
                        let c = log.discard_undecodable(&file, 0, &e.to_string())?;
                        return Ok((DurableState::default(), corrupt(c.to_string())));
                    }
                },
            };
            let loaded = records.len();
            for r in records {
                match Record::decode(&r.bytes) {
                    Ok(record) => {
                        state.apply(&record);
                    }
                    Err(e) => {
                        let c = log.discard_undecodable(
                            &r.file,
                            r.position.offset_bytes,
                            &e.to_string(),
                        )?;
                        return Ok((DurableState::default(), corrupt(c.to_string())));
                    }
                }
            }
            let how = match torn_tail {
                None => "loaded".to_string(),
                Some((file, at)) => {
                    tracing::warn!(file = %file.display(), offset_bytes = at, "torn last record cut off (never acknowledged)");
                    "loaded-torn-tail".to_string()
                }
            };
            tracing::info!(
                records = loaded,
                keys = state.registers.len(),
                executed = state.executed,
                "sealed state loaded"
            );
            Ok((state, how))
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|source| RuntimeError::Credentials {
        path: path.to_path_buf(),
        source,
    })
}

fn random_seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // A failing system RNG leaves the seed time-based; the seed only spreads
    // election timeouts and proxy incarnations, it protects no secret.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return nanos as u64 ^ u64::from(std::process::id());
    }
    u64::from_be_bytes(b)
}

/// Run replica `opts.id` until `shutdown` completes (or a fatal error).
pub async fn run(
    opts: RuntimeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let file = ClusterFile::load(&opts.cluster_file)?;
    let me = opts.id;
    let entry = file
        .replica(me)
        .cloned()
        .ok_or(RuntimeError::UnknownReplica(me))?;
    let paths = file
        .replica_paths(me)
        .ok_or(RuntimeError::UnknownReplica(me))?;
    // ClusterFile::load validated (M_R, F) and timing already.
    let config = file.cluster_config().map_err(|e| {
        RuntimeError::Config(ClusterFileError::Invalid {
            path: opts.cluster_file.clone(),
            field: "m_r/f".into(),
            reason: e.to_string(),
        })
    })?;
    let metrics = Arc::new(Metrics::default());

    // The emulated enclave: attestation identity, then the sealing key.
    let ca_pem = read(&file.ca_cert_path())?;
    let cert_pem = read(&paths.cert)?;
    let key_pem = read(&paths.key)?;
    let attestation = SoftwareAttestation::new(file.expected_measurement, &cert_pem)?;
    if matches!(file.expected_measurement, MeasurementPolicy::Exact(_)) {
        attestation.check_running_binary(measure_current_exe().map_err(RuntimeError::Measure)?)?;
    }
    let attestation: Arc<dyn Attestation> = Arc::new(attestation);
    let sealer = Arc::new(SoftwareSealer::from_secret_file(&paths.sealing_secret, me)?);
    let (mut log, recovered) = SealedLog::open(&paths.sealed_dir, sealer)?;
    let (state, sealed_at_start) = load_state(&mut log, recovered, &metrics)?;

    // Listeners first: a port conflict should fail the start, not a peer later.
    let server_tls = tls_server_config(&ca_pem, &cert_pem, &key_pem, ClientAuth::Required)?;
    let client_tls = tls_client_config(&ca_pem, &cert_pem, &key_pem)?;
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::Bind { addr, source })
    };
    let peer_listener = bind(entry.peer_addr).await?;
    let client_listener = bind(entry.client_addr).await?;
    let admin_listener = bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let admin_addr = admin_listener.local_addr().map_err(RuntimeError::Admin)?;
    publish_addr(&paths.dir, admin_addr).map_err(RuntimeError::Admin)?;

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);
    let peers: Vec<(ReplicaId, std::net::SocketAddr)> = file
        .replicas
        .iter()
        .filter(|r| r.id != me)
        .map(|r| (r.id, r.peer_addr))
        .collect();
    let links = spawn_dialers(
        &peers,
        DialContext {
            connector: tokio_rustls::TlsConnector::from(client_tls),
            attestation: Arc::clone(&attestation),
            max_frame_bytes: file.max_frame_bytes,
            metrics: Arc::clone(&metrics),
        },
    );
    let peer_task = tokio::spawn(serve_peers(
        peer_listener,
        AcceptContext {
            acceptor: acceptor.clone(),
            attestation: Arc::clone(&attestation),
            me,
            replicas: config.replicas.clone(),
            events: events_tx.clone(),
            max_frame_bytes: file.max_frame_bytes,
            metrics: Arc::clone(&metrics),
        },
    ));
    let client_task = tokio::spawn(serve_clients(
        client_listener,
        ClientContext {
            acceptor,
            events: events_tx.clone(),
            max_frame_bytes: file.max_frame_bytes,
            metrics: Arc::clone(&metrics),
            next_client: Arc::new(AtomicU64::new(1)),
        },
    ));
    let status = Arc::new(Mutex::new(StatusReport {
        id: me,
        pid: std::process::id(),
        mode: match config.mode {
            Mode::Rr => "rr".into(),
            Mode::Cft => "cft".into(),
        },
        sealed_at_start,
        ..StatusReport::default()
    }));
    let admin_task = tokio::spawn(serve_admin(
        admin_listener,
        Arc::clone(&status),
        Arc::clone(&metrics),
        me,
    ));
    tracing::info!(
        replica = me,
        peer_addr = %entry.peer_addr,
        client_addr = %entry.client_addr,
        %admin_addr,
        mode = ?config.mode,
        "replica listening"
    );

    let started = Instant::now();
    let (node, commands) = Node::start(config, me, state, 0, random_seed());
    let mut el = EventLoop {
        node,
        log,
        links,
        clients: HashMap::new(),
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        started,
        metrics,
        status,
        snapshot_every_records: file.snapshot_every_records,
        deferred: Vec::new(),
        pending_ops: HashMap::new(),
        was_suspicious: false,
        was_recovering: false,
    };
    el.was_suspicious = el.node.status().suspicious;
    let result = el.run(commands, events_rx, events_tx, shutdown).await;
    peer_task.abort();
    client_task.abort();
    admin_task.abort();
    let _ = std::fs::remove_file(paths.dir.join(crate::net::admin::ADMIN_ADDR_FILE));
    result
}

enum Next {
    Stop,
    Event(Event),
    Timer(Timer),
}

struct EventLoop {
    node: Node,
    log: SealedLog,
    links: PeerLinks,
    clients: HashMap<ClientId, mpsc::Sender<ResponseFrame>>,
    timers: DelayQueue<Timer>,
    /// Invariant: holds exactly the timers queued in `timers` and not yet
    /// taken out, so `reset` is only ever called on a live key.
    timer_keys: HashMap<Timer, delay_queue::Key>,
    started: Instant,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<StatusReport>>,
    snapshot_every_records: u64,
    /// Encoded records applied to the node but not yet in the log, all of them ones
    /// that need no sync ([`Record::needs_sync`]), oldest first.
    deferred: Vec<Vec<u8>>,
    /// `(client, request_id)` → when the request arrived and its kind, for
    /// the quorum-wait histogram and the per-operation counters.
    pending_ops: HashMap<(ClientId, u64), (Instant, usize)>,
    was_suspicious: bool,
    was_recovering: bool,
}

/// Whether `command` leaves before the batch's records are synced: a register request
/// ([`PeerMessage::may_precede_sync`], PERSIST-1). Everything else keeps the core's
/// order behind the sync.
fn goes_before_sync(command: &Command) -> bool {
    matches!(command, Command::Send { msg, .. } if msg.may_precede_sync())
}

/// Run blocking disk work without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn carries_suspicion(msg: &PeerMessage) -> bool {
    matches!(
        msg,
        PeerMessage::QueryReply {
            suspicious: true,
            ..
        } | PeerMessage::WriteReply {
            suspicious: true,
            ..
        } | PeerMessage::Promise {
            suspicious: true,
            ..
        } | PeerMessage::Accepted {
            suspicious: true,
            ..
        } | PeerMessage::DigestReply {
            suspicious: true,
            ..
        }
    )
}

impl EventLoop {
    fn now(&self) -> Millis {
        Millis::try_from(self.started.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    async fn run(
        &mut self,
        initial: Vec<Command>,
        mut events: mpsc::Receiver<Event>,
        // Held so the channel never reports "closed" while listeners restart.
        _events_tx: mpsc::Sender<Event>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        self.execute(initial)?;
        tokio::pin!(shutdown);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut shutdown => Next::Stop,
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => Next::Timer(expired.into_inner()),
                ev = events.recv() => match ev {
                    Some(ev) => Next::Event(ev),
                    None => Next::Stop,
                },
            };
            let mut batch = Vec::new();
            match next {
                Next::Stop => break,
                Next::Timer(timer) => {
                    self.timer_keys.remove(&timer);
                    let now = self.now();
                    batch.extend(self.node.on_timeout(now, timer));
                }
                Next::Event(ev) => self.handle(ev, &mut batch),
            }
            for _ in 1..MAX_EVENTS_PER_BATCH {
                match events.try_recv() {
                    Ok(ev) => self.handle(ev, &mut batch),
                    Err(_) => break,
                }
            }
            self.execute(batch)?;
        }
        tracing::info!("replica shutting down");
        self.sync_records(Vec::new())
    }

    fn handle(&mut self, ev: Event, batch: &mut Vec<Command>) {
        let now = self.now();
        match ev {
            Event::Peer { from, msg } => {
                if carries_suspicion(&msg) {
                    self.metrics
                        .suspicious_replies
                        .fetch_add(1, Ordering::Relaxed);
                }
                batch.extend(self.node.on_message(now, from, msg));
            }
            Event::ClientOpen {
                client,
                tenant: _,
                replies,
            } => {
                self.clients.insert(client, replies);
            }
            Event::ClientRequest {
                client,
                tenant,
                frame,
            } => {
                if !self.clients.contains_key(&client) {
                    return; // closed meanwhile (reply queue overflowed)
                }
                self.pending_ops.insert(
                    (client, frame.request_id),
                    (Instant::now(), op_kind_index(&frame.request)),
                );
                batch.extend(self.node.on_client_request(now, client, tenant, frame));
            }
            Event::ClientClosed { client } => self.drop_client(client),
        }
    }

    fn drop_client(&mut self, client: ClientId) {
        if self.clients.remove(&client).is_some() {
            self.node.on_client_disconnect(client);
            self.pending_ops.retain(|(c, _), _| *c != client);
        }
    }

    /// Carry out one batch: its register requests at once, then every record with one
    /// sync, then the rest in order.
    fn execute(&mut self, batch: Vec<Command>) -> Result<(), RuntimeError> {
        let (requests, rest): (Vec<Command>, Vec<Command>) =
            batch.into_iter().partition(goes_before_sync);
        for command in requests {
            self.perform(command);
        }
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut must_sync = false;
        for command in &rest {
            if let Command::Persist(rs) = command {
                for r in rs {
                    must_sync |= r.needs_sync();
                    records.push(r.encode());
                }
            }
        }
        if must_sync || self.deferred.len() + records.len() > MAX_DEFERRED_RECORDS {
            self.sync_records(records)?;
        } else {
            self.deferred.extend(records);
        }
        for command in rest {
            self.perform(command);
        }
        self.publish_status();
        Ok(())
    }

    /// A send, reply or timer; a `Persist` is carried out with its batch.
    fn perform(&mut self, command: Command) {
        match command {
            Command::Persist(_) => {}
            Command::Send { to, msg } => self.links.send(to, &msg),
            Command::Reply { client, frame } => self.reply(client, frame),
            Command::SetTimer { timer, after_ms } => self.set_timer(timer, after_ms),
        }
    }

    /// Append the deferred records and then `records` to the sealed log with one
    /// sync; snapshot when due.
    fn sync_records(&mut self, records: Vec<Vec<u8>>) -> Result<(), RuntimeError> {
        let mut all = std::mem::take(&mut self.deferred);
        all.extend(records);
        if all.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let log = &mut self.log;
        if let Err(e) = blocking(|| log.append_batch(&refs)) {
            tracing::error!(error = %e, "cannot persist; stopping rather than acknowledge unsynced state");
            return Err(e.into());
        }
        self.metrics.persist_latency.observe(started.elapsed());
        self.metrics
            .persisted_records
            .fetch_add(all.len() as u64, Ordering::Relaxed);
        if self.log.records_since_snapshot() >= self.snapshot_every_records {
            // Nothing is deferred now, so the node's durable state reflects
            // exactly the records synced (every applied record is in a Persist
            // of this batch or an earlier one): a valid snapshot point.
            let state = self.node.durable().encode();
            let log = &mut self.log;
            blocking(|| log.snapshot(&state))?;
            self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(bytes = state.len(), "sealed snapshot written");
        }
        Ok(())
    }

    fn reply(&mut self, client: ClientId, frame: ResponseFrame) {
        if let Some((at, kind)) = self.pending_ops.remove(&(client, frame.request_id)) {
            self.metrics.quorum_wait.observe(at.elapsed());
            self.metrics.count_op(kind, outcome_index(&frame.response));
        }
        let Some(queue) = self.clients.get(&client) else {
            return;
        };
        if queue.try_send(frame).is_err() {
            // Full: the tenant stopped reading; closed: it is gone. Either way
            // forget the session (dropping the queue closes the connection).
            self.metrics
                .client_replies_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client, "tenant not reading its replies; closing session");
            self.drop_client(client);
        }
    }

    fn set_timer(&mut self, timer: Timer, after_ms: Millis) {
        let after = Duration::from_millis(after_ms);
        match self.timer_keys.get(&timer) {
            Some(key) => self.timers.reset(key, after),
            None => {
                let key = self.timers.insert(timer.clone(), after);
                self.timer_keys.insert(timer, key);
            }
        }
    }

    fn publish_status(&mut self) {
        let s = self.node.status();
        if s.recovering && !self.was_recovering {
            self.metrics.recovery_rounds.fetch_add(1, Ordering::Relaxed);
        }
        if self.was_suspicious && !s.suspicious {
            self.metrics
                .recoveries_completed
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                keys = s.keys,
                executed = s.executed,
                "recovery complete: no longer suspicious"
            );
        }
        self.was_recovering = s.recovering;
        self.was_suspicious = s.suspicious;
        let uptime_ms = self.now();
        let bad_frames = self.metrics.bad_frames_total();
        let recoveries = self.metrics.recoveries_completed.load(Ordering::Relaxed);
        if let Ok(mut report) = self.status.lock() {
            report.suspicious = s.suspicious;
            report.recovering = s.recovering;
            report.leader = s.leader;
            report.is_leader = s.is_leader;
            report.executed_slot = s.executed;
            report.keys = s.keys;
            report.ops_in_flight = s.ops_in_flight;
            report.uptime_ms = uptime_ms;
            report.bad_frames = bad_frames;
            report.recoveries = recoveries;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use crate::core::{ClusterConfig, Holder, RegisterEntry, StoredValue};
    use metadata_client::wire::{Key, ShareId, TenantId, Version};

    #[test]
    fn only_register_requests_go_before_the_sync() {
        let write = PeerMessage::Write {
            op: 1,
            attempt: 1,
            key: Key([7; 16]),
            entry: RegisterEntry {
                version: Version { seq: 5, writer: 2 },
                stable: false,
                value: StoredValue {
                    share: ShareId([1; 16]),
                    creator: TenantId("alice".into()),
                    data: Some(b"x".to_vec()),
                },
            },
            epochs: None,
            holder: Holder::NONE,
            lease: None,
        };
        let query = PeerMessage::Query {
            op: 1,
            attempt: 1,
            key: Some(Key([7; 16])),
            share: ShareId([1; 16]),
            want_value: true,
            want_policy: false,
            lease: None,
        };
        for msg in [write.clone(), query] {
            assert!(goes_before_sync(&Command::Send { to: 2, msg }));
        }
        // What a replica does with the write: its record, then its acknowledgement.
        // Neither may leave before the sync.
        let cfg = ClusterConfig::new(Mode::Rr, 2, 2).unwrap();
        let (mut node, _) = Node::start(cfg, 1, DurableState::default(), 0, 1);
        // Past the lease period a start holds writes for (LEASE-R3).
        let out = node.on_message(5_000, 3, write);
        assert!(
            out.iter().any(|c| matches!(c, Command::Persist(_)))
                && out.iter().any(|c| matches!(
                    c,
                    Command::Send {
                        msg: PeerMessage::WriteReply { .. },
                        ..
                    }
                )),
            "{out:?}"
        );
        assert!(!out.iter().any(goes_before_sync), "{out:?}");
    }
}
