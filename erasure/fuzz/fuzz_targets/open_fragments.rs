//! Fuzz `open` with fragments that are genuine, damaged, truncated or arbitrary.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    erasure::fuzz_bodies::open_arbitrary(data);
});
