//! Replica ↔ replica messages (PROTOCOLS.md names the step each one belongs
//! to). Every reply that a collector counts in a quorum carries the sender's
//! `suspicious` flag (DESIGN §4), and echoes the `attempt` it answers so the
//! collector can drop acknowledgements older than its window (PROTOCOLS.md Q-3).

use metadata_client::wire::{Key, ShareId, TenantId, Version};
use serde::{Deserialize, Serialize};

use super::policy::{EntryOutcome, PolicyEntry, PolicyState, PolicyView};
use super::state::{CoreDecodeError, RegisterEntry};
use super::{Ballot, ReplicaId, Slot};

/// Identifies one client operation at its proxy; replies go back to the
/// sender, so (proxy, op) is unique cluster-wide. Each proxy incarnation
/// counts up from its own random base (PX-1), so replies meant for an
/// operation of an earlier incarnation match nothing after a restart.
pub type OpId = u64;

/// Epochs a proxy checked before a register write (DESIGN §7, PX-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epochs {
    pub share: ShareId,
    pub share_epoch: u64,
    pub file_epoch: u64,
}

/// Whose request a register message is for, as far as leases care
/// (LEASE-R2): the client session's holder id (0: none) and the request id
/// of the attempt, which grows with every attempt of that session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub id: u64,
    pub seq: u64,
}

impl Holder {
    pub const NONE: Holder = Holder { id: 0, seq: 0 };
}

/// A lease asked for with a register read (LEASE-R1) or write (LEASE-W1):
/// `holder` is the session and the attempt, `ms` the length, `tenant` the
/// reader (a replica grants only to a tenant its policy lets read the share).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReq {
    pub holder: Holder,
    pub ms: u32,
    pub tenant: TenantId,
}

/// A replica's answer to the optimized policy read (PAXOS-R1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptReadReply {
    pub executed: Slot,
    /// Whether the replica has accepted a not-yet-executed entry that changes
    /// this share. Such a reply makes the optimized read fail.
    pub pending: bool,
    pub view: PolicyView,
}

/// Outcome of a register WRITE at one replica (ABD-W2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteAck {
    /// Stored, or already held an equal or higher timestamp: the value (or a
    /// newer one) is durable at this replica.
    Stored,
    /// Refused: the epochs differ from the replica's executed policy state,
    /// or it has a pending accept on the share, or it is suspicious (PX-6).
    EpochMismatch { share_epoch: u64, file_epoch: u64 },
}

/// Answer of a leader to a proposal (PAXOS-L5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeAnswer {
    Executed {
        slot: Slot,
        outcome: EntryOutcome,
    },
    /// Not the leader; `hint` is who this replica believes leads.
    NotLeader {
        hint: Option<ReplicaId>,
    },
}

/// Everything replicas send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    // ---- proxy first round: register READ + optimized policy read (PX-1, ABD-R1, PAXOS-R1)
    Query {
        op: OpId,
        attempt: u32,
        key: Option<Key>,
        share: ShareId,
        want_value: bool,
        want_policy: bool,
        lease: Option<LeaseReq>,
    },
    QueryReply {
        op: OpId,
        attempt: u32,
        suspicious: bool,
        /// The register entry (value stripped unless asked for).
        register: Option<RegisterEntry>,
        policy: Option<OptReadReply>,
        /// This replica granted the lease asked for (LEASE-R1).
        leased: bool,
    },
    // ---- register write round and write-back (ABD-W2, ABD-R3)
    /// `holder`: the session and attempt the write is for; leases that
    /// session was granted by earlier attempts do not hold it back (LEASE-R2).
    /// `lease`: a client write asking to keep what it wrote under a lease
    /// (LEASE-W1); `None` for write-backs and writes that ask for none.
    Write {
        op: OpId,
        attempt: u32,
        key: Key,
        entry: RegisterEntry,
        epochs: Option<Epochs>,
        holder: Holder,
        /// Boxed: most writes carry none, and the message enum stays small.
        lease: Option<Box<LeaseReq>>,
    },
    WriteReply {
        op: OpId,
        attempt: u32,
        suspicious: bool,
        ack: WriteAck,
        /// This replica holds exactly the written entry and granted the
        /// lease asked for (LEASE-W1).
        leased: bool,
    },
    /// Background, no reply (ABD-S1).
    Stabilize {
        key: Key,
        version: Version,
    },

    // ---- RR-Paxos
    /// A proxy asks the leader to order `entry` (PAXOS-L4).
    Propose {
        op: OpId,
        entry: PolicyEntry,
    },
    ProposeReply {
        op: OpId,
        answer: ProposeAnswer,
    },
    /// PAXOS-L1; `executed` lets acceptors send what the candidate lacks.
    Prepare {
        ballot: Ballot,
        attempt: u32,
        executed: Slot,
    },
    /// PAXOS-A1.
    Promise {
        ballot: Ballot,
        attempt: u32,
        suspicious: bool,
        executed: Slot,
        /// The acceptor's executed state if it is ahead of the candidate.
        snapshot: Option<PolicyState>,
        accepted: Vec<(Slot, Ballot, PolicyEntry)>,
    },
    /// PAXOS-L4 / PAXOS-A2.
    Accept {
        ballot: Ballot,
        attempt: u32,
        slot: Slot,
        entry: PolicyEntry,
    },
    Accepted {
        ballot: Ballot,
        attempt: u32,
        slot: Slot,
        suspicious: bool,
    },
    /// An acceptor refused `ballot` because it promised `promised` (PAXOS-A3).
    Reject {
        ballot: Ballot,
        promised: Ballot,
    },
    /// PAXOS-E2: the leader tells everyone a slot is chosen.
    Decide {
        ballot: Ballot,
        slot: Slot,
        entry: PolicyEntry,
    },
    /// PAXOS-L6: leadership and commit point.
    Heartbeat {
        ballot: Ballot,
        executed: Slot,
    },
    /// PAXOS-C1: a lagging replica asks for the executed state.
    CatchUpRequest {
        executed: Slot,
    },
    /// PAXOS-C2.
    CatchUp {
        executed: Slot,
        state: PolicyState,
    },

    // ---- recovery (REC-1..REC-5)
    DigestRequest {
        round: u64,
    },
    DigestReply {
        round: u64,
        suspicious: bool,
        /// Hash of each register bucket (see `digest`).
        buckets: Vec<[u8; 16]>,
        promised: Ballot,
        executed: Slot,
        accepted: Vec<(Slot, Ballot, PolicyEntry)>,
    },
    /// Ask for entries of the named buckets newer than the versions listed.
    FetchRequest {
        round: u64,
        buckets: Vec<(u16, Vec<(Key, Version)>)>,
        want_snapshot: bool,
    },
    FetchReply {
        round: u64,
        entries: Vec<(Key, RegisterEntry)>,
        snapshot: Option<(Slot, PolicyState)>,
    },
}

impl PeerMessage {
    /// Whether a runtime may send this before the records queued ahead of it are
    /// durable (PERSIST-1): a register `Query` or `Write` request. Its content is the
    /// client's operation and the proxy's choices (a timestamp unique to the proxy's
    /// incarnation, ABD-W1; epochs a replica checks against its own policy state, PX-6);
    /// it asserts nothing about what its sender holds. Replies, stabilize hints and
    /// every Paxos and recovery message keep their place behind the sync.
    pub fn may_precede_sync(&self) -> bool {
        matches!(self, PeerMessage::Query { .. } | PeerMessage::Write { .. })
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode bytes from a peer; never panics on bad input.
    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, CoreDecodeError> {
        postcard::from_bytes(bytes).map_err(|source| CoreDecodeError {
            what: "peer message",
            source,
        })
    }

    /// Short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Query { .. } => "query",
            PeerMessage::QueryReply { .. } => "query-reply",
            PeerMessage::Write { .. } => "write",
            PeerMessage::WriteReply { .. } => "write-reply",
            PeerMessage::Stabilize { .. } => "stabilize",
            PeerMessage::Propose { .. } => "propose",
            PeerMessage::ProposeReply { .. } => "propose-reply",
            PeerMessage::Prepare { .. } => "prepare",
            PeerMessage::Promise { .. } => "promise",
            PeerMessage::Accept { .. } => "accept",
            PeerMessage::Accepted { .. } => "accepted",
            PeerMessage::Reject { .. } => "reject",
            PeerMessage::Decide { .. } => "decide",
            PeerMessage::Heartbeat { .. } => "heartbeat",
            PeerMessage::CatchUpRequest { .. } => "catch-up-request",
            PeerMessage::CatchUp { .. } => "catch-up",
            PeerMessage::DigestRequest { .. } => "digest-request",
            PeerMessage::DigestReply { .. } => "digest-reply",
            PeerMessage::FetchRequest { .. } => "fetch-request",
            PeerMessage::FetchReply { .. } => "fetch-reply",
        }
    }
}
