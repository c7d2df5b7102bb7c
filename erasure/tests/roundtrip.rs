//! Property: `open(any k of the k+m fragments of seal(x)) == x` (issue 2, erasure
//! tests; DESIGN §9), for random sizes from 0 bytes to several MiB and random layouts.

use erasure::{BlobId, Layout, OpenError, Sealed, open, seal, seal_with};
use proptest::prelude::*;
use proptest::sample::subsequence;

fn layouts() -> impl Strategy<Value = Layout> {
    prop_oneof![
        // Small layouts dominate real use; cover the extremes (k+m = 32) as well.
        (1u8..=10, 0u8..=4),
        (1u8..=32, 0u8..=31),
    ]
    .prop_filter_map("k+m <= 32", |(k, m)| Layout::new(k, m).ok())
}

/// Deterministic plaintext of `len` bytes from `seed` (cheap to build at MiB sizes).
fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Opens from exactly the fragments at `keep`, others missing.
fn open_subset(
    id: &BlobId,
    version: u64,
    sealed: &Sealed,
    keep: &[usize],
) -> Result<Vec<u8>, OpenError> {
    let slots: Vec<Option<&[u8]>> = sealed
        .fragments
        .iter()
        .map(|fragment| {
            keep.contains(&fragment.index())
                .then(|| fragment.as_bytes())
        })
        .collect();
    let opened = open(id, version, &sealed.blob_ref, &slots)?;
    assert!(
        opened.bad.is_empty(),
        "genuine fragments reported bad: {:?}",
        opened.bad
    );
    Ok(opened.plaintext.to_vec())
}

fn check_any_k(
    layout: Layout,
    len: usize,
    seed: u64,
    subset_seed: Vec<usize>,
) -> Result<(), TestCaseError> {
    let id = BlobId(seed.to_le_bytes().repeat(2).try_into().unwrap_or([0; 16]));
    let version = seed.rotate_left(17);
    let data = plaintext(len, seed);
    let sealed =
        seal(&id, version, &data, layout).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let k = layout.data_count();
    let n = layout.total_count();
    prop_assert_eq!(sealed.fragments.len(), n);
    prop_assert!(
        sealed
            .fragments
            .iter()
            .enumerate()
            .all(|(i, f)| f.index() == i)
    );
    prop_assert_eq!(sealed.blob_ref.plaintext_len(), len as u64);
    // `subset_seed` is a sorted subsequence of 0..32; map it onto a k-subset of 0..n.
    let mut keep: Vec<usize> = subset_seed.into_iter().filter(|&i| i < n).collect();
    for i in 0..n {
        if keep.len() >= k {
            break;
        }
        if !keep.contains(&i) {
            keep.push(i);
        }
    }
    keep.truncate(k);
    let opened = open_subset(&id, version, &sealed, &keep)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        opened == data,
        "open returned different bytes for layout {} len {}",
        layout,
        len
    );
    if k > 1 {
        // One fragment fewer than k must be refused, naming the missing ones.
        let short = &keep[..k - 1];
        match open_subset(&id, version, &sealed, short) {
            Err(OpenError::NotEnoughFragments {
                needed,
                good,
                bad,
                missing,
            }) => {
                prop_assert_eq!(needed, k);
                prop_assert_eq!(good, k - 1);
                prop_assert!(bad.is_empty());
                prop_assert_eq!(missing.len(), n - (k - 1));
            }
            other => prop_assert!(false, "k-1 fragments gave {:?}", other.map(|v| v.len())),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Sizes 0 B .. 256 KiB, with extra weight on the boundaries around one shard.
    #[test]
    fn any_k_fragments_open_small(
        layout in layouts(),
        len in prop_oneof![0usize..=64, 0usize..=4096, 0usize..=262_144],
        seed in any::<u64>(),
        subset in subsequence((0..32usize).collect::<Vec<_>>(), 0..=32),
    ) {
        check_any_k(layout, len, seed, subset)?;
    }
}

proptest! {
    // Few cases: each seals and opens several MiB.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Sizes up to 6 MiB (above the design's 4 MiB chunk size).
    #[test]
    fn any_k_fragments_open_large(
        layout in layouts(),
        len in 1_000_000usize..=6_291_456,
        seed in any::<u64>(),
        subset in subsequence((0..32usize).collect::<Vec<_>>(), 0..=32),
    ) {
        check_any_k(layout, len, seed, subset)?;
    }
}

/// Every k-subset of a (4, 2) blob opens (15 subsets), including the all-parity-heavy ones.
#[test]
fn every_k_subset_of_4_2_opens() {
    let id = BlobId([3; 16]);
    let layout = Layout::new(4, 2).expect("valid");
    let data = plaintext(100_003, 9);
    let sealed = seal(&id, 5, &data, layout).expect("seal");
    let mut subsets = 0;
    for mask in 0u32..64 {
        if mask.count_ones() != 4 {
            continue;
        }
        let keep: Vec<usize> = (0..6).filter(|i| mask & (1 << i) != 0).collect();
        assert_eq!(
            open_subset(&id, 5, &sealed, &keep).expect("open"),
            data,
            "subset {keep:?}"
        );
        subsets += 1;
    }
    assert_eq!(subsets, 15);
}

/// Extra fragments beyond k are verified too, and all-present opens without decoding.
#[test]
fn all_fragments_present_opens() {
    let id = BlobId([4; 16]);
    for (k, m) in [
        (1, 0),
        (1, 3),
        (2, 1),
        (4, 2),
        (10, 4),
        (32, 0),
        (1, 31),
        (16, 16),
    ] {
        let layout = Layout::new(k, m).expect("valid");
        let data = plaintext(12_345, u64::from(k) * 100 + u64::from(m));
        let sealed = seal(&id, 1, &data, layout).expect("seal");
        let keep: Vec<usize> = (0..layout.total_count()).collect();
        assert_eq!(
            open_subset(&id, 1, &sealed, &keep).expect("open"),
            data,
            "layout {layout}"
        );
    }
}

/// Systematic code: data fragment payloads are the ciphertext, in order (no decoding
/// needed with all data present), and two seals never share key or nonce.
#[test]
fn data_fragments_concatenate_to_ciphertext_and_keys_are_fresh() {
    let id = BlobId([5; 16]);
    let layout = Layout::new(3, 2).expect("valid");
    let data = plaintext(10_000, 1);
    let a = seal(&id, 1, &data, layout).expect("seal");
    let b = seal(&id, 1, &data, layout).expect("seal");
    assert_ne!(a.blob_ref.key(), b.blob_ref.key());
    assert_ne!(a.blob_ref.nonce(), b.blob_ref.nonce());
    assert_ne!(a.blob_ref.content_hash(), b.blob_ref.content_hash());
    let ciphertext: Vec<u8> = a.fragments[..3]
        .iter()
        .flat_map(|f| f.payload().to_vec())
        .collect();
    let ciphertext = &ciphertext[..a.blob_ref.ciphertext_len() as usize];
    assert_eq!(
        *blake3::hash(ciphertext).as_bytes(),
        a.blob_ref.content_hash()
    );
    // Deterministic sealing reproduces byte-identical output.
    let c = seal_with(&id, 1, &data, layout, [1; 32], [2; 12]).expect("seal");
    let d = seal_with(&id, 1, &data, layout, [1; 32], [2; 12]).expect("seal");
    assert_eq!(c.blob_ref, d.blob_ref);
    assert_eq!(c.fragments, d.fragments);
}

/// Buffers handed out are 4096-aligned (the memcpy 4K-aliasing trap, issue 2 facts).
#[test]
fn buffers_are_page_aligned() {
    let id = BlobId([6; 16]);
    let sealed = seal(
        &id,
        1,
        &plaintext(70_000, 3),
        Layout::new(4, 2).expect("valid"),
    )
    .expect("seal");
    for fragment in &sealed.fragments {
        assert_eq!(
            fragment.as_bytes().as_ptr() as usize % erasure::BUF_ALIGN,
            0
        );
        assert_eq!(fragment.payload().as_ptr() as usize % 64, 0);
    }
    let slots: Vec<Option<&[u8]>> = sealed
        .fragments
        .iter()
        .map(|f| Some(f.as_bytes()))
        .collect();
    let opened = open(&id, 1, &sealed.blob_ref, &slots).expect("open");
    assert_eq!(opened.plaintext.as_ptr() as usize % erasure::BUF_ALIGN, 0);
}
