//! `teemsfs up|down|mount|umount|gc|fsck` (DESIGN §12): the filesystem's commands.
//! Argument handling and printing only; the work is in `teemsfs::deploy`,
//! `teemsfs::fuse` and `teemsfs::housekeeping`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use teemsfs::deploy::{self, CONFIG_FILE, Deployment, MOUNT_EXIT_TIMEOUT, MOUNT_TIMEOUT};
use teemsfs::housekeeping::{self, DEFAULT_GC_GRACE};
use teemsfs::replicas;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Deployment directory (created if missing).
    pub dir: PathBuf,
    /// A deployment config to use (installed as DIR/teemsfs.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Deployment directory (holding cluster/ and, optionally, teemsfs.toml).
    pub dir: PathBuf,
    pub mountpoint: PathBuf,
    /// Stay in the foreground serving the mount until it is unmounted or signalled.
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    pub mountpoint: PathBuf,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    pub dir: PathBuf,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Minimum age in seconds of an unreferenced fragment before it is removed.
    #[arg(long, default_value_t = DEFAULT_GC_GRACE.as_secs())]
    pub grace: u64,
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    pub dir: PathBuf,
}

/// Progress on stderr: at most one line a second, so long runs show life without flooding.
struct Ticker {
    last: Mutex<Option<Instant>>,
}

impl Ticker {
    fn new() -> Ticker {
        Ticker {
            last: Mutex::new(None),
        }
    }

    fn line(&self, text: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            eprintln!("  … {text}");
            *last = Some(Instant::now());
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn up(args: UpArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    if let Some(cfg) = &args.config {
        Deployment::install_config(&args.dir, cfg)?;
        println!(
            "config: {} installed as {}",
            cfg.display(),
            args.dir.join(CONFIG_FILE).display()
        );
    }
    let d = Deployment::load(&args.dir)?;
    let c = &d.config;
    if d.init_cluster_if_missing()? {
        println!(
            "cluster: initialised {} replicas (M_R={}, F={}) in {}",
            c.cluster.replicas,
            c.cluster.m_r,
            c.cluster.f,
            d.cluster_dir().display()
        );
    } else {
        println!(
            "cluster: using the existing cluster in {}",
            d.cluster_dir().display()
        );
    }
    for (id, pid, fresh) in replicas::start(&d.cluster_dir(), &[])? {
        println!(
            "  replica {id}: {} (pid {pid})",
            if fresh { "started" } else { "already running" }
        );
    }
    println!("stores:");
    for (text, spec) in c.stores.iter().zip(d.store_specs()?) {
        match spec {
            deploy::StoreSpec::Dir(p) => println!("  {text}  (local directory {})", p.display()),
            _ => println!("  {text}"),
        }
    }
    println!(
        "layout: (k={}, m={}) — each blob is {} data + {} parity fragments; chunks of {} KiB",
        c.layout.k,
        c.layout.m,
        c.layout.k,
        c.layout.m,
        c.chunk_size_bytes >> 10
    );
    println!("tenant: {}, share: {}", c.tenant, c.share_name());
    let mountpoint = d.default_mountpoint();
    if deploy::is_fuse_mounted(&mountpoint) {
        println!("mounted: {} (already)", mountpoint.display());
    } else {
        let (pid, log) = spawn_mount(&d, &mountpoint)?;
        println!(
            "mounted: {} (mount process pid {pid}, log {})",
            mountpoint.display(),
            log.display()
        );
        let metrics_file = d.mount_files(&mountpoint).0.with_extension("metrics");
        let until = Instant::now() + Duration::from_secs(2);
        let read_addr = || {
            std::fs::read_to_string(&metrics_file)
                .ok()
                .map(|a| a.trim().to_string())
        };
        let mut addr = read_addr().filter(|a| !a.is_empty());
        while addr.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            addr = read_addr().filter(|a| !a.is_empty());
        }
        if let Some(addr) = addr {
            println!("metrics: http://{addr}/metrics");
        }
    }
    println!("stop with: teemsfs down {}", d.dir.display());
    Ok(())
}

/// Starts `teemsfs mount DIR MOUNTPOINT --foreground` detached (own session, output to a
/// log file, PID file) and waits until the mount is there.
fn spawn_mount(d: &Deployment, mountpoint: &Path) -> Result<(u32, PathBuf)> {
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    std::fs::create_dir_all(d.run_dir())?;
    let (pid_file, log_file) = d.mount_files(mountpoint);
    // A mount process just unmounted may still be finishing (it waits a few seconds for
    // deletions whose grace period is ending): give it the time an unmount gets.
    if let Some(pid) = deploy::read_pid(&pid_file).filter(|p| {
        deploy::is_mount_process(*p)
            && !deploy::is_fuse_mounted(mountpoint)
            && !deploy::wait_exit(*p, MOUNT_EXIT_TIMEOUT)
    }) {
        bail!(
            "a mount process (pid {pid}) for {} is already running but not mounted; see {}",
            mountpoint.display(),
            log_file.display()
        );
    }
    let exe = std::env::current_exe().context("locating the teemsfs binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg(&d.dir)
        .arg(mountpoint)
        .arg("--foreground");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    {
        use std::os::unix::process::CommandExt;
        // Its own session: the shell's Ctrl-C and hang-up do not reach it.
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("starting the mount process")?;
    let pid = child.id();
    let until = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_file).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            bail!(
                "the mount process exited ({status}) before mounting; last lines of {}:\n{}",
                log_file.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if deploy::is_fuse_mounted(mountpoint) {
            break;
        }
        if Instant::now() >= until {
            deploy::signal(pid, libc::SIGTERM);
            bail!(
                "{} did not appear within {:?}; see {}",
                mountpoint.display(),
                MOUNT_TIMEOUT,
                log_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The process lives on; init reaps it when it exits.
    drop(child);
    Ok((pid, log_file))
}

pub fn mount(args: MountArgs) -> Result<()> {
    let d = Deployment::load(&args.dir)?;
    if !d.has_cluster() {
        bail!(
            "{} has no cluster (run `teemsfs up {}` first)",
            d.dir.display(),
            d.dir.display()
        );
    }
    if !args.foreground {
        let (pid, log) = spawn_mount(&d, &args.mountpoint)?;
        println!(
            "mounted {} (pid {pid}, log {})",
            args.mountpoint.display(),
            log.display()
        );
        println!("unmount with: teemsfs umount {}", args.mountpoint.display());
        return Ok(());
    }
    serve_foreground(&d, &args.mountpoint)
}

/// The mount process: serve until unmounted from outside or told to stop by a signal,
/// then unmount cleanly (committing nothing new: every commit already happened at close).
fn serve_foreground(d: &Deployment, mountpoint: &Path) -> Result<()> {
    let _ = tracing_init();
    let rt = runtime()?;
    let (fs, _stores) = rt.block_on(d.open_fs()).context("opening the filesystem")?;
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    let handle = teemsfs::fuse::mount(
        fs,
        rt.handle().clone(),
        mountpoint,
        &d.config.mount_options(),
    )
    .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    let (pid_file, _) = d.mount_files(mountpoint);
    std::fs::create_dir_all(d.run_dir())?;
    // Metrics on a loopback port the kernel picks; its address goes next to the PID file.
    let metrics_file = pid_file.with_extension("metrics");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding the metrics port")?;
    let metrics_addr = listener.local_addr()?;
    rt.spawn(enclave_replica::net::admin::serve_http(
        listener,
        handle.metrics_handler(),
        "try /metrics\n",
    ));
    // Written whole and renamed into place: `teemsfs up` polls for the file
    // and must never read it half-written.
    let partial = metrics_file.with_extension("metrics.partial");
    std::fs::write(&partial, format!("{metrics_addr}\n"))?;
    std::fs::rename(&partial, &metrics_file)?;
    eprintln!("teemsfs: metrics at http://{metrics_addr}/metrics");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
    eprintln!(
        "teemsfs: serving {} (pid {})",
        mountpoint.display(),
        std::process::id()
    );
    let reason = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok::<_, std::io::Error>("SIGTERM"),
                _ = int.recv() => return Ok("SIGINT"),
                _ = hup.recv() => return Ok("SIGHUP"),
                _ = poll.tick() => if handle.is_finished() { return Ok("unmounted") },
            }
        }
    })?;
    eprintln!("teemsfs: {reason}; unmounting {}", mountpoint.display());
    let result = handle.unmount();
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&metrics_file);
    result.with_context(|| format!("unmounting {}", mountpoint.display()))?;
    eprintln!("teemsfs: done");
    Ok(())
}

fn tracing_init() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
}

pub fn umount(args: UmountArgs) -> Result<()> {
    deploy::unmount(&args.mountpoint)?;
    // The mount process sees its session end and exits by itself.
    let until = Instant::now() + MOUNT_EXIT_TIMEOUT;
    while deploy::is_fuse_mounted(&args.mountpoint) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("unmounted {}", args.mountpoint.display());
    Ok(())
}

pub fn down(args: DownArgs) -> Result<()> {
    let d = Deployment::load(&args.dir)?;
    let mountpoint = d.default_mountpoint();
    if deploy::is_fuse_mounted(&mountpoint) {
        deploy::unmount(&mountpoint)?;
        println!("unmounted {}", mountpoint.display());
    } else {
        println!("{} was not mounted", mountpoint.display());
    }
    // Every mount process of this deployment: wait for a clean exit, then signal.
    if let Ok(entries) = std::fs::read_dir(d.run_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".pid"))
            {
                continue;
            }
            let Some(pid) = deploy::read_pid(&path) else {
                continue;
            };
            if deploy::is_mount_process(pid) && !deploy::wait_exit(pid, MOUNT_EXIT_TIMEOUT) {
                deploy::signal(pid, libc::SIGTERM);
                if !deploy::wait_exit(pid, Duration::from_secs(10)) {
                    deploy::signal(pid, libc::SIGKILL);
                    deploy::wait_exit(pid, Duration::from_secs(2));
                }
            }
            println!("mount process {pid} stopped");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("metrics"));
        }
    }
    if d.has_cluster() {
        let stopped = replicas::stop(&d.cluster_dir(), &[], false)?;
        println!("cluster: stopped {} replicas", stopped.len());
    }
    println!("down: {}", d.dir.display());
    Ok(())
}

pub fn gc(args: GcArgs) -> Result<()> {
    let d = Deployment::load(&args.dir)?;
    let rt = runtime()?;
    let ticker = Ticker::new();
    let progress = |s: &str| ticker.line(s);
    let grace = Duration::from_secs(args.grace);
    let report = rt.block_on(async {
        let (fs, stores) = d.open_fs().await?;
        let state = d.run_dir().join("gc-seen.json");
        anyhow::Ok(housekeeping::gc(&fs, &stores, grace, args.dry_run, &state, &progress).await?)
    })?;
    if args.dry_run {
        for o in &report.collectable {
            let age = o.age.map_or("?".into(), |a| format!("{}s", a.as_secs()));
            println!(
                "orphan {} {} {} bytes, age {age}",
                o.store, o.name, o.size_bytes
            );
        }
    }
    for (store, n, bytes) in housekeeping::orphans_by_store(&report.collectable) {
        println!("  {store}: {n} orphaned fragments, {bytes} bytes");
    }
    println!(
        "gc summary: {} objects listed, {} live blobs ({} fragments) in {} directories and {} files; {} orphans older than {}s {}; {} younger orphans kept{}",
        report.objects_listed,
        report.live_blobs,
        report.live_fragments,
        report.walk.dirs,
        report.walk.files,
        report.collectable.len(),
        args.grace,
        if args.dry_run {
            "(dry run: nothing removed)".to_string()
        } else {
            format!("({} removed)", report.deleted)
        },
        report.young,
        if report.delete_failures > 0 {
            format!("; {} deletions failed", report.delete_failures)
        } else {
            String::new()
        },
    );
    if report.delete_failures > 0 {
        bail!(
            "{} orphaned fragments could not be deleted",
            report.delete_failures
        );
    }
    Ok(())
}

pub fn fsck(args: FsckArgs) -> Result<()> {
    let d = Deployment::load(&args.dir)?;
    let rt = runtime()?;
    let ticker = Ticker::new();
    let progress = |s: &str| ticker.line(s);
    let report = rt.block_on(async {
        let (fs, stores) = d.open_fs().await?;
        anyhow::Ok(housekeeping::fsck(&fs, &stores, &progress).await?)
    })?;
    for p in &report.problems {
        println!("problem: {}: {}", p.path, p.what);
    }
    println!(
        "fsck summary: {} directories, {} files, {} other; {} MiB of content verified; {} problems; {} blobs missing {} fragments{}",
        report.walk.dirs,
        report.walk.files,
        report.walk.other,
        report.walk.bytes_verified >> 20,
        report.problems.len(),
        report.blobs_missing_fragments,
        report.fragments_missing,
        if report.interrupted_rename_completed {
            "; completed an interrupted rename"
        } else {
            ""
        },
    );
    if !report.problems.is_empty() {
        bail!("{} problems found", report.problems.len());
    }
    Ok(())
}
