//! The peer mesh: replica ↔ replica protocol messages over mutual TLS.
//!
//! Outgoing: one dialer task per peer with a bounded queue. It connects,
//! checks that the server is `replica-<j>` (the TLS server name) with an
//! acceptable measurement (attestation), and writes frames. When the peer is
//! down or slow, messages are dropped rather than buffered without bound: the
//! protocols retransmit every quorum round (PROTOCOLS.md Q-2), and a stale
//! backlog delivered after a reconnect would only delay fresh messages.
//!
//! Incoming: an accept loop; each connection must present a `replica-<i>`
//! certificate (verified by rustls against the cluster CA, then judged by the
//! [`Attestation`] policy), and every frame it sends is attributed to `i`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use metadata_client::transport::{FrameCodec, peer_identity, server_name};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::{Event, HANDSHAKE_TIMEOUT, no_delay};
use crate::core::{PeerMessage, ReplicaId};
use crate::enclave::attestation::{Attestation, replica_name};
use crate::metrics::{Link, Metrics};

/// Messages queued per peer before new ones are dropped. A quorum round sends
/// one message per peer, so this absorbs bursts of thousands of concurrent
/// operations while bounding memory per unreachable peer.
pub const PEER_QUEUE_MESSAGES: usize = 4096;
/// Messages written per flush: amortises TLS records and syscalls under load.
const FEED_BATCH: usize = 64;
/// A flush that takes longer means the peer stopped reading: reconnect.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Concurrent incoming peer connections (authenticated or not). A cluster
/// needs `N - 1`; the headroom covers reconnects racing old connections.
const MAX_PEER_CONNECTIONS: usize = 256;

/// Handles to the dialer tasks: where the event loop puts outgoing messages.
#[derive(Debug)]
pub struct PeerLinks {
    queues: BTreeMap<ReplicaId, mpsc::Sender<Bytes>>,
    metrics: Arc<Metrics>,
}

impl PeerLinks {
    /// Queue `msg` for `to`; drops it (and counts the drop) if the queue is
    /// full or `to` is unknown.
    pub fn send(&self, to: ReplicaId, msg: &PeerMessage) {
        let Some(queue) = self.queues.get(&to) else {
            self.metrics
                .peer_messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if queue.try_send(Bytes::from(msg.encode())).is_err() {
            self.metrics
                .peer_messages_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Everything a dialer needs, shared by all of them.
#[derive(Clone)]
pub struct DialContext {
    pub connector: TlsConnector,
    pub attestation: Arc<dyn Attestation>,
    pub max_frame_bytes: usize,
    pub metrics: Arc<Metrics>,
}

/// Start one dialer per peer. `peers` excludes this replica.
pub fn spawn_dialers(peers: &[(ReplicaId, SocketAddr)], ctx: DialContext) -> PeerLinks {
    let mut queues = BTreeMap::new();
    for (id, addr) in peers.iter().copied() {
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
        queues.insert(id, tx);
        tokio::spawn(dial_loop(id, addr, rx, ctx.clone()));
    }
    PeerLinks {
        queues,
        metrics: ctx.metrics,
    }
}

async fn connect(
    peer: ReplicaId,
    addr: SocketAddr,
    ctx: &DialContext,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    no_delay(&tcp);
    let name = server_name(&replica_name(peer)).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let identity = peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
    let verified = ctx
        .attestation
        .verify_peer(&identity)
        .map_err(|e| e.to_string())?;
    if verified.replica_id != peer {
        return Err(format!(
            "dialled replica-{peer} but it presents replica-{}",
            verified.replica_id
        ));
    }
    Ok(tls)
}

async fn dial_loop(
    peer: ReplicaId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    ctx: DialContext,
) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    loop {
        match connect(peer, addr, &ctx).await {
            Ok(tls) => {
                backoff = BACKOFF_MIN;
                logged_down = false;
                ctx.metrics.peer_connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer, %addr, "connected to peer");
                let mut out = FramedWrite::new(tls, FrameCodec::new(ctx.max_frame_bytes));
                loop {
                    let Some(first) = rx.recv().await else {
                        return; // the event loop is gone: shutting down
                    };
                    let mut batch = 1u64;
                    let mut ok = out.feed(first).await.is_ok();
                    while ok && batch < FEED_BATCH as u64 {
                        match rx.try_recv() {
                            Ok(next) => {
                                ok = out.feed(next).await.is_ok();
                                batch += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    let flushed = ok
                        && matches!(
                            tokio::time::timeout(WRITE_TIMEOUT, SinkExt::<Bytes>::flush(&mut out))
                                .await,
                            Ok(Ok(()))
                        );
                    if !flushed {
                        ctx.metrics
                            .peer_messages_dropped
                            .fetch_add(batch, Ordering::Relaxed);
                        break;
                    }
                    ctx.metrics
                        .peer_messages_sent
                        .fetch_add(batch, Ordering::Relaxed);
                }
                tracing::warn!(peer, %addr, "lost connection to peer; reconnecting");
            }
            Err(reason) => {
                // A down peer is normal (restarts, tests killing replicas):
                // log the first failure of a streak, not every retry.
                if !logged_down {
                    tracing::info!(peer, %addr, %reason, "peer unreachable; retrying");
                    logged_down = true;
                }
            }
        }
        // Whatever queued while the link was down is stale; the protocols
        // resend what still matters.
        let mut dropped = 0u64;
        while rx.try_recv().is_ok() {
            dropped += 1;
        }
        ctx.metrics
            .peer_messages_dropped
            .fetch_add(dropped, Ordering::Relaxed);
        if rx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Everything the peer listener needs.
#[derive(Clone)]
pub struct AcceptContext {
    pub acceptor: TlsAcceptor,
    pub attestation: Arc<dyn Attestation>,
    pub me: ReplicaId,
    pub replicas: Vec<ReplicaId>,
    pub events: mpsc::Sender<Event>,
    pub max_frame_bytes: usize,
    pub metrics: Arc<Metrics>,
}

/// Accept peer connections until the task is dropped.
pub async fn serve_peers(listener: TcpListener, ctx: AcceptContext) {
    let slots = Arc::new(Semaphore::new(MAX_PEER_CONNECTIONS));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            ctx.metrics.rejected_connection(Link::Peer);
            tracing::warn!(%remote, "too many peer connections; refusing");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            handle_peer_connection(tcp, remote, &ctx).await;
            drop(permit);
        });
    }
}

async fn handle_peer_connection(tcp: TcpStream, remote: SocketAddr, ctx: &AcceptContext) {
    no_delay(&tcp);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            ctx.metrics.rejected_connection(Link::Peer);
            tracing::warn!(%remote, error = %e, "peer TLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.rejected_connection(Link::Peer);
            tracing::warn!(%remote, "peer TLS handshake timed out");
            return;
        }
    };
    let verified = peer_identity(tls.get_ref().1)
        .map_err(|e| e.to_string())
        .and_then(|id| ctx.attestation.verify_peer(&id).map_err(|e| e.to_string()));
    let from = match verified {
        Ok(v) if v.replica_id != ctx.me && ctx.replicas.contains(&v.replica_id) => v.replica_id,
        Ok(v) => {
            ctx.metrics.rejected_connection(Link::Peer);
            tracing::warn!(%remote, claimed = v.replica_id, "peer certificate names no other replica of this cluster");
            return;
        }
        Err(reason) => {
            ctx.metrics.rejected_connection(Link::Peer);
            tracing::warn!(%remote, %reason, "peer attestation failed");
            return;
        }
    };
    let mut frames = FramedRead::new(tls, FrameCodec::new(ctx.max_frame_bytes));
    while let Some(item) = frames.next().await {
        match item {
            Ok(payload) => match PeerMessage::decode(&payload) {
                Ok(msg) => {
                    ctx.metrics
                        .peer_messages_received
                        .fetch_add(1, Ordering::Relaxed);
                    if ctx.events.send(Event::Peer { from, msg }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    ctx.metrics.bad_frame(Link::Peer);
                    tracing::warn!(peer = from, error = %e, "undecodable peer message; closing connection");
                    return;
                }
            },
            Err(e) if e.is_peer_misbehaviour() => {
                ctx.metrics.bad_frame(Link::Peer);
                tracing::warn!(peer = from, error = %e, "bad frame from peer; closing connection");
                return;
            }
            Err(e) => {
                tracing::debug!(peer = from, error = %e, "peer connection ended");
                return;
            }
        }
    }
}
