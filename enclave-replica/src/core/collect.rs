//! Gathering replies to one quorum RPC (PROTOCOLS.md Q-1..Q-3).
//!
//! Every request a collector sends is an *attempt* stamped with the local send
//! time; replies echo the attempt. Only replies to attempts sent within the
//! last `ack_window_ms` count: together with the recovery quarantine
//! (REC-0) this guarantees that an acknowledgement counted toward a quorum was
//! given by a replica that is either still holding the acknowledged state or
//! still suspicious when the quorum completes.

use std::collections::BTreeMap;

use super::{Millis, ReplicaId};

#[derive(Clone, Debug)]
pub(crate) struct Collector<T> {
    attempt: u32,
    sent_at_ms: BTreeMap<u32, Millis>,
    /// Latest counted reply per replica: (attempt, suspicious, payload).
    replies: BTreeMap<ReplicaId, (u32, bool, T)>,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            attempt: 0,
            sent_at_ms: BTreeMap::new(),
            replies: BTreeMap::new(),
        }
    }
}

impl<T> Collector<T> {
    /// Start a new attempt (first send or a retransmission); returns its number.
    pub(crate) fn next_attempt(&mut self, now: Millis, window_ms: Millis) -> u32 {
        self.attempt += 1;
        self.sent_at_ms.insert(self.attempt, now);
        // Attempts older than the window can never count again.
        let cutoff = now.saturating_sub(window_ms);
        self.sent_at_ms.retain(|_, t| *t >= cutoff);
        self.attempt
    }

    fn fresh(&self, attempt: u32, now: Millis, window_ms: Millis) -> bool {
        match self.sent_at_ms.get(&attempt) {
            Some(t) => *t + window_ms >= now,
            None => false,
        }
    }

    /// Record a reply; returns false if it answers an unknown or stale attempt.
    pub(crate) fn record(
        &mut self,
        now: Millis,
        window_ms: Millis,
        from: ReplicaId,
        attempt: u32,
        suspicious: bool,
        payload: T,
    ) -> bool {
        if !self.fresh(attempt, now, window_ms) {
            return false;
        }
        let newer = self
            .replies
            .get(&from)
            .is_none_or(|(a, _, _)| attempt >= *a);
        if newer {
            self.replies.insert(from, (attempt, suspicious, payload));
        }
        true
    }

    /// Replies that still count, in replica order.
    pub(crate) fn valid(
        &self,
        now: Millis,
        window_ms: Millis,
    ) -> impl Iterator<Item = (ReplicaId, bool, &T)> {
        self.replies
            .iter()
            .filter(move |(_, (a, _, _))| self.fresh(*a, now, window_ms))
            .map(|(r, (_, s, t))| (*r, *s, t))
    }

    /// (replies, suspicious replies) that count now.
    pub(crate) fn counts(&self, now: Millis, window_ms: Millis) -> (u32, u32) {
        let mut n = 0u32;
        let mut s = 0u32;
        for (_, susp, _) in self.valid(now, window_ms) {
            n += 1;
            if susp {
                s += 1;
            }
        }
        (n, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_3_replies_to_attempts_older_than_the_window_do_not_count() {
        let mut c: Collector<()> = Collector::default();
        let a1 = c.next_attempt(0, 100);
        assert!(c.record(50, 100, 2, a1, false, ()));
        assert_eq!(c.counts(50, 100), (1, 0));
        // At t=150 the attempt sent at 0 is outside the 100 ms window.
        assert_eq!(c.counts(150, 100), (0, 0));
        assert!(!c.record(150, 100, 3, a1, true, ()));
        let a2 = c.next_attempt(150, 100);
        assert!(c.record(160, 100, 3, a2, true, ()));
        assert_eq!(c.counts(160, 100), (1, 1));
    }
}
