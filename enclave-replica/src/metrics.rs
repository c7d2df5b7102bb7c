//! Prometheus metrics of one replica process (DESIGN §12), in the text
//! exposition format, served by the loopback admin endpoint (`net::admin`).
//!
//! Hand-written instead of `metrics-exporter-prometheus`: a replica needs a
//! couple of dozen counters and two histograms, and the exporter would pull an
//! HTTP server stack into a binary that must stay small and quick to build.
//! Every counter is a relaxed atomic: readers want a recent value, not a
//! consistent cut across counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metadata_client::wire::{ErrorKind, Request, Response};

/// Upper bounds of the latency histogram buckets, in milliseconds. From a
/// tenth of a millisecond (an fsync on tmpfs) to ten seconds (beyond any
/// operation deadline).
const BUCKETS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// `counts[i]`: observations `<= BUCKETS_MS[i]` (not cumulative here; the
    /// exposition sums them).
    counts: [AtomicU64; BUCKETS_MS.len()],
    /// Observations above the last bucket.
    overflow: AtomicU64,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        match BUCKETS_MS.iter().position(|b| ms <= *b) {
            Some(i) => {
                if let Some(c) = self.counts.get(i) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The histogram as one metric family (`# HELP`, `# TYPE`, then its samples).
    pub fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.render_samples(out, name, labels);
    }

    /// Only the samples, for one labelled series of a family whose header is written
    /// once before all of them.
    pub fn render_samples(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (bound, c) in BUCKETS_MS.iter().zip(self.counts.iter()) {
            cumulative += c.load(Ordering::Relaxed);
            let le = bound / 1000.0;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum_s = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let brace = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum_s}", brace(labels));
        let _ = writeln!(
            out,
            "{name}_count{} {}",
            brace(labels),
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// Kinds of tenant operation, the label of the per-operation metrics.
pub const OP_KINDS: [&str; 5] = ["read", "write", "delete", "change_policy", "read_policy"];
/// Outcomes of a tenant operation.
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "not_found",
    "denied",
    "not_writer",
    "unavailable",
    "bad_request",
];

pub fn op_kind_index(request: &Request) -> usize {
    match request {
        Request::Read { .. } => 0,
        Request::Write { .. } => 1,
        Request::Delete { .. } => 2,
        Request::ChangePolicy { .. } => 3,
        Request::ReadPolicy { .. } => 4,
    }
}

pub fn outcome_index(response: &Response) -> usize {
    match response {
        Response::Error(ErrorKind::NotFound) => 1,
        Response::Error(ErrorKind::Denied) => 2,
        Response::Error(ErrorKind::NotWriter) => 3,
        Response::Error(ErrorKind::Unavailable) => 4,
        Response::Error(ErrorKind::BadRequest(_)) => 5,
        _ => 0,
    }
}

/// Which listener a bad frame or failed handshake arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Peer = 0,
    Client = 1,
}

const LINKS: [&str; 2] = ["peer", "client"];

/// All metrics of one replica.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `[kind][outcome]`: tenant operations answered by this proxy.
    pub ops: [[AtomicU64; OUTCOMES.len()]; OP_KINDS.len()],
    /// Time from a tenant request to its answer at this proxy: the quorum
    /// rounds it waited for (ABD rounds, policy reads, Paxos ordering).
    pub quorum_wait: Histogram,
    /// Time to make one batch of records durable (seal + write + fsync).
    pub persist_latency: Histogram,
    pub persisted_records: AtomicU64,
    pub snapshots: AtomicU64,
    /// Replies from peers that carried the suspicious flag (DESIGN §4).
    pub suspicious_replies: AtomicU64,
    /// Times this replica left the suspicious state (recovery completed).
    pub recoveries_completed: AtomicU64,
    /// Recovery rounds this replica started.
    pub recovery_rounds: AtomicU64,
    /// Sealed state found corrupt or undecodable at start.
    pub sealed_corruptions: AtomicU64,
    /// `[link]`: frames that broke the framing or did not decode; each closed
    /// its connection.
    pub bad_frames: [AtomicU64; 2],
    /// `[link]`: TLS handshakes or authentication checks that failed.
    pub rejected_connections: [AtomicU64; 2],
    /// Peer messages dropped because the per-peer queue was full or the peer
    /// unreachable; the protocols retransmit.
    pub peer_messages_dropped: AtomicU64,
    pub peer_messages_sent: AtomicU64,
    pub peer_messages_received: AtomicU64,
    pub peer_connects: AtomicU64,
    pub client_sessions_opened: AtomicU64,
    pub client_sessions_open: AtomicU64,
    /// Replies dropped because a tenant did not read its connection.
    pub client_replies_dropped: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn count_op(&self, kind: usize, outcome: usize) {
        if let Some(c) = self.ops.get(kind).and_then(|row| row.get(outcome)) {
            inc(c);
        }
    }

    pub fn bad_frame(&self, link: Link) {
        if let Some(c) = self.bad_frames.get(link as usize) {
            inc(c);
        }
    }

    pub fn rejected_connection(&self, link: Link) {
        if let Some(c) = self.rejected_connections.get(link as usize) {
            inc(c);
        }
    }

    pub fn bad_frames_total(&self) -> u64 {
        self.bad_frames
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of every metric, `replica` as a label.
    pub fn render(&self, replica: u32) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let r = format!("replica=\"{replica}\"");
        let _ = writeln!(
            out,
            "# HELP teems_ops_total Tenant operations answered by this proxy."
        );
        let _ = writeln!(out, "# TYPE teems_ops_total counter");
        for (kind, row) in OP_KINDS.iter().zip(self.ops.iter()) {
            for (outcome, c) in OUTCOMES.iter().zip(row.iter()) {
                let v = c.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "teems_ops_total{{{r},op=\"{kind}\",outcome=\"{outcome}\"}} {v}"
                );
            }
        }
        self.quorum_wait.render(
            &mut out,
            "teems_quorum_wait_seconds",
            "Time a tenant operation waited for its quorum rounds at this proxy.",
            &r,
        );
        self.persist_latency.render(
            &mut out,
            "teems_persist_seconds",
            "Time to seal, write and fsync one batch of records.",
            &r,
        );
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "teems_persisted_records_total",
                "Records made durable in the sealed log.",
                &self.persisted_records,
            ),
            (
                "teems_snapshots_total",
                "Sealed snapshots written.",
                &self.snapshots,
            ),
            (
                "teems_suspicious_replies_total",
                "Peer replies carrying the suspicious flag.",
                &self.suspicious_replies,
            ),
            (
                "teems_recoveries_total",
                "Times this replica completed recovery and cleared suspicion.",
                &self.recoveries_completed,
            ),
            (
                "teems_recovery_rounds_total",
                "Recovery rounds started.",
                &self.recovery_rounds,
            ),
            (
                "teems_sealed_corruptions_total",
                "Sealed stores found corrupt at start.",
                &self.sealed_corruptions,
            ),
            (
                "teems_peer_messages_dropped_total",
                "Peer messages dropped (queue full or peer down).",
                &self.peer_messages_dropped,
            ),
            (
                "teems_peer_messages_sent_total",
                "Peer messages written to connections.",
                &self.peer_messages_sent,
            ),
            (
                "teems_peer_messages_received_total",
                "Peer messages received and decoded.",
                &self.peer_messages_received,
            ),
            (
                "teems_peer_connects_total",
                "Outgoing peer connections established.",
                &self.peer_connects,
            ),
            (
                "teems_client_sessions_opened_total",
                "Tenant sessions accepted.",
                &self.client_sessions_opened,
            ),
            (
                "teems_client_sessions_open",
                "Tenant sessions open now.",
                &self.client_sessions_open,
            ),
            (
                "teems_client_replies_dropped_total",
                "Replies dropped for tenants that stopped reading.",
                &self.client_replies_dropped,
            ),
        ];
        for (name, help, c) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{{r}}} {}", c.load(Ordering::Relaxed));
        }
        for (name, help, arr) in [
            (
                "teems_bad_frames_total",
                "Malformed or oversized frames; each closed its connection.",
                &self.bad_frames,
            ),
            (
                "teems_rejected_connections_total",
                "Connections refused at the TLS handshake or authentication.",
                &self.rejected_connections,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (link, c) in LINKS.iter().zip(arr.iter()) {
                let _ = writeln!(
                    out,
                    "{name}{{{r},link=\"{link}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.count_op(0, 0);
        m.count_op(1, 4);
        m.bad_frame(Link::Client);
        m.persist_latency.observe(Duration::from_micros(300));
        m.persist_latency.observe(Duration::from_secs(20));
        let text = m.render(3);
        assert!(
            text.contains("teems_ops_total{replica=\"3\",op=\"read\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("teems_ops_total{replica=\"3\",op=\"write\",outcome=\"unavailable\"} 1")
        );
        assert!(text.contains("teems_bad_frames_total{replica=\"3\",link=\"client\"} 1"));
        assert!(text.contains("teems_persist_seconds_bucket{replica=\"3\",le=\"0.0005\"} 1"));
        assert!(text.contains("teems_persist_seconds_bucket{replica=\"3\",le=\"+Inf\"} 2"));
        assert!(text.contains("teems_persist_seconds_count{replica=\"3\"} 2"));
    }
}
