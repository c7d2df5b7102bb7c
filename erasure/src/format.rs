//! The bytes that leave the process: the encoded [`BlobRef`] (stored in TEEMS
//! metadata) and the fragment header (first bytes of every stored fragment).
//! `docs/FORMAT.md`, section "Fragments and BlobRef", is the normative description;
//! keep the two in step, and bump the format version byte on any change.
//!
//! Every decoder here takes untrusted bytes and returns a [`FormatError`] for
//! anything it does not accept; none of them can panic (they are fuzzed and
//! property-tested with arbitrary input).

use std::fmt;

use crate::layout::{BlobId, Layout, LayoutError};

/// Magic bytes opening an encoded [`BlobRef`].
pub const BLOB_REF_MAGIC: [u8; 4] = *b"TSBR";
/// Magic bytes opening every stored fragment.
pub const FRAGMENT_MAGIC: [u8; 4] = *b"TSFG";
/// Format version of the encoded `BlobRef` (and of the fragments of the first format).
pub const FORMAT_VERSION: u8 = 1;
/// Fragment format version this crate writes. Version 2 appends the tree trailer (the
/// BLAKE3 chaining value of every [`TREE_GROUP_LEN`] bytes of header and payload), so a
/// byte range can be verified without the rest of the fragment; version 1 fragments
/// (no trailer) are still read.
pub const FRAGMENT_FORMAT_VERSION: u8 = 2;
/// Bytes of a fragment's hashed part (header and payload) covered by one chaining value
/// of the tree trailer: 16 BLAKE3 chunks, one complete subtree of the fragment's hash.
pub const TREE_GROUP_LEN: u64 = 16 * 1024;
/// Bytes per chaining value in the tree trailer.
pub const TREE_CV_LEN: u64 = 32;
/// Length of the fixed part of an encoded `BlobRef`; `32 * (k + m)` hash bytes follow.
pub const BLOB_REF_FIXED_LEN: usize = 100;
/// Length of the fragment header; the fragment payload starts at this offset. A
/// multiple of 64 so that payloads in page-aligned buffers stay 64-byte aligned.
pub const FRAGMENT_HEADER_LEN: usize = 64;
/// Fragment payload lengths are rounded up to a multiple of this many bytes, so that
/// every data shard inside the contiguous ciphertext buffer starts 64-byte aligned
/// (see the 4K-aliasing note in `buf.rs`).
pub const PAYLOAD_ALIGN: u64 = 64;
/// AES-GCM authentication tag length; the ciphertext is `plaintext || tag`.
pub const TAG_LEN: usize = 16;
/// Largest plaintext a blob may hold (4 GiB). Far above the design's 4 MiB chunks;
/// it bounds what a decoded `BlobRef` may ask `open` to allocate.
pub const MAX_PLAINTEXT_LEN: u64 = 1 << 32;

/// Bytes that are not a valid `BlobRef` or fragment header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the fixed part needs.
    #[error("{what}: {found} bytes is too short (needs at least {needed})")]
    TooShort {
        /// Which structure was being decoded.
        what: &'static str,
        /// Minimum length.
        needed: usize,
        /// Actual length.
        found: usize,
    },
    /// The magic bytes do not match.
    #[error("{what}: bad magic {found:02x?} (expected {expected:02x?})")]
    BadMagic {
        /// Which structure was being decoded.
        what: &'static str,
        /// Expected magic.
        expected: [u8; 4],
        /// Magic found.
        found: [u8; 4],
    },
    /// A format version this build does not read.
    #[error("{what}: unsupported format version {found}")]
    UnsupportedVersion {
        /// Which structure was being decoded.
        what: &'static str,
        /// Version found.
        found: u8,
    },
    /// The `(k, m)` bytes are not a valid layout.
    #[error("{what}: {source}")]
    Layout {
        /// Which structure was being decoded.
        what: &'static str,
        /// Why the layout is invalid.
        source: LayoutError,
    },
    /// A byte that must be zero is not.
    #[error("{what}: reserved byte at offset {offset} is {found:#04x}, must be 0")]
    ReservedNonZero {
        /// Which structure was being decoded.
        what: &'static str,
        /// Offset of the byte.
        offset: usize,
        /// Its value.
        found: u8,
    },
    /// The fragment index is not below `k + m`.
    #[error("fragment header: index {index} out of range for layout {layout}")]
    IndexOutOfRange {
        /// Index found.
        index: u8,
        /// Layout found.
        layout: Layout,
    },
    /// Total length disagrees with what the fixed part implies.
    #[error("{what}: length is {found} bytes, expected exactly {expected}")]
    WrongLength {
        /// Which structure was being decoded.
        what: &'static str,
        /// Length implied by the header.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// Plaintext length above [`MAX_PLAINTEXT_LEN`].
    #[error("blob ref: plaintext length {found} exceeds the maximum {MAX_PLAINTEXT_LEN}")]
    PlaintextTooLarge {
        /// Length found.
        found: u64,
    },
    /// The fragment payload length is not the one the plaintext length and layout imply.
    #[error(
        "blob ref: fragment payload length {found} inconsistent with plaintext length and layout (expected {expected})"
    )]
    InconsistentPayloadLen {
        /// Length implied by plaintext length and `k`.
        expected: u64,
        /// Length found.
        found: u64,
    },
}

/// Length of the tree trailer of a version 2 fragment whose header and payload are
/// `hashed_len` bytes: one chaining value per [`TREE_GROUP_LEN`] bytes, or nothing when
/// they fit in one group (the fragment hash then covers the only group).
pub fn tree_trailer_len(hashed_len: u64) -> u64 {
    let groups = hashed_len.div_ceil(TREE_GROUP_LEN);
    if groups < 2 { 0 } else { groups * TREE_CV_LEN }
}

/// Fragment payload length for a ciphertext of `ciphertext_len` bytes split into `k`
/// data fragments: `ceil(ciphertext_len / k)` rounded up to [`PAYLOAD_ALIGN`].
/// Returns `None` only on overflow (impossible for lengths below `MAX_PLAINTEXT_LEN`).
pub fn payload_len_for(ciphertext_len: u64, k: usize) -> Option<u64> {
    let k = u64::try_from(k).ok().filter(|&k| k > 0)?;
    let per_fragment = ciphertext_len.div_ceil(k);
    per_fragment.checked_next_multiple_of(PAYLOAD_ALIGN)
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(offset..offset + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

fn read_array<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset + N)?.try_into().ok()
}

/// Everything a reader needs to fetch, check and open one sealed blob version:
/// key, nonce, layout, lengths, the BLAKE3 hash of every fragment and of the whole
/// ciphertext. It lives in TEEMS metadata, so it is small (`100 + 32·(k+m)` bytes).
///
/// The fragment hashes here are the authority on what a fragment must be; fragment
/// headers only help to reject a wrong fragment early and with a clear reason.
///
/// A `BlobRef` holds the blob's secret key: its `Debug` output omits it.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub(crate) key: [u8; 32],
    pub(crate) nonce: [u8; 12],
    pub(crate) layout: Layout,
    pub(crate) plaintext_len: u64,
    /// Invariant: equals `payload_len_for(plaintext_len + TAG_LEN, k)`.
    pub(crate) payload_len: u64,
    pub(crate) content_hash: [u8; 32],
    /// Invariant: exactly `layout.total_count()` entries, in fragment index order.
    pub(crate) fragment_hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for BlobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobRef")
            .field("layout", &self.layout)
            .field("plaintext_len", &self.plaintext_len)
            .field("payload_len", &self.payload_len)
            .field("content_hash", &Hex(&self.content_hash))
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl BlobRef {
    const WHAT: &'static str = "blob ref";

    /// The erasure layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The AES-256-GCM key of this blob version.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The AES-GCM nonce of this blob version.
    pub fn nonce(&self) -> &[u8; 12] {
        &self.nonce
    }

    /// Plaintext length in bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Ciphertext length in bytes (plaintext plus the 16-byte tag).
    pub fn ciphertext_len(&self) -> u64 {
        self.plaintext_len + TAG_LEN as u64
    }

    /// Length of each fragment's payload (the ciphertext share), in bytes.
    pub fn fragment_payload_len(&self) -> u64 {
        self.payload_len
    }

    /// Length of each fragment's hashed part (header plus payload), in bytes: the whole
    /// stored fragment in format 1; format 2 appends the tree trailer.
    pub fn fragment_len(&self) -> u64 {
        self.payload_len + FRAGMENT_HEADER_LEN as u64
    }

    /// Length of each stored fragment written in fragment format `format` (1 or 2).
    pub fn stored_fragment_len(&self, format: u8) -> u64 {
        let hashed = self.fragment_len();
        if format >= 2 {
            hashed + tree_trailer_len(hashed)
        } else {
            hashed
        }
    }

    /// BLAKE3 hash of fragment `i`'s hashed part (header and payload).
    pub fn fragment_hash(&self, i: usize) -> Option<&[u8; 32]> {
        self.fragment_hashes.get(i)
    }

    /// BLAKE3 hashes of all fragments, in index order.
    pub fn fragment_hashes(&self) -> &[[u8; 32]] {
        &self.fragment_hashes
    }

    /// BLAKE3 hash of the whole ciphertext (tag included). Identifies the sealed
    /// contents, e.g. as a cache key; it is also written into every fragment header.
    pub fn content_hash(&self) -> [u8; 32] {
        self.content_hash
    }

    /// Encoded length in bytes for this layout.
    pub fn encoded_len(&self) -> usize {
        BLOB_REF_FIXED_LEN + 32 * self.fragment_hashes.len()
    }

    /// The versioned byte encoding stored in TEEMS metadata (docs/FORMAT.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&BLOB_REF_MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.layout.k);
        out.push(self.layout.m);
        out.push(0); // reserved
        out.extend_from_slice(&self.plaintext_len.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.content_hash);
        for hash in &self.fragment_hashes {
            out.extend_from_slice(hash);
        }
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Decodes [`BlobRef::encode`]'s output. Rejects, never panics on, anything else:
    /// wrong magic or version, invalid layout, wrong total length, nonzero reserved
    /// byte, oversized or inconsistent lengths.
    pub fn decode(bytes: &[u8]) -> Result<BlobRef, FormatError> {
        let what = Self::WHAT;
        let too_short = || FormatError::TooShort {
            what,
            needed: BLOB_REF_FIXED_LEN,
            found: bytes.len(),
        };
        if bytes.len() < BLOB_REF_FIXED_LEN {
            return Err(too_short());
        }
        let magic: [u8; 4] = read_array(bytes, 0).ok_or_else(too_short)?;
        if magic != BLOB_REF_MAGIC {
            return Err(FormatError::BadMagic {
                what,
                expected: BLOB_REF_MAGIC,
                found: magic,
            });
        }
        let [version, k, m, reserved] = read_array(bytes, 4).ok_or_else(too_short)?;
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what,
                found: version,
            });
        }
        let layout = Layout::new(k, m).map_err(|source| FormatError::Layout { what, source })?;
        if reserved != 0 {
            return Err(FormatError::ReservedNonZero {
                what,
                offset: 7,
                found: reserved,
            });
        }
        let n = layout.total_count();
        let expected_len = BLOB_REF_FIXED_LEN + 32 * n;
        if bytes.len() != expected_len {
            return Err(FormatError::WrongLength {
                what,
                expected: expected_len,
                found: bytes.len(),
            });
        }
        let plaintext_len = read_u64(bytes, 8).ok_or_else(too_short)?;
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(FormatError::PlaintextTooLarge {
                found: plaintext_len,
            });
        }
        let payload_len = read_u64(bytes, 16).ok_or_else(too_short)?;
        let expected_payload = payload_len_for(plaintext_len + TAG_LEN as u64, layout.data_count())
            .ok_or(FormatError::PlaintextTooLarge {
                found: plaintext_len,
            })?;
        if payload_len != expected_payload {
            return Err(FormatError::InconsistentPayloadLen {
                expected: expected_payload,
                found: payload_len,
            });
        }
        let key = read_array(bytes, 24).ok_or_else(too_short)?;
        let nonce = read_array(bytes, 56).ok_or_else(too_short)?;
        let content_hash = read_array(bytes, 68).ok_or_else(too_short)?;
        let fragment_hashes = bytes
            .get(BLOB_REF_FIXED_LEN..)
            .ok_or_else(too_short)?
            .chunks_exact(32)
            .map(|chunk| read_array(chunk, 0).ok_or_else(too_short))
            .collect::<Result<Vec<[u8; 32]>, _>>()?;
        Ok(BlobRef {
            key,
            nonce,
            layout,
            plaintext_len,
            payload_len,
            content_hash,
            fragment_hashes,
        })
    }
}

/// The parsed first [`FRAGMENT_HEADER_LEN`] bytes of a stored fragment. It names the
/// blob, version, sealed contents and position the fragment belongs to, so a fragment
/// placed under the wrong name, left over from another write, or from another blob is
/// rejected with a precise reason before any hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Fragment format version: 1 (no trailer) or 2 (tree trailer after the payload).
    pub format: u8,
    /// Fragment index, `< k + m`; data fragments come first.
    pub index: u8,
    /// Layout of the blob the fragment belongs to.
    pub layout: Layout,
    /// Blob the fragment belongs to.
    pub blob_id: BlobId,
    /// Blob version the fragment belongs to.
    pub version: u64,
    /// BLAKE3 hash of the whole ciphertext of that blob version.
    pub content_hash: [u8; 32],
}

impl FragmentHeader {
    const WHAT: &'static str = "fragment header";

    /// The header bytes.
    pub fn encode(&self) -> [u8; FRAGMENT_HEADER_LEN] {
        let mut out = [0u8; FRAGMENT_HEADER_LEN];
        out[0..4].copy_from_slice(&FRAGMENT_MAGIC);
        out[4] = self.format;
        out[5] = self.index;
        out[6] = self.layout.k;
        out[7] = self.layout.m;
        out[8..24].copy_from_slice(&self.blob_id.0);
        out[24..32].copy_from_slice(&self.version.to_le_bytes());
        out[32..64].copy_from_slice(&self.content_hash);
        out
    }

    /// Parses the header at the start of `stored` and returns it with the payload
    /// (the bytes after the header). Checks only what the header itself can tell;
    /// [`crate::verify_fragment`] checks it against a `BlobRef`.
    pub fn parse(stored: &[u8]) -> Result<(FragmentHeader, &[u8]), FormatError> {
        let what = Self::WHAT;
        let too_short = || FormatError::TooShort {
            what,
            needed: FRAGMENT_HEADER_LEN,
            found: stored.len(),
        };
        let (head, payload) = stored
            .split_at_checked(FRAGMENT_HEADER_LEN)
            .ok_or_else(too_short)?;
        let magic: [u8; 4] = read_array(head, 0).ok_or_else(too_short)?;
        if magic != FRAGMENT_MAGIC {
            return Err(FormatError::BadMagic {
                what,
                expected: FRAGMENT_MAGIC,
                found: magic,
            });
        }
        let [version, index, k, m] = read_array(head, 4).ok_or_else(too_short)?;
        if version != 1 && version != FRAGMENT_FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what,
                found: version,
            });
        }
        let layout = Layout::new(k, m).map_err(|source| FormatError::Layout { what, source })?;
        if usize::from(index) >= layout.total_count() {
            return Err(FormatError::IndexOutOfRange { index, layout });
        }
        let blob_id = BlobId(read_array(head, 8).ok_or_else(too_short)?);
        let blob_version = read_u64(head, 24).ok_or_else(too_short)?;
        let content_hash = read_array(head, 32).ok_or_else(too_short)?;
        let header = FragmentHeader {
            format: version,
            index,
            layout,
            blob_id,
            version: blob_version,
            content_hash,
        };
        Ok((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_len_rounds_up_to_64() {
        assert_eq!(payload_len_for(16, 1), Some(64));
        assert_eq!(payload_len_for(64, 1), Some(64));
        assert_eq!(payload_len_for(65, 1), Some(128));
        assert_eq!(payload_len_for(4096 + 16, 4), Some(1088));
        assert_eq!(payload_len_for(100, 0), None);
        assert_eq!(payload_len_for(u64::MAX, 1), None);
    }

    #[test]
    fn fragment_header_round_trips() {
        let header = FragmentHeader {
            format: FRAGMENT_FORMAT_VERSION,
            index: 5,
            layout: Layout { k: 4, m: 2 },
            blob_id: BlobId([7; 16]),
            version: 0x0102_0304_0506_0708,
            content_hash: [9; 32],
        };
        let mut stored = header.encode().to_vec();
        stored.extend_from_slice(b"payload");
        let (parsed, payload) = FragmentHeader::parse(&stored).expect("valid header");
        assert_eq!(parsed, header);
        assert_eq!(payload, b"payload");
    }

    #[test]
    fn fragment_header_rejects_bad_fields() {
        let header = FragmentHeader {
            format: FRAGMENT_FORMAT_VERSION,
            index: 1,
            layout: Layout { k: 2, m: 1 },
            blob_id: BlobId([1; 16]),
            version: 3,
            content_hash: [2; 32],
        };
        let good = header.encode();
        let mut bad = good;
        bad[0] ^= 1;
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(FormatError::BadMagic { .. })
        ));
        let mut bad = good;
        bad[4] = 3;
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(FormatError::UnsupportedVersion { found: 3, .. })
        ));
        let mut old = good;
        old[4] = 1;
        assert_eq!(FragmentHeader::parse(&old).map(|(h, _)| h.format), Ok(1));
        let mut bad = good;
        bad[5] = 3;
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(FormatError::IndexOutOfRange { index: 3, .. })
        ));
        let mut bad = good;
        bad[6] = 0;
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(FormatError::Layout { .. })
        ));
        assert!(matches!(
            FragmentHeader::parse(&good[..63]),
            Err(FormatError::TooShort { .. })
        ));
    }
}
