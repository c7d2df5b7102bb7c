//! `teemsfs bench …`: benchmark subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use enclave_replica::core::Mode;
use teemsfs::bench::meta::{self, MetaBenchOptions, markdown};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Metadata service: TEEMS rr and cft (5 local replicas, M_R=2, F=2) and
    /// optionally etcd; 1, 8, 64 concurrent clients.
    Meta(MetaArgs),
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

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Meta(args) => {
            let mut opts = MetaBenchOptions::new(args.dir.clone());
            opts.clients = args.clients;
            opts.point_ms = args.seconds * 1000;
            opts.value_bytes = args.value_bytes;
            opts.etcd = args.etcd;
            if args.rr_only {
                opts.modes = vec![Mode::Rr];
            }
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let points = rt.block_on(meta::run(&opts))?;
            let table = markdown(&points);
            print!("{table}");
            if let Some(out) = args.out {
                std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
                let json = out.with_extension("json");
                std::fs::write(&json, serde_json::to_string_pretty(&points)?)
                    .with_context(|| format!("writing {}", json.display()))?;
            }
            Ok(())
        }
    }
}
