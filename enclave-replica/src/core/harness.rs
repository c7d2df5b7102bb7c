//! A tiny in-process driver for a cluster of [`Node`]s: messages are
//! delivered in FIFO order with no latency, timers fire when the clock is
//! advanced, and every `Persist` is applied to a per-replica "sealed" copy.
//!
//! It exists for unit tests and benchmarks of the cores: happy paths, a few
//! hand-made crash/rollback scenarios, and CPU cost. It injects no network
//! faults; the randomized simulator lives in the `teemsfs-tests` package.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use metadata_client::wire::{LeaseAsk, Request, RequestFrame, Response, ResponseFrame, TenantId};

use super::{
    ClientId, ClusterConfig, Command, DurableState, Millis, Node, PeerMessage, ReplicaId, Timer,
};

/// Upper bound on events one call may process, so a protocol bug cannot hang
/// a test.
const MAX_EVENTS: usize = 1_000_000;

#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    nodes: BTreeMap<ReplicaId, Option<Node>>,
    /// What each replica's sealed store holds (applied `Persist` records).
    sealed: BTreeMap<ReplicaId, DurableState>,
    queue: VecDeque<(ReplicaId, ReplicaId, PeerMessage)>,
    /// Replicas cut off from everyone; their traffic waits in `held`.
    blocked: BTreeSet<ReplicaId>,
    /// One-way links `(from, to)` whose traffic waits in `held`.
    blocked_links: BTreeSet<(ReplicaId, ReplicaId)>,
    held: Vec<(ReplicaId, ReplicaId, PeerMessage)>,
    timers: BTreeMap<(ReplicaId, Timer), Millis>,
    replies: Vec<(ReplicaId, ClientId, ResponseFrame)>,
    now: Millis,
    seed: u64,
    restarts: u64,
    next_request: u64,
    /// Messages delivered so far.
    pub delivered: u64,
}

impl Cluster {
    /// Start every replica from the initial state at time 0.
    pub fn new(config: ClusterConfig, seed: u64) -> Cluster {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            sealed: BTreeMap::new(),
            queue: VecDeque::new(),
            blocked: BTreeSet::new(),
            blocked_links: BTreeSet::new(),
            held: Vec::new(),
            timers: BTreeMap::new(),
            replies: Vec::new(),
            now: 0,
            seed,
            restarts: 0,
            next_request: 1,
            delivered: 0,
            config: config.clone(),
        };
        for id in config.replicas.clone() {
            c.sealed.insert(id, DurableState::default());
            c.restart(id, DurableState::default());
        }
        c
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    pub fn node(&self, id: ReplicaId) -> Option<&Node> {
        self.nodes.get(&id).and_then(|n| n.as_ref())
    }

    /// The replica's sealed state (what a restart would recover).
    pub fn sealed(&self, id: ReplicaId) -> DurableState {
        self.sealed.get(&id).cloned().unwrap_or_default()
    }

    /// Stop a replica; its in-flight messages and timers are lost.
    pub fn crash(&mut self, id: ReplicaId) {
        self.nodes.insert(id, None);
        self.timers.retain(|(r, _), _| *r != id);
        self.queue.retain(|(_, to, _)| *to != id);
    }

    /// (Re)start a replica from `state` — its sealed state, an older one
    /// (rollback) or the default (lost store).
    pub fn restart(&mut self, id: ReplicaId, state: DurableState) {
        self.crash(id);
        self.restarts += 1;
        self.sealed.insert(id, state.clone());
        let seed = self.seed.wrapping_mul(31).wrapping_add(self.restarts);
        let (node, commands) = Node::start(self.config.clone(), id, state, self.now, seed);
        self.nodes.insert(id, Some(node));
        self.execute(id, commands);
    }

    fn execute(&mut self, id: ReplicaId, commands: Vec<Command>) {
        for c in commands {
            match c {
                Command::Persist(records) => {
                    let sealed = self.sealed.entry(id).or_default();
                    for r in &records {
                        sealed.apply(r);
                    }
                }
                Command::Send { to, msg } => {
                    if self.is_held(id, to) {
                        self.held.push((id, to, msg));
                    } else if self.nodes.get(&to).is_some_and(|n| n.is_some()) {
                        self.queue.push_back((id, to, msg));
                    }
                }
                Command::Reply { client, frame } => self.replies.push((id, client, frame)),
                Command::SetTimer { timer, after_ms } => {
                    self.timers.insert((id, timer), self.now + after_ms);
                }
            }
        }
    }

    fn is_held(&self, from: ReplicaId, to: ReplicaId) -> bool {
        self.blocked.contains(&from)
            || self.blocked.contains(&to)
            || self.blocked_links.contains(&(from, to))
    }

    /// Hold every message to or from `id` (a slow or partitioned replica).
    pub fn block(&mut self, id: ReplicaId) {
        self.blocked.insert(id);
    }

    /// Hold the messages `from` sends to `to` (one direction only: a slow or
    /// lossy link while everything else flows).
    pub fn block_link(&mut self, from: ReplicaId, to: ReplicaId) {
        self.blocked_links.insert((from, to));
    }

    /// Release the link `from → to`; see [`Cluster::heal`].
    pub fn heal_link(&mut self, from: ReplicaId, to: ReplicaId) {
        self.blocked_links.remove(&(from, to));
        self.release_held();
    }

    /// Release `id`: its held messages are delivered (in the order sent)
    /// unless they involve another blocked replica or link.
    pub fn heal(&mut self, id: ReplicaId) {
        self.blocked.remove(&id);
        self.release_held();
    }

    fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for (from, to, msg) in held {
            if self.is_held(from, to) {
                self.held.push((from, to, msg));
            } else if self.nodes.get(&to).is_some_and(|n| n.is_some()) {
                self.queue.push_back((from, to, msg));
            }
        }
    }

    /// Submit a request without waiting; see [`Cluster::reply_for`].
    pub fn submit(&mut self, proxy: ReplicaId, tenant: &str, request: Request) -> u64 {
        let frame = self.next_frame(request, LeaseAsk::NONE);
        let id = frame.request_id;
        let now = self.now;
        let commands = match self.nodes.get_mut(&proxy) {
            Some(Some(node)) => node.on_client_request(now, id, TenantId(tenant.into()), frame),
            _ => Vec::new(),
        };
        self.execute(proxy, commands);
        id
    }

    /// The answer to a submitted request, once it arrived.
    pub fn reply_for(&mut self, proxy: ReplicaId, request_id: u64) -> Option<Response> {
        let pos = self
            .replies
            .iter()
            .position(|(p, c, f)| *p == proxy && *c == request_id && f.request_id == request_id)?;
        Some(self.replies.remove(pos).2.response)
    }

    /// Deliver one queued message or fire the earliest timer (advancing the
    /// clock to it, but never past `limit`). Returns false when idle.
    fn step(&mut self, limit: Millis) -> bool {
        if let Some((from, to, msg)) = self.queue.pop_front() {
            self.delivered += 1;
            let now = self.now;
            let commands = match self.nodes.get_mut(&to) {
                Some(Some(node)) => node.on_message(now, from, msg),
                _ => Vec::new(),
            };
            self.execute(to, commands);
            return true;
        }
        let next = self
            .timers
            .iter()
            .min_by_key(|(k, due)| (**due, (*k).clone()))
            .map(|(k, due)| (k.clone(), *due));
        let Some(((id, timer), due)) = next else {
            return false;
        };
        if due > limit {
            return false;
        }
        self.timers.remove(&(id, timer.clone()));
        self.now = self.now.max(due);
        let now = self.now;
        let commands = match self.nodes.get_mut(&id) {
            Some(Some(node)) => node.on_timeout(now, timer),
            _ => Vec::new(),
        };
        self.execute(id, commands);
        true
    }

    /// Run events until the clock passes `now + ms`.
    pub fn run_for(&mut self, ms: Millis) {
        let limit = self.now + ms;
        for _ in 0..MAX_EVENTS {
            if !self.step(limit) {
                break;
            }
        }
        self.now = self.now.max(limit);
    }

    /// Deliver every queued message without advancing the clock.
    pub fn deliver_all(&mut self) {
        let limit = self.now;
        for _ in 0..MAX_EVENTS {
            if !self.step(limit) {
                break;
            }
        }
    }

    /// Submit a request at `proxy` and run until it is answered (or
    /// `max_ms` of simulated time pass). `idempotency` defaults to the
    /// request id.
    pub fn request(
        &mut self,
        proxy: ReplicaId,
        tenant: &str,
        request: Request,
        max_ms: Millis,
    ) -> Option<Response> {
        let frame = self.next_frame(request, LeaseAsk::NONE);
        self.request_frame(proxy, tenant, frame, max_ms)
    }

    /// A frame with the next request id, which is also its idempotency
    /// token.
    fn next_frame(&mut self, request: Request, lease: LeaseAsk) -> RequestFrame {
        let id = self.next_request;
        self.next_request += 1;
        let mut token = [0u8; 16];
        token[..8].copy_from_slice(&id.to_le_bytes());
        RequestFrame {
            request_id: id,
            idempotency: token,
            request,
            lease,
        }
    }

    /// Like [`Cluster::request`], asking for a read lease for `holder`;
    /// returns the answer and the lease granted (ms, 0 for none).
    pub fn request_leased(
        &mut self,
        proxy: ReplicaId,
        tenant: &str,
        request: Request,
        lease: LeaseAsk,
        max_ms: Millis,
    ) -> Option<(Response, u32)> {
        let frame = self.next_frame(request, lease);
        self.request_full(proxy, tenant, frame, max_ms)
            .map(|f| (f.response, f.lease_ms))
    }

    /// Like [`Cluster::request`] with a caller-built frame (to test retries).
    pub fn request_frame(
        &mut self,
        proxy: ReplicaId,
        tenant: &str,
        frame: RequestFrame,
        max_ms: Millis,
    ) -> Option<Response> {
        self.request_full(proxy, tenant, frame, max_ms)
            .map(|f| f.response)
    }

    /// Submit a frame and run until its whole response frame arrives.
    pub fn request_full(
        &mut self,
        proxy: ReplicaId,
        tenant: &str,
        frame: RequestFrame,
        max_ms: Millis,
    ) -> Option<ResponseFrame> {
        let client: ClientId = frame.request_id;
        let request_id = frame.request_id;
        let now = self.now;
        let commands = match self.nodes.get_mut(&proxy) {
            Some(Some(node)) => node.on_client_request(now, client, TenantId(tenant.into()), frame),
            _ => return None,
        };
        self.execute(proxy, commands);
        let deadline = self.now + max_ms;
        for _ in 0..MAX_EVENTS {
            if let Some(pos) = self
                .replies
                .iter()
                .position(|(p, c, f)| *p == proxy && *c == client && f.request_id == request_id)
            {
                let (_, _, frame) = self.replies.remove(pos);
                return Some(frame);
            }
            if !self.step(deadline) {
                break;
            }
        }
        None
    }
}
