//! RR-Paxos for the policy state machine (RR §IV-C, DESIGN §6; PROTOCOLS.md
//! PAXOS-*). Multi-Paxos with a stable leader: a candidate prepares a ballot
//! with a super quorum of promises, then proposes entries slot by slot, each
//! chosen by a super quorum of accepts, executed in slot order everywhere.
//!
//! RR rules on top of plain multi-Paxos:
//! - quorums are `S_Q(s)` counted over replies in the acknowledgement window;
//! - a suspicious replica neither promises, accepts nor campaigns (PAXOS-A0):
//!   its memory of earlier promises and accepts may be rolled back, and a
//!   rolled-back acceptor that answers as if it were not can make two values
//!   chosen for one slot. It still learns decisions and serves reads.

use std::collections::BTreeMap;

use super::collect::Collector;
use super::message::{OpId, PeerMessage, ProposeAnswer};
use super::policy::{EntryOutcome, PolicyEntry, PolicyState};
use super::state::Record;
use super::{Ballot, Millis, Node, ReplicaId, Slot, Timer};

/// One promise as the candidate keeps it.
#[derive(Clone, Debug)]
pub(crate) struct PromiseInfo {
    executed: Slot,
    snapshot: Option<PolicyState>,
    accepted: Vec<(Slot, Ballot, PolicyEntry)>,
}

#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    entry: PolicyEntry,
    acks: Collector<()>,
    chosen: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) enum Role {
    #[default]
    Follower,
    Candidate {
        ballot: Ballot,
        promises: Collector<PromiseInfo>,
    },
    Leader {
        ballot: Ballot,
        next_slot: Slot,
        in_flight: BTreeMap<Slot, InFlight>,
    },
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PaxosVolatile {
    role: Role,
    /// Replica believed to lead (from heartbeats, accepts, prepares).
    leader: Option<ReplicaId>,
    last_leader_contact_ms: Millis,
    /// Highest round seen in any ballot, so a new candidacy goes above it.
    highest_round_seen: u64,
    /// Chosen entries not executed yet (a gap below them).
    decided: BTreeMap<Slot, PolicyEntry>,
    /// Proxies waiting for a slot's outcome (leader only).
    waiters: BTreeMap<Slot, Vec<(ReplicaId, OpId)>>,
    /// Last time we asked for a catch-up, to rate-limit requests.
    last_catch_up_ms: Option<Millis>,
}

impl PaxosVolatile {
    pub(crate) fn leader_hint(&self) -> Option<ReplicaId> {
        match &self.role {
            Role::Leader { ballot, .. } => Some(ballot.leader),
            _ => self.leader,
        }
    }

    pub(crate) fn is_established_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }
}

impl Node {
    fn election_delay(&mut self) -> Millis {
        let base = self.cfg.timing.election_timeout_ms;
        base + self.rng.below(base + 1)
    }

    pub(crate) fn paxos_on_start(&mut self, now: Millis) {
        self.paxos.last_leader_contact_ms = now;
        self.paxos.highest_round_seen = self.durable.promised.round;
        let delay = self.election_delay();
        self.set_timer(Timer::Election, delay);
    }

    fn see_ballot(&mut self, ballot: Ballot) {
        self.paxos.highest_round_seen = self.paxos.highest_round_seen.max(ballot.round);
    }

    /// Leave candidacy/leadership because a higher ballot exists.
    fn step_down(&mut self, higher: Ballot) {
        let mine = match &self.paxos.role {
            Role::Candidate { ballot, .. } | Role::Leader { ballot, .. } => Some(*ballot),
            Role::Follower => None,
        };
        if let Some(mine) = mine
            && higher > mine
        {
            self.paxos.role = Role::Follower;
            self.paxos.waiters.clear();
        }
    }

    fn note_leader(&mut self, now: Millis, ballot: Ballot) {
        self.see_ballot(ballot);
        self.step_down(ballot);
        if ballot >= self.durable.promised && !matches!(self.paxos.role, Role::Leader { .. }) {
            self.paxos.leader = Some(ballot.leader);
            self.paxos.last_leader_contact_ms = now;
        }
    }

    /// PAXOS-L1: no leader heard from for an election timeout → campaign.
    pub(crate) fn paxos_on_election_timeout(&mut self, now: Millis) {
        let delay = self.election_delay();
        self.set_timer(Timer::Election, delay);
        if matches!(self.paxos.role, Role::Leader { .. }) {
            return;
        }
        // PAXOS-A0: a suspicious replica does not campaign (it could reuse a
        // ballot it already used before a rollback).
        if self.is_suspicious() {
            return;
        }
        let quiet_for = now.saturating_sub(self.paxos.last_leader_contact_ms);
        let candidate = matches!(self.paxos.role, Role::Candidate { .. });
        if !candidate && quiet_for < self.cfg.timing.election_timeout_ms {
            return;
        }
        let round = self
            .paxos
            .highest_round_seen
            .max(self.durable.promised.round)
            + 1;
        let ballot = Ballot {
            round,
            leader: self.me,
        };
        self.see_ballot(ballot);
        let mut promises = Collector::default();
        let attempt = promises.next_attempt(now, self.cfg.timing.ack_window_ms);
        self.paxos.role = Role::Candidate { ballot, promises };
        self.paxos.leader = None;
        let executed = self.durable.executed;
        self.broadcast(&PeerMessage::Prepare {
            ballot,
            attempt,
            executed,
        });
    }

    /// PAXOS-A1: promise a higher ballot (persisted before the reply), or
    /// reject. A duplicate prepare of the ballot already promised to the same
    /// candidate is answered again.
    pub(crate) fn paxos_on_prepare(
        &mut self,
        now: Millis,
        from: ReplicaId,
        ballot: Ballot,
        attempt: u32,
        executed: Slot,
    ) {
        self.see_ballot(ballot);
        if self.is_suspicious() {
            return; // PAXOS-A0
        }
        let promised = self.durable.promised;
        let fresh = ballot > promised || (ballot == promised && ballot.leader == from);
        if !fresh {
            self.send(from, PeerMessage::Reject { ballot, promised });
            return;
        }
        self.persist(Record::Promise { ballot });
        if from != self.me {
            self.step_down(ballot);
            self.paxos.leader = Some(ballot.leader);
            self.paxos.last_leader_contact_ms = now;
        }
        let snapshot = (self.durable.executed > executed).then(|| self.durable.policy.clone());
        let floor = executed.max(self.durable.executed);
        let accepted = self
            .durable
            .accepted
            .range(floor + 1..)
            .map(|(s, (b, e))| (*s, *b, e.clone()))
            .collect();
        let msg = PeerMessage::Promise {
            ballot,
            attempt,
            suspicious: self.flag(),
            executed: self.durable.executed,
            snapshot,
            accepted,
        };
        self.send(from, msg);
    }

    /// PAXOS-L2/L3: with a super quorum of promises, adopt the most advanced
    /// executed state, re-propose the highest-ballot accepted entry of every
    /// open slot (gaps get `Noop`), and lead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn paxos_on_promise(
        &mut self,
        now: Millis,
        from: ReplicaId,
        ballot: Ballot,
        attempt: u32,
        suspicious: bool,
        executed: Slot,
        snapshot: Option<PolicyState>,
        accepted: Vec<(Slot, Ballot, PolicyEntry)>,
    ) {
        let window = self.cfg.timing.ack_window_ms;
        let q = self.q;
        let ready = match &mut self.paxos.role {
            Role::Candidate {
                ballot: mine,
                promises,
            } if *mine == ballot => {
                promises.record(
                    now,
                    window,
                    from,
                    attempt,
                    suspicious,
                    PromiseInfo {
                        executed,
                        snapshot,
                        accepted,
                    },
                );
                let (n, s) = promises.counts(now, window);
                q.is_super_quorum(n, s)
            }
            _ => false,
        };
        if !ready {
            return;
        }
        let Role::Candidate { promises, .. } = std::mem::take(&mut self.paxos.role) else {
            return;
        };
        let infos: Vec<PromiseInfo> = promises
            .valid(now, window)
            .map(|(_, _, p)| p.clone())
            .collect();
        // Most advanced executed prefix among the promises.
        let best = infos
            .iter()
            .filter(|p| p.snapshot.is_some())
            .max_by_key(|p| p.executed);
        if let Some(best) = best
            && best.executed > self.durable.executed
            && let Some(state) = best.snapshot.clone()
        {
            self.persist(Record::InstallSnapshot {
                executed: best.executed,
                state,
            });
        }
        self.paxos_execute_ready();
        // Highest-ballot accepted entry per open slot.
        let mut chosen: BTreeMap<Slot, (Ballot, PolicyEntry)> = BTreeMap::new();
        for (slot, b, e) in infos.iter().flat_map(|p| p.accepted.iter()) {
            if *slot <= self.durable.executed {
                continue;
            }
            let better = chosen.get(slot).is_none_or(|(held, _)| b > held);
            if better {
                chosen.insert(*slot, (*b, e.clone()));
            }
        }
        for (slot, e) in &self.paxos.decided {
            if *slot > self.durable.executed {
                chosen.insert(*slot, (ballot, e.clone()));
            }
        }
        let top = chosen
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.durable.executed);
        let mut in_flight = BTreeMap::new();
        for slot in self.durable.executed + 1..=top {
            let entry = chosen.remove(&slot).map_or(PolicyEntry::Noop, |(_, e)| e);
            in_flight.insert(
                slot,
                InFlight {
                    entry,
                    acks: Collector::default(),
                    chosen: false,
                },
            );
        }
        self.paxos.role = Role::Leader {
            ballot,
            next_slot: top + 1,
            in_flight,
        };
        self.paxos.leader = Some(self.me);
        self.paxos_send_accepts(now);
        self.paxos_send_heartbeat();
        let hb = self.cfg.timing.heartbeat_ms;
        self.set_timer(Timer::Heartbeat, hb);
    }

    /// Send (or retransmit, with a new attempt) every unchosen in-flight accept.
    fn paxos_send_accepts(&mut self, now: Millis) {
        let window = self.cfg.timing.ack_window_ms;
        let mut msgs = Vec::new();
        if let Role::Leader {
            ballot, in_flight, ..
        } = &mut self.paxos.role
        {
            for (slot, f) in in_flight.iter_mut().filter(|(_, f)| !f.chosen) {
                let attempt = f.acks.next_attempt(now, window);
                msgs.push(PeerMessage::Accept {
                    ballot: *ballot,
                    attempt,
                    slot: *slot,
                    entry: f.entry.clone(),
                });
            }
        }
        for m in msgs {
            self.broadcast(&m);
        }
    }

    fn paxos_send_heartbeat(&mut self) {
        if let Role::Leader { ballot, .. } = &self.paxos.role {
            let msg = PeerMessage::Heartbeat {
                ballot: *ballot,
                executed: self.durable.executed,
            };
            for to in self.cfg.replicas.clone() {
                if to != self.me {
                    self.send(to, msg.clone());
                }
            }
        }
    }

    /// PAXOS-L6: heartbeats and retransmission of unanswered accepts.
    pub(crate) fn paxos_on_heartbeat_timeout(&mut self, now: Millis) {
        if !matches!(self.paxos.role, Role::Leader { .. }) {
            return;
        }
        self.paxos_send_heartbeat();
        self.paxos_send_accepts(now);
        let hb = self.cfg.timing.heartbeat_ms;
        self.set_timer(Timer::Heartbeat, hb);
    }

    /// PAXOS-L4: order a proxy's entry in the next slot; PAXOS-L5 answers
    /// `NotLeader` when we do not lead.
    pub(crate) fn paxos_on_propose(
        &mut self,
        now: Millis,
        from: ReplicaId,
        op: OpId,
        entry: PolicyEntry,
    ) {
        let window = self.cfg.timing.ack_window_ms;
        let Role::Leader {
            ballot,
            next_slot,
            in_flight,
        } = &mut self.paxos.role
        else {
            let hint = self.paxos.leader_hint();
            self.send(
                from,
                PeerMessage::ProposeReply {
                    op,
                    answer: ProposeAnswer::NotLeader { hint },
                },
            );
            return;
        };
        let slot = *next_slot;
        *next_slot += 1;
        let mut acks = Collector::default();
        let attempt = acks.next_attempt(now, window);
        in_flight.insert(
            slot,
            InFlight {
                entry: entry.clone(),
                acks,
                chosen: false,
            },
        );
        let ballot = *ballot;
        self.paxos.waiters.entry(slot).or_default().push((from, op));
        self.broadcast(&PeerMessage::Accept {
            ballot,
            attempt,
            slot,
            entry,
        });
    }

    /// PAXOS-A2/A3: accept if the ballot is at least the promised one
    /// (persisted before the reply), otherwise reject.
    pub(crate) fn paxos_on_accept(
        &mut self,
        now: Millis,
        from: ReplicaId,
        ballot: Ballot,
        attempt: u32,
        slot: Slot,
        entry: PolicyEntry,
    ) {
        if self.is_suspicious() {
            self.see_ballot(ballot);
            return; // PAXOS-A0
        }
        if ballot < self.durable.promised {
            let promised = self.durable.promised;
            self.send(from, PeerMessage::Reject { ballot, promised });
            return;
        }
        if from != self.me {
            self.note_leader(now, ballot);
        }
        self.persist(Record::Accept {
            slot,
            ballot,
            entry,
        });
        let suspicious = self.flag();
        self.send(
            from,
            PeerMessage::Accepted {
                ballot,
                attempt,
                slot,
                suspicious,
            },
        );
    }

    /// PAXOS-L4 (cont.): a slot with a super quorum of accepts is chosen;
    /// PAXOS-E1/E2: execute in order and tell everyone.
    pub(crate) fn paxos_on_accepted(
        &mut self,
        now: Millis,
        from: ReplicaId,
        ballot: Ballot,
        attempt: u32,
        slot: Slot,
        suspicious: bool,
    ) {
        let window = self.cfg.timing.ack_window_ms;
        let q = self.q;
        let mut newly_chosen = None;
        if let Role::Leader {
            ballot: mine,
            in_flight,
            ..
        } = &mut self.paxos.role
            && *mine == ballot
            && let Some(f) = in_flight.get_mut(&slot)
            && !f.chosen
        {
            f.acks.record(now, window, from, attempt, suspicious, ());
            let (n, s) = f.acks.counts(now, window);
            if q.is_super_quorum(n, s) {
                f.chosen = true;
                newly_chosen = Some(f.entry.clone());
            }
        }
        let Some(entry) = newly_chosen else { return };
        if slot > self.durable.executed {
            self.paxos.decided.insert(slot, entry.clone());
        }
        self.paxos_execute_ready();
        for to in self.cfg.replicas.clone() {
            if to != self.me {
                self.send(
                    to,
                    PeerMessage::Decide {
                        ballot,
                        slot,
                        entry: entry.clone(),
                    },
                );
            }
        }
        // Forget chosen slots that are executed.
        let executed = self.durable.executed;
        if let Role::Leader { in_flight, .. } = &mut self.paxos.role {
            in_flight.retain(|s, f| !(f.chosen && *s <= executed));
        }
    }

    /// PAXOS-A3 (candidate/leader side): a higher promise exists → step down.
    pub(crate) fn paxos_on_reject(
        &mut self,
        _now: Millis,
        _from: ReplicaId,
        _ballot: Ballot,
        promised: Ballot,
    ) {
        self.see_ballot(promised);
        self.step_down(promised);
    }

    /// PAXOS-E2: learn a chosen entry; fill gaps by catch-up (PAXOS-C1).
    pub(crate) fn paxos_on_decide(
        &mut self,
        now: Millis,
        from: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        entry: PolicyEntry,
    ) {
        self.note_leader(now, ballot);
        if slot > self.durable.executed {
            self.paxos.decided.insert(slot, entry);
        }
        self.paxos_execute_ready();
        if self
            .paxos
            .decided
            .keys()
            .next()
            .is_some_and(|s| *s > self.durable.executed + 1)
        {
            self.paxos_catch_up_from(now, from);
        }
    }

    /// PAXOS-L6 (follower side): the leader is alive; lagging → catch up.
    pub(crate) fn paxos_on_heartbeat(
        &mut self,
        now: Millis,
        from: ReplicaId,
        ballot: Ballot,
        executed: Slot,
    ) {
        self.note_leader(now, ballot);
        if executed > self.durable.executed
            && !self
                .paxos
                .decided
                .contains_key(&(self.durable.executed + 1))
        {
            self.paxos_catch_up_from(now, from);
        }
    }

    fn paxos_catch_up_from(&mut self, now: Millis, from: ReplicaId) {
        let gap = self.cfg.timing.heartbeat_ms;
        if self.paxos.last_catch_up_ms.is_some_and(|t| now < t + gap) {
            return;
        }
        self.paxos.last_catch_up_ms = Some(now);
        let executed = self.durable.executed;
        self.send(from, PeerMessage::CatchUpRequest { executed });
    }

    /// PAXOS-C1 trigger from the register path: a write carried newer epochs.
    pub(crate) fn paxos_request_catch_up(&mut self, now: Millis) {
        if let Some(leader) = self.paxos.leader_hint()
            && leader != self.me
        {
            self.paxos_catch_up_from(now, leader);
        }
    }

    /// PAXOS-C2: send our executed state to a replica behind us.
    pub(crate) fn paxos_on_catch_up_request(&mut self, from: ReplicaId, executed: Slot) {
        if self.durable.executed > executed {
            let msg = PeerMessage::CatchUp {
                executed: self.durable.executed,
                state: self.durable.policy.clone(),
            };
            self.send(from, msg);
        }
    }

    pub(crate) fn paxos_on_catch_up(&mut self, _now: Millis, executed: Slot, state: PolicyState) {
        if executed > self.durable.executed {
            self.persist(Record::InstallSnapshot { executed, state });
            self.paxos.decided = self.paxos.decided.split_off(&(executed + 1));
        }
        self.paxos_execute_ready();
    }

    /// PAXOS-E1: execute decided entries in slot order, persisting each, and
    /// answer the proxies waiting for them.
    pub(crate) fn paxos_execute_ready(&mut self) {
        loop {
            let next = self.durable.executed + 1;
            let Some(entry) = self.paxos.decided.remove(&next) else {
                break;
            };
            self.persist(Record::Execute {
                slot: next,
                entry: entry.clone(),
            });
            let outcome = match &entry {
                PolicyEntry::Noop => EntryOutcome::Noop,
                PolicyEntry::Read { share, key } => {
                    EntryOutcome::Read(self.durable.policy.view(share, key.as_ref()))
                }
                PolicyEntry::Change {
                    requester, token, ..
                } => match self.durable.policy.applied_outcome(requester, token) {
                    Some(o) => EntryOutcome::Change(o.clone()),
                    None => EntryOutcome::Noop,
                },
            };
            if let Some(waiting) = self.paxos.waiters.remove(&next) {
                for (proxy, op) in waiting {
                    let answer = ProposeAnswer::Executed {
                        slot: next,
                        outcome: outcome.clone(),
                    };
                    self.send(proxy, PeerMessage::ProposeReply { op, answer });
                }
            }
        }
        let executed = self.durable.executed;
        self.paxos.decided = self.paxos.decided.split_off(&(executed + 1));
        // Waiters for slots already executed via a snapshot never get an
        // outcome from us; their proxies retry (the token dedupes changes).
        self.paxos.waiters = self.paxos.waiters.split_off(&(executed + 1));
    }
}
