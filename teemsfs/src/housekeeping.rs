//! `teemsfs gc` and `teemsfs fsck` (DESIGN §9, §10): the store-level half of
//! housekeeping, on top of [`Fs::walk_tree`].
//!
//! **How gc finds live fragments.** TEEMS cannot list its keys, so live metadata is found
//! by walking the share's tree from the root through every directory
//! ([`Fs::walk_tree`]); each blob reference the walk collects is decoded into its fragment
//! locations (store index, object name). Every object in the stores under the fragment
//! prefix that no live reference names is an orphan: left by a writer that crashed before
//! its commit, by a deletion that failed, or by an unmount that left retired blobs still
//! in their grace period.
//!
//! **Why it is safe against concurrent clients.**
//! 1. The stores are listed *before* the walk, so a fragment written after the listing is
//!    never a candidate.
//! 2. The tree is walked twice, and the walk is accepted only if both walks read every
//!    directory at the same metadata version (versions only grow, so equal versions mean
//!    the directory did not change between the two reads). Then one instant — between the
//!    walks — saw exactly those directories: a subtree moved from a not-yet-walked
//!    directory into an already-walked one cannot be missed. The live set is the union of
//!    both walks, so a file committed between them keeps both versions.
//! 3. Only orphans older than the grace period are deleted: a commit in progress names its
//!    fresh fragments only after putting them. Stores that keep no modification time
//!    (Redis) are aged by *observation*: gc records when it first saw each such orphan in
//!    a state file and deletes it only on a later run, once that is older than the grace.
//!
//! Limits (docs/SEMANTICS.md): a file whose last name was removed while it stays open in
//! some mount, or a write that buffers chunks for longer than the grace period before its
//! commit, can have fragments no live metadata names yet; choose the grace period longer
//! than any such window (default one hour).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt};

use crate::fs::walk::{Problem, TreeWalk, WalkOptions, WalkProgress};
use crate::fs::{BlobRef, Fs, FsError};
use crate::store::blob::DEFAULT_FRAGMENT_PREFIX;
use crate::store::{ObjectMeta, ObjectStore, StoreError, StoredBlob};

/// Default minimum age of an orphan before gc deletes it.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// Attempts at two agreeing walks before gc gives up on a busy tree.
const WALK_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum HousekeepingError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "a live blob reference does not decode ({0}); refusing to collect garbage with an incomplete live set"
    )]
    BadReference(String),
    #[error("the tree kept changing during {0} pairs of walks; run gc again when it is quieter")]
    Busy(usize),
    #[error("gc state file {path}: {detail}")]
    State { path: String, detail: String },
}

/// One orphaned object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub store: String,
    pub store_index: usize,
    pub name: String,
    pub size_bytes: u64,
    /// Age by the store's modification time, or since gc first saw it (stores without
    /// times); `None` when first seen now.
    pub age: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub objects_listed: usize,
    pub live_blobs: usize,
    pub live_fragments: usize,
    /// Orphans old enough to delete (deleted unless dry run).
    pub collectable: Vec<Orphan>,
    /// Orphans still within the grace period.
    pub young: usize,
    pub deleted: usize,
    pub delete_failures: usize,
    pub walk: WalkProgress,
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub interrupted_rename_completed: bool,
    pub walk: WalkProgress,
    pub problems: Vec<Problem>,
    /// Live blobs with at least one fragment missing from its store (readable while at
    /// most `m` are missing; `teemsfs scrub` or a read repairs them).
    pub blobs_missing_fragments: usize,
    pub fragments_missing: usize,
}

/// A progress line sink: called with a short status text now and then.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

async fn list_all(
    stores: &[Arc<dyn ObjectStore>],
    prefix: &str,
) -> Result<Vec<Vec<ObjectMeta>>, StoreError> {
    let mut out = Vec::with_capacity(stores.len());
    for s in stores {
        out.push(s.list(prefix).await?);
    }
    Ok(out)
}

/// (store index, object name) of every fragment of every blob.
fn fragment_locations(blobs: &[BlobRef]) -> Result<HashSet<(usize, String)>, HousekeepingError> {
    let mut live = HashSet::new();
    for b in blobs {
        let stored = StoredBlob::decode(&b.stored)
            .map_err(|e| HousekeepingError::BadReference(e.to_string()))?;
        for loc in stored.locations {
            live.insert((usize::from(loc.store_index), loc.name));
        }
    }
    Ok(live)
}

fn walk_progress_line(p: &WalkProgress) -> String {
    format!(
        "walked {} directories, {} files, {} other, {} blobs",
        p.dirs, p.files, p.other, p.blobs
    )
}

/// Two walks that saw every directory at the same version (see the module docs).
async fn stable_walks(
    fs: &Fs,
    progress: Progress<'_>,
) -> Result<(TreeWalk, TreeWalk), HousekeepingError> {
    let cb = |p: &WalkProgress| progress(&walk_progress_line(p));
    let mut first = fs.walk_tree(WalkOptions::default(), &cb).await?;
    for _ in 0..WALK_ATTEMPTS {
        let second = fs.walk_tree(WalkOptions::default(), &cb).await?;
        if second.dir_versions == first.dir_versions {
            return Ok((first, second));
        }
        progress("the tree changed during the walk; walking again");
        first = second;
    }
    Err(HousekeepingError::Busy(WALK_ATTEMPTS))
}

/// Finds (and unless `dry_run` deletes) fragments no live metadata names that are older
/// than `grace`. `state_file` records first sightings for stores without times.
pub async fn gc(
    fs: &Fs,
    stores: &[Arc<dyn ObjectStore>],
    grace: Duration,
    dry_run: bool,
    state_file: &Path,
    progress: Progress<'_>,
) -> Result<GcReport, HousekeepingError> {
    let mut report = GcReport::default();
    progress("listing the object stores");
    let listed = list_all(stores, DEFAULT_FRAGMENT_PREFIX).await?;
    report.objects_listed = listed.iter().map(Vec::len).sum();
    let (a, b) = stable_walks(fs, progress).await?;
    let mut blobs = a.blobs;
    blobs.extend(b.blobs);
    report.walk = b.progress;
    let live = fragment_locations(&blobs)?;
    report.live_blobs = blobs.iter().collect::<HashSet<_>>().len();
    report.live_fragments = live.len();

    let mut seen = load_state(state_file)?;
    let now = SystemTime::now();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut still_orphan = BTreeMap::new();
    for (i, objects) in listed.iter().enumerate() {
        let Some(store) = stores.get(i) else { continue };
        for o in objects {
            if live.contains(&(i, o.name.clone())) {
                continue;
            }
            let age = match o.modified {
                Some(t) => Some(now.duration_since(t).unwrap_or_default()),
                None => {
                    let id = format!("{i}/{}", o.name);
                    let first = *seen.get(&id).unwrap_or(&now_secs);
                    still_orphan.insert(id, first);
                    (first < now_secs).then(|| Duration::from_secs(now_secs - first))
                }
            };
            let orphan = Orphan {
                store: store.describe(),
                store_index: i,
                name: o.name.clone(),
                size_bytes: o.size_bytes,
                age,
            };
            if age.is_some_and(|a| a >= grace) {
                report.collectable.push(orphan);
            } else {
                report.young += 1;
            }
        }
    }
    if !dry_run {
        let results: Vec<bool> = stream::iter(report.collectable.iter())
            .map(|o| async move {
                match stores.get(o.store_index) {
                    Some(s) => s.delete(&o.name).await.is_ok(),
                    None => false,
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        report.deleted = results.iter().filter(|ok| **ok).count();
        report.delete_failures = results.len() - report.deleted;
        for o in &report.collectable {
            still_orphan.remove(&format!("{}/{}", o.store_index, o.name));
        }
        // Only orphans still present are remembered; everything else is forgotten.
        seen = still_orphan;
        save_state(state_file, &seen)?;
    }
    Ok(report)
}

fn load_state(path: &Path) -> Result<BTreeMap<String, u64>, HousekeepingError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| HousekeepingError::State {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(HousekeepingError::State {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

fn save_state(path: &Path, seen: &BTreeMap<String, u64>) -> Result<(), HousekeepingError> {
    let fail = |detail: String| HousekeepingError::State {
        path: path.display().to_string(),
        detail,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    let text = serde_json::to_string_pretty(seen).map_err(|e| fail(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Completes an interrupted rename, then checks that every file's metadata, manifest and
/// fragments agree: the tree walk with content verification, plus the presence of every
/// fragment of every live blob in its store.
pub async fn fsck(
    fs: &Fs,
    stores: &[Arc<dyn ObjectStore>],
    progress: Progress<'_>,
) -> Result<FsckReport, HousekeepingError> {
    let mut report = FsckReport {
        interrupted_rename_completed: fs.recover().await?,
        ..FsckReport::default()
    };
    let cb = |p: &WalkProgress| {
        progress(&format!(
            "{}, {} MiB verified",
            walk_progress_line(p),
            p.bytes_verified >> 20
        ))
    };
    let walk = fs
        .walk_tree(
            WalkOptions {
                verify_contents: true,
            },
            &cb,
        )
        .await?;
    report.walk = walk.progress;
    report.problems = walk.problems;
    progress("checking that every fragment is in its store");
    let listed = list_all(stores, DEFAULT_FRAGMENT_PREFIX).await?;
    let present: Vec<HashSet<&str>> = listed
        .iter()
        .map(|l| l.iter().map(|o| o.name.as_str()).collect())
        .collect();
    let mut seen_blobs = HashSet::new();
    for b in &walk.blobs {
        if !seen_blobs.insert(b) {
            continue;
        }
        let stored = StoredBlob::decode(&b.stored)
            .map_err(|e| HousekeepingError::BadReference(e.to_string()))?;
        let missing = stored
            .locations
            .iter()
            .filter(|l| {
                !present
                    .get(usize::from(l.store_index))
                    .is_some_and(|p| p.contains(l.name.as_str()))
            })
            .count();
        if missing > 0 {
            report.blobs_missing_fragments += 1;
            report.fragments_missing += missing;
        }
    }
    Ok(report)
}

/// Per-store orphan counts, for summaries.
pub fn orphans_by_store(orphans: &[Orphan]) -> Vec<(String, usize, u64)> {
    let mut by: HashMap<String, (usize, u64)> = HashMap::new();
    for o in orphans {
        let e = by.entry(o.store.clone()).or_default();
        e.0 += 1;
        e.1 += o.size_bytes;
    }
    let mut out: Vec<_> = by.into_iter().map(|(s, (n, b))| (s, n, b)).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Caller, FsConfig};
    use crate::meta::{Key, MemTeems, ShareId};
    use crate::store::{BlobStore, BlobStoreConfig, MemoryStore};

    #[tokio::test]
    async fn gc_removes_exactly_the_unnamed_fragments_and_fsck_finds_a_missing_one() {
        let stores: Vec<Arc<dyn ObjectStore>> = (0..3)
            .map(|i| Arc::new(MemoryStore::with_label(&format!("m{i}"))) as Arc<dyn ObjectStore>)
            .collect();
        let blobs = Arc::new(
            BlobStore::new(
                stores.clone(),
                BlobStoreConfig::new(erasure::Layout { k: 2, m: 1 }),
            )
            .expect("blobs"),
        );
        let config = FsConfig {
            chunk_size_bytes: 4096,
            ..FsConfig::default()
        };
        let fs = Fs::new(
            Arc::new(MemTeems::new()),
            blobs.clone(),
            ShareId([1; 16]),
            Key([2; 16]),
            config,
        );
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let (_, o) = fs.create(fs.root(), b"f", 0o644, me).await.expect("create");
        fs.write(o.fh, 0, &vec![5u8; 10_000]).await.expect("write");
        fs.release(o.fh).await.expect("close");
        // A crashed writer: a sealed blob whose metadata write never happened.
        crate::fs::BlobIo::put(blobs.as_ref(), [9; 16], 1, &[1; 100])
            .await
            .expect("orphan put");
        // Superseded blobs still in their (in-memory) grace queue are orphans too.
        let state = tempfile::tempdir().expect("tmp");
        let state_file = state.path().join("gc-seen.json");
        let quiet = |_: &str| {};
        let young = gc(&fs, &stores, DEFAULT_GC_GRACE, false, &state_file, &quiet)
            .await
            .expect("gc");
        assert!(
            young.collectable.is_empty() && young.young == 3 && young.deleted == 0,
            "{young:?}"
        );
        let dry = gc(&fs, &stores, Duration::ZERO, true, &state_file, &quiet)
            .await
            .expect("gc dry run");
        assert_eq!((dry.collectable.len(), dry.deleted), (3, 0), "{dry:?}");
        let second = gc(&fs, &stores, Duration::ZERO, false, &state_file, &quiet)
            .await
            .expect("gc");
        assert_eq!(second.deleted, 3, "{second:?}");
        let total: usize = list_all(&stores, "")
            .await
            .expect("list")
            .iter()
            .map(Vec::len)
            .sum();
        assert_eq!(
            total, second.live_fragments,
            "exactly the live fragments remain"
        );
        // The file still reads back, and fsck is clean.
        let report = fsck(&fs, &stores, &quiet).await.expect("fsck");
        assert!(
            report.problems.is_empty() && report.fragments_missing == 0,
            "{report:?}"
        );
        // Lose one fragment: fsck reports it (the content still verifies, m = 1).
        let name = list_all(&stores, "").await.expect("list")[0][0]
            .name
            .clone();
        stores[0].delete(&name).await.expect("delete");
        let report = fsck(&fs, &stores, &quiet).await.expect("fsck");
        assert_eq!(
            (report.blobs_missing_fragments, report.fragments_missing),
            (1, 1)
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}
