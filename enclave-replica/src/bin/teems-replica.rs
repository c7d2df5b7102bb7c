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
    /// Runtime worker threads (TLS, sockets, the event loop). `teemsfs cluster start`
    /// divides the host's cores among the replicas it starts there.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: u16,
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
    let paths = file
        .replica_paths(args.id)
        .with_context(|| format!("replica {} is not in {}", args.id, args.config.display()))?;
    let log_path = paths.dir.join("replica.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEEMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();

    // The event loop runs as a task on the workers rather than on this thread: a
    // message read by a socket task then wakes the loop on the same worker instead of
    // a sleeping thread (measured: a read's p50 0.40 → 0.29 ms on 5 local replicas).
    // While the loop fsyncs (`block_in_place`), the runtime hands the sockets to
    // another thread, so even one worker keeps them moving.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        let opts = RuntimeOptions {
            cluster_file: args.config.clone(),
            id: args.id,
        };
        tokio::spawn(run(opts, shutdown))
            .await
            .context("the replica's event loop panicked")??;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
