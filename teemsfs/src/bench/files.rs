//! `teemsfs bench files`: what a user feels on a mounted filesystem — big
//! sequential transfers, 4 KiB random I/O and many small files — measured
//! through plain system calls on any directory, so the same run covers a
//! teemsfs mount, a JuiceFS mount and a null FUSE filesystem (bindfs) and
//! prints their ratios.
//!
//! Phases, in order, each in a fresh sub-directory of the target:
//! 1. sequential write of one big file (`io_bytes` writes, then `fsync`);
//! 2. sequential read after dropping the kernel page cache (when allowed);
//! 3. the same read again without dropping it (the "cached re-read");
//! 4. 4 KiB reads at random aligned offsets of the big file (page cache dropped first);
//! 5. 4 KiB writes at random aligned offsets, then `fsync` (inside the timing);
//! 6. small files: create+write+close, stat, open+read+close, unlink of N files.
//!
//! Phases 1–3 run in rounds (`big_rounds`, each on a new file, the median reported), and
//! the rounds of all targets are interleaved: round `r` runs every target's round in the
//! targets' order rotated by `r`. The first big write of a run can pay for what the ones
//! after it reuse (servers growing into memory, a VM faulting in memory its host took
//! back), and a shared S3 server may slow as it fills; rotating spreads both over the
//! targets instead of charging the same one every time. Phases 4–6 then run target by
//! target.
//!
//! Every block written carries its index, and reads check it, so a benchmark
//! of a filesystem that returns wrong bytes fails instead of printing a number.
//!
//! Not a timed test: run on demand (`scripts/bench-files.sh` sets up the
//! three filesystems); results go to `BENCHMARKS.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FilesBenchError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: block {block} read back wrong bytes (the filesystem returned data it was not given)"
    )]
    WrongData { path: PathBuf, block: u64 },
    #[error("bad target {0:?}: expected NAME=PATH or PATH")]
    BadTarget(String),
    #[error("bad options: {0}")]
    BadOptions(String),
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FilesBenchError + 'a {
    move |source| FilesBenchError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct FilesBenchOptions {
    /// Size of the big file. Default 1 GiB.
    pub big_file_bytes: u64,
    /// Size of one sequential read or write. Default 1 MiB.
    pub io_bytes: usize,
    /// Upper bound on random reads and on random writes. Default 20,000.
    pub random_ops: u64,
    /// Upper bound on the time of each random phase. Default 15 s.
    pub random_time: Duration,
    /// Number of small files. Default 10,000.
    pub small_files: u64,
    /// Size of one small file. Default 4 KiB.
    pub small_file_bytes: usize,
    /// Drop the kernel page cache before cold reads (needs root). Default true.
    pub drop_caches: bool,
    /// Written, read back and removed before anything is measured, so no target's first
    /// phase pays for cold servers and caches. Default 64 MiB.
    pub warmup_bytes: u64,
    /// Rounds of the big-file phases (write, cold read, cached read), each on a new
    /// file; the median round is reported. Default 3: an S3 server's speed here drifts
    /// from one minute to the next.
    pub big_rounds: u32,
    pub seed: u64,
}

impl Default for FilesBenchOptions {
    fn default() -> Self {
        FilesBenchOptions {
            big_file_bytes: 1 << 30,
            io_bytes: 1 << 20,
            random_ops: 20_000,
            random_time: Duration::from_secs(15),
            small_files: 10_000,
            small_file_bytes: 4096,
            drop_caches: true,
            warmup_bytes: 64 << 20,
            big_rounds: 3,
            seed: 1,
        }
    }
}

pub const RANDOM_IO_BYTES: usize = 4096;

/// One filesystem to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub path: PathBuf,
}

impl Target {
    /// `NAME=PATH`, or `PATH` (named after itself).
    pub fn parse(s: &str) -> Result<Target, FilesBenchError> {
        let (name, path) = match s.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => (n.to_string(), p),
            Some(_) => return Err(FilesBenchError::BadTarget(s.to_string())),
            None if !s.is_empty() => (s.to_string(), s),
            None => return Err(FilesBenchError::BadTarget(s.to_string())),
        };
        Ok(Target {
            name,
            path: PathBuf::from(path),
        })
    }
}

/// One measured number.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Measure {
    pub phase: &'static str,
    /// `MB/s` (10^6 bytes) or `ops/s`.
    pub unit: &'static str,
    /// The median of `rounds` for a phase run in rounds.
    pub value: f64,
    /// In all rounds together.
    pub seconds: f64,
    /// Each round's value, for a phase run in rounds (else empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TargetResult {
    pub name: String,
    pub path: PathBuf,
    /// Whether the page cache could be dropped before the cold reads.
    pub caches_dropped: bool,
    /// Per big-file round: how many targets ran their round before this one.
    pub positions: Vec<usize>,
    pub measures: Vec<Measure>,
}

/// Small, fast, seeded generator (xorshift64*): offsets and fill bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Stamp `buf` as block `index` of a run: its first 16 bytes are the index and a tag.
fn stamp(buf: &mut [u8], index: u64, tag: u64) {
    if buf.len() >= 16 {
        buf[..8].copy_from_slice(&index.to_le_bytes());
        buf[8..16].copy_from_slice(&tag.to_le_bytes());
    }
}

fn stamped(buf: &[u8], index: u64, tag: u64) -> bool {
    buf.len() < 16 || (buf[..8] == index.to_le_bytes() && buf[8..16] == tag.to_le_bytes())
}

fn drop_page_cache() -> bool {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn ops_per_s(ops: u64, d: Duration) -> f64 {
    ops as f64 / d.as_secs_f64().max(1e-9)
}

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A progress line on stderr, so stdout stays the table.
fn progress(target: &str, m: &Measure) {
    eprintln!(
        "  {target}: {:<22} {:>10.1} {:<5} ({:.1} s)",
        m.phase, m.value, m.unit, m.seconds
    );
}

/// Runs every phase on every target, each in `target.path/teemsfs-bench-<pid>`, removed
/// afterwards.
///
/// The big-file rounds are interleaved: round `r` runs every target's big-file phases, in
/// the targets' order rotated by `r` (see [`round_order`]), so no target is always the
/// first to grow into memory or servers the others then reuse. The other phases run
/// afterwards, one target at a time, in the targets' order.
pub fn run_targets(
    targets: &[Target],
    opts: &FilesBenchOptions,
) -> Result<Vec<TargetResult>, FilesBenchError> {
    check_options(opts)?;
    let mut runs = Vec::with_capacity(targets.len());
    let result = measure_all(targets, opts, &mut runs);
    let mut cleanup = Ok(());
    for run in &runs {
        let removed = fs::remove_dir_all(&run.work).map_err(io("removing", &run.work));
        if cleanup.is_ok() {
            cleanup = removed;
        }
    }
    let result = result?;
    cleanup?;
    Ok(result)
}

fn check_options(opts: &FilesBenchOptions) -> Result<(), FilesBenchError> {
    if opts.io_bytes < RANDOM_IO_BYTES || !opts.io_bytes.is_multiple_of(RANDOM_IO_BYTES) {
        return Err(FilesBenchError::BadOptions(format!(
            "io size must be a multiple of {RANDOM_IO_BYTES}"
        )));
    }
    if opts.big_rounds == 0 {
        return Err(FilesBenchError::BadOptions(
            "the big-file phases need at least one round".into(),
        ));
    }
    if opts.big_file_bytes < opts.io_bytes as u64 {
        return Err(FilesBenchError::BadOptions(
            "the big file must hold at least one io-size block".into(),
        ));
    }
    Ok(())
}

/// The targets' indices in the order round `round` runs them: `0..n` rotated left by
/// `round`, so over `n` rounds every target goes first once.
pub fn round_order(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |j| (round + j) % n)
}

/// [`run_targets`] without the cleanup: every work directory it creates is pushed to
/// `runs` at once, so the caller removes it whatever fails.
fn measure_all<'t>(
    targets: &'t [Target],
    opts: &FilesBenchOptions,
    runs: &mut Vec<Run<'t>>,
) -> Result<Vec<TargetResult>, FilesBenchError> {
    for target in targets {
        let work = target
            .path
            .join(format!("teemsfs-bench-{}", std::process::id()));
        fs::create_dir(&work).map_err(io("creating", &work))?;
        eprintln!("{}: {}", target.name, work.display());
        runs.push(Run::new(target, work, opts));
    }
    for run in runs.iter_mut() {
        run.warm_up(opts)?;
    }
    for round in 0..opts.big_rounds as usize {
        for (position, i) in round_order(runs.len(), round).enumerate() {
            runs[i].big_round(round, position, opts)?;
        }
    }
    runs.iter_mut().map(|run| run.finish(opts)).collect()
}

/// One target's run: its work directory and what its phases have measured so far.
struct Run<'t> {
    target: &'t Target,
    work: PathBuf,
    rng: Rng,
    /// One sequential io block.
    buf: Vec<u8>,
    /// The big files, one per round; they stay until all rounds are done, so no round
    /// pays for deleting another's. The last one is used by the random phases.
    big_files: Vec<PathBuf>,
    /// Per round: sequential write, cold read, cached read.
    times: [Vec<Duration>; 3],
    /// Per round: how many targets ran their round before this one.
    positions: Vec<usize>,
    caches_dropped: bool,
    measures: Vec<Measure>,
}

impl<'t> Run<'t> {
    fn new(target: &'t Target, work: PathBuf, opts: &FilesBenchOptions) -> Run<'t> {
        let mut rng = Rng::new(opts.seed);
        let mut buf = vec![0u8; opts.io_bytes];
        rng.fill(&mut buf);
        Run {
            target,
            work,
            rng,
            buf,
            big_files: Vec::new(),
            times: Default::default(),
            positions: Vec::new(),
            caches_dropped: false,
            measures: Vec::new(),
        }
    }

    fn push(&mut self, m: Measure) {
        progress(&self.target.name, &m);
        self.measures.push(m);
    }

    /// Records `ops` operations done in `d`.
    fn push_ops(&mut self, phase: &'static str, ops: u64, d: Duration) {
        self.push(Measure {
            phase,
            unit: "ops/s",
            value: ops_per_s(ops, d),
            seconds: d.as_secs_f64(),
            rounds: Vec::new(),
        });
    }

    /// Times `op` on each of the `n` small files and records the rate.
    fn per_file(
        &mut self,
        phase: &'static str,
        n: u64,
        mut op: impl FnMut(u64) -> Result<(), FilesBenchError>,
    ) -> Result<(), FilesBenchError> {
        let t = Instant::now();
        for i in 0..n {
            op(i)?;
        }
        self.push_ops(phase, n, t.elapsed());
        Ok(())
    }

    /// 0. Warm-up, not measured.
    fn warm_up(&mut self, opts: &FilesBenchOptions) -> Result<(), FilesBenchError> {
        if opts.warmup_bytes == 0 {
            return Ok(());
        }
        let warm = self.work.join("warmup");
        let mut f = File::create(&warm).map_err(io("creating", &warm))?;
        for _ in 0..opts.warmup_bytes.div_ceil(opts.io_bytes as u64) {
            f.write_all(&self.buf).map_err(io("writing", &warm))?;
        }
        f.sync_all().map_err(io("fsync of", &warm))?;
        drop(f);
        fs::read(&warm).map_err(io("reading", &warm))?;
        fs::remove_file(&warm).map_err(io("removing", &warm))
    }

    /// 1–3. One round of the big-file phases on a new file: sequential write, cold read
    /// (page cache dropped) and cached read.
    fn big_round(
        &mut self,
        round: usize,
        position: usize,
        opts: &FilesBenchOptions,
    ) -> Result<(), FilesBenchError> {
        let blocks = opts.big_file_bytes / opts.io_bytes as u64;
        let bytes = blocks * opts.io_bytes as u64;
        let tag = opts.seed;
        let file = self.work.join(format!("big-{round}"));
        self.positions.push(position);
        let t = Instant::now();
        {
            let mut f = File::create(&file).map_err(io("creating", &file))?;
            for i in 0..blocks {
                stamp(&mut self.buf, i, tag);
                f.write_all(&self.buf).map_err(io("writing", &file))?;
            }
            f.sync_all().map_err(io("fsync of", &file))?;
        }
        self.times[0].push(t.elapsed());
        self.caches_dropped = opts.drop_caches && drop_page_cache();
        for cached in [false, true] {
            let t = Instant::now();
            let mut f = File::open(&file).map_err(io("opening", &file))?;
            for i in 0..blocks {
                f.read_exact(&mut self.buf).map_err(io("reading", &file))?;
                if !stamped(&self.buf, i, tag) {
                    return Err(FilesBenchError::WrongData {
                        path: file.clone(),
                        block: i,
                    });
                }
            }
            self.times[1 + usize::from(cached)].push(t.elapsed());
        }
        self.big_files.push(file);
        if opts.big_rounds > 1 {
            let mbs = |d: &[Duration]| d.last().map_or(0.0, |d| mb_per_s(bytes, *d));
            eprintln!(
                "  {}: big-file round {}/{} (position {}): write {:.1}, cold read {:.1}, cached read {:.1} MB/s",
                self.target.name,
                round + 1,
                opts.big_rounds,
                position + 1,
                mbs(&self.times[0]),
                mbs(&self.times[1]),
                mbs(&self.times[2])
            );
        }
        Ok(())
    }

    /// The big-file measures from the rounds run, then phases 4–6.
    fn finish(&mut self, opts: &FilesBenchOptions) -> Result<TargetResult, FilesBenchError> {
        let blocks = opts.big_file_bytes / opts.io_bytes as u64;
        let bytes = blocks * opts.io_bytes as u64;
        let tag = opts.seed;
        let times = std::mem::take(&mut self.times);
        for (phase, secs) in ["seq write", "seq read", "seq read (cached)"]
            .into_iter()
            .zip(&times)
        {
            let rates: Vec<f64> = secs.iter().map(|d| mb_per_s(bytes, *d)).collect();
            self.push(Measure {
                phase,
                unit: "MB/s",
                value: median(&rates),
                seconds: secs.iter().map(Duration::as_secs_f64).sum(),
                rounds: if rates.len() > 1 { rates } else { Vec::new() },
            });
        }
        let Some((big, earlier)) = self.big_files.split_last() else {
            return Err(FilesBenchError::BadOptions(
                "the big-file phases need at least one round".into(),
            ));
        };
        let big = big.clone();
        for file in earlier {
            fs::remove_file(file).map_err(io("removing", file))?;
        }
        // 4. Random 4 KiB reads: each read's block lies inside one stamped io block, so only
        // reads at the start of an io block can be checked by stamp; all are checked for length.
        if opts.drop_caches {
            drop_page_cache();
        }
        let pages = bytes / RANDOM_IO_BYTES as u64;
        let per_block = (opts.io_bytes / RANDOM_IO_BYTES) as u64;
        let mut page = vec![0u8; RANDOM_IO_BYTES];
        let f = File::open(&big).map_err(io("opening", &big))?;
        let t = Instant::now();
        let mut ops = 0;
        while ops < opts.random_ops && t.elapsed() < opts.random_time {
            let p = self.rng.next() % pages;
            f.read_exact_at(&mut page, p * RANDOM_IO_BYTES as u64)
                .map_err(io("reading", &big))?;
            if p.is_multiple_of(per_block) && !stamped(&page, p / per_block, tag) {
                return Err(FilesBenchError::WrongData {
                    path: big.clone(),
                    block: p / per_block,
                });
            }
            ops += 1;
        }
        let d = t.elapsed();
        self.push_ops("4 KiB random read", ops, d);
        drop(f);

        // 5. Random 4 KiB writes, fsync inside the timing.
        let f = OpenOptions::new()
            .write(true)
            .open(&big)
            .map_err(io("opening", &big))?;
        self.rng.fill(&mut page);
        let t = Instant::now();
        let mut ops = 0;
        while ops < opts.random_ops && t.elapsed() < opts.random_time {
            let p = self.rng.next() % pages;
            f.write_all_at(&page, p * RANDOM_IO_BYTES as u64)
                .map_err(io("writing", &big))?;
            ops += 1;
        }
        f.sync_all().map_err(io("fsync of", &big))?;
        drop(f);
        let d = t.elapsed();
        self.push_ops("4 KiB random write", ops, d);
        fs::remove_file(&big).map_err(io("removing", &big))?;

        // 6. Small files.
        let dir = self.work.join("small");
        fs::create_dir(&dir).map_err(io("creating", &dir))?;
        let name = |i: u64| dir.join(format!("f{i:06}"));
        let mut small = vec![0u8; opts.small_file_bytes];
        self.rng.fill(&mut small);
        let n = opts.small_files;

        self.per_file("small create", n, |i| {
            let p = name(i);
            stamp(&mut small, i, tag);
            let mut f = File::create(&p).map_err(io("creating", &p))?;
            f.write_all(&small).map_err(io("writing", &p))
        })?;
        self.per_file("small stat", n, |i| {
            let p = name(i);
            let md = fs::metadata(&p).map_err(io("stat of", &p))?;
            if md.len() != opts.small_file_bytes as u64 {
                return Err(FilesBenchError::WrongData { path: p, block: 0 });
            }
            Ok(())
        })?;
        self.per_file("small read", n, |i| {
            let p = name(i);
            let mut f = File::open(&p).map_err(io("opening", &p))?;
            f.read_exact(&mut small).map_err(io("reading", &p))?;
            if !stamped(&small, i, tag) {
                return Err(FilesBenchError::WrongData { path: p, block: 0 });
            }
            Ok(())
        })?;
        self.per_file("small delete", n, |i| {
            let p = name(i);
            fs::remove_file(&p).map_err(io("removing", &p))
        })?;

        Ok(TargetResult {
            name: self.target.name.clone(),
            path: self.target.path.clone(),
            caches_dropped: self.caches_dropped,
            positions: std::mem::take(&mut self.positions),
            measures: std::mem::take(&mut self.measures),
        })
    }
}

/// The results as a Markdown table: one column per target, then the first
/// target's value divided by each other target's (higher is better for the first).
pub fn markdown(results: &[TargetResult]) -> String {
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    out.push_str("| phase | unit |");
    for r in results {
        out.push_str(&format!(" {} |", r.name));
    }
    for r in &results[1..] {
        out.push_str(&format!(" {} ÷ {} |", first.name, r.name));
    }
    out.push('\n');
    out.push_str("|---|---|");
    for _ in 0..(2 * results.len() - 1) {
        out.push_str("---:|");
    }
    out.push('\n');
    for (i, m) in first.measures.iter().enumerate() {
        out.push_str(&format!("| {} | {} |", m.phase, m.unit));
        for r in results {
            match r.measures.get(i) {
                Some(x) => out.push_str(&format!(" {} |", fmt_value(x.value))),
                None => out.push_str(" – |"),
            }
        }
        for r in &results[1..] {
            match r.measures.get(i) {
                Some(x) if x.value > 0.0 => out.push_str(&format!(" {:.2} |", m.value / x.value)),
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;

    fn small_opts() -> FilesBenchOptions {
        FilesBenchOptions {
            big_file_bytes: 1 << 20,
            io_bytes: 64 << 10,
            random_ops: 50,
            random_time: Duration::from_secs(5),
            small_files: 20,
            small_file_bytes: 4096,
            drop_caches: false,
            warmup_bytes: 256 << 10,
            big_rounds: 3,
            seed: 7,
        }
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn targets_parse_with_and_without_a_name() {
        assert_eq!(
            Target::parse("tfs=/mnt/a").unwrap(),
            Target {
                name: "tfs".into(),
                path: "/mnt/a".into()
            }
        );
        assert_eq!(
            Target::parse("/mnt/b").unwrap(),
            Target {
                name: "/mnt/b".into(),
                path: "/mnt/b".into()
            }
        );
        assert!(Target::parse("=/x").is_err());
        assert!(Target::parse("name=").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn a_run_measures_every_phase_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            name: "local".into(),
            path: dir.path().to_path_buf(),
        };
        let r = run_targets(std::slice::from_ref(&t), &small_opts())
            .unwrap()
            .remove(0);
        assert_eq!(r.positions, vec![0, 0, 0]);
        let phases: Vec<_> = r.measures.iter().map(|m| m.phase).collect();
        assert_eq!(phases.len(), 9, "{phases:?}");
        for m in &r.measures[..3] {
            assert_eq!(m.rounds.len(), 3, "{m:?}");
            assert_eq!(m.value, median(&m.rounds), "{m:?}");
        }
        assert!(r.measures[3..].iter().all(|m| m.rounds.is_empty()));
        assert!(r.measures.iter().all(|m| m.value > 0.0), "{:?}", r.measures);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the work directory is removed"
        );
        let table = markdown(&[r.clone(), r]);
        assert!(table.contains("| seq write | MB/s |"), "{table}");
        assert!(
            table.contains(" 1.00 |"),
            "a target against itself is 1.00: {table}"
        );
    }

    #[test]
    fn big_rounds_rotate_through_the_targets() {
        assert_eq!(round_order(3, 0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(round_order(3, 1).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(round_order(3, 4).collect::<Vec<_>>(), [1, 2, 0]);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let targets: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| Target {
                name: format!("t{i}"),
                path: d.path().to_path_buf(),
            })
            .collect();
        let mut opts = small_opts();
        opts.small_files = 2;
        opts.random_ops = 2;
        let results = run_targets(&targets, &opts).unwrap();
        let names: Vec<_> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["t0", "t1", "t2"], "results keep the targets' order");
        let positions: Vec<_> = results.iter().map(|r| r.positions.clone()).collect();
        assert_eq!(positions, [vec![0, 2, 1], vec![1, 0, 2], vec![2, 1, 0]]);
        for r in &results {
            assert_eq!(r.measures.len(), 9, "{r:?}");
            assert!(r.measures[..3].iter().all(|m| m.rounds.len() == 3), "{r:?}");
        }
        for d in &dirs {
            assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0, "work removed");
        }
    }

    #[test]
    fn a_failing_target_leaves_no_work_directory_behind() {
        let good = tempfile::tempdir().unwrap();
        let targets = [
            Target {
                name: "good".into(),
                path: good.path().to_path_buf(),
            },
            Target {
                name: "missing".into(),
                path: good.path().join("no-such-dir"),
            },
        ];
        let err = run_targets(&targets, &small_opts()).unwrap_err();
        assert!(
            matches!(
                err,
                FilesBenchError::Io {
                    what: "creating",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read_dir(good.path()).unwrap().count(), 0);
    }

    #[test]
    fn stamps_catch_a_block_from_elsewhere() {
        let mut b = vec![0u8; 4096];
        stamp(&mut b, 3, 9);
        assert!(stamped(&b, 3, 9));
        assert!(!stamped(&b, 4, 9));
        assert!(!stamped(&b, 3, 8));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            name: "x".into(),
            path: dir.path().to_path_buf(),
        };
        let mut o = small_opts();
        o.io_bytes = 1000;
        assert!(matches!(
            run_targets(std::slice::from_ref(&t), &o),
            Err(FilesBenchError::BadOptions(_))
        ));
        let mut o = small_opts();
        o.big_rounds = 0;
        assert!(matches!(
            run_targets(std::slice::from_ref(&t), &o),
            Err(FilesBenchError::BadOptions(_))
        ));
        let mut o = small_opts();
        o.big_file_bytes = 10;
        assert!(matches!(
            run_targets(std::slice::from_ref(&t), &o),
            Err(FilesBenchError::BadOptions(_))
        ));
    }
}
