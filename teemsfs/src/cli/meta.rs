//! `teemsfs meta read|write|delete DIR ID [VALUE]` (issue 4): operator and
//! test access to TEEMS as one tenant.
//!
//! IDs are arbitrary strings mapped to keys with `Key::from_name`; the share
//! defaults to the tenant's home share (`teemsfs::meta_remote::home_share`),
//! which is created on first use: when an operation is refused and the share
//! turns out not to exist, it is created (owner = the tenant) and the
//! operation retried once.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use enclave_replica::provision::ADMIN_TENANT;
use metadata_client::session::{ClientError, Session};
use metadata_client::wire::Key;
use teemsfs::meta_remote::{ensure_share, session_config, share_id};

#[derive(Args, Debug)]
pub struct Target {
    /// The cluster directory (holding cluster.toml).
    pub dir: PathBuf,
    /// The id: any string; mapped to a 128-bit key deterministically.
    pub id: String,
    /// Act as this tenant (its certificate under DIR/tenants/NAME/).
    #[arg(long, default_value = ADMIN_TENANT)]
    pub tenant: String,
    /// The share the id belongs to (default: the tenant's home share).
    #[arg(long)]
    pub share: Option<String>,
    /// Proxy replica to start with (1..=N); fails over to the others.
    #[arg(long)]
    pub proxy: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum MetaCommand {
    /// Print the value alone on stdout.
    Read(Target),
    /// Write VALUE (UTF-8 text as given).
    Write {
        #[command(flatten)]
        target: Target,
        value: String,
    },
    /// Delete the id (writes a tombstone).
    Delete(Target),
}

/// Exit status for a failed operation, by error kind.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotFound => 2,
        ClientError::Denied => 3,
        ClientError::NotWriter => 4,
        ClientError::Unavailable { .. } | ClientError::NoProxy { .. } => 5,
        _ => 1,
    }
}

enum Op {
    Read,
    Write(Vec<u8>),
    Delete,
}

pub fn run(cmd: MetaCommand) -> ExitCode {
    let (target, op) = match cmd {
        MetaCommand::Read(t) => (t, Op::Read),
        MetaCommand::Write { target, value } => (target, Op::Write(value.into_bytes())),
        MetaCommand::Delete(t) => (t, Op::Delete),
    };
    let first_proxy = target.proxy.map_or(0, |p| p.saturating_sub(1));
    let cfg = match session_config(&target.dir, &target.tenant, first_proxy) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: config: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let share = share_id(target.share.as_deref().unwrap_or(&target.tenant));
    let key = Key::from_name(&target.id);
    let result = rt.block_on(async {
        let session = Session::new(cfg)?;
        let once = |session: Session| {
            let op = &op;
            async move {
                match op {
                    Op::Read => session.read(share, key).await.map(|(v, _)| Some(v)),
                    Op::Write(v) => session.write(share, key, v.clone()).await.map(|_| None),
                    Op::Delete => session.delete(share, key).await.map(|_| None),
                }
            }
        };
        match once(session.clone()).await {
            Err(ClientError::Denied) => {
                // Maybe the share does not exist yet: create it and retry once.
                ensure_share(&session, share).await?;
                once(session).await
            }
            other => other,
        }
    });
    match result {
        Ok(Some(value)) => {
            // The value alone; a newline only for a human at a terminal.
            let mut out = std::io::stdout().lock();
            let newline: &[u8] = if out.is_terminal() { b"\n" } else { b"" };
            let _ = out
                .write_all(&value)
                .and_then(|()| out.write_all(newline))
                .and_then(|()| out.flush());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
