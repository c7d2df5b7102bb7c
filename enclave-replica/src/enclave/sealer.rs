//! Sealing: authenticated encryption of replica state under a key that only
//! this replica's enclave holds (DESIGN §8).
//!
//! [`Sealer`] is the seam between the replica and its TEE. The software
//! implementation, [`SoftwareSealer`], derives an AES-256-GCM key with HKDF
//! from the 32-byte secret that `teemsfs cluster init` wrote into the replica's
//! directory. What that buys, and what it does not, is spelled out in
//! `docs/FAULT_MODEL.md`; in short: it protects sealed state from anyone who
//! sees the disk but *not* the secret file. A host that can read the secret
//! file can read and forge sealed state — exactly what real TEE hardware
//! (SGX `EGETKEY`, SEV-SNP `MSG_KEY_REQ`, TDX via a key broker) prevents by
//! never letting the key leave the CPU.
//!
//! Neither implementation protects *freshness*: an older sealed blob unseals
//! fine. That is the restart-rollback fault the RR protocols tolerate
//! (DESIGN §1, §4), not something sealing tries to stop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// Seal and unseal bytes with associated data, under a key bound to this
/// replica. Implementations must be safe to call from several threads.
pub trait Sealer: Send + Sync {
    /// Encrypt and authenticate `plaintext`, binding `aad` (which is *not*
    /// stored in the output: the caller must supply the same bytes to unseal).
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Inverse of [`Sealer::seal`]. Any change to `sealed` or `aad`, or a blob
    /// sealed under another key, is [`SealError::Authentication`].
    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError>;
}

/// Sealing or unsealing failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed blob is {len_bytes} bytes, shorter than the {min_bytes}-byte envelope")]
    TooShort { len_bytes: usize, min_bytes: usize },
    #[error("sealed blob has format version {found}, this build reads version {expected}")]
    UnknownFormat { found: u8, expected: u8 },
    /// Wrong key, wrong associated data, or modified bytes. AES-GCM cannot
    /// tell these apart, and on purpose neither do we.
    #[error("sealed blob failed authentication (tampered, misplaced, or sealed by another key)")]
    Authentication,
    #[error("system random number generator failed")]
    Random,
}

/// The sealing secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SealerSetupError {
    #[error("cannot read sealing secret {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("sealing secret {path} holds {len_bytes} bytes, expected {expected_bytes}")]
    WrongLength {
        path: PathBuf,
        len_bytes: usize,
        expected_bytes: usize,
    },
    #[error(
        "sealing secret {path} has mode {mode:o}; it must be readable by its owner only (0600) \
         — it is the emulated enclave's root key"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// Format byte at the front of every sealed blob, so a future format (or a
/// hardware backend's) can be told apart instead of failing authentication.
const FORMAT_V1: u8 = 1;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Envelope: format byte, nonce, tag.
const ENVELOPE_BYTES: usize = 1 + NONCE_BYTES + TAG_BYTES;

/// HKDF salt: fixed and public. It separates our derivation from any other
/// use of the same secret; secrecy comes from the secret alone.
const HKDF_SALT: &[u8] = b"teemsfs sealing key derivation salt v1";

/// Software [`Sealer`]: AES-256-GCM (ring) under a key derived by HKDF-SHA256
/// from the per-replica secret.
///
/// Nonces are 96 random bits per seal. A counter would be cheaper but is
/// unsafe here: after a rollback the replica would restart the counter from an
/// older value and reuse nonces under the same key, which breaks GCM. Random
/// nonces stay safe for well over 2^32 seals per key, far beyond a replica's
/// life between re-provisionings.
pub struct SoftwareSealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SoftwareSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("SoftwareSealer { .. }")
    }
}

impl SoftwareSealer {
    /// Length of the provisioned sealing secret.
    pub const SECRET_BYTES: usize = 32;

    /// Derive the sealing key from the replica's secret. `replica_id` goes
    /// into the HKDF info, so even two replicas given the same secret by
    /// mistake cannot unseal each other's state.
    pub fn from_secret(secret: &[u8; Self::SECRET_BYTES], replica_id: u32) -> SoftwareSealer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let id_be = replica_id.to_be_bytes();
        let info: [&[u8]; 2] = [b"teemsfs sealing key v1 replica ", &id_be];
        // expand() fails only when the requested length exceeds 255 hash
        // blocks; 32 bytes never does, so this is an invariant, not input.
        let okm = prk
            .expand(&info, &aead::AES_256_GCM)
            .expect("HKDF output of 32 bytes is always valid");
        let key = LessSafeKey::new(UnboundKey::from(okm));
        SoftwareSealer {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// Read the secret from the file `teemsfs cluster init` wrote. Refuses a
    /// file that group or others may read: on a real host that would leak the
    /// emulated enclave's root key.
    pub fn from_secret_file(
        path: &Path,
        replica_id: u32,
    ) -> Result<SoftwareSealer, SealerSetupError> {
        let read_err = |source| SealerSetupError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SealerSetupError::TooOpen {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let bytes = fs::read(path).map_err(read_err)?;
        let secret: [u8; Self::SECRET_BYTES] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SealerSetupError::WrongLength {
                    path: path.to_path_buf(),
                    len_bytes: bytes.len(),
                    expected_bytes: Self::SECRET_BYTES,
                })?;
        Ok(SoftwareSealer::from_secret(&secret, replica_id))
    }
}

impl Sealer for SoftwareSealer {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce_bytes = [0u8; NONCE_BYTES];
        self.rng
            .fill(&mut nonce_bytes)
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(ENVELOPE_BYTES + plaintext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        // The format byte is authenticated too, through the AAD.
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(full_aad(aad)),
                &mut body,
            )
            .map_err(|_| SealError::Authentication)?;
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < ENVELOPE_BYTES {
            return Err(SealError::TooShort {
                len_bytes: sealed.len(),
                min_bytes: ENVELOPE_BYTES,
            });
        }
        let (format, rest) = sealed.split_at(1);
        if format != [FORMAT_V1] {
            return Err(SealError::UnknownFormat {
                found: format.first().copied().unwrap_or(0),
                expected: FORMAT_V1,
            });
        }
        let (nonce_bytes, ciphertext_and_tag) = rest.split_at(NONCE_BYTES);
        let nonce_bytes: [u8; NONCE_BYTES] = nonce_bytes
            .try_into()
            .map_err(|_| SealError::Authentication)?;
        let mut buf = ciphertext_and_tag.to_vec();
        let plain_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(full_aad(aad)),
                &mut buf,
            )
            .map_err(|_| SealError::Authentication)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + aad.len());
    v.push(FORMAT_V1);
    v.extend_from_slice(aad);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(seed: u8, replica_id: u32) -> SoftwareSealer {
        SoftwareSealer::from_secret(&[seed; 32], replica_id)
    }

    #[test]
    fn round_trip_with_aad() {
        let s = sealer(1, 1);
        let sealed = s.seal(b"pos 7", b"state bytes").expect("seal");
        assert_eq!(sealed.len(), ENVELOPE_BYTES + 11);
        assert_eq!(s.unseal(b"pos 7", &sealed).expect("unseal"), b"state bytes");
        // Same plaintext twice gives different blobs (fresh nonce).
        assert_ne!(s.seal(b"pos 7", b"state bytes").expect("seal"), sealed);
        assert_eq!(
            s.unseal(b"", &s.seal(b"", b"").expect("seal"))
                .expect("unseal"),
            b""
        );
    }

    #[test]
    fn wrong_aad_tamper_and_other_keys_fail_authentication() {
        let s = sealer(1, 1);
        let sealed = s.seal(b"pos 7", b"state").expect("seal");
        assert_eq!(s.unseal(b"pos 8", &sealed), Err(SealError::Authentication));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            if let Some(b) = bad.get_mut(i) {
                *b ^= 0x01;
            }
            assert!(
                s.unseal(b"pos 7", &bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        // Another replica (different secret) and the same secret under another
        // replica id are both strangers.
        assert_eq!(
            sealer(2, 1).unseal(b"pos 7", &sealed),
            Err(SealError::Authentication)
        );
        assert_eq!(
            sealer(1, 2).unseal(b"pos 7", &sealed),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn short_and_garbage_inputs_are_errors() {
        let s = sealer(1, 1);
        for len in 0..ENVELOPE_BYTES {
            assert!(matches!(
                s.unseal(b"", &vec![FORMAT_V1; len]),
                Err(SealError::TooShort { .. })
            ));
        }
        assert_eq!(
            s.unseal(b"", &[9u8; 40]),
            Err(SealError::UnknownFormat {
                found: 9,
                expected: FORMAT_V1
            })
        );
        assert_eq!(
            s.unseal(b"", &[FORMAT_V1; 40]),
            Err(SealError::Authentication)
        );
    }

    #[cfg(unix)]
    #[test]
    fn secret_file_must_be_private_and_32_bytes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sealing.key");
        fs::write(&path, [5u8; 32]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            SoftwareSealer::from_secret_file(&path, 1),
            Err(SealerSetupError::TooOpen { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let from_file = SoftwareSealer::from_secret_file(&path, 1).expect("load");
        let sealed = sealer(5, 1).seal(b"a", b"b").expect("seal");
        assert_eq!(from_file.unseal(b"a", &sealed).expect("unseal"), b"b");
        fs::write(&path, [5u8; 31]).expect("write");
        assert!(matches!(
            SoftwareSealer::from_secret_file(&path, 1),
            Err(SealerSetupError::WrongLength { len_bytes: 31, .. })
        ));
    }
}
