//! Provisioning a cluster: `teemsfs cluster init` as a library, and the one
//! configuration file that describes a deployment (DESIGN §8, §12).
//!
//! [`init_cluster`] creates, under a cluster directory `DIR`:
//!
//! ```text
//! DIR/cluster.toml                 the configuration (written last: its presence
//!                                  marks a complete init)
//! DIR/ca/{cert,key}.pem            the cluster CA; the key is the operator's
//!                                  secret, replicas never read it
//! DIR/replica-<i>/cert.pem         CN and DNS name replica-<i>, measurement extension
//! DIR/replica-<i>/key.pem          0600
//! DIR/replica-<i>/sealing.key      32 random bytes, 0600: the emulated enclave's root key
//! DIR/replica-<i>/sealed/          0700: the sealed state store
//! DIR/tenants/<name>/{cert,key}.pem  client certificates (CN = tenant name);
//!                                  always an admin tenant `admin`
//! ```
//!
//! [`ClusterFile::load`] reads `cluster.toml` back and validates it, naming the
//! offending field in every error. `(M_R, F)` is validated by the protocol
//! core ([`ClusterConfig::new`]); this module does no quorum arithmetic.
//!
//! Replica ports are chosen at init time by asking the kernel for free
//! loopback ports; another process could take one before the cluster starts,
//! in which case the replica fails to bind with a clear error and the operator
//! edits `cluster.toml`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use metadata_client::transport::{DEFAULT_MAX_FRAME_BYTES, encode_evidence_extension};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::core::quorum::ConfigError;
use crate::core::{ClusterConfig, Mode, Timing};
use crate::enclave::attestation::{
    MEASUREMENT_EXTENSION_OID, Measurement, MeasurementPolicy, replica_name,
};
use crate::enclave::sealer::SoftwareSealer;

/// Name of the configuration file inside the cluster directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// The tenant every cluster has, used by operators and by `teemsfs meta`.
pub const ADMIN_TENANT: &str = "admin";
/// Default number of records between snapshots of a replica's sealed state.
pub const DEFAULT_SNAPSHOT_EVERY_RECORDS: u64 = 10_000;
/// Smallest `max_frame_bytes` accepted: below this even a recovery reply of
/// one metadata value might not fit.
pub const MIN_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest `max_frame_bytes` accepted, to keep per-connection buffers sane.
pub const MAX_MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// What `teemsfs cluster init` was asked for.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// `--replicas N`: must equal the `N` the core derives from `(M_R, F)`.
    pub replicas: u32,
    /// `--mr`: most replicas that may be rolled back at once.
    pub m_r: u32,
    /// `--f`: most replicas that may be unreachable at once.
    pub f: u32,
    pub mode: Mode,
    /// Tenants besides `admin`.
    pub tenants: Vec<String>,
    /// Measurement of the replica binary to certify and to expect from peers.
    /// `None` is the development policy "any": certificates carry
    /// [`Measurement::UNMEASURED`] and peers accept any measurement.
    pub measurement: Option<Measurement>,
    /// Address replicas listen on; loopback by default.
    pub listen_ip: IpAddr,
}

impl InitOptions {
    /// Options for `N` replicas with `(M_R, F)`, RR mode, no extra tenants,
    /// policy "any", loopback.
    pub fn new(replicas: u32, m_r: u32, f: u32) -> InitOptions {
        InitOptions {
            replicas,
            m_r,
            f,
            mode: Mode::Rr,
            tenants: Vec::new(),
            measurement: None,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// `teemsfs cluster init` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("invalid (M_R, F): {0}")]
    Quorum(#[from] ConfigError),
    #[error(
        "--replicas {requested} does not fit m_r={m_r}, f={f}: N = max(M_R, F) + F + 1 = {derived}"
    )]
    ReplicaCount {
        requested: u32,
        derived: u32,
        m_r: u32,
        f: u32,
    },
    #[error("bad tenant name {name:?}: {reason}")]
    BadTenantName { name: String, reason: &'static str },
    #[error("{dir} is not empty; refusing to overwrite an existing cluster or its secrets")]
    NotEmpty { dir: PathBuf },
    #[error("the all-zero measurement means \"unmeasured\" and cannot be the expected measurement")]
    UnmeasuredExpected,
    #[error("cannot find free ports on {ip}: {source}")]
    Ports { ip: IpAddr, source: io::Error },
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("random number generator failed")]
    Random,
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot encode cluster.toml: {0}")]
    Encode(#[from] toml::ser::Error),
}

/// `cluster.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// One replica's entry in `cluster.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// `1..=N`; the certificate name is `replica-<id>`.
    pub id: u32,
    /// Where peers connect (replica ↔ replica protocol messages).
    pub peer_addr: SocketAddr,
    /// Where tenants connect (client ↔ proxy sessions).
    pub client_addr: SocketAddr,
    /// The replica's directory, relative to the cluster directory unless absolute.
    pub dir: PathBuf,
}

/// Where a replica's files are, resolved against the cluster directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaPaths {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub sealing_secret: PathBuf,
    pub sealed_dir: PathBuf,
}

/// Where a tenant's credentials are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The whole of `cluster.toml`. Every field but `mode`, `m_r`, `f` and
/// `replicas` has a default (see the field docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `"rr"` (restart-rollback, the real thing) or `"cft"` (the crash-fault
    /// baseline, unsafe under rollback; for benchmarks and tests).
    #[serde(with = "mode_name")]
    pub mode: Mode,
    pub m_r: u32,
    pub f: u32,
    /// Hex BLAKE3 of the replica binary every replica must present, or
    /// `"any"` (development: certificates must carry a measurement, any value
    /// is accepted). Default `"any"`.
    #[serde(default = "default_policy", with = "policy_string")]
    pub expected_measurement: MeasurementPolicy,
    /// The cluster CA certificate. Default `ca/cert.pem`.
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    /// The operator tenant. Default `admin`.
    #[serde(default = "default_admin")]
    pub admin_tenant: String,
    /// Tenants provisioned under `tenants/<name>/`. Default `["admin"]`.
    #[serde(default = "default_tenants")]
    pub tenants: Vec<String>,
    /// Largest frame on any connection, version byte included. Default 4 MiB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Records between snapshots of the sealed state. Default 10000.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every_records: u64,
    /// Protocol timeouts in milliseconds; defaults are the core's
    /// [`Timing::default`]. If the table is given, give every field.
    #[serde(default)]
    pub timing: Timing,
    /// One entry per replica, ids `1..=N`.
    pub replicas: Vec<ReplicaEntry>,
    /// Directory the relative paths above are resolved against: the directory
    /// holding `cluster.toml`. Not stored in the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_policy() -> MeasurementPolicy {
    MeasurementPolicy::Any
}
fn default_ca_cert() -> PathBuf {
    PathBuf::from("ca/cert.pem")
}
fn default_admin() -> String {
    ADMIN_TENANT.to_string()
}
fn default_tenants() -> Vec<String> {
    vec![ADMIN_TENANT.to_string()]
}
fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_snapshot_every() -> u64 {
    DEFAULT_SNAPSHOT_EVERY_RECORDS
}

mod mode_name {
    use super::Mode;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match mode {
            Mode::Rr => "rr",
            Mode::Cft => "cft",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "rr" => Ok(Mode::Rr),
            "cft" => Ok(Mode::Cft),
            other => Err(D::Error::custom(format!(
                "mode must be \"rr\" or \"cft\", got {other:?}"
            ))),
        }
    }
}

mod policy_string {
    use super::MeasurementPolicy;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(policy: &MeasurementPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&policy.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MeasurementPolicy, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Tenant names become certificate names and directory names: keep them to
/// lowercase letters, digits, `-` and `_`, and away from replica names.
pub fn check_tenant_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("only lowercase letters, digits, '-' and '_' are allowed");
    }
    if !name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err("must start with a letter or digit");
    }
    if name.starts_with(crate::enclave::attestation::REPLICA_NAME_PREFIX) {
        return Err("names starting with \"replica-\" are reserved for replicas");
    }
    Ok(())
}

impl ClusterFile {
    /// Read and validate `cluster.toml`.
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let text = fs::read_to_string(path).map_err(|source| ClusterFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: ClusterFile = toml::from_str(&text).map_err(|e| ClusterFileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        file.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        file.validate()
            .map_err(|(field, reason)| ClusterFileError::Invalid {
                path: path.to_path_buf(),
                field,
                reason,
            })?;
        Ok(file)
    }

    /// Path of the file inside a cluster directory.
    pub fn path_in(cluster_dir: &Path) -> PathBuf {
        cluster_dir.join(CLUSTER_FILE)
    }

    /// Check everything a deployment relies on. Errors are `(field, reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let config = self
            .cluster_config()
            .map_err(|e| ("m_r/f".to_string(), e.to_string()))?;
        if self.replicas.len() != config.n as usize {
            return Err((
                "replicas".to_string(),
                format!(
                    "{} entries, but N = max(M_R, F) + F + 1 = {} for m_r={}, f={}",
                    self.replicas.len(),
                    config.n,
                    self.m_r,
                    self.f
                ),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if !config.replicas.contains(&r.id) {
                return Err((
                    format!("replicas[{i}].id"),
                    format!("{} is outside 1..={}", r.id, config.n),
                ));
            }
            if !ids.insert(r.id) {
                return Err((
                    format!("replicas[{i}].id"),
                    format!("replica id {} appears twice", r.id),
                ));
            }
            for (name, addr) in [("peer_addr", r.peer_addr), ("client_addr", r.client_addr)] {
                if addr.port() == 0 {
                    return Err((
                        format!("replicas[{i}].{name}"),
                        "port 0 is not a listening address".to_string(),
                    ));
                }
                if !addrs.insert(addr) {
                    return Err((
                        format!("replicas[{i}].{name}"),
                        format!("{addr} is used twice"),
                    ));
                }
            }
            if r.dir.as_os_str().is_empty() {
                return Err((
                    format!("replicas[{i}].dir"),
                    "must not be empty".to_string(),
                ));
            }
            if !dirs.insert(r.dir.clone()) {
                return Err((
                    format!("replicas[{i}].dir"),
                    format!("{} is used twice", r.dir.display()),
                ));
            }
        }
        if self.expected_measurement == MeasurementPolicy::Exact(Measurement::UNMEASURED) {
            return Err((
                "expected_measurement".to_string(),
                "the all-zero measurement means \"unmeasured\"; use \"any\" for development"
                    .to_string(),
            ));
        }
        let mut tenants = BTreeSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            check_tenant_name(t)
                .map_err(|reason| (format!("tenants[{i}]"), format!("{t:?}: {reason}")))?;
            if !tenants.insert(t.as_str()) {
                return Err((format!("tenants[{i}]"), format!("{t:?} appears twice")));
            }
        }
        if !tenants.contains(self.admin_tenant.as_str()) {
            return Err((
                "admin_tenant".to_string(),
                format!("{:?} is not in `tenants`", self.admin_tenant),
            ));
        }
        if !(MIN_MAX_FRAME_BYTES..=MAX_MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return Err((
                "max_frame_bytes".to_string(),
                format!(
                    "{} is outside {MIN_MAX_FRAME_BYTES}..={MAX_MAX_FRAME_BYTES}",
                    self.max_frame_bytes
                ),
            ));
        }
        if self.snapshot_every_records == 0 {
            return Err((
                "snapshot_every_records".to_string(),
                "must be at least 1".to_string(),
            ));
        }
        Ok(())
    }

    /// The protocol core's configuration: `(mode, M_R, F)` validated by the
    /// core, with this file's timing.
    pub fn cluster_config(&self) -> Result<ClusterConfig, ConfigError> {
        let mut config = ClusterConfig::new(self.mode, self.m_r, self.f)?;
        config.timing = self.timing.clone();
        config.validate()?;
        Ok(config)
    }

    /// The entry of replica `id`.
    pub fn replica(&self, id: u32) -> Option<&ReplicaEntry> {
        self.replicas.iter().find(|r| r.id == id)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Files of replica `id`, or `None` if there is no such replica.
    pub fn replica_paths(&self, id: u32) -> Option<ReplicaPaths> {
        let dir = self.resolve(&self.replica(id)?.dir);
        Some(ReplicaPaths {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            sealing_secret: dir.join("sealing.key"),
            sealed_dir: dir.join("sealed"),
            dir,
        })
    }

    /// Credentials of tenant `name` (whether or not it was provisioned).
    pub fn tenant_paths(&self, name: &str) -> TenantPaths {
        let dir = self.base_dir.join("tenants").join(name);
        TenantPaths {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// The cluster CA certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.resolve(&self.ca_cert)
    }

    /// The file as TOML, with a header comment.
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        let body = toml::to_string(self)?;
        Ok(format!(
            "# teemsfs cluster configuration, written by `teemsfs cluster init`.\n\
             # Paths are relative to this file's directory. Field reference: docs (ClusterFile).\n\n{body}"
        ))
    }
}

impl fmt::Display for ReplicaEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (peers {}, clients {})",
            replica_name(self.id),
            self.peer_addr,
            self.client_addr
        )
    }
}

/// Create a cluster directory as described in the module docs and return the
/// configuration written to `DIR/cluster.toml`. `dir` may exist but must be empty.
pub fn init_cluster(dir: &Path, opts: &InitOptions) -> Result<ClusterFile, ProvisionError> {
    // 1. Validate everything before touching the disk.
    let config = ClusterConfig::new(opts.mode, opts.m_r, opts.f)?;
    if opts.replicas != config.n {
        return Err(ProvisionError::ReplicaCount {
            requested: opts.replicas,
            derived: config.n,
            m_r: opts.m_r,
            f: opts.f,
        });
    }
    let mut tenants = vec![ADMIN_TENANT.to_string()];
    for t in &opts.tenants {
        check_tenant_name(t).map_err(|reason| ProvisionError::BadTenantName {
            name: t.clone(),
            reason,
        })?;
        if !tenants.contains(t) {
            tenants.push(t.clone());
        }
    }
    let policy = match opts.measurement {
        Some(m) if m == Measurement::UNMEASURED => return Err(ProvisionError::UnmeasuredExpected),
        Some(m) => MeasurementPolicy::Exact(m),
        None => MeasurementPolicy::Any,
    };
    let certified = opts.measurement.unwrap_or(Measurement::UNMEASURED);
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ProvisionError::NotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ProvisionError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let addrs = free_ports(opts.listen_ip, 2 * config.n as usize)?;

    // 2. The CA.
    let rng = SystemRandom::new();
    let (from_year, to_year) = validity_years();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("teemsfs cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(from_year, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(to_year, 1, 1);
    ca_params.serial_number = Some(serial(&rng)?);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_dir = dir.join("ca");
    create_dir(&ca_dir, 0o700)?;
    write_file(&ca_dir.join("cert.pem"), ca_cert.pem().as_bytes(), 0o644)?;
    write_file(
        &ca_dir.join("key.pem"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf =
        |name: &str, usages: Vec<ExtendedKeyUsagePurpose>, evidence: Option<&Measurement>| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(name);
            params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = usages;
            params.not_before = rcgen::date_time_ymd(from_year, 1, 1);
            params.not_after = rcgen::date_time_ymd(to_year, 1, 1);
            params.serial_number = Some(serial(&rng)?);
            params.use_authority_key_identifier_extension = true;
            if let Some(m) = evidence {
                params
                    .custom_extensions
                    .push(CustomExtension::from_oid_content(
                        MEASUREMENT_EXTENSION_OID,
                        encode_evidence_extension(&m.0),
                    ));
            }
            let cert = params.signed_by(&key, &issuer)?;
            Ok::<_, ProvisionError>((cert.pem(), key.serialize_pem()))
        };

    // 3. Replicas.
    let mut replicas = Vec::new();
    for (i, id) in config.replicas.iter().copied().enumerate() {
        let name = replica_name(id);
        let rdir = dir.join(&name);
        create_dir(&rdir, 0o700)?;
        // Replicas both accept connections and open them to their peers.
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (cert_pem, key_pem) = leaf(&name, usages, Some(&certified))?;
        write_file(&rdir.join("cert.pem"), cert_pem.as_bytes(), 0o644)?;
        write_file(&rdir.join("key.pem"), key_pem.as_bytes(), 0o600)?;
        let mut secret = [0u8; SoftwareSealer::SECRET_BYTES];
        rng.fill(&mut secret).map_err(|_| ProvisionError::Random)?;
        write_file(&rdir.join("sealing.key"), &secret, 0o600)?;
        create_dir(&rdir.join("sealed"), 0o700)?;
        let (Some(peer_addr), Some(client_addr)) =
            (addrs.get(2 * i).copied(), addrs.get(2 * i + 1).copied())
        else {
            return Err(ProvisionError::Ports {
                ip: opts.listen_ip,
                source: io::Error::other("fewer ports than replicas"),
            });
        };
        replicas.push(ReplicaEntry {
            id,
            peer_addr,
            client_addr,
            dir: PathBuf::from(&name),
        });
    }

    // 4. Tenants: client authentication only, so a tenant certificate can
    //    never pass as a replica's server certificate.
    for t in &tenants {
        let tdir = dir.join("tenants").join(t);
        create_dir(&tdir, 0o700)?;
        let (cert_pem, key_pem) = leaf(t, vec![ExtendedKeyUsagePurpose::ClientAuth], None)?;
        write_file(&tdir.join("cert.pem"), cert_pem.as_bytes(), 0o644)?;
        write_file(&tdir.join("key.pem"), key_pem.as_bytes(), 0o600)?;
    }

    // 5. The configuration, last.
    let file = ClusterFile {
        mode: opts.mode,
        m_r: opts.m_r,
        f: opts.f,
        expected_measurement: policy,
        ca_cert: default_ca_cert(),
        admin_tenant: ADMIN_TENANT.to_string(),
        tenants,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        snapshot_every_records: DEFAULT_SNAPSHOT_EVERY_RECORDS,
        timing: config.timing.clone(),
        replicas,
        base_dir: dir.to_path_buf(),
    };
    write_file(
        &ClusterFile::path_in(dir),
        file.to_toml_string()?.as_bytes(),
        0o644,
    )?;
    Ok(file)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn serial(rng: &SystemRandom) -> Result<SerialNumber, ProvisionError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| ProvisionError::Random)?;
    // Positive and without a leading zero byte, as DER INTEGER serials should be.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// From the start of last year (tolerates skewed clocks between hosts) to 20
/// years on: a cluster is re-provisioned long before, and no certificate
/// outlives its CA.
fn validity_years() -> (i32, i32) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Average Gregorian year; exact enough to pick a calendar year.
    let year = 1970 + (secs / 31_556_952) as i32;
    (year - 1, year + 20)
}

/// Lowest port [`free_ports`] picks at random.
const RANDOM_PORT_FLOOR: u16 = 10_000;

/// `count` distinct ports that are free now, holding every listener until all are chosen
/// so none is handed out twice. `cluster init` and `cluster start` are separate steps, so
/// a port must stay free in between: ports are drawn at random *below* the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`), where no outgoing connection and no
/// `bind(:0)` of another process (a test's Redis or S3 server, say) can take them. Only
/// when that space is too small does the kernel choose.
fn free_ports(ip: IpAddr, count: usize) -> Result<Vec<SocketAddr>, ProvisionError> {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|lo| lo.parse::<u16>().ok())
        })
        .unwrap_or(32_768);
    let mut listeners = Vec::with_capacity(count);
    if ephemeral_low > RANDOM_PORT_FLOOR + 1_000 {
        let span = u64::from(ephemeral_low - RANDOM_PORT_FLOOR);
        for _ in 0..count * 50 {
            if listeners.len() == count {
                break;
            }
            let port = RANDOM_PORT_FLOOR + (random_u64() % span) as u16;
            if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)) {
                listeners.push(l);
            }
        }
    }
    while listeners.len() < count {
        let l = TcpListener::bind(SocketAddr::new(ip, 0))
            .map_err(|source| ProvisionError::Ports { ip, source })?;
        listeners.push(l);
    }
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_err(|source| ProvisionError::Ports { ip, source })
        })
        .collect()
}

/// A random number from the standard library's per-process random hash keys (port
/// choice needs no cryptographic randomness).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

fn create_dir(path: &Path, mode: u32) -> Result<(), ProvisionError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    b.create(path).map_err(|source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProvisionError> {
    let err = |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    // create_new: never overwrite a secret.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

#[cfg(test)]
#[path = "provision_tests.rs"]
mod tests;
