//! The simulated network's fault model (DESIGN §1: the adversary may drop,
//! delay, reorder and duplicate any message, and partition the network).
//!
//! The network is a function from one send to zero, one or two deliveries,
//! each with its own delay; reordering falls out of independent delays (and
//! a heavy tail of long ones). Partitions are a set of endpoints cut off
//! from the rest; a message crossing the cut is lost when it would arrive.

use std::collections::BTreeSet;

use rand::Rng;

/// Someone on the network: a replica (by index) or a simulated client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Replica(usize),
    Client(usize),
}

/// Probabilities and delays of the fault phase. `calm()` is the network
/// after healing: every message arrives, once, after a short delay.
#[derive(Clone, Debug)]
pub struct NetworkFaults {
    pub drop_prob: f64,
    pub duplicate_prob: f64,
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// Chance that a delivery is held much longer (reordering across rounds).
    pub long_delay_prob: f64,
    pub long_delay_max_ms: u64,
}

impl NetworkFaults {
    pub fn hostile() -> Self {
        NetworkFaults {
            drop_prob: 0.05,
            duplicate_prob: 0.03,
            delay_min_ms: 1,
            delay_max_ms: 12,
            long_delay_prob: 0.03,
            long_delay_max_ms: 400,
        }
    }

    pub fn calm() -> Self {
        NetworkFaults {
            drop_prob: 0.0,
            duplicate_prob: 0.0,
            delay_min_ms: 1,
            delay_max_ms: 5,
            long_delay_prob: 0.0,
            long_delay_max_ms: 0,
        }
    }

    /// Delays (ms from now) of the copies of one message that will arrive.
    pub fn deliveries(&self, rng: &mut impl Rng) -> Vec<u64> {
        if rng.random_bool(self.drop_prob) {
            return Vec::new();
        }
        let copies = if rng.random_bool(self.duplicate_prob) {
            2
        } else {
            1
        };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut impl Rng) -> u64 {
        if self.long_delay_max_ms > self.delay_max_ms && rng.random_bool(self.long_delay_prob) {
            rng.random_range(self.delay_max_ms..=self.long_delay_max_ms)
        } else {
            rng.random_range(self.delay_min_ms..=self.delay_max_ms)
        }
    }
}

/// The current partition: endpoints in `cut` reach only each other.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    cut: BTreeSet<Endpoint>,
}

impl Partition {
    pub fn healed() -> Self {
        Partition::default()
    }

    pub fn isolate(cut: impl IntoIterator<Item = Endpoint>) -> Self {
        Partition {
            cut: cut.into_iter().collect(),
        }
    }

    pub fn connected(&self, a: Endpoint, b: Endpoint) -> bool {
        self.cut.contains(&a) == self.cut.contains(&b)
    }

    pub fn is_healed(&self) -> bool {
        self.cut.is_empty()
    }

    pub fn cut(&self) -> &BTreeSet<Endpoint> {
        &self.cut
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn partition_cuts_both_directions_only_across_the_cut() {
        let p = Partition::isolate([Endpoint::Replica(0), Endpoint::Client(1)]);
        assert!(!p.connected(Endpoint::Replica(0), Endpoint::Replica(1)));
        assert!(!p.connected(Endpoint::Replica(2), Endpoint::Client(1)));
        assert!(p.connected(Endpoint::Replica(0), Endpoint::Client(1)));
        assert!(p.connected(Endpoint::Replica(2), Endpoint::Replica(3)));
        assert!(Partition::healed().connected(Endpoint::Replica(0), Endpoint::Replica(1)));
    }

    #[test]
    fn calm_network_delivers_every_message_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let calm = NetworkFaults::calm();
        for _ in 0..1000 {
            let d = calm.deliveries(&mut rng);
            assert_eq!(d.len(), 1);
            assert!((1..=5).contains(&d[0]));
        }
    }

    #[test]
    fn hostile_network_drops_duplicates_and_delays() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let hostile = NetworkFaults::hostile();
        let all: Vec<Vec<u64>> = (0..5000).map(|_| hostile.deliveries(&mut rng)).collect();
        assert!(all.iter().any(|d| d.is_empty()));
        assert!(all.iter().any(|d| d.len() == 2));
        assert!(all.iter().flatten().any(|&ms| ms > 100));
    }
}
