//! Mutual TLS and framing over real loopback TCP (DESIGN §7, §8; issue 4
//! "Framing" and "mutual TLS under the cluster CA").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use metadata_client::transport::{
    ClientAuth, FrameError, IdentityError, MEASUREMENT_EXTENSION_OID, Measurement,
    MeasurementPolicy, PeerIdentity, encode_evidence_extension, framed, peer_identity,
    recv_message, send_message, server_name, tls_client_config, tls_server_config,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Bound on every network wait in these tests, so a bug fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

fn new_ca(name: &str) -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

fn leaf(ca: &Ca, name: &str, server: bool, evidence: Option<&[u8]>) -> Result<Leaf> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    if let Some(e) = evidence {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                MEASUREMENT_EXTENSION_OID,
                encode_evidence_extension(e),
            ));
    }
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

struct Fixture {
    ca: Ca,
    replica: Leaf,
    tenant: Leaf,
    measurement: Measurement,
}

fn fixture() -> Result<Fixture> {
    let ca = new_ca("teemsfs test CA")?;
    let measurement = Measurement::of_bytes(b"teems-replica test build");
    let replica = leaf(&ca, "replica-1", true, Some(&measurement.0))?;
    let tenant = leaf(&ca, "alice", false, None)?;
    Ok(Fixture {
        ca,
        replica,
        tenant,
        measurement,
    })
}

async fn listener() -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

async fn timed<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("{what} timed out"))
}

/// Server side: accept one connection and return the handshake result.
async fn accept_one(
    listener: &TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> Result<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tcp, _) = timed("accept", listener.accept()).await??;
    timed("server handshake", TlsAcceptor::from(config).accept(tcp)).await
}

#[tokio::test]
async fn mtls_handshake_with_cluster_certs_and_framed_exchange() -> Result<()> {
    let fx = fixture()?;
    let server_cfg = tls_server_config(
        fx.ca.cert_pem.as_bytes(),
        fx.replica.cert_pem.as_bytes(),
        fx.replica.key_pem.as_bytes(),
        ClientAuth::Required,
    )?;
    let client_cfg = tls_client_config(
        fx.ca.cert_pem.as_bytes(),
        fx.tenant.cert_pem.as_bytes(),
        fx.tenant.key_pem.as_bytes(),
    )?;
    let (l, addr) = listener().await?;

    let server = tokio::spawn(async move {
        let tls = accept_one(&l, server_cfg).await??;
        let who = peer_identity(tls.get_ref().1).map_err(|e| anyhow!(e))?;
        let mut conn = framed(tls, 1024);
        let got: Option<String> = recv_message(&mut conn).await?;
        send_message(&mut conn, &format!("hello {}", got.unwrap_or_default())).await?;
        Ok::<PeerIdentity, anyhow::Error>(who)
    });

    let tcp = TcpStream::connect(addr).await?;
    let tls = timed(
        "client handshake",
        TlsConnector::from(client_cfg).connect(server_name("replica-1")?, tcp),
    )
    .await??;
    let server_identity = peer_identity(tls.get_ref().1).map_err(|e| anyhow!(e))?;
    let mut conn = framed(tls, 1024);
    send_message(&mut conn, &"alice".to_string()).await?;
    let reply: Option<String> = timed("reply", recv_message(&mut conn)).await??;
    assert_eq!(reply.as_deref(), Some("hello alice"));

    // The client sees a replica with its measurement; the policy accepts it.
    assert_eq!(server_identity.common_name.as_deref(), Some("replica-1"));
    assert_eq!(server_identity.dns_names, vec!["replica-1".to_string()]);
    assert_eq!(
        server_identity.evidence.as_deref(),
        Some(&fx.measurement.0[..])
    );
    assert_eq!(
        MeasurementPolicy::Exact(fx.measurement).check(server_identity.evidence.as_deref()),
        Ok(fx.measurement)
    );

    // The server sees the tenant, without evidence.
    let tenant = server.await??;
    assert_eq!(tenant.name(), Some("alice"));
    assert_eq!(tenant.evidence, None);
    Ok(())
}

#[tokio::test]
async fn client_cert_from_another_ca_is_rejected() -> Result<()> {
    let fx = fixture()?;
    let rogue_ca = new_ca("rogue CA")?;
    let rogue = leaf(&rogue_ca, "alice", false, None)?;
    let server_cfg = tls_server_config(
        fx.ca.cert_pem.as_bytes(),
        fx.replica.cert_pem.as_bytes(),
        fx.replica.key_pem.as_bytes(),
        ClientAuth::Required,
    )?;
    // The rogue client trusts our CA (it wants to talk to us) but holds a
    // certificate from its own.
    let client_cfg = tls_client_config(
        fx.ca.cert_pem.as_bytes(),
        rogue.cert_pem.as_bytes(),
        rogue.key_pem.as_bytes(),
    )?;
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move { accept_one(&l, server_cfg).await });

    let tcp = TcpStream::connect(addr).await?;
    let client = timed(
        "client handshake",
        TlsConnector::from(client_cfg).connect(server_name("replica-1")?, tcp),
    )
    .await?;
    let accepted = server.await??;
    let err = accepted
        .err()
        .context("server must refuse a client certificate from another CA")?;
    assert!(
        err.to_string().contains("UnknownIssuer")
            || err.to_string().to_lowercase().contains("issuer"),
        "{err}"
    );
    // In TLS 1.3 the client may finish its side first; its next read must fail or see EOF.
    if let Ok(mut tls) = client {
        let mut buf = [0u8; 1];
        let n = timed("client read", tls.read(&mut buf)).await?;
        assert!(
            !matches!(n, Ok(1)),
            "a refused client must not receive data"
        );
    }
    Ok(())
}

#[tokio::test]
async fn missing_client_cert_is_rejected_when_required() -> Result<()> {
    let fx = fixture()?;
    let server_cfg = tls_server_config(
        fx.ca.cert_pem.as_bytes(),
        fx.replica.cert_pem.as_bytes(),
        fx.replica.key_pem.as_bytes(),
        ClientAuth::Required,
    )?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(fx.ca.cert_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let anon = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move { accept_one(&l, server_cfg).await });
    let tcp = TcpStream::connect(addr).await?;
    let _client = timed(
        "client handshake",
        TlsConnector::from(anon.clone()).connect(server_name("replica-1")?, tcp),
    )
    .await?;
    let accepted = server.await??;
    assert!(
        accepted.is_err(),
        "server must refuse a client without a certificate"
    );

    // With ClientAuth::Optional the same client gets in, and has no identity.
    let optional_cfg = tls_server_config(
        fx.ca.cert_pem.as_bytes(),
        fx.replica.cert_pem.as_bytes(),
        fx.replica.key_pem.as_bytes(),
        ClientAuth::Optional,
    )?;
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move {
        let tls = accept_one(&l, optional_cfg).await??;
        Ok::<_, anyhow::Error>(peer_identity(tls.get_ref().1))
    });
    let tcp = TcpStream::connect(addr).await?;
    let _client = timed(
        "client handshake",
        TlsConnector::from(anon).connect(server_name("replica-1")?, tcp),
    )
    .await??;
    assert_eq!(server.await??, Err(IdentityError::NoPeerCertificate));
    Ok(())
}

use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn client_refuses_server_of_another_ca_or_name() -> Result<()> {
    let fx = fixture()?;
    let rogue_ca = new_ca("rogue CA")?;
    let impostor = leaf(&rogue_ca, "replica-1", true, Some(&fx.measurement.0))?;
    let client_cfg = tls_client_config(
        fx.ca.cert_pem.as_bytes(),
        fx.tenant.cert_pem.as_bytes(),
        fx.tenant.key_pem.as_bytes(),
    )?;

    for (server_leaf, ca_pem, dial) in [
        (&impostor, &rogue_ca.cert_pem, "replica-1"),
        (&fx.replica, &fx.ca.cert_pem, "replica-2"),
    ] {
        let server_cfg = tls_server_config(
            ca_pem.as_bytes(),
            server_leaf.cert_pem.as_bytes(),
            server_leaf.key_pem.as_bytes(),
            ClientAuth::Optional,
        )?;
        let (l, addr) = listener().await?;
        let server = tokio::spawn(async move { accept_one(&l, server_cfg).await });
        let tcp = TcpStream::connect(addr).await?;
        let client = timed(
            "client handshake",
            TlsConnector::from(client_cfg.clone()).connect(server_name(dial)?, tcp),
        )
        .await?;
        assert!(
            client.is_err(),
            "client dialling {dial} must refuse this server"
        );
        let _ = server.await?;
    }
    Ok(())
}

/// Issue 4 "Framing": garbage and oversized frames are error values; the
/// server keeps serving the next connection.
#[tokio::test]
async fn garbage_and_oversized_frames_are_errors_not_panics() -> Result<()> {
    let fx = fixture()?;
    let server_cfg = tls_server_config(
        fx.ca.cert_pem.as_bytes(),
        fx.replica.cert_pem.as_bytes(),
        fx.replica.key_pem.as_bytes(),
        ClientAuth::Required,
    )?;
    let client_cfg = tls_client_config(
        fx.ca.cert_pem.as_bytes(),
        fx.tenant.cert_pem.as_bytes(),
        fx.tenant.key_pem.as_bytes(),
    )?;
    let (l, addr) = listener().await?;

    // The server handles connections one after another and reports what each
    // produced. Bounded: exactly as many connections as the client opens.
    const CONNECTIONS: usize = 5;
    let server = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..CONNECTIONS {
            let tls = match accept_one(&l, server_cfg.clone()).await? {
                Ok(tls) => tls,
                Err(e) => {
                    outcomes.push(format!("handshake: {e}"));
                    continue;
                }
            };
            let mut conn = framed(tls, 64 * 1024);
            let got = timed("server recv", recv_message::<_, String>(&mut conn)).await?;
            outcomes.push(match got {
                Ok(Some(s)) => format!("ok: {s}"),
                Ok(None) => "eof".to_string(),
                Err(e) => {
                    assert!(e.is_peer_misbehaviour() || matches!(e, FrameError::Io(_)));
                    format!("{e:?}")
                }
            });
        }
        Ok::<_, anyhow::Error>(outcomes)
    });

    let connect_tls = || async {
        let tcp = TcpStream::connect(addr).await?;
        let tls = TlsConnector::from(client_cfg.clone())
            .connect(server_name("replica-1")?, tcp)
            .await?;
        Ok::<_, anyhow::Error>(tls)
    };
    // 1. Oversized length prefix (4 GiB - 1) inside TLS.
    let mut tls = connect_tls().await?;
    tls.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await?;
    tls.flush().await?;
    // 2. Bad version byte.
    let mut tls2 = connect_tls().await?;
    tls2.write_all(&[0, 0, 0, 3, 0x7e, 1, 2]).await?;
    tls2.flush().await?;
    // 3. A frame cut short by closing the connection.
    let mut tls3 = connect_tls().await?;
    tls3.write_all(&[0, 0, 0, 50, 1, 9, 9]).await?;
    tls3.shutdown().await?;
    // 4. Raw garbage on TCP, no TLS at all.
    let mut raw = TcpStream::connect(addr).await?;
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff")
        .await?;
    raw.shutdown().await?;
    // 5. After all that, a well-behaved client is served.
    let tls5 = connect_tls().await?;
    let mut conn = framed(tls5, 64 * 1024);
    send_message(&mut conn, &"still here".to_string()).await?;

    let outcomes = timed("server", server).await???;
    assert_eq!(outcomes.len(), CONNECTIONS);
    assert!(
        outcomes[0].starts_with("Oversized") && outcomes[0].contains("4294967295"),
        "{}",
        outcomes[0]
    );
    assert!(
        outcomes[1].starts_with("UnsupportedVersion"),
        "{}",
        outcomes[1]
    );
    assert!(outcomes[2].starts_with("Truncated"), "{}", outcomes[2]);
    assert!(outcomes[3].starts_with("handshake"), "{}", outcomes[3]);
    assert_eq!(outcomes[4], "ok: still here");
    drop((tls, tls2, tls3));
    Ok(())
}

#[tokio::test]
async fn malformed_payload_in_a_valid_frame_is_an_error() -> Result<()> {
    // Plain TCP suffices here: the codec sits above TLS and does not care.
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await?;
        let mut conn = framed(tcp, 1024);
        Ok::<_, anyhow::Error>(recv_message::<_, (u64, String)>(&mut conn).await)
    });
    let mut tcp = TcpStream::connect(addr).await?;
    // Version 1 frame whose payload is a varint that never ends.
    tcp.write_all(&[0, 0, 0, 4, 1, 0xff, 0xff, 0xff]).await?;
    tcp.shutdown().await?;
    let got = timed("server", server).await???;
    assert!(matches!(got, Err(FrameError::Malformed { .. })), "{got:?}");
    Ok(())
}
