//! `teemsfs cluster init|start|stop|status` (DESIGN §8, §12).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use enclave_replica::core::Mode;
use enclave_replica::enclave::attestation::measure_file;
use enclave_replica::provision::{InitOptions, init_cluster};
use teemsfs::replicas::{self, ReplicaState};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Restart-rollback quorums with suspicion and recovery (the real thing).
    Rr,
    /// Crash-fault majority quorums: the baseline, unsafe under rollback.
    Cft,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Create DIR with a CA, replica and tenant certificates, sealing secrets
    /// and cluster.toml. N must be max(M_R, F) + F + 1.
    Init {
        dir: PathBuf,
        /// Number of replicas N.
        #[arg(long)]
        replicas: u32,
        /// M_R: most replicas whose sealed state may be rolled back at once.
        #[arg(long = "mr")]
        m_r: u32,
        /// F: most replicas that may be unreachable at once.
        #[arg(long)]
        f: u32,
        #[arg(long, value_enum, default_value = "rr")]
        mode: ModeArg,
        /// An extra tenant (repeatable); `admin` always exists.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Certify the measurement of the `teems-replica` binary found next to
        /// this one, and make peers require it (default: development policy
        /// "any").
        #[arg(long)]
        measure: bool,
    },
    /// Start every replica, or replica I alone; waits until each answers.
    Start { dir: PathBuf, id: Option<u32> },
    /// Stop every replica, or replica I alone (SIGTERM, then SIGKILL).
    Stop {
        dir: PathBuf,
        id: Option<u32>,
        /// SIGKILL at once: a crash rather than a shutdown.
        #[arg(long)]
        kill: bool,
    },
    /// Each replica: up, suspicious, recovering, leader, executed slot, keys.
    Status {
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Init {
            dir,
            replicas,
            m_r,
            f,
            mode,
            tenants,
            measure,
        } => {
            let mut opts = InitOptions::new(replicas, m_r, f);
            opts.mode = match mode {
                ModeArg::Rr => Mode::Rr,
                ModeArg::Cft => Mode::Cft,
            };
            opts.tenants = tenants;
            if measure {
                let bin = replicas::replica_binary()?;
                opts.measurement = Some(
                    measure_file(&bin).with_context(|| format!("measuring {}", bin.display()))?,
                );
            }
            let file = init_cluster(&dir, &opts)
                .with_context(|| format!("cluster init {}", dir.display()))?;
            println!(
                "initialised {} replicas (M_R={}, F={}, mode {}) in {}",
                file.replicas.len(),
                file.m_r,
                file.f,
                match file.mode {
                    Mode::Rr => "rr",
                    Mode::Cft => "cft",
                },
                dir.display()
            );
            for r in &file.replicas {
                println!("  {r}");
            }
            println!("tenants: {}", file.tenants.join(", "));
            println!("next: teemsfs cluster start {}", dir.display());
            Ok(())
        }
        ClusterCommand::Start { dir, id } => {
            let ids: Vec<u32> = id.into_iter().collect();
            for (id, pid, fresh) in replicas::start(&dir, &ids)? {
                if fresh {
                    println!("replica {id} started (pid {pid})");
                } else {
                    println!("replica {id} already running (pid {pid})");
                }
            }
            Ok(())
        }
        ClusterCommand::Stop { dir, id, kill } => {
            let ids: Vec<u32> = id.into_iter().collect();
            let stopped = replicas::stop(&dir, &ids, kill)?;
            if stopped.is_empty() {
                println!("nothing was running");
            }
            for id in stopped {
                println!("replica {id} stopped");
            }
            Ok(())
        }
        ClusterCommand::Status { dir, json } => {
            let states = replicas::status(&dir)?;
            let text = if json {
                serde_json::to_string_pretty(&states)? + "\n"
            } else {
                table(&states)
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            Ok(())
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn table(states: &[ReplicaState]) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:<4} {:<11} {:<11} {:<7} {:<9} {:<7} {}\n",
        "replica",
        "pid",
        "up",
        "suspicious",
        "recovering",
        "leader",
        "executed",
        "keys",
        "sealed state at start"
    );
    for s in states {
        let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
        match &s.status {
            Some(st) => out.push_str(&format!(
                "{:<8} {:<8} {:<4} {:<11} {:<11} {:<7} {:<9} {:<7} {}\n",
                s.id,
                pid,
                "yes",
                yes_no(st.suspicious),
                yes_no(st.recovering),
                st.leader.map_or("-".to_string(), |l| l.to_string()),
                st.executed_slot,
                st.keys,
                st.sealed_at_start
            )),
            None => out.push_str(&format!("{:<8} {:<8} {:<4}\n", s.id, pid, "no")),
        }
    }
    out
}
