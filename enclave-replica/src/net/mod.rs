//! The replica's network edge (DESIGN §2, §7, §8): the peer mesh, the tenant
//! listener and the loopback admin endpoint. Everything here only moves bytes
//! and checks identities; decisions belong to the protocol core, which sees
//! the network as [`Event`]s coming in and `Command`s going out.
//!
//! - [`peer`]: replica ↔ replica over mutual TLS. Each replica dials every
//!   other one (one outgoing connection per peer, for its own messages) and
//!   accepts their dials (for theirs), so no connection is ever shared by two
//!   writers and no tie-breaking is needed. Peers are admitted only with a
//!   `replica-<i>` certificate whose measurement the cluster policy accepts.
//! - [`client`]: tenant sessions over mutual TLS; the tenant is the common
//!   name of its CA-signed certificate.
//! - [`admin`]: a loopback-only HTTP endpoint for `teemsfs cluster status`
//!   (JSON) and Prometheus scraping.
//!
//! Framing is `metadata_client::transport` on both TLS links: a malformed or
//! oversized frame closes that one connection and counts in
//! `teems_bad_frames_total`; every other connection is unaffected.

pub mod admin;
pub mod client;
pub mod peer;

use std::time::Duration;

use metadata_client::wire::{RequestFrame, ResponseFrame, TenantId};
use tokio::sync::mpsc;

use crate::core::{ClientId, PeerMessage, ReplicaId};

/// A TLS handshake (and the identity checks after it) must finish within
/// this long, so a peer that connects and stalls holds no resources.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Replies queued for one tenant connection before it is considered stuck
/// and closed. A well-behaved client has at most a few dozen requests in
/// flight.
pub const CLIENT_REPLY_QUEUE: usize = 1024;

/// What the network hands to the event loop that owns the protocol core.
#[derive(Debug)]
pub enum Event {
    /// An authenticated peer's message.
    Peer {
        from: ReplicaId,
        msg: PeerMessage,
    },
    /// A tenant session was established; replies go into `replies`.
    ClientOpen {
        client: ClientId,
        tenant: TenantId,
        replies: mpsc::Sender<ResponseFrame>,
    },
    ClientRequest {
        client: ClientId,
        tenant: TenantId,
        frame: RequestFrame,
    },
    ClientClosed {
        client: ClientId,
    },
}

/// Make small protocol messages leave at once instead of waiting for Nagle.
fn no_delay(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}
