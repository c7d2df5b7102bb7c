//! proptest strategies for the inputs of the decoder fuzz bodies (see `mutation.rs` for
//! the input layout), shared by the `decoders_never_panic` tests of `metadata-client`
//! and `teemsfs`.

use proptest::prelude::*;

/// An input in "mutate a genuine encoding" mode: odd mode byte, fixture pick, then a
/// mutation script.
pub fn mutation_input() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(pick, script)| {
        let mut input = vec![1, pick];
        input.extend(script);
        input
    })
}

/// Arbitrary bytes (mode byte included, so half of them are raw-mode inputs).
pub fn raw_input() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..600)
}
