//! enclave-replica: one TEEMS replica (DESIGN §2–8).
//!
//! Job: keep the metadata of teemsfs fresh, durable and access-controlled
//! under the restart-rollback fault model. A replica is a register replica
//! (RR-ABD) for every metadata key, an acceptor and possibly the leader of
//! RR-Paxos for the policy state machine, and a proxy for the tenants
//! connected to it.
//!
//! What it does not do: it never sees file contents (those are encrypted and
//! erasure-coded by the client into untrusted stores), and the protocol cores
//! in [`core`] never do I/O — sockets, sealed storage, clocks and randomness
//! belong to the runtime that drives them.
//!
//! Modules:
//! - [`core`]: sans-IO protocol cores — quorum arithmetic, RR-ABD, RR-Paxos,
//!   recovery, policy state machine and proxy logic, steps numbered as in
//!   `docs/PROTOCOLS.md`.
//! - [`enclave`]: the emulated TEE — `Sealer`, `Attestation`, and the sealed
//!   write-ahead log with snapshots (`docs/FAULT_MODEL.md`).
//! - [`provision`]: `teemsfs cluster init` as a library — CA, certificates,
//!   sealing secrets, `cluster.toml` — and loading/validating that file.
//! - [`runtime`]: the event loop of the `teems-replica` process — feeds the
//!   core, persists before acknowledging (group commit), timers, snapshots.
//! - [`net`]: peer mesh and tenant listener over mutual TLS, and the loopback
//!   admin endpoint (status JSON, Prometheus metrics).
//! - [`metrics`]: the replica's counters and histograms.
//!
//! ```
//! use enclave_replica::core::{ClusterConfig, DurableState, Mode, Node};
//! let config = ClusterConfig::new(Mode::Rr, 2, 2).expect("valid (M_R, F)");
//! assert_eq!(config.n, 5);
//! // A fresh replica starts suspicious and asks its peers for digests.
//! let (node, commands) = Node::start(config, 1, DurableState::default(), 0, 7);
//! assert!(node.status().suspicious);
//! assert!(!commands.is_empty());
//! ```

pub mod core;
pub mod enclave;
pub mod metrics;
pub mod net;
pub mod provision;
pub mod runtime;
