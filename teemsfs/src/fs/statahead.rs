//! Stat-ahead: when lookups in a directory walk its names in order — `ls -l`, `find`,
//! `rsync`, a script over numbered files — the inodes of the next names are read before
//! the kernel asks for them (the idea of Lustre's statahead).
//!
//! A read ahead is an ordinary TEEMS read that asks for a read lease; the session keeps
//! the answer only under that lease (docs/PROTOCOLS.md, LEASE). The lookup that then
//! asks for the name still reads the inode through the session, and gets the leased
//! answer without a round trip, or a fresh one when the lease is gone. So reading ahead
//! changes no answer, only when the round trip happens; and it is on only where reads
//! are leased ([`crate::meta::Teems::leases_reads`]).
//!
//! Detection: a run of lookups whose names ascend (byte order, the order `readdir`
//! returns) starts a scan. The directory's names are listed once, sorted, and from then
//! on every lookup found in the listing keeps the reads `window` names ahead of it. The
//! window follows the scan's pace (a third of a second of names, 8 to 256), so what is
//! read ahead is used well inside the lease (docs/PROTOCOLS.md LEASE-C1 keeps 0.8 of
//! it). A lookup whose inode read is still in flight waits for it instead of sending a
//! second one. A listing is a snapshot: a name missing from it ends the scan, and a later
//! run lists the directory again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokio::sync::watch;

use crate::meta::{Key, ShareId, Teems};

/// Ascending lookups in a row that start a scan.
const RUN_TO_SCAN: u32 = 3;
/// Bounds of the window of names read ahead of a scan.
const MIN_WINDOW: usize = 8;
const MAX_WINDOW: usize = 256;
/// How much of the scan's pace the window covers.
const WINDOW_TIME: Duration = Duration::from_millis(300);
/// Directories followed at once; a new one beyond this replaces the least recent.
const MAX_DIRS: usize = 8;
/// Directories of more buckets than this (some 100,000 names with the default bucket
/// size) are not listed for a scan: the listing would cost more than the scan saves.
pub(super) const MAX_LISTED_BUCKETS: u64 = 1024;
/// A directory whose listing went stale is listed again at most this often.
const RELIST_EVERY: Duration = Duration::from_secs(1);
/// Reads ahead in flight per batch.
const READ_PARALLEL: usize = 32;

/// A directory's names, sorted, with their inode keys.
type Listing = Arc<[(Vec<u8>, Key)]>;

/// What a lookup should do next for the stat-ahead.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Nothing,
    /// A scan of this directory started or went stale: list it and call
    /// [`StatAhead::listed`].
    List,
    /// Read these inodes ahead.
    Read(Vec<Key>),
}

/// One directory being followed.
#[derive(Debug)]
struct Scan {
    last: Vec<u8>,
    /// When the current run of ascending lookups started, and its length: the pace.
    run_started: Instant,
    run_len: u32,
    used: Instant,
    /// The directory's names, sorted, with their inode keys.
    listing: Option<Listing>,
    /// When the last listing was asked for. It holds the next one off for
    /// [`RELIST_EVERY`], whether it is still under way, done, or lost with a lookup
    /// that was cancelled.
    listed_at: Option<Instant>,
    /// Names before this index of `listing` have had their inodes read ahead (or were
    /// passed) in the current run.
    ahead: usize,
}

impl Scan {
    fn new(now: Instant) -> Scan {
        Scan {
            last: Vec::new(),
            run_started: now,
            run_len: 0,
            used: now,
            listing: None,
            listed_at: None,
            ahead: 0,
        }
    }

    fn window(&self, now: Instant) -> usize {
        let secs = now.duration_since(self.run_started).as_secs_f64().max(1e-3);
        let per_s = f64::from(self.run_len) / secs;
        ((per_s * WINDOW_TIME.as_secs_f64()) as usize).clamp(MIN_WINDOW, MAX_WINDOW)
    }
}

#[derive(Default)]
struct State {
    dirs: HashMap<Key, Scan>,
    /// Inodes being read ahead, each with a channel closed when its read ends.
    in_flight: HashMap<Key, watch::Receiver<()>>,
}

/// The stat-ahead of one mount.
pub(super) struct StatAhead {
    on: bool,
    state: Mutex<State>,
    /// Inodes read ahead, and lookups that found their inode read ahead.
    reads: AtomicU64,
    hits: AtomicU64,
}

impl StatAhead {
    pub(super) fn new(on: bool) -> StatAhead {
        StatAhead {
            on,
            state: Mutex::new(State::default()),
            reads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each method is one small update: a poisoned lock is taken over.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// (inodes read ahead, lookups that found theirs read ahead) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
        )
    }

    /// Waits for a read ahead of `key` still in flight, so the caller's own read of it
    /// is answered from the lease that read brings instead of going out again.
    pub(super) async fn settled(&self, key: Key) {
        let waiting = self.state().in_flight.get(&key).cloned();
        if let Some(mut rx) = waiting {
            // The sender is dropped when the read ends; `changed` then returns.
            let _ = rx.changed().await;
        }
    }

    /// A lookup found `name` in `dir`.
    pub(super) fn looked_up(&self, dir: Key, name: &[u8], now: Instant) -> Next {
        if !self.on {
            return Next::Nothing;
        }
        let mut state = self.state();
        if !state.dirs.contains_key(&dir) && state.dirs.len() >= MAX_DIRS {
            let oldest = state
                .dirs
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                state.dirs.remove(&k);
            }
        }
        let scan = state.dirs.entry(dir).or_insert_with(|| Scan::new(now));
        scan.used = now;
        if !scan.last.is_empty() && name > scan.last.as_slice() {
            scan.run_len += 1;
        } else {
            // A new run: what was read ahead of the last one may be past its lease
            // (reading a name again while its lease lasts costs no round trip).
            scan.run_len = 0;
            scan.run_started = now;
            scan.ahead = 0;
        }
        scan.last.clear();
        scan.last.extend_from_slice(name);
        if scan.run_len < RUN_TO_SCAN {
            return Next::Nothing;
        }
        if scan.listing.is_none() {
            return Self::list(scan, now);
        }
        self.ahead_of(scan, now)
    }

    /// The reads that keep the window ahead of `scan.last` in the listing.
    fn ahead_of(&self, scan: &mut Scan, now: Instant) -> Next {
        let Some(listing) = scan.listing.clone() else {
            return Next::Nothing;
        };
        let name = scan.last.as_slice();
        let Ok(at) = listing.binary_search_by(|(n, _)| n.as_slice().cmp(name)) else {
            // A name the snapshot lacks: it is stale.
            scan.listing = None;
            return Self::list(scan, now);
        };
        if at < scan.ahead {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        let start = scan.ahead.max(at + 1);
        let end = (at + 1 + scan.window(now)).min(listing.len());
        if start >= end {
            return Next::Nothing;
        }
        scan.ahead = end;
        Next::Read(listing[start..end].iter().map(|(_, k)| *k).collect())
    }

    fn list(scan: &mut Scan, now: Instant) -> Next {
        let recent = scan
            .listed_at
            .is_some_and(|at| now.duration_since(at) < RELIST_EVERY);
        if recent {
            return Next::Nothing;
        }
        scan.listed_at = Some(now);
        Next::List
    }

    /// The names of `dir`, sorted, for a scan [`Next::List`] asked for (`None` if the
    /// listing failed or the directory is too large to list); the reads ahead of the
    /// scan's last lookup.
    pub(super) fn listed(
        &self,
        dir: Key,
        names: Option<Vec<(Vec<u8>, Key)>>,
        now: Instant,
    ) -> Next {
        let mut state = self.state();
        let Some(scan) = state.dirs.get_mut(&dir) else {
            return Next::Nothing;
        };
        scan.ahead = 0;
        scan.listing = names.map(Listing::from);
        self.ahead_of(scan, now)
    }

    /// Starts reading `keys` ahead, in the background, through `teems`.
    pub(super) fn read_ahead(
        self: &Arc<Self>,
        teems: &Arc<dyn Teems>,
        share: ShareId,
        keys: Vec<Key>,
    ) {
        let mut senders = Vec::with_capacity(keys.len());
        {
            let mut state = self.state();
            for key in keys {
                if state.in_flight.contains_key(&key) {
                    continue;
                }
                let (tx, rx) = watch::channel(());
                state.in_flight.insert(key, rx);
                senders.push((key, tx));
            }
        }
        if senders.is_empty() {
            return;
        }
        self.reads
            .fetch_add(senders.len() as u64, Ordering::Relaxed);
        let (me, teems) = (Arc::clone(self), Arc::clone(teems));
        tokio::spawn(async move {
            stream::iter(senders)
                .for_each_concurrent(READ_PARALLEL, |(key, tx)| {
                    let (me, teems) = (&me, &teems);
                    async move {
                        // Only the lease the answer brings matters; a failed read
                        // leaves the lookup to read for itself.
                        let _ = teems.read(share, key).await;
                        me.state().in_flight.remove(&key);
                        drop(tx);
                    }
                })
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Key {
        Key([i; 16])
    }

    fn names(n: u8) -> Vec<(Vec<u8>, Key)> {
        (0..n)
            .map(|i| (format!("f{i:03}").into_bytes(), key(i)))
            .collect()
    }

    #[test]
    fn an_ascending_run_lists_the_directory_then_reads_ahead_of_each_lookup() {
        let sa = StatAhead::new(true);
        let dir = key(200);
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_millis(i);
        for i in 0..3u8 {
            let next = sa.looked_up(dir, format!("f{i:03}").as_bytes(), at(u64::from(i)));
            assert_eq!(next, Next::Nothing, "lookup {i} before a run");
        }
        assert_eq!(sa.looked_up(dir, b"f003", at(3)), Next::List);
        // A second lookup while the listing is under way lists nothing more.
        assert_eq!(sa.looked_up(dir, b"f004", at(4)), Next::Nothing);
        // 4 names in 4 ms: 1,000 names/s, 300 ms of them is 300, clamped to 256; the
        // listing ends at 100.
        let Next::Read(keys) = sa.listed(dir, Some(names(100)), at(4)) else {
            panic!("no reads ahead")
        };
        assert_eq!(keys, (5..100).map(key).collect::<Vec<_>>());
        // Everything is ahead now: the next lookups only count hits.
        assert_eq!(sa.looked_up(dir, b"f005", at(5)), Next::Nothing);
        assert_eq!(sa.looked_up(dir, b"f006", at(6)), Next::Nothing);
        assert_eq!(sa.counts().1, 2);
    }

    #[test]
    fn a_slow_scan_reads_a_small_window_and_keeps_it_ahead() {
        let sa = StatAhead::new(true);
        let dir = key(200);
        let t0 = Instant::now();
        // One lookup per 100 ms: 10 names/s, three of them per 300 ms: the minimum, 8.
        let at = |i: u64| t0 + Duration::from_millis(100 * i);
        for i in 0..4u8 {
            sa.looked_up(dir, format!("f{i:03}").as_bytes(), at(u64::from(i)));
        }
        let Next::Read(keys) = sa.listed(dir, Some(names(100)), at(3)) else {
            panic!("no reads ahead")
        };
        assert_eq!(keys, (4..12).map(key).collect::<Vec<_>>());
        let Next::Read(keys) = sa.looked_up(dir, b"f004", at(4)) else {
            panic!("no reads ahead")
        };
        assert_eq!(keys, vec![key(12)], "the window moves one name per lookup");
        assert_eq!(sa.counts().1, 1);
    }

    #[test]
    fn random_lookups_read_nothing_ahead_and_a_stale_listing_ends_the_scan() {
        let sa = StatAhead::new(true);
        let dir = key(200);
        let now = Instant::now();
        for name in [
            "f050", "f010", "f070", "f020", "f090", "f000", "f030", "f001",
        ] {
            assert_eq!(
                sa.looked_up(dir, name.as_bytes(), now),
                Next::Nothing,
                "{name}"
            );
        }
        for name in ["f002", "f003"] {
            assert_eq!(
                sa.looked_up(dir, name.as_bytes(), now),
                Next::Nothing,
                "{name}"
            );
        }
        assert_eq!(sa.looked_up(dir, b"f004", now), Next::List);
        let Next::Read(keys) = sa.listed(dir, Some(names(10)), now) else {
            panic!("no reads ahead")
        };
        assert_eq!(keys, (5..10).map(key).collect::<Vec<_>>());
        // A name created after the listing: the scan stops; it is listed again only
        // after RELIST_EVERY.
        assert_eq!(sa.looked_up(dir, b"f0045", now), Next::Nothing);
        assert_eq!(sa.looked_up(dir, b"f005", now), Next::Nothing);
        let later = now + RELIST_EVERY;
        assert_eq!(sa.looked_up(dir, b"f006", later), Next::List);
    }

    #[test]
    fn a_new_run_over_the_same_names_reads_them_ahead_again() {
        let sa = StatAhead::new(true);
        let dir = key(200);
        let now = Instant::now();
        for i in 0..3u8 {
            sa.looked_up(dir, format!("f{i:03}").as_bytes(), now);
        }
        assert_eq!(sa.looked_up(dir, b"f003", now), Next::List);
        assert!(matches!(
            sa.listed(dir, Some(names(20)), now),
            Next::Read(_)
        ));
        sa.looked_up(dir, b"f019", now);
        // The same names from the start, later: a new run, read ahead again.
        let later = now + Duration::from_secs(5);
        for i in 0..3u8 {
            assert_eq!(
                sa.looked_up(dir, format!("f{i:03}").as_bytes(), later),
                Next::Nothing
            );
        }
        let Next::Read(keys) = sa.looked_up(dir, b"f003", later) else {
            panic!("nothing read ahead of the second run")
        };
        assert_eq!(keys, (4..20).map(key).collect::<Vec<_>>());
    }

    #[test]
    fn off_without_leases() {
        let sa = StatAhead::new(false);
        for i in 0..10u8 {
            let next = sa.looked_up(key(1), format!("f{i:03}").as_bytes(), Instant::now());
            assert_eq!(next, Next::Nothing);
        }
    }
}
