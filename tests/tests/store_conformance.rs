//! The `ObjectStore` conformance suite (DESIGN §9, "one conformance suite all
//! implementations pass") against every store, with the networked ones talking to real
//! servers started here on loopback ports: `redis-server` and moto's S3 server. Plus the
//! `BlobStore` over those real servers with injected faults.
//!
//! A missing server binary fails the test with a message to run `scripts/setup.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use teemsfs::store::conformance::run_all;
use teemsfs::store::{
    BlobStore, BlobStoreConfig, Fault, FaultyStore, LocalStore, MemoryStore, ObjectStore,
    RedisConfig, RedisStore, S3Store,
};
use teemsfs_tests::servers::{RedisCluster, RedisServer, S3Server, S3ServerKind};

async fn redis_store(server: &RedisServer, key_prefix: &str) -> Result<RedisStore> {
    let mut config = RedisConfig::single(&server.url());
    config.key_prefix = key_prefix.to_owned();
    config.timeout_ms = 10_000;
    Ok(RedisStore::connect(config).await?)
}

async fn s3_store(server: &S3Server, bucket: &str, key_prefix: &str) -> Result<S3Store> {
    let mut config = server.store_config(bucket);
    config.key_prefix = key_prefix.to_owned();
    config.timeout_ms = 20_000;
    let store = S3Store::new(config)?;
    store
        .create_bucket_if_missing()
        .await
        .with_context(|| format!("creating bucket; server log:\n{}", server.log_tail()))?;
    Ok(store)
}

#[tokio::test]
async fn conformance_memory_store() {
    run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path())?;
    run_all(Arc::new(store)).await;
    // Durable puts leave no temp files behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "files left in the store directory: {leftovers:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_real_redis_server() -> Result<()> {
    let server = RedisServer::start()?;
    run_all(Arc::new(redis_store(&server, "teemsfs:").await?)).await;
    // A second namespace on the same server sees none of the first one's objects.
    let a = redis_store(&server, "tenant-a:").await?;
    let b = redis_store(&server, "tenant-b:").await?;
    a.put("f-1", Bytes::from_static(b"a")).await?;
    assert_eq!(b.get("f-1").await?, None);
    assert!(b.list("").await?.is_empty());
    Ok(())
}

/// Three real `redis-server` primaries in cluster mode: keys spread over the slots, so
/// puts and gets follow the slot map and listing must SCAN every primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_real_redis_cluster() -> Result<()> {
    let cluster = RedisCluster::start(3)?;
    let urls = cluster.urls();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut config = RedisConfig::cluster(&url_refs);
    config.timeout_ms = 10_000;
    let store = RedisStore::connect(config).await?;
    assert!(
        store.describe().starts_with("redis+cluster://"),
        "{}",
        store.describe()
    );
    run_all(Arc::new(store)).await;
    // One seed URL with the cluster scheme finds the whole cluster.
    let mut config = RedisConfig::single(&urls[0].replace("redis://", "redis+cluster://"));
    config.timeout_ms = 10_000;
    let store = RedisStore::connect(config).await?;
    for i in 0..50 {
        store
            .put(&format!("f-spread-{i:02}"), Bytes::from(vec![i as u8; 10]))
            .await?;
    }
    let listed = store.list("f-spread-").await?;
    assert_eq!(listed.len(), 50, "SCAN must cover every primary");
    assert!(listed.iter().all(|m| m.size_bytes == 10));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_real_s3_server_moto() -> Result<()> {
    let server = S3Server::start(S3ServerKind::Moto)?;
    run_all(Arc::new(s3_store(&server, "conformance", "").await?)).await;
    // With a key prefix, the store sees only its own part of the bucket.
    let prefixed = s3_store(&server, "conformance", "tenant-a.").await?;
    run_all(Arc::new(
        s3_store(&server, "conformance", "tenant-a.").await?,
    ))
    .await;
    let plain = s3_store(&server, "conformance", "").await?;
    plain.put("f-outside", Bytes::from_static(b"x")).await?;
    assert!(prefixed.list("").await?.is_empty());
    // A missing bucket is an error, never an empty store (which would make every
    // fragment look lost).
    let no_bucket = S3Store::new(server.store_config("no-such-bucket"))?;
    let err = no_bucket
        .get("f-1")
        .await
        .expect_err("bucket does not exist");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    Ok(())
}

/// An unreachable server is a bounded, typed error naming the store, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_servers_gone_give_errors_not_hangs() -> Result<()> {
    let redis = RedisServer::start()?;
    let store = redis_store(&redis, "gone:").await?;
    store.put("f-x", Bytes::from_static(b"x")).await?;
    drop(redis);
    let started = Instant::now();
    let err = store.get("f-x").await.expect_err("server is gone");
    assert!(err.to_string().contains("redis://127.0.0.1:"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let s3 = S3Server::start(S3ServerKind::Moto)?;
    let store = s3_store(&s3, "gone", "").await?;
    drop(s3);
    let err = store.get("f-x").await.expect_err("server is gone");
    assert!(err.to_string().contains("s3://gone/"), "{err}");
    Ok(())
}

/// DESIGN §9 end to end: a blob's fragments on a real Redis server and a real S3 server;
/// up to m damaged fragments still read and are repaired; more give an error naming the
/// stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_store_over_real_redis_and_s3_moto() -> Result<()> {
    let redis = RedisServer::start()?;
    let s3 = S3Server::start(S3ServerKind::Moto)?;
    let faulty: Vec<Arc<FaultyStore>> = vec![
        Arc::new(FaultyStore::new(
            Arc::new(redis_store(&redis, "r1:").await?),
            1,
        )),
        Arc::new(FaultyStore::new(
            Arc::new(s3_store(&s3, "blobs", "s1.").await?),
            2,
        )),
        Arc::new(FaultyStore::new(
            Arc::new(redis_store(&redis, "r2:").await?),
            3,
        )),
        Arc::new(FaultyStore::new(
            Arc::new(s3_store(&s3, "blobs", "s2.").await?),
            4,
        )),
    ];
    let stores: Vec<Arc<dyn ObjectStore>> = faulty
        .iter()
        .map(|f| Arc::clone(f) as Arc<dyn ObjectStore>)
        .collect();
    let blobs = BlobStore::new(stores, BlobStoreConfig::new(erasure::Layout { k: 2, m: 2 }))?;
    let id = erasure::BlobId([9; 16]);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let stored = blobs.put_blob(&id, 1, &data).await?;
    let stored = teemsfs::store::StoredBlob::decode(&stored.encode())?;
    assert_eq!(blobs.get_blob(&id, 1, &stored).await?, data);

    // Two of four fragments damaged (m = 2): both data fragments, so parity carries it.
    let store_of = |i: usize| &faulty[usize::from(stored.locations[i].store_index)];
    store_of(0).set_fault(&stored.locations[0].name, Fault::Corrupt);
    store_of(1)
        .inner()
        .delete(&stored.locations[1].name)
        .await?;
    let (got, report) = blobs.get_blob_with_report(&id, 1, &stored).await?;
    assert_eq!(got, data);
    assert_eq!(report.used, vec![2, 3]);
    for f in &faulty {
        f.clear_all();
    }
    blobs.wait_for_repairs().await;
    assert_eq!(blobs.stats().repairs_done, 2);
    for i in 0..4 {
        let bytes = store_of(i)
            .inner()
            .get(&stored.locations[i].name)
            .await?
            .context("fragment missing after repair")?;
        erasure::verify_fragment(&stored.blob_ref, i, &bytes)?;
    }

    // Three of four damaged: a clear error naming each store and object.
    for i in 0..3 {
        store_of(i).set_fault(&stored.locations[i].name, Fault::Drop);
    }
    let message = blobs
        .get_blob(&id, 1, &stored)
        .await
        .expect_err("k-1 good")
        .to_string();
    for i in 0..3 {
        assert!(message.contains(&store_of(i).describe()), "{message}");
        assert!(message.contains(&stored.locations[i].name), "{message}");
    }
    for f in &faulty {
        f.clear_all();
    }
    blobs.delete_blob(&stored).await?;
    for f in &faulty {
        assert!(f.list("f-").await?.is_empty(), "{} not empty", f.describe());
    }
    Ok(())
}

/// Small-object GET latency against the real servers, p50 and p99 (BENCHMARKS.md,
/// "Object stores"). A measurement, not a timed test: run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_small_get_latency_real_redis_and_s3_moto() -> Result<()> {
    let redis = RedisServer::start()?;
    let s3 = S3Server::start(S3ServerKind::Moto)?;
    let stores: Vec<Arc<dyn ObjectStore>> = vec![
        Arc::new(redis_store(&redis, "lat:").await?),
        Arc::new(s3_store(&s3, "latency", "").await?),
    ];
    for store in stores {
        for size in [1_000usize, 64_000, 1_000_000] {
            store.put("f-lat", Bytes::from(vec![7u8; size])).await?;
            let mut samples = Vec::new();
            for _ in 0..200 {
                let started = Instant::now();
                store.get("f-lat").await?.context("missing")?;
                samples.push(started.elapsed());
            }
            samples.sort_unstable();
            println!(
                "{}: GET {size} B: p50 {:?} p99 {:?}",
                store.describe(),
                samples[samples.len() / 2],
                samples[samples.len() * 99 / 100]
            );
        }
    }
    Ok(())
}
