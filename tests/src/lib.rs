//! teemsfs-tests: the deterministic simulator and end-to-end tests.

pub mod cluster;
pub mod servers;
pub mod sim;
