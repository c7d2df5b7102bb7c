//! Linearizability checking of recorded histories.
//!
//! [`check`] is a Wing–Gong search with Lowe's memoization (the algorithm
//! behind Porcupine and Knossos' "linear" checker): walk the history's call
//! and return events in real-time order, tentatively linearize any operation
//! whose call is still pending, backtrack when a return is reached for an
//! operation not yet linearized, and remember every `(set of linearized
//! operations, model state)` already explored so no configuration is searched
//! twice. A history is split per object (per key, per share) before it gets
//! here — linearizability is compositional, and small per-object histories
//! keep the search cheap.
//!
//! Operations that never returned (a client timed out, a proxy crashed) are
//! *optional*: they may be linearized anywhere after their call, or not at
//! all, because the system may or may not have carried them out.
//!
//! Modules: [`register`] (the read/write/delete register spec used per key),
//! [`policy`] (policy-epoch checks per share).

pub mod policy;
pub mod register;

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification: what one operation, with the outcome the
/// history recorded for it, does to the state — or `None` when that outcome
/// is impossible in that state.
pub trait SequentialSpec {
    type State: Clone + Eq + Hash + Debug;
    type Op: Debug;

    fn init(&self) -> Self::State;
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a history. `call` and `ret` are positions in one global
/// event order (the simulator's step counter), so "returned before called"
/// is a strict, unambiguous relation even when simulated milliseconds tie.
#[derive(Clone, Debug)]
pub struct Timed<Op> {
    pub op: Op,
    pub call: u64,
    /// `None`: the operation never returned; it is optional.
    pub ret: Option<u64>,
}

/// Why a history is not linearizable, for the failure report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinError {
    /// No order exists. `stuck` is the operation (index into the history)
    /// whose return was reached without being able to place it, at the
    /// deepest point the search got; `prefix` is the longest linearization of
    /// the other operations found before it.
    NotLinearizable { stuck: usize, prefix: Vec<usize> },
    /// The search exceeded its step budget; treated as a failure so that a
    /// history too large to check is looked at rather than waved through.
    BudgetExhausted { steps: u64 },
}

/// Upper bound on search steps per history. Per-key histories in the
/// simulator are tens of operations; a correct history is usually accepted
/// in a few hundred steps, so this is only a guard against a pathological
/// explosion.
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

const NIL: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call: index of its matching return entry, if the op returned.
    matching_ret: usize,
    prev: usize,
    next: usize,
}

/// Is `history` linearizable with respect to `spec`? See the module docs.
pub fn check<S: SequentialSpec>(spec: &S, history: &[Timed<S::Op>]) -> Result<(), LinError> {
    check_with_budget(spec, history, DEFAULT_STEP_BUDGET)
}

pub fn check_with_budget<S: SequentialSpec>(
    spec: &S,
    history: &[Timed<S::Op>],
    budget_steps: u64,
) -> Result<(), LinError> {
    if history.is_empty() {
        return Ok(());
    }
    // Build the event list: entry 0 is the head sentinel.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (i, t) in history.iter().enumerate() {
        events.push((t.call, true, i));
        if let Some(ret) = t.ret {
            assert!(
                ret > t.call,
                "history op {i} returns ({ret}) before it is called ({})",
                t.call
            );
            events.push((ret, false, i));
        }
    }
    events.sort_by_key(|e| e.0);
    let mut entries: Vec<Entry> = Vec::with_capacity(events.len() + 1);
    entries.push(Entry {
        op: NIL,
        is_call: false,
        matching_ret: NIL,
        prev: NIL,
        next: NIL,
    });
    let mut ret_index = vec![NIL; history.len()];
    for (pos, &(_, is_call, op)) in events.iter().enumerate() {
        let idx = pos + 1;
        entries.push(Entry {
            op,
            is_call,
            matching_ret: NIL,
            prev: idx - 1,
            next: NIL,
        });
        entries[idx - 1].next = idx;
        if !is_call {
            ret_index[op] = idx;
        }
    }
    for e in entries.iter_mut().skip(1) {
        if e.is_call {
            e.matching_ret = ret_index[e.op];
        }
    }

    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, S::State)> = HashSet::new();
    let mut calls: Vec<(usize, S::State)> = Vec::new();
    let mut state = spec.init();
    let mut entry = entries[0].next;
    let mut steps: u64 = 0;
    let mut deepest: Option<(usize, Vec<usize>)> = None;

    while entries[0].next != NIL {
        steps += 1;
        if steps > budget_steps {
            return Err(LinError::BudgetExhausted { steps });
        }
        if entry == NIL {
            // Only calls of never-returned operations remain ahead, and none
            // of them has to be placed: every completed op is linearized.
            return Ok(());
        }
        let e = entries[entry];
        if e.is_call {
            if let Some(next_state) = spec.step(&state, &history[e.op].op) {
                let mut bits = linearized.clone();
                bits[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((bits.clone(), next_state.clone())) {
                    calls.push((entry, state));
                    state = next_state;
                    linearized = bits;
                    lift(&mut entries, entry);
                    entry = entries[0].next;
                    continue;
                }
            }
            entry = e.next;
        } else {
            // A return of an op not yet linearized: this branch is dead.
            if deepest.as_ref().is_none_or(|(_, p)| calls.len() > p.len()) {
                deepest = Some((e.op, calls.iter().map(|(c, _)| entries[*c].op).collect()));
            }
            let Some((call_entry, prev_state)) = calls.pop() else {
                let (stuck, prefix) = deepest.unwrap_or((e.op, Vec::new()));
                return Err(LinError::NotLinearizable { stuck, prefix });
            };
            state = prev_state;
            let op = entries[call_entry].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut entries, call_entry);
            entry = entries[call_entry].next;
        }
    }
    Ok(())
}

fn unlink(entries: &mut [Entry], idx: usize) {
    let Entry { prev, next, .. } = entries[idx];
    entries[prev].next = next;
    if next != NIL {
        entries[next].prev = prev;
    }
}

fn relink(entries: &mut [Entry], idx: usize) {
    let Entry { prev, next, .. } = entries[idx];
    entries[prev].next = idx;
    if next != NIL {
        entries[next].prev = idx;
    }
}

/// Remove a call (and its return, if any) from the list of pending events.
fn lift(entries: &mut [Entry], call: usize) {
    unlink(entries, call);
    let ret = entries[call].matching_ret;
    if ret != NIL {
        unlink(entries, ret);
    }
}

/// Undo [`lift`]; entries keep their own prev/next, so relinking in reverse
/// order restores the list exactly (dancing links).
fn unlift(entries: &mut [Entry], call: usize) {
    let ret = entries[call].matching_ret;
    if ret != NIL {
        relink(entries, ret);
    }
    relink(entries, call);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter whose ops are `Inc` (returns nothing) and `Get(n)`.
    struct Counter;
    #[derive(Debug)]
    enum CounterOp {
        Inc,
        Get(u32),
    }
    impl SequentialSpec for Counter {
        type State = u32;
        type Op = CounterOp;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, s: &u32, op: &CounterOp) -> Option<u32> {
            match op {
                CounterOp::Inc => Some(s + 1),
                CounterOp::Get(n) => (n == s).then_some(*s),
            }
        }
    }

    fn t(op: CounterOp, call: u64, ret: Option<u64>) -> Timed<CounterOp> {
        Timed { op, call, ret }
    }

    #[test]
    fn sequential_history_is_accepted() {
        let h = [
            t(CounterOp::Inc, 1, Some(2)),
            t(CounterOp::Get(1), 3, Some(4)),
        ];
        assert_eq!(check(&Counter, &h), Ok(()));
    }

    #[test]
    fn read_that_misses_a_completed_increment_is_rejected() {
        let h = [
            t(CounterOp::Inc, 1, Some(2)),
            t(CounterOp::Get(0), 3, Some(4)),
        ];
        assert!(matches!(
            check(&Counter, &h),
            Err(LinError::NotLinearizable { stuck: 1, .. })
        ));
    }

    #[test]
    fn concurrent_ops_may_be_ordered_either_way() {
        // Get overlaps Inc: both 0 and 1 are legal answers.
        for seen in [0, 1] {
            let h = [
                t(CounterOp::Inc, 1, Some(4)),
                t(CounterOp::Get(seen), 2, Some(3)),
            ];
            assert_eq!(check(&Counter, &h), Ok(()), "get({seen})");
        }
    }

    #[test]
    fn pending_op_is_optional_but_may_take_effect() {
        // A never-returned Inc may or may not have happened.
        for seen in [0, 1] {
            let h = [
                t(CounterOp::Inc, 1, None),
                t(CounterOp::Get(seen), 2, Some(3)),
            ];
            assert_eq!(check(&Counter, &h), Ok(()), "get({seen})");
        }
        // ...but it cannot happen before it was called.
        let h = [t(CounterOp::Get(1), 1, Some(2)), t(CounterOp::Inc, 3, None)];
        assert!(check(&Counter, &h).is_err());
        // ...and cannot take effect twice.
        let h = [t(CounterOp::Inc, 1, None), t(CounterOp::Get(2), 2, Some(3))];
        assert!(check(&Counter, &h).is_err());
    }

    #[test]
    fn reads_going_backwards_are_rejected() {
        // Two increments overlap two gets; the gets see 2 then 1: not allowed.
        let h = [
            t(CounterOp::Inc, 1, Some(10)),
            t(CounterOp::Inc, 2, Some(11)),
            t(CounterOp::Get(2), 3, Some(4)),
            t(CounterOp::Get(1), 5, Some(6)),
        ];
        assert!(check(&Counter, &h).is_err());
    }

    #[test]
    fn budget_is_enforced() {
        let h: Vec<_> = (0..40)
            .map(|i| t(CounterOp::Inc, i, None))
            .chain([t(CounterOp::Get(100), 50, Some(51))])
            .collect();
        assert!(matches!(
            check_with_budget(&Counter, &h, 1000),
            Err(LinError::BudgetExhausted { .. })
        ));
    }
}
