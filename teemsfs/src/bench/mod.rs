//! Benchmarks run by `teemsfs bench …` (DESIGN §13): not timed tests; they
//! run on demand and their results go to `BENCHMARKS.md` with the machine and
//! the commit.
//!
//! - [`meta`]: the metadata service — TEEMS in `rr` and `cft` mode, and etcd.
//! - [`files`]: a mounted filesystem (or any directory) — big files, random
//!   4 KiB I/O, small files — with ratios between several filesystems.

pub mod files;
pub mod meta;
