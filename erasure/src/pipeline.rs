//! seal and open: the whole path between a plaintext and its stored fragments
//! (DESIGN §9, "Writing a blob version" steps 1–3 and the read path's
//! "decode, decrypt, verify").

use ring::rand::{SecureRandom, SystemRandom};

use crate::buf::{AlignedBuf, Part};
use crate::code::codec_for;
use crate::crypto;
use crate::error::{Corruption, FragmentError, OpenError, SealError};
use crate::format::{
    BlobRef, FRAGMENT_FORMAT_VERSION, FRAGMENT_HEADER_LEN, FragmentHeader, MAX_PLAINTEXT_LEN,
    TAG_LEN, payload_len_for, tree_trailer_len,
};
use crate::layout::{BlobId, Layout};
use crate::tree;

/// One stored fragment: exactly the bytes to put in an object store (a
/// [`FRAGMENT_HEADER_LEN`]-byte header, the payload, and in format 2 the tree trailer),
/// in a 4096-aligned buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Fragment {
    index: u8,
    /// Header plus payload: the bytes the fragment hash covers.
    hashed_len: usize,
    bytes: AlignedBuf,
}

impl Fragment {
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Position in the blob: `0..k` are data fragments, `k..k+m` parity.
    pub fn index(&self) -> usize {
        usize::from(self.index)
    }

    /// The payload (the bytes after the header, before any trailer).
    pub fn payload(&self) -> &[u8] {
        self.bytes
            .get(FRAGMENT_HEADER_LEN..self.hashed_len)
            .unwrap_or_default()
    }

    /// Gives up the aligned buffer holding [`Fragment::as_bytes`].
    pub fn into_buf(self) -> AlignedBuf {
        self.bytes
    }
}

impl AsRef<[u8]> for Fragment {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for Fragment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Fragment {{ index: {}, len: {}, hashed: {} }}",
            self.index,
            self.bytes.len(),
            self.hashed_len
        )
    }
}

/// The result of sealing one blob version.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Goes into TEEMS metadata (encode with [`BlobRef::encode`]).
    pub blob_ref: BlobRef,
    /// `k + m` fragments in index order, one per store.
    pub fragments: Vec<Fragment>,
}

/// The result of opening a blob version.
#[derive(Debug)]
pub struct Opened {
    /// The verified plaintext (4096-aligned; derefs to `[u8]`).
    pub plaintext: AlignedBuf,
    /// Indices of supplied fragments that failed verification, ascending. A store
    /// layer re-uploads these (read repair).
    pub bad: Vec<usize>,
    /// Why each entry of `bad` failed, in the same order.
    pub failures: Vec<(usize, FragmentError)>,
}

/// Seals `plaintext` as version `version` of blob `id` under a fresh random key and
/// nonce (from the operating system via ring's `SystemRandom`).
pub fn seal(
    id: &BlobId,
    version: u64,
    plaintext: &[u8],
    layout: Layout,
) -> Result<Sealed, SealError> {
    let rng = SystemRandom::new();
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    rng.fill(&mut key).map_err(|_| SealError::Random)?;
    rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
    seal_with(id, version, plaintext, layout, key, nonce)
}

/// [`seal`] with a caller-chosen key and nonce. Deterministic; meant for known-answer
/// vectors and tests. A key/nonce pair must never seal two different plaintexts.
pub fn seal_with(
    id: &BlobId,
    version: u64,
    plaintext: &[u8],
    layout: Layout,
    key: [u8; 32],
    nonce: [u8; 12],
) -> Result<Sealed, SealError> {
    seal_with_format(
        id,
        version,
        plaintext,
        layout,
        key,
        nonce,
        FRAGMENT_FORMAT_VERSION,
    )
}

/// [`seal_with`] writing fragment format `format`: 2 (what [`seal`] writes) or 1 (no
/// tree trailer, as builds before format 2 wrote). Read repair re-seals a damaged
/// fragment in the format its blob was written in, so that it matches the `BlobRef`.
pub fn seal_with_format(
    id: &BlobId,
    version: u64,
    plaintext: &[u8],
    layout: Layout,
    key: [u8; 32],
    nonce: [u8; 12],
    format: u8,
) -> Result<Sealed, SealError> {
    if format != 1 && format != FRAGMENT_FORMAT_VERSION {
        return Err(SealError::UnsupportedFormat(format));
    }
    let layout = layout.validate()?;
    let plaintext_len = plaintext.len();
    let too_large = SealError::TooLarge {
        len: plaintext_len as u64,
        max: MAX_PLAINTEXT_LEN,
    };
    if plaintext_len as u64 > MAX_PLAINTEXT_LEN {
        return Err(too_large);
    }
    let k = layout.data_count();
    let n = layout.total_count();
    let ciphertext_len = plaintext_len + TAG_LEN;
    let payload_len = payload_len_for(ciphertext_len as u64, k).ok_or(too_large.clone())?;
    let payload_usize = usize::try_from(payload_len).map_err(|_| too_large.clone())?;
    let arena_len = payload_usize.checked_mul(k).ok_or(too_large.clone())?;

    // One contiguous aligned arena holds the ciphertext followed by zero padding up
    // to k whole shards: ring encrypts in place, and the data shards are its slices.
    let mut arena = AlignedBuf::from_parts(&[
        Part::Bytes(plaintext),
        Part::Zeros(arena_len - plaintext_len),
    ])?;
    crypto::seal_in_place(&key, &nonce, id, version, &mut arena, plaintext_len)
        .map_err(|_| SealError::Crypto)?;
    let ciphertext = arena.get(..ciphertext_len).ok_or(SealError::Crypto)?;
    let content_hash: [u8; 32] = *blake3::hash(ciphertext).as_bytes();

    let hashed_len = FRAGMENT_HEADER_LEN + payload_usize;
    let trailer_len = if format >= 2 {
        usize::try_from(tree_trailer_len(hashed_len as u64)).map_err(|_| too_large)?
    } else {
        0
    };
    let header_for = |index: usize| {
        FragmentHeader {
            format,
            index: u8::try_from(index).unwrap_or(u8::MAX), // index < n <= 32
            layout,
            blob_id: *id,
            version,
            content_hash,
        }
        .encode()
    };
    let mut fragments: Vec<Fragment> = Vec::with_capacity(n);
    for (index, shard) in arena.chunks_exact(payload_usize).enumerate() {
        let header = header_for(index);
        let bytes = AlignedBuf::from_parts(&[
            Part::Bytes(&header),
            Part::Bytes(shard),
            Part::Zeros(trailer_len),
        ])?;
        fragments.push(Fragment {
            index: header[5],
            hashed_len,
            bytes,
        });
    }
    for index in k..n {
        let header = header_for(index);
        let bytes = AlignedBuf::from_parts(&[
            Part::Bytes(&header),
            Part::Zeros(payload_usize + trailer_len),
        ])?;
        fragments.push(Fragment {
            index: header[5],
            hashed_len,
            bytes,
        });
    }
    if layout.m > 0 {
        let codec = codec_for(layout)?;
        let data: Vec<&[u8]> = arena.chunks_exact(payload_usize).collect();
        let mut parity: Vec<&mut [u8]> = fragments
            .iter_mut()
            .skip(k)
            .map(|fragment| {
                fragment
                    .bytes
                    .get_mut(FRAGMENT_HEADER_LEN..hashed_len)
                    .unwrap_or_default()
            })
            .collect();
        codec.encode(&data, &mut parity)?;
    }
    let fragment_hashes: Vec<[u8; 32]> = fragments
        .iter_mut()
        .map(|fragment| hash_fragment(fragment, trailer_len))
        .collect::<Result<_, _>>()?;
    let blob_ref = BlobRef {
        key,
        nonce,
        layout,
        plaintext_len: plaintext_len as u64,
        payload_len,
        content_hash,
        fragment_hashes,
    };
    Ok(Sealed {
        blob_ref,
        fragments,
    })
}

/// Hashes a sealed fragment's header and payload and, when it has a tree trailer,
/// fills the trailer with the groups' chaining values computed on the way (one pass).
fn hash_fragment(fragment: &mut Fragment, trailer_len: usize) -> Result<[u8; 32], SealError> {
    let (hashed, trailer) = fragment
        .bytes
        .split_at_mut_checked(fragment.hashed_len)
        .ok_or(SealError::Crypto)?;
    if trailer_len == 0 {
        return Ok(*blake3::hash(hashed).as_bytes());
    }
    let (root, cvs) = tree::hash_with_trailer(hashed).ok_or(SealError::Crypto)?;
    for (slot, cv) in trailer.chunks_exact_mut(32).zip(&cvs) {
        slot.copy_from_slice(cv);
    }
    Ok(root)
}

/// Checks stored fragment `index` against `blob_ref`: header (parses; right index,
/// layout and sealed contents), length, then the BLAKE3 hash, which is the authority.
/// A store layer calls this as each fragment arrives, to hedge or repair early.
pub fn verify_fragment(
    blob_ref: &BlobRef,
    index: usize,
    stored: &[u8],
) -> Result<(), FragmentError> {
    check_fragment(blob_ref, index, stored).map(|_| ())
}

/// [`verify_fragment`], returning the parsed header.
fn check_fragment(
    blob_ref: &BlobRef,
    index: usize,
    stored: &[u8],
) -> Result<FragmentHeader, FragmentError> {
    let count = blob_ref.layout.total_count();
    let expected_hash = blob_ref
        .fragment_hash(index)
        .ok_or(FragmentError::IndexOutOfRange { index, count })?;
    let (header, _payload) =
        FragmentHeader::parse(stored).map_err(|source| FragmentError::Format { index, source })?;
    if usize::from(header.index) != index {
        return Err(FragmentError::WrongIndex {
            index,
            found: usize::from(header.index),
        });
    }
    if header.layout != blob_ref.layout {
        return Err(FragmentError::WrongLayout {
            index,
            expected: blob_ref.layout,
            found: header.layout,
        });
    }
    if header.content_hash != blob_ref.content_hash {
        return Err(FragmentError::OtherContents { index });
    }
    let expected_len = blob_ref.stored_fragment_len(header.format);
    if stored.len() as u64 != expected_len {
        return Err(FragmentError::WrongLength {
            index,
            expected: expected_len,
            found: stored.len() as u64,
        });
    }
    let hashed_len = usize::try_from(blob_ref.fragment_len()).unwrap_or(usize::MAX);
    let (hashed, trailer) = stored
        .split_at_checked(hashed_len)
        .ok_or(FragmentError::HashMismatch { index })?;
    if trailer.is_empty() {
        if blake3::hash(hashed).as_bytes() != expected_hash {
            return Err(FragmentError::HashMismatch { index });
        }
        return Ok(header);
    }
    // Format 2: the same single pass yields the hash and the trailer it must carry.
    let (root, cvs) = tree::hash_with_trailer(hashed).ok_or(FragmentError::BadTrailer { index })?;
    if &root != expected_hash {
        return Err(FragmentError::HashMismatch { index });
    }
    if tree::parse_trailer(trailer, hashed_len as u64).as_ref() != Some(&cvs) {
        return Err(FragmentError::BadTrailer { index });
    }
    Ok(header)
}

/// Opens version `version` of blob `id` from the fragments at hand:
/// `fragments[i]` holds the stored bytes of fragment `i`, or `None` if not fetched.
///
/// Every supplied fragment is verified (header and BLAKE3 hash) before anything is
/// decoded; failures are listed in [`Opened::bad`]. With all `k` data fragments good
/// the ciphertext is their concatenation (no decoding); otherwise missing data
/// fragments are rebuilt from parity and the rebuilt ciphertext is checked against
/// the content hash. Decryption then authenticates everything against the key,
/// nonce and `(id, version)`. Fewer than `k` good fragments is
/// [`OpenError::NotEnoughFragments`]; unverified bytes are never returned.
pub fn open(
    id: &BlobId,
    version: u64,
    blob_ref: &BlobRef,
    fragments: &[Option<&[u8]>],
) -> Result<Opened, OpenError> {
    let layout = blob_ref
        .layout
        .validate()
        .map_err(|source| crate::FormatError::Layout {
            what: "blob ref",
            source,
        })?;
    let k = layout.data_count();
    let n = layout.total_count();
    if fragments.len() != n {
        return Err(OpenError::FragmentCount {
            expected: n,
            found: fragments.len(),
        });
    }

    // 1. Verify every supplied fragment before decoding (DESIGN §9, read path).
    let mut good: Vec<Option<&[u8]>> = vec![None; n];
    let mut bad = Vec::new();
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    for (index, slot) in fragments.iter().enumerate() {
        let Some(stored) = slot else {
            missing.push(index);
            continue;
        };
        match check_fragment(blob_ref, index, stored) {
            Ok(header) => {
                if header.blob_id != *id || header.version != version {
                    // The fragment matches the BlobRef's own hash, so the BlobRef
                    // itself was sealed for another identity: no fragment can help.
                    return Err(OpenError::WrongBlob {
                        expected_id: *id,
                        expected_version: version,
                        found_id: header.blob_id,
                        found_version: header.version,
                    });
                }
                let hashed_len = usize::try_from(blob_ref.fragment_len()).unwrap_or(usize::MAX);
                good[index] = stored.get(FRAGMENT_HEADER_LEN..hashed_len);
            }
            Err(error) => {
                bad.push(index);
                failures.push((index, error));
            }
        }
    }
    let good_count = good.iter().flatten().count();
    if good_count < k {
        return Err(OpenError::NotEnoughFragments {
            needed: k,
            good: good_count,
            bad,
            missing,
        });
    }

    // 2. Assemble the ciphertext: data payloads in order, zeros where one must be rebuilt.
    let payload_len = usize::try_from(blob_ref.payload_len).map_err(|_| {
        crate::FormatError::PlaintextTooLarge {
            found: blob_ref.plaintext_len,
        }
    })?;
    let parts: Vec<Part<'_>> = good
        .iter()
        .take(k)
        .map(|slot| match slot {
            Some(payload) => Part::Bytes(payload),
            None => Part::Zeros(payload_len),
        })
        .collect();
    let mut arena = AlignedBuf::from_parts(&parts)?;
    let ciphertext_len = usize::try_from(blob_ref.ciphertext_len()).map_err(|_| {
        crate::FormatError::PlaintextTooLarge {
            found: blob_ref.plaintext_len,
        }
    })?;
    let data_present: Vec<bool> = good.iter().take(k).map(Option::is_some).collect();
    if data_present.iter().any(|present| !present) {
        // 3. Rebuild missing data shards from parity, in place in the arena.
        let codec = codec_for(layout)?;
        let mut data: Vec<&mut [u8]> = arena.chunks_exact_mut(payload_len).collect();
        codec.reconstruct_data(&mut data, &data_present, &good[k..])?;
        // The rebuilt bytes were covered by no fragment hash; check them as a whole
        // so a decoder fault shows as such, not as an authentication failure.
        let rebuilt = arena
            .get(..ciphertext_len)
            .ok_or(OpenError::Corrupt(Corruption::ContentHash))?;
        if *blake3::hash(rebuilt).as_bytes() != blob_ref.content_hash {
            return Err(OpenError::Corrupt(Corruption::ContentHash));
        }
    }

    // 4. Decrypt and authenticate in place.
    let ciphertext = arena
        .get_mut(..ciphertext_len)
        .ok_or(OpenError::Corrupt(Corruption::Authentication))?;
    crypto::open_in_place(&blob_ref.key, &blob_ref.nonce, id, version, ciphertext)
        .map_err(|_| OpenError::Corrupt(Corruption::Authentication))?;
    arena.truncate(ciphertext_len - TAG_LEN);
    Ok(Opened {
        plaintext: arena,
        bad,
        failures,
    })
}
