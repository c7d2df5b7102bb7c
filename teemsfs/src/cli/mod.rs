//! Command-line interface of `teemsfs` (DESIGN §12), with clap derive.
//!
//! Each subcommand group lives in its own module and only translates
//! arguments into calls of the library (`teemsfs::replicas`,
//! `teemsfs::meta_remote`, `enclave_replica::provision`, `teemsfs::bench`);
//! new groups (`up`, `mount`, `gc`, …) are one more variant of [`Command`].
//!
//! Exit status: 0 on success; for `teemsfs meta`, a refused or failed
//! operation exits with [`meta::exit_code`] (2 not found, 3 denied, 4 not
//! writer, 5 unavailable, 1 anything else) and prints one line on stderr
//! naming the error; other commands exit 1 with the error chain on stderr.

pub mod bench;
pub mod cluster;
pub mod fs_cmds;
pub mod meta;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// teemsfs: an encrypted, erasure-coded filesystem whose metadata lives in a
/// rollback-tolerant replicated service (TEEMS).
#[derive(Parser, Debug)]
#[command(name = "teemsfs", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, start, stop and inspect a local TEEMS cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Read, write and delete metadata values as a tenant (operators, tests).
    #[command(subcommand)]
    Meta(meta::MetaCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The embedded default: create (if needed) and start a local cluster with local
    /// stores under DIR, and mount DIR/mnt.
    Up(fs_cmds::UpArgs),
    /// Unmount DIR/mnt, stop its mount process and the cluster.
    Down(fs_cmds::DownArgs),
    /// Mount the deployment in DIR at MOUNTPOINT (in the background unless --foreground).
    Mount(fs_cmds::MountArgs),
    /// Unmount a teemsfs mount.
    Umount(fs_cmds::UmountArgs),
    /// Remove object-store fragments that no live metadata names.
    Gc(fs_cmds::GcArgs),
    /// Check that metadata, manifests and fragments agree; complete interrupted renames.
    Fsck(fs_cmds::FsckArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cluster(cmd) => report(cluster::run(cmd)),
        Command::Meta(cmd) => meta::run(cmd),
        Command::Bench(cmd) => report(bench::run(cmd)),
        Command::Up(args) => report(fs_cmds::up(args)),
        Command::Down(args) => report(fs_cmds::down(args)),
        Command::Mount(args) => report(fs_cmds::mount(args)),
        Command::Umount(args) => report(fs_cmds::umount(args)),
        Command::Gc(args) => report(fs_cmds::gc(args)),
        Command::Fsck(args) => report(fs_cmds::fsck(args)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
