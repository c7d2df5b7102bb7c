//! CPU cost of the protocol cores alone (no I/O, no crypto, no network):
//! one register write, one register read, and one Paxos slot (a policy
//! change), driving five in-process `Node`s through the core harness, which
//! delivers every message at once. The numbers are the whole cluster's CPU
//! per operation (all five replicas' handlers), not a latency.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_replica::core::harness::Cluster;
use enclave_replica::core::{ClusterConfig, Mode};
use metadata_client::wire::{Key, PolicyOp, Request, Response, ShareId, TenantId};

const SHARE: ShareId = ShareId([1; 16]);

fn ready(mode: Mode, m_r: u32, f: u32) -> Cluster {
    let config = ClusterConfig::new(mode, m_r, f).expect("valid config");
    let mut c = Cluster::new(config, 7);
    c.run_for(3_000);
    let created = c.request(
        1,
        "alice",
        Request::ChangePolicy {
            share: SHARE,
            op: PolicyOp::CreateShare,
        },
        10_000,
    );
    assert_eq!(created, Some(Response::PolicyChanged { epoch: 1 }));
    c
}

fn bench_cores(cr: &mut Criterion) {
    for (label, mode, m_r, f) in [
        ("rr_2_2", Mode::Rr, 2, 2),
        ("rr_4_2", Mode::Rr, 4, 2),
        ("cft_2_2", Mode::Cft, 2, 2),
    ] {
        let mut group = cr.benchmark_group(format!("cores/{label}"));
        let mut c = ready(mode, m_r, f);
        let key = Key::from_name("bench");
        let mut i = 0u64;
        group.bench_function("register_write", |b| {
            b.iter(|| {
                i += 1;
                let value = i.to_le_bytes().to_vec();
                let r = c.request(
                    1,
                    "alice",
                    Request::Write {
                        share: SHARE,
                        key,
                        value,
                    },
                    10_000,
                );
                assert!(matches!(r, Some(Response::Written { .. })), "{r:?}");
            })
        });
        group.bench_function("register_read", |b| {
            b.iter(|| {
                let r = c.request(2, "alice", Request::Read { share: SHARE, key }, 10_000);
                assert!(matches!(r, Some(Response::Value { .. })), "{r:?}");
                black_box(r);
            })
        });
        let mut n = 0u64;
        group.bench_function("paxos_slot_policy_change", |b| {
            b.iter(|| {
                n += 1;
                let op = PolicyOp::Revoke {
                    tenant: TenantId(format!("t{n}")),
                };
                let r = c.request(
                    3,
                    "alice",
                    Request::ChangePolicy { share: SHARE, op },
                    10_000,
                );
                assert!(matches!(r, Some(Response::PolicyChanged { .. })), "{r:?}");
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_cores
}
criterion_main!(benches);
