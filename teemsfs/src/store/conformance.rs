//! The behavioural contract of [`ObjectStore`], as one suite every implementation passes.
//!
//! Public (not `cfg(test)`) so the end-to-end tests can run it against real Redis and S3
//! servers, and so a new store only needs one line to be checked. Each check panics with a
//! message naming the store and what was expected, which is what a test wants.
//!
//! Every run works under its own random name prefix and deletes what it wrote, so runs can
//! share a bucket or database, and one store instance can be checked more than once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::RngCore;

use super::{MAX_NAME_LEN, ObjectStore, StoreError};

/// Runs every check below against `store`, then removes what the checks wrote.
pub async fn run_all(store: Arc<dyn ObjectStore>) {
    let run = run_prefix();
    round_trip(&*store, &run).await;
    missing_is_none(&*store, &run).await;
    get_range_slices_and_clips(&*store, &run).await;
    delete_is_idempotent(&*store, &run).await;
    overwrite_replaces(&*store, &run).await;
    names_we_use_are_accepted(&*store, &run).await;
    invalid_names_are_rejected(&*store).await;
    list_by_prefix_is_exact(&*store, &run).await;
    concurrent_puts(Arc::clone(&store), &run).await;
    cleanup(&*store, &run).await;
}

/// A fresh `conf-<16 hex>-` prefix for one run.
pub fn run_prefix() -> String {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    format!("conf-{}-", hex::encode(id))
}

fn pattern(len: usize, seed: u8) -> Bytes {
    // Every byte value occurs, and two different seeds give different contents.
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn put_ok(store: &dyn ObjectStore, name: &str, bytes: Bytes) {
    if let Err(e) = store.put(name, bytes).await {
        panic!("{}: put {name:?} failed: {e}", store.describe());
    }
}

async fn get_ok(store: &dyn ObjectStore, name: &str) -> Option<Bytes> {
    match store.get(name).await {
        Ok(found) => found,
        Err(e) => panic!("{}: get {name:?} failed: {e}", store.describe()),
    }
}

async fn delete_ok(store: &dyn ObjectStore, name: &str) {
    if let Err(e) = store.delete(name).await {
        panic!("{}: delete {name:?} failed: {e}", store.describe());
    }
}

fn assert_same(store: &dyn ObjectStore, name: &str, got: Option<Bytes>, want: &Bytes) {
    match got {
        None => panic!("{}: {name:?} is missing after put", store.describe()),
        Some(got) if got != *want => panic!(
            "{}: {name:?} read back {} bytes that differ from the {} bytes put",
            store.describe(),
            got.len(),
            want.len()
        ),
        Some(_) => {}
    }
}

/// Empty, small, and 5 MiB objects come back byte for byte.
pub async fn round_trip(store: &dyn ObjectStore, run: &str) {
    for (label, len) in [("empty", 0), ("small", 1_000), ("large", 5 << 20)] {
        let name = format!("{run}rt-{label}");
        let bytes = pattern(len, 7);
        put_ok(store, &name, bytes.clone()).await;
        assert_same(store, &name, get_ok(store, &name).await, &bytes);
    }
}

/// A name never written reads as `None`, not as an error or empty bytes.
pub async fn missing_is_none(store: &dyn ObjectStore, run: &str) {
    let name = format!("{run}never-written");
    assert_eq!(
        get_ok(store, &name).await,
        None,
        "{}: get of a missing object must be Ok(None)",
        store.describe()
    );
}

async fn get_range_ok(store: &dyn ObjectStore, name: &str, start: u64, len: u64) -> Option<Bytes> {
    match store.get_range(name, start, len).await {
        Ok(found) => found,
        Err(e) => panic!(
            "{}: get_range {name:?} {start}+{len} failed: {e}",
            store.describe()
        ),
    }
}

/// `get_range` returns exactly the requested slice, clipped to the object: ranges at the
/// start, in the middle, at and across the end; an empty `Some` for `len` 0 and for a start
/// at or past the end (of an empty object too); `None` for a missing object, whatever the
/// range.
pub async fn get_range_slices_and_clips(store: &dyn ObjectStore, run: &str) {
    const SIZE: u64 = 100_000;
    let name = format!("{run}gr-100k");
    let object = pattern(SIZE as usize, 5);
    put_ok(store, &name, object.clone()).await;
    let cases: [(u64, u64); 17] = [
        (0, 1),
        (0, 4_096),
        (0, SIZE),
        (0, SIZE + 1),
        (0, u64::MAX),
        (1, 10),
        (50_000, 1_234),
        (65_535, 2),
        (SIZE - 10, 10),
        (SIZE - 1, 1),
        (SIZE - 10, 100),
        (SIZE, 1),
        (SIZE, 10),
        (SIZE + 1, 10),
        (1 << 40, 10),
        (u64::MAX, u64::MAX),
        (u64::MAX - 1, 5),
    ];
    let zero_len = [0, 50_000, SIZE - 1, SIZE, SIZE + 7];
    for (start, len) in cases.into_iter().chain(zero_len.map(|start| (start, 0))) {
        let first = start.min(SIZE) as usize;
        let end = start.saturating_add(len).min(SIZE) as usize;
        let want = object.slice(first..end);
        match get_range_ok(store, &name, start, len).await {
            None => panic!(
                "{}: get_range {name:?} {start}+{len} answered None for an existing object",
                store.describe()
            ),
            Some(got) if got != want => panic!(
                "{}: get_range {name:?} {start}+{len} returned {} bytes that differ from the \
                 {} bytes {first}..{end} of the object",
                store.describe(),
                got.len(),
                want.len()
            ),
            Some(_) => {}
        }
    }

    let empty = format!("{run}gr-empty");
    put_ok(store, &empty, Bytes::new()).await;
    for (start, len) in [(0, 0), (0, 1), (0, 10), (5, 10)] {
        assert_eq!(
            get_range_ok(store, &empty, start, len).await,
            Some(Bytes::new()),
            "{}: get_range {empty:?} {start}+{len} of an empty object",
            store.describe()
        );
    }

    let missing = format!("{run}gr-never-written");
    for (start, len) in [(0, 10), (0, 0), (SIZE, 10), (u64::MAX, u64::MAX)] {
        assert_eq!(
            get_range_ok(store, &missing, start, len).await,
            None,
            "{}: get_range {missing:?} {start}+{len} of a missing object must be Ok(None)",
            store.describe()
        );
    }
}

/// Deleting a missing object succeeds; a deleted object reads as `None`.
pub async fn delete_is_idempotent(store: &dyn ObjectStore, run: &str) {
    let name = format!("{run}del");
    delete_ok(store, &name).await;
    put_ok(store, &name, pattern(10, 1)).await;
    delete_ok(store, &name).await;
    assert_eq!(
        get_ok(store, &name).await,
        None,
        "{}: {name:?} still readable after delete",
        store.describe()
    );
    delete_ok(store, &name).await;
}

/// A second put under a name replaces the object (documented on [`ObjectStore`]); teemsfs
/// relies on it only for read repair, which rewrites identical bytes.
pub async fn overwrite_replaces(store: &dyn ObjectStore, run: &str) {
    let name = format!("{run}ow");
    put_ok(store, &name, pattern(100, 1)).await;
    let second = pattern(50, 2);
    put_ok(store, &name, second.clone()).await;
    assert_same(store, &name, get_ok(store, &name).await, &second);
    let listed = list_ok(store, &name).await;
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.name.as_str(), m.size_bytes))
            .collect::<Vec<_>>(),
        vec![(name.as_str(), 50)],
        "{}: listing after overwrite",
        store.describe()
    );
}

/// Every character class our names use, and the longest name allowed.
pub async fn names_we_use_are_accepted(store: &dyn ObjectStore, run: &str) {
    let long = format!("{run}{}", "z".repeat(MAX_NAME_LEN - run.len()));
    let names = [
        format!("{run}f-0123456789abcdef0123456789abcdef"),
        format!("{run}MiXeD.case_under-score.9"),
        format!("{run}x..y"),
        long,
    ];
    for (i, name) in names.iter().enumerate() {
        let bytes = pattern(64, i as u8);
        put_ok(store, name, bytes.clone()).await;
        assert_same(store, name, get_ok(store, name).await, &bytes);
    }
}

/// Names that could escape a directory or act as a pattern are refused before any I/O.
pub async fn invalid_names_are_rejected(store: &dyn ObjectStore) {
    for bad in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        ".hidden",
        "star*",
        "sp ace",
    ] {
        match store.put(bad, Bytes::from_static(b"x")).await {
            Err(StoreError::InvalidName { .. }) => {}
            other => panic!(
                "{}: put {bad:?} must fail with InvalidName, got {other:?}",
                store.describe()
            ),
        }
        match store.get(bad).await {
            Err(StoreError::InvalidName { .. }) => {}
            other => panic!(
                "{}: get {bad:?} must fail with InvalidName, got {other:?}",
                store.describe()
            ),
        }
        match store.get_range(bad, 0, 1).await {
            Err(StoreError::InvalidName { .. }) => {}
            other => panic!(
                "{}: get_range {bad:?} must fail with InvalidName, got {other:?}",
                store.describe()
            ),
        }
    }
}

async fn list_ok(store: &dyn ObjectStore, prefix: &str) -> Vec<super::ObjectMeta> {
    match store.list(prefix).await {
        Ok(listed) => listed,
        Err(e) => panic!("{}: list {prefix:?} failed: {e}", store.describe()),
    }
}

/// `list(prefix)` returns exactly the names with that prefix (case-sensitive), sorted,
/// with their sizes, and a modification time near now where the store keeps one.
pub async fn list_by_prefix_is_exact(store: &dyn ObjectStore, run: &str) {
    let base = format!("{run}ls-");
    let written = [
        ("a", 3usize),
        ("a1", 0),
        ("a2", 1_024),
        ("A1", 7),
        ("b1", 5),
        ("ab.c", 9),
    ];
    for (suffix, len) in written {
        put_ok(store, &format!("{base}{suffix}"), pattern(len, 3)).await;
    }
    let listed = list_ok(store, &format!("{base}a")).await;
    let got: Vec<(String, u64)> = listed
        .iter()
        .map(|m| (m.name.clone(), m.size_bytes))
        .collect();
    let want: Vec<(String, u64)> = [("a", 3), ("a1", 0), ("a2", 1_024), ("ab.c", 9)]
        .iter()
        .map(|(s, n)| (format!("{base}{s}"), *n))
        .collect();
    assert_eq!(got, want, "{}: list {base}a", store.describe());

    let now = SystemTime::now();
    for meta in &listed {
        if let Some(modified) = meta.modified {
            let skew = match now.duration_since(modified) {
                Ok(age) => age,
                Err(e) => e.duration(),
            };
            assert!(
                skew < Duration::from_secs(600),
                "{}: {} has modification time {modified:?}, {skew:?} away from now",
                store.describe(),
                meta.name
            );
        }
    }

    let all = list_ok(store, &base).await;
    assert_eq!(
        all.len(),
        written.len(),
        "{}: list {base}",
        store.describe()
    );
    let nothing = list_ok(store, &format!("{base}zzz")).await;
    assert!(
        nothing.is_empty(),
        "{}: list of an unused prefix returned {nothing:?}",
        store.describe()
    );
}

/// 32 different objects put at once are all stored; 8 puts racing on one name leave one
/// of the written objects whole, never a mix.
pub async fn concurrent_puts(store: Arc<dyn ObjectStore>, run: &str) {
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let store = Arc::clone(&store);
        let name = format!("{run}cc-{i:02}");
        tasks.push(tokio::spawn(async move {
            let bytes = pattern(10_000 + usize::from(i), i);
            store.put(&name, bytes).await
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: concurrent put failed: {e}", store.describe()),
            Err(e) => panic!("{}: concurrent put task failed: {e}", store.describe()),
        }
    }
    for i in 0..32u8 {
        let name = format!("{run}cc-{i:02}");
        let want = pattern(10_000 + usize::from(i), i);
        assert_same(&*store, &name, get_ok(&*store, &name).await, &want);
    }

    let name = format!("{run}race");
    let candidates: Vec<Bytes> = (0..8u8).map(|i| pattern(200_000, i)).collect();
    let mut tasks = Vec::new();
    for bytes in candidates.iter().cloned() {
        let store = Arc::clone(&store);
        let name = name.clone();
        tasks.push(tokio::spawn(async move { store.put(&name, bytes).await }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: racing put failed: {e}", store.describe()),
            Err(e) => panic!("{}: racing put task failed: {e}", store.describe()),
        }
    }
    let got = get_ok(&*store, &name).await;
    assert!(
        got.as_ref().is_some_and(|g| candidates.contains(g)),
        "{}: after racing puts {name:?} holds none of the written objects",
        store.describe()
    );
}

/// Deletes everything under `run` and checks the listing is empty afterwards.
pub async fn cleanup(store: &dyn ObjectStore, run: &str) {
    for meta in list_ok(store, run).await {
        delete_ok(store, &meta.name).await;
    }
    let left = list_ok(store, run).await;
    assert!(
        left.is_empty(),
        "{}: objects left after deleting all: {left:?}",
        store.describe()
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use crate::store::{LocalStore, MemoryStore};

    #[tokio::test]
    async fn memory_store_conforms() {
        run_all(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        run_all(Arc::new(LocalStore::open(dir.path()).unwrap())).await;
    }

    /// The suite must be able to fail: a store that loses writes is caught.
    #[tokio::test]
    #[should_panic(expected = "missing after put")]
    async fn suite_catches_a_store_that_loses_writes() {
        let faulty = crate::store::FaultyStore::new(Arc::new(MemoryStore::new()), 0);
        faulty.set_fault("conf-", crate::store::Fault::Drop);
        run_all(Arc::new(faulty)).await;
    }
}
