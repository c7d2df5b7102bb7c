//! Decoders of stored bytes never panic (COMMON "untrusted bytes", DESIGN §10).
//!
//! These run the very bodies of the cargo-fuzz targets in `teemsfs/fuzz/` (shared
//! through `tests/support/decoder_bodies.rs`), so every `cargo test` covers them: with
//! arbitrary bytes, with randomly mutated genuine encodings, and with exhaustive
//! single-bit flips and truncations of every genuine encoding.

#[path = "support/decoder_bodies.rs"]
mod decoder_bodies;
#[path = "../../metadata-client/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use decoder_bodies::*;
use fuzz_inputs::{mutation_input, raw_input};
use proptest::prelude::*;
use teemsfs::fs::format::{self, Bucket, Inode, RenameIntent, Xattrs};
use teemsfs::store::StoredBlob;

/// Runs the decoder named by `what` through its shared check; true if it accepted.
fn check_named(what: &str, bytes: &[u8]) -> bool {
    match what {
        "inode" => check_inode(bytes),
        "manifest" => check_manifest(bytes),
        "dir_bucket" => check_fs_value::<Bucket>("directory bucket", bytes).is_some(),
        "bucket_meta" => check_bucket_meta(bytes),
        "xattrs" => check_fs_value::<Xattrs>("xattrs", bytes).is_some(),
        "rename_intent" => check_fs_value::<RenameIntent>("rename intent", bytes).is_some(),
        other => panic!("no decoder named {other}"),
    }
}

#[test]
fn genuine_encodings_decode_to_the_fixtures() {
    // The sweeps below are only meaningful if the fixtures are accepted intact.
    let stored = stored_blob_fixture();
    assert_eq!(
        &StoredBlob::decode(&stored.encode()).expect("genuine StoredBlob"),
        stored
    );
    for inode in inode_fixtures() {
        assert_eq!(
            format::decode::<Inode>("inode", &format::encode(&inode)).expect("inode"),
            inode
        );
    }
    for intent in rename_intent_fixtures() {
        let bytes = format::encode(&intent);
        assert_eq!(
            format::decode::<RenameIntent>("intent", &bytes).expect("intent"),
            intent
        );
    }
}

#[test]
fn every_truncation_of_a_genuine_stored_blob_is_an_error() {
    let bytes = stored_blob_fixture().encode();
    for cut in 0..bytes.len() {
        assert!(
            StoredBlob::decode(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
}

#[test]
fn every_bit_flip_of_a_genuine_stored_blob_is_rejected_or_canonical() {
    let bytes = stored_blob_fixture().encode();
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            check_stored_blob(&damaged);
        }
    }
}

#[test]
fn every_truncation_of_a_genuine_fs_encoding_is_an_error() {
    // postcard reads a fixed schema field by field and the last field needs the last
    // byte, so a strict prefix can never decode (DESIGN §10: damage is `FsError::Corrupt`).
    for (what, bytes) in all_fs_encodings() {
        assert!(
            check_named(what, &bytes),
            "{what}: genuine encoding rejected"
        );
        for cut in 0..bytes.len() {
            assert!(
                !check_named(what, &bytes[..cut]),
                "{what}: prefix of {cut} bytes accepted"
            );
        }
    }
}

#[test]
fn every_bit_flip_of_a_genuine_fs_encoding_is_rejected_or_round_trips() {
    for (what, bytes) in all_fs_encodings() {
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                let _accepted = check_named(what, &damaged);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn stored_blob_arbitrary_bytes(data in raw_input()) { stored_blob(&data); }
    #[test]
    fn stored_blob_mutated(data in mutation_input()) { stored_blob(&data); }

    #[test]
    fn inode_arbitrary_bytes(data in raw_input()) { inode(&data); }
    #[test]
    fn inode_mutated(data in mutation_input()) { inode(&data); }

    #[test]
    fn bucket_meta_arbitrary_bytes(data in raw_input()) { bucket_meta(&data); }
    #[test]
    fn bucket_meta_mutated(data in mutation_input()) { bucket_meta(&data); }

    #[test]
    fn dir_bucket_arbitrary_bytes(data in raw_input()) { dir_bucket(&data); }
    #[test]
    fn dir_bucket_mutated(data in mutation_input()) { dir_bucket(&data); }

    #[test]
    fn manifest_arbitrary_bytes(data in raw_input()) { manifest(&data); }
    #[test]
    fn manifest_mutated(data in mutation_input()) { manifest(&data); }

    #[test]
    fn xattrs_arbitrary_bytes(data in raw_input()) { xattrs(&data); }
    #[test]
    fn xattrs_mutated(data in mutation_input()) { xattrs(&data); }

    #[test]
    fn rename_intent_arbitrary_bytes(data in raw_input()) { rename_intent(&data); }
    #[test]
    fn rename_intent_mutated(data in mutation_input()) { rename_intent(&data); }
}

/// Regression (found by the `inode` fuzz body): a damaged directory inode claiming
/// 2^68 buckets made `bucket_of` and bucket listing panic on a shift overflow. It is
/// now `FsError::Corrupt` at decode (DESIGN §10), and the largest legal value decodes.
#[test]
fn damaged_bucket_bits_are_corrupt_not_a_panic() {
    use teemsfs::fs::FsError;
    use teemsfs::fs::format::{BucketData, Data, MAX_BUCKET_BITS};
    let mut dir = inode_fixtures()[4].clone();
    for bits in [MAX_BUCKET_BITS + 1, 64, 68, u8::MAX] {
        dir.data = Data::Dir {
            bucket_bits: bits,
            single: BucketData::Empty,
        };
        let bytes = format::encode(&dir);
        assert!(
            matches!(format::decode_inode(&bytes), Err(FsError::Corrupt { .. })),
            "bucket_bits {bits} accepted"
        );
        assert!(!check_inode(&bytes));
    }
    dir.data = Data::Dir {
        bucket_bits: MAX_BUCKET_BITS,
        single: BucketData::Empty,
    };
    assert!(
        check_inode(&format::encode(&dir)),
        "largest legal bucket_bits refused"
    );
}

/// Times at the ends of the `i64` range (a damaged inode) must not panic when
/// `getattr` converts them to `SystemTime`.
#[test]
fn extreme_inode_times_do_not_panic() {
    use teemsfs::fs::format::Time;
    for secs in [i64::MAX, i64::MIN, i64::MAX / 2, i64::MIN / 2] {
        let mut inode = inode_fixtures()[0].clone();
        inode.atime = Time {
            secs,
            nanos: u32::MAX,
        };
        inode.mtime = Time {
            secs,
            nanos: 999_999_999,
        };
        assert!(check_inode(&format::encode(&inode)));
    }
}
