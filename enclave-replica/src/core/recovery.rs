//! Recovery of a restarted replica (RR §IV-A, DESIGN §4; PROTOCOLS.md REC-0..REC-5).
//!
//! A restarted replica is suspicious. It asks every replica (itself included)
//! for a digest of its state, waits for `R_Q(s)` digests (`s` counting the
//! suspicious ones, so a simultaneous restart of all replicas still works),
//! fetches the register buckets that differ and the most advanced executed
//! policy state, adopts the highest promise and accepted entries it saw,
//! persists all of it, and only then clears the flag. The round that clears it
//! must start at least `ack_window_ms` after the restart (REC-0): by then no
//! collector can still count an acknowledgement this replica gave before it
//! was rolled back.

use std::collections::{BTreeMap, BTreeSet};

use metadata_client::wire::{Key, Version};

use super::digest;
use super::message::PeerMessage;
use super::policy::{PolicyEntry, PolicyState};
use super::state::{Record, RegisterEntry};
use super::{Ballot, Millis, Node, ReplicaId, Slot, Timer};

/// Retransmissions of one round before it is abandoned for a fresh one.
const RETRIES_PER_ROUND: u32 = 5;

#[derive(Clone, Debug)]
pub(crate) struct DigestInfo {
    suspicious: bool,
    buckets: Vec<[u8; 16]>,
    promised: Ballot,
    executed: Slot,
    accepted: Vec<(Slot, Ballot, PolicyEntry)>,
}

#[derive(Clone, Debug, Default)]
pub(crate) enum Phase {
    /// Not recovering (never started, or finished).
    #[default]
    Idle,
    /// REC-1/REC-2: collecting digests.
    Digest {
        digests: BTreeMap<ReplicaId, DigestInfo>,
    },
    /// REC-3/REC-4: waiting for fetch replies from these replicas.
    Fetch {
        requests: BTreeMap<ReplicaId, PeerMessage>,
        waiting: BTreeSet<ReplicaId>,
    },
    /// REC-5: state fetched, but the round started inside the quarantine;
    /// another round starts when it ends.
    Quarantine,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct RecoveryVolatile {
    round: u64,
    round_started_ms: Millis,
    retries: u32,
    phase: Phase,
}

impl RecoveryVolatile {
    pub(crate) fn round_active(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }
}

impl Node {
    /// REC-0: a suspicious node starts recovering at once.
    pub(crate) fn recovery_on_start(&mut self, now: Millis) {
        if self.is_suspicious() {
            self.recovery_start_round(now);
        }
    }

    /// REC-1: ask every replica, self included, for its digest.
    fn recovery_start_round(&mut self, now: Millis) {
        self.recovery.round += 1;
        self.recovery.round_started_ms = now;
        self.recovery.retries = 0;
        self.recovery.phase = Phase::Digest {
            digests: BTreeMap::new(),
        };
        let round = self.recovery.round;
        self.broadcast(&PeerMessage::DigestRequest { round });
        let retry = self.cfg.timing.recovery_retry_ms;
        self.set_timer(Timer::Recovery, retry);
    }

    fn quarantine_end_ms(&self) -> Millis {
        self.started_at_ms + self.cfg.timing.ack_window_ms
    }

    /// Retransmit the current step, start a new round, or end the quarantine.
    pub(crate) fn recovery_on_timeout(&mut self, now: Millis) {
        if !self.is_suspicious() {
            self.recovery.phase = Phase::Idle;
            return;
        }
        let retry = self.cfg.timing.recovery_retry_ms;
        match &self.recovery.phase {
            Phase::Idle | Phase::Quarantine => {
                if now >= self.quarantine_end_ms() {
                    self.recovery_start_round(now);
                } else {
                    self.set_timer(Timer::Recovery, self.quarantine_end_ms() - now);
                }
            }
            _ if self.recovery.retries >= RETRIES_PER_ROUND => self.recovery_start_round(now),
            Phase::Digest { digests } => {
                self.recovery.retries += 1;
                let round = self.recovery.round;
                let missing: Vec<ReplicaId> = self
                    .cfg
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !digests.contains_key(r))
                    .collect();
                for to in missing {
                    self.send(to, PeerMessage::DigestRequest { round });
                }
                self.set_timer(Timer::Recovery, retry);
            }
            Phase::Fetch { requests, waiting } => {
                self.recovery.retries += 1;
                let resend: Vec<(ReplicaId, PeerMessage)> = waiting
                    .iter()
                    .filter_map(|r| requests.get(r).map(|m| (*r, m.clone())))
                    .collect();
                for (to, msg) in resend {
                    self.send(to, msg);
                }
                self.set_timer(Timer::Recovery, retry);
            }
        }
    }

    /// REC-1 (responder): any replica, suspicious or not, answers with its
    /// digest and flag.
    pub(crate) fn recovery_on_digest_request(&mut self, from: ReplicaId, round: u64) {
        let msg = PeerMessage::DigestReply {
            round,
            suspicious: self.flag(),
            buckets: digest::bucket_hashes(&self.durable.registers),
            promised: self.durable.promised,
            executed: self.durable.executed,
            accepted: self
                .durable
                .accepted
                .iter()
                .map(|(s, (b, e))| (*s, *b, e.clone()))
                .collect(),
        };
        self.send(from, msg);
    }

    /// REC-2: with `R_Q(s)` digests, adopt the highest promise and accepted
    /// entries, and ask each replica for the buckets where it differs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn recovery_on_digest_reply(
        &mut self,
        now: Millis,
        from: ReplicaId,
        round: u64,
        suspicious: bool,
        buckets: Vec<[u8; 16]>,
        promised: Ballot,
        executed: Slot,
        accepted: Vec<(Slot, Ballot, PolicyEntry)>,
    ) {
        if round != self.recovery.round {
            return;
        }
        let Phase::Digest { digests } = &mut self.recovery.phase else {
            return;
        };
        if buckets.len() != digest::BUCKETS {
            return; // malformed digest: ignore the reply
        }
        digests.insert(
            from,
            DigestInfo {
                suspicious,
                buckets,
                promised,
                executed,
                accepted,
            },
        );
        let n = u32::try_from(digests.len()).unwrap_or(u32::MAX);
        let s =
            u32::try_from(digests.values().filter(|d| d.suspicious).count()).unwrap_or(u32::MAX);
        if !self.q.is_read_quorum(n, s) {
            return;
        }
        let Phase::Digest { digests } = std::mem::take(&mut self.recovery.phase) else {
            return;
        };
        // Highest promise and highest-ballot accepted entry per slot.
        if let Some(max_promised) = digests.values().map(|d| d.promised).max() {
            self.persist(Record::Promise {
                ballot: max_promised,
            });
        }
        let mut best: BTreeMap<Slot, (Ballot, PolicyEntry)> = BTreeMap::new();
        for (slot, b, e) in digests.values().flat_map(|d| d.accepted.iter()) {
            if best.get(slot).is_none_or(|(held, _)| b > held) {
                best.insert(*slot, (*b, e.clone()));
            }
        }
        for (slot, (ballot, entry)) in best {
            self.persist(Record::Accept {
                slot,
                ballot,
                entry,
            });
        }
        // Who has the most advanced executed state, if ahead of us.
        let snapshot_from = digests
            .iter()
            .filter(|(_, d)| d.executed > self.durable.executed)
            .max_by_key(|(r, d)| (d.executed, std::cmp::Reverse(**r)))
            .map(|(r, _)| *r);
        let mine = digest::bucket_hashes(&self.durable.registers);
        let mut requests = BTreeMap::new();
        for (r, d) in &digests {
            if *r == self.me {
                continue;
            }
            let differing: Vec<(u16, Vec<(Key, Version)>)> = (0..digest::BUCKETS)
                .filter(|i| d.buckets.get(*i) != mine.get(*i))
                .filter_map(|i| u16::try_from(i).ok())
                .map(|b| (b, digest::bucket_versions(&self.durable.registers, b)))
                .collect();
            let want_snapshot = snapshot_from == Some(*r);
            if !differing.is_empty() || want_snapshot {
                let msg = PeerMessage::FetchRequest {
                    round: self.recovery.round,
                    buckets: differing,
                    want_snapshot,
                };
                requests.insert(*r, msg);
            }
        }
        let waiting: BTreeSet<ReplicaId> = requests.keys().copied().collect();
        for (to, msg) in &requests {
            self.send(*to, msg.clone());
        }
        self.recovery.retries = 0;
        self.recovery.phase = Phase::Fetch { requests, waiting };
        self.recovery_maybe_finish(now);
    }

    /// REC-3 (responder): entries of the named buckets newer than listed.
    pub(crate) fn recovery_on_fetch_request(
        &mut self,
        from: ReplicaId,
        round: u64,
        buckets: Vec<(u16, Vec<(Key, Version)>)>,
        want_snapshot: bool,
    ) {
        let mut entries = Vec::new();
        for (bucket, theirs) in buckets.iter().take(digest::BUCKETS) {
            let theirs: BTreeMap<Key, Version> = theirs.iter().copied().collect();
            for (key, _) in digest::bucket_versions(&self.durable.registers, *bucket) {
                if let Some(e) = self.durable.registers.get(&key)
                    && theirs
                        .get(&key)
                        .is_none_or(|v| e.version > *v || (e.version == *v && e.stable))
                {
                    entries.push((key, e.clone()));
                }
            }
        }
        let snapshot = want_snapshot.then(|| (self.durable.executed, self.durable.policy.clone()));
        self.send(
            from,
            PeerMessage::FetchReply {
                round,
                entries,
                snapshot,
            },
        );
    }

    /// REC-4: apply and persist what was fetched.
    pub(crate) fn recovery_on_fetch_reply(
        &mut self,
        now: Millis,
        from: ReplicaId,
        round: u64,
        entries: Vec<(Key, RegisterEntry)>,
        snapshot: Option<(Slot, PolicyState)>,
    ) {
        if round != self.recovery.round {
            return;
        }
        let Phase::Fetch { waiting, .. } = &mut self.recovery.phase else {
            return;
        };
        if !waiting.remove(&from) {
            return;
        }
        for (key, entry) in entries {
            self.persist(Record::RegisterPut { key, entry });
        }
        if let Some((executed, state)) = snapshot {
            self.persist(Record::InstallSnapshot { executed, state });
            self.paxos_execute_ready();
        }
        self.recovery_maybe_finish(now);
    }

    /// REC-5: all fetches in → clear the flag if this round started after the
    /// quarantine, else wait for it to end and run one more round.
    fn recovery_maybe_finish(&mut self, now: Millis) {
        let Phase::Fetch { waiting, .. } = &self.recovery.phase else {
            return;
        };
        if !waiting.is_empty() {
            return;
        }
        if self.recovery.round_started_ms >= self.quarantine_end_ms() {
            self.suspicious = false;
            self.recovery.phase = Phase::Idle;
        } else {
            self.recovery.phase = Phase::Quarantine;
            let wait = self.quarantine_end_ms().saturating_sub(now).max(1);
            self.set_timer(Timer::Recovery, wait);
        }
    }
}
