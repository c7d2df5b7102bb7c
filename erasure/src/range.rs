//! Ranged reads: a few plaintext bytes from parts of the data fragments
//! (docs/FORMAT.md F6).
//!
//! The ciphertext lies in the data payloads in order, so plaintext byte `p` is byte
//! `64 + p mod L` of data fragment `p / L`. A reader fetches, for each data fragment a
//! range touches, the [`TREE_GROUP_LEN`] groups covering it and the fragment's tree
//! trailer; [`open_range`] checks the trailer against the trusted fragment hash in the
//! `BlobRef`, each group against the trailer, and only then decrypts the bytes in
//! counter mode. The GCM tag covers the whole ciphertext and cannot be checked on a
//! part; the fragment hashes, which cover every stored byte, are what authenticates.

use std::ops::Range;

use crate::crypto;
use crate::error::FragmentError;
use crate::format::{BlobRef, FRAGMENT_HEADER_LEN, TREE_GROUP_LEN, tree_trailer_len};
use crate::tree;

/// One data fragment's share of a plaintext range: what to fetch, and what it yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePiece {
    /// Data fragment index (`< k`).
    pub index: usize,
    /// Bytes of the stored fragment to fetch: whole groups covering the piece.
    pub groups: Range<u64>,
    /// Bytes of the stored fragment holding its tree trailer.
    pub trailer: Range<u64>,
    /// Plaintext bytes the piece yields.
    pub plaintext: Range<u64>,
}

impl BlobRef {
    /// How to read plaintext bytes `start .. start + len` (clipped to the plaintext) from
    /// format 2 data fragments, one piece per fragment touched, in order. `None` when
    /// the fragments have no tree trailer because each is a single group (a reader
    /// fetches such small fragments whole) or when the range is empty.
    pub fn range_plan(&self, start: u64, len: u64) -> Option<Vec<RangePiece>> {
        let end = start.checked_add(len)?.min(self.plaintext_len);
        let hashed = self.fragment_len();
        if start >= end || tree_trailer_len(hashed) == 0 || self.payload_len == 0 {
            return None;
        }
        let header = FRAGMENT_HEADER_LEN as u64;
        let trailer = hashed..hashed + tree_trailer_len(hashed);
        let mut pieces = Vec::new();
        let mut pos = start;
        while pos < end {
            let index = pos / self.payload_len;
            let fragment_start = index * self.payload_len;
            let piece_end = end.min(fragment_start + self.payload_len);
            let first = header + pos - fragment_start;
            let last = header + piece_end - fragment_start; // exclusive
            let groups = (first / TREE_GROUP_LEN) * TREE_GROUP_LEN
                ..(last.div_ceil(TREE_GROUP_LEN) * TREE_GROUP_LEN).min(hashed);
            pieces.push(RangePiece {
                index: usize::try_from(index).ok()?,
                groups,
                trailer: trailer.clone(),
                plaintext: pos..piece_end,
            });
            pos = piece_end;
        }
        Some(pieces)
    }
}

/// Verifies one piece of a ranged read and returns its plaintext: `trailer` and
/// `groups` are the stored bytes at `piece.trailer` and `piece.groups` of data fragment
/// `piece.index`. A trailer that is missing (a format 1 fragment), does not match the
/// `BlobRef`'s fragment hash, or a group that does not match the trailer is an error;
/// unverified bytes are never decrypted or returned.
pub fn open_range(
    blob_ref: &BlobRef,
    piece: &RangePiece,
    trailer: &[u8],
    groups: &[u8],
) -> Result<Vec<u8>, FragmentError> {
    let index = piece.index;
    let count = blob_ref.layout.data_count();
    let expected_hash = blob_ref
        .fragment_hash(index)
        .filter(|_| index < count)
        .ok_or(FragmentError::IndexOutOfRange { index, count })?;
    let hashed = blob_ref.fragment_len();
    // The piece must be one `range_plan` could have made: its plaintext inside the blob
    // and inside fragment `index`, its bytes inside the groups it names.
    let fragment_start = (index as u64) * blob_ref.payload_len;
    let (start, end) = (piece.plaintext.start, piece.plaintext.end);
    let from = (FRAGMENT_HEADER_LEN as u64 + start).checked_sub(fragment_start);
    let fits = start <= end
        && end <= blob_ref.plaintext_len
        && end <= fragment_start + blob_ref.payload_len
        && from.is_some_and(|f| f >= piece.groups.start && f + (end - start) <= piece.groups.end);
    let Some(from) = from.filter(|_| fits) else {
        return Err(FragmentError::BadRange { index });
    };
    let bad_trailer = FragmentError::BadTrailer { index };
    let cvs = tree::parse_trailer(trailer, hashed).ok_or(bad_trailer.clone())?;
    if tree::root_from_cvs(&cvs, hashed).as_ref() != Some(expected_hash) {
        return Err(bad_trailer);
    }
    let wanted = piece.groups.end.saturating_sub(piece.groups.start);
    if groups.len() as u64 != wanted
        || !piece.groups.start.is_multiple_of(TREE_GROUP_LEN)
        || piece.groups.end > hashed
    {
        return Err(FragmentError::WrongLength {
            index,
            expected: wanted,
            found: groups.len() as u64,
        });
    }
    let first_group = piece.groups.start / TREE_GROUP_LEN;
    let mut at = 0usize;
    let mut group = first_group;
    while at < groups.len() {
        let len =
            usize::try_from(tree::group_len(hashed, group)).map_err(|_| bad_trailer.clone())?;
        let bytes = groups.get(at..at + len).ok_or(FragmentError::WrongLength {
            index,
            expected: wanted,
            found: groups.len() as u64,
        })?;
        let cv = tree::group_cv(hashed, group, bytes);
        if cv.is_none() || cv.as_ref() != cvs.get(usize::try_from(group).unwrap_or(usize::MAX)) {
            return Err(FragmentError::HashMismatch { index });
        }
        at += len;
        group += 1;
    }
    // The piece's plaintext as ciphertext bytes inside the fetched groups (checked above).
    let len = end - start;
    let rel = from - piece.groups.start;
    let slice = usize::try_from(rel)
        .ok()
        .zip(usize::try_from(rel + len).ok())
        .and_then(|(a, b)| groups.get(a..b))
        .ok_or(FragmentError::WrongLength {
            index,
            expected: wanted,
            found: groups.len() as u64,
        })?;
    let mut out = slice.to_vec();
    crypto::ctr_apply(
        &blob_ref.key,
        &blob_ref.nonce,
        piece.plaintext.start,
        &mut out,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{BlobId, Layout};
    use crate::pipeline::{seal_with, seal_with_format};

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + i / 4096) as u8).collect()
    }

    fn read(sealed: &crate::Sealed, start: u64, len: u64) -> Result<Vec<u8>, FragmentError> {
        let plan = sealed.blob_ref.range_plan(start, len).expect("plan");
        let mut out = Vec::new();
        for piece in &plan {
            let stored = sealed.fragments[piece.index].as_bytes();
            let trailer = &stored[piece.trailer.start as usize..piece.trailer.end as usize];
            let groups = &stored[piece.groups.start as usize..piece.groups.end as usize];
            out.extend(open_range(&sealed.blob_ref, piece, trailer, groups)?);
        }
        Ok(out)
    }

    #[test]
    fn any_range_reads_back_from_parts_of_the_fragments() {
        let id = BlobId([3; 16]);
        for (k, m, len) in [
            (2u8, 1u8, 4 << 20),
            (1, 0, 100_000),
            (3, 2, 1_000_003),
            (4, 0, 70_000),
        ] {
            let p = plaintext(len);
            let sealed = seal_with(
                &id,
                9,
                &p,
                Layout::new(k, m).expect("layout"),
                [1; 32],
                [2; 12],
            )
            .expect("seal");
            let l = sealed.blob_ref.fragment_payload_len();
            let n = len as u64;
            for (start, want) in [
                (0, 4096),
                (4096 * 3, 4096),
                (l - 10, 20),
                (l - 16_000, 40_000),
                (n - 5, 5),
                (n - 5, 100),
                (12_345, 1),
            ] {
                if start >= n {
                    assert_eq!(sealed.blob_ref.range_plan(start, want), None);
                    continue;
                }
                let got = read(&sealed, start, want).expect("verified range");
                let end = (start + want).min(n);
                assert_eq!(
                    got,
                    &p[start as usize..end as usize],
                    "({k},{m}) {len}: {start}+{want}"
                );
            }
        }
    }

    #[test]
    fn a_range_of_tampered_or_foreign_bytes_is_refused() {
        let id = BlobId([3; 16]);
        let layout = Layout::new(2, 1).expect("layout");
        let p = plaintext(1 << 20);
        let sealed = seal_with(&id, 9, &p, layout, [1; 32], [2; 12]).expect("seal");
        let other =
            seal_with(&id, 10, &plaintext(1 << 20), layout, [4; 32], [5; 12]).expect("seal");
        let plan = sealed.blob_ref.range_plan(200_000, 4096).expect("plan");
        let piece = &plan[0];
        let stored = sealed.fragments[piece.index].as_bytes();
        let trailer = &stored[piece.trailer.start as usize..piece.trailer.end as usize];
        let groups = &stored[piece.groups.start as usize..piece.groups.end as usize];
        assert!(open_range(&sealed.blob_ref, piece, trailer, groups).is_ok());

        let mut flipped = groups.to_vec();
        flipped[100] ^= 1;
        assert_eq!(
            open_range(&sealed.blob_ref, piece, trailer, &flipped),
            Err(FragmentError::HashMismatch { index: 0 })
        );
        let mut bad_trailer = trailer.to_vec();
        bad_trailer[5] ^= 1;
        assert_eq!(
            open_range(&sealed.blob_ref, piece, &bad_trailer, groups),
            Err(FragmentError::BadTrailer { index: 0 })
        );
        assert_eq!(
            open_range(&sealed.blob_ref, piece, &[], groups),
            Err(FragmentError::BadTrailer { index: 0 })
        );
        assert!(open_range(&sealed.blob_ref, piece, trailer, &groups[1..]).is_err());
        // An authentic range of another version (a stale object) does not verify.
        let old = other.fragments[piece.index].as_bytes();
        let (old_trailer, old_groups) = (
            &old[piece.trailer.start as usize..piece.trailer.end as usize],
            &old[piece.groups.start as usize..piece.groups.end as usize],
        );
        assert_eq!(
            open_range(&sealed.blob_ref, piece, old_trailer, old_groups),
            Err(FragmentError::BadTrailer { index: 0 })
        );
        assert_eq!(
            open_range(&sealed.blob_ref, piece, trailer, old_groups),
            Err(FragmentError::HashMismatch { index: 0 })
        );
        // A piece that is not one the plan makes is refused before anything is read.
        let beyond = RangePiece {
            plaintext: piece.plaintext.start..(2 << 20),
            ..piece.clone()
        };
        assert_eq!(
            open_range(&sealed.blob_ref, &beyond, trailer, groups),
            Err(FragmentError::BadRange { index: 0 })
        );
        let outside = RangePiece {
            plaintext: 0..10,
            ..piece.clone()
        };
        assert_eq!(
            open_range(&sealed.blob_ref, &outside, trailer, groups),
            Err(FragmentError::BadRange { index: 0 })
        );
        // Parity fragments are not read by range.
        let parity = RangePiece {
            index: 2,
            ..piece.clone()
        };
        assert!(matches!(
            open_range(&sealed.blob_ref, &parity, trailer, groups),
            Err(FragmentError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn whole_reads_check_the_trailer_and_still_open_format_1() {
        let id = BlobId([3; 16]);
        let layout = Layout::new(2, 1).expect("layout");
        let p = plaintext(300_000);
        let sealed = seal_with(&id, 9, &p, layout, [1; 32], [2; 12]).expect("seal");
        let mut f1 = sealed.fragments[1].as_bytes().to_vec();
        assert!(
            f1.len() as u64 > sealed.blob_ref.fragment_len(),
            "format 2 has a trailer"
        );
        let last = f1.len() - 1;
        f1[last] ^= 1;
        assert_eq!(
            crate::verify_fragment(&sealed.blob_ref, 1, &f1),
            Err(FragmentError::BadTrailer { index: 1 })
        );
        // A damaged trailer makes the fragment bad (repaired by the store layer) but
        // the blob still opens from the others.
        let slots = [
            Some(sealed.fragments[0].as_bytes()),
            Some(&f1[..]),
            Some(sealed.fragments[2].as_bytes()),
        ];
        let opened = crate::open(&id, 9, &sealed.blob_ref, &slots).expect("open");
        assert_eq!(&opened.plaintext[..], &p[..]);
        assert_eq!(opened.bad, vec![1]);

        let v1 = seal_with_format(&id, 9, &p, layout, [1; 32], [2; 12], 1).expect("seal");
        let slots: Vec<Option<&[u8]>> = v1.fragments.iter().map(|f| Some(f.as_bytes())).collect();
        assert_eq!(
            &crate::open(&id, 9, &v1.blob_ref, &slots)
                .expect("open")
                .plaintext[..],
            &p[..]
        );
        // A format 2 fragment cut back to its hashed part is the wrong length.
        let cut = &sealed.fragments[0].as_bytes()[..sealed.blob_ref.fragment_len() as usize];
        assert!(matches!(
            crate::verify_fragment(&sealed.blob_ref, 0, cut),
            Err(FragmentError::WrongLength { .. })
        ));
    }

    #[test]
    fn format_1_fragments_have_no_trailer_and_small_blobs_no_plan() {
        let id = BlobId([3; 16]);
        let layout = Layout::new(2, 1).expect("layout");
        let p = plaintext(1 << 20);
        let v1 = seal_with_format(&id, 9, &p, layout, [1; 32], [2; 12], 1).expect("seal");
        assert_eq!(
            v1.fragments[0].as_bytes().len() as u64,
            v1.blob_ref.fragment_len()
        );
        let plan = v1
            .blob_ref
            .range_plan(0, 4096)
            .expect("the plan depends on lengths only");
        // What a store returns for the trailer range of a format 1 object: nothing.
        let stored = v1.fragments[0].as_bytes();
        let groups = &stored[plan[0].groups.start as usize..plan[0].groups.end as usize];
        assert_eq!(
            open_range(&v1.blob_ref, &plan[0], &[], groups),
            Err(FragmentError::BadTrailer { index: 0 })
        );
        let small = seal_with(&id, 9, &plaintext(20_000), layout, [1; 32], [2; 12]).expect("seal");
        assert_eq!(small.blob_ref.range_plan(0, 4096), None);
        assert_eq!(v1.blob_ref.range_plan(1 << 20, 10), None, "past the end");
    }
}
