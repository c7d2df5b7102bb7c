//! [`FaultyStore`]: a wrapper that makes any store misbehave, on purpose and reproducibly.
//!
//! The threat model (DESIGN §1) lets the adversary drop, delay, modify, or replace any
//! stored object with an older valid copy. Every reliability test expresses its adversary
//! through this wrapper, in two modes that can be combined:
//!
//! - **scripted**: [`FaultyStore::set_fault`] attaches a [`Fault`] to every name that
//!   starts with a given prefix (an exact name is a prefix of itself);
//! - **random**: [`FaultConfig`] gives per-operation probabilities, drawn from a ChaCha
//!   generator seeded with a `u64`, so a failing run replays from its seed.
//!
//! The wrapper remembers every version written *through it* under each name, which is
//! what lets it serve an older object ([`Fault::Stale`]). Since teemsfs never overwrites a
//! fragment name, the stronger replay attack is [`Fault::Substitute`]: answer a get with
//! the (valid, authentic) bytes of a different stored object.
//!
//! [`FaultyStore::injected`] counts the faults actually applied, so a test can assert its
//! adversary did something rather than pass vacuously.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ObjectMeta, ObjectStore, Op, StoreError, check_name, slice_range};

/// One misbehaviour, applied to the names a rule matches. What a fault does to `get` it
/// does to `get_range` too, restricted to the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The object is gone: `get` answers `None`, and a `put` is acknowledged but not stored
    /// (a lost write).
    Drop,
    /// `get` returns the object with one byte flipped (or one byte appended to an empty
    /// object); `get_range` flips one byte of the range (or returns one byte for an empty
    /// range).
    Corrupt,
    /// Every operation waits this long before going to the inner store.
    Delay { delay_ms: u64 },
    /// Every operation fails with [`StoreError::Injected`].
    Fail,
    /// `get` returns the version written before the current one under this name, if this
    /// wrapper saw one (a rollback of the store).
    Stale,
    /// `get` returns the bytes stored under another name (a replay of an authentic object
    /// in the wrong place).
    Substitute { with: String },
}

/// Probabilities (0.0–1.0) of a random fault on each operation, drawn independently per
/// operation in the order listed; the first one drawn applies. Scripted faults take
/// precedence over random ones. `get` here stands for `get_range` too.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// `put` acknowledged but lost; `get` answers `None`.
    pub p_drop: f64,
    /// `get` returns flipped bytes.
    pub p_corrupt: f64,
    /// Any operation fails.
    pub p_fail: f64,
    /// `get` returns the previous version, if there is one.
    pub p_stale: f64,
    /// Any operation is delayed by `delay_ms`.
    pub p_delay: f64,
    pub delay_ms: u64,
}

/// How many faults were actually applied, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub drops: u64,
    pub corrupts: u64,
    pub delays: u64,
    pub fails: u64,
    pub stales: u64,
    pub substitutes: u64,
}

#[derive(Debug)]
struct State {
    rng: ChaCha8Rng,
    random: FaultConfig,
    /// (prefix, fault) in insertion order.
    rules: Vec<(String, Fault)>,
    /// Every version put through this wrapper, oldest first.
    history: HashMap<String, Vec<Bytes>>,
    counts: FaultCounts,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    label: String,
    state: Mutex<State>,
}

/// What to do for one operation, decided under the lock and carried out after it.
#[derive(Debug, Default)]
struct Plan {
    delay_ms: u64,
    action: Option<Fault>,
    /// Random draw used to place a corruption.
    corrupt_at: u64,
}

impl FaultyStore {
    /// Wraps `inner`; no faults until configured. `seed` fixes every random choice.
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> FaultyStore {
        let label = format!("faulty({})", inner.describe());
        FaultyStore {
            inner,
            label,
            state: Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(seed),
                random: FaultConfig::default(),
                rules: Vec::new(),
                history: HashMap::new(),
                counts: FaultCounts::default(),
            }),
        }
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Applies `fault` to every name starting with `prefix`, replacing an earlier rule for
    /// the same prefix. Rules are checked in the order they were first set; all matching
    /// [`Fault::Delay`]s add up, and the first matching other fault applies.
    pub fn set_fault(&self, prefix: &str, fault: Fault) {
        let mut state = self.lock();
        let is_delay = matches!(fault, Fault::Delay { .. });
        match state
            .rules
            .iter_mut()
            .find(|(p, f)| p == prefix && matches!(f, Fault::Delay { .. }) == is_delay)
        {
            Some(rule) => rule.1 = fault,
            None => state.rules.push((prefix.to_owned(), fault)),
        }
    }

    /// Removes every rule set for exactly `prefix`.
    pub fn clear_fault(&self, prefix: &str) {
        self.lock().rules.retain(|(p, _)| p != prefix);
    }

    /// Removes every scripted rule and turns random faults off.
    pub fn clear_all(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.random = FaultConfig::default();
    }

    pub fn set_random(&self, config: FaultConfig) {
        self.lock().random = config;
    }

    pub fn injected(&self) -> FaultCounts {
        self.lock().counts
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are short and never leave the state half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self, op: Op, name: &str) -> Plan {
        let mut state = self.lock();
        let mut plan = Plan::default();
        let applies = |fault: &Fault| match fault {
            Fault::Drop => matches!(op, Op::Put | Op::Get | Op::GetRange),
            Fault::Corrupt | Fault::Stale | Fault::Substitute { .. } => {
                matches!(op, Op::Get | Op::GetRange)
            }
            Fault::Delay { .. } | Fault::Fail => true,
        };
        for (prefix, fault) in &state.rules {
            if !name.starts_with(prefix.as_str()) || !applies(fault) {
                continue;
            }
            match fault {
                Fault::Delay { delay_ms } => {
                    plan.delay_ms = plan.delay_ms.saturating_add(*delay_ms)
                }
                other if plan.action.is_none() => plan.action = Some(other.clone()),
                _ => {}
            }
        }
        let random = state.random.clone();
        if random.p_delay > 0.0 && state.rng.random_bool(random.p_delay.clamp(0.0, 1.0)) {
            plan.delay_ms = plan.delay_ms.saturating_add(random.delay_ms);
        }
        if plan.action.is_none() {
            let candidates = [
                (random.p_drop, Fault::Drop),
                (random.p_corrupt, Fault::Corrupt),
                (random.p_fail, Fault::Fail),
                (random.p_stale, Fault::Stale),
            ];
            for (p, fault) in candidates {
                if p > 0.0 && applies(&fault) && state.rng.random_bool(p.clamp(0.0, 1.0)) {
                    plan.action = Some(fault);
                    break;
                }
            }
        }
        plan.corrupt_at = state.rng.random();
        if plan.delay_ms > 0 {
            state.counts.delays += 1;
        }
        plan
    }

    /// A `get` (`op` [`Op::Get`]) or `get_range` ([`Op::GetRange`]) of `span` of `name`,
    /// with the same faults for both: a stale or substituted read returns that span of the
    /// other bytes, and a corruption flips a byte inside the span (an empty span gets one
    /// byte), so a faulted ranged read is always damaged where the caller looks.
    async fn read(&self, op: Op, name: &str, span: Span) -> Result<Option<Bytes>, StoreError> {
        let plan = self.plan(op, name);
        if plan.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
        }
        match plan.action {
            Some(Fault::Fail) => Err(self.injected_error(op, name)),
            Some(Fault::Drop) => {
                self.count(|c| c.drops += 1);
                Ok(None)
            }
            Some(Fault::Corrupt) => {
                let real = self.read_inner(name, span).await?;
                Ok(real.map(|bytes| {
                    self.count(|c| c.corrupts += 1);
                    corrupt(&bytes, plan.corrupt_at)
                }))
            }
            Some(Fault::Stale) => {
                let older = {
                    let state = self.lock();
                    state
                        .history
                        .get(name)
                        .and_then(|versions| {
                            versions.len().checked_sub(2).and_then(|i| versions.get(i))
                        })
                        .cloned()
                };
                match older {
                    Some(bytes) => {
                        self.count(|c| c.stales += 1);
                        Ok(Some(span.cut(&bytes)))
                    }
                    None => self.read_inner(name, span).await,
                }
            }
            Some(Fault::Substitute { with }) => {
                let replayed = match self.read_inner(&with, span).await? {
                    Some(bytes) => Some(bytes),
                    // The substitute may have been deleted since; the adversary kept a copy.
                    None => self
                        .lock()
                        .history
                        .get(&with)
                        .and_then(|versions| versions.last())
                        .map(|bytes| span.cut(bytes)),
                };
                if replayed.is_some() {
                    self.count(|c| c.substitutes += 1);
                }
                Ok(replayed)
            }
            Some(Fault::Delay { .. }) | None => self.read_inner(name, span).await,
        }
    }

    /// `span` of `name` in the inner store, read natively (a range as a range).
    async fn read_inner(&self, name: &str, span: Span) -> Result<Option<Bytes>, StoreError> {
        match span {
            Span::Whole => self.inner.get(name).await,
            Span::Range { start, len } => self.inner.get_range(name, start, len).await,
        }
    }

    fn count(&self, update: impl FnOnce(&mut FaultCounts)) {
        update(&mut self.lock().counts);
    }

    fn injected_error(&self, op: Op, name: &str) -> StoreError {
        self.count(|c| c.fails += 1);
        StoreError::Injected {
            store: self.label.clone(),
            op,
            name: name.to_owned(),
        }
    }
}

/// The part of an object one read asks for.
#[derive(Clone, Copy, Debug)]
enum Span {
    Whole,
    Range { start: u64, len: u64 },
}

impl Span {
    /// This span of a whole object (a replayed copy the wrapper kept).
    fn cut(self, object: &Bytes) -> Bytes {
        match self {
            Span::Whole => object.clone(),
            Span::Range { start, len } => slice_range(object, start, len),
        }
    }
}

fn corrupt(bytes: &Bytes, at: u64) -> Bytes {
    if bytes.is_empty() {
        return Bytes::from_static(&[0x5a]);
    }
    let mut flipped = BytesMut::from(bytes.as_ref());
    let len = flipped.len() as u64;
    // `at % len` < len, so the index is in bounds.
    if let Some(byte) = flipped.get_mut((at % len) as usize) {
        *byte ^= 0x01 | ((at >> 56) as u8);
    }
    flipped.freeze()
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        check_name(&self.label, name)?;
        let plan = self.plan(Op::Put, name);
        if plan.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
        }
        match plan.action {
            Some(Fault::Fail) => return Err(self.injected_error(Op::Put, name)),
            Some(Fault::Drop) => {
                self.count(|c| c.drops += 1);
                return Ok(());
            }
            _ => {}
        }
        self.inner.put(name, bytes.clone()).await?;
        self.lock()
            .history
            .entry(name.to_owned())
            .or_default()
            .push(bytes);
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        self.read(Op::Get, name, Span::Whole).await
    }

    async fn get_range(
        &self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        self.read(Op::GetRange, name, Span::Range { start, len })
            .await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(&self.label, name)?;
        let plan = self.plan(Op::Delete, name);
        if plan.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
        }
        if plan.action == Some(Fault::Fail) {
            return Err(self.injected_error(Op::Delete, name));
        }
        // History is kept: an adversary who copied an object can replay it after deletion.
        self.inner.delete(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let plan = self.plan(Op::List, prefix);
        if plan.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
        }
        if plan.action == Some(Fault::Fail) {
            return Err(self.injected_error(Op::List, prefix));
        }
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn store(seed: u64) -> (Arc<MemoryStore>, FaultyStore) {
        let inner = Arc::new(MemoryStore::new());
        let faulty = FaultyStore::new(inner.clone(), seed);
        (inner, faulty)
    }

    #[tokio::test]
    async fn scripted_faults_do_what_they_say() {
        let (inner, faulty) = store(1);
        faulty.put("a-1", Bytes::from_static(b"one")).await.unwrap();
        faulty.put("a-1", Bytes::from_static(b"two")).await.unwrap();
        faulty.put("b-1", Bytes::from_static(b"bee")).await.unwrap();

        faulty.set_fault("a-", Fault::Stale);
        assert_eq!(faulty.get("a-1").await.unwrap().unwrap(), "one");
        faulty.set_fault("a-", Fault::Corrupt);
        let corrupted = faulty.get("a-1").await.unwrap().unwrap();
        assert_ne!(corrupted, "two");
        assert_eq!(corrupted.len(), 3);
        faulty.set_fault("a-", Fault::Substitute { with: "b-1".into() });
        assert_eq!(faulty.get("a-1").await.unwrap().unwrap(), "bee");
        faulty.set_fault("a-", Fault::Drop);
        assert_eq!(faulty.get("a-1").await.unwrap(), None);
        faulty
            .put("a-2", Bytes::from_static(b"lost"))
            .await
            .unwrap();
        assert_eq!(
            inner.get("a-2").await.unwrap(),
            None,
            "a dropped put is not stored"
        );
        faulty.set_fault("a-", Fault::Fail);
        assert!(matches!(
            faulty.get("a-1").await,
            Err(StoreError::Injected { op: Op::Get, .. })
        ));
        // Other names are untouched.
        assert_eq!(faulty.get("b-1").await.unwrap().unwrap(), "bee");
        faulty.clear_fault("a-");
        assert_eq!(faulty.get("a-1").await.unwrap().unwrap(), "two");
        let counts = faulty.injected();
        assert_eq!(
            (
                counts.stales,
                counts.corrupts,
                counts.substitutes,
                counts.drops,
                counts.fails
            ),
            (1, 1, 1, 2, 1)
        );
    }

    /// A ranged read suffers what a whole read does, inside the range, and counts alike.
    #[tokio::test]
    async fn ranged_reads_suffer_the_same_faults() {
        let (inner, faulty) = store(3);
        faulty
            .put("a-1", Bytes::from_static(b"old version"))
            .await
            .unwrap();
        faulty
            .put("a-1", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        faulty
            .put("b-1", Bytes::from_static(b"abcdefghij"))
            .await
            .unwrap();
        assert_eq!(faulty.get_range("a-1", 2, 3).await.unwrap().unwrap(), "234");

        faulty.set_fault("a-", Fault::Corrupt);
        for (start, len, want) in [(2, 3, &b"234"[..]), (0, 10, b"0123456789"), (8, 5, b"89")] {
            let got = faulty.get_range("a-1", start, len).await.unwrap().unwrap();
            assert_eq!(got.len(), want.len(), "range {start}+{len}");
            let flipped = got.iter().zip(want).filter(|(g, w)| g != w).count();
            assert_eq!(
                flipped, 1,
                "range {start}+{len}: one byte flipped, got {got:?}"
            );
        }
        // An empty range is damaged too: a byte where there should be none.
        assert_eq!(
            faulty.get_range("a-1", 10, 5).await.unwrap().unwrap().len(),
            1
        );
        assert_eq!(
            faulty.get_range("a-1", 3, 0).await.unwrap().unwrap().len(),
            1
        );
        // Nothing to corrupt in a missing object.
        assert_eq!(faulty.get_range("a-missing", 0, 5).await.unwrap(), None);

        // The range of the previous version, clipped to that version's length.
        faulty.set_fault("a-", Fault::Stale);
        assert_eq!(faulty.get_range("a-1", 4, 3).await.unwrap().unwrap(), "ver");
        assert_eq!(
            faulty.get_range("a-1", 8, 10).await.unwrap().unwrap(),
            "ion"
        );
        assert_eq!(faulty.get_range("a-1", 11, 10).await.unwrap().unwrap(), "");

        // The range of the other object, also after it was deleted (the adversary's copy).
        faulty.set_fault("a-", Fault::Substitute { with: "b-1".into() });
        assert_eq!(faulty.get_range("a-1", 1, 3).await.unwrap().unwrap(), "bcd");
        inner.delete("b-1").await.unwrap();
        assert_eq!(faulty.get_range("a-1", 7, 9).await.unwrap().unwrap(), "hij");

        faulty.set_fault("a-", Fault::Drop);
        assert_eq!(faulty.get_range("a-1", 0, 3).await.unwrap(), None);
        assert_eq!(faulty.get_range("a-1", 0, 0).await.unwrap(), None);
        faulty.set_fault("a-", Fault::Fail);
        assert!(matches!(
            faulty.get_range("a-1", 0, 3).await,
            Err(StoreError::Injected {
                op: Op::GetRange,
                ..
            })
        ));
        assert!(matches!(
            faulty.get_range("a/1", 0, 3).await,
            Err(StoreError::InvalidName { .. })
        ));
        faulty.clear_fault("a-");
        assert_eq!(faulty.get_range("a-1", 2, 3).await.unwrap().unwrap(), "234");
        let counts = faulty.injected();
        assert_eq!(
            (
                counts.corrupts,
                counts.stales,
                counts.substitutes,
                counts.drops,
                counts.fails
            ),
            (5, 3, 2, 2, 1)
        );
    }

    /// Random faults hit ranged reads too, and replay from the seed like whole reads.
    #[tokio::test]
    async fn random_faults_hit_ranged_reads() {
        async fn outcomes(seed: u64) -> Vec<Option<Bytes>> {
            let (_inner, faulty) = store(seed);
            faulty.put("o", Bytes::from(vec![7u8; 64])).await.unwrap();
            faulty.set_random(FaultConfig {
                p_drop: 0.2,
                p_corrupt: 0.2,
                ..FaultConfig::default()
            });
            let mut out = Vec::new();
            for i in 0..50 {
                out.push(faulty.get_range("o", i, 8).await.unwrap());
            }
            out
        }
        let first = outcomes(11).await;
        assert_eq!(first, outcomes(11).await);
        let faulted = first
            .iter()
            .filter(|got| got.as_deref() != Some(&[7u8; 8][..]))
            .count();
        assert!(
            (5..=40).contains(&faulted),
            "{faulted} of 50 faulted at p=0.4"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_waits_before_answering() {
        let (_inner, faulty) = store(2);
        faulty.put("x", Bytes::from_static(b"x")).await.unwrap();
        faulty.set_fault("x", Fault::Delay { delay_ms: 5_000 });
        let started = tokio::time::Instant::now();
        assert_eq!(faulty.get("x").await.unwrap().unwrap(), "x");
        assert!(started.elapsed() >= Duration::from_millis(5_000));
    }

    /// The same seed gives the same faults: a failing randomized run replays.
    #[tokio::test]
    async fn random_faults_replay_from_the_seed() {
        async fn outcomes(seed: u64) -> Vec<Option<Bytes>> {
            let (_inner, faulty) = store(seed);
            for i in 0..50 {
                faulty
                    .put(&format!("o{i}"), Bytes::from(vec![i as u8; 8]))
                    .await
                    .unwrap();
            }
            faulty.set_random(FaultConfig {
                p_drop: 0.2,
                p_corrupt: 0.2,
                ..FaultConfig::default()
            });
            let mut out = Vec::new();
            for i in 0..50 {
                out.push(faulty.get(&format!("o{i}")).await.unwrap());
            }
            out
        }
        let first = outcomes(7).await;
        assert_eq!(first, outcomes(7).await);
        assert_ne!(first, outcomes(8).await);
        let faulted = first
            .iter()
            .enumerate()
            .filter(|(i, got)| got.as_deref() != Some(&[*i as u8; 8][..]))
            .count();
        assert!(
            (5..=40).contains(&faulted),
            "{faulted} of 50 faulted at p=0.4"
        );
    }
}
