//! Prometheus metrics of a mount (DESIGN §12), in the text exposition format.
//!
//! What a mount is doing and what it found: the latency of every kind of kernel request
//! (from the FUSE callback to the reply), the blob layer's counters (spare fragments
//! fetched because one was slow, fragments found missing or damaged, read repairs,
//! ranged reads and their fallbacks), the blob cache's size and hit rate, and the
//! housekeeping queues. `teemsfs mount` serves them on a loopback port it writes to
//! `DIR/run/mount-<id>.metrics` (plain HTTP, like the replicas' admin endpoint: it
//! discloses counters, never names or contents).

use std::fmt::Write as _;
use std::time::Duration;

use enclave_replica::metrics::Histogram;

use crate::fs::Fs;

/// The kernel requests timed, the `op` label; anything else counts as `other`.
pub const FUSE_OPS: [&str; 28] = [
    "lookup",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "fallocate",
    "opendir",
    "readdir",
    "readdirplus",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "create",
    "other",
];

/// The metrics a mount keeps itself; the rest is read from the [`Fs`] when rendered.
#[derive(Debug, Default)]
pub struct MountMetrics {
    ops: [Histogram; FUSE_OPS.len()],
}

impl MountMetrics {
    /// Records one kernel request of kind `op` (a [`FUSE_OPS`] name) that took `elapsed`.
    pub fn observe(&self, op: &str, elapsed: Duration) {
        let i = FUSE_OPS
            .iter()
            .position(|o| *o == op)
            .unwrap_or(FUSE_OPS.len() - 1);
        if let Some(h) = self.ops.get(i) {
            h.observe(elapsed);
        }
    }

    /// Requests of kind `op` recorded so far.
    pub fn count(&self, op: &str) -> u64 {
        FUSE_OPS
            .iter()
            .position(|o| *o == op)
            .and_then(|i| self.ops.get(i))
            .map_or(0, Histogram::count)
    }

    /// Everything, as Prometheus text.
    pub fn render(&self, fs: &Fs) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let name = "teemsfs_fuse_request_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a kernel request to its reply, by kind."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (op, h) in FUSE_OPS.iter().zip(&self.ops) {
            h.render_samples(&mut out, name, &format!("op=\"{op}\""));
        }
        let (hits, misses) = fs.blob_cache_counts();
        let (ahead_reads, ahead_hits) = fs.statahead_counts();
        let mut counters: Vec<(&str, &str, u64)> = vec![
            (
                "teemsfs_blob_cache_hits_total",
                "Blob reads answered by the blob cache.",
                hits,
            ),
            (
                "teemsfs_blob_cache_misses_total",
                "Blob reads that went to the stores.",
                misses,
            ),
            (
                "teemsfs_meta_lease_hits_total",
                "Metadata reads answered from a read lease, without a round trip.",
                fs.meta_lease_hits(),
            ),
            (
                "teemsfs_statahead_reads_total",
                "Inodes read ahead of lookups walking a directory in order.",
                ahead_reads,
            ),
            (
                "teemsfs_statahead_hits_total",
                "Lookups whose inode had been read ahead.",
                ahead_hits,
            ),
        ];
        if let Some(b) = fs.blob_stats() {
            counters.extend([
                ("teemsfs_ranged_reads_total", "Random reads answered from parts of the data fragments.", b.ranged_reads),
                ("teemsfs_range_fallbacks_total", "Ranged reads that fell back to reading the whole blob.", b.range_fallbacks),
                ("teemsfs_decoded_reads_total", "Blob reads decoded from parity (a data fragment bad, slow or on a slower store).", b.decoded_reads),
                ("teemsfs_hedged_fetches_total", "Spare fragments fetched because one was slow.", b.hedged_fetches),
                ("teemsfs_bad_fragments_total", "Fragments found missing or failing verification.", b.bad_fragments),
                ("teemsfs_repairs_total", "Fragments rewritten by read repair.", b.repairs_done),
                ("teemsfs_repairs_failed_total", "Read repairs that could not be carried out.", b.repairs_failed),
            ]);
        }
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let gauges: [(&str, &str, u64); 3] = [
            (
                "teemsfs_blob_cache_bytes",
                "Plaintext bytes in the blob cache.",
                fs.blob_cache_bytes(),
            ),
            (
                "teemsfs_retired_blobs",
                "Superseded blobs waiting for their grace period.",
                fs.retired_len() as u64,
            ),
            (
                "teemsfs_unlinked_inodes",
                "Unlinked inodes not yet freed.",
                fs.unlinked_len() as u64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind_and_unknown_kinds_as_other() {
        let m = MountMetrics::default();
        m.observe("getattr", Duration::from_micros(300));
        m.observe("getattr", Duration::from_millis(3));
        m.observe("bmap", Duration::from_millis(1));
        assert_eq!(
            (m.count("getattr"), m.count("lookup"), m.count("other")),
            (2, 0, 1)
        );
    }
}
