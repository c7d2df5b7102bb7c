//! The BLAKE3 tree of a fragment, cut at [`TREE_GROUP_LEN`] (docs/FORMAT.md F2, F6).
//!
//! BLAKE3 hashes its input as a binary tree of 1 KiB chunks whose left subtrees are
//! powers of two. Every aligned run of 16 chunks (one group) is therefore a complete
//! subtree of a fragment longer than one group, and the fragment hash in the `BlobRef`
//! is the root over the groups' chaining values. A version 2 fragment stores those
//! chaining values after its payload (the tree trailer): a reader that fetches the
//! trailer and some groups checks the trailer against the trusted fragment hash, then
//! each group against its entry, and so verifies a range without the rest.
//!
//! Everything here works on lengths the caller has already checked; a group of the
//! wrong length would make `blake3` assert, so [`group_cv`] refuses it first.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::format::{TREE_CV_LEN, TREE_GROUP_LEN};

const GROUP: usize = TREE_GROUP_LEN as usize;

/// Number of groups of a hashed part of `len` bytes.
pub(crate) fn group_count(len: u64) -> u64 {
    len.div_ceil(TREE_GROUP_LEN)
}

/// Length of group `index` of a hashed part of `total` bytes (the last may be short).
pub(crate) fn group_len(total: u64, index: u64) -> u64 {
    total
        .saturating_sub(index * TREE_GROUP_LEN)
        .min(TREE_GROUP_LEN)
}

/// Chaining value of group `index`, whose bytes are `bytes`, in a hashed part of `total`
/// bytes with at least two groups. `None` if `bytes` is not exactly that group's length.
pub(crate) fn group_cv(total: u64, index: u64, bytes: &[u8]) -> Option<ChainingValue> {
    if group_count(total) < 2
        || index >= group_count(total)
        || bytes.len() as u64 != group_len(total, index)
    {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * TREE_GROUP_LEN);
    hasher.update(bytes);
    Some(hasher.finalize_non_root())
}

/// The chaining value of every group of `hashed` (at least two groups) and the BLAKE3
/// hash of all of it, which equals `blake3::hash(hashed)`: one pass over the bytes.
pub(crate) fn hash_with_trailer(hashed: &[u8]) -> Option<([u8; 32], Vec<ChainingValue>)> {
    let total = hashed.len() as u64;
    let cvs: Vec<ChainingValue> = hashed
        .chunks(GROUP)
        .enumerate()
        .map(|(i, group)| group_cv(total, i as u64, group))
        .collect::<Option<_>>()?;
    let root = root_from_cvs(&cvs, total)?;
    Some((root, cvs))
}

/// The root hash of a hashed part of `total` bytes from its groups' chaining values;
/// `None` unless there are exactly `group_count(total) >= 2` of them.
pub(crate) fn root_from_cvs(cvs: &[ChainingValue], total: u64) -> Option<[u8; 32]> {
    if group_count(total) < 2 || cvs.len() as u64 != group_count(total) {
        return None;
    }
    let (left, right) = split(cvs, total)?;
    Some(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes())
}

/// The chaining values of the left and right subtrees of `total` bytes whose groups'
/// chaining values are `cvs` (more than one group).
fn split(cvs: &[ChainingValue], total: u64) -> Option<(ChainingValue, ChainingValue)> {
    // left_subtree_len of more than one group is a power of two of at least one group,
    // so the split falls on a group boundary.
    let left_len = left_subtree_len(total);
    let left_groups = usize::try_from(left_len / TREE_GROUP_LEN).ok()?;
    let (l, r) = cvs.split_at_checked(left_groups)?;
    Some((subtree(l, left_len)?, subtree(r, total - left_len)?))
}

fn subtree(cvs: &[ChainingValue], len: u64) -> Option<ChainingValue> {
    if len <= TREE_GROUP_LEN {
        return match cvs {
            [only] => Some(*only),
            _ => None,
        };
    }
    let (left, right) = split(cvs, len)?;
    Some(merge_subtrees_non_root(&left, &right, Mode::Hash))
}

/// Parses a tree trailer into chaining values; `None` unless it has exactly one per
/// group of a hashed part of `total` bytes.
pub(crate) fn parse_trailer(trailer: &[u8], total: u64) -> Option<Vec<ChainingValue>> {
    if trailer.len() as u64 != group_count(total) * TREE_CV_LEN || group_count(total) < 2 {
        return None;
    }
    trailer
        .chunks_exact(TREE_CV_LEN as usize)
        .map(|cv| cv.try_into().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn root_over_group_chaining_values_is_the_blake3_hash() {
        for len in [
            GROUP + 1,
            2 * GROUP,
            2 * GROUP + 1,
            3 * GROUP - 5,
            4 * GROUP,
            5 * GROUP + 64,
            7 * GROUP + 1024,
            64 + 1024 * 1024,
            64 + 2 * 1024 * 1024 + 64,
        ] {
            let data = bytes(len);
            let (root, cvs) = hash_with_trailer(&data).expect("more than one group");
            assert_eq!(&root, blake3::hash(&data).as_bytes(), "length {len}");
            assert_eq!(cvs.len() as u64, group_count(len as u64));
            assert_eq!(root_from_cvs(&cvs, len as u64), Some(root));
        }
    }

    #[test]
    fn wrong_shapes_are_refused_not_asserted() {
        let data = bytes(3 * GROUP);
        let total = data.len() as u64;
        assert!(
            hash_with_trailer(&data[..GROUP]).is_none(),
            "one group has no trailer"
        );
        assert!(group_cv(total, 1, &data[..GROUP - 1]).is_none());
        assert!(group_cv(total, 3, &data[..GROUP]).is_none());
        let (_, cvs) = hash_with_trailer(&data).expect("three groups");
        assert!(root_from_cvs(&cvs[..2], total).is_none());
        let flat: Vec<u8> = cvs.iter().flatten().copied().collect();
        assert_eq!(parse_trailer(&flat, total), Some(cvs));
        assert!(parse_trailer(&flat[1..], total).is_none());
        assert!(parse_trailer(&[], GROUP as u64).is_none());
    }
}
