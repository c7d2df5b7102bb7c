//! The tenant's client library for TEEMS.
//!
//! Job: the client ↔ proxy wire types ([`wire`]), and (issue 4) the async
//! session over mutual TLS with typed errors, deadlines, safe retries and
//! failover between proxies. It does not know about replication: quorums,
//! suspicion and recovery are the replicas' business.
//!
//! Modules: [`wire`] (message types), [`transport`] (framing, mutual TLS, peer
//! identity and measurement evidence; shared with the replicas), [`session`]
//! (the async tenant client: TEEMS API, typed [`ClientError`]s, deadlines,
//! retries with idempotency tokens, failover between proxies), [`lease`] (the
//! session's cache of leased read answers and its rules).

pub mod lease;
pub mod session;
pub mod transport;
pub mod wire;

pub use session::{ClientError, ProxyAddr, Session, SessionConfig};
