//! The erasure layout `(k, m)` and the blob identity `(BlobId, version)`.

use std::fmt;

/// Largest number of fragments (`k + m`) a blob may have. Chosen so that a
/// [`crate::BlobRef`] stays small enough for a TEEMS metadata value and so that the
/// fragment index fits the single header byte.
pub const MAX_FRAGMENTS: usize = 32;

/// How a blob's ciphertext is split: `k` data fragments plus `m` parity fragments.
/// Any `k` of the `k + m` fragments recover the blob.
///
/// The fields are public for convenience; every entry point re-validates, so a
/// hand-built invalid layout is an error, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layout {
    /// Data fragments, `k >= 1`.
    pub k: u8,
    /// Parity fragments, `m >= 0`.
    pub m: u8,
}

/// A `(k, m)` pair that is not a valid [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `k = 0`: there would be nothing to store.
    #[error("invalid erasure layout (k={k}, m={m}): k must be at least 1")]
    NoDataFragments {
        /// Data fragments requested.
        k: u8,
        /// Parity fragments requested.
        m: u8,
    },
    /// `k + m > 32`.
    #[error("invalid erasure layout (k={k}, m={m}): k+m must be at most {MAX_FRAGMENTS}")]
    TooManyFragments {
        /// Data fragments requested.
        k: u8,
        /// Parity fragments requested.
        m: u8,
    },
}

impl Layout {
    /// Validates `k >= 1`, `k + m <= 32`.
    pub fn new(k: u8, m: u8) -> Result<Layout, LayoutError> {
        Layout { k, m }.validate()
    }

    /// Returns `self` if valid.
    pub fn validate(self) -> Result<Layout, LayoutError> {
        let Layout { k, m } = self;
        if k == 0 {
            return Err(LayoutError::NoDataFragments { k, m });
        }
        if usize::from(k) + usize::from(m) > MAX_FRAGMENTS {
            return Err(LayoutError::TooManyFragments { k, m });
        }
        Ok(self)
    }

    /// Data fragment count `k`.
    pub fn data_count(self) -> usize {
        usize::from(self.k)
    }

    /// Parity fragment count `m`.
    pub fn parity_count(self) -> usize {
        usize::from(self.m)
    }

    /// Total fragment count `k + m`.
    pub fn total_count(self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(k={}, m={})", self.k, self.m)
    }
}

/// Identity of a blob: the TEEMS metadata key it is stored under. Together with the
/// blob version it is bound into every ciphertext (AES-GCM associated data) and
/// every fragment header, so bytes sealed for one `(id, version)` never open as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 16]);

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_bounds() {
        assert!(Layout::new(1, 0).is_ok());
        assert!(Layout::new(32, 0).is_ok());
        assert!(Layout::new(16, 16).is_ok());
        assert_eq!(
            Layout::new(0, 3),
            Err(LayoutError::NoDataFragments { k: 0, m: 3 })
        );
        assert_eq!(
            Layout::new(30, 3),
            Err(LayoutError::TooManyFragments { k: 30, m: 3 })
        );
        assert_eq!(
            Layout::new(255, 255),
            Err(LayoutError::TooManyFragments { k: 255, m: 255 })
        );
        assert_eq!(Layout::new(4, 2).map(Layout::total_count), Ok(6));
    }

    #[test]
    fn blob_id_displays_as_hex() {
        let mut id = [0u8; 16];
        id[0] = 0xab;
        id[15] = 0x01;
        assert_eq!(BlobId(id).to_string(), "ab000000000000000000000000000001");
    }
}
