//! Tamper detection (issue 2; DESIGN §9 "verify each fragment's hash before
//! decoding"): every single-byte change to any stored fragment or to the encoded
//! `BlobRef` is detected, the bad fragment is named exactly, and wrong data is never
//! returned. Exhaustive for a small blob, sampled for a large one.

use erasure::{
    BlobId, BlobRef, Corruption, FragmentError, Layout, OpenError, Sealed, open, seal, seal_with,
    verify_fragment,
};

const ID: BlobId = BlobId(*b"tamper-test-blob");
const VERSION: u64 = 7;

fn sealed(len: usize, layout: Layout) -> (Vec<u8>, Sealed) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    let sealed = seal(&ID, VERSION, &data, layout).expect("seal");
    (data, sealed)
}

/// Flips `xor` into byte `at` of fragment `target`, then checks: `verify_fragment`
/// rejects it; `open` with all fragments returns the right data and names exactly
/// `target` as bad (or, if `m = 0`, refuses); `open` with only `k` fragments including
/// it refuses, naming it.
fn check_fragment_flip(data: &[u8], sealed: &Sealed, target: usize, at: usize, xor: u8) {
    let layout = sealed.blob_ref.layout();
    let (k, n) = (layout.data_count(), layout.total_count());
    let mut tampered = sealed.fragments[target].as_bytes().to_vec();
    tampered[at] ^= xor;
    assert!(
        verify_fragment(&sealed.blob_ref, target, &tampered).is_err(),
        "flip at byte {at} of fragment {target} verified"
    );
    let mut slots: Vec<Option<&[u8]>> = sealed
        .fragments
        .iter()
        .map(|f| Some(f.as_bytes()))
        .collect();
    slots[target] = Some(&tampered);
    match open(&ID, VERSION, &sealed.blob_ref, &slots) {
        Ok(opened) => {
            assert!(layout.m > 0, "m = 0 blob opened around a bad fragment");
            assert_eq!(
                &opened.plaintext[..],
                data,
                "wrong data after flip at {at} of fragment {target}"
            );
            assert_eq!(opened.bad, vec![target]);
            assert_eq!(opened.failures.len(), 1);
        }
        Err(OpenError::NotEnoughFragments { bad, .. }) => {
            assert_eq!(
                layout.m, 0,
                "with parity available the blob must still open"
            );
            assert_eq!(bad, vec![target]);
        }
        Err(other) => panic!("unexpected error {other}"),
    }
    // Only k fragments, one of them the tampered one: must refuse and name it.
    let mut keep: Vec<usize> = (0..n).filter(|&i| i != target).take(k - 1).collect();
    keep.push(target);
    let subset: Vec<Option<&[u8]>> = (0..n)
        .map(|i| if keep.contains(&i) { slots[i] } else { None })
        .collect();
    match open(&ID, VERSION, &sealed.blob_ref, &subset) {
        Err(OpenError::NotEnoughFragments {
            needed,
            good,
            bad,
            missing,
        }) => {
            assert_eq!((needed, good), (k, k - 1));
            assert_eq!(bad, vec![target]);
            assert_eq!(missing.len(), n - k);
        }
        other => panic!(
            "k fragments with one tampered gave {:?}",
            other.map(|o| o.bad)
        ),
    }
}

/// Flips a byte of the encoded `BlobRef`: it must fail to decode, or fail to open,
/// or open the right data while naming bad fragments (a flipped fragment hash).
fn check_blob_ref_flip(data: &[u8], sealed: &Sealed, at: usize, xor: u8) {
    let mut encoded = sealed.blob_ref.encode();
    encoded[at] ^= xor;
    let Ok(blob_ref) = BlobRef::decode(&encoded) else {
        return; // detected by the decoder
    };
    let slots: Vec<Option<&[u8]>> = sealed
        .fragments
        .iter()
        .map(|f| Some(f.as_bytes()))
        .collect();
    match open(&ID, VERSION, &blob_ref, &slots) {
        Ok(opened) => {
            assert_eq!(
                &opened.plaintext[..],
                data,
                "wrong data after BlobRef flip at {at}"
            );
            assert!(
                !opened.bad.is_empty(),
                "BlobRef flip at byte {at} went unnoticed"
            );
        }
        Err(OpenError::NotEnoughFragments { .. } | OpenError::Corrupt(_)) => {}
        Err(other) => panic!("unexpected error after BlobRef flip at {at}: {other}"),
    }
}

#[test]
fn every_byte_flip_in_small_blob_fragments_is_detected() {
    for layout in [Layout::new(2, 1), Layout::new(3, 2), Layout::new(2, 0)] {
        let (data, sealed) = sealed(150, layout.expect("valid"));
        for target in 0..sealed.fragments.len() {
            for at in 0..sealed.fragments[target].as_bytes().len() {
                for xor in [0x01, 0x80, 0xff] {
                    check_fragment_flip(&data, &sealed, target, at, xor);
                }
            }
        }
    }
}

#[test]
fn every_byte_flip_in_blob_ref_is_detected() {
    for layout in [Layout::new(2, 1), Layout::new(4, 2), Layout::new(1, 0)] {
        let (data, sealed) = sealed(150, layout.expect("valid"));
        for at in 0..sealed.blob_ref.encode().len() {
            for xor in [0x01, 0x02, 0x10, 0x80, 0xff] {
                check_blob_ref_flip(&data, &sealed, at, xor);
            }
        }
    }
}

#[test]
fn sampled_byte_flips_in_large_blob_are_detected() {
    let (data, sealed) = sealed(1 << 20, Layout::new(4, 2).expect("valid"));
    let fragment_len = sealed.fragments[0].as_bytes().len();
    // Every header byte, both ends of the payload, and a stride through the middle.
    let mut positions: Vec<usize> = (0..80).collect();
    positions.extend(fragment_len - 16..fragment_len);
    positions.extend((80..fragment_len).step_by(fragment_len / 24));
    for target in 0..sealed.fragments.len() {
        for &at in &positions {
            check_fragment_flip(&data, &sealed, target, at, 0x20);
        }
    }
    for at in 0..sealed.blob_ref.encode().len() {
        check_blob_ref_flip(&data, &sealed, at, 0x01);
    }
}

#[test]
fn wrong_id_or_version_is_refused() {
    let (_, sealed) = sealed(1000, Layout::new(2, 1).expect("valid"));
    let slots: Vec<Option<&[u8]>> = sealed
        .fragments
        .iter()
        .map(|f| Some(f.as_bytes()))
        .collect();
    let other_id = BlobId(*b"another-blob-id!");
    for (id, version) in [
        (other_id, VERSION),
        (ID, VERSION + 1),
        (ID, VERSION - 1),
        (other_id, 0),
    ] {
        match open(&id, version, &sealed.blob_ref, &slots) {
            Err(OpenError::WrongBlob {
                expected_id,
                expected_version,
                found_id,
                found_version,
            }) => {
                assert_eq!((expected_id, expected_version), (id, version));
                assert_eq!((found_id, found_version), (ID, VERSION));
            }
            other => panic!("opening as {id} v{version} gave {:?}", other.map(|o| o.bad)),
        }
    }
}

/// The AAD alone rejects a wrong identity: fragments and BlobRef sealed for
/// (ID, VERSION + 1) with the same key and nonce cannot be opened under headers that
/// claim VERSION (the hashes differ), and a ciphertext re-labelled in its headers
/// fails authentication.
#[test]
fn identity_is_bound_by_the_aad_not_only_the_headers() {
    let layout = Layout::new(1, 0).expect("valid");
    let data = b"some bytes to seal".to_vec();
    let a = seal_with(&ID, VERSION, &data, layout, [9; 32], [8; 12]).expect("seal");
    let b = seal_with(&ID, VERSION + 1, &data, layout, [9; 32], [8; 12]).expect("seal");
    // Same key, nonce and plaintext: CTR output equal, tags differ (AAD differs).
    let (pa, pb) = (a.fragments[0].payload(), b.fragments[0].payload());
    assert_eq!(pa[..data.len()], pb[..data.len()]);
    assert_ne!(
        pa[data.len()..data.len() + 16],
        pb[data.len()..data.len() + 16]
    );
    assert_ne!(a.blob_ref.content_hash(), b.blob_ref.content_hash());
}

#[test]
fn fragment_of_another_blob_or_index_is_rejected_with_reason() {
    let (_, one) = sealed(1000, Layout::new(2, 1).expect("valid"));
    let (_, two) = sealed(1000, Layout::new(2, 1).expect("valid"));
    // Same id, version and size, different write: rejected by the header's content hash.
    assert_eq!(
        verify_fragment(&one.blob_ref, 0, two.fragments[0].as_bytes()),
        Err(FragmentError::OtherContents { index: 0 })
    );
    // Fragment 1 stored where fragment 0 belongs.
    assert_eq!(
        verify_fragment(&one.blob_ref, 0, one.fragments[1].as_bytes()),
        Err(FragmentError::WrongIndex { index: 0, found: 1 })
    );
    assert_eq!(
        verify_fragment(&one.blob_ref, 3, one.fragments[0].as_bytes()),
        Err(FragmentError::IndexOutOfRange { index: 3, count: 3 })
    );
    let truncated = &one.fragments[2].as_bytes()[..100];
    assert!(matches!(
        verify_fragment(&one.blob_ref, 2, truncated),
        Err(FragmentError::WrongLength { index: 2, .. })
    ));
    assert!(matches!(
        verify_fragment(&one.blob_ref, 2, b"short"),
        Err(FragmentError::Format { index: 2, .. })
    ));
    for (i, fragment) in one.fragments.iter().enumerate() {
        assert_eq!(
            verify_fragment(&one.blob_ref, i, fragment.as_bytes()),
            Ok(())
        );
    }
}

#[test]
fn all_fragments_bad_is_a_clear_error() {
    let (_, sealed) = sealed(5000, Layout::new(4, 2).expect("valid"));
    let garbage = vec![0u8; sealed.fragments[0].as_bytes().len()];
    let slots: Vec<Option<&[u8]>> = vec![
        Some(&garbage),
        None,
        Some(&garbage),
        None,
        Some(&garbage),
        None,
    ];
    let err = open(&ID, VERSION, &sealed.blob_ref, &slots).expect_err("cannot open");
    assert_eq!(
        err,
        OpenError::NotEnoughFragments {
            needed: 4,
            good: 0,
            bad: vec![0, 2, 4],
            missing: vec![1, 3, 5]
        }
    );
    let message = err.to_string();
    assert!(message.contains("0 good fragments, 4 needed"), "{message}");
    let wrong_count: Vec<Option<&[u8]>> = vec![None; 5];
    assert_eq!(
        open(&ID, VERSION, &sealed.blob_ref, &wrong_count).map(|o| o.bad),
        Err(OpenError::FragmentCount {
            expected: 6,
            found: 5
        })
    );
}

/// A BlobRef whose key was replaced (fragments genuine) fails authentication, never
/// returns data.
#[test]
fn wrong_key_is_corrupt_not_data() {
    let (_, sealed) = sealed(5000, Layout::new(4, 2).expect("valid"));
    let mut encoded = sealed.blob_ref.encode();
    encoded[24] ^= 0x01; // first key byte (docs/FORMAT.md)
    let blob_ref = BlobRef::decode(&encoded).expect("still well-formed");
    let slots: Vec<Option<&[u8]>> = sealed
        .fragments
        .iter()
        .map(|f| Some(f.as_bytes()))
        .collect();
    assert_eq!(
        open(&ID, VERSION, &blob_ref, &slots).map(|o| o.bad),
        Err(OpenError::Corrupt(Corruption::Authentication))
    );
}
