//! Transport shared by tenants and replicas (DESIGN §7, §8): framing and mutual TLS.
//!
//! Both the client↔proxy link and the replica↔replica link use the same two
//! layers, which is why they live here and not in the replica crate (the
//! replica depends on this crate, never the other way round):
//!
//! * **Framing.** A frame on the wire is
//!   `[length: u32 big-endian][version: u8][payload: length-1 bytes]`, where
//!   `length` counts the version byte and the payload and must lie in
//!   `1..=max_frame_bytes`. [`FrameCodec`] checks the length *before* it reserves
//!   any memory, so a peer announcing a 4 GiB frame costs us four bytes of
//!   buffer, not four gigabytes. Every way a peer can send bad bytes is a
//!   [`FrameError`] value; the caller closes that one connection and counts it
//!   (see [`FrameError::is_peer_misbehaviour`]). Nothing here panics on input.
//! * **Mutual TLS** with rustls and the *ring* provider (never aws-lc: see
//!   LIBRARIES.md) under the cluster CA: [`tls_client_config`] and
//!   [`tls_server_config`] build the configurations from PEM bytes, and
//!   [`peer_identity`] reads who is on the other end — common name, DNS names,
//!   and the attestation evidence extension ([`MEASUREMENT_EXTENSION_OID`]) — from
//!   the certificate rustls has already verified.
//!
//! What this module does not do: decide whether a peer is *allowed* (that is
//! the replica's attestation policy and the tenant ACLs), or retry, or time out;
//! callers wrap the futures in their own deadlines.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Version byte of every frame this build sends. A frame with another version
/// is refused rather than guessed at: mixed-version clusters are not supported.
pub const FRAME_VERSION: u8 = 1;

/// Default largest frame (version byte + payload) we accept or send: 4 MiB.
/// Metadata values are hundreds of bytes and recovery batches are chunked well
/// below this, so a larger frame means a confused or hostile peer.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of the length prefix.
const LENGTH_PREFIX_BYTES: usize = 4;

/// Every way a frame can be bad, plus I/O failure of the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum. Raised
    /// as soon as the four length bytes arrive, before anything is allocated.
    #[error("frame of {len_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    Oversized { len_bytes: u64, max_bytes: usize },
    /// A length prefix of zero: not even a version byte.
    #[error("empty frame: length prefix is 0, a frame holds at least its version byte")]
    Empty,
    /// The version byte is not [`FRAME_VERSION`].
    #[error("unsupported frame version {found} (this build speaks version {expected})")]
    UnsupportedVersion { found: u8, expected: u8 },
    /// The connection ended part-way through a frame.
    #[error("connection closed in the middle of a frame ({buffered_bytes} bytes buffered)")]
    Truncated { buffered_bytes: usize },
    /// The frame was well formed but its payload does not decode as the
    /// expected message type (only from [`recv_message`]).
    #[error("malformed message in frame: {reason}")]
    Malformed { reason: String },
    /// The connection failed underneath us (reset, TLS alert, …).
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the *peer* sent bytes that break the framing rules (as
    /// opposed to the connection failing). The caller closes the connection
    /// and increments its "malformed frames" metric for these.
    pub fn is_peer_misbehaviour(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

/// tokio-util codec for the frame format described in the module docs. The
/// item is the payload without its version byte.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec accepting frames up to `max_frame_bytes` (version byte
    /// included). Values below 1 are raised to 1, the smallest legal frame.
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec {
            max_frame_bytes: max_frame_bytes.max(1),
        }
    }

    /// The configured maximum, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> FrameCodec {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let mut len_be = [0u8; LENGTH_PREFIX_BYTES];
        len_be.copy_from_slice(prefix);
        let len_bytes = u32::from_be_bytes(len_be);
        if len_bytes == 0 {
            return Err(FrameError::Empty);
        }
        // u32 always fits in u64; compare in u64 so 32-bit targets are also right.
        if u64::from(len_bytes) > self.max_frame_bytes as u64 {
            return Err(FrameError::Oversized {
                len_bytes: u64::from(len_bytes),
                max_bytes: self.max_frame_bytes,
            });
        }
        // Within the bound checked above, so this reservation is at most
        // max_frame_bytes.
        let len = len_bytes as usize;
        let total = LENGTH_PREFIX_BYTES + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        let mut frame = src.split_to(len);
        let version = frame.get_u8();
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: version,
                expected: FRAME_VERSION,
            });
        }
        Ok(Some(frame.freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered_bytes: src.len(),
            }),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        // Refuse to send what the other side (configured alike) would refuse:
        // it is our bug, and failing here names it.
        let len_bytes = payload.len() as u64 + 1;
        if len_bytes > self.max_frame_bytes as u64 {
            return Err(FrameError::Oversized {
                len_bytes,
                max_bytes: self.max_frame_bytes,
            });
        }
        let Ok(len_u32) = u32::try_from(len_bytes) else {
            return Err(FrameError::Oversized {
                len_bytes,
                max_bytes: self.max_frame_bytes,
            });
        };
        dst.reserve(LENGTH_PREFIX_BYTES + payload.len() + 1);
        dst.put_u32(len_u32);
        dst.put_u8(FRAME_VERSION);
        dst.put_slice(payload);
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        Encoder::<&[u8]>::encode(self, &payload, dst)
    }
}

/// Wrap a byte stream (TCP or TLS) in the frame codec.
pub fn framed<T: AsyncRead + AsyncWrite>(io: T, max_frame_bytes: usize) -> Framed<T, FrameCodec> {
    Framed::new(io, FrameCodec::new(max_frame_bytes))
}

/// Encode `message` with postcard and send it as one frame.
pub async fn send_message<T, M>(
    conn: &mut Framed<T, FrameCodec>,
    message: &M,
) -> Result<(), FrameError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    M: Serialize,
{
    let payload = postcard::to_allocvec(message).map_err(|e| FrameError::Malformed {
        reason: format!("cannot encode message: {e}"),
    })?;
    conn.send(Bytes::from(payload)).await
}

/// Receive one frame and decode it with postcard. `Ok(None)` is a clean end
/// of stream between frames.
pub async fn recv_message<T, M>(conn: &mut Framed<T, FrameCodec>) -> Result<Option<M>, FrameError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    M: DeserializeOwned,
{
    match conn.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(payload)) => {
            postcard::from_bytes(&payload)
                .map(Some)
                .map_err(|e| FrameError::Malformed {
                    reason: e.to_string(),
                })
        }
    }
}

// ---------------------------------------------------------------------------
// Measurement (attestation evidence carried in certificates)
// ---------------------------------------------------------------------------

/// OID of the X.509 extension in which a replica's certificate carries its
/// attestation evidence (in the software emulation: its code measurement).
///
/// teemsfs has no IANA Private Enterprise Number; this arc is project-private
/// and only meaningful between teemsfs peers. The extension is marked
/// non-critical so generic TLS stacks ignore it.
pub const MEASUREMENT_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 63117, 1, 1];

/// A code measurement: the 32-byte BLAKE3 hash of a replica binary.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement(pub [u8; 32]);

impl Measurement {
    /// The marker a replica certificate carries when the cluster was
    /// initialised without a binary to measure (development builds, policy
    /// [`MeasurementPolicy::Any`]). It never equals a real BLAKE3 output in
    /// practice, and an `Exact` policy never accepts it by accident because
    /// provisioning refuses to expect it.
    pub const UNMEASURED: Measurement = Measurement([0u8; 32]);

    /// Measure bytes (a binary image already read into memory).
    pub fn of_bytes(bytes: &[u8]) -> Measurement {
        Measurement(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({self})")
    }
}

/// A measurement string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("measurement must be 64 hex digits (a BLAKE3 hash) or \"any\", got {0:?}")]
pub struct BadMeasurement(pub String);

impl FromStr for Measurement {
    type Err = BadMeasurement;
    fn from_str(s: &str) -> Result<Measurement, BadMeasurement> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| BadMeasurement(s.to_string()))?;
        Ok(Measurement(out))
    }
}

/// Which measurements a verifier accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasurementPolicy {
    /// Development policy: any replica certificate that carries a measurement
    /// extension is accepted, whatever its value. The certificate must still
    /// chain to the cluster CA; only the *code identity* check is switched off.
    Any,
    /// Production policy: the measurement must equal this value exactly.
    Exact(Measurement),
}

/// Why a peer's evidence was refused by a [`MeasurementPolicy`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeasurementMismatch {
    #[error("peer certificate carries no measurement extension (not a replica certificate)")]
    Missing,
    #[error("peer measurement extension is not a 32-byte measurement ({len_bytes} bytes)")]
    WrongLength { len_bytes: usize },
    #[error("peer runs code with measurement {found}, expected {expected}")]
    Different {
        found: Measurement,
        expected: Measurement,
    },
}

impl MeasurementPolicy {
    /// Check evidence bytes (as returned in [`PeerIdentity::evidence`]) against
    /// this policy, returning the peer's measurement when accepted.
    pub fn check(&self, evidence: Option<&[u8]>) -> Result<Measurement, MeasurementMismatch> {
        let bytes = evidence.ok_or(MeasurementMismatch::Missing)?;
        let found = <[u8; 32]>::try_from(bytes).map(Measurement).map_err(|_| {
            MeasurementMismatch::WrongLength {
                len_bytes: bytes.len(),
            }
        })?;
        match self {
            MeasurementPolicy::Any => Ok(found),
            MeasurementPolicy::Exact(expected) if *expected == found => Ok(found),
            MeasurementPolicy::Exact(expected) => Err(MeasurementMismatch::Different {
                found,
                expected: *expected,
            }),
        }
    }
}

impl fmt::Display for MeasurementPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasurementPolicy::Any => f.write_str("any"),
            MeasurementPolicy::Exact(m) => write!(f, "{m}"),
        }
    }
}

impl FromStr for MeasurementPolicy {
    type Err = BadMeasurement;
    fn from_str(s: &str) -> Result<MeasurementPolicy, BadMeasurement> {
        if s.trim().eq_ignore_ascii_case("any") {
            Ok(MeasurementPolicy::Any)
        } else {
            s.parse().map(MeasurementPolicy::Exact)
        }
    }
}

/// DER content of the evidence extension: an OCTET STRING holding the
/// evidence bytes. Used by provisioning when it mints replica certificates.
pub fn encode_evidence_extension(evidence: &[u8]) -> Vec<u8> {
    let len = evidence.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(0x04); // OCTET STRING
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_be = (len as u64).to_be_bytes();
        let first_nonzero = len_be
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(len_be.len() - 1);
        let len_digits = len_be.get(first_nonzero..).unwrap_or(&[]);
        out.push(0x80 | len_digits.len() as u8);
        out.extend_from_slice(len_digits);
    }
    out.extend_from_slice(evidence);
    out
}

// ---------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------

/// A TLS configuration could not be built from the given PEM material.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: cannot parse PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA certificate rejected as a trust anchor: {0}")]
    BadCa(rustls::Error),
    #[error("cannot build the client-certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("certificate/key pair rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
}

/// Whether a server demands a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// The handshake fails unless the client presents a certificate that
    /// chains to the cluster CA. Both replica ports use this.
    Required,
    /// A client may connect without a certificate (then
    /// [`peer_identity`] reports [`IdentityError::NoPeerCertificate`]); one it
    /// does present must still chain to the CA.
    Optional,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(
    what: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { what });
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsSetupError::Pem {
        what: "private key",
        source,
    })
}

fn ca_roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for ca in parse_certs("CA certificate", ca_pem)? {
        roots.add(ca).map_err(TlsSetupError::BadCa)?;
    }
    Ok(Arc::new(roots))
}

/// Client side of mutual TLS: trusts only the cluster CA (`ca_pem`) and
/// presents `cert_pem`/`key_pem`. TLS 1.3 only: every party is our own code.
pub fn tls_client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let roots = ca_roots(ca_pem)?;
    let certs = parse_certs("client certificate", cert_pem)?;
    let key = parse_key(key_pem)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Server side of mutual TLS: presents `cert_pem`/`key_pem` and verifies
/// client certificates against the cluster CA (`ca_pem`).
pub fn tls_server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let roots = ca_roots(ca_pem)?;
    let certs = parse_certs("server certificate", cert_pem)?;
    let key = parse_key(key_pem)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match client_auth {
        ClientAuth::Required => verifier.build()?,
        ClientAuth::Optional => verifier.allow_unauthenticated().build()?,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The TLS server name to dial a replica by. Replica certificates carry the
/// DNS name `replica-<i>`, so clients verify the *identity* they meant to
/// reach, whatever address it listens on.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(name.to_string())
        .map_err(|_| TlsSetupError::BadServerName(name.to_string()))
}

/// Who is on the other end of a verified TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject common name: `replica-<i>` or the tenant name.
    pub common_name: Option<String>,
    /// DNS names from the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// Contents of the [`MEASUREMENT_EXTENSION_OID`] extension, if present.
    /// Replica certificates carry it; tenant certificates do not.
    pub evidence: Option<Vec<u8>>,
}

impl PeerIdentity {
    /// The name to address this peer by: its common name, else its first DNS name.
    pub fn name(&self) -> Option<&str> {
        self.common_name
            .as_deref()
            .or_else(|| self.dns_names.first().map(String::as_str))
    }
}

/// The peer identity could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate does not parse: {0}")]
    Parse(String),
    #[error("peer certificate has a malformed {field}: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("peer certificate carries the measurement extension more than once")]
    DuplicateEvidence,
}

/// Identity of the peer of an established rustls connection (client or server
/// side; pass `&*conn` or `stream.get_ref().1`). Call only after the handshake:
/// the certificate has then been verified against the cluster CA by rustls.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<PeerIdentity, IdentityError> {
    let end_entity = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(IdentityError::NoPeerCertificate)?;
    identity_from_cert(end_entity)
}

/// Identity fields of one DER certificate. Parses only; does not verify.
pub fn identity_from_cert(der: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;

    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| IdentityError::Parse(e.to_string()))?;

    let common_name = match cert.subject().iter_common_name().next() {
        None => None,
        Some(attr) => Some(
            attr.as_str()
                .map_err(|e| IdentityError::BadField {
                    field: "common name",
                    reason: e.to_string(),
                })?
                .to_string(),
        ),
    };

    let mut dns_names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadField {
            field: "subject alternative name",
            reason: e.to_string(),
        })?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                dns_names.push((*dns).to_string());
            }
        }
    }

    let mut evidence = None;
    for ext in cert.extensions() {
        let is_ours = ext
            .oid
            .iter()
            .is_some_and(|arcs| arcs.eq(MEASUREMENT_EXTENSION_OID.iter().copied()));
        if !is_ours {
            continue;
        }
        if evidence.is_some() {
            return Err(IdentityError::DuplicateEvidence);
        }
        let (rest, octets) = x509_parser::der_parser::der::parse_der_octetstring(ext.value)
            .map_err(|e| IdentityError::BadField {
                field: "measurement extension",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(IdentityError::BadField {
                field: "measurement extension",
                reason: format!("{} trailing bytes", rest.len()),
            });
        }
        let bytes = octets.as_slice().map_err(|e| IdentityError::BadField {
            field: "measurement extension",
            reason: e.to_string(),
        })?;
        evidence = Some(bytes.to_vec());
    }

    Ok(PeerIdentity {
        common_name,
        dns_names,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(version: u8, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(payload.len() as u32 + 1);
        b.put_u8(version);
        b.put_slice(payload);
        b
    }

    #[test]
    fn round_trip_and_partial_input() {
        let mut codec = FrameCodec::new(64);
        let mut buf = BytesMut::new();
        codec.encode(&b"hello"[..], &mut buf).expect("encode");
        assert_eq!(&buf[..], &frame(FRAME_VERSION, b"hello")[..]);
        // Feed it one byte at a time: nothing until the last byte.
        let all = buf.split().freeze();
        let mut partial = BytesMut::new();
        for (i, b) in all.iter().enumerate() {
            partial.put_u8(*b);
            let got = codec.decode(&mut partial).expect("decode");
            if i + 1 < all.len() {
                assert!(got.is_none());
            } else {
                assert_eq!(got.as_deref(), Some(&b"hello"[..]));
            }
        }
        assert!(partial.is_empty());
    }

    #[test]
    fn oversized_prefix_is_an_error_before_allocation() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let cap_before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::Oversized {
                len_bytes,
                max_bytes,
            }) => {
                assert_eq!(len_bytes, u64::from(u32::MAX));
                assert_eq!(max_bytes, 1024);
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
        assert!(
            buf.capacity() <= cap_before.max(64),
            "decoder must not reserve for a refused frame"
        );
    }

    #[test]
    fn bad_version_empty_frame_and_truncation_are_errors() {
        let mut codec = FrameCodec::default();
        assert!(matches!(
            codec.decode(&mut frame(9, b"x")),
            Err(FrameError::UnsupportedVersion {
                found: 9,
                expected: FRAME_VERSION
            })
        ));
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(codec.decode(&mut zero), Err(FrameError::Empty)));
        let mut cut = frame(FRAME_VERSION, b"abcdef");
        cut.truncate(7);
        assert!(matches!(
            codec.decode_eof(&mut cut),
            Err(FrameError::Truncated { buffered_bytes: 7 })
        ));
        assert!(
            codec
                .decode_eof(&mut BytesMut::new())
                .expect("clean eof")
                .is_none()
        );
    }

    #[test]
    fn encoder_refuses_oversized_payload() {
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::new();
        assert!(codec.encode(&[0u8; 7][..], &mut buf).is_ok());
        assert!(matches!(
            codec.encode(&[0u8; 8][..], &mut buf),
            Err(FrameError::Oversized { len_bytes: 9, .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep over many garbage inputs; the fuzz target
        // does the thorough job.
        let mut state: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut codec = FrameCodec::new(256);
            let mut buf = BytesMut::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.put_u8(state as u8);
            }
            for _ in 0..8 {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn measurement_policy_checks() {
        let m = Measurement::of_bytes(b"binary");
        let other = Measurement::of_bytes(b"other binary");
        assert_eq!(MeasurementPolicy::Any.check(Some(&m.0)), Ok(m));
        assert_eq!(MeasurementPolicy::Exact(m).check(Some(&m.0)), Ok(m));
        assert_eq!(
            MeasurementPolicy::Exact(m).check(Some(&other.0)),
            Err(MeasurementMismatch::Different {
                found: other,
                expected: m
            })
        );
        assert_eq!(
            MeasurementPolicy::Any.check(None),
            Err(MeasurementMismatch::Missing)
        );
        assert_eq!(
            MeasurementPolicy::Any.check(Some(&[1, 2])),
            Err(MeasurementMismatch::WrongLength { len_bytes: 2 })
        );
        assert_eq!(
            "any".parse::<MeasurementPolicy>().ok(),
            Some(MeasurementPolicy::Any)
        );
        assert_eq!(
            m.to_string().parse::<MeasurementPolicy>().ok(),
            Some(MeasurementPolicy::Exact(m))
        );
        assert!("zz".parse::<MeasurementPolicy>().is_err());
    }

    #[test]
    fn evidence_extension_der_lengths() {
        assert_eq!(encode_evidence_extension(&[7; 3]), vec![4, 3, 7, 7, 7]);
        let long = encode_evidence_extension(&[1; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
        let (rest, parsed) =
            x509_parser::der_parser::der::parse_der_octetstring(&long).expect("parses");
        assert!(rest.is_empty());
        assert_eq!(parsed.as_slice().expect("octets"), &[1u8; 300][..]);
    }
}
