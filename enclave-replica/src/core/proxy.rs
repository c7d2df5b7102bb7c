//! The proxy: runs a tenant's operation against the replicas (paper Fig. 7,
//! DESIGN §7; PROTOCOLS.md PX-*, ABD-R*, ABD-W*, PAXOS-R*).
//!
//! `read`, `write` and `delete` start with ONE round that asks every replica
//! for the register entry and for an optimized read of the share's policy.
//! The policy half succeeds with `R_Q(s)` unanimous replies none of which has
//! a pending accept on the share; otherwise the proxy orders a policy read
//! through the leader. The register half is RR-ABD. Writes carry the epochs
//! the proxy checked, and replicas refuse mismatches; the proxy then re-reads
//! the policy through the leader and retries, a bounded number of times.

use std::collections::BTreeMap;

use metadata_client::wire::{
    ErrorKind, Key, LeaseAsk, PolicyOp, Request, RequestFrame, Response, ResponseFrame, ShareId,
    TenantId, Version,
};

use super::collect::Collector;
use super::message::{
    Epochs, Holder, LeaseReq, OpId, OptReadReply, PeerMessage, ProposeAnswer, WriteAck,
};
use super::policy::{ChangeOutcome, EntryOutcome, PolicyEntry, PolicyView};
use super::state::{RegisterEntry, StoredValue};
use super::{ClientId, Millis, Node, ReplicaId, Timer};

/// Write rounds refused for epochs before the proxy gives up (PX-7).
pub const EPOCH_RETRIES: u32 = 3;

/// A first-round reply: register entry, policy read, lease granted.
type QueryPayload = (Option<RegisterEntry>, Option<OptReadReply>, bool);

#[derive(Clone, Debug)]
enum PolicyStep {
    /// The operation needs no policy read (change_policy orders itself).
    NotNeeded,
    /// PAXOS-R1/R2: waiting for the optimized read in the first round.
    Fast,
    /// PAXOS-R3: an ordered read is in flight through the leader.
    Slow,
    Known(PolicyView),
}

#[derive(Clone, Debug)]
enum RegStep {
    /// No register part (policy operations).
    None,
    /// ABD-R1 / ABD-W1: collecting first-round replies.
    Query,
    /// Write/delete: the first round found `current` (the highest entry).
    Ready { current: Option<RegisterEntry> },
    /// ABD-W2 / ABD-R4: a WRITE round (`writeback` for reads).
    Writing {
        current: Option<RegisterEntry>,
        entry: RegisterEntry,
        epochs: Option<Epochs>,
        /// Each replica's ack and whether it granted the write lease asked for.
        acks: Collector<(WriteAck, bool)>,
    },
    /// Read: the value to return is decided.
    ReadDone { result: Option<RegisterEntry> },
}

#[derive(Clone, Debug)]
struct Ordered {
    entry: PolicyEntry,
    target: Option<ReplicaId>,
    last_sent_ms: Option<Millis>,
}

#[derive(Clone, Debug)]
struct ClientOp {
    client: ClientId,
    tenant: TenantId,
    request_id: u64,
    deadline_ms: Millis,
    request: Request,
    policy: PolicyStep,
    register: RegStep,
    query: Collector<QueryPayload>,
    ordered: Option<Ordered>,
    /// A WRITE round carrying this operation's value went out: if the
    /// operation fails now, its outcome is unknown (PX-8).
    write_sent: bool,
    epoch_retries: u32,
    /// The entry of the WRITE round refused for epochs (PX-7). A retry sends
    /// exactly this entry again: some replicas may already hold it, and a
    /// reader may have written it back, so the value must keep its timestamp.
    retry_entry: Option<RegisterEntry>,
    /// The client's lease request (holder, length).
    lease: LeaseAsk,
    /// The policy came from the first round's optimized read (LEASE-P1
    /// needs the grants and the policy from the same replies).
    policy_fast: bool,
    /// LEASE-P2: an answer held back until leases granted before a policy
    /// change have ended.
    delayed: Option<(Millis, Response)>,
}

impl ClientOp {
    /// The session and attempt this op's register messages are for.
    fn holder(&self) -> Holder {
        Holder {
            id: self.lease.holder,
            seq: self.request_id,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyVolatile {
    /// Next operation id; `None` until the first operation of this
    /// incarnation draws a random base (PX-1: ids differ across restarts).
    next_op: Option<OpId>,
    ops: BTreeMap<OpId, ClientOp>,
    /// Highest sequence number this incarnation used per key, so two
    /// concurrent writes through this proxy never share a timestamp.
    last_seq: BTreeMap<Key, u64>,
    /// Writer id for timestamps: replica id in the low 8 bits, a random
    /// incarnation above, so a restarted proxy never reuses a timestamp it
    /// issued before a rollback (ABD-W1).
    writer_id: Option<u32>,
}

impl ProxyVolatile {
    pub(crate) fn ops_len(&self) -> usize {
        self.ops.len()
    }
}

enum ReadDecision {
    Wait,
    Return {
        result: Option<RegisterEntry>,
        stabilize: bool,
    },
    WriteBack(RegisterEntry),
}

fn request_share(r: &Request) -> ShareId {
    match r {
        Request::Read { share, .. }
        | Request::Write { share, .. }
        | Request::Delete { share, .. }
        | Request::ChangePolicy { share, .. }
        | Request::ReadPolicy { share } => *share,
    }
}

fn request_key(r: &Request) -> Option<Key> {
    match r {
        Request::Read { key, .. } | Request::Write { key, .. } | Request::Delete { key, .. } => {
            Some(*key)
        }
        Request::ChangePolicy { .. } | Request::ReadPolicy { .. } => None,
    }
}

fn is_live(e: &Option<RegisterEntry>) -> Option<&RegisterEntry> {
    e.as_ref().filter(|e| e.value.data.is_some())
}

impl Node {
    fn writer_id(&mut self) -> u32 {
        if let Some(w) = self.proxy.writer_id {
            return w;
        }
        let incarnation = u32::try_from(self.rng.next() & 0x00FF_FFFF).unwrap_or(0);
        let w = (incarnation << 8) | (self.me & 0xFF);
        self.proxy.writer_id = Some(w);
        w
    }

    /// PX-1: a fresh operation id. Replies (QueryReply, WriteReply,
    /// ProposeReply) are matched to operations by id alone, and replies to a
    /// previous incarnation's operations may still arrive after a restart
    /// (the leader keeps its waiters). So ids start at a random base drawn
    /// once per incarnation (high 32 bits) and count up from there: a new
    /// incarnation does not reuse its predecessor's ids, except with
    /// negligible probability.
    fn next_op_id(&mut self) -> OpId {
        let id = match self.proxy.next_op {
            Some(id) => id,
            None => self.rng.next() << 32,
        };
        self.proxy.next_op = Some(id.wrapping_add(1));
        id
    }

    /// PX-1: accept a tenant request and start its first round.
    pub(crate) fn proxy_on_request(
        &mut self,
        now: Millis,
        client: ClientId,
        tenant: TenantId,
        frame: RequestFrame,
    ) {
        let RequestFrame {
            request_id,
            idempotency,
            request,
            mut lease,
        } = frame;
        lease.holder = tenant_holder(&tenant, lease.holder);
        let op_id = self.next_op_id();
        let share = request_share(&request);
        let (policy, register, ordered) = match &request {
            Request::Read { .. } | Request::Write { .. } | Request::Delete { .. } => {
                (PolicyStep::Fast, RegStep::Query, None)
            }
            Request::ReadPolicy { .. } => (PolicyStep::Fast, RegStep::None, None),
            Request::ChangePolicy { op, .. } => {
                let entry = PolicyEntry::Change {
                    share,
                    requester: tenant.clone(),
                    token: idempotency,
                    op: op.clone(),
                };
                (
                    PolicyStep::NotNeeded,
                    RegStep::None,
                    Some(Ordered {
                        entry,
                        target: None,
                        last_sent_ms: None,
                    }),
                )
            }
        };
        let op = ClientOp {
            client,
            tenant,
            request_id,
            deadline_ms: now + self.cfg.timing.op_deadline_ms,
            request,
            policy,
            register,
            query: Collector::default(),
            ordered,
            write_sent: false,
            epoch_retries: 0,
            retry_entry: None,
            lease,
            policy_fast: false,
            delayed: None,
        };
        let needs_query = matches!(op.policy, PolicyStep::Fast);
        self.proxy.ops.insert(op_id, op);
        if needs_query {
            self.proxy_send_query(now, op_id);
        } else {
            self.proxy_send_ordered(now, op_id);
        }
        let retry = self.cfg.timing.rpc_retry_ms;
        self.set_timer(Timer::Op(op_id), retry);
    }

    pub(crate) fn proxy_on_disconnect(&mut self, client: ClientId) {
        self.proxy.ops.retain(|_, op| op.client != client);
    }

    fn proxy_send_query(&mut self, now: Millis, op_id: OpId) {
        let window = self.cfg.timing.ack_window_ms;
        let Some(op) = self.proxy.ops.get_mut(&op_id) else {
            return;
        };
        let attempt = op.query.next_attempt(now, window);
        let want_value = matches!(op.request, Request::Read { .. });
        let lease = (want_value && op.lease.ms > 0 && op.lease.holder != 0).then(|| LeaseReq {
            holder: op.holder(),
            ms: op.lease.ms,
            tenant: op.tenant.clone(),
        });
        let msg = PeerMessage::Query {
            op: op_id,
            attempt,
            key: request_key(&op.request),
            share: request_share(&op.request),
            want_value,
            want_policy: true,
            lease,
        };
        self.broadcast(&msg);
    }

    /// PAXOS-R3 / PX-3: send the ordered entry to the believed leader.
    fn proxy_send_ordered(&mut self, now: Millis, op_id: OpId) {
        let hint = self.paxos.leader_hint();
        let Some(op) = self.proxy.ops.get_mut(&op_id) else {
            return;
        };
        let Some(ordered) = op.ordered.as_mut() else {
            return;
        };
        let target = ordered.target.or(hint);
        let Some(target) = target else { return };
        ordered.target = Some(target);
        ordered.last_sent_ms = Some(now);
        let entry = ordered.entry.clone();
        self.send(target, PeerMessage::Propose { op: op_id, entry });
    }

    /// Q-2 / PX-9: retransmit what is outstanding, or give up at the deadline.
    pub(crate) fn proxy_on_op_timeout(&mut self, now: Millis, op_id: OpId) {
        let window = self.cfg.timing.ack_window_ms;
        let resend_ordered_after = self.cfg.timing.election_timeout_ms;
        let Some(op) = self.proxy.ops.get_mut(&op_id) else {
            return;
        };
        if let Some((until, response)) = &op.delayed {
            if now >= *until {
                let response = response.clone();
                self.proxy_finish(op_id, response);
            } else {
                let wait = *until - now;
                self.set_timer(Timer::Op(op_id), wait);
            }
            return;
        }
        if now >= op.deadline_ms {
            self.proxy_finish(op_id, Response::Error(ErrorKind::Unavailable));
            return;
        }
        let query_open =
            matches!(op.policy, PolicyStep::Fast) || matches!(op.register, RegStep::Query);
        let mut write_msg = None;
        let holder = op.holder();
        let write_lease = write_lease_req(op);
        if let RegStep::Writing {
            entry,
            epochs,
            acks,
            ..
        } = &mut op.register
        {
            let attempt = acks.next_attempt(now, window);
            let key = request_key(&op.request).unwrap_or(Key([0; 16]));
            // Write-backs (no epochs) never ask for a lease.
            let lease = epochs.and(write_lease);
            write_msg = Some(PeerMessage::Write {
                op: op_id,
                attempt,
                key,
                entry: entry.clone(),
                epochs: *epochs,
                holder,
                lease,
            });
        }
        let ordered_due = match &op.ordered {
            Some(o) => o
                .last_sent_ms
                .is_none_or(|t| now >= t + resend_ordered_after),
            None => false,
        };
        if ordered_due && let Some(o) = op.ordered.as_mut() {
            // Ask whoever we now believe leads.
            o.target = None;
        }
        if query_open {
            self.proxy_send_query(now, op_id);
        }
        if let Some(m) = write_msg {
            self.broadcast(&m);
        }
        if ordered_due {
            self.proxy_send_ordered(now, op_id);
        }
        let retry = self.cfg.timing.rpc_retry_ms;
        self.set_timer(Timer::Op(op_id), retry);
        // The window may have moved: re-evaluate with what still counts.
        self.proxy_progress(now, op_id);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn proxy_on_query_reply(
        &mut self,
        now: Millis,
        from: ReplicaId,
        op_id: OpId,
        attempt: u32,
        suspicious: bool,
        register: Option<RegisterEntry>,
        policy: Option<OptReadReply>,
        leased: bool,
    ) {
        let window = self.cfg.timing.ack_window_ms;
        let Some(op) = self.proxy.ops.get_mut(&op_id) else {
            return;
        };
        if op.query.record(
            now,
            window,
            from,
            attempt,
            suspicious,
            (register, policy, leased),
        ) {
            self.proxy_progress(now, op_id);
        }
    }

    pub(crate) fn proxy_on_write_reply(
        &mut self,
        now: Millis,
        from: ReplicaId,
        op_id: OpId,
        attempt: u32,
        suspicious: bool,
        ack: (WriteAck, bool),
    ) {
        let window = self.cfg.timing.ack_window_ms;
        let Some(op) = self.proxy.ops.get_mut(&op_id) else {
            return;
        };
        if let RegStep::Writing { acks, .. } = &mut op.register
            && acks.record(now, window, from, attempt, suspicious, ack)
        {
            self.proxy_progress(now, op_id);
        }
    }

    pub(crate) fn proxy_on_propose_reply(
        &mut self,
        now: Millis,
        from: ReplicaId,
        op_id: OpId,
        answer: ProposeAnswer,
    ) {
        let Some(op) = self.proxy.ops.get_mut(&op_id) else {
            return;
        };
        let Some(ordered) = op.ordered.as_mut() else {
            return;
        };
        match answer {
            ProposeAnswer::NotLeader { hint } => {
                ordered.target = hint.filter(|h| *h != from);
                if ordered.target.is_some() {
                    self.proxy_send_ordered(now, op_id);
                }
            }
            ProposeAnswer::Executed { outcome, .. } => {
                op.ordered = None;
                match (outcome, &op.request) {
                    (
                        EntryOutcome::Change(ChangeOutcome::Changed { epoch }),
                        Request::ChangePolicy { op: change, .. },
                    ) => {
                        let lease = self.cfg.timing.lease_ms;
                        if lease > 0 && takes_read_access(change) {
                            // LEASE-P2: a lease granted before the change was
                            // chosen may still let its holder read; answer
                            // once every such lease has ended.
                            op.delayed = Some((now + lease, Response::PolicyChanged { epoch }));
                            self.set_timer(Timer::Op(op_id), lease);
                        } else {
                            self.proxy_finish(op_id, Response::PolicyChanged { epoch });
                        }
                    }
                    (
                        EntryOutcome::Change(ChangeOutcome::Refused(e)),
                        Request::ChangePolicy { .. },
                    ) => {
                        self.proxy_finish(op_id, Response::Error(e));
                    }
                    (EntryOutcome::Read(view), _) => {
                        op.policy = PolicyStep::Known(view);
                        self.proxy_progress(now, op_id);
                    }
                    // An answer that does not fit the request (cannot happen
                    // with a correct leader): ask again on the next retry.
                    (_, _) => {}
                }
            }
        }
    }

    fn proxy_finish(&mut self, op_id: OpId, response: Response) {
        self.proxy_finish_leased(op_id, response, 0);
    }

    fn proxy_finish_leased(&mut self, op_id: OpId, response: Response, lease_ms: u32) {
        if let Some(op) = self.proxy.ops.remove(&op_id) {
            let frame = ResponseFrame {
                request_id: op.request_id,
                response,
                lease_ms,
            };
            self.reply(op.client, frame);
        }
    }

    /// LEASE-P1: the lease to report for a finished read — the length asked
    /// for (capped by the cluster's), if the policy came from the same first
    /// round and enough replicas in it granted the lease that every write
    /// quorum holds one of them: `N − W_Q + 1`. A grant counts only from a
    /// replica whose reply held nothing newer than the value returned: a
    /// newer write it had already stored could otherwise complete during
    /// the lease.
    fn lease_granted(&self, now: Millis, op: &ClientOp, read: Option<Version>) -> u32 {
        let max = u32::try_from(self.cfg.timing.lease_ms).unwrap_or(u32::MAX);
        if max == 0 || op.lease.ms == 0 || !op.policy_fast {
            return 0;
        }
        let window = self.cfg.timing.ack_window_ms;
        let grants = op
            .query
            .valid(now, window)
            .filter(|(_, _, p)| p.2 && p.0.as_ref().map(|e| e.version) <= read)
            .count();
        let grants = u32::try_from(grants).unwrap_or(0);
        let mut needed = self.q.n() - self.q.write() + 1;
        if self.cfg.faults.lease_quorum_minus_one {
            needed -= 1;
        }
        if grants >= needed {
            op.lease.ms.min(max)
        } else {
            0
        }
    }

    /// LEASE-W2: the lease to report for a finished write — as LEASE-P1 for
    /// reads: the length asked for (capped), if the policy came from the first
    /// round's optimized read and was not re-read for an epoch retry, the
    /// policy lets the writer read, and at least `N − W_Q + 1` of the acks that
    /// count granted it (each granter holds exactly the written entry).
    fn write_lease_granted(&self, now: Millis, op: &ClientOp) -> u32 {
        let max = u32::try_from(self.cfg.timing.lease_ms).unwrap_or(u32::MAX);
        let (PolicyStep::Known(view), RegStep::Writing { acks, .. }) = (&op.policy, &op.register)
        else {
            return 0;
        };
        if max == 0
            || write_lease_req(op).is_none()
            || !op.policy_fast
            || op.epoch_retries > 0
            || !view.can_read(&op.tenant)
        {
            return 0;
        }
        let window = self.cfg.timing.ack_window_ms;
        let grants = acks
            .valid(now, window)
            .filter(|(_, _, a)| matches!(a, (WriteAck::Stored, true)))
            .count();
        let grants = u32::try_from(grants).unwrap_or(0);
        let mut needed = self.q.n() - self.q.write() + 1;
        if self.cfg.faults.lease_quorum_minus_one {
            needed -= 1;
        }
        if self.cfg.faults.write_lease_without_grants {
            needed = 0;
        }
        if grants >= needed {
            op.lease.ms.min(max)
        } else {
            0
        }
    }

    /// ABD-R2..R4: what the first round's replies allow a reader to do.
    fn abd_read_decision(&self, now: Millis, query: &Collector<QueryPayload>) -> ReadDecision {
        let window = self.cfg.timing.ack_window_ms;
        let (n, s) = query.counts(now, window);
        if !self.q.is_read_quorum(n, s) {
            return ReadDecision::Wait;
        }
        let entries: Vec<&Option<RegisterEntry>> =
            query.valid(now, window).map(|(_, _, p)| &p.0).collect();
        let ht = entries
            .iter()
            .filter_map(|e| e.as_ref())
            .max_by_key(|e| e.version);
        let Some(ht) = ht else {
            // No reply in a read quorum holds the key: no write of it completed.
            return ReadDecision::Return {
                result: None,
                stabilize: false,
            };
        };
        let same: Vec<&RegisterEntry> = entries
            .iter()
            .filter_map(|e| e.as_ref())
            .filter(|e| e.version == ht.version)
            .collect();
        if same.iter().any(|e| e.stable) {
            // ABD-R2
            return ReadDecision::Return {
                result: Some(ht.clone()),
                stabilize: false,
            };
        }
        if n < self.q.read(s).max(self.q.write()) {
            return ReadDecision::Wait;
        }
        let count = u32::try_from(same.len()).unwrap_or(u32::MAX);
        if self.q.is_write_quorum(count) {
            // ABD-R3
            ReadDecision::Return {
                result: Some(ht.clone()),
                stabilize: true,
            }
        } else {
            // ABD-R4
            ReadDecision::WriteBack(ht.clone())
        }
    }

    /// PAXOS-R2: unanimous `R_Q(s)` replies without pending accepts.
    fn opt_read_decision(
        &self,
        now: Millis,
        query: &Collector<QueryPayload>,
    ) -> Option<Option<PolicyView>> {
        let window = self.cfg.timing.ack_window_ms;
        let (n, s) = query.counts(now, window);
        if !self.q.is_read_quorum(n, s) {
            return None;
        }
        let mut views = query.valid(now, window).map(|(_, _, p)| p.1.as_ref());
        let first = views.next().flatten()?;
        if first.pending {
            return Some(None);
        }
        for v in views {
            match v {
                Some(v) if !v.pending && v.view == first.view => {}
                _ => return Some(None),
            }
        }
        Some(Some(first.view.clone()))
    }

    fn stabilize(&mut self, key: Key, version: Version) {
        self.broadcast(&PeerMessage::Stabilize { key, version });
    }

    /// Advance an operation as far as its replies allow.
    fn proxy_progress(&mut self, now: Millis, op_id: OpId) {
        let Some(op) = self.proxy.ops.get(&op_id) else {
            return;
        };
        let window = self.cfg.timing.ack_window_ms;

        // Policy half of the first round (PAXOS-R2 → PAXOS-R3 fallback).
        if matches!(op.policy, PolicyStep::Fast) {
            match self.opt_read_decision(now, &op.query) {
                None => {}
                Some(Some(view)) => {
                    if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                        op.policy = PolicyStep::Known(view);
                        op.policy_fast = true;
                    }
                }
                Some(None) => {
                    let share = request_share(&op.request);
                    let key = request_key(&op.request);
                    if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                        op.policy = PolicyStep::Slow;
                        op.ordered = Some(Ordered {
                            entry: PolicyEntry::Read { share, key },
                            target: None,
                            last_sent_ms: None,
                        });
                    }
                    self.proxy_send_ordered(now, op_id);
                }
            }
        }

        let Some(op) = self.proxy.ops.get(&op_id) else {
            return;
        };
        let is_read = matches!(op.request, Request::Read { .. });
        let key = request_key(&op.request);

        // Register half.
        match &op.register {
            RegStep::Query if is_read => match self.abd_read_decision(now, &op.query) {
                ReadDecision::Wait => {}
                ReadDecision::Return { result, stabilize } => {
                    if stabilize && let (Some(k), Some(r)) = (key, result.as_ref()) {
                        self.stabilize(k, r.version);
                    }
                    if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                        op.register = RegStep::ReadDone { result };
                    }
                }
                ReadDecision::WriteBack(entry) => {
                    let mut acks = Collector::default();
                    let attempt = acks.next_attempt(now, window);
                    let k = key.unwrap_or(Key([0; 16]));
                    // The reader's own lease (granted in this round) must not
                    // hold back its write-back.
                    let holder = op.holder();
                    let msg = PeerMessage::Write {
                        op: op_id,
                        attempt,
                        key: k,
                        entry: entry.clone(),
                        epochs: None,
                        holder,
                        lease: None,
                    };
                    if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                        op.register = RegStep::Writing {
                            current: None,
                            entry,
                            epochs: None,
                            acks,
                        };
                    }
                    self.broadcast(&msg);
                }
            },
            RegStep::Query => {
                // ABD-W1: a read quorum of timestamps.
                let (n, s) = op.query.counts(now, window);
                if self.q.is_read_quorum(n, s) {
                    let current = op
                        .query
                        .valid(now, window)
                        .filter_map(|(_, _, p)| p.0.as_ref())
                        .max_by_key(|e| e.version)
                        .cloned();
                    if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                        op.register = RegStep::Ready { current };
                    }
                }
            }
            RegStep::Writing {
                current,
                entry,
                acks,
                epochs,
            } => {
                let stored = acks
                    .valid(now, window)
                    .filter(|(_, _, a)| matches!(a.0, WriteAck::Stored))
                    .count();
                let refused = acks
                    .valid(now, window)
                    .filter(|(_, _, a)| !matches!(a.0, WriteAck::Stored))
                    .count();
                let stored = u32::try_from(stored).unwrap_or(u32::MAX);
                let refused = u32::try_from(refused).unwrap_or(u32::MAX);
                if self.q.is_write_quorum(stored) {
                    let (entry, current) = (entry.clone(), current.clone());
                    let k = key.unwrap_or(Key([0; 16]));
                    if is_read {
                        // ABD-R4 done: stabilize, then return.
                        self.stabilize(k, entry.version);
                        if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                            op.register = RegStep::ReadDone {
                                result: Some(entry),
                            };
                        }
                    } else {
                        // ABD-W3: return, stabilize the NEW timestamp (the paper's
                        // Fig. 4 says `ht`, which is a typo).
                        let version = if self.cfg.faults.stabilize_read_timestamp {
                            current.map(|c| c.version).unwrap_or_default()
                        } else {
                            entry.version
                        };
                        let lease_ms = self.write_lease_granted(now, op);
                        self.stabilize(k, version);
                        let response = if entry.value.data.is_some() {
                            Response::Written {
                                version: entry.version,
                            }
                        } else {
                            Response::Deleted {
                                version: entry.version,
                            }
                        };
                        self.proxy_finish_leased(op_id, response, lease_ms);
                        return;
                    }
                } else if epochs.is_some() && refused > self.q.n() - self.q.write() {
                    // PX-7: too many refusals for a write quorum → re-read the
                    // policy through the leader and retry with its epochs.
                    let share = request_share(&op.request);
                    let (current, refused_entry) = (current.clone(), entry.clone());
                    let retries = op.epoch_retries + 1;
                    if retries > EPOCH_RETRIES {
                        self.proxy_finish(op_id, Response::Error(ErrorKind::Unavailable));
                        return;
                    }
                    if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                        op.epoch_retries = retries;
                        op.retry_entry = Some(refused_entry);
                        op.register = RegStep::Ready { current };
                        op.policy = PolicyStep::Slow;
                        op.ordered = Some(Ordered {
                            entry: PolicyEntry::Read { share, key },
                            target: None,
                            last_sent_ms: None,
                        });
                    }
                    self.proxy_send_ordered(now, op_id);
                    return;
                }
            }
            RegStep::None | RegStep::Ready { .. } | RegStep::ReadDone { .. } => {}
        }

        // With the policy known, evaluate and finish or write.
        let Some(op) = self.proxy.ops.get(&op_id) else {
            return;
        };
        let PolicyStep::Known(view) = &op.policy else {
            return;
        };
        let tenant = op.tenant.clone();
        let share = request_share(&op.request);
        match (&op.request, &op.register) {
            (Request::ReadPolicy { .. }, _) => {
                // PX-4
                let response = match &view.share {
                    None => Response::Error(ErrorKind::NotFound),
                    Some(_) if !view.can_read(&tenant) => Response::Error(ErrorKind::Denied),
                    Some(p) => Response::Policy { policy: p.clone() },
                };
                self.proxy_finish(op_id, response);
            }
            (Request::Read { .. }, reg) => {
                // PX-2: a tenant without read access learns nothing, not even
                // whether the key exists.
                if !view.can_read(&tenant) {
                    self.proxy_finish(op_id, Response::Error(ErrorKind::Denied));
                    return;
                }
                if let RegStep::ReadDone { result } = reg {
                    let (response, leasable) = match is_live(result) {
                        None => (Response::Error(ErrorKind::NotFound), true),
                        Some(e) if e.value.share != share => {
                            (Response::Error(ErrorKind::Denied), false)
                        }
                        Some(e) => (
                            Response::Value {
                                value: e.value.data.clone().unwrap_or_default(),
                                version: e.version,
                            },
                            true,
                        ),
                    };
                    let read_version = result.as_ref().map(|e| e.version);
                    let lease_ms = if leasable {
                        self.lease_granted(now, op, read_version)
                    } else {
                        0
                    };
                    self.proxy_finish_leased(op_id, response, lease_ms);
                }
            }
            (Request::Write { .. } | Request::Delete { .. }, RegStep::Ready { current }) => {
                // PX-5: evaluate, then the write round with the checked epochs.
                let data = match &op.request {
                    Request::Write { value, .. } => Some(value.clone()),
                    _ => None,
                };
                let live = is_live(current);
                let denied = !view.can_write(&tenant)
                    || current.as_ref().is_some_and(|c| c.value.share != share);
                let writer = match (&view.file, live) {
                    (Some(f), _) => f.writer.clone(),
                    (None, Some(c)) => c.value.creator.clone(),
                    (None, None) => tenant.clone(),
                };
                let refusal = if denied {
                    Some(ErrorKind::Denied)
                } else if writer != tenant {
                    Some(ErrorKind::NotWriter)
                } else {
                    None
                };
                if let Some(kind) = refusal {
                    // PX-8: after a write round went out the outcome is unknown.
                    let kind = if op.write_sent {
                        ErrorKind::Unavailable
                    } else {
                        kind
                    };
                    self.proxy_finish(op_id, Response::Error(kind));
                    return;
                }
                let creator = live.map_or(tenant.clone(), |c| c.value.creator.clone());
                let holder = op.holder();
                let lease = write_lease_req(op);
                let epochs = Epochs {
                    share,
                    share_epoch: view.share_epoch(),
                    file_epoch: view.file_epoch(),
                };
                let current = current.clone();
                let k = key.unwrap_or(Key([0; 16]));
                let entry = match op.retry_entry.clone() {
                    // PX-7: a retry resends the refused round's entry, same
                    // timestamp and bytes, only with the re-read epochs.
                    Some(entry) => entry,
                    None => {
                        let base_seq = current.as_ref().map_or(0, |c| c.version.seq);
                        let seq =
                            base_seq.max(self.proxy.last_seq.get(&k).copied().unwrap_or(0)) + 1;
                        self.proxy.last_seq.insert(k, seq);
                        let version = Version {
                            seq,
                            writer: self.writer_id(),
                        };
                        RegisterEntry {
                            version,
                            stable: false,
                            value: StoredValue {
                                share,
                                creator,
                                data,
                            },
                        }
                    }
                };
                let mut acks = Collector::default();
                let attempt = acks.next_attempt(now, window);
                let msg = PeerMessage::Write {
                    op: op_id,
                    attempt,
                    key: k,
                    entry: entry.clone(),
                    epochs: Some(epochs),
                    holder,
                    lease,
                };
                if let Some(op) = self.proxy.ops.get_mut(&op_id) {
                    op.register = RegStep::Writing {
                        current,
                        entry,
                        epochs: Some(epochs),
                        acks,
                    };
                    op.write_sent = true;
                }
                self.broadcast(&msg);
            }
            _ => {}
        }
    }
}

/// The lease a client write asks its WRITE round to grant (LEASE-W1): only
/// a write of a value (not a delete) by a session that asked for one, and not
/// after an epoch retry (W2 reports no lease then, so a grant would only hold
/// other writes back).
fn write_lease_req(op: &ClientOp) -> Option<Box<LeaseReq>> {
    (matches!(op.request, Request::Write { .. })
        && op.lease.ms > 0
        && op.lease.holder != 0
        && op.epoch_retries == 0)
        .then(|| {
            Box::new(LeaseReq {
                holder: op.holder(),
                ms: op.lease.ms,
                tenant: op.tenant.clone(),
            })
        })
}

/// Policy changes after which a tenant may read less than before: their
/// answers wait out the leases granted before them (LEASE-P2).
fn takes_read_access(op: &PolicyOp) -> bool {
    matches!(op, PolicyOp::Revoke { .. } | PolicyOp::TransferOwner { .. })
}

/// The holder id replicas see: the client's id bound to its authenticated
/// tenant, so no tenant can pass its writes off as another tenant's session
/// to slip them under that session's leases (LEASE-R2). 0 stays 0 (no holder).
fn tenant_holder(tenant: &TenantId, holder: u64) -> u64 {
    if holder == 0 {
        return 0;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"teems lease holder");
    h.update(&holder.to_le_bytes());
    h.update(tenant.0.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out) | 1
}
