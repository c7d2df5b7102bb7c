//! Decoders of peer bytes never panic (COMMON "untrusted bytes", DESIGN §7–§8).
//!
//! These run the very bodies of the cargo-fuzz targets in `metadata-client/fuzz/`
//! (shared through `tests/support/decoder_bodies.rs`), so every `cargo test` covers
//! them: with arbitrary bytes, with randomly mutated genuine encodings, and with
//! exhaustive single-bit flips and truncations of every genuine encoding.

#[path = "support/decoder_bodies.rs"]
mod decoder_bodies;
#[path = "support/fuzz_inputs.rs"]
mod fuzz_inputs;

use decoder_bodies::*;
use fuzz_inputs::{mutation_input, raw_input};
use metadata_client::transport::{DEFAULT_MAX_FRAME_BYTES, FrameCodec};
use proptest::prelude::*;

#[test]
fn genuine_encodings_are_accepted() {
    for bytes in request_encodings() {
        assert!(check_request(&bytes));
    }
    for bytes in response_encodings() {
        assert!(check_response(&bytes));
    }
    for stream in frame_stream_fixtures() {
        let frames = check_frames(DEFAULT_MAX_FRAME_BYTES, &stream, &[255]);
        assert!(!frames.is_empty());
    }
}

#[test]
fn every_truncation_of_a_genuine_message_is_an_error() {
    // postcard reads a fixed schema field by field and the last field needs the last
    // byte, so a strict prefix can never decode.
    for bytes in request_encodings() {
        for cut in 0..bytes.len() {
            assert!(
                !check_request(&bytes[..cut]),
                "request prefix of {cut} bytes accepted"
            );
        }
    }
    for bytes in response_encodings() {
        for cut in 0..bytes.len() {
            assert!(
                !check_response(&bytes[..cut]),
                "response prefix of {cut} bytes accepted"
            );
        }
    }
}

#[test]
fn every_bit_flip_of_a_genuine_message_is_rejected_or_round_trips() {
    for bytes in request_encodings() {
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                let _accepted = check_request(&damaged);
                // A response decoder fed a request must not panic either.
                let _accepted = check_response(&damaged);
            }
        }
    }
    for bytes in response_encodings() {
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                let _accepted = check_response(&damaged);
            }
        }
    }
}

#[test]
fn every_truncation_of_a_frame_stream_yields_whole_frames_then_truncated() {
    // DESIGN §8 framing: a stream cut anywhere yields the frames wholly before the cut,
    // then (unless the cut falls on a frame boundary) `Truncated` at end of stream.
    for stream in frame_stream_fixtures() {
        let whole = check_frames(DEFAULT_MAX_FRAME_BYTES, &stream, &[255]);
        for cut in 0..stream.len() {
            let frames = check_frames(DEFAULT_MAX_FRAME_BYTES, &stream[..cut], &[7, 1, 200]);
            assert!(frames.len() <= whole.len());
            assert_eq!(
                frames[..],
                whole[..frames.len()],
                "cut at {cut} changed a frame"
            );
        }
    }
}

#[test]
fn every_bit_flip_of_a_frame_stream_never_panics() {
    for stream in frame_stream_fixtures() {
        for at in 0..stream.len() {
            for bit in 0..8 {
                let mut damaged = stream.clone();
                damaged[at] ^= 1 << bit;
                // Small maximum too, so flipped length prefixes hit `Oversized`.
                let _frames = check_frames(DEFAULT_MAX_FRAME_BYTES, &damaged, &[3, 64]);
                let _frames = check_frames(40, &damaged, &[255]);
            }
        }
    }
}

#[test]
fn oversized_and_empty_prefixes_are_refused_before_buffering() {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;
    // A 4 GiB announcement costs four bytes: refused as soon as the prefix is in.
    let mut codec = FrameCodec::new(64);
    let mut buffer = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert!(codec.decode(&mut buffer).is_err());
    assert!(
        buffer.capacity() < 1024,
        "reserved {} bytes for a refused frame",
        buffer.capacity()
    );
    let mut buffer = BytesMut::from(&[0, 0, 0, 0, 1][..]);
    assert!(codec.decode(&mut buffer).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_arbitrary_bytes(data in raw_input()) { decode_request(&data); }
    #[test]
    fn request_mutated(data in mutation_input()) { decode_request(&data); }

    #[test]
    fn response_arbitrary_bytes(data in raw_input()) { decode_response(&data); }
    #[test]
    fn response_mutated(data in mutation_input()) { decode_response(&data); }

    #[test]
    fn frame_codec_arbitrary_bytes(data in raw_input()) { frame_codec(&data); }
    #[test]
    fn frame_codec_mutated(
        head in proptest::array::uniform5(any::<u8>()),
        data in mutation_input(),
    ) {
        let mut input = head.to_vec();
        input.extend(data);
        frame_codec(&input);
    }
}
