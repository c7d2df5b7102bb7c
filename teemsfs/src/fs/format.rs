//! The encoded forms the filesystem keeps in TEEMS and in blobs (DESIGN §10).
//!
//! - [`Inode`]: the metadata value under an inode's random key — kind, mode, owner, size,
//!   times, link count, and the content: inline for a file of at most
//!   `FsConfig::inline_file_max_bytes`, else a reference (one blob, or a manifest of chunk
//!   blobs); for a directory, its entries inline or a reference to their bucket blob.
//! - [`Manifest`]: the chunk list of a large file, itself sealed as a blob.
//! - [`Bucket`]: a directory's entries (name → key, kind), inline in metadata while small
//!   ([`BucketData`]), else sealed as a blob; large directories have `2^bucket_bits` of
//!   them, each under its own TEEMS key.
//! - [`RenameIntent`]: written before a rename that touches two buckets (DESIGN §10).
//!
//! All are postcard with a leading format byte; decoding untrusted or damaged bytes
//! returns [`FsError::Corrupt`], never panics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::blobs::BlobRef;
use super::error::{FsError, FsResult};
use crate::meta::Key;

/// Bumped on any incompatible change of the encodings below. 2: small files and small
/// directory buckets inline in metadata ([`Data::Inline`], [`BucketData`]).
pub const FORMAT_VERSION: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

/// Seconds and nanoseconds since the epoch; negative seconds for times before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Time { secs, nanos }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos.min(999_999_999)));
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.secs as u64) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs()) + nanos
        }
    }
}

/// Where an inode's content lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Data {
    /// No content (empty file, special files).
    Empty,
    /// A file of more than `inline_file_max_bytes` and at most one chunk: one blob.
    Single(BlobRef),
    /// A file of more than one chunk: a manifest blob listing the chunk blobs.
    Chunked { manifest: BlobRef },
    /// A directory. With `bucket_bits == 0` its one bucket is `single`; otherwise bucket
    /// `i` is a [`BucketMeta`] under [`bucket_key`]`(dir, i)` and `single` is empty.
    Dir { bucket_bits: u8, single: BucketData },
    /// A symbolic link's target (short; sealed by TEEMS like all metadata).
    Symlink(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A small file's bytes, in its metadata: no store round trip to write or read it,
    /// and as protected as every metadata value (TEEMS seals it, checks freshness).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Where one directory bucket's entries are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketData {
    #[default]
    Empty,
    /// In the metadata value itself (a bucket of at most `inline_bucket_max_bytes`).
    /// Shared, so that a decoded directory kept for its version clones cheaply; encoded
    /// exactly as a plain `Bucket`.
    Inline(Arc<Bucket>),
    /// A sealed blob holding the encoded [`Bucket`].
    Blob(BlobRef),
}

impl BucketData {
    pub fn blob(&self) -> Option<&BlobRef> {
        match self {
            BucketData::Blob(b) => Some(b),
            _ => None,
        }
    }
}

/// The metadata value of one inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// Bytes for files, target length for symlinks, entry count for directories.
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// Hard links for files; `2 + subdirectories` for directories.
    pub nlink: u32,
    /// Directories only: the containing directory (for `..`); files keep no parent
    /// because hard links give them several.
    pub parent: Option<Key>,
    pub data: Data,
    /// Version counter for this inode's blobs: every blob written for it uses the next
    /// value, so `(blob id, version)` never repeats within one client's history.
    pub blob_seq: u64,
    /// Extended attributes, sealed as one blob (absent when there are none).
    pub xattrs: Option<BlobRef>,
}

/// A large file's chunk list. `chunks[i]` covers bytes `[i*chunk_size, (i+1)*chunk_size)`;
/// `None` is a hole (zeros).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub chunk_size: u64,
    pub chunks: Vec<Option<BlobRef>>,
}

/// One directory entry's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: Key,
    pub kind: Kind,
}

/// The entries of one directory bucket, ordered by name.
pub type Bucket = BTreeMap<Vec<u8>, Entry>;

/// The TEEMS value of a bucket of a multi-bucket directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMeta {
    pub data: BucketData,
    pub blob_seq: u64,
}

/// Extended attributes of one inode.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// A rename in progress that touches two buckets (DESIGN §10); see `Fs::recover`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameIntent {
    pub src_dir: Key,
    pub src_name: Vec<u8>,
    pub dst_dir: Key,
    pub dst_name: Vec<u8>,
    pub entry: Entry,
    /// The inode the rename replaces, and its link count before the rename, so that
    /// completing the intent twice drops that link once.
    pub replaced: Option<(Entry, u32)>,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Serialising plain owned structs into a Vec cannot fail; an error would be a bug in
    // the types above, so it is reported as an empty body that every decoder rejects.
    match postcard::to_allocvec(value) {
        Ok(body) => out.extend_from_slice(&body),
        Err(_) => out.clear(),
    }
    out
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> FsResult<T> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| FsError::corrupt(what, e))
        }
        Some((1, _)) => Err(FsError::corrupt(
            what,
            "format 1, written by an older teemsfs (this one reads format 2; copy the files out with the older version)",
        )),
        Some((other, _)) => Err(FsError::corrupt(what, format!("unknown format {other}"))),
        None => Err(FsError::corrupt(what, "empty")),
    }
}

/// Most `bucket_bits` a directory ever has: the directory code stops splitting at 24
/// (`dir.rs`, rebucketing). A stored value above it is damage, and must be refused on
/// decode because `bucket_of` and bucket listing shift by it (found by the
/// `teemsfs/fuzz` inode target: bit flips turned 4 into 68, and `1 << 68` panics).
pub const MAX_BUCKET_BITS: u8 = 24;

/// Decodes an inode's metadata value, refusing values no writer produces.
pub fn decode_inode(bytes: &[u8]) -> FsResult<Inode> {
    let inode: Inode = decode("inode metadata", bytes)?;
    if let Data::Dir { bucket_bits, .. } = inode.data
        && bucket_bits > MAX_BUCKET_BITS
    {
        return Err(FsError::corrupt(
            "inode metadata",
            format!("directory of 2^{bucket_bits} buckets (at most 2^{MAX_BUCKET_BITS})"),
        ));
    }
    Ok(inode)
}

/// A child id derived from a parent key and a purpose, for blob ids and bucket keys. Not a
/// secret: it only has to be distinct per (key, purpose, index).
pub fn derive_id(key: &Key, purpose: &str, index: u64) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"teemsfs derive v1");
    h.update(&key.0);
    h.update(purpose.as_bytes());
    h.update(&index.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

pub fn bucket_key(dir: &Key, index: u64) -> Key {
    Key(derive_id(dir, "bucket", index))
}

/// The bucket of `name` in a directory of `2^bucket_bits` buckets.
pub fn bucket_of(name: &[u8], bucket_bits: u8) -> u64 {
    if bucket_bits == 0 {
        return 0;
    }
    let h = blake3::hash(name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first) & ((1u64 << bucket_bits) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trips_and_damage_is_an_error() {
        let inode = Inode {
            kind: Kind::File,
            perm: 0o644,
            uid: 1,
            gid: 2,
            rdev: 0,
            size: 10,
            atime: Time::now(),
            mtime: Time { secs: -5, nanos: 3 },
            ctime: Time::now(),
            nlink: 1,
            parent: None,
            data: Data::Single(BlobRef {
                id: [1; 16],
                version: 2,
                len: 10,
                stored: vec![9; 40],
            }),
            blob_seq: 2,
            xattrs: None,
        };
        let bytes = encode(&inode);
        assert_eq!(decode::<Inode>("inode", &bytes).expect("decodes"), inode);
        for cut in 0..bytes.len() {
            assert!(
                decode::<Inode>("inode", &bytes[..cut]).is_err(),
                "prefix {cut}"
            );
        }
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(decode::<Inode>("inode", &wrong).is_err());
    }

    #[test]
    fn times_before_the_epoch_round_trip() {
        for t in [
            Time { secs: -1, nanos: 5 },
            Time { secs: 0, nanos: 0 },
            Time { secs: 99, nanos: 1 },
        ] {
            assert_eq!(Time::from_system(t.to_system()), t);
        }
    }

    #[test]
    fn buckets_spread_names() {
        let mut seen = [0usize; 8];
        for i in 0..800 {
            seen[bucket_of(format!("f{i}").as_bytes(), 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
