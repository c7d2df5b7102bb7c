//! Client-side caches (DESIGN §10): the name cache, the blob cache, and decoded
//! directory metadata.
//!
//! All of them only ever *propose*: nothing taken from them is used until a fresh TEEMS
//! read has confirmed it (for decoded metadata: returned the very version it came from). The name cache remembers what the last metadata read said (which key a
//! name had, which blob an inode's content was), so that a read can start fetching
//! fragments at the same time as the metadata read instead of after it; the fetched bytes
//! are kept only if the fresh metadata names the same blob. The blob cache maps a blob's
//! content identity (id, and a hash of its sealed reference, which includes the ciphertext
//! hash and a fresh key per version) to its plaintext, so a read whose fresh metadata names
//! a cached blob needs no store access at all.
//!
//! quick_cache is used rather than moka: both caches are synchronous maps hit from async
//! code without awaiting, quick_cache's weighted eviction bounds the blob cache in bytes
//! exactly, and moka's async cache has an open report of unbounded growth under write
//! pressure (see LIBRARIES notes in the project docs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::fs::blobs::BlobRef;
use crate::meta::{Key, Version};

/// Bounds of the caches; every field has a default (see [`CacheConfig::default`]).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Plaintext bytes the blob cache may hold. 0 disables it.
    pub blob_cache_bytes: u64,
    /// Entries the name cache may hold (each a few hundred bytes).
    pub name_cache_entries: usize,
    /// Encoded bytes of directory metadata (inodes and buckets) kept decoded. 0 disables.
    pub decoded_cache_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            blob_cache_bytes: 256 << 20,
            name_cache_entries: 100_000,
            decoded_cache_bytes: 32 << 20,
        }
    }
}

#[derive(Clone)]
struct BytesWeighter;

impl Weighter<([u8; 16], [u8; 32]), Arc<Vec<u8>>> for BytesWeighter {
    fn weight(&self, _key: &([u8; 16], [u8; 32]), val: &Arc<Vec<u8>>) -> u64 {
        // A small constant for the entry itself, so empty blobs still count.
        val.len() as u64 + 64
    }
}

type BlobCacheMap = Cache<([u8; 16], [u8; 32]), Arc<Vec<u8>>, BytesWeighter>;

/// (blob id, content hash) → plaintext, bounded in bytes. Clones share one cache.
#[derive(Clone)]
pub struct BlobCache {
    inner: Option<Arc<BlobCacheMap>>,
    /// Lookups that found the blob, and those that did not (for metrics).
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl BlobCache {
    pub fn new(capacity_bytes: u64) -> BlobCache {
        let inner = (capacity_bytes > 0).then(|| {
            // Estimated item count only sizes the hash table; 64 KiB is a typical blob.
            let items = usize::try_from(capacity_bytes / 65_536)
                .unwrap_or(usize::MAX)
                .max(16);
            Arc::new(Cache::with_weighter(items, capacity_bytes, BytesWeighter))
        });
        BlobCache {
            inner,
            counts: Arc::default(),
        }
    }

    /// The plaintext of exactly this blob version, if cached. The caller must have `blob`
    /// from fresh metadata.
    pub fn get(&self, blob: &BlobRef) -> Option<Arc<Vec<u8>>> {
        let hit = self.inner.as_ref()?.get(&(blob.id, blob.content_hash()));
        let counter = if hit.is_some() {
            &self.counts.0
        } else {
            &self.counts.1
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Whether exactly this blob version is cached, without counting a hit or a miss
    /// (for decisions about how to read, not reads).
    pub fn contains(&self, blob: &BlobRef) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|c| c.contains_key(&(blob.id, blob.content_hash())))
    }

    /// (hits, misses) of [`BlobCache::get`] so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.0.load(Ordering::Relaxed),
            self.counts.1.load(Ordering::Relaxed),
        )
    }

    pub fn insert(&self, blob: &BlobRef, plaintext: Arc<Vec<u8>>) {
        if let Some(cache) = &self.inner {
            cache.insert((blob.id, blob.content_hash()), plaintext);
        }
    }

    /// Bytes currently held (for tests and metrics).
    pub fn weight_bytes(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weight())
    }
}

#[derive(Clone)]
struct DecodedWeighter;

impl<T> Weighter<Key, (Version, u64, T)> for DecodedWeighter {
    fn weight(&self, _key: &Key, val: &(Version, u64, T)) -> u64 {
        val.1 + 64
    }
}

/// Metadata values kept in decoded form, each valid only for the exact version it was
/// decoded from. A TEEMS version (timestamp) names one write of one key, so bytes read
/// under a version always decode to what is kept here; the caller still reads the key
/// fresh (or under a lease) and asks for that version. Decoding a large directory bucket
/// (hundreds of entries into a sorted map) is what a lookup would otherwise spend most of
/// its CPU on.
pub struct DecodedCache<T> {
    inner: Option<Cache<Key, (Version, u64, T), DecodedWeighter>>,
}

impl<T: Clone> DecodedCache<T> {
    pub fn new(capacity_bytes: u64) -> DecodedCache<T> {
        let inner = (capacity_bytes > 0).then(|| {
            // The estimate only sizes the hash table; 4 KiB is a typical large value.
            let items = usize::try_from(capacity_bytes / 4096)
                .unwrap_or(usize::MAX)
                .max(16);
            Cache::with_weighter(items, capacity_bytes, DecodedWeighter)
        });
        DecodedCache { inner }
    }

    /// The value of `key` decoded from `version`, if kept.
    pub fn get(&self, key: Key, version: Version) -> Option<T> {
        match self.inner.as_ref()?.get(&key) {
            Some((v, _, value)) if v == version => Some(value),
            _ => None,
        }
    }

    /// Keeps `value`, decoded from `encoded_len` bytes read as `version` of `key`.
    pub fn insert(&self, key: Key, version: Version, encoded_len: usize, value: T) {
        if let Some(cache) = &self.inner {
            cache.insert(key, (version, encoded_len as u64, value));
        }
    }
}

/// What the last metadata read said about a name and about an inode's content.
pub struct NameCache {
    /// (directory, name) → (key, version of the child's metadata when last seen).
    names: Cache<(Key, Vec<u8>), (Key, Version)>,
    /// key → (version, the blob its content was in: single blob or manifest).
    contents: Cache<Key, (Version, Option<BlobRef>)>,
    /// directory → its bucket count (as `bucket_bits`) when last read, so a lookup can
    /// read the name's bucket alongside the directory's metadata.
    dir_bits: Cache<Key, u8>,
}

impl NameCache {
    pub fn new(entries: usize) -> NameCache {
        let entries = entries.max(16);
        NameCache {
            names: Cache::new(entries),
            contents: Cache::new(entries),
            dir_bits: Cache::new(entries),
        }
    }

    pub fn remember_name(&self, dir: Key, name: &[u8], child: Key, version: Version) {
        self.names.insert((dir, name.to_vec()), (child, version));
    }

    pub fn forget_name(&self, dir: Key, name: &[u8]) {
        self.names.remove(&(dir, name.to_vec()));
    }

    /// A guess of the key behind a name; must be confirmed by the directory's fresh content.
    pub fn guess_name(&self, dir: Key, name: &[u8]) -> Option<(Key, Version)> {
        self.names.get(&(dir, name.to_vec()))
    }

    pub fn remember_content(&self, key: Key, version: Version, blob: Option<BlobRef>) {
        self.contents.insert(key, (version, blob));
    }

    pub fn remember_dir_bits(&self, dir: Key, bucket_bits: u8) {
        self.dir_bits.insert(dir, bucket_bits);
    }

    /// A guess of a directory's `bucket_bits`; must be confirmed by its fresh metadata.
    pub fn guess_dir_bits(&self, dir: Key) -> Option<u8> {
        self.dir_bits.get(&dir)
    }

    /// A guess of the blob holding `key`'s content; must be confirmed by fresh metadata.
    pub fn guess_content(&self, key: Key) -> Option<(Version, Option<BlobRef>)> {
        self.contents.get(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(id: u8, len: usize) -> BlobRef {
        BlobRef {
            id: [id; 16],
            version: 1,
            len: len as u64,
            stored: vec![id; 8],
        }
    }

    #[test]
    fn decoded_values_are_kept_for_their_exact_version_only() {
        let cache = DecodedCache::<String>::new(1 << 20);
        let key = Key([7; 16]);
        let v1 = Version { seq: 1, writer: 1 };
        let v2 = Version { seq: 2, writer: 1 };
        cache.insert(key, v1, 10, "one".to_string());
        assert_eq!(cache.get(key, v1).as_deref(), Some("one"));
        assert_eq!(cache.get(key, v2), None, "another version is a miss");
        assert_eq!(cache.get(Key([8; 16]), v1), None, "another key is a miss");
        cache.insert(key, v2, 10, "two".to_string());
        assert_eq!(
            cache.get(key, v1),
            None,
            "a newer version replaces the older"
        );
        assert_eq!(cache.get(key, v2).as_deref(), Some("two"));
        let off = DecodedCache::<String>::new(0);
        off.insert(key, v1, 10, "one".to_string());
        assert_eq!(off.get(key, v1), None);
    }

    #[test]
    fn blob_cache_is_bounded_in_bytes() {
        let cache = BlobCache::new(1 << 20);
        for i in 0..64u8 {
            cache.insert(&blob(i, 64 << 10), Arc::new(vec![i; 64 << 10]));
        }
        assert!(cache.weight_bytes() <= 1 << 20, "{}", cache.weight_bytes());
    }

    #[test]
    fn blob_cache_keys_on_the_exact_version() {
        let cache = BlobCache::new(1 << 20);
        let a = blob(1, 3);
        cache.insert(&a, Arc::new(b"abc".to_vec()));
        assert_eq!(cache.get(&a).as_deref(), Some(&b"abc".to_vec()));
        let mut newer = a.clone();
        newer.stored = vec![7; 8];
        assert!(cache.get(&newer).is_none(), "another version must miss");
        assert!(BlobCache::new(0).get(&a).is_none());
    }
}
