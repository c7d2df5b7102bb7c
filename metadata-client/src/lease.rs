//! The client half of read leases (PROTOCOLS.md LEASE-C*): answers to reads
//! the proxy leased, kept until the lease ends, so a read of the same key in
//! that time needs no round trip.
//!
//! Rules, each guarding one way a cached answer could be older than a
//! completed write:
//!
//! * **LEASE-C1** An answer is kept only until `sent + lease · 4/5`, where
//!   `sent` is when the request left this client (before any replica granted
//!   the lease): the replicas hold the key for `lease` of their clocks from
//!   when *they* received the request. With every clock's rate within 10% of
//!   real time (FAULT_MODEL.md FM-2.5), the client's end comes first:
//!   `0.8 / 0.9 ≈ 0.89` of a real lease at most against `1 / 1.1 ≈ 0.91` at
//!   least.
//! * **LEASE-C2** Replicas do not hold back this client's own writes sent
//!   after the leased read (same holder id, higher request id), so the
//!   client forgets the key when one of its own writes or deletes of it
//!   *starts* and again when it *ends*; a read that overlapped either moment
//!   is not kept (its answer may predate the write). While one of its own
//!   writes of the key is in flight the client does not ask for a lease at
//!   all: the replicas would hold that write back for the lease.
//! * **LEASE-C3** A cached answer is used only for the share it was read
//!   under: the proxy checks the share, and so must the cache.
//! * **LEASE-C4** A write the proxy answered with a lease (LEASE-W2) is kept
//!   as the key's answer, from `sent` as in C1, `sent` being when the write
//!   left this client — but only if no other write of the key by this client
//!   started or ended while it ran, and none was in flight when it started
//!   (it asks for no lease then): with two writes of the key in flight, the
//!   one answered last need not be the one stored last.
//!
//! Time is passed in, so the rules are tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wire::{Key, ShareId, Version};

/// What a leased read answered: the value, or "no such key".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leased {
    Value(Vec<u8>, Version),
    NotFound,
}

#[derive(Clone, Debug)]
struct Held {
    share: ShareId,
    answer: Leased,
    until: Instant,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    /// Changes whenever one of our writes of the key starts or ends.
    generation: u64,
    /// Our writes of the key in flight.
    writing: u32,
    held: Option<Held>,
}

/// Where a read started, to tell at its end whether it may be kept.
#[derive(Clone, Copy, Debug)]
pub struct ReadTicket {
    epoch: u64,
    generation: u64,
    sent: Instant,
}

/// Where one of our writes started, to tell at its end whether what it
/// wrote may be kept under the lease its answer brought (LEASE-C4).
#[derive(Clone, Copy, Debug)]
pub struct WriteTicket {
    epoch: u64,
    /// The key's generation our start set.
    generation: u64,
    sent: Instant,
    /// No other write of the key was in flight when this one started.
    alone: bool,
}

impl WriteTicket {
    /// Whether the write should ask for a lease (only when it is alone).
    pub fn may_lease(&self) -> bool {
        self.alone
    }
}

/// LEASE-C1: the part of a lease a client uses, `KEEP_NUM / KEEP_DEN`.
const KEEP_NUM: u64 = 4;
const KEEP_DEN: u64 = 5;

/// Bound on remembered keys; beyond it the cache starts over (every read
/// in flight then is not kept).
const MAX_KEYS: usize = 200_000;

/// Leased answers by key. Not thread-safe on its own; the session wraps it in
/// a mutex and never holds that across an await.
#[derive(Clone, Debug, Default)]
pub struct LeaseCache {
    /// Bumped when the map is cleared, so reads that started before do not
    /// install into the fresh map.
    epoch: u64,
    next_generation: u64,
    slots: HashMap<Key, Slot>,
    hits: u64,
}

impl LeaseCache {
    /// A cached answer for `key` under `share`, if its lease has not ended.
    pub fn get(&mut self, now: Instant, share: ShareId, key: &Key) -> Option<Leased> {
        let held = self.slots.get(key)?.held.as_ref()?;
        if held.share != share || now >= held.until {
            return None;
        }
        self.hits += 1;
        Some(held.answer.clone())
    }

    /// Until when the answer `version` of `key` under `share` is leased, if it
    /// is the answer held now (not a newer one, not after the key was
    /// forgotten). Lets a caller hand the answer on to a cache of its own —
    /// the kernel's attribute cache — for no longer than the lease keeps it.
    pub fn valid_until(
        &self,
        now: Instant,
        share: ShareId,
        key: &Key,
        version: Version,
    ) -> Option<Instant> {
        let held = self.slots.get(key)?.held.as_ref()?;
        match &held.answer {
            Leased::Value(_, v) if *v == version && held.share == share && now < held.until => {
                Some(held.until)
            }
            _ => None,
        }
    }

    /// Reads answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// A read of `key` is about to be sent at `sent`.
    pub fn read_started(&self, key: &Key, sent: Instant) -> ReadTicket {
        let generation = self.slots.get(key).map_or(0, |s| s.generation);
        ReadTicket {
            epoch: self.epoch,
            generation,
            sent,
        }
    }

    /// Whether a read of `key` should ask for a lease: not while one of our
    /// own writes of it is in flight (LEASE-C2).
    pub fn may_lease(&self, key: &Key) -> bool {
        self.slots.get(key).is_none_or(|s| s.writing == 0)
    }

    /// A read answered with a lease of `lease_ms`: keep the answer unless one
    /// of our writes of the key started or ended since the read started.
    pub fn read_done(
        &mut self,
        ticket: ReadTicket,
        share: ShareId,
        key: Key,
        answer: Leased,
        lease_ms: u32,
    ) {
        if lease_ms == 0 || ticket.epoch != self.epoch {
            return;
        }
        let current = self.slots.get(&key).map_or(0, |s| s.generation);
        if current != ticket.generation {
            return;
        }
        let until = ticket.sent + Duration::from_millis(u64::from(lease_ms) * KEEP_NUM / KEEP_DEN);
        self.make_room();
        let slot = self.slots.entry(key).or_default();
        slot.held = Some(Held {
            share,
            answer,
            until,
        });
    }

    /// One of our writes (or deletes) of `key` starts at `sent` (LEASE-C2).
    pub fn write_started(&mut self, key: Key, sent: Instant) -> WriteTicket {
        let alone = self.slots.get(&key).is_none_or(|s| s.writing == 0);
        let generation = self.write_edge(key, 1);
        WriteTicket {
            epoch: self.epoch,
            generation,
            sent,
            alone,
        }
    }

    /// One of our writes of `key` ended with `answer` stored and a lease of
    /// `lease_ms` (LEASE-C4): ends it as [`LeaseCache::write_ended`] does, and
    /// keeps the answer if the write was alone from start to end.
    pub fn write_done(
        &mut self,
        ticket: WriteTicket,
        share: ShareId,
        key: Key,
        answer: Leased,
        lease_ms: u32,
    ) {
        let undisturbed = ticket.alone
            && ticket.epoch == self.epoch
            && self
                .slots
                .get(&key)
                .is_some_and(|s| s.generation == ticket.generation);
        self.write_edge(key, -1);
        // The edge may have cleared a full map (a new epoch): keep nothing then.
        if lease_ms == 0 || !undisturbed || ticket.epoch != self.epoch {
            return;
        }
        let until = ticket.sent + Duration::from_millis(u64::from(lease_ms) * KEEP_NUM / KEEP_DEN);
        if let Some(slot) = self.slots.get_mut(&key)
            && slot.writing == 0
        {
            slot.held = Some(Held {
                share,
                answer,
                until,
            });
        }
    }

    /// One of our writes of `key` ended, however it ended (LEASE-C2).
    pub fn write_ended(&mut self, key: Key) {
        self.write_edge(key, -1);
    }

    fn write_edge(&mut self, key: Key, delta: i32) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.make_room();
        let slot = self.slots.entry(key).or_default();
        slot.generation = generation;
        slot.held = None;
        slot.writing = slot.writing.saturating_add_signed(delta);
        generation
    }

    fn make_room(&mut self) {
        if self.slots.len() >= MAX_KEYS {
            self.slots.clear();
            self.epoch += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARE: ShareId = ShareId([1; 16]);

    fn v(seq: u64) -> Leased {
        Leased::Value(vec![seq as u8], Version { seq, writer: 1 })
    }

    #[test]
    fn an_answer_is_kept_for_four_fifths_of_the_lease_from_when_it_was_sent() {
        let mut c = LeaseCache::default();
        let key = Key::from_name("k");
        let t0 = Instant::now();
        let ticket = c.read_started(&key, t0);
        c.read_done(ticket, SHARE, key, v(1), 1_000);
        assert_eq!(
            c.get(t0 + Duration::from_millis(799), SHARE, &key),
            Some(v(1))
        );
        assert_eq!(c.get(t0 + Duration::from_millis(800), SHARE, &key), None);
        assert_eq!(c.hits(), 1);
    }

    #[test]
    fn valid_until_names_the_end_of_the_held_version_only() {
        let mut c = LeaseCache::default();
        let t0 = Instant::now();
        let key = Key::from_name("k");
        let t = c.read_started(&key, t0);
        c.read_done(t, SHARE, key, v(3), 1000);
        let end = t0 + Duration::from_millis(800);
        assert_eq!(
            c.valid_until(t0, SHARE, &key, Version { seq: 3, writer: 1 }),
            Some(end)
        );
        // Another version, another share, the end itself, an unknown key: none.
        assert_eq!(
            c.valid_until(t0, SHARE, &key, Version { seq: 2, writer: 1 }),
            None
        );
        assert_eq!(
            c.valid_until(t0, ShareId([2; 16]), &key, Version { seq: 3, writer: 1 }),
            None
        );
        assert_eq!(
            c.valid_until(end, SHARE, &key, Version { seq: 3, writer: 1 }),
            None
        );
        assert_eq!(
            c.valid_until(
                t0,
                SHARE,
                &Key::from_name("other"),
                Version { seq: 3, writer: 1 }
            ),
            None
        );
        // Our own write of the key forgets it.
        c.write_started(key, t0);
        assert_eq!(
            c.valid_until(t0, SHARE, &key, Version { seq: 3, writer: 1 }),
            None
        );
    }

    #[test]
    fn no_lease_means_nothing_is_kept_and_another_share_does_not_match() {
        let mut c = LeaseCache::default();
        let key = Key::from_name("k");
        let t0 = Instant::now();
        c.read_done(c.read_started(&key, t0), SHARE, key, v(1), 0);
        assert_eq!(c.get(t0, SHARE, &key), None);
        c.read_done(c.read_started(&key, t0), SHARE, key, Leased::NotFound, 500);
        assert_eq!(c.get(t0, SHARE, &key), Some(Leased::NotFound));
        assert_eq!(c.get(t0, ShareId([2; 16]), &key), None);
    }

    #[test]
    fn a_read_overlapping_our_own_write_is_not_kept_and_a_write_forgets_the_key() {
        let mut c = LeaseCache::default();
        let (a, b) = (Key::from_name("a"), Key::from_name("b"));
        let t0 = Instant::now();
        // Read of `a` starts, our write of `a` starts and ends, read answers old.
        let ticket = c.read_started(&a, t0);
        c.write_started(a, t0);
        c.write_ended(a);
        c.read_done(ticket, SHARE, a, v(1), 1_000);
        assert_eq!(c.get(t0, SHARE, &a), None);
        // A read of `a` that starts while the write is in flight asks for no
        // lease, and is not kept either.
        c.write_started(a, t0);
        assert!(!c.may_lease(&a));
        assert!(c.may_lease(&b));
        let ticket = c.read_started(&a, t0);
        c.write_ended(a);
        assert!(c.may_lease(&a));
        c.read_done(ticket, SHARE, a, v(1), 1_000);
        assert_eq!(c.get(t0, SHARE, &a), None);
        // A write of another key does not disturb `b`; a write of `b` forgets it.
        c.read_done(c.read_started(&b, t0), SHARE, b, v(3), 1_000);
        c.write_started(a, t0);
        assert_eq!(c.get(t0, SHARE, &b), Some(v(3)));
        c.write_started(b, t0);
        assert_eq!(c.get(t0, SHARE, &b), None);
    }

    #[test]
    fn a_leased_write_is_kept_only_if_it_ran_alone() {
        let mut c = LeaseCache::default();
        let (a, b) = (Key::from_name("a"), Key::from_name("b"));
        let t0 = Instant::now();
        // Alone, answered with a lease: kept from when it was sent.
        let w = c.write_started(a, t0);
        assert!(w.may_lease());
        c.write_done(w, SHARE, a, v(2), 1_000);
        assert_eq!(c.get(t0, SHARE, &a), Some(v(2)));
        assert_eq!(c.get(t0 + Duration::from_millis(800), SHARE, &a), None);
        assert_eq!(c.get(t0, ShareId([2; 16]), &a), None);
        // Without a lease: nothing kept, and the old answer is gone.
        let w = c.write_started(a, t0);
        c.write_done(w, SHARE, a, v(3), 0);
        assert_eq!(c.get(t0, SHARE, &a), None);
        // Two writes of `b` overlapping: the second asks for no lease, and
        // neither is kept, whichever ends first (the one answered last need
        // not be the one stored last).
        let w1 = c.write_started(b, t0);
        let w2 = c.write_started(b, t0);
        assert!(w1.may_lease() && !w2.may_lease());
        c.write_done(w2, SHARE, b, v(5), 1_000);
        c.write_done(w1, SHARE, b, v(4), 1_000);
        assert_eq!(c.get(t0, SHARE, &b), None);
        let w1 = c.write_started(b, t0);
        let w2 = c.write_started(b, t0);
        c.write_done(w1, SHARE, b, v(6), 1_000);
        c.write_done(w2, SHARE, b, v(7), 1_000);
        assert_eq!(c.get(t0, SHARE, &b), None);
        // A write that failed (ended without an answer) in the middle of another.
        let w1 = c.write_started(b, t0);
        let _failed = c.write_started(b, t0);
        c.write_ended(b);
        c.write_done(w1, SHARE, b, v(8), 1_000);
        assert_eq!(c.get(t0, SHARE, &b), None);
        // A read that started before the write and ends after it is not kept
        // over the write's answer.
        let r = c.read_started(&a, t0);
        let w = c.write_started(a, t0);
        c.write_done(w, SHARE, a, v(9), 1_000);
        c.read_done(r, SHARE, a, v(1), 1_000);
        assert_eq!(c.get(t0, SHARE, &a), Some(v(9)));
    }
}
