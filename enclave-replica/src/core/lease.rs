//! Read leases, replica side (PROTOCOLS.md LEASE-R1..R4).
//!
//! A client may ask, with a register read, for a lease of `ms` on the key.
//! Each replica that answers the read records the grant until `now + ms` of
//! its own clock (LEASE-R1), and until then holds back every WRITE of the key
//! — a client write or a reader's write-back alike — neither storing nor
//! acknowledging it (LEASE-R2), except the holder's own *later* writes: a
//! write for the same session whose attempt id is at least the read's. The
//! client forgets the key when such a write starts, so it cannot serve its
//! lease past it; an *earlier* attempt of the session (one it gave up on and
//! retried, which may still be in flight) is held like anyone else's. The proxy reports the
//! lease to the client only if enough replicas granted it that every write
//! quorum contains one of them (LEASE-P1), so no write can complete while the
//! lease lasts, and no reader can see a newer value complete either (ABD
//! returns a value only once a write quorum holds it, or after writing it
//! back to one).
//!
//! Grants are volatile: a replica that restarts has forgotten them, and with
//! a rollback its store may be older too. So a replica holds back *every*
//! write for one lease period after it starts (LEASE-R3): any lease it granted
//! before has ended by then. A replica does not grant while it holds back a
//! write of the key (LEASE-R4), so readers cannot starve a writer; nor for
//! one lease period after it let through another session's write of the key
//! (LEASE-R5), so a key that two sessions read and write is not leased and
//! its writers are held back at most once per quiet period.
//!
//! A client write may ask for a lease on what it writes (LEASE-W1): a
//! replica that then holds exactly the written entry grants it as it would
//! for a read, under the same rules, and the proxy reports it as for a read
//! (LEASE-W2), so the writer reads its own write back without a round trip.
//!
//! Leases rest on one assumption the rest of the protocol does not make:
//! replica and client clocks run at rates within 10% of real time
//! (FAULT_MODEL.md, "time"). `lease_ms = 0` turns leases off.

use std::collections::BTreeMap;

use metadata_client::wire::Key;

use super::message::{Epochs, Holder, OpId};
use super::state::RegisterEntry;
use super::{Millis, Node, ReplicaId, Timer};

/// A WRITE held back by a lease (LEASE-R2), answered when it ends.
#[derive(Clone, Debug)]
pub(crate) struct HeldWrite {
    pub from: ReplicaId,
    pub op: OpId,
    pub attempt: u32,
    pub entry: RegisterEntry,
    pub epochs: Option<Epochs>,
    pub holder: Holder,
}

/// One session's grant on a key: until when, and the attempt id its own
/// writes must reach to pass.
#[derive(Clone, Copy, Debug)]
struct Grant {
    end: Millis,
    floor: u64,
}

/// Past this many keys with grants, expired grants are swept.
const SWEEP_AT: usize = 100_000;

#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseVolatile {
    /// Grants per key: holder id → grant (our clock).
    grants: BTreeMap<Key, BTreeMap<u64, Grant>>,
    /// Per key, the last session whose write went through, and when
    /// (LEASE-R5).
    recent: BTreeMap<Key, (u64, Millis)>,
    /// Writes held back per key, in arrival order.
    held: BTreeMap<Key, Vec<HeldWrite>>,
}

impl Node {
    fn lease_ms(&self) -> Millis {
        self.cfg.timing.lease_ms
    }

    /// LEASE-R1 / R4 / R5: record a grant for `holder` if leases are on, no
    /// write of the key is being held back, and no other session's write of
    /// it went through in the last lease period. Returns whether it was
    /// granted.
    pub(crate) fn lease_grant(&mut self, now: Millis, key: &Key, holder: Holder, ms: u32) -> bool {
        let max = self.lease_ms();
        if max == 0 || holder.id == 0 || ms == 0 || self.leases.held.contains_key(key) {
            return false;
        }
        if self.lease_contended(now, key, holder) {
            return false;
        }
        if self.leases.recent.len() >= SWEEP_AT {
            self.leases.recent.retain(|_, (_, at)| now < *at + max);
        }
        if self.leases.grants.len() >= SWEEP_AT {
            self.leases.grants.retain(|_, g| {
                g.retain(|_, grant| grant.end > now);
                !g.is_empty()
            });
        }
        let end = now + Millis::from(ms).min(max);
        let slot = self
            .leases
            .grants
            .entry(*key)
            .or_default()
            .entry(holder.id)
            .or_insert(Grant {
                end,
                floor: holder.seq,
            });
        // A renewal keeps the longest end and the highest floor: holding
        // more of the session's writes back is only slower, never unsafe.
        slot.end = slot.end.max(end);
        slot.floor = slot.floor.max(holder.seq);
        true
    }

    /// LEASE-R5: whether another session's (or an anonymous) write of `key`
    /// went through in the last lease period, so `holder` gets no lease on it.
    pub(crate) fn lease_contended(&self, now: Millis, key: &Key, holder: Holder) -> bool {
        self.leases.recent.get(key).is_some_and(|(writer, at)| {
            (*writer != holder.id || *writer == 0) && now < at + self.lease_ms()
        })
    }

    /// LEASE-R2 / R3: until when a WRITE of `key` by `holder` must wait, if
    /// it must.
    fn lease_wait_until(&mut self, now: Millis, key: &Key, holder: Holder) -> Option<Millis> {
        let max = self.lease_ms();
        if max == 0 || self.cfg.faults.lease_no_hold {
            return None;
        }
        let mut until = None;
        if !self.cfg.faults.lease_skip_restart_wait && now < self.started_at_ms + max {
            until = Some(self.started_at_ms + max);
        }
        if let Some(grants) = self.leases.grants.get_mut(key) {
            grants.retain(|_, g| g.end > now);
            let own_later =
                |id: u64, g: &Grant| id == holder.id && holder.id != 0 && holder.seq >= g.floor;
            let others = grants
                .iter()
                .filter(|(id, g)| !own_later(**id, g))
                .map(|(_, g)| g.end)
                .max();
            if grants.is_empty() {
                self.leases.grants.remove(key);
            }
            until = until.max(others);
        }
        until
    }

    /// Hold `write` back if a lease (or the start-up wait) requires it.
    /// Returns the write if it may go ahead now.
    pub(crate) fn lease_hold(
        &mut self,
        now: Millis,
        key: Key,
        write: HeldWrite,
    ) -> Option<HeldWrite> {
        let Some(until) = self.lease_wait_until(now, &key, write.holder) else {
            if self.lease_ms() > 0 {
                self.leases.recent.insert(key, (write.holder.id, now));
            }
            return Some(write);
        };
        let held = self.leases.held.entry(key).or_default();
        // A retransmission replaces the earlier copy: one answer per round.
        held.retain(|w| (w.from, w.op) != (write.from, write.op));
        held.push(write);
        self.set_timer(Timer::Lease(key), until.saturating_sub(now).max(1));
        None
    }

    /// The lease timer of `key` fired: let the held writes through, or wait
    /// on if a lease still holds them.
    pub(crate) fn lease_on_timeout(&mut self, now: Millis, key: Key) {
        let Some(writes) = self.leases.held.remove(&key) else {
            return;
        };
        for w in writes {
            // A write let through after waiting asks for no lease: granting one
            // now would hold back the writes released with it (LEASE-W1).
            self.register_on_write(now, key, w, None);
        }
    }

    /// Writes currently held back (status, tests).
    pub(crate) fn leases_held(&self) -> usize {
        self.leases.held.values().map(Vec::len).sum()
    }
}
