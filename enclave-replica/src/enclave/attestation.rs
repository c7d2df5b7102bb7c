//! Attestation: how a replica proves to its peers (and tenants) which code it
//! runs, and how it checks theirs (DESIGN §8).
//!
//! The seam is the [`Attestation`] trait: a replica presents *evidence*, and a
//! verifier turns a peer's evidence into an accepted [`Measurement`] or a
//! refusal. Evidence travels inside the peer's TLS certificate, in the
//! extension [`MEASUREMENT_EXTENSION_OID`], so it is bound to the key that
//! authenticated the TLS session.
//!
//! [`SoftwareAttestation`] is the emulation shipped here. Its evidence is the
//! bare 32-byte BLAKE3 hash of the replica binary, written into the
//! certificate by `teemsfs cluster init` and signed by the cluster CA. So the
//! claim "replica-3 runs code M" is only as good as the CA's word and the
//! operator who ran `cluster init`: nothing *measured* the running process.
//! The replica does hash its own executable at start and refuses to run if it
//! differs from its certificate ([`SoftwareAttestation::check_running_binary`]),
//! which catches a wrong or stale binary but not a malicious host. With real
//! hardware the evidence would be a quote (SGX DCAP, SEV-SNP report, TDX quote)
//! whose report data carries the hash of the TLS public key, signed by the CPU
//! vendor's key chain; `verify_peer` would check that chain and that binding
//! instead of trusting the CA. `docs/FAULT_MODEL.md` has the full account.

use std::fs;
use std::io;
use std::path::Path;

use metadata_client::transport::{PeerIdentity, identity_from_cert};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use metadata_client::transport::{
    MEASUREMENT_EXTENSION_OID, Measurement, MeasurementMismatch, MeasurementPolicy,
};

/// Prefix of every replica's certificate name: replica `i` is `replica-<i>`.
pub const REPLICA_NAME_PREFIX: &str = "replica-";

/// The certificate name of replica `id`.
pub fn replica_name(id: u32) -> String {
    format!("{REPLICA_NAME_PREFIX}{id}")
}

/// The replica id in a certificate name `replica-<i>` (`i` ≥ 1, decimal, no
/// leading zeros or signs), or `None` for any other name.
pub fn replica_id_from_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(REPLICA_NAME_PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A peer that passed attestation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReplica {
    /// From the certificate name `replica-<i>`.
    pub replica_id: u32,
    /// What the peer's evidence says it runs.
    pub measurement: Measurement,
}

/// Attestation failed; the connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestationError {
    #[error("peer certificate name {0:?} is not a replica name (replica-<i>)")]
    NotAReplica(Option<String>),
    #[error("peer {name}: {mismatch}")]
    Measurement {
        name: String,
        mismatch: MeasurementMismatch,
    },
    #[error("own certificate: {0}")]
    OwnCertificate(String),
    #[error("this process's binary measures {running}, but its certificate claims {certified}")]
    RunningBinaryDiffers {
        running: Measurement,
        certified: Measurement,
    },
}

/// What a replica presents, and how it judges what others present.
pub trait Attestation: Send + Sync {
    /// The evidence this replica presents. In the emulation it is already in
    /// the certificate; a hardware backend would produce a fresh quote binding
    /// the TLS key here, to be placed in a short-lived certificate.
    fn local_evidence(&self) -> Vec<u8>;

    /// Judge a peer whose certificate rustls has already verified against the
    /// cluster CA. Accepts only replica names and evidence the policy allows.
    fn verify_peer(&self, peer: &PeerIdentity) -> Result<VerifiedReplica, AttestationError>;
}

/// The software emulation: evidence = measurement in the CA-signed certificate,
/// checked against the cluster's [`MeasurementPolicy`].
#[derive(Clone, Debug)]
pub struct SoftwareAttestation {
    policy: MeasurementPolicy,
    own: Measurement,
}

impl SoftwareAttestation {
    /// Build from the cluster policy and this replica's own certificate (PEM).
    /// Fails if the certificate lacks the extension, or if it carries a
    /// measurement the cluster policy would itself refuse — a replica that its
    /// peers will reject should say so at start, not at the first connection.
    pub fn new(
        policy: MeasurementPolicy,
        own_cert_pem: &[u8],
    ) -> Result<SoftwareAttestation, AttestationError> {
        let der = CertificateDer::from_pem_slice(own_cert_pem)
            .map_err(|e| AttestationError::OwnCertificate(format!("cannot parse PEM: {e}")))?;
        let identity = identity_from_cert(&der)
            .map_err(|e| AttestationError::OwnCertificate(e.to_string()))?;
        let own = policy
            .check(identity.evidence.as_deref())
            .map_err(|mismatch| AttestationError::OwnCertificate(mismatch.to_string()))?;
        Ok(SoftwareAttestation { policy, own })
    }

    /// The policy peers are checked against.
    pub fn policy(&self) -> MeasurementPolicy {
        self.policy
    }

    /// The measurement this replica's certificate claims.
    pub fn own_measurement(&self) -> Measurement {
        self.own
    }

    /// The emulated "hardware measured this code" step: under an `Exact`
    /// policy, the running executable must hash to the certified value. Under
    /// `Any` (development builds, rebuilt constantly) this check is skipped,
    /// and the docs say so.
    pub fn check_running_binary(&self, running: Measurement) -> Result<(), AttestationError> {
        match self.policy {
            MeasurementPolicy::Any => Ok(()),
            MeasurementPolicy::Exact(_) if running == self.own => Ok(()),
            MeasurementPolicy::Exact(_) => Err(AttestationError::RunningBinaryDiffers {
                running,
                certified: self.own,
            }),
        }
    }
}

impl Attestation for SoftwareAttestation {
    fn local_evidence(&self) -> Vec<u8> {
        self.own.0.to_vec()
    }

    fn verify_peer(&self, peer: &PeerIdentity) -> Result<VerifiedReplica, AttestationError> {
        let name = peer.common_name.clone();
        let replica_id = name
            .as_deref()
            .and_then(replica_id_from_name)
            .ok_or_else(|| AttestationError::NotAReplica(name.clone()))?;
        let measurement = self
            .policy
            .check(peer.evidence.as_deref())
            .map_err(|mismatch| AttestationError::Measurement {
                name: name.clone().unwrap_or_default(),
                mismatch,
            })?;
        Ok(VerifiedReplica {
            replica_id,
            measurement,
        })
    }
}

/// BLAKE3 measurement of a binary on disk.
pub fn measure_file(path: &Path) -> io::Result<Measurement> {
    Ok(Measurement::of_bytes(&fs::read(path)?))
}

/// BLAKE3 measurement of the executable of this process.
pub fn measure_current_exe() -> io::Result<Measurement> {
    measure_file(&std::env::current_exe()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cn: &str, evidence: Option<&[u8]>) -> PeerIdentity {
        PeerIdentity {
            common_name: Some(cn.to_string()),
            dns_names: vec![],
            evidence: evidence.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn replica_names() {
        assert_eq!(replica_id_from_name("replica-1"), Some(1));
        assert_eq!(replica_id_from_name("replica-42"), Some(42));
        for bad in [
            "replica-",
            "replica-0",
            "replica-01",
            "replica-+1",
            "replica-x",
            "admin",
            "replica-99999999999",
        ] {
            assert_eq!(replica_id_from_name(bad), None, "{bad}");
        }
        assert_eq!(replica_name(7), "replica-7");
    }

    #[test]
    fn verify_peer_under_both_policies() {
        let m = Measurement::of_bytes(b"teems-replica v1");
        let evil = Measurement::of_bytes(b"patched teems-replica");
        let exact = SoftwareAttestation {
            policy: MeasurementPolicy::Exact(m),
            own: m,
        };
        assert_eq!(
            exact.verify_peer(&peer("replica-2", Some(&m.0))),
            Ok(VerifiedReplica {
                replica_id: 2,
                measurement: m
            })
        );
        assert!(matches!(
            exact.verify_peer(&peer("replica-2", Some(&evil.0))),
            Err(AttestationError::Measurement {
                mismatch: MeasurementMismatch::Different { .. },
                ..
            })
        ));
        // A tenant certificate (no extension, not a replica name) is never a peer.
        assert!(matches!(
            exact.verify_peer(&peer("admin", None)),
            Err(AttestationError::NotAReplica(_))
        ));
        let any = SoftwareAttestation {
            policy: MeasurementPolicy::Any,
            own: m,
        };
        assert!(any.verify_peer(&peer("replica-3", Some(&evil.0))).is_ok());
        assert!(matches!(
            any.verify_peer(&peer("replica-3", None)),
            Err(AttestationError::Measurement {
                mismatch: MeasurementMismatch::Missing,
                ..
            })
        ));
    }

    #[test]
    fn running_binary_check() {
        let m = Measurement::of_bytes(b"a");
        let other = Measurement::of_bytes(b"b");
        let exact = SoftwareAttestation {
            policy: MeasurementPolicy::Exact(m),
            own: m,
        };
        assert!(exact.check_running_binary(m).is_ok());
        assert!(matches!(
            exact.check_running_binary(other),
            Err(AttestationError::RunningBinaryDiffers { .. })
        ));
        let any = SoftwareAttestation {
            policy: MeasurementPolicy::Any,
            own: m,
        };
        assert!(any.check_running_binary(other).is_ok());
    }
}
