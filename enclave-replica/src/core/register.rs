//! Register replica side of RR-ABD (RR §IV-B; PROTOCOLS.md ABD-Q1, ABD-W2,
//! ABD-S1) and the replica side of the proxy's combined first round (PX-1).

use metadata_client::wire::{Key, ShareId, Version};

use super::lease::HeldWrite;
use super::message::{LeaseReq, OpId, OptReadReply, PeerMessage, WriteAck};
use super::state::{Record, RegisterEntry};
use super::{Millis, Node, ReplicaId};

impl Node {
    /// Whether this replica holds an accepted, not yet executed entry that
    /// changes `share` (PAXOS-R1, PX-6).
    pub(crate) fn pending_on_share(&self, share: &ShareId) -> bool {
        self.durable
            .accepted
            .range(self.durable.executed + 1..)
            .any(|(_, (_, entry))| entry.changes_share(share))
    }

    /// ABD-Q1 + PAXOS-R1: answer the proxy's first round with the register
    /// entry and/or the optimized policy read, flagged with our suspicion.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register_on_query(
        &mut self,
        now: Millis,
        from: ReplicaId,
        op: OpId,
        attempt: u32,
        key: Option<Key>,
        share: ShareId,
        want_value: bool,
        want_policy: bool,
        lease: Option<LeaseReq>,
    ) {
        // LEASE-R1: grant before answering, so the grant covers the answer;
        // only to a tenant our policy lets read the share (a lease holds back
        // other tenants' writes, which a stranger must not be able to do).
        let leased = match (lease, key.as_ref()) {
            (Some(l), Some(k))
                if self
                    .durable
                    .policy
                    .view(&share, Some(k))
                    .can_read(&l.tenant) =>
            {
                self.lease_grant(now, k, l.holder, l.ms)
            }
            _ => false,
        };
        let register = key.and_then(|k| self.durable.registers.get(&k)).map(|e| {
            let mut e = e.clone();
            if !want_value {
                // Keep tombstone-ness (None) but drop the bytes: the write round
                // only needs the timestamp, share and creator.
                if let Some(d) = e.value.data.as_mut() {
                    d.clear();
                }
            }
            e
        });
        let policy = want_policy.then(|| OptReadReply {
            executed: self.durable.executed,
            pending: self.pending_on_share(&share),
            view: self.durable.policy.view(&share, key.as_ref()),
        });
        let suspicious = self.flag();
        self.send(
            from,
            PeerMessage::QueryReply {
                op,
                attempt,
                suspicious,
                register,
                policy,
                leased,
            },
        );
    }

    /// ABD-W2: store the value if its timestamp is higher, persist, then ack.
    /// Writes carrying epochs are refused (PX-6) when the epochs differ from
    /// our executed policy state, when we have a pending accept on the share,
    /// or while we are suspicious (our policy state may be rolled back).
    /// A write that a lease holds back (LEASE-R2, R3) is neither stored nor
    /// answered until the lease ends. A write asking for a lease gets one if
    /// this replica now holds exactly the written entry (LEASE-W1).
    pub(crate) fn register_on_write(
        &mut self,
        now: Millis,
        key: Key,
        write: HeldWrite,
        lease: Option<LeaseReq>,
    ) {
        // LEASE-R5 as it stood before this write: letting it through records
        // its own session as the key's last writer.
        let contended = lease.is_some() && self.lease_contended(now, &key, write.holder);
        let Some(write) = self.lease_hold(now, key, write) else {
            return;
        };
        let (from, op, attempt, holder) = (write.from, write.op, write.attempt, write.holder);
        let (entry, epochs) = (write.entry, write.epochs);
        let suspicious = self.flag();
        if let Some(e) = epochs {
            let view = self.durable.policy.view(&e.share, Some(&key));
            let (share_epoch, file_epoch) = (view.share_epoch(), view.file_epoch());
            let mismatch = share_epoch != e.share_epoch || file_epoch != e.file_epoch;
            if mismatch || self.pending_on_share(&e.share) || suspicious {
                if (share_epoch, file_epoch) < (e.share_epoch, e.file_epoch) {
                    // The proxy saw a newer policy than ours: we lag (PAXOS-C1).
                    self.paxos_request_catch_up(now);
                }
                let ack = WriteAck::EpochMismatch {
                    share_epoch,
                    file_epoch,
                };
                self.send(
                    from,
                    PeerMessage::WriteReply {
                        op,
                        attempt,
                        suspicious,
                        ack,
                        leased: false,
                    },
                );
                return;
            }
        }
        let (version, share) = (entry.version, entry.value.share);
        // A write never carries a stable bit: only STABILIZE sets it (ABD-S1).
        let entry = RegisterEntry {
            stable: false,
            ..entry
        };
        self.persist(Record::RegisterPut { key, entry });
        // LEASE-W1: grant only while we hold exactly this entry — a newer
        // one already stored here could complete during the lease — and, as
        // for reads (LEASE-R1), only to a tenant our policy lets read.
        let leased = match lease {
            Some(l) if !contended => {
                let holds_it = self
                    .durable
                    .registers
                    .get(&key)
                    .is_some_and(|e| e.version == version);
                (holds_it || self.cfg.faults.write_lease_any_version)
                    && self
                        .durable
                        .policy
                        .view(&share, Some(&key))
                        .can_read(&l.tenant)
                    && self.lease_grant(now, &key, holder, l.ms)
            }
            _ => false,
        };
        self.send(
            from,
            PeerMessage::WriteReply {
                op,
                attempt,
                suspicious,
                ack: WriteAck::Stored,
                leased,
            },
        );
    }

    /// ABD-S1: mark the held value stable if STABILIZE names its timestamp.
    pub(crate) fn register_on_stabilize(&mut self, key: Key, version: Version) {
        self.persist(Record::RegisterStable { key, version });
    }
}
