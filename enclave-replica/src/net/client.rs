//! Tenant sessions: the proxy role's listener (DESIGN §7).
//!
//! A tenant connects with mutual TLS and a certificate from the cluster CA;
//! its common name *is* the tenant id the policy state machine checks. Replica
//! certificates are refused here: a replica never acts as a tenant. Requests
//! are decoded and handed to the event loop; replies come back through a
//! bounded per-connection queue, and a tenant that stops reading while its
//! queue is full is disconnected rather than buffered without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use metadata_client::transport::{FrameCodec, peer_identity};
use metadata_client::wire::{TenantId, decode_request, encode_response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::{CLIENT_REPLY_QUEUE, Event, HANDSHAKE_TIMEOUT, no_delay};
use crate::metrics::{Link, Metrics};
use crate::provision::check_tenant_name;

/// Concurrent tenant connections per replica.
const MAX_CLIENT_CONNECTIONS: usize = 4096;
/// A reply flush that takes longer means the tenant stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ClientContext {
    pub acceptor: TlsAcceptor,
    pub events: mpsc::Sender<Event>,
    pub max_frame_bytes: usize,
    pub metrics: Arc<Metrics>,
    pub next_client: Arc<AtomicU64>,
}

/// Accept tenant connections until the task is dropped.
pub async fn serve_clients(listener: TcpListener, ctx: ClientContext) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENT_CONNECTIONS));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "client accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            ctx.metrics.rejected_connection(Link::Client);
            tracing::warn!(%remote, "too many tenant connections; refusing");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            handle_client(tcp, remote, &ctx).await;
            drop(permit);
        });
    }
}

/// The tenant named by a verified certificate, if it may be one.
fn tenant_of(common_name: Option<&str>) -> Result<TenantId, String> {
    let name = common_name.ok_or_else(|| "certificate has no common name".to_string())?;
    check_tenant_name(name).map_err(|reason| format!("{name:?} is not a tenant name: {reason}"))?;
    Ok(TenantId(name.to_string()))
}

async fn handle_client(tcp: TcpStream, remote: SocketAddr, ctx: &ClientContext) {
    no_delay(&tcp);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            ctx.metrics.rejected_connection(Link::Client);
            tracing::warn!(%remote, error = %e, "tenant TLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.rejected_connection(Link::Client);
            tracing::warn!(%remote, "tenant TLS handshake timed out");
            return;
        }
    };
    let tenant = match peer_identity(tls.get_ref().1)
        .map_err(|e| e.to_string())
        .and_then(|id| tenant_of(id.common_name.as_deref()))
    {
        Ok(t) => t,
        Err(reason) => {
            ctx.metrics.rejected_connection(Link::Client);
            tracing::warn!(%remote, %reason, "tenant refused");
            return;
        }
    };
    let client = ctx.next_client.fetch_add(1, Ordering::Relaxed);
    let (replies_tx, mut replies_rx) = mpsc::channel(CLIENT_REPLY_QUEUE);
    let open = Event::ClientOpen {
        client,
        tenant: tenant.clone(),
        replies: replies_tx,
    };
    if ctx.events.send(open).await.is_err() {
        return;
    }
    ctx.metrics
        .client_sessions_opened
        .fetch_add(1, Ordering::Relaxed);
    ctx.metrics
        .client_sessions_open
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(client, tenant = %tenant.0, %remote, "tenant session opened");

    let (read_half, write_half) = tokio::io::split(tls);
    let max = ctx.max_frame_bytes;
    let writer = tokio::spawn(async move {
        let mut out = FramedWrite::new(write_half, FrameCodec::new(max));
        while let Some(frame) = replies_rx.recv().await {
            let mut ok = out.feed(Bytes::from(encode_response(&frame))).await.is_ok();
            while ok {
                match replies_rx.try_recv() {
                    Ok(next) => ok = out.feed(Bytes::from(encode_response(&next))).await.is_ok(),
                    Err(_) => break,
                }
            }
            if !ok
                || !matches!(
                    tokio::time::timeout(WRITE_TIMEOUT, SinkExt::<Bytes>::flush(&mut out)).await,
                    Ok(Ok(()))
                )
            {
                break;
            }
        }
    });

    let mut frames = FramedRead::new(read_half, FrameCodec::new(max));
    while let Some(item) = frames.next().await {
        match item {
            Ok(payload) => match decode_request(&payload) {
                Ok(frame) => {
                    tracing::debug!(client, request_id = frame.request_id, "tenant request");
                    let ev = Event::ClientRequest {
                        client,
                        tenant: tenant.clone(),
                        frame,
                    };
                    if ctx.events.send(ev).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    ctx.metrics.bad_frame(Link::Client);
                    tracing::warn!(client, tenant = %tenant.0, error = %e, "undecodable request; closing session");
                    break;
                }
            },
            Err(e) if e.is_peer_misbehaviour() => {
                ctx.metrics.bad_frame(Link::Client);
                tracing::warn!(client, tenant = %tenant.0, error = %e, "bad frame; closing session");
                break;
            }
            Err(e) => {
                tracing::debug!(client, error = %e, "tenant connection ended");
                break;
            }
        }
    }
    // Dropping both halves closes the connection at once, even if replies
    // are still queued: after a bad frame nothing more is owed.
    writer.abort();
    ctx.metrics
        .client_sessions_open
        .fetch_sub(1, Ordering::Relaxed);
    let _ = ctx.events.send(Event::ClientClosed { client }).await;
    tracing::info!(client, "tenant session closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tenant_names_are_tenants() {
        assert_eq!(tenant_of(Some("alice")), Ok(TenantId("alice".into())));
        assert!(tenant_of(Some("replica-1")).is_err());
        assert!(tenant_of(Some("Bad Name")).is_err());
        assert!(tenant_of(None).is_err());
    }
}
