//! Fuzz `wire::decode_request`: what a tenant sends its proxy.
//! The body is shared with `metadata-client/tests/decoders_never_panic.rs`.
#![no_main]

#[path = "../../tests/support/decoder_bodies.rs"]
mod decoder_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decoder_bodies::decode_request(data);
});
