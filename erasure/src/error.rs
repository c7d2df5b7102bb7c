//! Error types of the pipeline. Each names what was wrong and where, so a caller can
//! log it as is and a store layer can act on it (e.g. re-upload exactly the bad
//! fragments).

use crate::buf::BufTooLarge;
use crate::code::CodeError;
use crate::format::FormatError;
use crate::layout::{BlobId, Layout, LayoutError};

/// Why [`crate::seal`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The layout is invalid.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The plaintext exceeds [`crate::MAX_PLAINTEXT_LEN`].
    #[error("plaintext of {len} bytes exceeds the maximum blob size of {max} bytes")]
    TooLarge {
        /// Plaintext length.
        len: u64,
        /// Maximum allowed.
        max: u64,
    },
    /// A fragment format this build does not write.
    #[error("fragment format {0} is not one this build writes (1 or 2)")]
    UnsupportedFormat(u8),
    /// The operating system's random number generator failed.
    #[error("could not draw a fresh key and nonce from the system random number generator")]
    Random,
    /// AES-GCM refused to encrypt (a bug: inputs are validated first).
    #[error("AES-256-GCM encryption failed")]
    Crypto,
    /// The erasure code failed (a bug: inputs are validated first).
    #[error(transparent)]
    Code(#[from] CodeError),
    /// A buffer could not be allocated.
    #[error(transparent)]
    Alloc(#[from] BufTooLarge),
}

/// Why one stored fragment was rejected by [`crate::verify_fragment`] or [`crate::open`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The index is not below `k + m` of the `BlobRef`.
    #[error("fragment index {index} out of range: the blob has {count} fragments")]
    IndexOutOfRange {
        /// Index asked for.
        index: usize,
        /// Fragments in the blob.
        count: usize,
    },
    /// The stored bytes have the wrong length.
    #[error("fragment {index} is {found} bytes, expected {expected}")]
    WrongLength {
        /// Fragment index.
        index: usize,
        /// Length per the `BlobRef`.
        expected: u64,
        /// Length found.
        found: u64,
    },
    /// The header does not parse.
    #[error("fragment {index}: {source}")]
    Format {
        /// Fragment index.
        index: usize,
        /// Parse failure.
        source: FormatError,
    },
    /// The header says it is another fragment of the blob (misplaced object).
    #[error("fragment {index}: header says it is fragment {found}")]
    WrongIndex {
        /// Index expected.
        index: usize,
        /// Index in the header.
        found: usize,
    },
    /// The header names another layout.
    #[error("fragment {index}: header layout {found} differs from the blob's {expected}")]
    WrongLayout {
        /// Fragment index.
        index: usize,
        /// Layout per the `BlobRef`.
        expected: Layout,
        /// Layout in the header.
        found: Layout,
    },
    /// The header names other sealed contents: a fragment of another blob, another
    /// version, or an abandoned write of this version.
    #[error("fragment {index} belongs to other sealed contents (another blob, version or write)")]
    OtherContents {
        /// Fragment index.
        index: usize,
    },
    /// The header names another blob id or version than the caller asked to open.
    #[error("fragment {index} belongs to blob {found_id} version {found_version}")]
    OtherBlob {
        /// Fragment index.
        index: usize,
        /// Blob id in the header.
        found_id: BlobId,
        /// Version in the header.
        found_version: u64,
    },
    /// A format 2 fragment's tree trailer does not match its bytes or the `BlobRef`'s
    /// hash, or a ranged read found no trailer (a format 1 fragment has none).
    #[error("fragment {index}: tree trailer missing or inconsistent with the blob ref")]
    BadTrailer {
        /// Fragment index.
        index: usize,
    },
    /// A ranged read's piece does not fit the blob (not one `BlobRef::range_plan` makes).
    #[error("range piece for fragment {index} does not fit the blob")]
    BadRange {
        /// Fragment index.
        index: usize,
    },
    /// The BLAKE3 hash of the stored bytes differs from the `BlobRef`'s: corrupt.
    #[error("fragment {index} is corrupt: its BLAKE3 hash does not match the blob ref")]
    HashMismatch {
        /// Fragment index.
        index: usize,
    },
}

/// What failed after enough fragments were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// AES-GCM authentication failed: key, nonce, identity or ciphertext is wrong.
    #[error(
        "ciphertext does not authenticate (wrong key, nonce, blob id or version, or altered data)"
    )]
    Authentication,
    /// The ciphertext rebuilt from parity does not have the `BlobRef`'s content hash.
    #[error("ciphertext rebuilt from parity does not match the blob ref's content hash")]
    ContentHash,
}

/// Why [`crate::open`] failed. It never returns unverified data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Fewer than `k` fragments were present and good.
    #[error(
        "cannot open blob: {good} good fragments, {needed} needed (bad: {bad:?}, missing: {missing:?})"
    )]
    NotEnoughFragments {
        /// `k`.
        needed: usize,
        /// Fragments present that verified.
        good: usize,
        /// Fragments present that failed verification.
        bad: Vec<usize>,
        /// Fragments not supplied.
        missing: Vec<usize>,
    },
    /// Verified fragments did not yield the sealed plaintext.
    #[error("blob is corrupt: {0}")]
    Corrupt(Corruption),
    /// The `BlobRef` belongs to another `(id, version)` than the one asked for: its
    /// own (hash-verified) fragments name a different identity.
    #[error(
        "blob ref is for blob {found_id} version {found_version}, not blob {expected_id} version {expected_version}"
    )]
    WrongBlob {
        /// Id asked for.
        expected_id: BlobId,
        /// Version asked for.
        expected_version: u64,
        /// Id the fragments carry.
        found_id: BlobId,
        /// Version the fragments carry.
        found_version: u64,
    },
    /// The fragment slice does not have one slot per fragment.
    #[error("expected {expected} fragment slots (k+m), got {found}")]
    FragmentCount {
        /// `k + m`.
        expected: usize,
        /// Slots given.
        found: usize,
    },
    /// The `BlobRef` is not valid.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The erasure code failed on verified inputs.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// A buffer could not be allocated.
    #[error(transparent)]
    Alloc(#[from] BufTooLarge),
}
