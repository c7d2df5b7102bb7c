//! Mutation of genuine encodings, shared by the decoder fuzz bodies of
//! `metadata-client` and `teemsfs` (each includes this file through `#[path]`).
//!
//! Input layout of every body: the first byte picks the mode. Even: the rest is raw
//! bytes for the decoder. Odd: the rest is a mutation script applied to a genuine
//! encoding chosen by the second byte.

/// Most mutation steps one script applies; keeps each input cheap.
const MAX_MUTATIONS: usize = 8;

/// Applies a mutation script to `valid`. The script is read three bytes at a time,
/// `(op, a, b)`; `a*256 + b` picks a position. Ops: flip one bit, truncate, insert a
/// byte, delete a byte, overwrite a byte.
pub fn mutate(valid: &[u8], script: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for step in script.chunks(3).take(MAX_MUTATIONS) {
        let op = step.first().copied().unwrap_or(0);
        let a = step.get(1).copied().unwrap_or(0);
        let b = step.get(2).copied().unwrap_or(0);
        let pos = usize::from(a) * 256 + usize::from(b);
        match op % 5 {
            0 if !bytes.is_empty() => {
                let at = pos % bytes.len();
                bytes[at] ^= 1 << (a % 8);
            }
            1 => bytes.truncate(pos % (bytes.len() + 1)),
            2 => {
                let at = pos % (bytes.len() + 1);
                bytes.insert(at, b);
            }
            3 if !bytes.is_empty() => {
                let at = pos % bytes.len();
                bytes.remove(at);
            }
            4 if !bytes.is_empty() => {
                let at = pos % bytes.len();
                bytes[at] = b;
            }
            _ => {}
        }
    }
    bytes
}

/// Splits a body's input into "raw bytes" or "mutated genuine encoding".
pub fn input_bytes(data: &[u8], genuine: &[Vec<u8>]) -> Vec<u8> {
    match data.split_first() {
        None => Vec::new(),
        Some((mode, rest)) if mode % 2 == 0 => rest.to_vec(),
        Some((_, rest)) => {
            let (pick, script) = rest.split_first().unwrap_or((&0, &[]));
            let valid = &genuine[usize::from(*pick) % genuine.len()];
            mutate(valid, script)
        }
    }
}
