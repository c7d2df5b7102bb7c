//! Unit tests of the cores. Two kinds:
//! - one event in, exact commands out (openraft style), one test per step of
//!   `docs/PROTOCOLS.md`, named after the step;
//! - happy paths and hand-made crash/rollback scenarios on the in-process
//!   [`harness::Cluster`](super::harness::Cluster).

use metadata_client::wire::{
    Access, ErrorKind, Key, LeaseAsk, PolicyOp, Request, RequestFrame, Response, ShareId, TenantId,
    Version,
};

use super::harness::Cluster;
use super::*;

const ME: ReplicaId = 1;

/// Leases off: most steps are tested on a node just started, which leases
/// would hold back (LEASE-R3); the lease tests turn them on.
fn cfg(mode: Mode) -> ClusterConfig {
    let mut c = ClusterConfig::new(mode, 2, 2).expect("valid config");
    c.timing.lease_ms = 0;
    c
}

/// A replica that is not suspicious (recovery skipped), drained of its start
/// commands.
fn trusted_node() -> Node {
    let mut c = cfg(Mode::Rr);
    c.faults.skip_recovery = true;
    let (node, _) = Node::start(c, ME, DurableState::default(), 0, 1);
    node
}

fn entry(seq: u64, data: &[u8]) -> RegisterEntry {
    RegisterEntry {
        version: Version { seq, writer: 2 },
        stable: false,
        value: StoredValue {
            share: ShareId([1; 16]),
            creator: TenantId("alice".into()),
            data: Some(data.to_vec()),
        },
    }
}

fn key() -> Key {
    Key([7; 16])
}

fn sends(commands: &[Command]) -> Vec<(ReplicaId, &PeerMessage)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { to, msg } => Some((*to, msg)),
            _ => None,
        })
        .collect()
}

#[test]
fn rec_0_start_in_rr_is_suspicious_and_asks_everyone_for_digests() {
    let (node, commands) = Node::start(cfg(Mode::Rr), ME, DurableState::default(), 0, 9);
    assert!(node.status().suspicious);
    assert!(node.status().recovering);
    let digest_requests: Vec<ReplicaId> = sends(&commands)
        .into_iter()
        .filter(|(_, m)| matches!(m, PeerMessage::DigestRequest { round: 1 }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(digest_requests, vec![2, 3, 4, 5]);
    assert!(commands.contains(&Command::SetTimer {
        timer: Timer::Recovery,
        after_ms: 200
    }));
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::SetTimer {
            timer: Timer::Election,
            ..
        }
    )));
    // Nothing is persisted merely by starting.
    assert!(!commands.iter().any(|c| matches!(c, Command::Persist(_))));
}

#[test]
fn cft_start_trusts_its_state_and_does_not_recover() {
    let (node, commands) = Node::start(cfg(Mode::Cft), ME, DurableState::default(), 0, 9);
    assert!(!node.status().suspicious);
    assert!(!commands.iter().any(|c| matches!(c, Command::Send { .. })));
}

#[test]
fn abd_q1_query_reply_carries_entry_policy_and_suspicious_flag() {
    let (mut node, _) = Node::start(cfg(Mode::Rr), ME, DurableState::default(), 0, 9);
    let mut st = DurableState::default();
    st.apply(&Record::RegisterPut {
        key: key(),
        entry: entry(3, b"v"),
    });
    node.durable = st;
    let q = PeerMessage::Query {
        op: 4,
        attempt: 1,
        key: Some(key()),
        share: ShareId([1; 16]),
        want_value: true,
        want_policy: true,
        lease: None,
    };
    let out = node.on_message(10, 2, q);
    let expected = PeerMessage::QueryReply {
        op: 4,
        attempt: 1,
        suspicious: true,
        register: Some(entry(3, b"v")),
        policy: Some(OptReadReply {
            executed: 0,
            pending: false,
            view: PolicyView::default(),
        }),
        leased: false,
    };
    assert_eq!(
        out,
        vec![Command::Send {
            to: 2,
            msg: expected
        }]
    );
}

#[test]
fn abd_w2_store_higher_timestamp_persist_before_ack() {
    let mut node = trusted_node();
    let w = PeerMessage::Write {
        op: 1,
        attempt: 1,
        key: key(),
        entry: entry(5, b"x"),
        epochs: None,
        holder: Holder::NONE,
        lease: None,
    };
    let out = node.on_message(10, 3, w);
    assert_eq!(
        out,
        vec![
            Command::Persist(vec![Record::RegisterPut {
                key: key(),
                entry: entry(5, b"x")
            }]),
            Command::Send {
                to: 3,
                msg: PeerMessage::WriteReply {
                    op: 1,
                    attempt: 1,
                    suspicious: false,
                    ack: WriteAck::Stored,
                    leased: false,
                }
            },
        ]
    );
    // An older timestamp is acknowledged without storing anything.
    let w = PeerMessage::Write {
        op: 2,
        attempt: 1,
        key: key(),
        entry: entry(4, b"old"),
        epochs: None,
        holder: Holder::NONE,
        lease: None,
    };
    let out = node.on_message(11, 3, w);
    assert_eq!(
        out,
        vec![Command::Send {
            to: 3,
            msg: PeerMessage::WriteReply {
                op: 2,
                attempt: 1,
                suspicious: false,
                ack: WriteAck::Stored,
                leased: false,
            }
        }]
    );
    assert_eq!(
        node.durable().registers.get(&key()).map(|e| e.version.seq),
        Some(5)
    );
}

#[test]
fn abd_s1_stabilize_marks_only_the_named_timestamp() {
    let mut node = trusted_node();
    node.on_message(
        1,
        2,
        PeerMessage::Write {
            op: 1,
            attempt: 1,
            key: key(),
            entry: entry(5, b"x"),
            epochs: None,
            holder: Holder::NONE,
            lease: None,
        },
    );
    let out = node.on_message(
        2,
        2,
        PeerMessage::Stabilize {
            key: key(),
            version: Version { seq: 4, writer: 2 },
        },
    );
    assert!(out.is_empty());
    let v = Version { seq: 5, writer: 2 };
    let out = node.on_message(
        3,
        2,
        PeerMessage::Stabilize {
            key: key(),
            version: v,
        },
    );
    assert_eq!(
        out,
        vec![Command::Persist(vec![Record::RegisterStable {
            key: key(),
            version: v
        }])]
    );
}

#[test]
fn px_6_write_with_other_epochs_is_refused_and_not_stored() {
    let mut node = trusted_node();
    let epochs = Epochs {
        share: ShareId([1; 16]),
        share_epoch: 3,
        file_epoch: 0,
    };
    let w = PeerMessage::Write {
        op: 1,
        attempt: 1,
        key: key(),
        entry: entry(5, b"x"),
        epochs: Some(epochs),
        holder: Holder::NONE,
        lease: None,
    };
    let out = node.on_message(10, 3, w);
    let ack = WriteAck::EpochMismatch {
        share_epoch: 0,
        file_epoch: 0,
    };
    assert_eq!(
        out,
        vec![Command::Send {
            to: 3,
            msg: PeerMessage::WriteReply {
                op: 1,
                attempt: 1,
                suspicious: false,
                ack,
                leased: false,
            }
        }]
    );
    assert!(node.durable().registers.is_empty());
}

#[test]
fn px_6_suspicious_replica_refuses_epoch_checked_writes() {
    let (mut node, _) = Node::start(cfg(Mode::Rr), ME, DurableState::default(), 0, 9);
    let epochs = Epochs {
        share: ShareId([1; 16]),
        share_epoch: 0,
        file_epoch: 0,
    };
    let w = PeerMessage::Write {
        op: 1,
        attempt: 1,
        key: key(),
        entry: entry(5, b"x"),
        epochs: Some(epochs),
        holder: Holder::NONE,
        lease: None,
    };
    let out = node.on_message(10, 3, w);
    let ack = WriteAck::EpochMismatch {
        share_epoch: 0,
        file_epoch: 0,
    };
    assert_eq!(
        out,
        vec![Command::Send {
            to: 3,
            msg: PeerMessage::WriteReply {
                op: 1,
                attempt: 1,
                suspicious: true,
                ack,
                leased: false,
            }
        }]
    );
}

#[test]
fn paxos_a1_promise_is_persisted_before_it_is_sent_and_lower_ballots_are_rejected() {
    let mut node = trusted_node();
    let b = Ballot {
        round: 3,
        leader: 2,
    };
    let out = node.on_message(
        5,
        2,
        PeerMessage::Prepare {
            ballot: b,
            attempt: 1,
            executed: 0,
        },
    );
    assert_eq!(
        out,
        vec![
            Command::Persist(vec![Record::Promise { ballot: b }]),
            Command::Send {
                to: 2,
                msg: PeerMessage::Promise {
                    ballot: b,
                    attempt: 1,
                    suspicious: false,
                    executed: 0,
                    snapshot: None,
                    accepted: vec![]
                }
            },
        ]
    );
    let low = Ballot {
        round: 2,
        leader: 4,
    };
    let out = node.on_message(
        6,
        4,
        PeerMessage::Prepare {
            ballot: low,
            attempt: 1,
            executed: 0,
        },
    );
    assert_eq!(
        out,
        vec![Command::Send {
            to: 4,
            msg: PeerMessage::Reject {
                ballot: low,
                promised: b
            }
        }]
    );
}

#[test]
fn paxos_a0_suspicious_replica_neither_promises_nor_accepts() {
    let (mut node, _) = Node::start(cfg(Mode::Rr), ME, DurableState::default(), 0, 9);
    let b = Ballot {
        round: 3,
        leader: 2,
    };
    assert!(
        node.on_message(
            5,
            2,
            PeerMessage::Prepare {
                ballot: b,
                attempt: 1,
                executed: 0
            }
        )
        .is_empty()
    );
    let accept = PeerMessage::Accept {
        ballot: b,
        attempt: 1,
        slot: 1,
        entry: PolicyEntry::Noop,
    };
    assert!(node.on_message(6, 2, accept).is_empty());
    assert_eq!(node.durable().promised, Ballot::default());
}

#[test]
fn paxos_a2_accept_persisted_before_accepted_and_r1_reports_pending() {
    let mut node = trusted_node();
    let b = Ballot {
        round: 1,
        leader: 2,
    };
    let share = ShareId([1; 16]);
    let entry = PolicyEntry::Change {
        share,
        requester: TenantId("a".into()),
        token: [1; 16],
        op: PolicyOp::CreateShare,
    };
    let out = node.on_message(
        5,
        2,
        PeerMessage::Accept {
            ballot: b,
            attempt: 7,
            slot: 1,
            entry: entry.clone(),
        },
    );
    assert_eq!(
        out,
        vec![
            Command::Persist(vec![Record::Accept {
                slot: 1,
                ballot: b,
                entry
            }]),
            Command::Send {
                to: 2,
                msg: PeerMessage::Accepted {
                    ballot: b,
                    attempt: 7,
                    slot: 1,
                    suspicious: false
                }
            },
        ]
    );
    // PAXOS-R1: the optimized read now reports a pending accept on the share.
    let q = PeerMessage::Query {
        op: 1,
        attempt: 1,
        key: None,
        share,
        want_value: false,
        want_policy: true,
        lease: None,
    };
    let out = node.on_message(6, 3, q);
    let Some(Command::Send {
        msg: PeerMessage::QueryReply {
            policy: Some(p), ..
        },
        ..
    }) = out.first()
    else {
        panic!("expected a query reply, got {out:?}");
    };
    assert!(p.pending);
    // ... but not on another share.
    let q = PeerMessage::Query {
        op: 2,
        attempt: 1,
        key: None,
        share: ShareId([2; 16]),
        want_value: false,
        want_policy: true,
        lease: None,
    };
    let out = node.on_message(6, 3, q);
    let Some(Command::Send {
        msg: PeerMessage::QueryReply {
            policy: Some(p), ..
        },
        ..
    }) = out.first()
    else {
        panic!("expected a query reply, got {out:?}");
    };
    assert!(!p.pending);
}

#[test]
fn paxos_a3_accept_below_promise_is_rejected() {
    let mut node = trusted_node();
    let high = Ballot {
        round: 5,
        leader: 3,
    };
    node.on_message(
        1,
        3,
        PeerMessage::Prepare {
            ballot: high,
            attempt: 1,
            executed: 0,
        },
    );
    let low = Ballot {
        round: 4,
        leader: 2,
    };
    let out = node.on_message(
        2,
        2,
        PeerMessage::Accept {
            ballot: low,
            attempt: 1,
            slot: 1,
            entry: PolicyEntry::Noop,
        },
    );
    assert_eq!(
        out,
        vec![Command::Send {
            to: 2,
            msg: PeerMessage::Reject {
                ballot: low,
                promised: high
            }
        }]
    );
}

#[test]
fn rec_1_digest_reply_describes_registers_and_paxos_state() {
    let mut node = trusted_node();
    node.on_message(
        1,
        2,
        PeerMessage::Write {
            op: 1,
            attempt: 1,
            key: key(),
            entry: entry(5, b"x"),
            epochs: None,
            holder: Holder::NONE,
            lease: None,
        },
    );
    let out = node.on_message(2, 3, PeerMessage::DigestRequest { round: 4 });
    let [
        Command::Send {
            to: 3,
            msg:
                PeerMessage::DigestReply {
                    round: 4,
                    suspicious: false,
                    buckets,
                    executed: 0,
                    ..
                },
        },
    ] = out.as_slice()
    else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(buckets.len(), digest::BUCKETS);
    assert_ne!(buckets[7], digest::EMPTY);
}

#[test]
fn rec_3_fetch_returns_only_newer_entries() {
    let mut node = trusted_node();
    node.on_message(
        1,
        2,
        PeerMessage::Write {
            op: 1,
            attempt: 1,
            key: key(),
            entry: entry(5, b"x"),
            epochs: None,
            holder: Holder::NONE,
            lease: None,
        },
    );
    let same = vec![(7u16, vec![(key(), Version { seq: 5, writer: 2 })])];
    let out = node.on_message(
        2,
        3,
        PeerMessage::FetchRequest {
            round: 1,
            buckets: same,
            want_snapshot: false,
        },
    );
    assert_eq!(
        out,
        vec![Command::Send {
            to: 3,
            msg: PeerMessage::FetchReply {
                round: 1,
                entries: vec![],
                snapshot: None
            }
        }]
    );
    let older = vec![(7u16, vec![(key(), Version { seq: 4, writer: 2 })])];
    let out = node.on_message(
        3,
        3,
        PeerMessage::FetchRequest {
            round: 1,
            buckets: older,
            want_snapshot: false,
        },
    );
    assert_eq!(
        out,
        vec![Command::Send {
            to: 3,
            msg: PeerMessage::FetchReply {
                round: 1,
                entries: vec![(key(), entry(5, b"x"))],
                snapshot: None
            }
        }]
    );
}

#[test]
fn peer_message_and_state_decoders_reject_garbage() {
    let m = PeerMessage::Stabilize {
        key: key(),
        version: Version { seq: 1, writer: 1 },
    };
    assert_eq!(PeerMessage::decode(&m.encode()).ok(), Some(m));
    assert!(PeerMessage::decode(&[0xff, 0xff, 0xff]).is_err());
    assert!(DurableState::decode(&[0x01]).is_err());
    assert!(Record::decode(&[]).is_err());
    let st = trusted_node().durable().clone();
    assert_eq!(DurableState::decode(&st.encode()).ok(), Some(st));
}

// ---- multi-node scenarios --------------------------------------------------

const SHARE: ShareId = ShareId([1; 16]);
const MS: Millis = 20_000;

/// A cluster past its start-up recovery, with a leader and a share owned by
/// "alice" on which "bob" may write.
fn ready_cluster(mode: Mode) -> Cluster {
    ready_cluster_with(ClusterConfig::new(mode, 2, 2).expect("valid config"))
}

fn ready_cluster_with(config: ClusterConfig) -> Cluster {
    let mut c = Cluster::new(config, 42);
    c.run_for(3_000);
    let r = c.request(
        1,
        "alice",
        Request::ChangePolicy {
            share: SHARE,
            op: PolicyOp::CreateShare,
        },
        MS,
    );
    assert_eq!(r, Some(Response::PolicyChanged { epoch: 1 }));
    let grant = PolicyOp::Grant {
        tenant: TenantId("bob".into()),
        access: Access::ReadWrite,
    };
    let r = c.request(
        2,
        "alice",
        Request::ChangePolicy {
            share: SHARE,
            op: grant,
        },
        MS,
    );
    assert_eq!(r, Some(Response::PolicyChanged { epoch: 2 }));
    c.run_for(500);
    c
}

fn write(c: &mut Cluster, proxy: ReplicaId, tenant: &str, value: &[u8]) -> Option<Response> {
    c.request(
        proxy,
        tenant,
        Request::Write {
            share: SHARE,
            key: key(),
            value: value.to_vec(),
        },
        MS,
    )
}

fn read_value(c: &mut Cluster, proxy: ReplicaId, tenant: &str) -> Option<Vec<u8>> {
    match c.request(
        proxy,
        tenant,
        Request::Read {
            share: SHARE,
            key: key(),
        },
        MS,
    ) {
        Some(Response::Value { value, .. }) => Some(value),
        _ => None,
    }
}

#[test]
fn happy_path_write_then_read_returns_it_from_every_proxy() {
    let mut c = ready_cluster(Mode::Rr);
    for id in 1..=5 {
        assert!(
            !c.node(id).expect("up").status().suspicious,
            "replica {id} recovered"
        );
    }
    assert!(matches!(
        write(&mut c, 3, "alice", b"v1"),
        Some(Response::Written { .. })
    ));
    for proxy in 1..=5 {
        assert_eq!(read_value(&mut c, proxy, "alice"), Some(b"v1".to_vec()));
    }
    assert!(matches!(
        c.request(
            1,
            "alice",
            Request::Delete {
                share: SHARE,
                key: key()
            },
            MS
        ),
        Some(Response::Deleted { .. })
    ));
    assert_eq!(
        c.request(
            4,
            "alice",
            Request::Read {
                share: SHARE,
                key: key()
            },
            MS
        ),
        Some(Response::Error(ErrorKind::NotFound))
    );
}

#[test]
fn two_of_five_down_writes_reads_and_policy_changes_still_work() {
    let mut c = ready_cluster(Mode::Rr);
    c.crash(4);
    c.crash(5);
    assert!(matches!(
        write(&mut c, 1, "alice", b"v2"),
        Some(Response::Written { .. })
    ));
    assert_eq!(read_value(&mut c, 2, "alice"), Some(b"v2".to_vec()));
    let revoke = PolicyOp::Revoke {
        tenant: TenantId("bob".into()),
    };
    assert_eq!(
        c.request(
            3,
            "alice",
            Request::ChangePolicy {
                share: SHARE,
                op: revoke
            },
            MS
        ),
        Some(Response::PolicyChanged { epoch: 3 })
    );
}

#[test]
fn rec_rollback_of_m_r_replicas_then_read_is_still_fresh() {
    // DESIGN §4 / RR §III-D I1: the last write reached only {1, 2, 3}; 1 and 2
    // restart with state from before it, and 3 is slow. A read through 1
    // sees two suspicious replies, so R_Q grows to 5 and the read waits for
    // replica 3 instead of returning the old value from {1, 2, 4}.
    let mut c = ready_cluster(Mode::Rr);
    assert!(matches!(
        write(&mut c, 1, "alice", b"old"),
        Some(Response::Written { .. })
    ));
    c.run_for(200);
    let (old1, old2) = (c.sealed(1), c.sealed(2));
    c.crash(4);
    c.crash(5);
    assert!(matches!(
        write(&mut c, 3, "alice", b"new"),
        Some(Response::Written { .. })
    ));
    c.run_for(100);
    c.restart(1, old1);
    c.restart(2, old2);
    for id in [4, 5] {
        let s = c.sealed(id);
        c.restart(id, s);
    }
    c.block(3);
    c.run_for(10);
    assert!(c.node(1).expect("up").status().suspicious);
    let id = c.submit(
        1,
        "alice",
        Request::Read {
            share: SHARE,
            key: key(),
        },
    );
    c.run_for(300);
    assert_eq!(
        c.reply_for(1, id),
        None,
        "a read quorum without replica 3 must not answer"
    );
    c.heal(3);
    c.run_for(300);
    let Some(Response::Value { value, .. }) = c.reply_for(1, id) else {
        panic!("read did not finish")
    };
    assert_eq!(value, b"new".to_vec());
    // Recovery finishes and fetched the new value into the rolled-back store.
    c.run_for(3_000);
    let n1 = c.node(1).expect("up");
    assert!(!n1.status().suspicious);
    let held = n1
        .durable()
        .registers
        .get(&key())
        .and_then(|e| e.value.data.clone());
    assert_eq!(held, Some(b"new".to_vec()));
}

#[test]
fn faults_skip_recovery_makes_the_same_scenario_stale() {
    // A deliberate bug (Faults::skip_recovery: restarted replicas claim to be
    // trusted) turns the scenario above into a stale read — the scenario
    // bites, and so can the simulator's checker with the same switch.
    let mut config = cfg(Mode::Rr);
    config.faults.skip_recovery = true;
    let mut c = Cluster::new(config, 42);
    c.run_for(3_000);
    let r = c.request(
        1,
        "alice",
        Request::ChangePolicy {
            share: SHARE,
            op: PolicyOp::CreateShare,
        },
        MS,
    );
    assert_eq!(r, Some(Response::PolicyChanged { epoch: 1 }));
    assert!(matches!(
        write(&mut c, 1, "alice", b"old"),
        Some(Response::Written { .. })
    ));
    c.run_for(200);
    let (old1, old2) = (c.sealed(1), c.sealed(2));
    c.crash(4);
    c.crash(5);
    assert!(matches!(
        write(&mut c, 3, "alice", b"new"),
        Some(Response::Written { .. })
    ));
    c.run_for(100);
    c.restart(1, old1);
    c.restart(2, old2);
    for id in [4, 5] {
        let s = c.sealed(id);
        c.restart(id, s);
    }
    c.block(3);
    c.run_for(10);
    let id = c.submit(
        1,
        "alice",
        Request::Read {
            share: SHARE,
            key: key(),
        },
    );
    c.run_for(300);
    let Some(Response::Value { value, .. }) = c.reply_for(1, id) else {
        panic!("read did not finish")
    };
    assert_eq!(value, b"old".to_vec());
}

#[test]
fn rec_all_replicas_restart_at_once_two_rolled_back_recovery_finds_latest() {
    let mut c = ready_cluster(Mode::Rr);
    assert!(matches!(
        write(&mut c, 1, "alice", b"old"),
        Some(Response::Written { .. })
    ));
    c.run_for(200);
    let (old4, old5) = (c.sealed(4), c.sealed(5));
    assert!(matches!(
        write(&mut c, 2, "alice", b"new"),
        Some(Response::Written { .. })
    ));
    let revoke = PolicyOp::Revoke {
        tenant: TenantId("bob".into()),
    };
    assert_eq!(
        c.request(
            3,
            "alice",
            Request::ChangePolicy {
                share: SHARE,
                op: revoke
            },
            MS
        ),
        Some(Response::PolicyChanged { epoch: 3 })
    );
    c.run_for(200);
    for id in 1..=3 {
        let s = c.sealed(id);
        c.restart(id, s);
    }
    c.restart(4, old4);
    c.restart(5, old5);
    c.run_for(5_000);
    for id in 1..=5 {
        let st = c.node(id).expect("up").status();
        assert!(!st.suspicious, "replica {id} recovered");
    }
    for proxy in [4, 5] {
        assert_eq!(read_value(&mut c, proxy, "alice"), Some(b"new".to_vec()));
        // The revocation survived the rollback of replicas 4 and 5 too.
        assert_eq!(
            c.request(
                proxy,
                "bob",
                Request::Read {
                    share: SHARE,
                    key: key()
                },
                MS
            ),
            Some(Response::Error(ErrorKind::Denied))
        );
    }
}

#[test]
fn pol_4_px_5_acquire_writer_fences_the_previous_writer() {
    let mut c = ready_cluster(Mode::Rr);
    assert!(matches!(
        write(&mut c, 1, "alice", b"a1"),
        Some(Response::Written { .. })
    ));
    // bob may write the share but alice created the file: not the writer.
    assert_eq!(
        write(&mut c, 2, "bob", b"b1"),
        Some(Response::Error(ErrorKind::NotWriter))
    );
    let acquire = PolicyOp::AcquireWriter { key: key() };
    assert_eq!(
        c.request(
            2,
            "bob",
            Request::ChangePolicy {
                share: SHARE,
                op: acquire
            },
            MS
        ),
        Some(Response::PolicyChanged { epoch: 1 })
    );
    assert!(matches!(
        write(&mut c, 2, "bob", b"b1"),
        Some(Response::Written { .. })
    ));
    assert_eq!(
        write(&mut c, 3, "alice", b"a2"),
        Some(Response::Error(ErrorKind::NotWriter))
    );
    assert_eq!(read_value(&mut c, 4, "alice"), Some(b"b1".to_vec()));
    // A tenant with no grant is denied.
    assert_eq!(
        write(&mut c, 1, "mallory", b"m"),
        Some(Response::Error(ErrorKind::Denied))
    );
    assert_eq!(
        c.request(
            1,
            "mallory",
            Request::Read {
                share: SHARE,
                key: key()
            },
            MS
        ),
        Some(Response::Error(ErrorKind::Denied))
    );
}

#[test]
fn pol_6_retried_change_with_same_token_applies_once() {
    let mut c = ready_cluster(Mode::Rr);
    let frame = RequestFrame {
        request_id: 900,
        idempotency: [9; 16],
        request: Request::ChangePolicy {
            share: SHARE,
            op: PolicyOp::Revoke {
                tenant: TenantId("carol".into()),
            },
        },
        lease: LeaseAsk::NONE,
    };
    assert_eq!(
        c.request_frame(1, "alice", frame.clone(), MS),
        Some(Response::PolicyChanged { epoch: 3 })
    );
    let retry = RequestFrame {
        request_id: 901,
        ..frame
    };
    assert_eq!(
        c.request_frame(4, "alice", retry, MS),
        Some(Response::PolicyChanged { epoch: 3 })
    );
    let r = c.request(2, "alice", Request::ReadPolicy { share: SHARE }, MS);
    let Some(Response::Policy { policy }) = r else {
        panic!("policy read failed: {r:?}")
    };
    assert_eq!(policy.epoch, 3);
}

#[test]
fn px_9_without_a_quorum_the_proxy_answers_unavailable_at_the_deadline() {
    let mut c = ready_cluster(Mode::Rr);
    for id in 3..=5 {
        c.crash(id);
    }
    let started = c.now();
    let r = write(&mut c, 1, "alice", b"x");
    assert_eq!(r, Some(Response::Error(ErrorKind::Unavailable)));
    assert!(c.now() - started >= Timing::default().op_deadline_ms);
}

#[test]
fn cft_baseline_returns_a_stale_value_after_rollback() {
    // The paper's point (DESIGN §13): majority quorums without suspicion lose
    // a completed write when replicas restart with old state.
    let mut c = ready_cluster(Mode::Cft);
    assert!(matches!(
        write(&mut c, 1, "alice", b"old"),
        Some(Response::Written { .. })
    ));
    c.run_for(200);
    let olds: Vec<DurableState> = (1..=5).map(|id| c.sealed(id)).collect();
    // The new write reaches only replicas 1, 2, 3.
    c.crash(4);
    c.crash(5);
    assert!(matches!(
        write(&mut c, 1, "alice", b"new"),
        Some(Response::Written { .. })
    ));
    // 1 and 2 are rolled back; 3 goes down; 4 and 5 come back.
    c.crash(3);
    for id in [1, 2, 4, 5] {
        let idx = usize::try_from(id - 1).unwrap_or(0);
        c.restart(id, olds[idx].clone());
    }
    c.run_for(1_000);
    assert_eq!(read_value(&mut c, 1, "alice"), Some(b"old".to_vec()));
}

// ---- regressions found by the simulator -------------------------------------

/// The version a replica holds for `key()`, if any.
fn held_version(c: &Cluster, id: ReplicaId) -> Option<Version> {
    c.node(id)
        .and_then(|n| n.durable().registers.get(&key()).map(|e| e.version))
}

#[test]
fn px_7_epoch_retry_reuses_the_first_write_rounds_timestamp() {
    // Simulator finding F1 (seeds rr 2/2 9 and 1). M_R=1, F=2: N=5, W_Q=3,
    // R_Q(s)=3..4. Proxy P's first WRITE round (ABD-W2) is stored by P and
    // the leader L but refused by the three suspicious replicas (PX-6), so P
    // re-reads the policy through L and retries (PX-7). While P is cut off
    // (R_Q(3)=4 lets the others recover without it), a read makes the value
    // visible under the first round's timestamp and a later write completes
    // on top of it. Re-sending the value under a NEW timestamp would install
    // it again above that completed write (the write is lost, and one value
    // lives under two timestamps). PX-7 must resend the same entry.
    let mut c = ready_cluster_with(ClusterConfig::new(Mode::Rr, 1, 2).expect("valid config"));
    let leader = (1..=5)
        .find(|id| c.node(*id).is_some_and(|n| n.status().is_leader))
        .expect("a leader");
    let proxy = if leader == 1 { 2 } else { 1 };
    assert!(matches!(
        write(&mut c, proxy, "alice", b"v0"),
        Some(Response::Written { .. })
    ));
    c.run_for(200);
    let others: Vec<ReplicaId> = (1..=5).filter(|id| *id != proxy && *id != leader).collect();
    for id in &others {
        let s = c.sealed(*id);
        c.restart(*id, s);
    }
    let pending = c.submit(proxy, "alice", write_req(b"v1"));
    c.deliver_all();
    // First round done: stored at P and L, refused by the suspicious rest.
    let first = held_version(&c, proxy).expect("the proxy's replica stored the first write round");
    assert_eq!(held_version(&c, leader), Some(first));
    assert!(others.iter().all(|id| held_version(&c, *id) != Some(first)));
    assert_eq!(
        c.reply_for(proxy, pending),
        None,
        "PX-7: the proxy retries instead of answering"
    );
    // P is cut off while the others recover (REC-0 quarantine).
    c.block(proxy);
    c.run_for(2_500);
    for id in &others {
        assert!(
            !c.node(*id).expect("up").status().suspicious,
            "replica {id} recovered"
        );
    }
    // The pending write's value is now visible ...
    assert_eq!(read_value(&mut c, leader, "alice"), Some(b"v1".to_vec()));
    // ... and a later write completes after that read.
    let Some(Response::Written { version: later }) = write(&mut c, leader, "alice", b"v2") else {
        panic!("write v2 failed")
    };
    assert_eq!(later.seq, first.seq + 1);
    c.heal(proxy);
    c.run_for(1_500);
    let answer = c.reply_for(proxy, pending);
    // The completed write v2 is not lost (v1 was read before v2 was written).
    for id in 1..=5 {
        assert_eq!(
            read_value(&mut c, id, "alice"),
            Some(b"v2".to_vec()),
            "read via {id}"
        );
    }
    assert_eq!(
        answer,
        Some(Response::Written { version: first }),
        "PX-7: same timestamp as the first round"
    );
}

#[test]
fn px_1_op_ids_of_a_restarted_proxy_do_not_match_its_previous_incarnations() {
    // Simulator finding F2 (seeds rr 1/2 1523, rr 2/2 528). A proxy proposes
    // AcquireWriter (PAXOS-L4), crashes before the answer and restarts; its
    // new incarnation's first operation is a Revoke. The leader's answer to
    // the OLD proposal must not complete the new operation: op ids (which
    // match replies to operations) must differ across incarnations.
    let mut c = ready_cluster(Mode::Rr);
    let leader = (1..=5)
        .find(|id| c.node(*id).is_some_and(|n| n.status().is_leader))
        .expect("a leader");
    let proxy = if leader == 5 { 4 } else { 5 };
    c.block(leader);
    let acquire = PolicyOp::AcquireWriter { key: key() };
    let old = c.submit(
        proxy,
        "bob",
        Request::ChangePolicy {
            share: SHARE,
            op: acquire,
        },
    );
    c.deliver_all();
    let s = c.sealed(proxy);
    c.restart(proxy, s);
    let revoke = PolicyOp::Revoke {
        tenant: TenantId("carol".into()),
    };
    let new = c.submit(
        proxy,
        "alice",
        Request::ChangePolicy {
            share: SHARE,
            op: revoke,
        },
    );
    c.heal(leader);
    c.run_for(3_000);
    assert_eq!(
        c.reply_for(proxy, old),
        None,
        "the old incarnation's client is gone"
    );
    // Grant made the share epoch 2; the Revoke makes it 3. (AcquireWriter
    // answers with the FILE epoch, 1.)
    assert_eq!(
        c.reply_for(proxy, new),
        Some(Response::PolicyChanged { epoch: 3 })
    );
}

// ---- decoders of untrusted bytes (the fuzz targets' properties, for CI) -----

mod decode_props {
    use proptest::prelude::*;

    use super::*;

    /// Encoded samples of every decoder's input type, to mutate.
    fn samples() -> Vec<Vec<u8>> {
        let b = Ballot {
            round: 2,
            leader: 3,
        };
        let change = PolicyEntry::Change {
            share: SHARE,
            requester: TenantId("t".into()),
            token: [5; 16],
            op: PolicyOp::CreateShare,
        };
        let mut st = DurableState::default();
        st.apply(&Record::RegisterPut {
            key: key(),
            entry: entry(3, b"v"),
        });
        st.apply(&Record::Accept {
            slot: 1,
            ballot: b,
            entry: change.clone(),
        });
        st.apply(&Record::Execute {
            slot: 1,
            entry: change.clone(),
        });
        vec![
            PeerMessage::Accept {
                ballot: b,
                attempt: 1,
                slot: 4,
                entry: change.clone(),
            }
            .encode(),
            PeerMessage::Write {
                op: 9,
                attempt: 2,
                key: key(),
                entry: entry(4, b"w"),
                epochs: None,
                holder: Holder::NONE,
                lease: None,
            }
            .encode(),
            PeerMessage::DigestReply {
                round: 1,
                suspicious: true,
                buckets: vec![[1; 16]; 3],
                promised: b,
                executed: 1,
                accepted: vec![(2, b, change.clone())],
            }
            .encode(),
            Record::Execute {
                slot: 1,
                entry: change,
            }
            .encode(),
            Record::RegisterPut {
                key: key(),
                entry: entry(1, b"x"),
            }
            .encode(),
            st.encode(),
        ]
    }

    /// Decode with all three decoders; whatever decodes must round-trip, and
    /// applying a decoded record to a decoded state must not panic.
    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(m) = PeerMessage::decode(bytes) {
            prop_assert_eq!(PeerMessage::decode(&m.encode()).ok(), Some(m));
        }
        let record = Record::decode(bytes).ok();
        if let Some(r) = &record {
            prop_assert_eq!(Record::decode(&r.encode()).ok(), Some(r.clone()));
        }
        if let Ok(mut st) = DurableState::decode(bytes) {
            prop_assert_eq!(DurableState::decode(&st.encode()).ok(), Some(st.clone()));
            if let Some(r) = &record {
                st.apply(r);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            check(&bytes)?;
        }

        #[test]
        fn mutated_valid_encodings_never_panic_the_decoders(
            which in 0usize..6,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let all = samples();
            let mut bytes = all[which % all.len()].clone();
            for (at, x) in flips {
                let len = bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= x;
                }
            }
            bytes.truncate(cut % (bytes.len() + 1));
            check(&bytes)?;
        }
    }

    #[test]
    fn restored_state_at_the_last_slot_applies_records_without_overflow() {
        // A sealed snapshot may claim any executed slot; apply must not overflow.
        let st = DurableState {
            executed: u64::MAX,
            ..DurableState::default()
        };
        let mut st = DurableState::decode(&st.encode()).expect("round trip");
        assert!(!st.apply(&Record::Execute {
            slot: 0,
            entry: PolicyEntry::Noop
        }));
        let snap = Record::InstallSnapshot {
            executed: u64::MAX,
            state: PolicyState::default(),
        };
        let mut low = DurableState::default();
        low.apply(&Record::Accept {
            slot: 3,
            ballot: Ballot {
                round: 1,
                leader: 1,
            },
            entry: PolicyEntry::Noop,
        });
        assert!(low.apply(&snap));
        assert!(low.accepted.is_empty());
        assert!(!st.apply(&snap));
    }
}

// ---- Read leases (LEASE-*) ----

const LEASE: Millis = 1_000;
const READER: u64 = 0x11;

fn leased_read(
    c: &mut Cluster,
    proxy: ReplicaId,
    tenant: &str,
    holder: u64,
) -> Option<(Response, u32)> {
    let ask = LeaseAsk {
        holder,
        ms: LEASE as u32,
    };
    c.request_leased(
        proxy,
        tenant,
        Request::Read {
            share: SHARE,
            key: key(),
        },
        ask,
        MS,
    )
}

/// A ready cluster where "alice" wrote `v1` to the key.
fn cluster_with_v1() -> Cluster {
    let mut c = ready_cluster(Mode::Rr);
    assert!(matches!(
        write(&mut c, 1, "alice", b"v1"),
        Some(Response::Written { .. })
    ));
    // LEASE-R5: no lease on a key another session wrote in the last period.
    c.run_for(LEASE);
    c
}

fn write_req(value: &[u8]) -> Request {
    Request::Write {
        share: SHARE,
        key: key(),
        value: value.to_vec(),
    }
}

fn value_of(r: &Response) -> Option<&[u8]> {
    match r {
        Response::Value { value, .. } => Some(value),
        _ => None,
    }
}

#[test]
fn lease_p1_a_read_is_leased_and_another_writer_waits_until_it_ends() {
    let mut c = cluster_with_v1();
    let (r, lease) = leased_read(&mut c, 2, "bob", READER).expect("read answered");
    assert_eq!(value_of(&r), Some(&b"v1"[..]));
    assert_eq!(lease, LEASE as u32);
    let granted_at = c.now();
    // Another writer's write is stored nowhere a lease holds it until the
    // lease ends (LEASE-R2)...
    let id = c.submit(3, "alice", write_req(b"v2"));
    c.run_for(LEASE - 100);
    assert_eq!(c.reply_for(3, id), None, "a write completed during a lease");
    assert!(c.node(1).is_some_and(|n| n.status().writes_held > 0));
    // ...and completes once it has.
    c.run_for(300);
    assert!(matches!(c.reply_for(3, id), Some(Response::Written { .. })));
    assert!(c.now() >= granted_at + LEASE);
    assert_eq!(read_value(&mut c, 4, "bob"), Some(b"v2".to_vec()));
}

#[test]
fn lease_r2_the_holders_own_write_is_not_held_back() {
    let mut c = ready_cluster(Mode::Rr);
    let (_, lease) = leased_read(&mut c, 2, "alice", READER).expect("read answered");
    assert_eq!(lease, LEASE as u32, "a missing key is leased too");
    let frame = |request_id, value: &[u8]| RequestFrame {
        request_id,
        idempotency: [request_id as u8; 16],
        request: write_req(value),
        lease: LeaseAsk {
            holder: READER,
            ms: 0,
        },
    };
    // Another tenant naming the same holder id is not that session: held.
    let r = c.request_frame(2, "bob", frame(776, b"bob's"), 100);
    assert_eq!(r, None, "another tenant's write passed under alice's lease");
    let r = c.request_frame(2, "alice", frame(777, b"mine"), 100);
    assert!(
        matches!(r, Some(Response::Written { .. })),
        "own write held: {r:?}"
    );
}

#[test]
fn lease_r4_no_grant_while_a_write_of_the_key_is_held() {
    let mut c = ready_cluster(Mode::Rr);
    let (_, lease) = leased_read(&mut c, 2, "bob", READER).expect("read answered");
    assert_eq!(lease, LEASE as u32);
    let id = c.submit(3, "alice", write_req(b"v2"));
    c.run_for(100);
    // A second reader is answered, but gets no lease: the held write must not
    // wait behind a stream of new leases.
    let (_, second) = leased_read(&mut c, 4, "bob", 0x23).expect("read answered");
    assert_eq!(second, 0);
    c.run_for(LEASE);
    assert!(matches!(c.reply_for(3, id), Some(Response::Written { .. })));
}

#[test]
fn lease_p1_denied_reads_and_requests_without_a_holder_get_no_lease() {
    let mut c = cluster_with_v1();
    let (r, lease) = leased_read(&mut c, 2, "mallory", READER).expect("read answered");
    assert_eq!((r, lease), (Response::Error(ErrorKind::Denied), 0));
    let (_, lease) = leased_read(&mut c, 2, "bob", 0).expect("read answered");
    assert_eq!(lease, 0);
    let (r, lease) = c
        .request_leased(
            2,
            "bob",
            Request::Read {
                share: SHARE,
                key: key(),
            },
            LeaseAsk::NONE,
            MS,
        )
        .expect("read");
    assert_eq!((value_of(&r), lease), (Some(&b"v1"[..]), 0));
}

#[test]
fn lease_r1_the_cluster_caps_the_length_asked_for() {
    let mut config = cfg(Mode::Rr);
    config.timing.lease_ms = 300;
    let mut c = ready_cluster_with(config);
    let (_, lease) = leased_read(&mut c, 2, "bob", READER).expect("read answered");
    assert_eq!(lease, 300);
    let id = c.submit(3, "alice", write_req(b"v2"));
    c.run_for(350);
    assert!(matches!(c.reply_for(3, id), Some(Response::Written { .. })));
}

#[test]
fn lease_off_grants_nothing_and_holds_nothing() {
    let mut config = cfg(Mode::Rr);
    config.timing.lease_ms = 0;
    let mut c = ready_cluster_with(config);
    let (_, lease) = leased_read(&mut c, 2, "bob", READER).expect("read answered");
    assert_eq!(lease, 0);
    let r = c.request(3, "alice", write_req(b"v2"), 100);
    assert!(matches!(r, Some(Response::Written { .. })));
}

#[test]
fn lease_p2_a_revoke_is_answered_only_after_earlier_leases_ended() {
    let mut c = ready_cluster(Mode::Rr);
    let id = c.submit(
        1,
        "alice",
        Request::ChangePolicy {
            share: SHARE,
            op: PolicyOp::Revoke {
                tenant: TenantId("bob".into()),
            },
        },
    );
    c.run_for(LEASE - 100);
    assert_eq!(
        c.reply_for(1, id),
        None,
        "revoke answered while a lease may last"
    );
    c.run_for(300);
    assert_eq!(
        c.reply_for(1, id),
        Some(Response::PolicyChanged { epoch: 3 })
    );
    // A grant is not a take-away: answered at once.
    let grant = PolicyOp::Grant {
        tenant: TenantId("carol".into()),
        access: Access::Read,
    };
    assert_eq!(
        c.request(
            1,
            "alice",
            Request::ChangePolicy {
                share: SHARE,
                op: grant
            },
            100
        ),
        Some(Response::PolicyChanged { epoch: 4 })
    );
}

/// A started node with leases on (recovery skipped), drained of its start
/// commands.
fn leasing_node(faults: impl FnOnce(&mut Faults)) -> Node {
    let mut c = cfg(Mode::Rr);
    c.timing.lease_ms = LEASE;
    c.faults.skip_recovery = true;
    faults(&mut c.faults);
    Node::start(c, ME, DurableState::default(), 0, 1).0
}

/// A 400 ms lease for `holder`, read by `tenant`.
fn lease_req(holder: Holder, tenant: &str) -> LeaseReq {
    LeaseReq {
        holder,
        ms: 400,
        tenant: TenantId(tenant.into()),
    }
}

/// Whether `out` sends a read or write reply that grants a lease.
fn leased(out: &[Command]) -> bool {
    sends(out).iter().any(|(_, m)| {
        matches!(
            m,
            PeerMessage::QueryReply { leased: true, .. }
                | PeerMessage::WriteReply { leased: true, .. }
        )
    })
}

/// [`leasing_node`] whose policy holds the share `[1; 16]`, created by "alice" (so
/// alice may read it and be granted leases on its keys).
fn leasing_node_with_share(faults: impl FnOnce(&mut Faults)) -> (Node, ShareId) {
    let mut node = leasing_node(faults);
    let share = ShareId([1; 16]);
    node.durable.apply(&Record::Execute {
        slot: 1,
        entry: PolicyEntry::Change {
            share,
            requester: TenantId("alice".into()),
            token: [1; 16],
            op: PolicyOp::CreateShare,
        },
    });
    (node, share)
}

fn write_msg(id: u64, seq: u64) -> PeerMessage {
    PeerMessage::Write {
        op: 9,
        attempt: 1,
        key: key(),
        entry: entry(5, b"w"),
        epochs: None,
        holder: Holder { id, seq },
        lease: None,
    }
}

fn write_replies(commands: &[Command]) -> usize {
    sends(commands)
        .iter()
        .filter(|(_, m)| matches!(m, PeerMessage::WriteReply { .. }))
        .count()
}

#[test]
fn lease_r3_a_started_replica_holds_every_write_for_one_lease() {
    let mut node = leasing_node(|_| {});
    let out = node.on_message(10, 2, write_msg(READER, 1));
    assert_eq!(
        write_replies(&out),
        0,
        "a write answered inside the start-up wait"
    );
    assert!(!out.iter().any(|c| matches!(c, Command::Persist(_))));
    assert!(out.contains(&Command::SetTimer {
        timer: Timer::Lease(key()),
        after_ms: LEASE - 10
    }));
    assert_eq!(node.status().writes_held, 1);
    // A retransmission replaces the held copy: one answer per round.
    let out = node.on_message(20, 2, write_msg(READER, 1));
    assert_eq!(write_replies(&out), 0);
    assert_eq!(node.status().writes_held, 1);
    let out = node.on_timeout(LEASE, Timer::Lease(key()));
    assert_eq!(write_replies(&out), 1);
    assert!(out.iter().any(|c| matches!(c, Command::Persist(_))));
    assert_eq!(node.status().writes_held, 0);
}

#[test]
fn lease_r3_fault_skipping_the_start_up_wait_answers_at_once() {
    let mut node = leasing_node(|f| f.lease_skip_restart_wait = true);
    let out = node.on_message(10, 2, write_msg(READER, 1));
    assert_eq!(write_replies(&out), 1);
}

#[test]
fn lease_r1_r2_a_grant_holds_other_holders_and_ends_on_our_clock() {
    let (mut node, share) = leasing_node_with_share(|_| {});
    let t0 = LEASE + 5;
    let query = |tenant: &str| PeerMessage::Query {
        op: 4,
        attempt: 1,
        key: Some(key()),
        share,
        want_value: true,
        want_policy: false,
        lease: Some(lease_req(
            Holder {
                id: READER,
                seq: 50,
            },
            tenant,
        )),
    };
    // A tenant that may not read the share is answered but granted nothing.
    assert!(!leased(&node.on_message(t0, 2, query("mallory"))));
    assert_eq!(
        write_replies(&node.on_message(t0, 3, write_msg(0x99, 1))),
        1
    );
    let out = node.on_message(t0, 2, query("alice"));
    assert!(
        !leased(&out),
        "granted right after another session's write (LEASE-R5)"
    );
    let t0 = t0 + LEASE;
    assert!(leased(&node.on_message(t0, 2, query("alice"))));
    // The holder's own later write (or its read's write-back) passes...
    assert_eq!(
        write_replies(&node.on_message(t0 + 1, 2, write_msg(READER, 50))),
        1
    );
    assert_eq!(
        write_replies(&node.on_message(t0 + 1, 5, write_msg(READER, 51))),
        1
    );
    // ...another holder's waits, and so do an anonymous write and an attempt
    // the holder sent before the read (it may have given up on it).
    let out = node.on_message(t0 + 2, 3, write_msg(0x99, 60));
    assert_eq!(write_replies(&out), 0);
    assert!(out.contains(&Command::SetTimer {
        timer: Timer::Lease(key()),
        after_ms: 398
    }));
    assert_eq!(
        write_replies(&node.on_message(t0 + 3, 4, write_msg(0, 0))),
        0
    );
    let early_write = match write_msg(READER, 49) {
        PeerMessage::Write {
            attempt,
            key,
            entry,
            epochs,
            holder,
            ..
        } => PeerMessage::Write {
            op: 3,
            attempt,
            key,
            entry,
            epochs,
            holder,
            lease: None,
        },
        other => other,
    };
    assert_eq!(write_replies(&node.on_message(t0 + 3, 2, early_write)), 0);
    assert_eq!(node.status().writes_held, 3);
    assert_eq!(
        write_replies(&node.on_timeout(t0 + 400, Timer::Lease(key()))),
        3
    );
}

/// Restarts forget grants. Without LEASE-R3 a write completes while a lease
/// the cluster reported still lasts; with it, the write waits the lease out.
/// (Four replicas restart at once, so the lease is long enough to outlast
/// their recovery.)
const LONG_LEASE: Millis = 2_000;

fn write_during_lease_after_restarts(skip_wait: bool) -> (Millis, Millis) {
    let mut config = ClusterConfig::new(Mode::Rr, 2, 2).expect("valid config");
    config.timing.lease_ms = LONG_LEASE;
    config.faults.lease_skip_restart_wait = skip_wait;
    let mut c = ready_cluster_with(config);
    assert!(matches!(
        write(&mut c, 1, "alice", b"v1"),
        Some(Response::Written { .. })
    ));
    c.run_for(LONG_LEASE);
    let ask = LeaseAsk {
        holder: READER,
        ms: LONG_LEASE as u32,
    };
    let (_, lease) = c
        .request_leased(
            2,
            "bob",
            Request::Read {
                share: SHARE,
                key: key(),
            },
            ask,
            MS,
        )
        .expect("read answered");
    assert_eq!(lease, LONG_LEASE as u32);
    let granted_at = c.now();
    for id in [1, 3, 4, 5] {
        let state = c.sealed(id);
        c.restart(id, state);
    }
    let id = c.submit(2, "alice", write_req(b"v2"));
    for _ in 0..100 {
        c.run_for(20);
        if c.reply_for(2, id).is_some() {
            return (granted_at, c.now());
        }
    }
    panic!("write never answered");
}

#[test]
fn lease_r3_restarted_replicas_wait_out_leases_they_forgot() {
    let (granted_at, written_at) = write_during_lease_after_restarts(false);
    assert!(
        written_at >= granted_at + LONG_LEASE,
        "write completed at {written_at}, lease from {granted_at}"
    );
    // The planted fault: the same write completes inside the lease.
    let (granted_at, written_at) = write_during_lease_after_restarts(true);
    assert!(
        written_at < granted_at + LONG_LEASE,
        "fault not effective: {written_at} vs {granted_at}"
    );
}

#[test]
fn lease_r5_a_key_another_session_just_wrote_is_not_leased() {
    let mut c = ready_cluster(Mode::Rr);
    let write_as = |c: &mut Cluster, holder: u64, request_id: u64| {
        let frame = RequestFrame {
            request_id,
            idempotency: [request_id as u8; 16],
            request: write_req(b"w"),
            lease: LeaseAsk { holder, ms: 0 },
        };
        c.request_frame(1, "alice", frame, MS)
    };
    assert!(matches!(
        write_as(&mut c, 0x77, 900),
        Some(Response::Written { .. })
    ));
    // Right after another session's write: answered, not leased.
    let (_, lease) = leased_read(&mut c, 2, "alice", READER).expect("read answered");
    assert_eq!(lease, 0);
    // The writer itself may lease what it just wrote...
    let (_, lease) = leased_read(&mut c, 2, "alice", 0x77).expect("read answered");
    assert_eq!(lease, LEASE as u32);
    // ...and once a quiet period passed, anyone may.
    c.run_for(LEASE);
    let (_, lease) = leased_read(&mut c, 2, "alice", READER).expect("read answered");
    assert_eq!(lease, LEASE as u32);
}

// ---- Write leases (LEASE-W*) ----

/// A write by `holder` of `value` through `proxy`, asking for a lease.
fn leased_write(
    c: &mut Cluster,
    proxy: ReplicaId,
    tenant: &str,
    holder: u64,
    value: &[u8],
) -> Option<(Response, u32)> {
    let ask = LeaseAsk {
        holder,
        ms: LEASE as u32,
    };
    c.request_leased(proxy, tenant, write_req(value), ask, MS)
}

#[test]
fn lease_w2_a_write_is_leased_and_another_writer_waits_until_it_ends() {
    let mut c = cluster_with_v1();
    let (r, lease) = leased_write(&mut c, 2, "alice", READER, b"v2").expect("write answered");
    assert!(matches!(r, Response::Written { .. }), "{r:?}");
    assert_eq!(lease, LEASE as u32, "a write alone on its key is leased");
    let granted_at = c.now();
    // Another session's write waits for the lease (LEASE-R2)...
    let id = c.submit(3, "alice", write_req(b"v3"));
    c.run_for(LEASE - 100);
    assert_eq!(c.reply_for(3, id), None, "a write completed during a lease");
    // ...and a reader meanwhile sees what the holder wrote, not the held write.
    assert_eq!(read_value(&mut c, 4, "bob"), Some(b"v2".to_vec()));
    c.run_for(300);
    assert!(matches!(c.reply_for(3, id), Some(Response::Written { .. })));
    assert!(c.now() >= granted_at + LEASE);
    // The holder's own next write passes its lease at once.
    let (r, _) = leased_write(&mut c, 2, "alice", READER, b"v4").expect("write answered");
    assert!(matches!(r, Response::Written { .. }), "{r:?}");
}

#[test]
fn lease_w2_deletes_writes_without_a_holder_and_contended_keys_get_no_lease() {
    let mut c = cluster_with_v1();
    // No holder, or no length asked: no lease.
    let ask = LeaseAsk {
        holder: 0,
        ms: LEASE as u32,
    };
    let (_, lease) = c
        .request_leased(1, "alice", write_req(b"a"), ask, MS)
        .expect("write answered");
    assert_eq!(lease, 0);
    c.run_for(LEASE);
    // A delete asks for none even with a holder.
    let ask = LeaseAsk {
        holder: READER,
        ms: LEASE as u32,
    };
    let del = Request::Delete {
        share: SHARE,
        key: key(),
    };
    let (r, lease) = c
        .request_leased(1, "alice", del, ask, MS)
        .expect("delete answered");
    assert!(matches!(r, Response::Deleted { .. }), "{r:?}");
    assert_eq!(lease, 0);
    // Right after another session's write (the delete above, by READER) a
    // write by a third session is not leased (LEASE-R5).
    let (_, lease) = leased_write(&mut c, 2, "alice", 0x44, b"b").expect("write answered");
    assert_eq!(lease, 0);
}

#[test]
fn lease_w1_a_replica_grants_a_write_lease_only_while_it_holds_that_entry() {
    let grants = |faults: fn(&mut Faults)| {
        let (mut node, _) = leasing_node_with_share(faults);
        let write = |seq: u64, tenant: Option<&str>| {
            let holder = Holder {
                id: READER,
                seq: 100 + seq,
            };
            PeerMessage::Write {
                op: 9,
                attempt: 1,
                key: key(),
                entry: entry(seq, b"w"),
                epochs: None,
                holder,
                lease: tenant.map(|t| Box::new(lease_req(holder, t))),
            }
        };
        let t0 = LEASE + 5;
        let mut replies = vec![];
        // A tenant that may not read the share: stored, not leased.
        replies.push(leased(&node.on_message(t0, 2, write(3, Some("mallory")))));
        // A newer entry stored without asking for a lease...
        assert_eq!(
            write_replies(&node.on_message(t0 + 1, 3, write(5, None))),
            1
        );
        // ...then an older one asking for a lease: acknowledged, but this
        // replica holds a newer entry, so no lease.
        replies.push(leased(&node.on_message(t0 + 2, 2, write(4, Some("alice")))));
        // A newer one: stored and leased.
        replies.push(leased(&node.on_message(t0 + 3, 2, write(6, Some("alice")))));
        replies
    };
    assert_eq!(grants(|_| {}), [false, false, true]);
    // The planted fault grants the late, older write too.
    assert_eq!(
        grants(|f| f.write_lease_any_version = true),
        [false, true, true]
    );
}
