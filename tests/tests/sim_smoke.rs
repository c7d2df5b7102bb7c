//! Smoke runs of the deterministic simulator (docs/TESTING.md, "The
//! simulator"). The long runs are `scripts/sim.sh --seeds 2000`; these keep
//! the default test run short while still showing that
//! - RR survives network faults, crashes and up to `M_R` rollbacks
//!   (DESIGN §3–7, RR §III–IV) for (M_R, F) = (2,2), (4,2), (1,2);
//! - the same simulator finds a violation in the CFT baseline under rollback
//!   (DESIGN §13: "a check that cannot fail is no check");
//! - with restart bursts (a write quorum of replicas crashing at once) and a
//!   lease longer than the acknowledgement window, RR with leases stays
//!   linearizable;
//! - it catches deliberately planted bugs (read quorum one below `R_Q(s)`;
//!   recovery skipped after a restart; read leases granted without holding
//!   writes back, reported with one grant too few, or forgotten by a replica
//!   that restarts);
//! - one seed always gives the same trace.

use enclave_replica::core::{Faults, Mode};
use teemsfs_tests::sim::{Outcome, SimConfig, find_violation, replay_command, run_seed};

/// Seeds per RR configuration in the default run.
const RR_SMOKE_SEEDS: u64 = 300;
/// A violation must show up within this many seeds when one is expected.
const BOUND_FOR_EXPECTED_VIOLATION: u64 = 300;

fn assert_no_violation(cfg: &SimConfig, seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for seed in seeds {
        let outcome = run_seed(cfg, seed);
        if let Some(v) = &outcome.violation {
            panic!("seed {seed}: {v}\nreplay: {}", replay_command(cfg, seed));
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// The runs must not be vacuous: they crashed, rolled back, partitioned,
/// and still completed reads and writes.
fn assert_exercised(outcomes: &[Outcome]) {
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let crashes = sum(|o| o.stats.crashes);
    let rollbacks = sum(|o| o.stats.restarts_rolled_back + o.stats.restarts_empty);
    let partitions = sum(|o| o.stats.partitions);
    let writes = sum(|o| o.stats.writes_ok);
    let reads = sum(|o| o.stats.reads_with_value);
    let policy = sum(|o| o.stats.policy_changes_ok);
    assert!(
        crashes > 0 && rollbacks > 0 && partitions > 0,
        "faults: {crashes} crashes {rollbacks} rollbacks {partitions} partitions"
    );
    assert!(
        writes > 0 && reads > 0 && policy > 0,
        "work: {writes} writes {reads} reads {policy} policy changes"
    );
    let lease_hits = sum(|o| o.stats.lease_hits);
    assert!(lease_hits > 0, "no read was answered from a lease");
    let unsynced = sum(|o| o.stats.crashes_unsynced);
    assert!(
        unsynced > 0,
        "no replica crashed before a sync its register requests went ahead of"
    );
}

fn rr_smoke(m_r: u32, f: u32) {
    let cfg = SimConfig::smoke(Mode::Rr, m_r, f);
    let outcomes = assert_no_violation(&cfg, 0..RR_SMOKE_SEEDS);
    assert_exercised(&outcomes);
}

/// DESIGN §3 example configuration `M_R=2, F=2 → N=5`.
#[test]
fn rr_mr2_f2_is_linearizable_under_faults_and_rollbacks() {
    rr_smoke(2, 2);
}

/// DESIGN §3 example `M_R=4, F=2 → N=7`: more rollbacks than unreachable.
#[test]
fn rr_mr4_f2_is_linearizable_under_faults_and_rollbacks() {
    rr_smoke(4, 2);
}

/// `M_R=1, F=2 → N=5`, `W_Q=3`: fewer rollbacks than unreachable.
#[test]
fn rr_mr1_f2_is_linearizable_under_faults_and_rollbacks() {
    rr_smoke(1, 2);
}

/// Smoke runs with restart bursts: `W_Q` replicas crash together, now and then and
/// right after some lease grants, and come back within 150 ms with their latest
/// state, their lease grants gone. With the acknowledgement window (REC-0's
/// quarantine) shorter than the lease, the restarted replicas take client writes
/// again while leases they granted still run, so only LEASE-R3 holds those writes.
fn restart_burst_smoke() -> SimConfig {
    let mut cfg = SimConfig::smoke(Mode::Rr, 2, 2);
    cfg.restart_bursts = true;
    cfg.ack_window_ms = Some(100);
    cfg.lease_ms = Some(2_400);
    cfg
}

#[test]
fn rr_with_leases_is_linearizable_under_restart_bursts() {
    let outcomes = assert_no_violation(&restart_burst_smoke(), 0..RR_SMOKE_SEEDS);
    assert_exercised(&outcomes);
    let bursts: u64 = outcomes.iter().map(|o| o.stats.restart_bursts).sum();
    assert!(bursts > 0, "no restart burst in {RR_SMOKE_SEEDS} seeds");
}

/// The checker catches a replica that takes writes as soon as it restarts
/// (LEASE-R3 off): a write then completes on restarted replicas that forgot the
/// lease they granted, and the holder reads the old value from its lease after it.
/// It needs the runs above: single crashes with the default timing never build it.
#[test]
fn planted_lease_skip_restart_wait_bug_is_caught() {
    assert_planted_bug_caught_in(restart_burst_smoke(), "lease-skip-restart-wait", |b| {
        b.lease_skip_restart_wait = true
    });
}

/// DESIGN §13: CFT (majority quorums, suspicion ignored) is unsafe under
/// rollback, and the simulator must show it.
#[test]
fn cft_under_rollbacks_is_caught_violating_safety() {
    let cfg = SimConfig::smoke(Mode::Cft, 2, 2);
    let (ran, found) = find_violation(&cfg, 0, BOUND_FOR_EXPECTED_VIOLATION);
    let outcome = found.unwrap_or_else(|| panic!("no violation in CFT mode within {ran} seeds"));
    let v = outcome.violation.as_ref().map(|v| v.property);
    eprintln!(
        "CFT violation after {ran} seeds (seed {}): {:?}",
        outcome.seed, outcome.violation
    );
    assert!(
        matches!(
            v,
            Some(
                teemsfs_tests::sim::Property::StaleRead
                    | teemsfs_tests::sim::Property::RegisterLinearizability
                    | teemsfs_tests::sim::Property::PolicyLinearizability
                    | teemsfs_tests::sim::Property::Durability
                    | teemsfs_tests::sim::Property::LogAgreement
            )
        ),
        "expected a safety violation, got {v:?}"
    );
}

/// The control for the test above: the same faults without rollbacks (every
/// restart gets the latest sealed state) leave CFT safe, so what the CFT
/// test catches is the rollback, not a harness artefact.
#[test]
fn cft_without_rollbacks_survives_the_same_faults() {
    let mut cfg = SimConfig::smoke(Mode::Cft, 2, 2);
    cfg.rollbacks = false;
    let outcomes = assert_no_violation(&cfg, 0..BOUND_FOR_EXPECTED_VIOLATION);
    assert!(outcomes.iter().map(|o| o.stats.crashes).sum::<u64>() > 0);
}

/// RR with one planted bug (a `Faults` switch of the cores) must produce a
/// violation within `BOUND_FOR_EXPECTED_VIOLATION` seeds.
fn assert_planted_bug_caught(name: &str, plant: fn(&mut Faults)) {
    assert_planted_bug_caught_in(SimConfig::smoke(Mode::Rr, 2, 2), name, plant);
}

/// [`assert_planted_bug_caught`] on runs configured as `cfg`.
fn assert_planted_bug_caught_in(mut cfg: SimConfig, name: &str, plant: fn(&mut Faults)) {
    plant(&mut cfg.bugs);
    let (ran, found) = find_violation(&cfg, 0, BOUND_FOR_EXPECTED_VIOLATION);
    let outcome =
        found.unwrap_or_else(|| panic!("planted {name} bug not caught within {ran} seeds"));
    eprintln!(
        "{name} bug caught after {ran} seeds (seed {}): {:?}",
        outcome.seed, outcome.violation
    );
}

/// The checker catches a replica that acknowledges a write before the record is
/// synced (PERSIST-1 stretched to replies): a crash before the sync loses an
/// acknowledged write, and a later read quorum can miss it. Shown where nothing
/// else rolls a replica back — CFT with every restart from the latest sealed
/// state, which survives the same faults when acknowledgements wait
/// (`cft_without_rollbacks_survives_the_same_faults`) — since a lost record is a
/// rollback, which RR tolerates up to `M_R`. Crashes aim at the window ten times
/// as often as by default.
#[test]
fn planted_ack_before_sync_bug_is_caught() {
    let mut cfg = SimConfig::smoke(Mode::Cft, 2, 2);
    cfg.rollbacks = false;
    cfg.crash_before_sync_prob = 0.05;
    assert_planted_bug_caught_in(cfg, "ack-before-sync", |b| b.acks_precede_sync = true);
}

/// The checker catches a planted bug: RR read quorums one below `R_Q(s)`
/// (RR §III-D eq. 14) let a read miss the latest write.
#[test]
fn planted_read_quorum_bug_is_caught() {
    assert_planted_bug_caught("read-quorum-minus-one", |b| b.read_quorum_minus_one = true);
}

/// The checker catches a replica that trusts its sealed state after a
/// restart (the cores' `skip_recovery` switch: the suspicious flag is
/// cleared at start without recovery, DESIGN §4) — a rolled-back replica
/// then counts as fresh in `R_Q(s)` and reads go stale.
#[test]
fn planted_skip_recovery_bug_is_caught() {
    assert_planted_bug_caught("skip-recovery", |b| b.skip_recovery = true);
}

/// The checker catches replicas that grant read leases but do not hold
/// writes back (LEASE-R2 off): a client then answers a read from its lease
/// after another client's write of the key completed.
#[test]
fn planted_lease_no_hold_bug_is_caught() {
    assert_planted_bug_caught("lease-no-hold", |b| b.lease_no_hold = true);
}

/// The checker catches a proxy that reports a lease with one grant fewer
/// than every write quorum needs (LEASE-P1): a write then completes on
/// replicas none of which held it back, and a leased read returns the old
/// value after it. Run with leases on reads only: write leases make other
/// sessions' writes wait, which leaves this bug few chances in a smoke run.
#[test]
fn planted_lease_quorum_bug_is_caught() {
    let cfg = SimConfig {
        write_leases: false,
        ..SimConfig::smoke(Mode::Rr, 2, 2)
    };
    assert_planted_bug_caught_in(cfg, "lease-quorum-minus-one", |b| {
        b.lease_quorum_minus_one = true
    });
}

/// The checker catches a proxy that reports a write lease however few
/// replicas granted it (LEASE-W2): another session's write then completes,
/// and the writer answers a read from what it wrote before.
#[test]
fn planted_write_lease_without_grants_bug_is_caught() {
    assert_planted_bug_caught("write-lease-without-grants", |b| {
        b.write_lease_without_grants = true
    });
}

/// Same seed, same trace; different seed, different trace.
#[test]
fn one_seed_gives_one_trace() {
    let cfg = SimConfig::smoke(Mode::Rr, 2, 2);
    let a = run_seed(&cfg, 12345);
    let b = run_seed(&cfg, 12345);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.stats, b.stats);
    assert!(
        a.stats.events > 1000,
        "trace too short to mean anything: {:?}",
        a.stats
    );
    let c = run_seed(&cfg, 12346);
    assert_ne!(a.trace_hash, c.trace_hash);
}
