//! The emulated enclave (DESIGN §8): everything that real TEE hardware would
//! provide to a replica, behind two traits, plus the sealed state store built
//! on them.
//!
//! - [`sealer`]: [`Sealer`] — seal/unseal bytes under a key only this replica
//!   holds; [`SoftwareSealer`] derives it from the provisioned secret.
//! - [`attestation`]: [`Attestation`] — what a replica presents and how it
//!   judges a peer's code identity; [`SoftwareAttestation`] uses a measurement
//!   carried in the CA-signed TLS certificate.
//! - [`sealed_log`]: [`SealedLog`] — write-ahead log plus snapshots, each
//!   record sealed with its position and a hash chain in the associated data.
//!
//! What the emulation protects, and what only hardware would, is in
//! `docs/FAULT_MODEL.md`. The short version: confidentiality and integrity of
//! sealed state against anyone who sees the replica's disk but cannot read its
//! secret file; *nothing* against a host that reads process memory or the
//! secret. Freshness is never the enclave's job: rollback is the fault the RR
//! protocols tolerate.

pub mod attestation;
pub mod sealed_log;
pub mod sealer;

pub use attestation::{
    Attestation, AttestationError, Measurement, MeasurementPolicy, SoftwareAttestation,
    VerifiedReplica,
};
pub use sealed_log::{
    Corruption, CorruptionKind, LoadedRecord, RecordPosition, Recovered, SealedLog,
    SealedStoreError,
};
pub use sealer::{SealError, Sealer, SealerSetupError, SoftwareSealer};
