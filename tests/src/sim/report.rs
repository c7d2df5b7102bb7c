//! What a simulation run reports: the violation found (if any), how to
//! replay it, and counters that show the run exercised something.

use std::fmt;

/// Which property broke. Names match docs/TESTING.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// A key's read/write/delete history has no linearization.
    RegisterLinearizability,
    /// A read returned a version older than a write that completed before
    /// the read started (checked online, at the read's return).
    StaleRead,
    /// A write that completed is gone after healing.
    Durability,
    /// Policy operations on a share are not linearizable.
    PolicyLinearizability,
    /// Two replicas executed different commands in the same Paxos slot.
    LogAgreement,
    /// After faults stopped, some operation did not complete in time.
    Liveness,
    /// A response that cannot answer its request (wrong kind, bytes nobody
    /// wrote).
    BadResponse,
    /// A protocol core panicked on some input.
    Panic,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub property: Property,
    /// Simulated time when it was detected.
    pub at_ms: u64,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} at {} ms: {}",
            self.property, self.at_ms, self.detail
        )
    }
}

/// Counters of what happened, so a test can assert a run was not vacuous.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub crashes: u64,
    /// Crashes of a replica whose records were still waiting for their sync, which
    /// register requests may already have left without (PERSIST-1).
    pub crashes_unsynced: u64,
    /// Restart bursts: `W_Q` replicas crashed at once, back within 150 ms.
    pub restart_bursts: u64,
    pub restarts_latest: u64,
    pub restarts_rolled_back: u64,
    pub restarts_empty: u64,
    pub partitions: u64,
    pub ops_called: u64,
    pub ops_completed: u64,
    pub reads_with_value: u64,
    pub writes_ok: u64,
    pub policy_changes_ok: u64,
    /// Reads a client answered from a lease, without a message.
    pub lease_hits: u64,
    pub end_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    /// Hash of every event processed, in order: equal for equal seeds.
    pub trace_hash: u64,
    pub violation: Option<Violation>,
    pub stats: Stats,
}
