//! How the filesystem reaches sealed blobs (DESIGN §9).
//!
//! [`BlobIo`] is the narrow interface the filesystem needs: put a plaintext as a new blob
//! version and get back an opaque, encoded reference (what goes into TEEMS metadata), get a
//! plaintext back from such a reference, and delete a version. The store layer's
//! `BlobStore` implements it; the filesystem never sees fragments or store names.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::error::{FsError, FsResult};

/// A sealed blob version as the filesystem records it in metadata.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    /// Blob id (the AAD of the sealed blob, with `version`).
    pub id: [u8; 16],
    pub version: u64,
    /// Plaintext length in bytes.
    pub len: u64,
    /// The blob layer's encoded reference (key, nonce, layout, fragment names and hashes).
    pub stored: Vec<u8>,
}

impl BlobRef {
    /// Identity of the content for caches: the encoded reference holds a fresh random key
    /// and the ciphertext hash, so two different contents never share it.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.id);
        h.update(&self.version.to_le_bytes());
        h.update(&self.stored);
        *h.finalize().as_bytes()
    }
}

#[async_trait]
pub trait BlobIo: Send + Sync + 'static {
    /// Seals and stores `plaintext` as version `version` of blob `id`; all fragments are
    /// stored when this returns.
    async fn put(&self, id: [u8; 16], version: u64, plaintext: &[u8]) -> FsResult<BlobRef>;
    /// Fetches, verifies and opens a blob version.
    async fn get(&self, blob: &BlobRef) -> FsResult<Vec<u8>>;
    /// Plaintext bytes `start .. start + len` of a blob version (clipped to its length),
    /// verified, fetched without the rest of the blob — or `None` when that is not
    /// possible or failed, and the caller should [`BlobIo::get`] it whole (which reports
    /// errors properly). A random read of a few KiB in a 4 MiB chunk needs this.
    async fn get_range(&self, _blob: &BlobRef, _start: u64, _len: u64) -> Option<Vec<u8>> {
        None
    }
    /// Deletes a blob version's fragments (best effort on the caller's side).
    async fn delete(&self, blob: &BlobRef) -> FsResult<()>;
    /// Counters of the blob layer, for metrics, if it keeps any.
    fn stats(&self) -> Option<crate::store::BlobStoreStats> {
        None
    }
}

/// Blobs kept as plaintext in a map: for unit tests of the layers above only. It still
/// checks that a reference names exactly what was stored.
type MemBlobMap = HashMap<([u8; 16], u64, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemBlobs {
    blobs: Mutex<MemBlobMap>,
    next: Mutex<u64>,
}

impl MemBlobs {
    pub fn new() -> MemBlobs {
        MemBlobs::default()
    }

    pub fn len(&self) -> usize {
        self.blobs.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl BlobIo for MemBlobs {
    async fn put(&self, id: [u8; 16], version: u64, plaintext: &[u8]) -> FsResult<BlobRef> {
        let tag = {
            let mut next = self
                .next
                .lock()
                .map_err(|_| FsError::Blob("poisoned".into()))?;
            *next += 1;
            next.to_le_bytes().to_vec()
        };
        let blob = BlobRef {
            id,
            version,
            len: plaintext.len() as u64,
            stored: tag.clone(),
        };
        self.blobs
            .lock()
            .map_err(|_| FsError::Blob("poisoned".into()))?
            .insert((id, version, tag), plaintext.to_vec());
        Ok(blob)
    }

    async fn get(&self, blob: &BlobRef) -> FsResult<Vec<u8>> {
        self.blobs
            .lock()
            .map_err(|_| FsError::Blob("poisoned".into()))?
            .get(&(blob.id, blob.version, blob.stored.clone()))
            .cloned()
            .ok_or_else(|| FsError::Blob("blob missing".into()))
    }

    async fn get_range(&self, blob: &BlobRef, start: u64, len: u64) -> Option<Vec<u8>> {
        let whole = self.get(blob).await.ok()?;
        let from = usize::try_from(start).ok()?.min(whole.len());
        let to = usize::try_from(start.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(whole.len());
        whole.get(from..to).map(<[u8]>::to_vec)
    }

    async fn delete(&self, blob: &BlobRef) -> FsResult<()> {
        self.blobs
            .lock()
            .map_err(|_| FsError::Blob("poisoned".into()))?
            .remove(&(blob.id, blob.version, blob.stored.clone()));
        Ok(())
    }
}

/// The real data path: sealed, erasure-coded blobs in the object stores (DESIGN §9).
#[async_trait]
impl BlobIo for crate::store::BlobStore {
    async fn put(&self, id: [u8; 16], version: u64, plaintext: &[u8]) -> FsResult<BlobRef> {
        let stored = self
            .put_blob(&erasure::BlobId(id), version, plaintext)
            .await
            .map_err(|e| FsError::Blob(e.to_string()))?;
        Ok(BlobRef {
            id,
            version,
            len: plaintext.len() as u64,
            stored: stored.encode(),
        })
    }

    async fn get(&self, blob: &BlobRef) -> FsResult<Vec<u8>> {
        let stored = crate::store::StoredBlob::decode(&blob.stored)
            .map_err(|e| FsError::corrupt("stored blob record", e))?;
        self.get_blob(&erasure::BlobId(blob.id), blob.version, &stored)
            .await
            .map_err(|e| FsError::Blob(e.to_string()))
    }

    fn stats(&self) -> Option<crate::store::BlobStoreStats> {
        Some(crate::store::BlobStore::stats(self))
    }

    async fn get_range(&self, blob: &BlobRef, start: u64, len: u64) -> Option<Vec<u8>> {
        let stored = crate::store::StoredBlob::decode(&blob.stored).ok()?;
        // A record whose length disagrees with the metadata's is the whole read's error.
        if stored.blob_ref.plaintext_len() != blob.len {
            return None;
        }
        self.get_blob_range(&stored, start, len).await
    }

    async fn delete(&self, blob: &BlobRef) -> FsResult<()> {
        let stored = crate::store::StoredBlob::decode(&blob.stored)
            .map_err(|e| FsError::corrupt("stored blob record", e))?;
        self.delete_blob(&stored)
            .await
            .map_err(|e| FsError::Blob(e.to_string()))
    }
}
