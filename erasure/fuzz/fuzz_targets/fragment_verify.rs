//! Fuzz the fragment header parser and `verify_fragment` (fragments come from
//! untrusted object stores).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    erasure::fuzz_bodies::fragment_verify(data);
});
