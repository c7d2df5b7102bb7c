//! The deterministic simulator of a TEEMS cluster (DESIGN §13, issue
//! "replication core" — the simulator section; docs/TESTING.md describes it).
//!
//! Job: drive `N` real protocol cores ([`enclave_replica::core::Node`]) and
//! several concurrent clients in one thread from one `u64` seed, through a
//! hostile network (drops, duplicates, delays, reordering, partitions) and
//! crashes whose restarts may hand a replica any sealed state it ever had
//! (rollback) or none — at most `M_R` unrecovered rollbacks at any moment —
//! and check that the clients' history is linearizable, that replicas agree
//! on the executed policy log, that completed writes survive, and that after
//! the faults stop every operation completes.
//!
//! What it does not do: no sockets, threads, real time or real disks — those
//! belong to the process-level tests. The cores are used exactly as the
//! runtime uses them (same API, same command-ordering contract).
//!
//! Modules:
//! - [`world`]: the event loop, fault injection and phases;
//! - [`client`]: simulated tenants and their workload;
//! - [`network`]: the network fault model;
//! - [`storage`]: sealed storage that remembers every state it ever held;
//! - [`history`]: the recorded client history;
//! - [`checker`]: the linearizability checker (Wing–Gong with memoization)
//!   and the register and policy specifications;
//! - [`report`]: violations, statistics, outcomes.
//!
//! ```no_run
//! use enclave_replica::core::Mode;
//! use teemsfs_tests::sim::{SimConfig, run_seed};
//! let outcome = run_seed(&SimConfig::smoke(Mode::Rr, 2, 2), 42);
//! assert!(outcome.violation.is_none(), "{:?}", outcome.violation);
//! ```

pub mod checker;
pub mod client;
pub mod history;
pub mod network;
pub mod report;
pub mod storage;
pub mod world;

pub use report::{Outcome, Property, Stats, Violation};
pub use world::{SimConfig, World, run_seed};

use enclave_replica::core::Mode;

/// The command line that replays one seed of `cfg` (printed with every
/// failure).
pub fn replay_command(cfg: &SimConfig, seed: u64) -> String {
    let mode = match cfg.mode {
        Mode::Rr => "rr",
        Mode::Cft => "cft",
    };
    let mut cmd = format!(
        "scripts/sim.sh --mode {mode} --mr {} --f {} --seeds 1 --start {seed}",
        cfg.m_r, cfg.f
    );
    let defaults = SimConfig::new(cfg.mode, cfg.m_r, cfg.f);
    if cfg.ops_per_client != defaults.ops_per_client {
        cmd.push_str(&format!(" --ops {}", cfg.ops_per_client));
    }
    if cfg.fault_phase_ms != defaults.fault_phase_ms {
        cmd.push_str(&format!(" --fault-ms {}", cfg.fault_phase_ms));
    }
    if cfg.clients != defaults.clients {
        cmd.push_str(&format!(" --clients {}", cfg.clients));
    }
    if !cfg.rollbacks {
        cmd.push_str(" --no-rollbacks");
    }
    if let Some(ms) = cfg.ack_window_ms {
        cmd.push_str(&format!(" --ack-window-ms {ms}"));
    }
    if let Some(ms) = cfg.lease_ms {
        cmd.push_str(&format!(" --lease-ms {ms}"));
    }
    if cfg.restart_bursts {
        cmd.push_str(" --restart-bursts");
    }
    if cfg.crash_before_sync_prob != defaults.crash_before_sync_prob {
        cmd.push_str(&format!(
            " --crash-before-sync {}",
            cfg.crash_before_sync_prob
        ));
    }
    let bugs = [
        (cfg.bugs.read_quorum_minus_one, "read-quorum-minus-one"),
        (
            cfg.bugs.stabilize_read_timestamp,
            "stabilize-read-timestamp",
        ),
        (cfg.bugs.skip_recovery, "skip-recovery"),
        (cfg.bugs.lease_quorum_minus_one, "lease-quorum-minus-one"),
        (cfg.bugs.lease_skip_restart_wait, "lease-skip-restart-wait"),
        (cfg.bugs.lease_no_hold, "lease-no-hold"),
        (cfg.bugs.write_lease_any_version, "write-lease-any-version"),
        (
            cfg.bugs.write_lease_without_grants,
            "write-lease-without-grants",
        ),
        (cfg.bugs.acks_precede_sync, "acks-precede-sync"),
    ];
    for (on, name) in bugs {
        if on {
            cmd.push_str(&format!(" --bug {name}"));
        }
    }
    if !cfg.leases {
        cmd.push_str(" --no-leases");
    }
    if cfg.leases && !cfg.write_leases {
        cmd.push_str(" --no-write-leases");
    }
    cmd.push_str(" --trace");
    cmd
}

/// Run seeds `start..start + count` and return the first failing outcome,
/// with how many seeds ran.
pub fn find_violation(cfg: &SimConfig, start: u64, count: u64) -> (u64, Option<Outcome>) {
    for (i, seed) in (start..start.saturating_add(count)).enumerate() {
        let outcome = run_seed(cfg, seed);
        if outcome.violation.is_some() {
            return (i as u64 + 1, Some(outcome));
        }
    }
    (count, None)
}
