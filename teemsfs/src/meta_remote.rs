//! The real metadata service behind [`Teems`]: a `metadata_client::Session`
//! to a TEEMS cluster, and how to open one from a cluster directory.
//!
//! Shares and names. Operators and tests name shares and keys with strings;
//! [`share_id`] and [`Key::from_name`] map them to ids deterministically. Every
//! tenant has a *home share* named after itself ([`home_share`]); it is
//! created on first use by [`ensure_share`] (a `CreateShare` policy change,
//! owner = the tenant), which is what `teemsfs meta` does when an operation on
//! the tenant's home share is refused because the share does not exist yet.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use enclave_replica::enclave::attestation::replica_name;
use enclave_replica::provision::{ClusterFile, ClusterFileError};
use metadata_client::session::{ClientError, ProxyAddr, Session, SessionConfig};

use crate::meta::{Key, MetaError, PolicyOp, ShareId, SharePolicy, Teems, Version};

/// Opening a session from a cluster directory failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteSetupError {
    #[error(transparent)]
    ClusterFile(#[from] ClusterFileError),
    #[error(
        "tenant {tenant:?}: cannot read {path}: {source} (is it one of the cluster's tenants?)"
    )]
    Credentials {
        tenant: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The share id for a share name (`--share NAME`).
pub fn share_id(name: &str) -> ShareId {
    ShareId(Key::from_name(&format!("teemsfs/share/{name}")).0)
}

/// A tenant's home share: the share named after the tenant.
pub fn home_share(tenant: &str) -> ShareId {
    share_id(tenant)
}

/// A session configuration for `tenant` of the cluster in `cluster_dir`, with
/// every replica as a possible proxy, starting at `first_proxy` (modulo N).
pub fn session_config(
    cluster_dir: &Path,
    tenant: &str,
    first_proxy: usize,
) -> Result<SessionConfig, RemoteSetupError> {
    let file = ClusterFile::load(&ClusterFile::path_in(cluster_dir))?;
    session_config_from(&file, tenant, first_proxy)
}

/// Same as [`session_config`] for an already loaded cluster file.
pub fn session_config_from(
    file: &ClusterFile,
    tenant: &str,
    first_proxy: usize,
) -> Result<SessionConfig, RemoteSetupError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| RemoteSetupError::Credentials {
            tenant: tenant.to_string(),
            path,
            source,
        })
    };
    let creds = file.tenant_paths(tenant);
    let ca = read(file.ca_cert_path())?;
    let cert = read(creds.cert)?;
    let key = read(creds.key)?;
    let proxies = file
        .replicas
        .iter()
        .map(|r| ProxyAddr {
            name: replica_name(r.id),
            addr: r.client_addr,
        })
        .collect();
    let mut cfg = SessionConfig::new(proxies, ca, cert, key);
    cfg.max_frame_bytes = file.max_frame_bytes;
    cfg.first_proxy = first_proxy;
    // The client's deadline must outlast the proxy's own (which answers
    // `Unavailable` when it runs out) by a margin for one failover.
    cfg.deadline_ms = file
        .timing
        .op_deadline_ms
        .saturating_mul(2)
        .max(file.timing.op_deadline_ms + 1_000);
    // Ask for the longest read lease the cluster grants (0 there: none).
    cfg.lease_ms = u32::try_from(file.timing.lease_ms).unwrap_or(u32::MAX);
    Ok(cfg)
}

/// Create `share` with the session's tenant as owner, unless it exists.
/// Idempotent: "already exists" counts as success.
pub async fn ensure_share(session: &Session, share: ShareId) -> Result<(), ClientError> {
    match session.read_policy(share).await {
        Ok(_) | Err(ClientError::Denied) => return Ok(()),
        Err(ClientError::NotFound) => {}
        Err(e) => return Err(e),
    }
    match session.change_policy(share, PolicyOp::CreateShare).await {
        Ok(_) | Err(ClientError::BadRequest(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn meta_error(e: ClientError) -> MetaError {
    match e {
        ClientError::NotFound => MetaError::NotFound,
        ClientError::Denied => MetaError::Denied,
        ClientError::NotWriter => MetaError::NotWriter,
        ClientError::BadRequest(why) => MetaError::BadRequest(why),
        other => MetaError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl Teems for Session {
    async fn read(&self, share: ShareId, key: Key) -> Result<(Vec<u8>, Version), MetaError> {
        Session::read(self, share, key).await.map_err(meta_error)
    }

    async fn write(&self, share: ShareId, key: Key, value: Vec<u8>) -> Result<Version, MetaError> {
        Session::write(self, share, key, value)
            .await
            .map_err(meta_error)
    }

    async fn delete(&self, share: ShareId, key: Key) -> Result<(), MetaError> {
        Session::delete(self, share, key)
            .await
            .map(|_| ())
            .map_err(meta_error)
    }

    async fn change_policy(&self, share: ShareId, op: PolicyOp) -> Result<u64, MetaError> {
        Session::change_policy(self, share, op)
            .await
            .map_err(meta_error)
    }

    async fn read_policy(&self, share: ShareId) -> Result<SharePolicy, MetaError> {
        Session::read_policy(self, share).await.map_err(meta_error)
    }

    fn lease_hits(&self) -> u64 {
        Session::lease_hits(self)
    }

    fn leased_until(&self, share: ShareId, key: Key, version: Version) -> Option<Instant> {
        Session::leased_until(self, share, key, version)
    }

    fn leases_reads(&self) -> bool {
        Session::leases_reads(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_names_map_deterministically() {
        assert_eq!(share_id("admin"), home_share("admin"));
        assert_ne!(share_id("admin"), share_id("bob"));
        assert_eq!(
            meta_error(ClientError::Unavailable { reason: "x".into() }),
            MetaError::Unavailable("unavailable: x".into())
        );
    }
}
