//! Fuzz `BlobRef::decode` (encoded BlobRefs come from TEEMS metadata).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    erasure::fuzz_bodies::blob_ref_decode(data);
});
