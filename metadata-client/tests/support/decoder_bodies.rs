//! Bodies of the cargo-fuzz targets in `metadata-client/fuzz/`: the decoders of bytes
//! a peer sends over the client ↔ proxy and replica ↔ replica links (DESIGN §7, §8).
//!
//! The same file is compiled into the fuzz targets (through `#[path]`) and into
//! `tests/decoders_never_panic.rs`, so every `cargo test` runs exactly the code the
//! fuzzer runs. A body panics only when an invariant breaks:
//!
//! - `decode_request` / `decode_response` never panic; what they accept survives an
//!   encode/decode round trip (postcard tolerates trailing bytes and overlong varints,
//!   so the *value*, not the byte string, is what must come back);
//! - `FrameCodec::decode` never panics whatever bytes arrive in whatever chunks; every
//!   frame it yields is within the configured maximum and re-encodes to exactly the
//!   bytes it consumed; once it reports an error no frame was invented.
//!
//! Input layout of every body: the first byte picks the mode. Even: the rest is raw
//! bytes. Odd: the rest is a mutation script applied to a genuine encoding (chosen by
//! the second byte), so the fuzzer also explores inputs next to valid ones.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use metadata_client::transport::{DEFAULT_MAX_FRAME_BYTES, FrameCodec, FrameError};
use metadata_client::wire::{
    self, Access, ErrorKind, Key, LeaseAsk, PolicyOp, Request, RequestFrame, Response,
    ResponseFrame, ShareId, SharePolicy, TenantId, Version,
};
use tokio_util::codec::{Decoder, Encoder};

#[path = "mutation.rs"]
mod mutation;
use mutation::input_bytes;

/// Most `decode` calls one frame-codec input may make: each call either yields a frame
/// (consuming at least five bytes), asks for more, or fails, so this is never reached
/// by a correct codec and guards the fuzzer against a codec that loops.
const MAX_DECODE_CALLS: usize = 10_000;

// ---------------------------------------------------------------------------
// Genuine encodings
// ---------------------------------------------------------------------------

fn share() -> ShareId {
    ShareId([7; 16])
}

fn tenant(name: &str) -> TenantId {
    TenantId(name.to_owned())
}

/// One request frame of every request and policy-op variant.
pub fn request_fixtures() -> Vec<RequestFrame> {
    let key = Key::from_name("fixture");
    let requests = vec![
        Request::Read {
            share: share(),
            key,
        },
        Request::Write {
            share: share(),
            key,
            value: b"inode bytes".to_vec(),
        },
        Request::Delete {
            share: share(),
            key,
        },
        Request::ChangePolicy {
            share: share(),
            op: PolicyOp::CreateShare,
        },
        Request::ChangePolicy {
            share: share(),
            op: PolicyOp::Grant {
                tenant: tenant("bob"),
                access: Access::ReadWrite,
            },
        },
        Request::ChangePolicy {
            share: share(),
            op: PolicyOp::Revoke {
                tenant: tenant("eve"),
            },
        },
        Request::ChangePolicy {
            share: share(),
            op: PolicyOp::AcquireWriter { key },
        },
        Request::ChangePolicy {
            share: share(),
            op: PolicyOp::TransferOwner { to: tenant("ann") },
        },
        Request::ReadPolicy { share: share() },
    ];
    requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| RequestFrame {
            request_id: ((i as u64) << 40) | 3,
            idempotency: [i as u8; 16],
            request,
            lease: if i % 2 == 0 {
                LeaseAsk::NONE
            } else {
                LeaseAsk {
                    holder: (i as u64) << 20 | 1,
                    ms: 900,
                }
            },
        })
        .collect()
}

/// One response frame of every response and error variant.
pub fn response_fixtures() -> Vec<ResponseFrame> {
    let version = Version {
        seq: 1 << 33,
        writer: 2,
    };
    let responses = vec![
        Response::Value {
            value: b"value".to_vec(),
            version,
        },
        Response::Written { version },
        Response::Deleted { version },
        Response::PolicyChanged { epoch: 9 },
        Response::Policy {
            policy: SharePolicy {
                epoch: 4,
                owner: Some(tenant("ann")),
                acl: vec![
                    (tenant("bob"), Access::Read),
                    (tenant("cy"), Access::ReadWrite),
                ],
            },
        },
        Response::Error(ErrorKind::NotFound),
        Response::Error(ErrorKind::Denied),
        Response::Error(ErrorKind::NotWriter),
        Response::Error(ErrorKind::Unavailable),
        Response::Error(ErrorKind::BadRequest("unknown share".to_owned())),
    ];
    responses
        .into_iter()
        .enumerate()
        .map(|(i, response)| ResponseFrame {
            request_id: i as u64 * 1000,
            response,
            lease_ms: (i as u32 % 3) * 500,
        })
        .collect()
}

pub fn request_encodings() -> Vec<Vec<u8>> {
    request_fixtures()
        .iter()
        .map(wire::encode_request)
        .collect()
}

pub fn response_encodings() -> Vec<Vec<u8>> {
    response_fixtures()
        .iter()
        .map(wire::encode_response)
        .collect()
}

/// Genuine frame streams: a few framed requests and responses back to back, and an
/// empty-payload frame.
pub fn frame_stream_fixtures() -> Vec<Vec<u8>> {
    let mut codec = FrameCodec::default();
    let mut streams = Vec::new();
    for payloads in [request_encodings(), response_encodings(), vec![Vec::new()]] {
        let mut out = BytesMut::new();
        for payload in payloads.iter().take(4) {
            codec
                .encode(payload.as_slice(), &mut out)
                .expect("fixture frame fits");
        }
        streams.push(out.to_vec());
    }
    streams
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

pub fn check_request(bytes: &[u8]) -> bool {
    let Ok(frame) = wire::decode_request(bytes) else {
        return false;
    };
    let again = wire::encode_request(&frame);
    let back = wire::decode_request(&again).expect("re-encoded request decodes");
    assert_eq!(back, frame, "request changed across encode/decode");
    true
}

pub fn check_response(bytes: &[u8]) -> bool {
    let Ok(frame) = wire::decode_response(bytes) else {
        return false;
    };
    let again = wire::encode_response(&frame);
    let back = wire::decode_response(&again).expect("re-encoded response decodes");
    assert_eq!(back, frame, "response changed across encode/decode");
    true
}

/// Feeds `stream` to a codec accepting frames up to `max_frame_bytes`, in chunks whose
/// sizes cycle through `chunk_sizes` (as a socket might deliver them), then signals
/// end of stream. Returns the payloads yielded before the first error or the end.
pub fn check_frames(max_frame_bytes: usize, stream: &[u8], chunk_sizes: &[u8]) -> Vec<Vec<u8>> {
    let mut codec = FrameCodec::new(max_frame_bytes);
    let mut buffer = BytesMut::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    let mut frames = Vec::new();
    let mut chunk = chunk_sizes.iter().cycle();
    for _ in 0..MAX_DECODE_CALLS {
        let at_end = fed == stream.len();
        let before = buffer.len();
        let result = if at_end {
            codec.decode_eof(&mut buffer)
        } else {
            codec.decode(&mut buffer)
        };
        match result {
            Ok(Some(payload)) => {
                let used = before - buffer.len();
                assert!(
                    payload.len() < codec.max_frame_bytes(),
                    "frame above the maximum"
                );
                let mut again = BytesMut::new();
                codec
                    .encode(&payload[..], &mut again)
                    .expect("accepted frame re-encodes");
                assert_eq!(
                    &again[..],
                    &stream[consumed..consumed + used],
                    "frame does not re-encode to the bytes it consumed"
                );
                consumed += used;
                frames.push(payload.to_vec());
            }
            Ok(None) if at_end => {
                assert!(buffer.is_empty(), "decode_eof left bytes without an error");
                assert_eq!(consumed, stream.len());
                return frames;
            }
            Ok(None) => {
                assert_eq!(
                    buffer.len(),
                    before,
                    "decode consumed bytes without a frame"
                );
                let step = chunk
                    .next()
                    .map_or(stream.len(), |&c| usize::from(c).max(1));
                let end = (fed + step).min(stream.len());
                buffer.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Err(error) => {
                assert!(
                    error.is_peer_misbehaviour(),
                    "codec reported i/o for in-memory bytes"
                );
                assert!(!matches!(
                    error,
                    FrameError::Io(_) | FrameError::Malformed { .. }
                ));
                return frames;
            }
        }
    }
    panic!("frame codec made no progress in {MAX_DECODE_CALLS} calls");
}

// ---------------------------------------------------------------------------
// Fuzz target bodies
// ---------------------------------------------------------------------------

pub fn decode_request(data: &[u8]) {
    let _ = check_request(&input_bytes(data, &request_encodings()));
}

pub fn decode_response(data: &[u8]) {
    let _ = check_response(&input_bytes(data, &response_encodings()));
}

/// Frame codec input: `[max selector][chunk sizes × 4][mode][rest …]`, the rest read
/// like every other body's input.
pub fn frame_codec(data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(5));
    let max_frame_bytes = match head.first().copied().unwrap_or(0) {
        0..=127 => DEFAULT_MAX_FRAME_BYTES,
        // Small maxima so Oversized is reached with short inputs; 0 is raised to 1.
        small => usize::from(small - 128),
    };
    let chunk_sizes: Vec<u8> = head.iter().skip(1).copied().collect();
    let stream = input_bytes(rest, &frame_stream_fixtures());
    check_frames(
        max_frame_bytes,
        &stream,
        if chunk_sizes.is_empty() {
            &[255]
        } else {
            &chunk_sizes
        },
    );
}
