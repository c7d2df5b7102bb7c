//! Heap buffers whose first byte sits on a 4096-byte boundary.
//!
//! Why: on this project's machines glibc's `memcpy` runs up to ~17x slower when the
//! destination is a few bytes ahead of the source modulo 4096 (4K aliasing), which is
//! exactly what two same-size `Vec<u8>` from malloc tend to give. Every buffer the
//! pipeline copies between (plaintext arena, fragment buffers) is therefore page
//! aligned, and fragment payloads start at a multiple of 64 bytes, so the distance
//! between source and destination of every internal copy is a multiple of 64.

use std::alloc::{self, Layout as AllocLayout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every [`AlignedBuf`], in bytes.
pub const BUF_ALIGN: usize = 4096;

/// An owned, 4096-aligned, initialised byte buffer that derefs to `[u8]`.
///
/// Invariant: `ptr` points to an allocation of `cap` bytes (`cap >= 1`, aligned to
/// [`BUF_ALIGN`]) whose bytes are all initialised; `len <= cap` bytes are visible.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: an `AlignedBuf` uniquely owns its allocation, exactly like `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

/// One piece of a buffer being assembled by [`AlignedBuf::from_parts`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Part<'a> {
    /// Copy these bytes.
    Bytes(&'a [u8]),
    /// Write this many zero bytes.
    Zeros(usize),
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::Zeros(n) => *n,
        }
    }
}

/// The requested buffer size cannot be described to the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {len} bytes is too large to allocate")]
pub struct BufTooLarge {
    /// Requested length in bytes.
    pub len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<AlignedBuf, BufTooLarge> {
        Self::from_parts(&[Part::Zeros(len)])
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Result<AlignedBuf, BufTooLarge> {
        Self::from_parts(&[Part::Bytes(bytes)])
    }

    /// Assembles a buffer from `parts` in order. Each byte is written exactly once,
    /// so building a buffer costs one copy and no separate zeroing pass.
    pub(crate) fn from_parts(parts: &[Part<'_>]) -> Result<AlignedBuf, BufTooLarge> {
        let mut len: usize = 0;
        for part in parts {
            len = len
                .checked_add(part.len())
                .ok_or(BufTooLarge { len: usize::MAX })?;
        }
        // Zero-size allocations are not allowed; a 1-byte allocation keeps the
        // "ptr is a live allocation" invariant simple.
        let cap = len.max(1);
        let layout =
            AllocLayout::from_size_align(cap, BUF_ALIGN).map_err(|_| BufTooLarge { len })?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        let mut offset = 0usize;
        for part in parts {
            match part {
                Part::Bytes(bytes) => {
                    // SAFETY: offset + bytes.len() <= len <= cap (sum computed above); the
                    // source is a distinct live slice, so the ranges cannot overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            bytes.as_ptr(),
                            ptr.as_ptr().add(offset),
                            bytes.len(),
                        );
                    }
                }
                Part::Zeros(n) => {
                    // SAFETY: offset + n <= len <= cap.
                    unsafe { std::ptr::write_bytes(ptr.as_ptr().add(offset), 0, *n) };
                }
            }
            offset += part.len();
        }
        if len == 0 {
            // SAFETY: cap == 1; initialise the single byte to keep the invariant.
            unsafe { ptr.as_ptr().write(0) };
        }
        Ok(AlignedBuf { ptr, len, cap })
    }

    /// Shortens the visible length to `len` (no-op if already shorter). Keeps the allocation.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Copies the visible bytes into a `Vec<u8>`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// The visible bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: invariant — `len <= cap` bytes starting at `ptr` are initialised and
        // owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The visible bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `from_parts` with exactly this layout (the
        // same `cap` and `BUF_ALIGN` produced a valid layout then).
        unsafe {
            let layout = AllocLayout::from_size_align_unchecked(self.cap, BUF_ALIGN);
            alloc::dealloc(self.ptr.as_ptr(), layout);
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        match AlignedBuf::copy_from(self.as_slice()) {
            Ok(buf) => buf,
            // Unreachable in practice: an identical allocation already exists.
            Err(_) => alloc::handle_alloc_error(AllocLayout::new::<u8>()),
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &AlignedBuf) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for AlignedBuf {}

impl PartialEq<[u8]> for AlignedBuf {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for AlignedBuf {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<u8>> for AlignedBuf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<AlignedBuf> for Vec<u8> {
    fn from(buf: AlignedBuf) -> Vec<u8> {
        buf.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_concatenated_and_aligned() {
        let buf = AlignedBuf::from_parts(&[Part::Bytes(b"ab"), Part::Zeros(3), Part::Bytes(b"c")])
            .expect("small buffer");
        assert_eq!(&buf[..], b"ab\0\0\0c");
        assert_eq!(buf.as_ptr() as usize % BUF_ALIGN, 0);
    }

    #[test]
    fn empty_buffer_is_valid() {
        let mut buf = AlignedBuf::zeroed(0).expect("empty buffer");
        assert!(buf.is_empty());
        assert_eq!(buf.as_mut_slice().len(), 0);
        let copy = buf.clone();
        assert_eq!(copy, buf);
    }

    #[test]
    fn truncate_only_shrinks() {
        let mut buf = AlignedBuf::copy_from(b"hello").expect("small buffer");
        buf.truncate(10);
        assert_eq!(buf.len(), 5);
        buf.truncate(2);
        assert_eq!(buf, b"he".to_vec());
    }

    #[test]
    fn oversized_request_is_an_error() {
        assert!(AlignedBuf::zeroed(usize::MAX - 10).is_err());
    }
}
