//! Fuzz a directory bucket blob (`Bucket`) read back from the object stores.
//! The body is shared with `teemsfs/tests/decoders_never_panic.rs`.
#![no_main]

#[path = "../../tests/support/decoder_bodies.rs"]
mod decoder_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decoder_bodies::dir_bucket(data);
});
