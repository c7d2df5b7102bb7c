//! Fuzz the TEEMS value of one bucket of a multi-bucket directory (`BucketMeta`).
//! The body is shared with `teemsfs/tests/decoders_never_panic.rs`.
#![no_main]

#[path = "../../tests/support/decoder_bodies.rs"]
mod decoder_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decoder_bodies::bucket_meta(data);
});
