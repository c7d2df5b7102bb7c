//! Fuzz the rename intent recovered after a crash (`RenameIntent`, DESIGN §10).
//! The body is shared with `teemsfs/tests/decoders_never_panic.rs`.
#![no_main]

#[path = "../../tests/support/decoder_bodies.rs"]
mod decoder_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decoder_bodies::rename_intent(data);
});
