//! teemsfs-tests: the deterministic simulator and end-to-end tests.

pub mod sim;
pub mod servers;
pub mod cluster;
