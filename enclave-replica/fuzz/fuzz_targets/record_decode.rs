//! Fuzz `Record::decode`: log records come back from the sealed store, which
//! may hold anything after a crash or tampering.
#![no_main]

use enclave_replica::core::Record;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let again = Record::decode(&record.encode());
        assert_eq!(again.ok(), Some(record), "a decoded record must re-encode to itself");
    }
});
