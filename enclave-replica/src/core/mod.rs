//! Sans-IO protocol cores of a TEEMS replica (DESIGN §2–7; steps numbered in
//! `docs/PROTOCOLS.md`).
//!
//! One [`Node`] is one replica process: a register replica for every key
//! (RR-ABD), an acceptor/leader of RR-Paxos for the policy state machine, the
//! recovery sub-protocol, and the proxy logic for the tenants connected to it.
//! It is a plain state machine: events go in ([`Node::start`],
//! [`Node::on_message`], [`Node::on_timeout`], [`Node::on_client_request`]) and
//! an ordered `Vec<`[`Command`]`>` comes out. It never touches sockets, disks,
//! clocks or randomness: time is the `now` argument, randomness comes from the
//! `seed` given to [`Node::start`], and iteration is over ordered maps only, so
//! the same inputs always give the same outputs.
//!
//! # The persistence-ordering contract
//!
//! The commands of one batch must be carried out **in order**, and a
//! [`Command::Persist`] must be durable before any later command of the same
//! batch is carried out. Every `Send` or `Reply` whose content depends on state
//! comes after the `Persist` of that state, so "persist, then acknowledge"
//! (DESIGN §4) holds as long as the runtime respects the order. Messages a node
//! sends to itself never appear as commands: the node delivers them internally,
//! after the records they produce have been queued in the same batch.
//!
//! One kind of send is exempt (PERSIST-1 in docs/PROTOCOLS.md): a register
//! request, `Query` or `Write` ([`PeerMessage::may_precede_sync`]), may be
//! carried out before records that precede it — those of its own event and of
//! earlier events. A request asserts nothing about what its sender holds, so a
//! crash that loses those records cannot contradict it.

pub mod digest;
pub mod harness;
pub mod message;
pub mod policy;
pub mod quorum;
pub mod state;

mod collect;
mod lease;
mod paxos;
mod proxy;
mod recovery;
mod register;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use metadata_client::wire::{RequestFrame, ResponseFrame, TenantId};
use serde::{Deserialize, Serialize};

pub use message::{
    Epochs, Holder, LeaseReq, OpId, OptReadReply, PeerMessage, ProposeAnswer, WriteAck,
};
pub use policy::{
    ChangeOutcome, EntryOutcome, FileState, PolicyEntry, PolicyState, PolicyView, ShareState,
};
pub use quorum::{ConfigError, Quorums};
pub use state::{CoreDecodeError, DurableState, Record, RegisterEntry, StoredValue};

/// Replica id, `1..=N`.
pub type ReplicaId = u32;
/// A tenant connection at a proxy (chosen by the runtime).
pub type ClientId = u64;
/// Time in milliseconds, logical or real, always passed in.
pub type Millis = u64;
/// A Paxos log position; slot 0 is "nothing", the first entry is slot 1.
pub type Slot = u64;

/// A Paxos ballot: `(round, leader)`, compared lexicographically. The default
/// `(0, 0)` is below every ballot a replica can propose.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    pub round: u64,
    pub leader: ReplicaId,
}

/// Fault model the cluster is configured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Restart-rollback: RR quorums, suspicion, recovery (the real thing).
    Rr,
    /// Crash-fault baseline: majority quorums over the same `N`, suspicion
    /// ignored, a restarted replica trusts whatever state it finds. Unsafe
    /// under rollback, on purpose (DESIGN §3, §13).
    Cft,
}

/// Timeouts, all in milliseconds of the `now` the runtime passes in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// A quorum RPC with missing replies is retransmitted this often.
    pub rpc_retry_ms: Millis,
    /// The leader sends heartbeats this often (PAXOS-L6).
    pub heartbeat_ms: Millis,
    /// A follower that hears no leader for this long (plus a random extra of
    /// up to the same amount) starts an election (PAXOS-L1).
    pub election_timeout_ms: Millis,
    /// A recovery round that has not finished is restarted this often (REC-1).
    pub recovery_retry_ms: Millis,
    /// Acknowledgement window `V`: a collector counts only replies to
    /// requests it sent within the last `ack_window_ms`, and a restarted
    /// replica stays suspicious for at least this long (REC-0).
    pub ack_window_ms: Millis,
    /// A client operation not finished after this long is answered
    /// `Unavailable` (PX-9).
    pub op_deadline_ms: Millis,
    /// Longest read lease a replica grants, and how long it holds back
    /// writes after it starts (LEASE-R1, R3). 0 turns leases off.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: Millis,
}

fn default_lease_ms() -> Millis {
    Timing::default().lease_ms
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            rpc_retry_ms: 50,
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            recovery_retry_ms: 200,
            ack_window_ms: 1_000,
            op_deadline_ms: 5_000,
            lease_ms: 1_000,
        }
    }
}

/// Deliberate bugs for the simulator's "the checker catches bugs" tests.
/// All off by default; never enable in a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Every read quorum is one smaller than `R_Q(s)`.
    pub read_quorum_minus_one: bool,
    /// Stabilize the timestamp read in the first round instead of the new one
    /// (the paper's Fig. 4 typo).
    pub stabilize_read_timestamp: bool,
    /// Clear the suspicious flag at start without recovering.
    pub skip_recovery: bool,
    /// Report a lease to the client with one grant fewer than LEASE-P1 needs.
    #[serde(default)]
    pub lease_quorum_minus_one: bool,
    /// Forget LEASE-R3: accept writes at once after a restart.
    #[serde(default)]
    pub lease_skip_restart_wait: bool,
    /// Forget LEASE-R2: grant leases but never hold a write back.
    #[serde(default)]
    pub lease_no_hold: bool,
    /// Forget LEASE-W1's version check: grant a write lease even when the
    /// replica already holds a newer entry than the one written.
    #[serde(default)]
    pub write_lease_any_version: bool,
    /// Forget LEASE-W2's count: report a write lease however few replicas
    /// granted it.
    #[serde(default)]
    pub write_lease_without_grants: bool,
    /// Stretch PERSIST-1 to write acknowledgements: a `WriteReply` may leave before
    /// the record it acknowledges is synced. Only the simulator's model of the
    /// runtime reads this switch; the replica runtime never lets a reply out early.
    #[serde(default)]
    pub acks_precede_sync: bool,
}

/// Static configuration of the cluster, identical at every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub mode: Mode,
    pub m_r: u32,
    pub f: u32,
    /// Derived: `max(M_R, F) + F + 1`.
    pub n: u32,
    /// `1..=n`.
    pub replicas: Vec<ReplicaId>,
    pub timing: Timing,
    pub faults: Faults,
}

impl ClusterConfig {
    /// Validate `(M_R, F)` (see [`quorum`]) and derive `N` with default timing.
    pub fn new(mode: Mode, m_r: u32, f: u32) -> Result<ClusterConfig, ConfigError> {
        let q = Quorums::new(mode, m_r, f)?;
        let n = q.n();
        Ok(ClusterConfig {
            mode,
            m_r,
            f,
            n,
            replicas: (1..=n).collect(),
            timing: Timing::default(),
            faults: Faults::default(),
        })
    }

    /// Check a config built or edited by hand (e.g. read from a file).
    pub fn validate(&self) -> Result<Quorums, ConfigError> {
        let q = Quorums::new(self.mode, self.m_r, self.f)?;
        let expected: Vec<ReplicaId> = (1..=q.n()).collect();
        if self.n != q.n() || self.replicas != expected {
            return Err(ConfigError::Timing(format!(
                "replicas must be 1..=N with N = max(M_R, F) + F + 1 = {}, got n={} and {} ids",
                q.n(),
                self.n,
                self.replicas.len()
            )));
        }
        let t = &self.timing;
        if t.rpc_retry_ms == 0
            || t.heartbeat_ms == 0
            || t.election_timeout_ms == 0
            || t.recovery_retry_ms == 0
        {
            return Err(ConfigError::Timing(
                "every timeout must be at least 1 ms".into(),
            ));
        }
        if t.ack_window_ms < 2 * t.rpc_retry_ms {
            return Err(ConfigError::Timing(format!(
                "ack_window_ms ({}) must be at least twice rpc_retry_ms ({})",
                t.ack_window_ms, t.rpc_retry_ms
            )));
        }
        if t.op_deadline_ms < t.rpc_retry_ms {
            return Err(ConfigError::Timing(
                "op_deadline_ms must be at least rpc_retry_ms".into(),
            ));
        }
        if t.lease_ms > u64::from(u32::MAX) || t.lease_ms.saturating_mul(2) > t.op_deadline_ms {
            return Err(ConfigError::Timing(format!(
                "lease_ms ({}) must be at most half of op_deadline_ms ({}): a write may wait a whole lease",
                t.lease_ms, t.op_deadline_ms
            )));
        }
        Ok(q.with_read_minus_one(self.faults.read_quorum_minus_one))
    }

    pub fn quorums(&self) -> Result<Quorums, ConfigError> {
        self.validate()
    }
}

/// Timers a node asks for. Setting a timer that is already set replaces it.
/// A timer may fire after the thing it guarded finished; handlers ignore it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// Follower: no leader heard from; candidate: prepare retry (PAXOS-L1).
    Election,
    /// Leader: send heartbeats, retransmit unanswered accepts (PAXOS-L6).
    Heartbeat,
    /// Recovery round retry and end of the suspicious quarantine (REC-1).
    Recovery,
    /// Retransmit / deadline check of one client operation (Q-2, PX-9).
    Op(OpId),
    /// A lease on this key may have ended: release held writes (LEASE-R2).
    Lease(metadata_client::wire::Key),
}

/// What the runtime must do. See the module docs for the ordering contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Make these records durable, in order, before carrying out any later
    /// command of the same batch.
    Persist(Vec<Record>),
    /// Send a message to another replica (never to `me`).
    Send { to: ReplicaId, msg: PeerMessage },
    /// Answer a tenant connection.
    Reply {
        client: ClientId,
        frame: ResponseFrame,
    },
    /// Fire `timer` after `after_ms`; replaces an earlier setting.
    SetTimer { timer: Timer, after_ms: Millis },
}

/// A snapshot of a node for status pages, tests and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub me: ReplicaId,
    pub suspicious: bool,
    /// A recovery round is running.
    pub recovering: bool,
    /// Who this node believes leads the current ballot.
    pub leader: Option<ReplicaId>,
    /// This node is an established leader (prepare phase done).
    pub is_leader: bool,
    pub promised: Ballot,
    pub executed: Slot,
    pub keys: usize,
    /// Client operations in progress at this proxy.
    pub ops_in_flight: usize,
    /// Register writes held back by leases (LEASE-R2, R3).
    pub writes_held: usize,
}

/// Deterministic pseudo-random numbers from the start seed (splitmix64).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

/// Commands being assembled for one event. Records are buffered and flushed
/// as one `Persist` right before the next `Send`/`Reply`, which is what makes
/// the ordering contract hold by construction.
#[derive(Debug, Default)]
struct Out {
    commands: Vec<Command>,
    records: Vec<Record>,
}

impl Out {
    fn flush(&mut self) {
        if !self.records.is_empty() {
            let records = std::mem::take(&mut self.records);
            self.commands.push(Command::Persist(records));
        }
    }

    fn finish(mut self) -> Vec<Command> {
        self.flush();
        self.commands
    }
}

/// One replica: register replica, Paxos acceptor/leader, recovery and proxy.
#[derive(Debug)]
pub struct Node {
    cfg: ClusterConfig,
    q: Quorums,
    me: ReplicaId,
    durable: DurableState,
    /// DESIGN §4: set on every start (RR mode), cleared by recovery.
    suspicious: bool,
    started_at_ms: Millis,
    rng: Rng,
    out: Out,
    /// Messages to self, delivered after the current handler returns.
    loopback: VecDeque<PeerMessage>,
    paxos: paxos::PaxosVolatile,
    recovery: recovery::RecoveryVolatile,
    proxy: proxy::ProxyVolatile,
    leases: lease::LeaseVolatile,
}

impl Node {
    /// `on_start`: build a replica from whatever its sealed store returned
    /// (possibly older than what it persisted, or empty). In RR mode the node
    /// is suspicious and starts recovery (REC-0, REC-1). An invalid config is
    /// the caller's bug and is reported by [`ClusterConfig::validate`] first;
    /// here it panics, since the cluster cannot run at all.
    pub fn start(
        config: ClusterConfig,
        me: ReplicaId,
        recovered: DurableState,
        now: Millis,
        seed: u64,
    ) -> (Node, Vec<Command>) {
        let q = match config.validate() {
            Ok(q) => q,
            Err(e) => panic!("Node::start with an invalid cluster config: {e}"),
        };
        assert!(
            config.replicas.contains(&me),
            "replica id {me} is not in 1..={}",
            config.n
        );
        let mut node = Node {
            q,
            me,
            durable: recovered,
            suspicious: config.mode == Mode::Rr && !config.faults.skip_recovery,
            started_at_ms: now,
            rng: Rng(seed ^ u64::from(me).wrapping_mul(0xA076_1D64_78BD_642F)),
            out: Out::default(),
            loopback: VecDeque::new(),
            paxos: paxos::PaxosVolatile::default(),
            recovery: recovery::RecoveryVolatile::default(),
            proxy: proxy::ProxyVolatile::default(),
            leases: lease::LeaseVolatile::default(),
            cfg: config,
        };
        node.paxos_on_start(now);
        node.recovery_on_start(now);
        let commands = node.finish(now);
        (node, commands)
    }

    /// A message from replica `from` (authenticated by the runtime).
    pub fn on_message(&mut self, now: Millis, from: ReplicaId, msg: PeerMessage) -> Vec<Command> {
        if from != self.me && self.cfg.replicas.contains(&from) {
            self.dispatch(now, from, msg);
        }
        self.finish(now)
    }

    /// A timer set earlier fired.
    pub fn on_timeout(&mut self, now: Millis, timer: Timer) -> Vec<Command> {
        match timer {
            Timer::Election => self.paxos_on_election_timeout(now),
            Timer::Heartbeat => self.paxos_on_heartbeat_timeout(now),
            Timer::Recovery => self.recovery_on_timeout(now),
            Timer::Op(op) => self.proxy_on_op_timeout(now, op),
            Timer::Lease(key) => self.lease_on_timeout(now, key),
        }
        self.finish(now)
    }

    /// A tenant's request; `tenant` is authenticated by the runtime (mutual TLS).
    pub fn on_client_request(
        &mut self,
        now: Millis,
        client: ClientId,
        tenant: TenantId,
        frame: RequestFrame,
    ) -> Vec<Command> {
        self.proxy_on_request(now, client, tenant, frame);
        self.finish(now)
    }

    /// The tenant connection closed: its operations are abandoned (no reply).
    /// Rounds already sent may still take effect, as with any lost client.
    pub fn on_client_disconnect(&mut self, client: ClientId) {
        self.proxy_on_disconnect(client);
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            me: self.me,
            suspicious: self.suspicious,
            recovering: self.recovery.round_active(),
            leader: self.paxos.leader_hint(),
            is_leader: self.paxos.is_established_leader(),
            promised: self.durable.promised,
            executed: self.durable.executed,
            keys: self.durable.registers.len(),
            ops_in_flight: self.proxy.ops_len(),
            writes_held: self.leases_held(),
        }
    }

    pub fn id(&self) -> ReplicaId {
        self.me
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Read-only view of the node's durable state (for checkers and tests).
    pub fn durable(&self) -> &DurableState {
        &self.durable
    }

    // ---- plumbing shared by the handlers -------------------------------

    fn dispatch(&mut self, now: Millis, from: ReplicaId, msg: PeerMessage) {
        use PeerMessage as M;
        match msg {
            M::Query {
                op,
                attempt,
                key,
                share,
                want_value,
                want_policy,
                lease,
            } => self.register_on_query(
                now,
                from,
                op,
                attempt,
                key,
                share,
                want_value,
                want_policy,
                lease,
            ),
            M::Write {
                op,
                attempt,
                key,
                entry,
                epochs,
                holder,
                lease,
            } => {
                let write = lease::HeldWrite {
                    from,
                    op,
                    attempt,
                    entry,
                    epochs,
                    holder,
                };
                self.register_on_write(now, key, write, lease.map(|l| *l))
            }
            M::Stabilize { key, version } => self.register_on_stabilize(key, version),
            M::QueryReply {
                op,
                attempt,
                suspicious,
                register,
                policy,
                leased,
            } => self
                .proxy_on_query_reply(now, from, op, attempt, suspicious, register, policy, leased),
            M::WriteReply {
                op,
                attempt,
                suspicious,
                ack,
                leased,
            } => self.proxy_on_write_reply(now, from, op, attempt, suspicious, (ack, leased)),
            M::ProposeReply { op, answer } => self.proxy_on_propose_reply(now, from, op, answer),
            M::Propose { op, entry } => self.paxos_on_propose(now, from, op, entry),
            M::Prepare {
                ballot,
                attempt,
                executed,
            } => self.paxos_on_prepare(now, from, ballot, attempt, executed),
            M::Promise {
                ballot,
                attempt,
                suspicious,
                executed,
                snapshot,
                accepted,
            } => self.paxos_on_promise(
                now, from, ballot, attempt, suspicious, executed, snapshot, accepted,
            ),
            M::Accept {
                ballot,
                attempt,
                slot,
                entry,
            } => self.paxos_on_accept(now, from, ballot, attempt, slot, entry),
            M::Accepted {
                ballot,
                attempt,
                slot,
                suspicious,
            } => self.paxos_on_accepted(now, from, ballot, attempt, slot, suspicious),
            M::Reject { ballot, promised } => self.paxos_on_reject(now, from, ballot, promised),
            M::Decide {
                ballot,
                slot,
                entry,
            } => self.paxos_on_decide(now, from, ballot, slot, entry),
            M::Heartbeat { ballot, executed } => {
                self.paxos_on_heartbeat(now, from, ballot, executed)
            }
            M::CatchUpRequest { executed } => self.paxos_on_catch_up_request(from, executed),
            M::CatchUp { executed, state } => self.paxos_on_catch_up(now, executed, state),
            M::DigestRequest { round } => self.recovery_on_digest_request(from, round),
            M::DigestReply {
                round,
                suspicious,
                buckets,
                promised,
                executed,
                accepted,
            } => self.recovery_on_digest_reply(
                now, from, round, suspicious, buckets, promised, executed, accepted,
            ),
            M::FetchRequest {
                round,
                buckets,
                want_snapshot,
            } => self.recovery_on_fetch_request(from, round, buckets, want_snapshot),
            M::FetchReply {
                round,
                entries,
                snapshot,
            } => self.recovery_on_fetch_reply(now, from, round, entries, snapshot),
        }
    }

    /// Apply a record to the durable state and queue it for the runtime.
    fn persist(&mut self, record: Record) {
        if self.durable.apply(&record) {
            self.out.records.push(record);
        }
    }

    fn send(&mut self, to: ReplicaId, msg: PeerMessage) {
        if to == self.me {
            self.loopback.push_back(msg);
        } else {
            self.out.flush();
            self.out.commands.push(Command::Send { to, msg });
        }
    }

    /// Send to every replica, self included (delivered through the loopback).
    fn broadcast(&mut self, msg: &PeerMessage) {
        for to in self.cfg.replicas.clone() {
            self.send(to, msg.clone());
        }
    }

    fn reply(&mut self, client: ClientId, frame: ResponseFrame) {
        self.out.flush();
        self.out.commands.push(Command::Reply { client, frame });
    }

    fn set_timer(&mut self, timer: Timer, after_ms: Millis) {
        self.out
            .commands
            .push(Command::SetTimer { timer, after_ms });
    }

    /// Whether suspicion is in force and this node is suspicious.
    fn is_suspicious(&self) -> bool {
        self.suspicious && self.q.uses_suspicion()
    }

    /// The flag as carried in replies. In CFT mode it is always false: the
    /// baseline ignores suspicion.
    fn flag(&self) -> bool {
        self.is_suspicious()
    }

    /// Deliver self-addressed messages, then hand the batch out.
    fn finish(&mut self, now: Millis) -> Vec<Command> {
        // Bounded: every self-delivery is a reply or a request answered once;
        // the cap only guards against a protocol bug looping forever.
        let mut budget = 10_000usize;
        while let Some(msg) = self.loopback.pop_front() {
            budget -= 1;
            assert!(budget > 0, "loopback did not drain: protocol loop");
            let me = self.me;
            self.dispatch(now, me, msg);
        }
        std::mem::take(&mut self.out).finish()
    }
}
