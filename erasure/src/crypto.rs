//! AES-256-GCM (ring) with the blob identity as associated data.
//!
//! ring 0.17 was measured fastest here (LIBRARIES.md, BENCHMARKS.md); it only offers
//! in-place operation on one contiguous buffer, which is why the pipeline assembles the
//! ciphertext in one aligned arena.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::format::TAG_LEN;
use crate::layout::BlobId;

/// Domain separator leading the associated data; a different use of the same key
/// material (there is none today) could never produce a valid blob ciphertext.
const AAD_DOMAIN: &[u8; 16] = b"teemsfs-blob-v1\0";

/// Length of the associated data: domain, blob id, version.
const AAD_LEN: usize = 16 + 16 + 8;

/// The associated data binding a ciphertext to `(id, version)`.
fn aad(id: &BlobId, version: u64) -> [u8; AAD_LEN] {
    let mut out = [0u8; AAD_LEN];
    out[..16].copy_from_slice(AAD_DOMAIN);
    out[16..32].copy_from_slice(&id.0);
    out[32..].copy_from_slice(&version.to_le_bytes());
    out
}

/// AES-GCM refused the operation (for `open`: the ciphertext does not authenticate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CryptoFailure;

fn key(raw: &[u8; 32]) -> Result<LessSafeKey, CryptoFailure> {
    UnboundKey::new(&AES_256_GCM, raw)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoFailure)
}

/// Encrypts `buf[..plaintext_len]` in place and writes the tag right after it, so
/// `buf[..plaintext_len + 16]` becomes the ciphertext.
pub(crate) fn seal_in_place(
    raw_key: &[u8; 32],
    nonce: &[u8; 12],
    id: &BlobId,
    version: u64,
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<(), CryptoFailure> {
    let key = key(raw_key)?;
    let aad = aad(id, version);
    let (plaintext, rest) = buf
        .split_at_mut_checked(plaintext_len)
        .ok_or(CryptoFailure)?;
    let tag_slot = rest.get_mut(..TAG_LEN).ok_or(CryptoFailure)?;
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(&aad),
            plaintext,
        )
        .map_err(|_| CryptoFailure)?;
    tag_slot.copy_from_slice(tag.as_ref());
    Ok(())
}

/// Authenticates and decrypts `ciphertext` (plaintext || tag) in place; on success
/// the first `ciphertext.len() - 16` bytes are the plaintext. On failure the buffer
/// contents are unspecified and must not be used.
pub(crate) fn open_in_place(
    raw_key: &[u8; 32],
    nonce: &[u8; 12],
    id: &BlobId,
    version: u64,
    ciphertext: &mut [u8],
) -> Result<(), CryptoFailure> {
    let key = key(raw_key)?;
    let aad = aad(id, version);
    key.open_in_place(
        Nonce::assume_unique_for_key(*nonce),
        Aad::from(&aad),
        ciphertext,
    )
    .map(|_| ())
    .map_err(|_| CryptoFailure)
}

/// Decrypts (or encrypts) `buf` in place as the bytes at `offset` of an AES-256-GCM
/// ciphertext under `raw_key` and `nonce`. GCM encrypts with AES in counter mode, the
/// counter block being the 96-bit nonce and a 32-bit big-endian counter that starts at 2
/// for the first plaintext block. This does **not** authenticate: only for bytes already
/// verified another way (the fragment hashes of a ranged read).
pub(crate) fn ctr_apply(raw_key: &[u8; 32], nonce: &[u8; 12], offset: u64, buf: &mut [u8]) {
    use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    let mut iv = [0u8; 16];
    iv[..12].copy_from_slice(nonce);
    iv[15] = 2;
    let mut cipher = ctr::Ctr32BE::<aes::Aes256>::new(raw_key.into(), &iv.into());
    cipher.seek(offset);
    cipher.apply_keystream(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_mode_at_any_offset_matches_gcm() {
        let id = BlobId([5; 16]);
        let plain: Vec<u8> = (0..5000u32).map(|i| (i * 13 + 7) as u8).collect();
        let mut buf = plain.clone();
        buf.extend_from_slice(&[0; TAG_LEN]);
        seal_in_place(&[9; 32], &[8; 12], &id, 3, &mut buf, plain.len()).expect("seal");
        for (start, len) in [
            (0, 5000),
            (0, 1),
            (15, 2),
            (16, 16),
            (17, 4096),
            (4999, 1),
            (1234, 0),
        ] {
            let mut part = buf[start..start + len].to_vec();
            ctr_apply(&[9; 32], &[8; 12], start as u64, &mut part);
            assert_eq!(part, &plain[start..start + len], "range {start}+{len}");
        }
    }

    #[test]
    fn identity_is_bound() {
        let id = BlobId([1; 16]);
        let mut buf = b"secret bytes\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        seal_in_place(&[3; 32], &[4; 12], &id, 7, &mut buf, 12).expect("seal");
        assert_ne!(&buf[..12], b"secret bytes");
        let mut other_version = buf.clone();
        assert!(open_in_place(&[3; 32], &[4; 12], &id, 8, &mut other_version).is_err());
        let mut other_id = buf.clone();
        assert!(open_in_place(&[3; 32], &[4; 12], &BlobId([2; 16]), 7, &mut other_id).is_err());
        open_in_place(&[3; 32], &[4; 12], &id, 7, &mut buf).expect("open");
        assert_eq!(&buf[..12], b"secret bytes");
    }
}
