//! `teemsfs bench …`: benchmark subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use enclave_replica::core::Mode;
use teemsfs::bench::files::{self, FilesBenchOptions, Target};
use teemsfs::bench::meta::{self, MetaBenchOptions, markdown};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Metadata service: TEEMS rr and cft (5 local replicas, M_R=2, F=2) and
    /// optionally etcd; 1, 8, 64 concurrent clients.
    Meta(MetaArgs),
    /// Filesystems (or any directories): 1 GiB sequential write/read, 4 KiB random
    /// reads/writes, 10,000 small files; one column per target and the first
    /// target's ratio to each other one.
    Files(FilesArgs),
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    /// Directories to measure, `NAME=PATH` or `PATH`, in order; the first is compared
    /// with the others.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Size of the big file in MiB.
    #[arg(long, default_value_t = 1024)]
    pub big_mib: u64,
    /// Rounds of the big-file phases, each on a new file; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub big_rounds: u32,
    /// Size of one sequential read/write in KiB.
    #[arg(long, default_value_t = 1024)]
    pub io_kib: usize,
    /// Upper bound on random reads and on random writes.
    #[arg(long, default_value_t = 20_000)]
    pub random_ops: u64,
    /// Upper bound in seconds on each random phase.
    #[arg(long, default_value_t = 15)]
    pub random_seconds: u64,
    /// Number of small files.
    #[arg(long, default_value_t = 10_000)]
    pub small_files: u64,
    /// MiB written, read back and removed on each target before anything is measured.
    #[arg(long, default_value_t = 64)]
    pub warmup_mib: u64,
    /// Do not drop the kernel page cache before cold reads.
    #[arg(long)]
    pub keep_page_cache: bool,
    /// Also write the table (Markdown) and the numbers (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MetaArgs {
    /// Fresh work directory for the benchmark clusters.
    pub dir: PathBuf,
    /// Concurrent clients per point (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub clients: Vec<usize>,
    /// Seconds per measured point.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// etcd HTTP endpoints host:port (comma-separated); none skips etcd.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<SocketAddr>,
    /// Only TEEMS in rr mode (skip cft).
    #[arg(long)]
    pub rr_only: bool,
    /// Also write the table (Markdown) and the points (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn write_out(out: &Option<PathBuf>, table: &str, json: String) -> Result<()> {
    if let Some(out) = out {
        std::fs::write(out, table).with_context(|| format!("writing {}", out.display()))?;
        let path = out.with_extension("json");
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Files(args) => {
            let targets = args
                .targets
                .iter()
                .map(|t| Target::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let opts = FilesBenchOptions {
                big_file_bytes: args.big_mib << 20,
                big_rounds: args.big_rounds,
                io_bytes: args.io_kib << 10,
                random_ops: args.random_ops,
                random_time: std::time::Duration::from_secs(args.random_seconds),
                small_files: args.small_files,
                drop_caches: !args.keep_page_cache,
                warmup_bytes: args.warmup_mib << 20,
                ..FilesBenchOptions::default()
            };
            let results = files::run_targets(&targets, &opts).context("benchmarking")?;
            if results.iter().any(|r| !r.caches_dropped) && opts.drop_caches {
                eprintln!(
                    "note: the page cache could not be dropped (not root?): cold reads may be cached"
                );
            }
            let table = files::markdown(&results);
            print!("{table}");
            write_out(&args.out, &table, serde_json::to_string_pretty(&results)?)
        }
        BenchCommand::Meta(args) => {
            let mut opts = MetaBenchOptions::new(args.dir.clone());
            opts.clients = args.clients;
            opts.point_ms = args.seconds * 1000;
            opts.value_bytes = args.value_bytes;
            opts.etcd = args.etcd;
            if args.rr_only {
                opts.modes = vec![Mode::Rr];
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let points = rt.block_on(meta::run(&opts))?;
            let table = markdown(&points);
            print!("{table}");
            write_out(&args.out, &table, serde_json::to_string_pretty(&points)?)
        }
    }
}
