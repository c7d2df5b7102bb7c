//! Simulated sealed storage of one replica (DESIGN §4, §8).
//!
//! Sealing gives integrity, not freshness: the host can hand a restarting
//! enclave any sealed state the enclave ever wrote, or none. So this store
//! never forgets: it keeps every *lineage* of the write-ahead log (a new
//! lineage starts whenever the replica restarts from something other than
//! its latest state) and every durable point on each lineage — the log
//! prefix after each completed `Persist`. A restart picks one of those
//! points.

/// A durable point: `len` records of lineage `lineage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurablePoint {
    pub lineage: usize,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct SealedStore<R> {
    lineages: Vec<Vec<R>>,
    /// Every point that was ever durable, in the order it became durable.
    points: Vec<DurablePoint>,
    current: usize,
}

impl<R: Clone> Default for SealedStore<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Clone> SealedStore<R> {
    pub fn new() -> Self {
        SealedStore {
            lineages: vec![Vec::new()],
            points: vec![DurablePoint { lineage: 0, len: 0 }],
            current: 0,
        }
    }

    /// One `Persist`: the records become durable together (one sealed write).
    pub fn persist(&mut self, records: &[R]) {
        if records.is_empty() {
            return;
        }
        let log = &mut self.lineages[self.current];
        log.extend_from_slice(records);
        self.points.push(DurablePoint {
            lineage: self.current,
            len: log.len(),
        });
    }

    /// The latest state: what an honest host hands back.
    pub fn latest(&self) -> DurablePoint {
        DurablePoint {
            lineage: self.current,
            len: self.lineages[self.current].len(),
        }
    }

    /// Every durable point ever reached, including the empty state.
    pub fn points(&self) -> &[DurablePoint] {
        &self.points
    }

    /// Has anything ever been persisted? (Restarting empty is only a
    /// rollback if so.)
    pub fn ever_persisted(&self) -> bool {
        self.points.len() > 1
    }

    /// Restart from `point`: later persists continue from it on a new
    /// lineage (unless it is the latest point), like a host that restored an
    /// old copy of the sealed files. Returns the records to replay.
    pub fn restart_from(&mut self, point: DurablePoint) -> Vec<R> {
        let records = self.lineages[point.lineage][..point.len].to_vec();
        if point != self.latest() {
            self.lineages.push(records.clone());
            self.current = self.lineages.len() - 1;
        }
        records
    }

    /// Records on the current lineage (for diagnostics).
    pub fn current_len(&self) -> usize {
        self.lineages[self.current].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_starts_a_new_lineage_and_keeps_the_old_points() {
        let mut s: SealedStore<u32> = SealedStore::new();
        s.persist(&[1, 2]);
        s.persist(&[3]);
        assert_eq!(s.points().len(), 3);
        let old = s.points()[1];
        assert_eq!(s.restart_from(old), vec![1, 2]);
        s.persist(&[9]);
        assert_eq!(s.restart_from(s.latest()), vec![1, 2, 9]);
        // The abandoned newer state is still available to a malicious host.
        assert_eq!(s.restart_from(s.points()[2]), vec![1, 2, 3]);
        assert!(s.ever_persisted());
    }
}
