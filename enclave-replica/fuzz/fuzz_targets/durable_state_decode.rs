//! Fuzz `DurableState::decode` (snapshots from the sealed store). The first
//! byte splits the input: a snapshot, then a log record applied on top of it,
//! as a restart replays the log over the last snapshot. Nothing may panic.
#![no_main]

use enclave_replica::core::{DurableState, Record};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first() else { return };
    let at = usize::from(*split).min(rest.len());
    let (snapshot, log) = rest.split_at(at);
    if let Ok(mut state) = DurableState::decode(snapshot) {
        let again = DurableState::decode(&state.encode());
        assert_eq!(again.ok().as_ref(), Some(&state), "a decoded snapshot must re-encode to itself");
        if let Ok(record) = Record::decode(log) {
            state.apply(&record);
        }
    }
});
