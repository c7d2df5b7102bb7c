//! Digest of a register store for recovery (DESIGN §4, REC-2): a two-level
//! hash tree. Keys fall into [`BUCKETS`] buckets by their first byte (keys are
//! random, so buckets are even); each bucket's hash covers its sorted
//! `(key, timestamp)` pairs. Two replicas compare bucket hashes and exchange
//! only the buckets that differ.

use std::collections::BTreeMap;

use metadata_client::wire::{Key, Version};

use super::state::RegisterEntry;

/// Number of buckets in the digest.
pub const BUCKETS: usize = 256;

/// Hash of an empty bucket.
pub const EMPTY: [u8; 16] = [0; 16];

/// Bucket a key belongs to.
pub fn bucket_of(key: &Key) -> u16 {
    u16::from(key.0[0])
}

/// Bucket hashes of a register store, `BUCKETS` long.
pub fn bucket_hashes(registers: &BTreeMap<Key, RegisterEntry>) -> Vec<[u8; 16]> {
    let mut hashers: Vec<Option<blake3::Hasher>> = (0..BUCKETS).map(|_| None).collect();
    // BTreeMap iterates in key order, so each bucket is hashed in sorted order.
    for (key, entry) in registers {
        let b = usize::from(bucket_of(key));
        if let Some(slot) = hashers.get_mut(b) {
            let h = slot.get_or_insert_with(blake3::Hasher::new);
            h.update(&key.0);
            h.update(&entry.version.seq.to_le_bytes());
            h.update(&entry.version.writer.to_le_bytes());
        }
    }
    hashers
        .into_iter()
        .map(|h| match h {
            Some(h) => {
                let full = h.finalize();
                let mut out = [0u8; 16];
                out.copy_from_slice(&full.as_bytes()[..16]);
                out
            }
            None => EMPTY,
        })
        .collect()
}

/// `(key, version)` pairs of one bucket, in key order.
pub fn bucket_versions(
    registers: &BTreeMap<Key, RegisterEntry>,
    bucket: u16,
) -> Vec<(Key, Version)> {
    let lo = Key(bucket_start(bucket));
    registers
        .range(lo..)
        .take_while(|(k, _)| bucket_of(k) == bucket)
        .map(|(k, e)| (*k, e.version))
        .collect()
}

fn bucket_start(bucket: u16) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0] = u8::try_from(bucket).unwrap_or(u8::MAX);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::StoredValue;
    use metadata_client::wire::{ShareId, TenantId};

    fn entry(seq: u64) -> RegisterEntry {
        RegisterEntry {
            version: Version { seq, writer: 1 },
            stable: false,
            value: StoredValue {
                share: ShareId([0; 16]),
                creator: TenantId("t".into()),
                data: None,
            },
        }
    }

    #[test]
    fn rec_2_only_the_changed_bucket_differs() {
        let mut a = BTreeMap::new();
        let mut k1 = [0u8; 16];
        k1[0] = 3;
        let mut k2 = [0u8; 16];
        k2[0] = 200;
        a.insert(Key(k1), entry(1));
        a.insert(Key(k2), entry(1));
        let mut b = a.clone();
        b.insert(Key(k2), entry(2));
        let (ha, hb) = (bucket_hashes(&a), bucket_hashes(&b));
        let differing: Vec<usize> = (0..BUCKETS).filter(|i| ha[*i] != hb[*i]).collect();
        assert_eq!(differing, vec![200]);
        assert_eq!(
            bucket_versions(&b, 200),
            vec![(Key(k2), Version { seq: 2, writer: 1 })]
        );
        assert_eq!(ha[0], EMPTY);
    }
}
