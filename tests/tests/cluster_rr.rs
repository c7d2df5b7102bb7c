//! Process-level tests of TEEMS in RR mode (issue 4): five real
//! `teems-replica` processes (`M_R = 2, F = 2`, DESIGN §3) on loopback,
//! driven through the `teemsfs` CLI and the `metadata-client` session, with
//! the adversary doing what it can do to a host: kill processes, copy sealed
//! stores aside and restore them, corrupt and truncate them, and send garbage.
//!
//! Needs the workspace binaries built (`cargo build --workspace --bins`;
//! scripts/test.sh does it).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use metadata_client::session::{ClientError, Session};
use metadata_client::wire::{Key, ShareId};
use teemsfs_tests::cluster::{
    TestCluster, admin_share, adversarial_rollback, copy_dir, read_eventually, restore_dir, serial,
    write_eventually,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An RR cluster, initialised and started; the guard keeps other cluster tests of this
/// binary waiting until it is dropped (after the cluster).
fn started_rr() -> Result<(std::sync::MutexGuard<'static, ()>, TestCluster)> {
    let one_at_a_time = serial();
    let c = TestCluster::init("rr")?;
    c.start(None)?;
    Ok((one_at_a_time, c))
}

const RECOVERY: Duration = Duration::from_secs(45);

/// Waits until no replica is suspicious: every one has finished recovery.
fn wait_all_recovered(c: &TestCluster) -> Result<()> {
    c.wait_status(RECOVERY, "every replica non-suspicious", |s| {
        s.iter()
            .all(|r| r.status.as_ref().is_some_and(|st| !st.suspicious))
    })?;
    Ok(())
}

/// Writes keys `{prefix}0..n` with values `value-{k}`.
async fn write_keys(session: &Session, share: ShareId, prefix: &str, n: usize) -> Result<()> {
    for k in 0..n {
        session
            .write(
                share,
                Key::from_name(&format!("{prefix}{k}")),
                format!("value-{k}").into_bytes(),
            )
            .await?;
    }
    Ok(())
}

/// Every key `write_keys` wrote reads back (after recovery, if one is running).
async fn expect_keys(session: &Session, share: ShareId, prefix: &str, n: usize) -> Result<()> {
    for k in 0..n {
        read_eventually(session, share, &format!("{prefix}{k}"), RECOVERY, |v| {
            ensure!(v == format!("value-{k}"), "{prefix}{k} = {v}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Every client writes its own keys and reads them back, concurrently, and
/// all of them race on one shared key; afterwards every proxy agrees on the
/// shared key (linearizable register, RR §IV-B).
async fn round(clients: &[Session], share: ShareId, tag: &str) -> Result<()> {
    let mut tasks = Vec::new();
    for (i, s) in clients.iter().enumerate() {
        let (s, tag) = (s.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            for j in 0..8 {
                let key = Key::from_name(&format!("key-{i}-{j}"));
                let value = format!("{tag}-{j}");
                s.write(share, key, value.clone().into_bytes()).await?;
                let (got, _) = s.read(share, key).await?;
                anyhow::ensure!(
                    got == value.as_bytes(),
                    "client {i} read its own write back wrong"
                );
            }
            s.write(
                share,
                Key::from_name("shared"),
                format!("{tag}-client-{i}").into_bytes(),
            )
            .await?;
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut seen = Vec::new();
    for s in clients {
        seen.push(s.read(share, Key::from_name("shared")).await?.0);
    }
    ensure!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "proxies disagree on the shared key after all writes completed"
    );
    ensure!(
        seen[0].starts_with(tag.as_bytes()),
        "shared key holds a value from an earlier round"
    );
    Ok(())
}

/// DESIGN §1 availability: up to F = 2 replicas down is invisible to clients
/// (they fail over); a third makes operations fail with `Unavailable` within
/// the deadline — never a hang — and a restart brings service back.
#[test]
fn concurrent_clients_survive_f_crashes_and_fail_fast_beyond_f() -> Result<()> {
    let (_one_at_a_time, c) = started_rr()?;
    let rt = runtime();
    rt.block_on(async {
        let clients: Vec<Session> = (1..=4)
            .map(|p| c.session("admin", p))
            .collect::<Result<_>>()?;
        let share = admin_share(&clients[0]).await?;
        round(&clients, share, "r1").await?;

        c.kill(1)?;
        c.kill(2)?;
        round(&clients, share, "r2").await?;

        c.kill(3)?;
        let s = c.session("admin", 4)?;
        let deadline = Duration::from_millis(
            teemsfs::meta_remote::session_config(c.path(), "admin", 0)?.deadline_ms,
        );
        let started = Instant::now();
        let r = s.read(share, Key::from_name("key-0-0")).await;
        let took = started.elapsed();
        assert!(
            matches!(
                r,
                Err(ClientError::Unavailable { .. } | ClientError::NoProxy { .. })
            ),
            "with 3 of 5 replicas down a read must be Unavailable, got {r:?}"
        );
        assert!(
            took <= deadline + Duration::from_millis(1500),
            "Unavailable took {took:?}, deadline {deadline:?}"
        );

        // The CLI says the same, as one line on stderr, with its exit code.
        let out = c.meta("read", &["key-0-0"])?;
        assert_eq!(
            out.status.code(),
            Some(5),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: unavailable") && stderr.trim_end().lines().count() == 1,
            "{stderr}"
        );
        assert!(out.stdout.is_empty());

        c.start(None)?;
        write_eventually(&clients[0], share, "after-restart", "yes", RECOVERY).await?;
        round(&clients, share, "r3").await?;
        Ok::<(), anyhow::Error>(())
    })?;

    // CLI contract: the value alone on stdout; typed errors with exit codes.
    let out = c.meta("read", &["key-2-3"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"r3-3");
    let out = c.meta("write", &["cli-key", "hello world"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.meta("read", &["cli-key"])?.stdout, b"hello world");
    assert!(c.meta("delete", &["cli-key"])?.status.success());
    let out = c.meta("read", &["cli-key"])?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: not found"
    );
    // bob may not touch the admin's share (DESIGN §7 access control).
    let out = c.meta(
        "write",
        &["key-0-0", "evil", "--tenant", "bob", "--share", "admin"],
    )?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: denied"
    );
    let out = c.meta("read", &["key-0-0", "--tenant", "bob", "--share", "admin"])?;
    assert_eq!(out.status.code(), Some(3));
    // bob's own home share is created on first use and works.
    assert!(
        c.meta("write", &["mine", "bob's", "--tenant", "bob"])?
            .status
            .success()
    );
    assert_eq!(
        c.meta("read", &["mine", "--tenant", "bob"])?.stdout,
        b"bob's"
    );
    Ok(())
}

/// The rollback attack (DESIGN §4, RR §III): a replica's sealed store is
/// copied aside, more writes complete, the replica is stopped and the old copy
/// restored, and it restarts — first one replica, then `M_R = 2` at once.
/// No read, through any proxy and while the rolled-back replicas restart,
/// returns a value older than the latest completed write, and the replicas
/// become non-suspicious again (visible in `teemsfs cluster status`).
#[test]
fn rollback_of_one_then_m_r_replicas_never_surfaces_an_old_value() -> Result<()> {
    let (_one_at_a_time, c) = started_rr()?;
    let aside = c.path().join("adversary");
    let rt = runtime();
    rt.block_on(async {
        let admin = c.session("admin", 1)?;
        let share = admin_share(&admin).await?;
        for v in 1..=5 {
            admin
                .write(share, Key::from_name("counter"), v.to_string().into_bytes())
                .await?;
        }
        for k in 0..30 {
            admin
                .write(share, Key::from_name(&format!("filler-{k}")), b"x".to_vec())
                .await?;
        }

        // One replica rolled back.
        copy_dir(&c.sealed_dir(3), &aside.join("r3"))?;
        for v in 6..=15 {
            admin
                .write(share, Key::from_name("counter"), v.to_string().into_bytes())
                .await?;
        }
        c.stop(3)?;
        restore_dir(&aside.join("r3"), &c.sealed_dir(3))?;
        c.start(Some(3))?;
        // The old copy is valid sealed state: it loads (stale), it is not "corrupt".
        let r3 = c
            .status()?
            .into_iter()
            .find(|r| r.id == 3)
            .and_then(|r| r.status)
            .unwrap_or_default();
        assert_eq!(r3.sealed_at_start, "loaded");
        for proxy in [3, 1, 2, 4, 5] {
            let s = c.session("admin", proxy)?;
            read_eventually(&s, share, "counter", RECOVERY, |v| {
                ensure!(
                    v == "15",
                    "proxy {proxy} returned {v} after the rollback; latest completed write is 15"
                );
                Ok(())
            })
            .await?;
        }
        c.wait_status(
            RECOVERY,
            "replica 3 non-suspicious after its rollback",
            |s| {
                s.get(2)
                    .and_then(|r| r.status.as_ref())
                    .is_some_and(|st| !st.suspicious)
            },
        )?;

        // M_R = 2 replicas rolled back at once, while readers keep reading.
        copy_dir(&c.sealed_dir(4), &aside.join("r4"))?;
        copy_dir(&c.sealed_dir(5), &aside.join("r5"))?;
        for v in 16..=25 {
            admin
                .write(share, Key::from_name("counter"), v.to_string().into_bytes())
                .await?;
        }
        let readers: Vec<_> = [4u32, 5, 1]
            .into_iter()
            .map(|proxy| {
                let s = c.session("admin", proxy);
                tokio::spawn(async move {
                    let s = s?;
                    let mut fresh_reads = 0u32;
                    let until = Instant::now() + Duration::from_secs(12);
                    while Instant::now() < until {
                        if let Ok((v, _)) = s.read(share, Key::from_name("counter")).await {
                            ensure!(
                                v == b"25",
                                "proxy {proxy} returned {:?}; latest completed write is 25",
                                String::from_utf8_lossy(&v)
                            );
                            fresh_reads += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok::<u32, anyhow::Error>(fresh_reads)
                })
            })
            .collect();
        c.stop(4)?;
        c.stop(5)?;
        restore_dir(&aside.join("r4"), &c.sealed_dir(4))?;
        restore_dir(&aside.join("r5"), &c.sealed_dir(5))?;
        c.start(Some(4))?;
        c.start(Some(5))?;
        let mut total_reads = 0;
        for r in readers {
            total_reads += r.await??;
        }
        assert!(
            total_reads > 0,
            "no read completed while the rolled-back replicas restarted"
        );
        let states = c.wait_status(
            RECOVERY,
            "replicas 4 and 5 non-suspicious after their rollback",
            |s| {
                s.iter()
                    .filter(|r| r.id >= 4)
                    .all(|r| r.status.as_ref().is_some_and(|st| !st.suspicious))
            },
        )?;
        // They recovered the keys written while they were "in the past".
        let keys: Vec<usize> = states
            .iter()
            .filter_map(|r| r.status.as_ref().map(|s| s.keys))
            .collect();
        assert!(
            keys.iter().all(|k| *k == 31),
            "every replica holds counter + 30 fillers: {keys:?}"
        );
        for proxy in [4, 5] {
            let (v, _) = c
                .session("admin", proxy)?
                .read(share, Key::from_name("counter"))
                .await?;
            assert_eq!(v, b"25");
        }
        Ok::<(), anyhow::Error>(())
    })?;
    // The operator's view: nobody suspicious any more.
    let out = c.teemsfs(&["cluster", "status", &c.path().to_string_lossy()])?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(3) == Some("no"))
            .count(),
        5,
        "{table}"
    );
    Ok(())
}

/// DESIGN §4: "if all replicas restart at once, s counts all of them and
/// recovery still finds the latest state" — all 5 stopped, `M_R` of them
/// restored to old copies, all started: every completed write is there.
#[test]
fn whole_cluster_restart_with_m_r_rolled_back_keeps_every_completed_write() -> Result<()> {
    let (_one_at_a_time, c) = started_rr()?;
    let aside = c.path().join("adversary");
    let rt = runtime();
    rt.block_on(async {
        let admin = c.session("admin", 1)?;
        let share = admin_share(&admin).await?;
        for k in 0..20 {
            admin
                .write(share, Key::from_name(&format!("a{k}")), b"old".to_vec())
                .await?;
        }
        copy_dir(&c.sealed_dir(1), &aside.join("r1"))?;
        copy_dir(&c.sealed_dir(2), &aside.join("r2"))?;
        for k in 0..20 {
            admin
                .write(share, Key::from_name(&format!("a{k}")), b"new".to_vec())
                .await?;
        }
        for k in 0..10 {
            admin
                .write(share, Key::from_name(&format!("b{k}")), b"later".to_vec())
                .await?;
        }
        for id in 1..=5 {
            c.stop(id)?;
        }
        restore_dir(&aside.join("r1"), &c.sealed_dir(1))?;
        restore_dir(&aside.join("r2"), &c.sealed_dir(2))?;
        c.start(None)?;
        let s = c.session("admin", 1)?;
        for k in 0..20 {
            read_eventually(&s, share, &format!("a{k}"), RECOVERY, |v| {
                ensure!(
                    v == "new",
                    "a{k} = {v} after a whole-cluster restart with 2 rollbacks"
                );
                Ok(())
            })
            .await?;
        }
        for k in 0..10 {
            let (v, _) = s.read(share, Key::from_name(&format!("b{k}"))).await?;
            assert_eq!(v, b"later", "b{k} lost");
        }
        wait_all_recovered(&c)
    })
}

fn largest_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let len = e.metadata()?.len();
        if e.file_type()?.is_file() && best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, e.path()));
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| anyhow::anyhow!("{} is empty", dir.display()))
}

/// DESIGN §4 / §12: a sealed store corrupted (one byte flipped) or truncated
/// is detected at start, logged with file and offset, and the replica
/// recovers everything from its peers: nothing is lost.
#[test]
fn corrupted_or_truncated_sealed_store_recovers_from_peers() -> Result<()> {
    let (_one_at_a_time, c) = started_rr()?;
    let rt = runtime();
    rt.block_on(async {
        let admin = c.session("admin", 1)?;
        let share = admin_share(&admin).await?;
        write_keys(&admin, share, "f", 60).await?;
        c.stop(2)?;
        c.stop(3)?;
        // Replica 2: flip one byte in the middle of its largest sealed file: the segment
        // being written, preallocated to 1 MiB, whose records end well before its
        // middle. A byte there is beyond any torn write's reach: corruption.
        let victim = largest_file(&c.sealed_dir(2))?;
        let mut bytes = std::fs::read(&victim)?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&victim, &bytes)?;
        // Replica 3: cut its largest sealed file in the middle of what it holds (not of
        // the zeros preallocated after it).
        let victim3 = largest_file(&c.sealed_dir(3))?;
        let held3 = std::fs::read(&victim3)?
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |last| last + 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&victim3)?
            .set_len(held3 as u64 / 2)?;
        c.start(Some(2))?;
        c.start(Some(3))?;

        let states = c.wait_status(RECOVERY, "replicas 2 and 3 recovered", |s| {
            s.iter().filter(|r| r.id == 2 || r.id == 3).all(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|st| !st.suspicious && st.keys == 60)
            })
        })?;
        let r2 = states
            .iter()
            .find(|r| r.id == 2)
            .and_then(|r| r.status.clone())
            .unwrap_or_default();
        assert!(
            r2.sealed_at_start.starts_with("corrupt:"),
            "replica 2 loaded {:?}",
            r2.sealed_at_start
        );
        assert!(
            r2.sealed_at_start.contains("offset"),
            "corruption report names the offset: {}",
            r2.sealed_at_start
        );
        let log = std::fs::read_to_string(c.path().join("replica-2").join("replica.log"))?;
        assert!(
            log.contains("sealed store corrupt"),
            "the corruption is logged"
        );

        // Nothing lost, and the recovered replicas carry the data: with two
        // intact replicas down, the survivors {1, 2, 3} serve every key.
        c.kill(4)?;
        c.kill(5)?;
        expect_keys(&c.session("admin", 2)?, share, "f", 60).await
    })
}

/// Issue 4 framing: garbage on the TCP ports, an oversized length prefix and
/// an undecodable frame inside an authenticated session, and a tenant
/// certificate on the peer port — each is refused and closes only its own
/// connection (counted in the metrics), while an honest session keeps working.
#[test]
fn garbage_and_oversized_frames_are_rejected_and_service_continues() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_one_at_a_time, c) = started_rr()?;
    let entry = c
        .file
        .replica(1)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no replica 1"))?;
    let tenant = c.file.tenant_paths("admin");
    let ca = std::fs::read(c.file.ca_cert_path())?;
    let tls = metadata_client::transport::tls_client_config(
        &ca,
        &std::fs::read(&tenant.cert)?,
        &std::fs::read(&tenant.key)?,
    )?;
    let connector = tokio_rustls::TlsConnector::from(tls);

    /// The server closed the connection (EOF or reset) within 10 s.
    async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
        let mut buf = [0u8; 256];
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    let rt = runtime();
    rt.block_on(async {
        let admin = c.session("admin", 1)?;
        let share = admin_share(&admin).await?;
        admin
            .write(share, Key::from_name("before"), b"1".to_vec())
            .await?;

        for addr in [entry.client_addr, entry.peer_addr] {
            let mut raw = tokio::net::TcpStream::connect(addr).await?;
            raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef])
                .await?;
            raw.write_all(&[0x5a; 512]).await?;
            assert!(
                closed_by_server(&mut raw).await,
                "garbage on {addr} was not refused"
            );
        }

        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(entry.client_addr).await?;
            let name = metadata_client::transport::server_name("replica-1")?;
            Ok::<_, anyhow::Error>(connector.connect(name, tcp).await?)
        };
        // Oversized: a length prefix of 4 GiB - 1.
        let mut s = connect().await?;
        s.write_all(&[0xff, 0xff, 0xff, 0xff, 0x01]).await?;
        s.flush().await?;
        assert!(
            closed_by_server(&mut s).await,
            "oversized frame did not close the session"
        );
        // Well framed, version 1, but not a request.
        let mut s = connect().await?;
        s.write_all(&[0, 0, 0, 5, 1, 0xff, 0xff, 0xff, 0xff])
            .await?;
        s.flush().await?;
        assert!(
            closed_by_server(&mut s).await,
            "undecodable frame did not close the session"
        );
        // A tenant certificate on the peer port fails attestation.
        let tcp = tokio::net::TcpStream::connect(entry.peer_addr).await?;
        let name = metadata_client::transport::server_name("replica-1")?;
        if let Ok(mut s) = connector.connect(name, tcp).await {
            let _ = s.write_all(&[0, 0, 0, 1, 1]).await;
            let _ = s.flush().await;
            assert!(
                closed_by_server(&mut s).await,
                "a tenant was accepted as a peer"
            );
        }

        // The honest session, and new ones, carry on through the same replica.
        admin
            .write(share, Key::from_name("after"), b"2".to_vec())
            .await?;
        assert_eq!(admin.read(share, Key::from_name("before")).await?.0, b"1");
        assert_eq!(
            c.session("admin", 1)?
                .read(share, Key::from_name("after"))
                .await?
                .0,
            b"2"
        );
        Ok::<(), anyhow::Error>(())
    })?;
    let metrics = c
        .metrics(1)
        .ok_or_else(|| anyhow::anyhow!("no metrics from replica 1"))?;
    let value = |needle: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        value("teems_bad_frames_total{replica=\"1\",link=\"client\"}") >= 2,
        "{metrics}"
    );
    assert!(
        value("teems_rejected_connections_total{replica=\"1\",link=\"client\"}") >= 1,
        "{metrics}"
    );
    assert!(
        value("teems_rejected_connections_total{replica=\"1\",link=\"peer\"}") >= 2,
        "{metrics}"
    );
    assert!(
        value("teems_ops_total{replica=\"1\",op=\"write\",outcome=\"ok\"}") >= 2,
        "{metrics}"
    );
    Ok(())
}

/// The adversarial rollback of `adversarial_rollback` in RR mode: the read
/// never returns the stale `v1` (it is `Unavailable` while the rolled-back
/// replicas are suspicious), and once replica 1 is back every replica
/// recovers and `v2` is read.
#[test]
fn rr_survives_the_rollback_that_breaks_cft() -> Result<()> {
    let (_one_at_a_time, c) = started_rr()?;
    let rt = runtime();
    rt.block_on(async {
        let outcomes = adversarial_rollback(&c).await?;
        for o in &outcomes {
            assert!(
                matches!(
                    o,
                    Err(ClientError::Unavailable { .. } | ClientError::NoProxy { .. })
                ) || o.as_deref() == Ok("v2"),
                "RR returned {o:?}; v1 is stale (v2 completed before the rollback)"
            );
        }
        c.start(Some(1))?;
        let s = c.session("admin", 2)?;
        let share = teemsfs::meta_remote::home_share("admin");
        read_eventually(&s, share, "k", RECOVERY, |v| {
            ensure!(
                v == "v2",
                "read {v} after recovery; v2 completed before the rollback"
            );
            Ok(())
        })
        .await?;
        wait_all_recovered(&c)
    })
}

/// Processes whose command line names `needle` (the cluster's config file).
fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A replica that cannot start (its port is taken) fails `cluster start` with its
/// output, and the replicas that did start are stopped again: a failed start (or a
/// failed `teemsfs up`) leaves no process behind. Once the port is free, start works.
#[test]
fn a_failed_start_leaves_no_replica_running() -> Result<()> {
    let _one_at_a_time = serial();
    let c = TestCluster::init("rr")?;
    let config = enclave_replica::provision::ClusterFile::path_in(c.path());
    let config = config.to_string_lossy().into_owned();
    let blocker = std::net::TcpListener::bind(c.file.replicas[2].peer_addr)?;
    let err = c.start(None).expect_err("replica 3's port is taken");
    ensure!(
        err.to_string().contains("replica 3 exited during start"),
        "{err}"
    );
    let left = processes_naming(&config);
    ensure!(
        left.is_empty(),
        "replicas left running after the failed start: {left:?}"
    );
    drop(blocker);
    c.start(None)?;
    ensure!(
        processes_naming(&config).len() == 5,
        "all five replicas run once the port is free"
    );
    Ok(())
}

/// Sum over replicas of one metric's value (lines `name{replica="i"...} value`).
fn metric_sum(c: &TestCluster, name: &str) -> Result<u64> {
    let mut sum = 0u64;
    for id in 1..=5 {
        // `metrics` runs its own runtime: call it from a plain thread.
        let text = std::thread::scope(|s| s.spawn(|| c.metrics(id)).join().ok().flatten());
        let text = text.ok_or_else(|| anyhow::anyhow!("no metrics from replica {id}"))?;
        for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            sum += value.ok_or_else(|| anyhow::anyhow!("unreadable metric line {line:?}"))? as u64;
        }
    }
    Ok(sum)
}

/// A register write costs each replica one sync: the stable bit that follows it
/// (ABD-S1) waits in memory for the next sync instead of forcing its own. A replica
/// killed with stable bits unsynced restarts without them and the cluster still
/// serves every completed write.
#[test]
fn a_write_costs_each_replica_one_sync_and_unsynced_stable_bits_lose_nothing() -> Result<()> {
    let (_one_at_a_time, c) = started_rr()?;
    let rt = runtime();
    rt.block_on(async {
        let admin = c.session("admin", 1)?;
        let share = admin_share(&admin).await?;
        wait_all_recovered(&c)?;
        const WRITES: u64 = 60;
        let before = metric_sum(&c, "teems_persist_seconds_count")?;
        write_keys(&admin, share, "s", WRITES as usize).await?;
        let syncs = metric_sum(&c, "teems_persist_seconds_count")? - before;
        // One sync per write at each of the 5 replicas, and a little slack for a
        // stable bit flushed alone at the bound or a write that arrived late.
        // Syncing every stable bit on its own makes this about 2 × 5 × WRITES.
        ensure!(
            syncs <= 5 * WRITES * 13 / 10,
            "{syncs} syncs for {WRITES} writes at 5 replicas"
        );
        // Replica 2 dies holding the last stable bits in memory only.
        c.kill(2)?;
        c.start(Some(2))?;
        expect_keys(&c.session("admin", 2)?, share, "s", WRITES as usize).await
    })
}

/// [`started_rr`], every replica recovered, and the cluster's lease length (not zero).
fn started_rr_with_leases() -> Result<(std::sync::MutexGuard<'static, ()>, TestCluster, Duration)> {
    let (one_at_a_time, c) = started_rr()?;
    wait_all_recovered(&c)?;
    let lease = Duration::from_millis(c.file.timing.lease_ms);
    ensure!(!lease.is_zero(), "the test cluster has leases off");
    Ok((one_at_a_time, c, lease))
}

/// Read leases over real processes and mutual TLS (docs/PROTOCOLS.md LEASE): a
/// session answers a repeated read from its lease; another session's write of the key is
/// held by the replicas until that lease has ended there; once the write returns, the
/// first session reads the new value.
#[test]
fn a_read_lease_holds_another_sessions_write_until_it_ends() -> Result<()> {
    let (_one_at_a_time, c, lease) = started_rr_with_leases()?;
    runtime().block_on(async {
        let reader = c.session("admin", 1)?;
        let writer = c.session("admin", 3)?;
        let share = admin_share(&writer).await?;
        let key = Key::from_name("leased");
        writer.write(share, key, b"v1".to_vec()).await?;
        // LEASE-R5: no lease on a key another session has just written (a replica
        // may have applied it a little after the writer had its answer).
        tokio::time::sleep(lease * 2).await;
        let sent = Instant::now();
        let (first, _) = reader.read(share, key).await?;
        ensure!(first == b"v1", "read {first:?}");
        let (again, _) = reader.read(share, key).await?;
        ensure!(
            again == b"v1" && reader.lease_hits() == 1,
            "second read not from the lease ({} hits)",
            reader.lease_hits()
        );
        // Each replica's grant started when the first read reached it, after `sent`,
        // and lasts a whole lease: the write could not complete before.
        a_write_waits_out_the_lease(&reader, &writer, share, key, sent, lease).await
    })
}

/// `writer`'s write of `v2` completes only once the lease `holder` was granted on `key`
/// (by a request sent at `sent`) has ended; then `holder` reads `v2`.
async fn a_write_waits_out_the_lease(
    holder: &Session,
    writer: &Session,
    share: ShareId,
    key: Key,
    sent: Instant,
    lease: Duration,
) -> Result<()> {
    writer.write(share, key, b"v2".to_vec()).await?;
    let waited = sent.elapsed();
    ensure!(
        waited >= lease * 9 / 10,
        "the write completed {waited:?} after the leased request was sent; the lease is {lease:?}"
    );
    let (after, _) = holder.read(share, key).await?;
    ensure!(
        after == b"v2",
        "read {after:?} after the write of v2 returned"
    );
    Ok(())
}

/// Write leases over real processes (docs/PROTOCOLS.md LEASE-W): a session reads back
/// what it just wrote from its lease, without a round trip; another session's write of
/// the key waits until that lease has ended; then the first session reads the new value.
#[test]
fn a_write_lease_lets_the_writer_read_its_write_back_and_holds_another_sessions_write() -> Result<()>
{
    let (_one_at_a_time, c, lease) = started_rr_with_leases()?;
    runtime().block_on(async {
        let first = c.session("admin", 1)?;
        let second = c.session("admin", 3)?;
        let share = admin_share(&first).await?;
        let key = Key::from_name("write-leased");
        let sent = Instant::now();
        let version = first.write(share, key, b"v1".to_vec()).await?;
        let (back, read_version) = first.read(share, key).await?;
        ensure!(
            back == b"v1" && read_version == version && first.lease_hits() == 1,
            "read back {back:?} at {read_version:?} (wrote {version:?}), {} lease hits",
            first.lease_hits()
        );
        a_write_waits_out_the_lease(&first, &second, share, key, sent, lease).await
    })
}
