//! The simulated world: replicas, clients, network, sealed stores and time,
//! all in one thread and all driven by one seeded RNG.
//!
//! A run has four phases:
//! 1. **set-up** (calm network, no faults): the owner creates the share and
//!    grants the second tenant read-write access;
//! 2. **faults**: clients run their workloads while the network drops,
//!    duplicates, delays, reorders and partitions, and replicas crash and
//!    restart with their latest, an older, or an empty sealed state (at most
//!    `M_R` replicas hold rolled-back state they have not recovered from);
//! 3. **heal**: the network calms, every crashed replica restarts with its
//!    latest state, and the run waits for every replica to recover;
//! 4. **liveness**: up to `F` replicas are cut off; every pending operation
//!    and a final read of every key and of the policy must complete within
//!    a deadline.
//!
//! Safety is checked as operations return (stale reads, malformed answers)
//! and after every replica step (agreement of executed policy logs), and the
//! whole history is checked for linearizability at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use enclave_replica::core::{
    ClusterConfig, Command, DurableState, Faults, Mode, Node, PeerMessage, PolicyState, Quorums,
    Record, Timer,
};
use metadata_client::lease::Leased;
use metadata_client::wire::{
    ErrorKind, LeaseAsk, PolicyOp, Request, RequestFrame, Response, ResponseFrame, TenantId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checker::policy::{PolicyHistOp, PolicySpec, read_is_informative};
use super::checker::register::{RegisterSpec, prepare};
use super::checker::{LinError, Timed, check};
use super::client::{Plan, SHARE, SimClient, Waiting, key, next_plan, tenant, tenant_of_client};
use super::history::{History, encode_value};
use super::network::{Endpoint, NetworkFaults, Partition};
use super::report::{Outcome, Property, Stats, Violation};
use super::storage::SealedStore;

/// Chance that a replica crashes before each command of a batch it emitted
/// (after the earlier ones were carried out).
const CRASH_BETWEEN_COMMANDS_PROB: f64 = 0.0005;

/// Chance that a replica's records still waiting for a sync at the end of an event stay
/// unsynced into its next event, as when the runtime handles both in one batch: that
/// event's register requests (PERSIST-1) then leave before the sync, and a crash before
/// it loses the records.
const CARRY_SYNC_PROB: f64 = 0.3;

/// Chance that a read answered with a lease is followed at once by a restart burst.
const BURST_AFTER_LEASE_PROB: f64 = 0.3;

/// Everything that defines one run besides the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub mode: Mode,
    pub m_r: u32,
    pub f: u32,
    /// Workload clients (the auditor that does set-up and final reads is
    /// extra).
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: usize,
    /// Length of the fault phase, simulated ms.
    pub fault_phase_ms: u64,
    /// Deadline for recovery after healing, and again for completing every
    /// operation in the liveness phase.
    pub liveness_deadline_ms: u64,
    /// How long a client waits for its proxy before trying another.
    pub client_timeout_ms: u64,
    /// Allow restarts from older or empty sealed state.
    pub rollbacks: bool,
    /// Test-only bug switches of the cores (all off by default), to show
    /// the checker catches them.
    pub bugs: Faults,
    /// Workload clients ask for read leases and answer reads from them, as
    /// the real session does (the replicas' `lease_ms` is 0 otherwise).
    pub leases: bool,
    /// With leases on, writes of a value ask to keep what they wrote under a lease too
    /// (LEASE-W1, C4), as the real session does. Off, only reads are leased: the
    /// schedules then are those the read-lease catch rates were measured on.
    pub write_leases: bool,
    /// The replicas' `ack_window_ms` (Q-3, REC-0) when not the default. The default
    /// equals the lease, and a restarted replica then refuses client writes (suspicious,
    /// PX-6) for longer than any lease it granted before the crash could run; a shorter
    /// window is what leaves LEASE-R3 alone to hold those writes back.
    pub ack_window_ms: Option<u64>,
    /// The replicas' `lease_ms` when leases are on and it is not the default.
    pub lease_ms: Option<u64>,
    /// Also crash `W_Q` replicas at once now and then, and right after some lease
    /// grants (see `World::restart_burst`). Off by default, which keeps the default
    /// runs' schedules (and the catch rates measured on them) as they were.
    pub restart_bursts: bool,
    /// Chance that a replica whose records stay unsynced past an event (see
    /// `CARRY_SYNC_PROB`) crashes right there: the window PERSIST-1 opens, aimed at as
    /// `CRASH_BETWEEN_COMMANDS_PROB` aims at the one between a persist and a send.
    /// Default 0.005, which leaves the other catch rates as they were measured.
    pub crash_before_sync_prob: f64,
    /// Record a human-readable trace (for replaying a failing seed).
    pub trace: bool,
    /// Also trace every message delivered (very long).
    pub trace_messages: bool,
}

impl SimConfig {
    pub fn new(mode: Mode, m_r: u32, f: u32) -> Self {
        SimConfig {
            mode,
            m_r,
            f,
            clients: 4,
            ops_per_client: 25,
            keys: 3,
            fault_phase_ms: 4_000,
            liveness_deadline_ms: 30_000,
            client_timeout_ms: 800,
            rollbacks: true,
            bugs: Faults::default(),
            leases: true,
            write_leases: true,
            ack_window_ms: None,
            lease_ms: None,
            restart_bursts: false,
            crash_before_sync_prob: 0.005,
            trace: false,
            trace_messages: false,
        }
    }

    /// Small runs for the default test suite.
    pub fn smoke(mode: Mode, m_r: u32, f: u32) -> Self {
        SimConfig {
            ops_per_client: 8,
            fault_phase_ms: 1_500,
            ..SimConfig::new(mode, m_r, f)
        }
    }
}

/// What travels on the simulated network.
#[derive(Clone, Debug)]
enum Payload {
    Peer(PeerMessage),
    Request {
        client: usize,
        tenant: TenantId,
        frame: RequestFrame,
    },
    Reply(ResponseFrame),
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: Endpoint,
        to: Endpoint,
        payload: Payload,
    },
    Timer {
        replica: usize,
        incarnation: u64,
        generation: u64,
        timer: Timer,
    },
    ClientNext {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        token: u64,
    },
    FaultTick,
    Restart {
        replica: usize,
        /// With its latest sealed state (a restart burst), not a chosen one.
        latest: bool,
    },
    HealPartition {
        generation: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Setup,
    Faults,
    Heal,
    Liveness,
}

struct Replica {
    node: Option<Node>,
    /// Bumped on every crash so that timers of a dead incarnation never fire.
    incarnation: u64,
    store: SealedStore<Record>,
    /// Persisted records not yet in `store`, as the replica runtime holds them: those
    /// that need no sync (`Record::needs_sync`) until one that does comes, and that one
    /// until the batch's sync, which may let register requests out first (PERSIST-1).
    /// A crash loses them.
    deferred: Vec<Record>,
    /// `deferred` holds a record that needs a sync.
    sync_due: bool,
    /// Restarted from something older than its latest sealed state and not
    /// yet recovered (the `M_R` bound counts these).
    rolled_back: bool,
    started_at_ms: u64,
    /// Generation of each timer: setting a timer replaces the earlier
    /// setting, so only the latest generation fires.
    timers: BTreeMap<Timer, u64>,
    /// Executed slot last compared against the other replicas.
    checked_slot: Option<u64>,
}

pub struct World {
    cfg: SimConfig,
    seed: u64,
    rng: ChaCha8Rng,
    /// Draws for [`CARRY_SYNC_PROB`] and `SimConfig::crash_before_sync_prob` only, so
    /// they leave the schedule `rng` draws as it was until such a crash happens.
    carry_rng: ChaCha8Rng,
    cluster: ClusterConfig,
    replicas: Vec<Replica>,
    clients: Vec<SimClient>,
    /// Index of the auditor client (set-up and final reads).
    auditor: usize,
    auditor_queue: Vec<Plan>,
    history: History,
    queue: BTreeMap<(u64, u64), Event>,
    now_ms: u64,
    seq: u64,
    phase: Phase,
    network: NetworkFaults,
    partition: Partition,
    partition_generation: u64,
    next_value: u64,
    timeout_tokens: u64,
    /// Simulated time 0 on the lease caches' clock.
    epoch: std::time::Instant,
    /// Policy state after each executed slot, as first seen (agreement).
    decided: BTreeMap<u64, (usize, PolicyState)>,
    hasher: DefaultHasher,
    stats: Stats,
    violation: Option<Violation>,
    trace: Vec<String>,
}

impl World {
    pub fn new(cfg: SimConfig, seed: u64) -> Result<World, String> {
        let mut cluster =
            ClusterConfig::new(cfg.mode, cfg.m_r, cfg.f).map_err(|e| e.to_string())?;
        cluster.faults = cfg.bugs.clone();
        if !cfg.leases {
            cluster.timing.lease_ms = 0;
        }
        if let Some(ms) = cfg.ack_window_ms {
            cluster.timing.ack_window_ms = ms;
        }
        if let (true, Some(ms)) = (cfg.leases, cfg.lease_ms) {
            cluster.timing.lease_ms = ms;
        }
        let n = cluster.n as usize;
        let replicas = (0..n)
            .map(|_| Replica {
                node: None,
                incarnation: 0,
                store: SealedStore::new(),
                deferred: Vec::new(),
                sync_due: false,
                rolled_back: false,
                started_at_ms: 0,
                timers: BTreeMap::new(),
                checked_slot: None,
            })
            .collect();
        let mut clients = Vec::new();
        for c in 0..cfg.clients {
            let mut client =
                SimClient::new(tenant_of_client(c, cfg.clients), c % n, cfg.ops_per_client);
            if cfg.leases {
                client.holder = c as u64 + 1;
            }
            clients.push(client);
        }
        let auditor = clients.len();
        clients.push(SimClient::new(tenant(0), 0, 0));
        Ok(World {
            cfg,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            carry_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ca77),
            cluster,
            replicas,
            clients,
            auditor,
            auditor_queue: Vec::new(),
            history: History::default(),
            queue: BTreeMap::new(),
            now_ms: 0,
            seq: 0,
            phase: Phase::Setup,
            network: NetworkFaults::calm(),
            partition: Partition::healed(),
            partition_generation: 0,
            next_value: 1,
            timeout_tokens: 0,
            epoch: std::time::Instant::now(),
            decided: BTreeMap::new(),
            hasher: DefaultHasher::new(),
            stats: Stats::default(),
            violation: None,
            trace: Vec::new(),
        })
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Run all phases and the final checks.
    pub fn run(mut self) -> (Outcome, World) {
        self.run_phases();
        if self.violation.is_none() {
            self.final_checks();
        }
        self.stats.end_ms = self.now_ms;
        let outcome = Outcome {
            seed: self.seed,
            trace_hash: self.hasher.finish(),
            violation: self.violation.clone(),
            stats: self.stats.clone(),
        };
        (outcome, self)
    }

    fn run_phases(&mut self) {
        let n = self.replicas.len();
        for r in 0..n {
            self.start_replica(r, DurableState::default());
        }
        // Phase 1: set-up.
        self.auditor_queue = vec![
            Plan::Change(PolicyOp::Grant {
                tenant: tenant(1),
                access: metadata_client::wire::Access::ReadWrite,
            }),
            Plan::Change(PolicyOp::CreateShare),
        ];
        self.schedule(
            0,
            Event::ClientNext {
                client: self.auditor,
            },
        );
        let deadline = self.now_ms + self.cfg.liveness_deadline_ms;
        if !self.run_until(deadline, |w| w.auditor_idle()) {
            self.fail_liveness("set-up (create share, grant) did not complete on a calm network");
            return;
        }

        // Phase 2: faults.
        self.phase = Phase::Faults;
        self.network = NetworkFaults::hostile();
        let fault_end = self.now_ms + self.cfg.fault_phase_ms;
        for c in 0..self.cfg.clients {
            let think = self.rng.random_range(0..20);
            self.schedule(think, Event::ClientNext { client: c });
        }
        let first_fault_ms = self.rng.random_range(10..100);
        self.schedule(first_fault_ms, Event::FaultTick);
        self.run_until(fault_end, |_| false);
        if self.violation.is_some() {
            return;
        }

        // Phase 3: heal. Calm network, everyone back with its latest state.
        self.phase = Phase::Heal;
        self.network = NetworkFaults::calm();
        self.partition = Partition::healed();
        self.partition_generation += 1;
        for r in 0..n {
            if self.replicas[r].node.is_none() {
                self.restart_latest(r);
            }
        }
        let deadline = self.now_ms + self.cfg.liveness_deadline_ms;
        if !self.run_until(deadline, |w| w.all_recovered()) {
            let stuck: Vec<usize> = (0..n)
                .filter(|&r| !w_recovered(&w_node(&self.replicas[r])))
                .collect();
            self.fail_liveness(&format!(
                "replicas {stuck:?} still suspicious {} ms after healing",
                self.cfg.liveness_deadline_ms
            ));
            return;
        }

        // Phase 4: liveness with up to F replicas unreachable.
        self.phase = Phase::Liveness;
        let unreachable = self.rng.random_range(0..=self.cfg.f as usize);
        let mut cut = BTreeSet::new();
        while cut.len() < unreachable {
            cut.insert(Endpoint::Replica(self.rng.random_range(0..n)));
        }
        self.trace_line(|| format!("liveness phase: unreachable {cut:?}"));
        self.partition = Partition::isolate(cut);
        for c in 0..self.cfg.clients {
            self.clients[c].remaining = 0;
        }
        let deadline = self.now_ms + self.cfg.liveness_deadline_ms;
        if !self.run_until(deadline, |w| w.clients.iter().all(|c| c.waiting.is_none())) {
            self.fail_liveness_pending("operations pending after faults stopped");
            return;
        }
        // Final reads: durability and freshness after healing.
        self.auditor_queue = (0..self.cfg.keys)
            .rev()
            .map(|k| Plan::Read(key(k)))
            .collect();
        self.auditor_queue.insert(0, Plan::ReadPolicy);
        self.schedule(
            0,
            Event::ClientNext {
                client: self.auditor,
            },
        );
        let deadline = self.now_ms + self.cfg.liveness_deadline_ms;
        if !self.run_until(deadline, |w| w.auditor_idle()) {
            self.fail_liveness_pending("final reads did not complete");
        }
    }

    fn auditor_idle(&self) -> bool {
        self.auditor_queue.is_empty() && self.clients[self.auditor].waiting.is_none()
    }

    fn all_recovered(&self) -> bool {
        self.replicas.iter().all(|r| w_recovered(&w_node(r)))
    }

    /// Process events until `done` holds (true) or time passes `deadline_ms`
    /// or a violation is found (false).
    fn run_until(&mut self, deadline_ms: u64, done: impl Fn(&World) -> bool) -> bool {
        loop {
            if self.violation.is_some() {
                return false;
            }
            if done(self) {
                return true;
            }
            let Some((&(at, _), _)) = self.queue.first_key_value() else {
                return done(self);
            };
            if at > deadline_ms {
                self.now_ms = deadline_ms;
                return done(self);
            }
            let Some(((at, _), event)) = self.queue.pop_first() else {
                return false;
            };
            self.now_ms = at;
            self.seq += 1;
            self.stats.events += 1;
            self.handle(event);
        }
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now_ms + after_ms, self.seq), event);
    }

    fn trace_line(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let l = line();
            self.trace.push(format!("{:>7} ms  {l}", self.now_ms));
        }
    }

    fn handle(&mut self, event: Event) {
        // The trace hash covers every event with its full contents, so any
        // divergence between two runs of one seed changes it.
        self.now_ms.hash(&mut self.hasher);
        format!("{event:?}").hash(&mut self.hasher);
        match event {
            Event::Deliver { from, to, payload } => self.deliver(from, to, payload),
            Event::Timer {
                replica,
                incarnation,
                generation,
                timer,
            } => {
                let rep = &self.replicas[replica];
                let latest = rep.timers.get(&timer) == Some(&generation);
                if rep.incarnation == incarnation && rep.node.is_some() && latest {
                    let now = self.now_ms;
                    let cmds = self.step_node(replica, |node| node.on_timeout(now, timer));
                    self.execute(replica, cmds);
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientTimeout { client, token } => self.client_timeout(client, token),
            Event::FaultTick => self.fault_tick(),
            Event::Restart { replica, latest } => {
                if self.replicas[replica].node.is_none() {
                    if latest {
                        self.restart_latest(replica);
                    } else {
                        self.restart_with_choice(replica);
                    }
                }
            }
            Event::HealPartition { generation } => {
                if generation == self.partition_generation && self.phase == Phase::Faults {
                    self.partition = Partition::healed();
                    self.trace_line(|| "partition healed".into());
                }
            }
        }
    }

    // ---------------------------------------------------------------- replicas

    fn replica_id(&self, r: usize) -> enclave_replica::core::ReplicaId {
        self.cluster.replicas[r]
    }

    fn replica_index(&self, id: enclave_replica::core::ReplicaId) -> Option<usize> {
        self.cluster.replicas.iter().position(|&x| x == id)
    }

    fn start_replica(&mut self, r: usize, recovered: DurableState) {
        let node_seed = self.rng.random::<u64>();
        let id = self.replica_id(r);
        let now = self.now_ms;
        let cluster = self.cluster.clone();
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Node::start(cluster, id, recovered, now, node_seed)
        }));
        match started {
            Ok((node, cmds)) => {
                self.replicas[r].node = Some(node);
                self.replicas[r].started_at_ms = now;
                self.replicas[r].timers.clear();
                self.replicas[r].checked_slot = None;
                self.execute(r, cmds);
            }
            Err(panic) => self.fail_panic(r, "start", panic),
        }
    }

    /// Feed one input to a live replica, catching a panic as a violation.
    fn step_node(&mut self, r: usize, f: impl FnOnce(&mut Node) -> Vec<Command>) -> Vec<Command> {
        let Some(node) = self.replicas[r].node.as_mut() else {
            return Vec::new();
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(node))) {
            Ok(cmds) => cmds,
            Err(panic) => {
                self.fail_panic(r, "step", panic);
                Vec::new()
            }
        }
    }

    /// Carry out a replica's commands in order. In the fault phase the
    /// replica may crash between any two of them: what was persisted stays,
    /// what was not yet sent is lost.
    fn execute(&mut self, r: usize, cmds: Vec<Command>) {
        for cmd in cmds {
            if self.replicas[r].node.is_none() {
                return;
            }
            if self.phase == Phase::Faults && self.rng.random_bool(CRASH_BETWEEN_COMMANDS_PROB) {
                self.crash(r, "between commands");
                return;
            }
            match cmd {
                Command::Persist(records) => {
                    let replica = &mut self.replicas[r];
                    replica.sync_due |= records.iter().any(Record::needs_sync);
                    replica.deferred.extend(records);
                }
                Command::Send { to, msg } => {
                    let early = msg.may_precede_sync()
                        || (self.cfg.bugs.acks_precede_sync
                            && matches!(msg, PeerMessage::WriteReply { .. }));
                    if !early {
                        self.sync(r);
                    }
                    let Some(to_idx) = self.replica_index(to) else {
                        self.fail(
                            Property::BadResponse,
                            format!("replica {r} sent to unknown replica {to:?}"),
                        );
                        return;
                    };
                    self.send(
                        Endpoint::Replica(r),
                        Endpoint::Replica(to_idx),
                        Payload::Peer(msg),
                    );
                }
                Command::Reply { client, frame } => {
                    self.sync(r);
                    let c = client as usize;
                    if c >= self.clients.len() {
                        self.fail(
                            Property::BadResponse,
                            format!("replica {r} replied to unknown client {client:?}"),
                        );
                        return;
                    }
                    self.send(
                        Endpoint::Replica(r),
                        Endpoint::Client(c),
                        Payload::Reply(frame),
                    );
                }
                Command::SetTimer { timer, after_ms } => {
                    self.sync(r);
                    let incarnation = self.replicas[r].incarnation;
                    self.seq += 1;
                    let generation = self.seq;
                    self.replicas[r].timers.insert(timer.clone(), generation);
                    self.schedule(
                        after_ms,
                        Event::Timer {
                            replica: r,
                            incarnation,
                            generation,
                            timer,
                        },
                    );
                }
            }
        }
        if !self.carry_rng.random_bool(CARRY_SYNC_PROB) {
            self.sync(r);
        } else if self.replicas[r].sync_due
            && self.phase == Phase::Faults
            && self.carry_rng.random_bool(self.cfg.crash_before_sync_prob)
        {
            // What the requests that already left were sent without.
            self.crash(r, "before its batch's sync");
            return;
        }
        self.after_replica_step(r);
    }

    /// The runtime's sync: records waiting for one reach the sealed store.
    fn sync(&mut self, r: usize) {
        let replica = &mut self.replicas[r];
        if replica.sync_due {
            replica.sync_due = false;
            let batch = std::mem::take(&mut replica.deferred);
            replica.store.persist(&batch);
        }
    }

    /// Checks and bookkeeping after a replica acted: a rolled-back replica
    /// that reports itself recovered no longer counts against `M_R`, and the
    /// policy state it reached by executing slots `1..=executed` must equal
    /// every other replica's state at that slot (agreement of executed logs:
    /// equal states after equal prefixes, whichever way a replica got there —
    /// executing, catching up, or installing a snapshot during recovery).
    fn after_replica_step(&mut self, r: usize) {
        let Some(status) = self.replicas[r].node.as_ref().map(|n| n.status()) else {
            return;
        };
        let recovered = match self.cfg.mode {
            Mode::Rr => !status.suspicious,
            // CFT ignores suspicion, so nothing says when a rolled-back replica
            // has caught up; count it for the same quarantine RR applies
            // (REC-0) so both modes see the same rate of rollbacks.
            Mode::Cft => {
                self.now_ms >= self.replicas[r].started_at_ms + self.cluster.timing.ack_window_ms
            }
        };
        if self.replicas[r].rolled_back && recovered {
            self.replicas[r].rolled_back = false;
            self.trace_line(|| format!("replica {r} recovered from rollback"));
        }
        let Some(node) = self.replicas[r].node.as_ref() else {
            return;
        };
        let executed = node.durable().executed;
        if executed == 0 || self.replicas[r].checked_slot == Some(executed) {
            return;
        }
        let policy = &node.durable().policy;
        let disagreement = match self.decided.get(&executed) {
            Some((first, seen)) => (seen != policy).then(|| {
                format!("after slot {executed}: replica {first} has policy state {seen:?}, replica {r} has {policy:?}")
            }),
            None => {
                self.decided.insert(executed, (r, policy.clone()));
                None
            }
        };
        self.replicas[r].checked_slot = Some(executed);
        if let Some(detail) = disagreement {
            self.fail(Property::LogAgreement, detail);
        }
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, payload: Payload) {
        self.stats.messages_sent += 1;
        let mut delays = if from == to {
            vec![0]
        } else {
            self.network.deliveries(&mut self.rng)
        };
        // Clients reach their proxy over a TLS stream: the adversary can cut
        // or stall it but not replay a frame inside it (TLS record sequence
        // numbers), so client traffic is never duplicated. Replica-to-replica
        // messages are: the cores retransmit, and a reconnecting runtime may
        // resend.
        if matches!(from, Endpoint::Client(_)) || matches!(to, Endpoint::Client(_)) {
            delays.truncate(1);
        }
        if delays.is_empty() {
            self.stats.messages_dropped += 1;
        }
        for d in delays {
            self.schedule(
                d,
                Event::Deliver {
                    from,
                    to,
                    payload: payload.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, from: Endpoint, to: Endpoint, payload: Payload) {
        if !self.partition.connected(from, to) {
            self.stats.messages_dropped += 1;
            return;
        }
        if self.cfg.trace_messages {
            let mut line = format!("{from:?} -> {to:?}: {payload:?}");
            line.truncate(400);
            self.trace_line(|| line);
        }
        match (to, payload) {
            (Endpoint::Replica(r), Payload::Peer(msg)) => {
                let Endpoint::Replica(from_r) = from else {
                    return;
                };
                let from_id = self.replica_id(from_r);
                let now = self.now_ms;
                let cmds = self.step_node(r, |node| node.on_message(now, from_id, msg));
                self.execute(r, cmds);
            }
            (
                Endpoint::Replica(r),
                Payload::Request {
                    client,
                    tenant,
                    frame,
                },
            ) => {
                let now = self.now_ms;
                let cmds = self.step_node(r, |node| {
                    node.on_client_request(now, client as _, tenant, frame)
                });
                self.execute(r, cmds);
            }
            (Endpoint::Client(c), Payload::Reply(frame)) => self.client_reply(c, frame),
            (to, payload) => {
                self.fail(
                    Property::BadResponse,
                    format!("misrouted {payload:?} to {to:?}"),
                );
            }
        }
    }

    fn crash(&mut self, r: usize, why: &str) {
        let down_ms = self.rng.random_range(20..600);
        self.crash_for(r, why, down_ms, false);
    }

    /// Crashes replica `r` (if up) and restarts it `down_ms` later, with its latest
    /// sealed state if `latest`, else with one `restart_with_choice` picks.
    fn crash_for(&mut self, r: usize, why: &str, down_ms: u64, latest: bool) {
        if self.replicas[r].node.take().is_some() {
            self.replicas[r].deferred.clear();
            if std::mem::take(&mut self.replicas[r].sync_due) {
                self.stats.crashes_unsynced += 1;
            }
            self.replicas[r].incarnation += 1;
            self.stats.crashes += 1;
            self.trace_line(|| format!("replica {r} crashed ({why}), down {down_ms} ms"));
            self.schedule(down_ms, Event::Restart { replica: r, latest });
        }
    }

    /// A restart burst: `W_Q` of the replicas that are up crash at once and come back
    /// with their latest sealed state within 150 ms (a power blip). Their in-memory
    /// state — read-lease grants among it — is gone while the leases they granted still
    /// run, so once they have recovered a write can reach a write quorum of them inside
    /// a lease: the case LEASE-R3 (hold every write for one lease after start) exists
    /// for, which single random crashes almost never build.
    fn restart_burst(&mut self) {
        let n = self.replicas.len();
        let w_q = Quorums::new(self.cluster.mode, self.cluster.m_r, self.cluster.f)
            .map_or(n / 2 + 1, |q| q.write() as usize);
        let mut up: Vec<usize> = (0..n)
            .filter(|r| self.replicas[*r].node.is_some())
            .collect();
        self.stats.restart_bursts += 1;
        for _ in 0..w_q.min(up.len()) {
            let r = up.swap_remove(self.rng.random_range(0..up.len()));
            let down_ms = self.rng.random_range(10..150);
            self.crash_for(r, "restart burst", down_ms, true);
        }
    }

    fn restart_latest(&mut self, r: usize) {
        let latest = self.replicas[r].store.latest();
        let records = self.replicas[r].store.restart_from(latest);
        self.stats.restarts_latest += 1;
        self.trace_line(|| {
            format!(
                "replica {r} restarts with its latest state ({} records)",
                records.len()
            )
        });
        self.start_replica(r, rebuild(&records));
    }

    /// Restart with the latest state, or — within the `M_R` bound — with any
    /// earlier state it ever sealed, or with nothing.
    fn restart_with_choice(&mut self, r: usize) {
        let others_rolled_back = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, x)| *i != r && x.rolled_back)
            .count() as u32;
        let may_roll_back = self.cfg.rollbacks
            && self.phase == Phase::Faults
            && others_rolled_back < self.cfg.m_r
            && self.replicas[r].store.ever_persisted();
        if !may_roll_back || self.rng.random_bool(0.4) {
            self.restart_latest(r);
            return;
        }
        let points = self.replicas[r].store.points().to_vec();
        let latest = self.replicas[r].store.latest();
        let older: Vec<_> = points.into_iter().filter(|p| *p != latest).collect();
        // Favour empty state now and then (a replica whose disk was lost).
        let point = if self.rng.random_bool(0.2) {
            older[0]
        } else {
            older[self.rng.random_range(0..older.len())]
        };
        let records = self.replicas[r].store.restart_from(point);
        if records.is_empty() {
            self.stats.restarts_empty += 1;
        } else {
            self.stats.restarts_rolled_back += 1;
        }
        self.replicas[r].rolled_back = true;
        self.trace_line(|| {
            format!(
                "replica {r} restarts ROLLED BACK to {} records (point {point:?})",
                records.len()
            )
        });
        self.start_replica(r, rebuild(&records));
    }

    fn fault_tick(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let n = self.replicas.len();
        match self.rng.random_range(0..100u32) {
            0..35 => {
                let r = self.rng.random_range(0..n);
                let up = self.replicas.iter().filter(|x| x.node.is_some()).count();
                // Keep at least one replica up so the run goes somewhere.
                if up > 1 {
                    self.crash(r, "fault injector");
                }
            }
            35..38 if self.cfg.restart_bursts => self.restart_burst(),
            35..55 => {
                let size = self.rng.random_range(1..n);
                let mut cut = BTreeSet::new();
                while cut.len() < size {
                    cut.insert(Endpoint::Replica(self.rng.random_range(0..n)));
                }
                for c in 0..self.clients.len() {
                    if self.rng.random_bool(0.3) {
                        cut.insert(Endpoint::Client(c));
                    }
                }
                self.stats.partitions += 1;
                self.partition_generation += 1;
                self.trace_line(|| format!("partition: {cut:?} cut off"));
                self.partition = Partition::isolate(cut);
                let heal_after = self.rng.random_range(50..500);
                let generation = self.partition_generation;
                self.schedule(heal_after, Event::HealPartition { generation });
            }
            _ => {}
        }
        let next = self.rng.random_range(50..400);
        self.schedule(next, Event::FaultTick);
    }

    // ----------------------------------------------------------------- clients

    fn client_next(&mut self, c: usize) {
        if self.clients[c].waiting.is_some() {
            return;
        }
        let plan = if c == self.auditor {
            match self.auditor_queue.pop() {
                Some(p) => p,
                None => return,
            }
        } else {
            if self.phase != Phase::Faults || self.clients[c].remaining == 0 {
                return;
            }
            self.clients[c].remaining -= 1;
            match self.clients[c].acquire_next.take() {
                Some(k) => Plan::Change(PolicyOp::AcquireWriter { key: k }),
                None => {
                    let is_owner = self.clients[c].tenant == tenant(0);
                    next_plan(&mut self.rng, is_owner, self.cfg.keys)
                }
            }
        };
        let logical = self.clients[c].logical_ops;
        self.clients[c].logical_ops += 1;
        let idempotency = SimClient::idempotency(c, logical, 0);
        self.clients[c].waiting = Some(Waiting {
            plan,
            record: usize::MAX,
            records: Vec::new(),
            attempt: 0,
            request_id: 0,
            idempotency,
            timeout_token: 0,
            lease_ticket: None,
            write_ticket: None,
        });
        if self.answer_from_lease(c) {
            return;
        }
        self.send_attempt(c, true);
    }

    /// Simulated time as the lease cache's clock.
    fn instant(&self) -> std::time::Instant {
        self.epoch + std::time::Duration::from_millis(self.now_ms)
    }

    /// A read the client's lease cache can answer completes at once, without
    /// a message; it enters the history like any other read.
    fn answer_from_lease(&mut self, c: usize) -> bool {
        let Some(Plan::Read(key)) = self.clients[c].waiting.as_ref().map(|w| w.plan.clone()) else {
            return false;
        };
        let now = self.instant();
        let Some(answer) = self.clients[c].leases.get(now, SHARE, &key) else {
            return false;
        };
        let response = match answer {
            Leased::Value(value, version) => Response::Value { value, version },
            Leased::NotFound => Response::Error(ErrorKind::NotFound),
        };
        let Some(w) = self.clients[c].waiting.take() else {
            return false;
        };
        self.stats.ops_called += 1;
        self.seq += 1;
        let record = self.history.call(
            c,
            w.plan.request(None),
            None,
            w.idempotency,
            self.seq,
            self.now_ms,
        );
        self.seq += 1;
        self.history
            .complete(record, response.clone(), self.seq, self.now_ms);
        self.stats.ops_completed += 1;
        self.stats.lease_hits += 1;
        if matches!(response, Response::Value { .. }) {
            self.stats.reads_with_value += 1;
        }
        if self.cfg.trace {
            let line = format!("client {c} (lease): {}", self.history.describe(record));
            self.trace_line(|| line);
        }
        self.online_checks(record);
        let think = self.rng.random_range(0..30);
        self.schedule(think, Event::ClientNext { client: c });
        true
    }

    /// Send the current op (again). A register op gets a new record (and a
    /// new value) per attempt; a policy op keeps its record and token.
    fn send_attempt(&mut self, c: usize, first: bool) {
        let Some(mut w) = self.clients[c].waiting.take() else {
            return;
        };
        if !first {
            w.attempt += 1;
            let n = self.replicas.len();
            self.clients[c].proxy =
                (self.clients[c].proxy + 1 + self.rng.random_range(0..n - 1)) % n;
        }
        let request_id = self.clients[c].next_request_id;
        self.clients[c].next_request_id += 1;
        let value_id = matches!(w.plan, Plan::Write(_)).then(|| {
            self.next_value += 1;
            self.next_value
        });
        let request = w.plan.request(value_id.map(encode_value));
        if w.plan.is_register() || first {
            if w.plan.is_register() {
                w.idempotency = SimClient::idempotency(c, self.clients[c].logical_ops, w.attempt);
            }
            self.stats.ops_called += 1;
            w.record = self.history.call(
                c,
                request.clone(),
                value_id,
                w.idempotency,
                self.seq,
                self.now_ms,
            );
            w.records.push(w.record);
        }
        self.clients[c]
            .records_by_request
            .insert(request_id, w.record);
        w.request_id = request_id;
        self.timeout_tokens += 1;
        w.timeout_token = self.timeout_tokens;
        // Leases as the real session asks for them: a read asks (unless one
        // of this client's writes of the key is in flight), and the cache
        // notes where it started on the first attempt; a write names its
        // holder and makes the cache forget the key.
        let holder = self.clients[c].holder;
        let lease = match (&w.plan, holder) {
            (_, 0) => LeaseAsk::NONE,
            (Plan::Read(key), _) => {
                let now = self.instant();
                let cache = &self.clients[c].leases;
                if first {
                    w.lease_ticket = Some(cache.read_started(key, now));
                }
                let ms = u32::try_from(self.cluster.timing.lease_ms).unwrap_or(u32::MAX);
                if cache.may_lease(key) {
                    LeaseAsk { holder, ms }
                } else {
                    LeaseAsk::NONE
                }
            }
            (Plan::Write(key) | Plan::Delete(key), _) => {
                if first {
                    let now = self.instant();
                    w.write_ticket = Some(self.clients[c].leases.write_started(*key, now));
                }
                // A write of a value alone in flight asks to keep what it
                // writes (LEASE-W1, C4), as the real session does.
                let alone = w.write_ticket.is_some_and(|t| t.may_lease());
                let ms = match &w.plan {
                    Plan::Write(_) if alone && self.cfg.write_leases => {
                        u32::try_from(self.cluster.timing.lease_ms).unwrap_or(u32::MAX)
                    }
                    _ => 0,
                };
                LeaseAsk { holder, ms }
            }
            _ => LeaseAsk::NONE,
        };
        let frame = RequestFrame {
            request_id,
            idempotency: w.idempotency,
            request,
            lease,
        };
        let proxy = self.clients[c].proxy;
        let tenant = self.clients[c].tenant.clone();
        let token = w.timeout_token;
        self.clients[c].waiting = Some(w);
        self.send(
            Endpoint::Client(c),
            Endpoint::Replica(proxy),
            Payload::Request {
                client: c,
                tenant,
                frame,
            },
        );
        let timeout = self.cfg.client_timeout_ms
            + self.rng.random_range(0..self.cfg.client_timeout_ms / 2 + 1);
        self.schedule(timeout, Event::ClientTimeout { client: c, token });
    }

    fn client_timeout(&mut self, c: usize, token: u64) {
        let live = self.clients[c]
            .waiting
            .as_ref()
            .is_some_and(|w| w.timeout_token == token);
        if live {
            self.trace_line(|| format!("client {c} timed out; retrying at another proxy"));
            self.send_attempt(c, false);
        }
    }

    fn client_reply(&mut self, c: usize, frame: ResponseFrame) {
        let Some(&record) = self.clients[c].records_by_request.get(&frame.request_id) else {
            self.fail(
                Property::BadResponse,
                format!(
                    "client {c} got a reply to request {} it never sent",
                    frame.request_id
                ),
            );
            return;
        };
        if self.history.ops[record].ret_seq.is_some() {
            return; // a duplicate (or a second attempt's) answer to a finished op
        }
        let is_current = self.clients[c]
            .waiting
            .as_ref()
            .is_some_and(|w| w.records.contains(&record));
        let is_policy_op = !matches!(
            self.history.ops[record].request,
            Request::Read { .. } | Request::Write { .. } | Request::Delete { .. }
        );
        let unavailable = frame.response == Response::Error(ErrorKind::Unavailable);
        if unavailable && is_policy_op {
            // The change may still be carried out later; keep the record open
            // and let the client retry under the same token.
            if is_current {
                self.send_attempt(c, false);
            }
            return;
        }
        self.history
            .complete(record, frame.response.clone(), self.seq, self.now_ms);
        self.stats.ops_completed += 1;
        if self.cfg.trace {
            let line = format!("client {c}: {}", self.history.describe(record));
            self.trace_line(|| line);
        }
        self.online_checks(record);
        if !is_current {
            return;
        }
        if unavailable {
            self.send_attempt(c, false);
            return;
        }
        match &frame.response {
            Response::Value { .. } => self.stats.reads_with_value += 1,
            Response::Written { .. } => self.stats.writes_ok += 1,
            Response::PolicyChanged { .. } => self.stats.policy_changes_ok += 1,
            Response::Error(ErrorKind::NotWriter) => {
                if let Request::Write { key, .. } | Request::Delete { key, .. } =
                    &self.history.ops[record].request
                {
                    self.clients[c].acquire_next = Some(*key);
                }
            }
            _ => {}
        }
        if let Some(w) = self.clients[c].waiting.take() {
            self.lease_op_done(c, &w, &frame, record);
        }
        let think = self.rng.random_range(0..30);
        self.schedule(think, Event::ClientNext { client: c });
    }

    /// The client's logical op finished with `frame`, the answer to the attempt
    /// recorded as `record` (not necessarily the latest attempt: a slow one may
    /// answer first): keep a leased read's answer, or end a write in the lease
    /// cache, keeping what it wrote if the answer brought a lease (LEASE-C2, C4).
    fn lease_op_done(&mut self, c: usize, w: &Waiting, frame: &ResponseFrame, record: usize) {
        if self.clients[c].holder == 0 {
            return;
        }
        match &w.plan {
            Plan::Read(key) => {
                let answer = match &frame.response {
                    Response::Value { value, version } => Leased::Value(value.clone(), *version),
                    Response::Error(ErrorKind::NotFound) => Leased::NotFound,
                    _ => return,
                };
                if let Some(ticket) = w.lease_ticket {
                    self.clients[c]
                        .leases
                        .read_done(ticket, SHARE, *key, answer, frame.lease_ms);
                }
                // A lease was just granted: now and then crash a write quorum at once,
                // the case LEASE-R3 is for (see `restart_burst`).
                if self.cfg.restart_bursts
                    && frame.lease_ms > 0
                    && self.phase == Phase::Faults
                    && self.rng.random_bool(BURST_AFTER_LEASE_PROB)
                {
                    self.restart_burst();
                }
            }
            Plan::Write(key) | Plan::Delete(key) => {
                let written = match (&frame.response, &self.history.ops[record].request) {
                    (Response::Written { version }, Request::Write { value, .. }) => {
                        Some(Leased::Value(value.clone(), *version))
                    }
                    _ => None,
                };
                match (written, w.write_ticket) {
                    (Some(answer), Some(ticket)) => self.clients[c].leases.write_done(
                        ticket,
                        SHARE,
                        *key,
                        answer,
                        frame.lease_ms,
                    ),
                    _ => self.clients[c].leases.write_ended(*key),
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ checks

    /// Checked as each operation returns: the answer fits the request, and a
    /// read is not older than any write that completed before it started.
    fn online_checks(&mut self, record: usize) {
        let rec = &self.history.ops[record];
        if let super::history::RegOutcome::Malformed(why) = History::reg_outcome(rec)
            && matches!(
                rec.request,
                Request::Read { .. } | Request::Write { .. } | Request::Delete { .. }
            )
        {
            let detail = format!("{why}\n  {}", self.history.describe(record));
            self.fail(Property::BadResponse, detail);
            return;
        }
        if let (Request::Read { key, .. }, Some(Response::Value { version, .. })) =
            (&rec.request, &rec.response)
            && let Some((latest, by)) = self.history.latest_completed_version(key, rec.call_seq)
            && *version < latest
        {
            let detail = format!(
                "read returned version {version:?} but version {latest:?} was written before it started\n  read:  {}\n  write: {}",
                self.history.describe(record),
                self.history.describe(by)
            );
            self.fail(Property::StaleRead, detail);
        }
    }

    fn final_checks(&mut self) {
        // Durability: the final read of each key is at least as new as every
        // write that completed before it.
        let final_reads: Vec<usize> = self
            .history
            .ops
            .iter()
            .enumerate()
            .filter(|(_, r)| r.client == self.auditor && matches!(r.request, Request::Read { .. }))
            .map(|(i, _)| i)
            .collect();
        for i in final_reads {
            let rec = &self.history.ops[i];
            let Request::Read { key, .. } = &rec.request else {
                continue;
            };
            let Some((latest, by)) = self.history.latest_completed_version(key, rec.call_seq)
            else {
                continue;
            };
            let lost =
                match &rec.response {
                    Some(Response::Value { version, .. }) => *version < latest,
                    Some(Response::Error(ErrorKind::NotFound)) => {
                        // Fine only if a delete could explain it.
                        !self.history.ops.iter().any(
                            |o| matches!(o.request, Request::Delete { key: k, .. } if k == *key),
                        )
                    }
                    _ => false,
                };
            if lost {
                let detail = format!(
                    "after healing, {} does not reflect completed {}",
                    self.history.describe(i),
                    self.history.describe(by)
                );
                self.fail(Property::Durability, detail);
                return;
            }
        }

        // Linearizability of every key.
        let per_key = match self.history.register_histories() {
            Ok(h) => h,
            Err(why) => {
                self.fail(Property::BadResponse, why);
                return;
            }
        };
        for (key, ops) in per_key {
            let (timed, records): (Vec<Timed<_>>, Vec<usize>) = ops.into_iter().unzip();
            let prepared = prepare(&timed);
            // `prepare` drops ops; map reports back through (call, ret) pairs.
            if let Err(e) = check(&RegisterSpec::STRICT, &prepared) {
                let values_only = match check(&RegisterSpec::VALUES_ONLY, &prepared) {
                    Ok(()) => {
                        "linearizable if versions are ignored: some write's value is reported under two versions"
                    }
                    Err(_) => "not linearizable even ignoring versions: a read saw the wrong value",
                };
                let mut what = format!("key {key} ({values_only})");
                let split = values_under_two_versions(&prepared);
                if !split.is_empty() {
                    what.push_str(&format!(
                        "; values seen under more than one version: {split:?}"
                    ));
                }
                let detail = self.describe_lin_error(&what, &e, &prepared, &timed, &records);
                self.fail(Property::RegisterLinearizability, detail);
                return;
            }
        }

        // Linearizability of the share's policy operations.
        let mut ops: Vec<Timed<PolicyHistOp>> = Vec::new();
        let mut records = Vec::new();
        for (share, idxs) in self.history.policy_ops() {
            debug_assert_eq!(share, SHARE);
            for i in idxs {
                let rec = &self.history.ops[i];
                let requester = self.clients[rec.client].tenant.clone();
                let op = match &rec.request {
                    Request::ChangePolicy { op, .. } => {
                        let token = self.policy_token(i);
                        let result = rec
                            .response
                            .clone()
                            .filter(|r| *r != Response::Error(ErrorKind::Unavailable));
                        let ret = result.as_ref().and(rec.ret_seq);
                        ops.push(Timed {
                            op: PolicyHistOp::Change {
                                requester,
                                token,
                                op: op.clone(),
                                result,
                            },
                            call: rec.call_seq,
                            ret,
                        });
                        records.push(i);
                        continue;
                    }
                    Request::ReadPolicy { .. } => match &rec.response {
                        Some(resp) if read_is_informative(resp) => PolicyHistOp::Read {
                            result: resp.clone(),
                        },
                        _ => continue,
                    },
                    _ => continue,
                };
                ops.push(Timed {
                    op,
                    call: rec.call_seq,
                    ret: rec.ret_seq,
                });
                records.push(i);
            }
        }
        if let Err(e) = check(&PolicySpec { share: SHARE }, &ops) {
            let detail = self.describe_lin_error("policy of the share", &e, &ops, &ops, &records);
            self.fail(Property::PolicyLinearizability, detail);
        }
    }

    /// The idempotency token a policy record was sent with (the same for
    /// every attempt of it).
    fn policy_token(&self, record: usize) -> [u8; 16] {
        self.history.ops[record].token
    }

    fn describe_lin_error<O: std::fmt::Debug, P>(
        &self,
        what: &str,
        e: &LinError,
        checked: &[Timed<O>],
        original: &[Timed<P>],
        records: &[usize],
    ) -> String {
        let find = |t: &Timed<O>| -> Option<usize> {
            original
                .iter()
                .position(|o| o.call == t.call)
                .map(|p| records[p])
        };
        match e {
            LinError::NotLinearizable { stuck, prefix } => {
                let mut s = format!(
                    "{what}: no linearization; stuck at\n  {}\n  after linearizing {} ops:",
                    {
                        match checked.get(*stuck).and_then(find) {
                            Some(r) => self.history.describe(r),
                            None => format!("{:?}", checked.get(*stuck).map(|t| &t.op)),
                        }
                    },
                    prefix.len()
                );
                for p in prefix.iter().rev().take(8).rev() {
                    if let Some(r) = checked.get(*p).and_then(find) {
                        s.push_str(&format!("\n    {}", self.history.describe(r)));
                    }
                }
                s
            }
            LinError::BudgetExhausted { steps } => {
                format!("{what}: checker gave up after {steps} steps")
            }
        }
    }

    // -------------------------------------------------------------- violations

    fn fail(&mut self, property: Property, detail: String) {
        if self.violation.is_none() {
            self.trace_line(|| format!("VIOLATION {property:?}: {detail}"));
            self.violation = Some(Violation {
                property,
                at_ms: self.now_ms,
                detail,
            });
        }
    }

    fn fail_liveness(&mut self, what: &str) {
        self.fail(Property::Liveness, what.to_string());
    }

    fn fail_liveness_pending(&mut self, what: &str) {
        let mut detail = format!("{what} within {} ms:", self.cfg.liveness_deadline_ms);
        for (c, client) in self.clients.iter().enumerate() {
            if let Some(w) = &client.waiting {
                detail.push_str(&format!(
                    "\n  client {c} (proxy {}): {}",
                    client.proxy,
                    self.history.describe(w.record)
                ));
            }
        }
        let status: Vec<String> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{i}:{:?}", r.node.as_ref().map(|n| n.status())))
            .collect();
        detail.push_str(&format!("\n  replicas: {}", status.join(" ")));
        self.fail(Property::Liveness, detail);
    }

    fn fail_panic(&mut self, r: usize, what: &str, panic: Box<dyn std::any::Any + Send>) {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into());
        self.replicas[r].node = None;
        self.fail(
            Property::Panic,
            format!("replica {r} panicked in {what}: {msg}"),
        );
    }
}

/// Values that a write reported, or reads returned, under different
/// versions — the signature of one write installed under two timestamps.
fn values_under_two_versions(
    ops: &[Timed<super::checker::register::RegOp>],
) -> Vec<(u64, Vec<metadata_client::wire::Version>)> {
    use super::checker::register::RegOp;
    let mut seen: BTreeMap<u64, BTreeSet<metadata_client::wire::Version>> = BTreeMap::new();
    for t in ops {
        match t.op {
            RegOp::Write {
                value,
                version: Some(v),
            }
            | RegOp::ReadValue { value, version: v } => {
                seen.entry(value).or_default().insert(v);
            }
            _ => {}
        }
    }
    seen.into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

fn rebuild(records: &[Record]) -> DurableState {
    let mut state = DurableState::default();
    for rec in records {
        state.apply(rec);
    }
    state
}

fn w_node(r: &Replica) -> Option<&Node> {
    r.node.as_ref()
}

fn w_recovered(node: &Option<&Node>) -> bool {
    node.is_some_and(|n| !n.status().suspicious)
}

/// Run one seed.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> Outcome {
    match World::new(cfg.clone(), seed) {
        Ok(world) => world.run().0,
        Err(why) => Outcome {
            seed,
            trace_hash: 0,
            violation: Some(Violation {
                property: Property::BadResponse,
                at_ms: 0,
                detail: format!("bad configuration: {why}"),
            }),
            stats: Stats::default(),
        },
    }
}
