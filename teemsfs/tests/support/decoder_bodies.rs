//! Bodies of the cargo-fuzz targets in `teemsfs/fuzz/`, one per decoder of bytes that
//! come back from TEEMS or from the object stores (DESIGN §10, docs/FORMAT.md).
//!
//! The same file is compiled into the fuzz targets (through `#[path]`) and into
//! `tests/decoders_never_panic.rs`, so every `cargo test` runs exactly the code the
//! fuzzer runs. A body panics only when an invariant breaks, which is what a fuzzer
//! looks for:
//!
//! - a decoder never panics, whatever the bytes;
//! - whatever a decoder accepts re-encodes consistently: `StoredBlob` is a canonical
//!   encoding, so the bytes come back identical; the postcard-based filesystem formats
//!   tolerate trailing bytes and overlong varints, so for them the *value* must survive
//!   an encode/decode round trip;
//! - an accepted inode can be used the way `Fs::getattr` and the directory code use
//!   it (times converted to `SystemTime`, a name hashed into a bucket) without panic.
//!
//! Input layout of every body: the first byte picks the mode. Even: the rest is raw
//! bytes for the decoder. Odd: the rest is a mutation script applied to a genuine
//! encoding (chosen by the second byte), so the fuzzer spends its time near valid
//! inputs too, where length fields and counts are consistent and deeper checks run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use teemsfs::fs::BlobRef;
use teemsfs::fs::format::{
    self, Bucket, BucketData, BucketMeta, Data, Entry, Inode, Kind, Manifest, RenameIntent, Time,
    Xattrs,
};
use teemsfs::meta::Key;
use teemsfs::store::StoredBlob;
use teemsfs::store::blob::FragmentLocation;

#[path = "../../../metadata-client/tests/support/mutation.rs"]
mod mutation;
use mutation::input_bytes;

// ---------------------------------------------------------------------------
// Genuine encodings
// ---------------------------------------------------------------------------

/// A genuine `StoredBlob`: the erasure crate's sealed fixture (layout 3+2) with one
/// location per fragment.
pub fn stored_blob_fixture() -> &'static StoredBlob {
    static FIXTURE: OnceLock<StoredBlob> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (_, sealed) = erasure::fuzz_bodies::fixture();
        let locations = (0..sealed.blob_ref.layout().total_count())
            .map(|i| FragmentLocation {
                store_index: i as u16,
                name: format!("f-0123456789abcdef.{i}"),
            })
            .collect();
        StoredBlob {
            blob_ref: sealed.blob_ref.clone(),
            locations,
        }
    })
}

/// A filesystem-level blob reference whose `stored` field is a genuine `StoredBlob`.
pub fn fs_blob_ref(seed: u8) -> BlobRef {
    BlobRef {
        id: [seed; 16],
        version: u64::from(seed) + 1,
        len: 300,
        stored: stored_blob_fixture().encode(),
    }
}

pub fn key(seed: u8) -> Key {
    Key([seed; 16])
}

pub fn inode_fixtures() -> Vec<Inode> {
    let base = Inode {
        kind: Kind::File,
        perm: 0o644,
        uid: 1000,
        gid: 1000,
        rdev: 0,
        size: 300,
        atime: Time {
            secs: 1_700_000_000,
            nanos: 5,
        },
        mtime: Time {
            secs: -5,
            nanos: 999_999_999,
        },
        ctime: Time { secs: 0, nanos: 0 },
        nlink: 1,
        parent: None,
        data: Data::Single(fs_blob_ref(1)),
        blob_seq: 3,
        xattrs: Some(fs_blob_ref(2)),
    };
    vec![
        base.clone(),
        Inode {
            data: Data::Empty,
            xattrs: None,
            ..base.clone()
        },
        Inode {
            data: Data::Chunked {
                manifest: fs_blob_ref(3),
            },
            size: 1 << 30,
            ..base.clone()
        },
        Inode {
            kind: Kind::Dir,
            nlink: 3,
            parent: Some(key(9)),
            data: Data::Dir {
                bucket_bits: 0,
                single: BucketData::Blob(fs_blob_ref(4)),
            },
            ..base.clone()
        },
        Inode {
            kind: Kind::Dir,
            nlink: 2,
            data: Data::Dir {
                bucket_bits: 0,
                single: BucketData::Inline(std::sync::Arc::new(small_bucket())),
            },
            ..base.clone()
        },
        Inode {
            kind: Kind::Dir,
            data: Data::Dir {
                bucket_bits: 4,
                single: BucketData::Empty,
            },
            ..base.clone()
        },
        Inode {
            size: 5,
            data: Data::Inline(b"hello".to_vec()),
            ..base.clone()
        },
        Inode {
            kind: Kind::Symlink,
            data: Data::Symlink(b"../target".to_vec()),
            ..base
        },
    ]
}

pub fn manifest_fixtures() -> Vec<Manifest> {
    vec![
        Manifest::default(),
        Manifest {
            chunk_size: 1 << 20,
            chunks: vec![Some(fs_blob_ref(5)), None, Some(fs_blob_ref(6))],
        },
    ]
}

fn small_bucket() -> Bucket {
    let mut bucket = Bucket::new();
    bucket.insert(
        b"a.txt".to_vec(),
        Entry {
            key: key(1),
            kind: Kind::File,
        },
    );
    bucket.insert(
        b"sub".to_vec(),
        Entry {
            key: key(2),
            kind: Kind::Dir,
        },
    );
    bucket.insert(
        "é-ünïcode".as_bytes().to_vec(),
        Entry {
            key: key(3),
            kind: Kind::Symlink,
        },
    );
    bucket
}

pub fn bucket_fixtures() -> Vec<Bucket> {
    vec![Bucket::new(), small_bucket()]
}

pub fn bucket_meta_fixtures() -> Vec<BucketMeta> {
    vec![
        BucketMeta::default(),
        BucketMeta {
            data: BucketData::Blob(fs_blob_ref(7)),
            blob_seq: 12,
        },
        BucketMeta {
            data: BucketData::Inline(std::sync::Arc::new(small_bucket())),
            blob_seq: 13,
        },
    ]
}

pub fn xattrs_fixtures() -> Vec<Xattrs> {
    let mut x = BTreeMap::new();
    x.insert(b"user.mime".to_vec(), b"text/plain".to_vec());
    x.insert(b"user.empty".to_vec(), Vec::new());
    vec![Xattrs::new(), x]
}

pub fn rename_intent_fixtures() -> Vec<RenameIntent> {
    let plain = RenameIntent {
        src_dir: key(1),
        src_name: b"old".to_vec(),
        dst_dir: key(2),
        dst_name: b"new".to_vec(),
        entry: Entry {
            key: key(3),
            kind: Kind::File,
        },
        replaced: None,
    };
    vec![
        plain.clone(),
        RenameIntent {
            replaced: Some((
                Entry {
                    key: key(4),
                    kind: Kind::File,
                },
                2,
            )),
            ..plain
        },
    ]
}

fn encoded<T: Serialize>(values: &[T]) -> Vec<Vec<u8>> {
    values.iter().map(format::encode).collect()
}

/// Every genuine encoding of every filesystem format, for the tests' exhaustive
/// bit-flip and truncation sweeps.
pub fn all_fs_encodings() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    out.extend(encoded(&inode_fixtures()).into_iter().map(|b| ("inode", b)));
    out.extend(
        encoded(&manifest_fixtures())
            .into_iter()
            .map(|b| ("manifest", b)),
    );
    out.extend(
        encoded(&bucket_fixtures())
            .into_iter()
            .map(|b| ("dir_bucket", b)),
    );
    out.extend(
        encoded(&bucket_meta_fixtures())
            .into_iter()
            .map(|b| ("bucket_meta", b)),
    );
    out.extend(
        encoded(&xattrs_fixtures())
            .into_iter()
            .map(|b| ("xattrs", b)),
    );
    out.extend(
        encoded(&rename_intent_fixtures())
            .into_iter()
            .map(|b| ("rename_intent", b)),
    );
    out
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// `StoredBlob::decode` never panics; what it accepts re-encodes to the same bytes and
/// keeps the "one location per fragment" invariant.
pub fn check_stored_blob(bytes: &[u8]) {
    if let Ok(stored) = StoredBlob::decode(bytes) {
        assert_eq!(
            stored.encode(),
            bytes,
            "accepted a non-canonical StoredBlob encoding"
        );
        assert_eq!(
            stored.locations.len(),
            stored.blob_ref.layout().total_count()
        );
        for location in &stored.locations {
            assert!(
                teemsfs::store::validate_name(&location.name).is_ok(),
                "accepted bad name"
            );
        }
    }
}

/// `format::decode::<T>` never panics; an accepted value survives encode + decode.
pub fn check_fs_value<T>(what: &'static str, bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value = format::decode::<T>(what, bytes).ok()?;
    let again = format::encode(&value);
    let back = format::decode::<T>(what, &again).unwrap_or_else(|e| {
        panic!("{what}: re-encoding of an accepted value fails to decode: {e}")
    });
    assert_eq!(back, value, "{what}: value changed across encode/decode");
    Some(value)
}

/// Uses a decoded blob reference the way the filesystem does (its `stored` field is
/// decoded as a `StoredBlob` before any fragment is fetched).
fn use_blob_ref(blob: &BlobRef) {
    check_stored_blob(&blob.stored);
    let _ = blob.content_hash();
}

/// Uses a directory bucket's stored form the way the directory code does.
fn use_bucket_data(data: &BucketData) {
    match data {
        BucketData::Blob(blob) => use_blob_ref(blob),
        BucketData::Inline(bucket) => {
            for name in bucket.keys() {
                let _ = format::bucket_of(name, 3);
            }
        }
        BucketData::Empty => {}
    }
}

/// Uses an accepted inode the way `getattr` and the directory code do.
fn use_inode(inode: &Inode) {
    for time in [inode.atime, inode.mtime, inode.ctime] {
        let _ = time.to_system();
    }
    match &inode.data {
        Data::Single(blob) | Data::Chunked { manifest: blob } => use_blob_ref(blob),
        Data::Dir {
            bucket_bits,
            single,
        } => {
            let _ = format::bucket_of(b"name", *bucket_bits);
            use_bucket_data(single);
        }
        Data::Empty | Data::Symlink(_) | Data::Inline(_) => {}
    }
    if let Some(blob) = &inode.xattrs {
        use_blob_ref(blob);
    }
}

/// Decodes an inode and uses it; true if accepted.
pub fn check_inode(bytes: &[u8]) -> bool {
    // The filesystem decodes inodes through `decode_inode`, which adds range checks to
    // the plain format decoder; what it accepts must also pass the generic checks.
    let Ok(inode) = format::decode_inode(bytes) else {
        return false;
    };
    assert_eq!(
        check_fs_value::<Inode>("inode metadata", bytes).as_ref(),
        Some(&inode)
    );
    use_inode(&inode);
    true
}

/// Decodes a bucket's TEEMS value and its blob reference; true if accepted.
pub fn check_bucket_meta(bytes: &[u8]) -> bool {
    let Some(meta) = check_fs_value::<BucketMeta>("bucket metadata", bytes) else {
        return false;
    };
    use_bucket_data(&meta.data);
    true
}

/// Decodes a manifest and every chunk reference in it; true if accepted.
pub fn check_manifest(bytes: &[u8]) -> bool {
    let Some(manifest) = check_fs_value::<Manifest>("manifest", bytes) else {
        return false;
    };
    manifest.chunks.iter().flatten().for_each(use_blob_ref);
    true
}

// ---------------------------------------------------------------------------
// Fuzz target bodies
// ---------------------------------------------------------------------------

pub fn stored_blob(data: &[u8]) {
    let genuine = [stored_blob_fixture().encode()];
    check_stored_blob(&input_bytes(data, &genuine));
}

pub fn inode(data: &[u8]) {
    let _ = check_inode(&input_bytes(data, &encoded(&inode_fixtures())));
}

pub fn bucket_meta(data: &[u8]) {
    let _ = check_bucket_meta(&input_bytes(data, &encoded(&bucket_meta_fixtures())));
}

pub fn dir_bucket(data: &[u8]) {
    let bytes = input_bytes(data, &encoded(&bucket_fixtures()));
    let _ = check_fs_value::<Bucket>("directory bucket", &bytes);
}

pub fn manifest(data: &[u8]) {
    let _ = check_manifest(&input_bytes(data, &encoded(&manifest_fixtures())));
}

pub fn xattrs(data: &[u8]) {
    let bytes = input_bytes(data, &encoded(&xattrs_fixtures()));
    let _ = check_fs_value::<Xattrs>("xattrs", &bytes);
}

pub fn rename_intent(data: &[u8]) {
    let bytes = input_bytes(data, &encoded(&rename_intent_fixtures()));
    let _ = check_fs_value::<RenameIntent>("rename intent", &bytes);
}
