//! [`LocalStore`]: one file per object in a local directory.
//!
//! A put is atomic and durable: the bytes go to a temp file in the same directory, the file
//! is fsynced, renamed over the final name, and the directory is fsynced so the rename
//! itself survives a crash. A reader therefore sees either the old object or the whole new
//! one, never a torn file. Temp files start with `.`, which no valid object name does
//! ([`super::validate_name`]), so they never show up in a listing and a crash leaves at most
//! stray dot files behind.
//!
//! Names map to paths by plain joining: validation already guarantees a name is a single
//! path component with no `/`, no `..` and no leading dot.
//!
//! Deletes are not followed by a directory fsync: an object that reappears after a crash is
//! unreferenced garbage that `teemsfs gc` removes, which is cheaper than syncing on every
//! delete.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rand::RngCore;

use super::{
    DEFAULT_OP_TIMEOUT_MS, ObjectMeta, ObjectStore, Op, StoreError, check_name, check_prefix,
    clip_range, with_timeout,
};

#[derive(Debug)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    label: String,
    /// A local disk can hang too (a dead network filesystem); the blocking thread cannot be
    /// cancelled, but the caller gets its error in bounded time.
    timeout_ms: u64,
}

impl LocalStore {
    /// Opens (creating if needed) the directory `dir` as a store.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let label = format!("local:{}", dir.display());
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Config {
            store: label.clone(),
            detail: format!("cannot create directory: {e}"),
        })?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                dir,
                label,
                timeout_ms: DEFAULT_OP_TIMEOUT_MS,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: Op,
        name: &str,
        work: impl FnOnce(&Inner) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        let label = &self.inner.label;
        with_timeout(label, op, name, self.inner.timeout_ms, async {
            match tokio::task::spawn_blocking(move || work(&inner)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(io)) => Err(StoreError::backend(label, op, name, io)),
                Err(join) => Err(StoreError::backend(label, op, name, join)),
            }
        })
        .await
    }
}

fn put_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let temp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temp name is ours alone, and a leftover is invisible anyway.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Bytes `start .. start + len` of the file at `path`, clipped to its length; `None` if
/// there is no such file. Reads only the range: the file's length bounds the buffer, so a
/// huge `len` allocates nothing extra.
fn read_range(path: &Path, start: u64, len: u64) -> std::io::Result<Option<Bytes>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let range = clip_range(file.metadata()?.len(), start, len);
    let want = range.end - range.start;
    let mut bytes = Vec::with_capacity(usize::try_from(want).map_err(std::io::Error::other)?);
    file.seek(SeekFrom::Start(range.start))?;
    // A put replaces the file by rename, so the open file does not change under us; should
    // something else shrink it, `take` stops at its end and the range is clipped there.
    file.take(want).read_to_end(&mut bytes)?;
    Ok(Some(Bytes::from(bytes)))
}

fn list_dir(dir: &Path, prefix: &str) -> std::io::Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not ours: every object name is ASCII
        };
        if !name.starts_with(prefix) || super::validate_name(&name).is_err() {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Deleted between read_dir and stat: it is simply not there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        out.push(ObjectMeta {
            name,
            size_bytes: meta.len(),
            modified: meta.modified().ok(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.inner.label.clone()
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        check_name(&self.inner.label, name)?;
        let owned = name.to_owned();
        self.blocking(Op::Put, name, move |inner| {
            put_durably(&inner.dir, &owned, &bytes)
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.inner.label, name)?;
        let owned = name.to_owned();
        self.blocking(Op::Get, name, move |inner| {
            match std::fs::read(inner.dir.join(&owned)) {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn get_range(
        &self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.inner.label, name)?;
        let owned = name.to_owned();
        self.blocking(Op::GetRange, name, move |inner| {
            read_range(&inner.dir.join(&owned), start, len)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(&self.inner.label, name)?;
        let owned = name.to_owned();
        self.blocking(Op::Delete, name, move |inner| {
            match std::fs::remove_file(inner.dir.join(&owned)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        check_prefix(&self.inner.label, prefix)?;
        let owned = prefix.to_owned();
        self.blocking(Op::List, prefix, move |inner| list_dir(&inner.dir, &owned))
            .await
    }
}
