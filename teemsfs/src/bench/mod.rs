//! Benchmarks run by `teemsfs bench …` (DESIGN §13): not timed tests; they
//! run on demand and their results go to `BENCHMARKS.md` with the machine and
//! the commit.
//!
//! - [`meta`]: the metadata service — TEEMS in `rr` and `cft` mode, and etcd.

pub mod meta;
