//! # erasure — sealing a blob for untrusted storage
//!
//! Turns one blob version's plaintext into `k + m` fragments that can sit in untrusted
//! object stores, plus a small [`BlobRef`] that goes into TEEMS metadata, and back
//! (DESIGN §9):
//!
//! * [`seal`]: fresh random 256-bit key and 96-bit nonce; AES-256-GCM with the blob id
//!   and version in the associated data; systematic Reed-Solomon split of the
//!   ciphertext into `k` data and `m` parity fragments (`k ≥ 1`, `m ≥ 0`, `k+m ≤ 32`);
//!   BLAKE3 of every stored fragment and of the whole ciphertext.
//! * [`verify_fragment`]: checks one stored fragment against the `BlobRef` (header,
//!   length, BLAKE3 hash) — for a store layer that hedges and repairs as fragments arrive.
//! * [`BlobRef::range_plan`] and [`open_range`]: a plaintext range from parts of the
//!   data fragments, verified through the tree trailer a format 2 fragment carries (the
//!   BLAKE3 chaining value of every 16 KiB of it), decrypted in counter mode.
//! * [`open`]: from any `k` good fragments, verifies each one *before* decoding,
//!   reports exactly which were bad, concatenates (all data fragments good) or
//!   rebuilds from parity, decrypts and authenticates. Fewer than `k` good fragments
//!   is a clear error; unverified data is never returned.
//!
//! The exact bytes of a fragment and of an encoded `BlobRef` are specified in
//! `docs/FORMAT.md` ("Fragments and BlobRef") and pinned by known-answer vectors.
//!
//! **Not here:** no I/O, no object names, no placement, retries, hedging or repair —
//! those belong to the `BlobStore` in `teemsfs`. This crate is pure: bytes in, bytes
//! out. It keeps no secrets beyond the call; the `BlobRef` carries the key and must
//! only travel inside TEEMS metadata.
//!
//! **Performance notes.** Blob and fragment buffers are 4096-aligned
//! ([`AlignedBuf`]) and payloads 64-byte aligned, because this machine's `memcpy`
//! collapses when source and destination are a few bytes apart modulo 4096. The
//! ciphertext is built in place in one arena; Reed-Solomon codecs are cached per
//! layout so small blobs pay no set-up. See `BENCHMARKS.md` for measured throughput.
//!
//! ## Modules
//! * `layout` — [`Layout`] `(k, m)` and [`BlobId`].
//! * `format` — [`BlobRef`] encoding and the fragment header ([`FragmentHeader`]).
//! * `pipeline` — [`seal`], [`seal_with`], [`verify_fragment`], [`open`].
//! * `range` — [`RangePiece`], [`open_range`]: verified ranged reads.
//! * `tree` — the fragment hash as a tree of 16 KiB groups (BLAKE3 `hazmat`).
//! * `code` — the erasure code behind a small trait (Reed-Solomon, GF(2^8)).
//! * `crypto` — AES-256-GCM via ring, identity in the associated data.
//! * `buf` — [`AlignedBuf`], the 4096-aligned buffer everything lives in.
//! * `error` — [`SealError`], [`FragmentError`], [`OpenError`].
//!
//! ## Example
//! ```
//! use erasure::{open, seal, BlobId, BlobRef, Layout};
//!
//! let id = BlobId([7; 16]);
//! let layout = Layout::new(4, 2)?;
//! let sealed = seal(&id, 1, b"hello, untrusted world", layout)?;
//! let metadata_value: Vec<u8> = sealed.blob_ref.encode(); // goes to TEEMS
//!
//! // Later: fresh metadata, and any 4 of the 6 fragments (here 0 and 3 were lost).
//! let blob_ref = BlobRef::decode(&metadata_value)?;
//! let fetched: Vec<Option<&[u8]>> = sealed
//!     .fragments
//!     .iter()
//!     .map(|f| (f.index() != 0 && f.index() != 3).then(|| f.as_bytes()))
//!     .collect();
//! let opened = open(&id, 1, &blob_ref, &fetched)?;
//! assert_eq!(&opened.plaintext[..], b"hello, untrusted world");
//! assert!(opened.bad.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buf;
mod code;
mod crypto;
mod error;
mod format;
#[doc(hidden)]
pub mod fuzz_bodies;
mod layout;
mod pipeline;
mod range;
mod tree;

pub use buf::{AlignedBuf, BUF_ALIGN, BufTooLarge};
pub use code::CodeError;
pub use error::{Corruption, FragmentError, OpenError, SealError};
pub use format::{
    BLOB_REF_FIXED_LEN, BLOB_REF_MAGIC, BlobRef, FORMAT_VERSION, FRAGMENT_FORMAT_VERSION,
    FRAGMENT_HEADER_LEN, FRAGMENT_MAGIC, FormatError, FragmentHeader, MAX_PLAINTEXT_LEN,
    PAYLOAD_ALIGN, TAG_LEN, TREE_CV_LEN, TREE_GROUP_LEN, payload_len_for, tree_trailer_len,
};
pub use layout::{BlobId, Layout, LayoutError, MAX_FRAGMENTS};
pub use pipeline::{
    Fragment, Opened, Sealed, open, seal, seal_with, seal_with_format, verify_fragment,
};
pub use range::{RangePiece, open_range};
