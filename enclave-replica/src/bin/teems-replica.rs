//! `teems-replica --config DIR/cluster.toml --id I`: one TEEMS replica
//! process. Thin on purpose: parse arguments, open the log file, start the
//! runtime ([`enclave_replica::runtime`]), stop on SIGTERM or SIGINT.
//! Normally started by `teemsfs cluster start`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use clap::Parser;
use enclave_replica::provision::ClusterFile;
use enclave_replica::runtime::{RuntimeOptions, run};

/// Run one replica of a teemsfs metadata cluster.
#[derive(Parser, Debug)]
#[command(name = "teems-replica", version)]
struct Args {
    /// The cluster's `cluster.toml` (written by `teemsfs cluster init`).
    #[arg(long)]
    config: PathBuf,
    /// This replica's id, 1..=N.
    #[arg(long)]
    id: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teems-replica: {e:#}");
            tracing::error!(error = format!("{e:#}"), "replica stopped");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let file = ClusterFile::load(&args.config)?;
    let paths = file.replica_paths(args.id).with_context(|| format!("replica {} is not in {}", args.id, args.config.display()))?;
    let log_path = paths.dir.join("replica.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEEMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(Mutex::new(log)).init();

    // Two workers: the event loop blocks one while it fsyncs, the other keeps
    // the sockets moving.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        run(RuntimeOptions { cluster_file: args.config.clone(), id: args.id }, shutdown).await
    })?;
    Ok(())
}
