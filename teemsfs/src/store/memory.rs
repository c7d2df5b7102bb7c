//! [`MemoryStore`]: objects in a map in this process.
//!
//! For unit tests, the simulator, and other crates' tests; it is compiled into the
//! library (not behind `cfg(test)`) so that those can use it. It follows the same
//! contract as the real stores, name validation included, so code tested against it does
//! not rely on anything a real store would refuse.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectStore, StoreError, check_name, check_prefix, slice_range};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct MemoryStore {
    /// Distinguishes stores in error messages when a test uses several.
    label: String,
    objects: Mutex<BTreeMap<String, (Bytes, SystemTime)>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        MemoryStore::with_label(&format!("memory#{id}"))
    }

    pub fn with_label(label: &str) -> MemoryStore {
        MemoryStore {
            label: label.to_owned(),
            objects: Mutex::new(BTreeMap::new()),
        }
    }

    /// Number of objects held (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, SystemTime)>> {
        // A panic while holding this lock cannot leave the map half-updated (every
        // critical section is a single map call), so a poisoned lock is still usable.
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        check_name(&self.label, name)?;
        self.lock()
            .insert(name.to_owned(), (bytes, SystemTime::now()));
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        Ok(self.lock().get(name).map(|(bytes, _)| bytes.clone()))
    }

    async fn get_range(
        &self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        Ok(self
            .lock()
            .get(name)
            .map(|(bytes, _)| slice_range(bytes, start, len)))
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(&self.label, name)?;
        self.lock().remove(name);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        check_prefix(&self.label, prefix)?;
        let objects = self.lock();
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, (bytes, modified))| ObjectMeta {
                name: name.clone(),
                size_bytes: bytes.len() as u64,
                modified: Some(*modified),
            })
            .collect())
    }
}
