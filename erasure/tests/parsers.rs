//! Parsers of stored bytes never panic and accept only what they should (issue 2:
//! "a BlobRef or fragment header that does not parse is an error, never a panic").
//! These run the very bodies of the cargo-fuzz targets in `erasure/fuzz/`, so every
//! `cargo test` covers them.

use erasure::fuzz_bodies::{blob_ref_decode, fixture, fragment_verify, open_arbitrary};
use proptest::prelude::*;

/// Bytes that look like an encoded BlobRef with random damage, shaped so that the
/// decoder's later checks are reached: edits confined to the fixed part with the
/// length kept right, a changed layout with the matching length, or a random length.
fn blob_ref_like() -> impl Strategy<Value = Vec<u8>> {
    let genuine = fixture().1.blob_ref.encode();
    (
        0u8..3,
        1u8..12,
        0u8..6,
        proptest::collection::vec((0usize..100, any::<u8>()), 1..3),
        0usize..400,
    )
        .prop_map(move |(mode, k, m, edits, len)| {
            let mut bytes = genuine.clone();
            match mode {
                0 => {}
                1 => {
                    bytes[5] = k;
                    bytes[6] = m;
                    bytes.resize(100 + 32 * usize::from(k + m), 0x5a);
                }
                _ => bytes.resize(len, 0),
            }
            for (at, value) in edits {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = value;
                }
            }
            bytes
        })
}

/// Genuine fixture fragments with random edits and truncation, prefixed with the index selector.
fn fragment_like() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..5,
        any::<u8>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        any::<u16>(),
    )
        .prop_map(|(index, selector, edits, cut)| {
            let mut bytes = vec![selector & !7 | index as u8];
            bytes.extend_from_slice(fixture().1.fragments[index].as_bytes());
            for (at, value) in edits {
                let at = 1 + at % (bytes.len() - 1);
                bytes[at] = value;
            }
            let keep = bytes.len() - usize::from(cut) % 8;
            bytes.truncate(keep);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn blob_ref_decode_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        blob_ref_decode(&bytes);
    }

    #[test]
    fn blob_ref_decode_damaged_encodings(bytes in blob_ref_like()) {
        blob_ref_decode(&bytes);
    }

    #[test]
    fn fragment_verify_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fragment_verify(&bytes);
    }

    #[test]
    fn fragment_verify_damaged_fragments(bytes in fragment_like()) {
        fragment_verify(&bytes);
    }

    #[test]
    fn open_with_arbitrary_fragments(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        open_arbitrary(&bytes);
    }
}

/// The damaged-encoding strategies really reach acceptance: unmodified genuine
/// inputs pass every body (so the properties above are not vacuous).
#[test]
fn genuine_inputs_are_accepted() {
    let (_, sealed) = fixture();
    let encoded = sealed.blob_ref.encode();
    assert_eq!(
        erasure::BlobRef::decode(&encoded).as_ref(),
        Ok(&sealed.blob_ref)
    );
    blob_ref_decode(&encoded);
    for (i, fragment) in sealed.fragments.iter().enumerate() {
        assert_eq!(
            erasure::verify_fragment(&sealed.blob_ref, i, fragment.as_bytes()),
            Ok(())
        );
        let mut input = vec![i as u8];
        input.extend_from_slice(fragment.as_bytes());
        fragment_verify(&input);
    }
    // Control bytes "1" = genuine for every slot.
    open_arbitrary(&[1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]);
}
