//! `sim`: run the deterministic simulator over a range of seeds.
//!
//! ```text
//! sim --mode rr|cft --seeds N [--mr M --f F] [--start SEED]
//! ```
//!
//! Exits 0 when no seed finds a violation, 1 (printing the seed, the
//! violation and the command that replays it) when one does, 2 on bad usage.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use enclave_replica::core::Mode;
use teemsfs_tests::sim::{SimConfig, World, replay_command, run_seed};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Rr,
    Cft,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BugArg {
    /// Read quorums one smaller than R_Q(s) (core fault switch).
    ReadQuorumMinusOne,
    /// Stabilize the timestamp read in the first round (the paper's Fig. 4 typo).
    StabilizeReadTimestamp,
    /// A restarted replica clears its suspicious flag without recovering.
    SkipRecovery,
    /// Report a read lease with one grant fewer than LEASE-P1 needs.
    LeaseQuorumMinusOne,
    /// A restarted replica accepts writes at once, forgetting LEASE-R3.
    LeaseSkipRestartWait,
    /// Replicas grant leases but never hold a write back (LEASE-R2 off).
    LeaseNoHold,
    /// Replicas grant a write lease even when they hold a newer entry
    /// (LEASE-W1's version check off).
    WriteLeaseAnyVersion,
    /// The proxy reports a write lease however few replicas granted it
    /// (LEASE-W2's count off).
    WriteLeaseWithoutGrants,
    /// Write acknowledgements leave before the record they acknowledge is
    /// synced (PERSIST-1 stretched to replies).
    AcksPrecedeSync,
}

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of a TEEMS cluster under network faults and rollbacks")]
struct Args {
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Number of seeds to run.
    #[arg(long)]
    seeds: u64,
    /// M_R: most replicas rolled back at once.
    #[arg(long, default_value_t = 2)]
    mr: u32,
    /// F: most replicas unreachable at once.
    #[arg(long, default_value_t = 2)]
    f: u32,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Operations per workload client.
    #[arg(long)]
    ops: Option<usize>,
    /// Workload clients.
    #[arg(long)]
    clients: Option<usize>,
    /// Length of the fault phase in simulated ms.
    #[arg(long = "fault-ms")]
    fault_ms: Option<u64>,
    /// Restart only with the latest sealed state.
    #[arg(long = "no-rollbacks")]
    no_rollbacks: bool,
    /// Clients ask for no read leases (and replicas grant none).
    #[arg(long = "no-leases")]
    no_leases: bool,
    /// Clients ask for leases on reads only, not on what they write
    #[arg(long = "no-write-leases")]
    no_write_leases: bool,
    /// The replicas' acknowledgement window (Q-3; also REC-0's quarantine) in ms,
    /// instead of the default (equal to the lease).
    #[arg(long = "ack-window-ms")]
    ack_window_ms: Option<u64>,
    /// The replicas' read-lease length in ms, instead of the default (1000).
    #[arg(long = "lease-ms")]
    lease_ms: Option<u64>,
    /// Chance that a replica whose records stay unsynced past an event crashes right
    /// there (the window PERSIST-1 opens).
    #[arg(long = "crash-before-sync", default_value_t = 0.005)]
    crash_before_sync: f64,
    /// Now and then crash a write quorum of replicas at once (also right after some
    /// lease grants), each back within 150 ms with its latest state.
    #[arg(long = "restart-bursts")]
    restart_bursts: bool,
    /// Enable a deliberate bug in the cores (to see the checker catch it);
    /// may be repeated.
    #[arg(long, value_enum)]
    bug: Vec<BugArg>,
    /// Print the event trace of a failing seed (use with --seeds 1).
    #[arg(long)]
    trace: bool,
    /// With --trace: also print every message delivered.
    #[arg(long = "trace-messages")]
    trace_messages: bool,
    /// Keep going after a violation and report how many seeds failed.
    #[arg(long = "keep-going")]
    keep_going: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mode = match args.mode {
        ModeArg::Rr => Mode::Rr,
        ModeArg::Cft => Mode::Cft,
    };
    let mut cfg = SimConfig::new(mode, args.mr, args.f);
    if let Some(ops) = args.ops {
        cfg.ops_per_client = ops;
    }
    if let Some(clients) = args.clients {
        cfg.clients = clients.max(1);
    }
    if let Some(ms) = args.fault_ms {
        cfg.fault_phase_ms = ms;
    }
    cfg.rollbacks = !args.no_rollbacks;
    cfg.leases = !args.no_leases;
    cfg.write_leases = !args.no_write_leases;
    cfg.ack_window_ms = args.ack_window_ms;
    cfg.lease_ms = args.lease_ms;
    cfg.restart_bursts = args.restart_bursts;
    if !(0.0..=1.0).contains(&args.crash_before_sync) {
        eprintln!(
            "sim: --crash-before-sync must be a probability in 0..=1, not {}",
            args.crash_before_sync
        );
        return ExitCode::from(2);
    }
    cfg.crash_before_sync_prob = args.crash_before_sync;
    for bug in &args.bug {
        match bug {
            BugArg::ReadQuorumMinusOne => cfg.bugs.read_quorum_minus_one = true,
            BugArg::StabilizeReadTimestamp => cfg.bugs.stabilize_read_timestamp = true,
            BugArg::SkipRecovery => cfg.bugs.skip_recovery = true,
            BugArg::LeaseQuorumMinusOne => cfg.bugs.lease_quorum_minus_one = true,
            BugArg::LeaseSkipRestartWait => cfg.bugs.lease_skip_restart_wait = true,
            BugArg::LeaseNoHold => cfg.bugs.lease_no_hold = true,
            BugArg::WriteLeaseAnyVersion => cfg.bugs.write_lease_any_version = true,
            BugArg::WriteLeaseWithoutGrants => cfg.bugs.write_lease_without_grants = true,
            BugArg::AcksPrecedeSync => cfg.bugs.acks_precede_sync = true,
        }
    }
    cfg.trace = args.trace || args.trace_messages;
    cfg.trace_messages = args.trace_messages;
    if let Err(e) = enclave_replica::core::ClusterConfig::new(mode, args.mr, args.f) {
        eprintln!("invalid configuration: {e}");
        return ExitCode::from(2);
    }

    let started = Instant::now();
    let mut failures = 0u64;
    let mut totals = teemsfs_tests::sim::Stats::default();
    for seed in args.start..args.start.saturating_add(args.seeds) {
        let outcome = if cfg.trace {
            let world = match World::new(cfg.clone(), seed) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let (outcome, world) = world.run();
            for line in world.trace() {
                println!("{line}");
            }
            outcome
        } else {
            run_seed(&cfg, seed)
        };
        accumulate(&mut totals, &outcome.stats);
        if args.seeds == 1 {
            println!(
                "seed {seed}: trace hash {:016x}, {} events, ended at {} ms",
                outcome.trace_hash, outcome.stats.events, outcome.stats.end_ms
            );
        }
        if let Some(v) = &outcome.violation {
            failures += 1;
            println!(
                "VIOLATION seed={seed} mode={:?} m_r={} f={}",
                mode, args.mr, args.f
            );
            println!("  {v}");
            println!("  replay: {}", replay_command(&cfg, seed));
            if !args.keep_going {
                break;
            }
        }
    }
    println!(
        "sim mode={:?} m_r={} f={} seeds={}..{} failures={} in {:.1}s; totals: ops={} completed={} writes_ok={} reads_with_value={} lease_hits={} policy_changes={} crashes={} crashes_unsynced={} restart_bursts={} rollbacks={} empty_restarts={} partitions={}",
        mode,
        args.mr,
        args.f,
        args.start,
        args.start.saturating_add(args.seeds),
        failures,
        started.elapsed().as_secs_f64(),
        totals.ops_called,
        totals.ops_completed,
        totals.writes_ok,
        totals.reads_with_value,
        totals.lease_hits,
        totals.policy_changes_ok,
        totals.crashes,
        totals.crashes_unsynced,
        totals.restart_bursts,
        totals.restarts_rolled_back,
        totals.restarts_empty,
        totals.partitions,
    );
    if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn accumulate(t: &mut teemsfs_tests::sim::Stats, s: &teemsfs_tests::sim::Stats) {
    t.ops_called += s.ops_called;
    t.ops_completed += s.ops_completed;
    t.writes_ok += s.writes_ok;
    t.reads_with_value += s.reads_with_value;
    t.lease_hits += s.lease_hits;
    t.policy_changes_ok += s.policy_changes_ok;
    t.crashes += s.crashes;
    t.crashes_unsynced += s.crashes_unsynced;
    t.restart_bursts += s.restart_bursts;
    t.restarts_rolled_back += s.restarts_rolled_back;
    t.restarts_empty += s.restarts_empty;
    t.partitions += s.partitions;
}
