//! Fuzz `PeerMessage::decode`: replica-to-replica bytes come off the network.
//! Whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]

use enclave_replica::core::PeerMessage;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = PeerMessage::decode(data) {
        let again = PeerMessage::decode(&msg.encode());
        assert_eq!(again.ok(), Some(msg), "a decoded message must re-encode to itself");
    }
});
