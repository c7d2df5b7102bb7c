//! A deployment directory and its configuration: what `teemsfs up|down|mount|umount|gc|fsck`
//! share (DESIGN §12).
//!
//! Layout of a deployment directory `DIR`:
//!
//! ```text
//! DIR/teemsfs.toml        the deployment config (optional: every option has a default)
//! DIR/cluster/            the local TEEMS cluster (`teemsfs cluster init` output)
//! DIR/stores/0..2         the default local-directory object stores
//! DIR/mnt                 the default mountpoint
//! DIR/run/mount-<h>.pid   PID of the mount process for mountpoint hash <h>
//! DIR/run/mount-<h>.log   its log
//! DIR/run/gc-seen.json    when `gc` first saw each orphan in a store without times
//! ```
//!
//! [`DeployConfig`] is the TOML config, with `deny_unknown_fields` so a misspelt option is
//! an error naming it, and [`DeployConfig::validate`] naming the field of every bad value.
//! [`Deployment::open_fs`] builds the whole client: stores → `BlobStore` → TEEMS session
//! for the tenant (creating its share on first use) → [`Fs`], initialised.
//!
//! Not here: argument parsing and printing (the CLI), and the replicas' own lifecycle
//! (`crate::replicas`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_replica::provision::{ADMIN_TENANT, ClusterFile, InitOptions, init_cluster};
use metadata_client::session::Session;
use serde::{Deserialize, Serialize};

use crate::cache::CacheConfig;
use crate::fs::{Caller, Fs, FsConfig};
use crate::fuse::MountOptions;
use crate::meta::{Key, ShareId};
use crate::meta_remote::{ensure_share, session_config, share_id};
use crate::store::{
    BlobStore, BlobStoreConfig, LocalStore, ObjectStore, RedisConfig, RedisStore, S3Config, S3Store,
};

/// File name of the deployment config inside a deployment directory.
pub const CONFIG_FILE: &str = "teemsfs.toml";
/// Longest wait for a daemonised mount to appear.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a mount process to exit after its unmount.
pub const MOUNT_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{file}: {detail}")]
    ConfigSyntax { file: String, detail: String },
    #[error("{file}: `{field}`: {reason}")]
    ConfigField {
        file: String,
        field: String,
        reason: String,
    },
    #[error("store {spec:?}: {reason}")]
    Store { spec: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("metadata session: {0}")]
    Session(String),
    #[error("filesystem: {0}")]
    Fs(#[from] crate::fs::FsError),
    #[error("mount at {mountpoint}: {reason}")]
    Mount { mountpoint: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeployError + '_ {
    move |source| DeployError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cluster `up` creates when the directory has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Number of replicas N = max(M_R, F) + F + 1. Default 5.
    pub replicas: u32,
    /// M_R: replicas whose sealed state may be rolled back at once. Default 2.
    pub m_r: u32,
    /// F: replicas that may be unreachable at once. Default 2.
    pub f: u32,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            replicas: 5,
            m_r: 2,
            f: 2,
        }
    }
}

/// Erasure layout of every blob: `k` data and `m` parity fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayoutSection {
    /// Default 2.
    pub k: u8,
    /// Default 1.
    pub m: u8,
}

impl Default for LayoutSection {
    fn default() -> Self {
        LayoutSection { k: 2, m: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Plaintext bytes the blob cache may hold; 0 disables it. Default 256 MiB.
    pub blob_cache_bytes: u64,
    /// Entries of the name cache. Default 100,000.
    pub name_cache_entries: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        let d = CacheConfig::default();
        CacheSection {
            blob_cache_bytes: d.blob_cache_bytes,
            name_cache_entries: d.name_cache_entries,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountSection {
    /// FUSE worker threads. Default 4.
    pub threads: usize,
    /// Largest write the kernel sends at once. Default 1 MiB.
    pub max_write_bytes: u32,
    /// Kernel writeback cache. Default false (it makes the kernel ignore other clients'
    /// size changes; see `fuse::MountOptions::writeback_cache`).
    pub writeback_cache: bool,
    /// Kernel attribute/name cache lifetime. Default 0: attributes and names are kept
    /// only while read leases keep them current.
    pub attr_ttl_ms: u64,
    /// Let other users into the mount (needs `user_allow_other` unless root). Default false.
    pub allow_other: bool,
}

impl Default for MountSection {
    fn default() -> Self {
        let d = MountOptions::default();
        MountSection {
            threads: d.threads,
            max_write_bytes: d.max_write_bytes,
            writeback_cache: d.writeback_cache,
            attr_ttl_ms: d.attr_ttl_ms,
            allow_other: d.allow_other,
        }
    }
}

/// `DIR/teemsfs.toml`. Every field has a default; an empty file is the embedded default:
/// a 5-replica cluster (M_R=2, F=2), three local-directory stores, layout (2,1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Tenant the mount acts as (its certificate is in the cluster). Default "admin".
    pub tenant: String,
    /// Share to mount. Default: the tenant's home share (named after the tenant).
    pub share: Option<String>,
    /// Object stores, in order (fragment locations name them by position, so never
    /// reorder a deployment's stores). `dir:PATH` (relative to DIR), `redis://HOST:PORT`,
    /// `s3://BUCKET?endpoint=URL[&region=R][&prefix=P][&access_key_id=ID&secret_access_key=S]`.
    /// Default: `dir:stores/0`, `dir:stores/1`, `dir:stores/2`.
    pub stores: Vec<String>,
    pub layout: LayoutSection,
    /// Files up to this size are one blob; larger ones are chunks of it. Default 4 MiB.
    pub chunk_size_bytes: u64,
    /// Grace period before superseded blobs are deleted. Default 30,000 ms.
    pub delete_grace_ms: u64,
    pub cache: CacheSection,
    pub mount: MountSection,
    pub cluster: ClusterSection,
}

impl Default for DeployConfig {
    fn default() -> Self {
        let fs = FsConfig::default();
        DeployConfig {
            tenant: ADMIN_TENANT.to_string(),
            share: None,
            stores: (0..3).map(|i| format!("dir:stores/{i}")).collect(),
            layout: LayoutSection::default(),
            chunk_size_bytes: fs.chunk_size_bytes,
            delete_grace_ms: fs.delete_grace_ms,
            cache: CacheSection::default(),
            mount: MountSection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

/// One parsed `stores` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    Dir(PathBuf),
    Redis(String),
    S3 {
        bucket: String,
        endpoint: String,
        region: Option<String>,
        prefix: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    },
}

impl StoreSpec {
    pub fn parse(spec: &str) -> Result<StoreSpec, String> {
        if let Some(path) = spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err("`dir:` needs a path".into());
            }
            return Ok(StoreSpec::Dir(PathBuf::from(path)));
        }
        if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            return Ok(StoreSpec::Redis(spec.to_string()));
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
            if bucket.is_empty() || bucket.contains('/') {
                return Err("`s3://BUCKET?endpoint=URL`: bad bucket name".into());
            }
            let (mut endpoint, mut region, mut prefix, mut key_id, mut secret) =
                (None, None, None, None, None);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("query part {pair:?} is not key=value"))?;
                let v = Some(v.to_string());
                match k {
                    "endpoint" => endpoint = v,
                    "region" => region = v,
                    "prefix" => prefix = v,
                    "access_key_id" => key_id = v,
                    "secret_access_key" => secret = v,
                    other => {
                        return Err(format!(
                            "unknown S3 option {other:?} (known: endpoint, region, prefix, access_key_id, secret_access_key)"
                        ));
                    }
                }
            }
            let endpoint = endpoint.ok_or("S3 stores need `?endpoint=URL`")?;
            return Ok(StoreSpec::S3 {
                bucket: bucket.to_string(),
                endpoint,
                region,
                prefix,
                access_key_id: key_id,
                secret_access_key: secret,
            });
        }
        Err("expected `dir:PATH`, `redis://HOST:PORT` or `s3://BUCKET?endpoint=URL`".into())
    }
}

impl DeployConfig {
    /// Parses and validates a config; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<DeployConfig, DeployError> {
        let config: DeployConfig = toml::from_str(text).map_err(|e| DeployError::ConfigSyntax {
            file: file.to_string(),
            detail: e.to_string(),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self, file: &str) -> Result<(), DeployError> {
        let bad = |field: &str, reason: String| DeployError::ConfigField {
            file: file.to_string(),
            field: field.to_string(),
            reason,
        };
        enclave_replica::provision::check_tenant_name(&self.tenant)
            .map_err(|r| bad("tenant", r.to_string()))?;
        if self.stores.is_empty() {
            return Err(bad("stores", "at least one store is needed".into()));
        }
        for (i, s) in self.stores.iter().enumerate() {
            StoreSpec::parse(s).map_err(|r| bad(&format!("stores[{i}]"), format!("{s:?}: {r}")))?;
        }
        if self.layout.k == 0 {
            return Err(bad("layout.k", "must be at least 1".into()));
        }
        let total = usize::from(self.layout.k) + usize::from(self.layout.m);
        erasure::Layout {
            k: self.layout.k,
            m: self.layout.m,
        }
        .validate()
        .map_err(|e| {
            bad(
                "layout",
                format!("(k={}, m={}): {e}", self.layout.k, self.layout.m),
            )
        })?;
        if self.layout.m > 0 && self.stores.len() < total {
            // Fragments of one blob would share stores; losing one store could then lose
            // more than m fragments. Allowed only without parity, where it changes nothing.
            return Err(bad(
                "layout",
                format!(
                    "k + m = {total} fragments need at least {total} stores to survive m store losses; {} configured",
                    self.stores.len()
                ),
            ));
        }
        if !(4096..=(1 << 30)).contains(&self.chunk_size_bytes) {
            return Err(bad(
                "chunk_size_bytes",
                format!("{} is outside 4096 ..= 1 GiB", self.chunk_size_bytes),
            ));
        }
        if self.mount.threads == 0 || self.mount.threads > 256 {
            return Err(bad(
                "mount.threads",
                format!("{} is outside 1 ..= 256", self.mount.threads),
            ));
        }
        if !(4096..=(16 << 20)).contains(&self.mount.max_write_bytes) {
            return Err(bad(
                "mount.max_write_bytes",
                format!("{} is outside 4096 ..= 16 MiB", self.mount.max_write_bytes),
            ));
        }
        if let Some(share) = &self.share
            && share.is_empty()
        {
            return Err(bad("share", "must not be empty".into()));
        }
        Ok(())
    }

    pub fn fs_config(&self) -> FsConfig {
        FsConfig {
            chunk_size_bytes: self.chunk_size_bytes,
            delete_grace_ms: self.delete_grace_ms,
            cache: CacheConfig {
                blob_cache_bytes: self.cache.blob_cache_bytes,
                name_cache_entries: self.cache.name_cache_entries,
                ..CacheConfig::default()
            },
            ..FsConfig::default()
        }
    }

    pub fn mount_options(&self) -> MountOptions {
        MountOptions {
            threads: self.mount.threads,
            max_write_bytes: self.mount.max_write_bytes,
            writeback_cache: self.mount.writeback_cache,
            attr_ttl_ms: self.mount.attr_ttl_ms,
            allow_other: self.mount.allow_other,
            fsname: format!("teemsfs:{}", self.share_name()),
        }
    }

    pub fn share_name(&self) -> &str {
        self.share.as_deref().unwrap_or(&self.tenant)
    }

    pub fn share_id(&self) -> ShareId {
        share_id(self.share_name())
    }

    /// The share's root directory key: fixed per share, so every mount of it agrees.
    pub fn root_key(&self) -> Key {
        Key::from_name(&format!("teemsfs/root/{}", self.share_name()))
    }
}

/// A deployment directory and its loaded config.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub dir: PathBuf,
    pub config: DeployConfig,
}

impl Deployment {
    /// Loads `DIR/teemsfs.toml` if present, else the defaults.
    pub fn load(dir: &Path) -> Result<Deployment, DeployError> {
        let dir = absolute(dir)?;
        let path = dir.join(CONFIG_FILE);
        let config = match std::fs::read_to_string(&path) {
            Ok(text) => DeployConfig::from_toml(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DeployConfig::default(),
            Err(e) => return Err(DeployError::Io { path, source: e }),
        };
        Ok(Deployment { dir, config })
    }

    /// Validates `config_file` and installs it as `DIR/teemsfs.toml`.
    pub fn install_config(dir: &Path, config_file: &Path) -> Result<(), DeployError> {
        let text = std::fs::read_to_string(config_file).map_err(io_err(config_file))?;
        DeployConfig::from_toml(&text, &config_file.display().to_string())?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let target = dir.join(CONFIG_FILE);
        std::fs::write(&target, text).map_err(io_err(&target))
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.join("cluster")
    }

    pub fn has_cluster(&self) -> bool {
        ClusterFile::path_in(&self.cluster_dir()).is_file()
    }

    pub fn default_mountpoint(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// PID and log file of the mount process for `mountpoint`.
    pub fn mount_files(&self, mountpoint: &Path) -> (PathBuf, PathBuf) {
        let canonical =
            std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let h = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
        let tag = h.as_str().get(..12).unwrap_or("mount").to_string();
        let run = self.run_dir();
        (
            run.join(format!("mount-{tag}.pid")),
            run.join(format!("mount-{tag}.log")),
        )
    }

    /// Creates the cluster if the directory has none (`cluster init` with the config's
    /// N, M_R, F and tenant). Returns whether it created one.
    pub fn init_cluster_if_missing(&self) -> Result<bool, DeployError> {
        if self.has_cluster() {
            return Ok(false);
        }
        let c = &self.config.cluster;
        let mut opts = InitOptions::new(c.replicas, c.m_r, c.f);
        if self.config.tenant != ADMIN_TENANT {
            opts.tenants.push(self.config.tenant.clone());
        }
        init_cluster(&self.cluster_dir(), &opts)
            .map_err(|e| DeployError::Cluster(e.to_string()))?;
        Ok(true)
    }

    /// The parsed store list, `dir:` paths made absolute under DIR.
    pub fn store_specs(&self) -> Result<Vec<StoreSpec>, DeployError> {
        self.config
            .stores
            .iter()
            .map(|s| match StoreSpec::parse(s) {
                Ok(StoreSpec::Dir(p)) => Ok(StoreSpec::Dir(if p.is_absolute() {
                    p
                } else {
                    self.dir.join(p)
                })),
                Ok(other) => Ok(other),
                Err(reason) => Err(DeployError::Store {
                    spec: s.clone(),
                    reason,
                }),
            })
            .collect()
    }

    /// Connects to every store (creating local directories and S3 buckets if missing).
    pub async fn open_stores(&self) -> Result<Vec<Arc<dyn ObjectStore>>, DeployError> {
        let mut out: Vec<Arc<dyn ObjectStore>> = Vec::new();
        for (spec, text) in self.store_specs()?.into_iter().zip(&self.config.stores) {
            let fail = |reason: String| DeployError::Store {
                spec: text.clone(),
                reason,
            };
            let store: Arc<dyn ObjectStore> = match spec {
                StoreSpec::Dir(path) => {
                    Arc::new(LocalStore::open(&path).map_err(|e| fail(e.to_string()))?)
                }
                StoreSpec::Redis(url) => Arc::new(
                    RedisStore::connect(RedisConfig::single(&url))
                        .await
                        .map_err(|e| fail(e.to_string()))?,
                ),
                StoreSpec::S3 {
                    bucket,
                    endpoint,
                    region,
                    prefix,
                    access_key_id,
                    secret_access_key,
                } => {
                    let mut cfg = S3Config::new(&endpoint, &bucket);
                    if let Some(r) = region {
                        cfg.region = r;
                    }
                    if let Some(p) = prefix {
                        cfg.key_prefix = p;
                    }
                    cfg.access_key_id = access_key_id;
                    cfg.secret_access_key = secret_access_key;
                    let s3 = S3Store::new(cfg).map_err(|e| fail(e.to_string()))?;
                    s3.create_bucket_if_missing()
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    Arc::new(s3)
                }
            };
            out.push(store);
        }
        Ok(out)
    }

    /// A metadata session as the config's tenant, with its share created if missing.
    pub async fn open_session(&self) -> Result<Session, DeployError> {
        let cfg = session_config(&self.cluster_dir(), &self.config.tenant, 0)
            .map_err(|e| DeployError::Session(e.to_string()))?;
        let session = Session::connect(cfg)
            .await
            .map_err(|e| DeployError::Session(e.to_string()))?;
        ensure_share(&session, self.config.share_id())
            .await
            .map_err(|e| DeployError::Session(e.to_string()))?;
        Ok(session)
    }

    /// The whole client: stores, blob layer, TEEMS session, `Fs` (initialised: root
    /// created if missing, interrupted renames completed). Returns the stores too, for gc
    /// and fsck.
    pub async fn open_fs(&self) -> Result<(Arc<Fs>, Vec<Arc<dyn ObjectStore>>), DeployError> {
        let stores = self.open_stores().await?;
        let layout = erasure::Layout {
            k: self.config.layout.k,
            m: self.config.layout.m,
        };
        let blobs = BlobStore::new(stores.clone(), BlobStoreConfig::new(layout)).map_err(|e| {
            DeployError::Store {
                spec: "(all)".into(),
                reason: e.to_string(),
            }
        })?;
        let session = self.open_session().await?;
        let fs = Arc::new(Fs::new(
            Arc::new(session),
            Arc::new(blobs),
            self.config.share_id(),
            self.config.root_key(),
            self.config.fs_config(),
        ));
        fs.init(current_caller()).await?;
        Ok((fs, stores))
    }
}

/// The calling process's uid and gid (owner of a new root directory).
pub fn current_caller() -> Caller {
    // SAFETY: getuid/getgid take no arguments, cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Caller {
        uid,
        gid,
        pid: std::process::id(),
    }
}

fn absolute(dir: &Path) -> Result<PathBuf, DeployError> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(io_err(Path::new(".")))?;
    Ok(cwd.join(dir))
}

/// Whether `mountpoint` is a mount point of a FUSE filesystem now (per /proc/mounts).
pub fn is_fuse_mounted(mountpoint: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let want = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let want = want.to_string_lossy().replace(' ', "\\040");
    mounts.lines().any(|line| {
        let mut parts = line.split(' ');
        let (_, target, fstype) = (parts.next(), parts.next(), parts.next());
        target == Some(want.as_str()) && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

/// Unmounts a FUSE mount from outside its process (`fusermount3 -u`, then `umount`).
pub fn unmount(mountpoint: &Path) -> Result<(), DeployError> {
    let fail = |reason: String| DeployError::Mount {
        mountpoint: mountpoint.to_path_buf(),
        reason,
    };
    if !is_fuse_mounted(mountpoint) {
        return Err(fail("not a mounted FUSE filesystem".into()));
    }
    let mut last = String::new();
    for (program, args) in [("fusermount3", vec!["-u"]), ("umount", vec![])] {
        match std::process::Command::new(program)
            .args(&args)
            .arg(mountpoint)
            .output()
        {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => last = format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => last = format!("{program}: {e}"),
        }
    }
    Err(fail(last))
}

/// Whether `pid` is alive and is a `teemsfs mount` process (so a stale PID file never
/// makes us signal an unrelated process).
pub fn is_mount_process(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    args.first().is_some_and(|a| a.ends_with(b"teemsfs"))
        && args.iter().any(|a| *a == b"mount")
        && !zombie
}

/// Reads a PID file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until `pid` is gone (or `within` passes); true if gone.
pub fn wait_exit(pid: u32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if !is_mount_process(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_mount_process(pid)
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and has no memory effects; callers check the
    // PID belongs to a teemsfs mount process first.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_is_the_embedded_default() {
        let c = DeployConfig::from_toml("", "t.toml").expect("empty config");
        assert_eq!(c, DeployConfig::default());
        assert_eq!((c.cluster.replicas, c.cluster.m_r, c.cluster.f), (5, 2, 2));
        assert_eq!((c.layout.k, c.layout.m), (2, 1));
        assert_eq!(c.stores.len(), 3);
    }

    #[test]
    fn stores_and_layout_switch_by_config() {
        let c = DeployConfig::from_toml(
            r#"
            stores = ["redis://127.0.0.1:6379", "s3://b1?endpoint=http://127.0.0.1:9000&region=eu-west-1",
                      "s3://b2?endpoint=http://127.0.0.1:9000", "dir:/var/x"]
            layout = { k = 3, m = 1 }
            chunk_size_bytes = 1048576
            "#,
            "t.toml",
        )
        .expect("config");
        assert_eq!(c.layout, LayoutSection { k: 3, m: 1 });
        assert_eq!(
            StoreSpec::parse(&c.stores[0]),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6379".into()))
        );
        match StoreSpec::parse(&c.stores[1]) {
            Ok(StoreSpec::S3 {
                bucket,
                endpoint,
                region,
                ..
            }) => {
                assert_eq!(
                    (bucket.as_str(), endpoint.as_str(), region.as_deref()),
                    ("b1", "http://127.0.0.1:9000", Some("eu-west-1"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            ("layout = { k = 0, m = 1 }", "layout.k"),
            ("layout = { k = 3, m = 1 }", "`layout`"),
            ("stores = [\"ftp://x\"]", "stores[0]"),
            ("chunk_size_bytes = 12", "chunk_size_bytes"),
            ("tenant = \"a b\"", "tenant"),
            ("mount = { threads = 0 }", "mount.threads"),
            ("stors = []", "stors"),
            ("layout = { k = \"two\" }", "k = \"two\""),
            ("stores = [\"s3://b?region=x\"]", "stores[0]"),
        ];
        for (text, field) in cases {
            let err = DeployConfig::from_toml(text, "t.toml")
                .expect_err(text)
                .to_string();
            assert!(
                err.contains(field),
                "{text}: error {err:?} does not name {field}"
            );
        }
    }
}
