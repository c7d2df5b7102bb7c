//! The erasure code, behind a small trait so the Reed-Solomon implementation can be
//! swapped without touching the pipeline.
//!
//! The code in use is systematic Reed-Solomon over GF(2^8) as implemented by
//! `reed-solomon-erasure` 6.0.0 (pinned: its field polynomial and encoding matrix are
//! part of the on-store format, pinned again by the known-answer vectors in
//! `tests/vectors.rs`). Codecs are built once per `(k, m)` and shared, so a 4 KiB blob
//! does not pay for building the encoding matrix; the crate also caches the inverted
//! decode matrix per erasure pattern inside each codec.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::buf::{AlignedBuf, BufTooLarge, Part};
use crate::layout::Layout;

/// Failure inside the erasure code. With inputs validated by the pipeline these
/// indicate a bug, not bad data; they are still errors rather than panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// The underlying implementation refused its inputs.
    #[error("erasure code for layout {layout} failed: {detail}")]
    Codec {
        /// Layout in use.
        layout: Layout,
        /// Implementation's message.
        detail: String,
    },
    /// Scratch space could not be allocated.
    #[error(transparent)]
    Alloc(#[from] BufTooLarge),
}

/// A systematic erasure code: data shards are stored as-is, `m` parity shards are
/// computed from them, and any `k` shards recover the data shards.
pub(crate) trait ErasureCode: Send + Sync {
    /// Fills every slice of `parity` (`m` of them) from the `k` `data` shards.
    /// All shards have the same non-zero length.
    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodeError>;

    /// Recomputes the data shards whose `data_present` flag is false, in place,
    /// from the present data shards and the given parity shards (`parity[j]` is
    /// shard `k + j`, `None` if not to be used). Exactly enough inputs to reach `k`
    /// are expected; extra parity is ignored.
    fn reconstruct_data(
        &self,
        data: &mut [&mut [u8]],
        data_present: &[bool],
        parity: &[Option<&[u8]>],
    ) -> Result<(), CodeError>;
}

/// `reed-solomon-erasure` with its AVX2 (`simd-accel`) kernels.
struct RseCode {
    layout: Layout,
    codec: ReedSolomon,
}

impl RseCode {
    fn err(&self, e: reed_solomon_erasure::Error) -> CodeError {
        CodeError::Codec {
            layout: self.layout,
            detail: format!("{e:?}"),
        }
    }
}

impl ErasureCode for RseCode {
    fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodeError> {
        self.codec.encode_sep(data, parity).map_err(|e| self.err(e))
    }

    fn reconstruct_data(
        &self,
        data: &mut [&mut [u8]],
        data_present: &[bool],
        parity: &[Option<&[u8]>],
    ) -> Result<(), CodeError> {
        let k = self.layout.data_count();
        if data.len() != k || data_present.len() != k {
            return Err(CodeError::Codec {
                layout: self.layout,
                detail: "wrong data shard count".to_owned(),
            });
        }
        let shard_len = data.first().map_or(0, |shard| shard.len());
        let missing = data_present.iter().filter(|present| !**present).count();
        // The crate reconstructs through uniformly mutable shards, so the (read-only)
        // parity inputs it needs are copied into one aligned scratch buffer: at most
        // `missing` shards, a small cost next to the decode itself.
        let chosen: Vec<&[u8]> = parity.iter().flatten().take(missing).copied().collect();
        let parts: Vec<Part<'_>> = chosen.iter().map(|shard| Part::Bytes(shard)).collect();
        let mut scratch = AlignedBuf::from_parts(&parts)?;
        let mut scratch_chunks = scratch.chunks_exact_mut(shard_len.max(1));
        let mut shards: Vec<(&mut [u8], bool)> = Vec::with_capacity(self.layout.total_count());
        for (shard, present) in data.iter_mut().zip(data_present) {
            shards.push((&mut **shard, *present));
        }
        let mut used = 0;
        for slot in parity.iter().take(self.layout.parity_count()) {
            match (slot, used < missing) {
                (Some(_), true) => {
                    let chunk = scratch_chunks.next().ok_or_else(|| CodeError::Codec {
                        layout: self.layout,
                        detail: "scratch shard count mismatch".to_owned(),
                    })?;
                    shards.push((chunk, true));
                    used += 1;
                }
                _ => shards.push((&mut [], false)),
            }
        }
        if data_present.len() != k || shards.len() != self.layout.total_count() {
            return Err(CodeError::Codec {
                layout: self.layout,
                detail: "wrong shard count".to_owned(),
            });
        }
        self.codec
            .reconstruct_data(&mut shards)
            .map_err(|e| self.err(e))
    }
}

/// `m = 0`: nothing to compute, and nothing can be reconstructed.
struct NoParity;

impl ErasureCode for NoParity {
    fn encode(&self, _data: &[&[u8]], _parity: &mut [&mut [u8]]) -> Result<(), CodeError> {
        Ok(())
    }

    fn reconstruct_data(
        &self,
        _data: &mut [&mut [u8]],
        data_present: &[bool],
        _parity: &[Option<&[u8]>],
    ) -> Result<(), CodeError> {
        if data_present.iter().all(|present| *present) {
            Ok(())
        } else {
            Err(CodeError::Codec {
                layout: Layout {
                    k: u8::try_from(data_present.len()).unwrap_or(u8::MAX),
                    m: 0,
                },
                detail: "a layout without parity cannot reconstruct".to_owned(),
            })
        }
    }
}

type CodecCache = Mutex<HashMap<Layout, Arc<dyn ErasureCode>>>;

/// The shared codec for `layout` (which the caller has validated). At most 32·32
/// layouts exist, so the cache needs no eviction.
pub(crate) fn codec_for(layout: Layout) -> Result<Arc<dyn ErasureCode>, CodeError> {
    static CODECS: OnceLock<CodecCache> = OnceLock::new();
    let cache = CODECS.get_or_init(|| Mutex::new(HashMap::new()));
    // A panic while holding this lock cannot leave the map inconsistent (inserts are
    // single calls), so a poisoned lock is safe to keep using.
    let mut codecs = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(codec) = codecs.get(&layout) {
        return Ok(Arc::clone(codec));
    }
    let codec: Arc<dyn ErasureCode> = if layout.m == 0 {
        Arc::new(NoParity)
    } else {
        let rs = ReedSolomon::new(layout.data_count(), layout.parity_count()).map_err(|e| {
            CodeError::Codec {
                layout,
                detail: format!("{e:?}"),
            }
        })?;
        Arc::new(RseCode { layout, codec: rs })
    };
    codecs.insert(layout, Arc::clone(&codec));
    Ok(codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GF(2^8) multiplication with the polynomial x^8+x^4+x^3+x^2+1 (0x11D), written
    /// out bit by bit, as docs/FORMAT.md states the field.
    fn gf_mul_reference(mut a: u8, mut b: u8) -> u8 {
        let mut product = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                product ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= 0x1D;
            }
            b >>= 1;
        }
        product
    }

    #[test]
    fn field_is_gf256_with_polynomial_0x11d() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(
                    reed_solomon_erasure::galois_8::mul(a, b),
                    gf_mul_reference(a, b),
                    "{a} * {b}"
                );
            }
        }
    }

    #[test]
    fn reconstructs_any_k_of_n() {
        let layout = Layout { k: 3, m: 2 };
        let codec = codec_for(layout).expect("valid layout");
        let data: Vec<Vec<u8>> = (0..3u8)
            .map(|i| (0..64u8).map(|j| i.wrapping_mul(31) ^ j).collect())
            .collect();
        let mut parity = vec![vec![0u8; 64]; 2];
        {
            let data_refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let mut parity_refs: Vec<&mut [u8]> =
                parity.iter_mut().map(Vec::as_mut_slice).collect();
            codec.encode(&data_refs, &mut parity_refs).expect("encode");
        }
        // Lose data shards 0 and 2; recover from shard 1 and both parity shards.
        let mut work = data.clone();
        work[0].fill(0);
        work[2].fill(0);
        let mut refs: Vec<&mut [u8]> = work.iter_mut().map(Vec::as_mut_slice).collect();
        let parity_in: Vec<Option<&[u8]>> = parity.iter().map(|p| Some(p.as_slice())).collect();
        codec
            .reconstruct_data(&mut refs, &[false, true, false], &parity_in)
            .expect("reconstruct");
        assert_eq!(work, data);
    }

    #[test]
    fn codecs_are_shared_per_layout() {
        let a = codec_for(Layout { k: 4, m: 2 }).expect("valid");
        let b = codec_for(Layout { k: 4, m: 2 }).expect("valid");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
