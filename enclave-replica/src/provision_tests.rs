//! Tests of `teemsfs cluster init` as a library and of `cluster.toml` loading.

use super::*;
use crate::enclave::attestation::{
    Attestation, AttestationError, SoftwareAttestation, replica_id_from_name,
};
use crate::enclave::sealer::Sealer;
use metadata_client::transport::{MeasurementMismatch, identity_from_cert};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

fn cert_identity(path: &Path) -> metadata_client::transport::PeerIdentity {
    let pem = fs::read(path).expect("read cert");
    let der = CertificateDer::from_pem_slice(&pem).expect("pem");
    identity_from_cert(&der).expect("identity")
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn init_creates_the_documented_layout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let mut opts = InitOptions::new(5, 2, 2);
    opts.tenants = vec!["alice".to_string(), "bob".to_string()];
    let written = init_cluster(&dir, &opts).expect("init");

    let loaded = ClusterFile::load(&ClusterFile::path_in(&dir)).expect("load");
    assert_eq!(loaded, written);
    assert_eq!(loaded.replicas.len(), 5);
    assert_eq!(loaded.expected_measurement, MeasurementPolicy::Any);
    assert_eq!(loaded.tenants, vec!["admin", "alice", "bob"]);
    let config = loaded.cluster_config().expect("config");
    assert_eq!((config.n, config.m_r, config.f), (5, 2, 2));

    let mut ports = BTreeSet::new();
    for r in &loaded.replicas {
        assert!(r.peer_addr.ip().is_loopback() && r.client_addr.ip().is_loopback());
        assert!(
            ports.insert(r.peer_addr.port()) && ports.insert(r.client_addr.port()),
            "ports are distinct"
        );
        let paths = loaded.replica_paths(r.id).expect("paths");
        assert_eq!(paths.dir, dir.join(format!("replica-{}", r.id)));
        assert!(paths.sealed_dir.is_dir());
        let secret = fs::read(&paths.sealing_secret).expect("secret");
        assert_eq!(secret.len(), 32);
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&paths.sealing_secret), 0o600);
            assert_eq!(mode_of(&paths.key), 0o600);
            assert_eq!(mode_of(&paths.sealed_dir), 0o700);
        }
        let id = cert_identity(&paths.cert);
        assert_eq!(
            id.common_name.as_deref().and_then(replica_id_from_name),
            Some(r.id)
        );
        assert_eq!(id.dns_names, vec![format!("replica-{}", r.id)]);
        assert_eq!(id.evidence.as_deref(), Some(&Measurement::UNMEASURED.0[..]));
        // The secret drives a working sealer.
        let sealer = SoftwareSealer::from_secret_file(&paths.sealing_secret, r.id).expect("sealer");
        let sealed = sealer.seal(b"aad", b"x").expect("seal");
        assert_eq!(sealer.unseal(b"aad", &sealed).expect("unseal"), b"x");
    }
    // Secrets are per replica.
    let s1 = fs::read(loaded.replica_paths(1).expect("p").sealing_secret).expect("read");
    let s2 = fs::read(loaded.replica_paths(2).expect("p").sealing_secret).expect("read");
    assert_ne!(s1, s2);

    for t in ["admin", "alice", "bob"] {
        let p = loaded.tenant_paths(t);
        let id = cert_identity(&p.cert);
        assert_eq!(id.common_name.as_deref(), Some(t));
        assert_eq!(
            id.evidence, None,
            "tenant certificates carry no measurement"
        );
        #[cfg(unix)]
        assert_eq!(mode_of(&p.key), 0o600);
    }
    assert!(loaded.ca_cert_path().is_file());
}

#[test]
fn init_refuses_invalid_parameters_with_the_formula() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = init_cluster(&tmp.path().join("a"), &InitOptions::new(4, 2, 2))
        .expect_err("N=4 with (2,2)");
    let msg = err.to_string();
    assert!(msg.contains("N = max(M_R, F) + F + 1 = 5"), "{msg}");

    let err =
        init_cluster(&tmp.path().join("b"), &InitOptions::new(121, 60, 60)).expect_err("too big");
    assert!(matches!(err, ProvisionError::Quorum(_)), "{err}");
    assert!(err.to_string().contains("max(M_R, F) + F + 1"), "{err}");

    let mut opts = InitOptions::new(5, 2, 2);
    opts.tenants = vec!["replica-9".to_string()];
    assert!(matches!(
        init_cluster(&tmp.path().join("c"), &opts),
        Err(ProvisionError::BadTenantName { .. })
    ));
    opts.tenants = vec!["Alice".to_string()];
    assert!(matches!(
        init_cluster(&tmp.path().join("c"), &opts),
        Err(ProvisionError::BadTenantName { .. })
    ));
    opts.tenants = vec!["../etc".to_string()];
    assert!(matches!(
        init_cluster(&tmp.path().join("c"), &opts),
        Err(ProvisionError::BadTenantName { .. })
    ));

    let mut opts = InitOptions::new(5, 2, 2);
    opts.measurement = Some(Measurement::UNMEASURED);
    assert!(matches!(
        init_cluster(&tmp.path().join("d"), &opts),
        Err(ProvisionError::UnmeasuredExpected)
    ));
    // Nothing was written for refused inits.
    for d in ["a", "b", "c", "d"] {
        assert!(!tmp.path().join(d).exists(), "{d}");
    }
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    init_cluster(tmp.path(), &InitOptions::new(3, 1, 1)).expect("first init");
    let before = fs::read(tmp.path().join("replica-1/sealing.key")).expect("read");
    assert!(matches!(
        init_cluster(tmp.path(), &InitOptions::new(3, 1, 1)),
        Err(ProvisionError::NotEmpty { .. })
    ));
    assert_eq!(
        fs::read(tmp.path().join("replica-1/sealing.key")).expect("read"),
        before,
        "secret untouched"
    );
}

#[test]
fn exact_measurement_is_certified_and_enforced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = Measurement::of_bytes(b"teems-replica build 1");
    let mut opts = InitOptions::new(3, 1, 1);
    opts.mode = Mode::Cft;
    opts.measurement = Some(m);
    let file = init_cluster(tmp.path(), &opts).expect("init");
    let loaded = ClusterFile::load(&ClusterFile::path_in(tmp.path())).expect("load");
    assert_eq!(loaded.mode, Mode::Cft);
    assert_eq!(loaded.expected_measurement, MeasurementPolicy::Exact(m));

    let p1 = file.replica_paths(1).expect("paths");
    let p2 = file.replica_paths(2).expect("paths");
    let own_pem = fs::read(&p1.cert).expect("read");
    let att = SoftwareAttestation::new(loaded.expected_measurement, &own_pem)
        .expect("own cert passes policy");
    assert_eq!(att.own_measurement(), m);
    assert_eq!(att.local_evidence(), m.0.to_vec());
    let peer = cert_identity(&p2.cert);
    assert_eq!(att.verify_peer(&peer).expect("peer").replica_id, 2);
    // A tenant is never accepted as a peer.
    let tenant = cert_identity(&file.tenant_paths("admin").cert);
    assert!(matches!(
        att.verify_peer(&tenant),
        Err(AttestationError::NotAReplica(_))
    ));

    // A cluster expecting other code refuses these certificates.
    let other = Measurement::of_bytes(b"teems-replica build 2");
    assert!(matches!(
        SoftwareAttestation::new(MeasurementPolicy::Exact(other), &own_pem),
        Err(AttestationError::OwnCertificate(_))
    ));
    let strict = SoftwareAttestation::new(MeasurementPolicy::Any, &own_pem).expect("any");
    assert!(strict.verify_peer(&peer).is_ok());
    let exact_other = MeasurementPolicy::Exact(other);
    assert!(matches!(
        exact_other.check(peer.evidence.as_deref()),
        Err(MeasurementMismatch::Different { .. })
    ));
}

fn edited(dir: &Path, from: &str, to: &str) -> ClusterFileError {
    let path = ClusterFile::path_in(dir);
    let text = fs::read_to_string(&path).expect("read");
    assert!(
        text.contains(from),
        "fixture text {from:?} not in cluster.toml:\n{text}"
    );
    let bad = tmp_copy(dir, &text.replacen(from, to, 1));
    ClusterFile::load(&bad).expect_err("edited file must be refused")
}

fn tmp_copy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("edited.toml");
    fs::write(&p, text).expect("write");
    p
}

#[test]
fn load_names_the_bad_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = init_cluster(tmp.path(), &InitOptions::new(5, 2, 2)).expect("init");
    let text = fs::read_to_string(ClusterFile::path_in(tmp.path())).expect("read");

    let msg = edited(tmp.path(), "m_r = 2", "m_r = 3").to_string();
    assert!(
        msg.contains("`replicas`") && msg.contains("N = max(M_R, F) + F + 1 = 6"),
        "{msg}"
    );

    let msg = edited(tmp.path(), "mode = \"rr\"", "mode = \"bft\"").to_string();
    assert!(msg.contains("mode must be \"rr\" or \"cft\""), "{msg}");

    let second_peer = file.replicas[1].peer_addr.to_string();
    let first_peer = file.replicas[0].peer_addr.to_string();
    let dup = text.replacen(&second_peer, &first_peer, 1);
    let err = ClusterFile::load(&tmp_copy(tmp.path(), &dup)).expect_err("duplicate address");
    assert!(err.to_string().contains("replicas[1].peer_addr"), "{err}");

    let msg = edited(tmp.path(), "id = 3", "id = 9").to_string();
    assert!(
        msg.contains("replicas[2].id") && msg.contains("outside 1..=5"),
        "{msg}"
    );

    let msg = edited(
        tmp.path(),
        "admin_tenant = \"admin\"",
        "admin_tenant = \"root\"",
    )
    .to_string();
    assert!(msg.contains("`admin_tenant`"), "{msg}");

    let msg = edited(
        tmp.path(),
        "expected_measurement = \"any\"",
        "expected_measurement = \"abc\"",
    )
    .to_string();
    assert!(msg.contains("64 hex digits"), "{msg}");

    let msg = edited(
        tmp.path(),
        "max_frame_bytes = 4194304",
        "max_frame_bytes = 10",
    )
    .to_string();
    assert!(msg.contains("`max_frame_bytes`"), "{msg}");

    let msg = edited(tmp.path(), "mode = \"rr\"", "mode = \"rr\"\nmystery = 1").to_string();
    assert!(msg.contains("mystery"), "{msg}");

    let missing = ClusterFile::load(&tmp.path().join("nope.toml")).expect_err("missing");
    assert!(matches!(missing, ClusterFileError::Read { .. }));
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = "mode = \"rr\"\nm_r = 1\nf = 1\n\
        [[replicas]]\nid = 1\npeer_addr = \"127.0.0.1:7001\"\nclient_addr = \"127.0.0.1:7101\"\ndir = \"replica-1\"\n\
        [[replicas]]\nid = 2\npeer_addr = \"127.0.0.1:7002\"\nclient_addr = \"127.0.0.1:7102\"\ndir = \"replica-2\"\n\
        [[replicas]]\nid = 3\npeer_addr = \"127.0.0.1:7003\"\nclient_addr = \"127.0.0.1:7103\"\ndir = \"/abs/replica-3\"\n";
    let path = tmp_copy(tmp.path(), text);
    let f = ClusterFile::load(&path).expect("load");
    assert_eq!(f.expected_measurement, MeasurementPolicy::Any);
    assert_eq!(f.admin_tenant, "admin");
    assert_eq!(f.tenants, vec!["admin"]);
    assert_eq!(f.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(f.snapshot_every_records, DEFAULT_SNAPSHOT_EVERY_RECORDS);
    assert_eq!(f.timing, Timing::default());
    assert_eq!(f.ca_cert_path(), tmp.path().join("ca/cert.pem"));
    assert_eq!(
        f.replica_paths(1).expect("p").dir,
        tmp.path().join("replica-1")
    );
    assert_eq!(
        f.replica_paths(3).expect("p").dir,
        PathBuf::from("/abs/replica-3")
    );
    assert_eq!(f.replica_paths(4), None);
}

/// DESIGN §8: two provisioned replicas authenticate each other by mutual TLS
/// under the cluster CA over real loopback TCP, and each attests the other.
#[tokio::test]
async fn provisioned_replicas_attest_each_other_over_mtls() {
    use metadata_client::transport::{
        ClientAuth, peer_identity, server_name, tls_client_config, tls_server_config,
    };
    use std::time::Duration;

    let tmp = tempfile::tempdir().expect("tempdir");
    let m = Measurement::of_bytes(b"teems-replica build 7");
    let mut opts = InitOptions::new(3, 1, 1);
    opts.measurement = Some(m);
    let file = init_cluster(tmp.path(), &opts).expect("init");
    let ca = fs::read(file.ca_cert_path()).expect("ca");
    let (p1, p2) = (
        file.replica_paths(1).expect("p1"),
        file.replica_paths(2).expect("p2"),
    );
    let read = |p: &Path| fs::read(p).expect("read");
    let server_cfg = tls_server_config(&ca, &read(&p1.cert), &read(&p1.key), ClientAuth::Required)
        .expect("server");
    let client_cfg = tls_client_config(&ca, &read(&p2.cert), &read(&p2.key)).expect("client");
    let att1 = SoftwareAttestation::new(file.expected_measurement, &read(&p1.cert)).expect("att1");
    let att2 = SoftwareAttestation::new(file.expected_measurement, &read(&p2.cert)).expect("att2");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = tokio_rustls::TlsAcceptor::from(server_cfg)
            .accept(tcp)
            .await
            .expect("server handshake");
        att1.verify_peer(&peer_identity(tls.get_ref().1).expect("identity"))
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(client_cfg)
            .connect(server_name("replica-1").expect("name"), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("client handshake");
    let seen_by_2 = att2
        .verify_peer(&peer_identity(tls.get_ref().1).expect("identity"))
        .expect("replica-1 attests");
    assert_eq!((seen_by_2.replica_id, seen_by_2.measurement), (1, m));
    let seen_by_1 = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server in time")
        .expect("join")
        .expect("replica-2 attests");
    assert_eq!((seen_by_1.replica_id, seen_by_1.measurement), (2, m));
}

/// Replica ports come from below the ephemeral range, so a port picked at `cluster init`
/// cannot be handed to another process's `bind(:0)` or outgoing connection before
/// `cluster start` listens on it (seen as "Address already in use" in parallel tests).
#[test]
fn replica_ports_are_distinct_and_below_the_ephemeral_range() {
    let ip: std::net::IpAddr = [127, 0, 0, 1].into();
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32_768);
    for _ in 0..20 {
        let addrs = free_ports(ip, 14).expect("ports");
        let distinct: std::collections::HashSet<_> = addrs.iter().map(|a| a.port()).collect();
        assert_eq!(distinct.len(), 14, "{addrs:?}");
        if low > RANDOM_PORT_FLOOR + 1_000 {
            assert!(
                addrs
                    .iter()
                    .all(|a| (RANDOM_PORT_FLOOR..low).contains(&a.port())),
                "{addrs:?} not in {RANDOM_PORT_FLOOR}..{low}"
            );
        }
        for a in &addrs {
            std::net::TcpListener::bind(a).expect("a chosen port is free once released");
        }
    }
}
