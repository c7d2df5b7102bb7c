//! The history of client operations as the clients saw them: when each was
//! called, when (if ever) it returned, and with what.
//!
//! Positions (`call_seq`, `ret_seq`) come from one counter the simulator
//! bumps on every event, so real-time order between operations is exact.
//! One record is one *attempt*: a client that times out and retries at
//! another proxy starts a new record, and the timed-out one stays pending
//! forever — it may or may not have taken effect. Register writes use a fresh
//! value per attempt so a read names the attempt it saw.

use std::collections::BTreeMap;

use metadata_client::wire::{ErrorKind, Key, Request, Response, ShareId, Version};

use super::checker::Timed;
use super::checker::register::{RegOp, ValueId};

#[derive(Clone, Debug)]
pub struct OpRecord {
    pub client: usize,
    pub request: Request,
    /// For writes: the value id encoded in the written bytes.
    pub value_id: Option<ValueId>,
    /// Idempotency token the request carried (a policy change keeps it
    /// across attempts).
    pub token: [u8; 16],
    pub call_seq: u64,
    pub call_ms: u64,
    pub ret_seq: Option<u64>,
    pub ret_ms: Option<u64>,
    pub response: Option<Response>,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
}

/// One key's register ops, each with the index of its record.
pub type KeyHistory = Vec<(Timed<RegOp>, usize)>;

/// Bytes the simulator writes for value `id`.
pub fn encode_value(id: ValueId) -> Vec<u8> {
    format!("v{id}").into_bytes()
}

/// The value id in bytes a read returned, if they are bytes some write used.
pub fn decode_value(bytes: &[u8]) -> Option<ValueId> {
    std::str::from_utf8(bytes)
        .ok()?
        .strip_prefix('v')?
        .parse()
        .ok()
}

/// What a completed register operation says about the register, or why it
/// says nothing.
#[derive(Debug)]
pub enum RegOutcome {
    Op(RegOp),
    /// The op had no effect (refused by policy, or a read that failed).
    NoEffect,
    /// The op may or may not have taken effect (e.g. `Unavailable`).
    Unknown,
    /// The response cannot be an answer to this request at all.
    Malformed(String),
}

impl History {
    pub fn call(
        &mut self,
        client: usize,
        request: Request,
        value_id: Option<ValueId>,
        token: [u8; 16],
        seq: u64,
        now_ms: u64,
    ) -> usize {
        self.ops.push(OpRecord {
            client,
            request,
            value_id,
            token,
            call_seq: seq,
            call_ms: now_ms,
            ret_seq: None,
            ret_ms: None,
            response: None,
        });
        self.ops.len() - 1
    }

    pub fn complete(&mut self, op: usize, response: Response, seq: u64, now_ms: u64) {
        let rec = &mut self.ops[op];
        debug_assert!(rec.ret_seq.is_none(), "op {op} completed twice");
        rec.ret_seq = Some(seq);
        rec.ret_ms = Some(now_ms);
        rec.response = Some(response);
    }

    /// Interpret a register op's response.
    pub fn reg_outcome(rec: &OpRecord) -> RegOutcome {
        let Some(resp) = &rec.response else {
            return RegOutcome::Unknown;
        };
        match (&rec.request, resp) {
            (Request::Write { .. }, Response::Written { version }) => match rec.value_id {
                Some(value) => RegOutcome::Op(RegOp::Write {
                    value,
                    version: Some(*version),
                }),
                None => RegOutcome::Malformed("write without a value id".into()),
            },
            (Request::Delete { .. }, Response::Deleted { version }) => {
                RegOutcome::Op(RegOp::Delete {
                    version: Some(*version),
                })
            }
            (Request::Delete { .. }, Response::Error(ErrorKind::NotFound)) => {
                RegOutcome::Op(RegOp::ReadNotFound)
            }
            (Request::Read { .. }, Response::Value { value, version }) => match decode_value(value)
            {
                Some(id) => RegOutcome::Op(RegOp::ReadValue {
                    value: id,
                    version: *version,
                }),
                None => {
                    RegOutcome::Malformed(format!("read returned bytes no write wrote: {value:?}"))
                }
            },
            (Request::Read { .. }, Response::Error(ErrorKind::NotFound)) => {
                RegOutcome::Op(RegOp::ReadNotFound)
            }
            (_, Response::Error(ErrorKind::Unavailable)) => RegOutcome::Unknown,
            (
                Request::Read { .. } | Request::Write { .. } | Request::Delete { .. },
                Response::Error(_),
            ) => RegOutcome::NoEffect,
            (req, resp) => RegOutcome::Malformed(format!("response {resp:?} to {req:?}")),
        }
    }

    /// Per-key register histories, ready for the linearizability checker.
    /// Also returns, for each op in a key's history, the index of its record
    /// (for reports).
    pub fn register_histories(&self) -> Result<BTreeMap<Key, KeyHistory>, String> {
        let mut out: BTreeMap<Key, KeyHistory> = BTreeMap::new();
        for (i, rec) in self.ops.iter().enumerate() {
            let key = match &rec.request {
                Request::Read { key, .. }
                | Request::Write { key, .. }
                | Request::Delete { key, .. } => *key,
                _ => continue,
            };
            let timed = match Self::reg_outcome(rec) {
                RegOutcome::Op(op) => Timed {
                    op,
                    call: rec.call_seq,
                    ret: rec.ret_seq,
                },
                RegOutcome::NoEffect => continue,
                RegOutcome::Unknown => {
                    let op = match &rec.request {
                        Request::Write { .. } => match rec.value_id {
                            Some(value) => RegOp::Write {
                                value,
                                version: None,
                            },
                            None => continue,
                        },
                        Request::Delete { .. } => RegOp::Delete { version: None },
                        // A read with an unknown result constrains nothing.
                        _ => continue,
                    };
                    Timed {
                        op,
                        call: rec.call_seq,
                        ret: None,
                    }
                }
                RegOutcome::Malformed(why) => {
                    return Err(format!("op #{i} by client {}: {why}", rec.client));
                }
            };
            out.entry(key).or_default().push((timed, i));
        }
        Ok(out)
    }

    /// Highest version of a write or delete on `key` that completed before
    /// position `before_seq` (for the online stale-read check and the
    /// durability check).
    pub fn latest_completed_version(&self, key: &Key, before_seq: u64) -> Option<(Version, usize)> {
        let mut best: Option<(Version, usize)> = None;
        for (i, rec) in self.ops.iter().enumerate() {
            let (Some(ret), Some(resp)) = (rec.ret_seq, &rec.response) else {
                continue;
            };
            if ret >= before_seq {
                continue;
            }
            let v = match (&rec.request, resp) {
                (Request::Write { key: k, .. }, Response::Written { version }) if k == key => {
                    *version
                }
                (Request::Delete { key: k, .. }, Response::Deleted { version }) if k == key => {
                    *version
                }
                _ => continue,
            };
            if best.is_none_or(|(b, _)| v > b) {
                best = Some((v, i));
            }
        }
        best
    }

    pub fn pending(&self) -> impl Iterator<Item = (usize, &OpRecord)> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, r)| r.ret_seq.is_none())
    }

    /// Per-share policy operations (`ChangePolicy`, `ReadPolicy`).
    pub fn policy_ops(&self) -> BTreeMap<ShareId, Vec<usize>> {
        let mut out: BTreeMap<ShareId, Vec<usize>> = BTreeMap::new();
        for (i, rec) in self.ops.iter().enumerate() {
            match &rec.request {
                Request::ChangePolicy { share, .. } | Request::ReadPolicy { share } => {
                    out.entry(*share).or_default().push(i)
                }
                _ => {}
            }
        }
        out
    }

    /// One line per op, for failure reports.
    pub fn describe(&self, i: usize) -> String {
        let r = &self.ops[i];
        let ret = match (r.ret_ms, &r.response) {
            (Some(ms), Some(resp)) => format!(
                "returned at {ms} ms (#{}): {resp:?}",
                r.ret_seq.unwrap_or_default()
            ),
            _ => "never returned".to_string(),
        };
        let value = r
            .value_id
            .map(|v| format!(" value=v{v}"))
            .unwrap_or_default();
        format!(
            "op #{i} client {} called at {} ms (#{}): {:?}{value}; {ret}",
            r.client, r.call_ms, r.call_seq, r.request
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_bytes_are_rejected() {
        assert_eq!(decode_value(&encode_value(42)), Some(42));
        assert_eq!(decode_value(b"garbage"), None);
        assert_eq!(decode_value(&[0xff, 0x00]), None);
    }
}
