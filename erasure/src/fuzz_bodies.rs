//! Bodies of the cargo-fuzz targets (`erasure/fuzz/`), one per parser of stored
//! bytes. They live in the library so the property tests run exactly the same code
//! in every `cargo test`, not only when someone fuzzes. Each body panics only if an
//! invariant is broken — which is what a fuzzer looks for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use crate::{BlobId, BlobRef, FragmentHeader, Layout, Sealed, open, seal_with, verify_fragment};

/// Identity of the fixture blob.
pub const FIXTURE_ID: BlobId = BlobId(*b"fuzz-fixture-id!");
/// Version of the fixture blob.
pub const FIXTURE_VERSION: u64 = 42;

/// A small sealed blob, layout (3, 2), deterministic key and nonce.
pub fn fixture() -> &'static (Vec<u8>, Sealed) {
    static FIXTURE: OnceLock<(Vec<u8>, Sealed)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let plaintext: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let layout = Layout::new(3, 2).expect("valid fixture layout");
        let sealed = seal_with(
            &FIXTURE_ID,
            FIXTURE_VERSION,
            &plaintext,
            layout,
            [0x11; 32],
            [0x22; 12],
        )
        .expect("fixture seals");
        (plaintext, sealed)
    })
}

/// `BlobRef::decode` on arbitrary bytes: never panics, and whatever it accepts
/// re-encodes to exactly the same bytes (the encoding is canonical).
pub fn blob_ref_decode(data: &[u8]) {
    if let Ok(blob_ref) = BlobRef::decode(data) {
        assert_eq!(
            blob_ref.encode(),
            data,
            "accepted a non-canonical BlobRef encoding"
        );
        assert_eq!(
            blob_ref.fragment_hashes().len(),
            blob_ref.layout().total_count()
        );
    }
}

/// `FragmentHeader::parse` and `verify_fragment` on arbitrary bytes. The first byte
/// picks the fragment index checked against the fixture's `BlobRef`; only the exact
/// genuine fragment may verify.
pub fn fragment_verify(data: &[u8]) {
    if let Ok((header, payload)) = FragmentHeader::parse(data) {
        assert_eq!(&header.encode()[..], &data[..crate::FRAGMENT_HEADER_LEN]);
        assert_eq!(payload, &data[crate::FRAGMENT_HEADER_LEN..]);
    }
    let Some((&selector, stored)) = data.split_first() else {
        return;
    };
    let (_, sealed) = fixture();
    let index = usize::from(selector % 8); // includes out-of-range indices 5..8
    if verify_fragment(&sealed.blob_ref, index, stored).is_ok() {
        assert_eq!(
            stored,
            sealed.fragments[index].as_bytes(),
            "verified a non-genuine fragment"
        );
    }
}

/// `open` with fragments built from arbitrary bytes: each of the fixture's 5 slots is
/// missing, genuine, genuine with one byte changed, genuine but truncated, or
/// arbitrary bytes. `open` must never panic, must return the fixture's plaintext or
/// an error, and must list every non-genuine supplied fragment as bad.
pub fn open_arbitrary(data: &[u8]) {
    let (plaintext, sealed) = fixture();
    let mut cursor = data;
    let mut take = |n: usize| {
        let (head, rest) = cursor.split_at(n.min(cursor.len()));
        cursor = rest;
        head
    };
    let mut owned: Vec<Option<Vec<u8>>> = Vec::new();
    for fragment in &sealed.fragments {
        let genuine = fragment.as_bytes();
        let control = take(3);
        let (choice, a, b) = (
            control.first().copied().unwrap_or(1),
            control.get(1).copied().unwrap_or(0),
            control.get(2).copied().unwrap_or(0),
        );
        owned.push(match choice % 5 {
            0 => None,
            1 => Some(genuine.to_vec()),
            2 => {
                let mut bytes = genuine.to_vec();
                let at = (usize::from(a) * 256 + usize::from(b)) % bytes.len();
                bytes[at] ^= a | 1;
                Some(bytes)
            }
            3 => Some(genuine[..usize::from(a) % genuine.len()].to_vec()),
            _ => Some(take(usize::from(a) * 2).to_vec()),
        });
    }
    let slots: Vec<Option<&[u8]>> = owned.iter().map(Option::as_deref).collect();
    let opened = open(&FIXTURE_ID, FIXTURE_VERSION, &sealed.blob_ref, &slots);
    let not_genuine: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(
            |(i, slot)| matches!(slot, Some(bytes) if *bytes != sealed.fragments[*i].as_bytes()),
        )
        .map(|(i, _)| i)
        .collect();
    match opened {
        Ok(opened) => {
            assert_eq!(
                &opened.plaintext[..],
                &plaintext[..],
                "open returned wrong data"
            );
            assert_eq!(opened.bad, not_genuine, "bad fragments misreported");
        }
        Err(crate::OpenError::NotEnoughFragments { bad, .. }) => {
            assert_eq!(bad, not_genuine, "bad fragments misreported");
        }
        Err(other) => panic!("unexpected error opening genuine-or-garbage fragments: {other}"),
    }
}
