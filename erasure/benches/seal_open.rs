//! Seal and open throughput (issue 2 benchmark; results in BENCHMARKS.md, section
//! "erasure: seal/open throughput").
//!
//! For 4 KiB, 64 KiB, 1 MiB and 4 MiB blobs and layouts (1,0), (2,1), (4,2), (10,4):
//! `seal`; `open` with exactly the k data fragments; `open` with m fragments missing
//! (the first m data fragments, so m of them are rebuilt from parity). Next to them,
//! in the same run, a plain memcpy of a buffer of the same size between two
//! 4096-aligned buffers (as ours are), the ceiling any pipeline stage is compared to.
//!
//! Criterion reports throughput per benchmark; at the end a summary table with MB/s
//! and the ratio to memcpy is printed (median of criterion's samples is not exposed,
//! so the summary re-times each case with a short fixed loop).
//!
//! Run: `cargo bench -p erasure --bench seal_open -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use erasure::{AlignedBuf, BlobId, Layout, Sealed, open, seal};

const SIZES: &[(usize, &str)] = &[
    (4 << 10, "4KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (4 << 20, "4MiB"),
];
const LAYOUTS: &[(u8, u8)] = &[(1, 0), (2, 1), (4, 2), (10, 4)];
const ID: BlobId = BlobId(*b"benchmark-blob-1");

fn plaintext(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(151).wrapping_add(i as u8 >> 3))
        .collect()
}

/// Fragment slots for `open`: the k data fragments, or with the first m data
/// fragments replaced by the m parity fragments.
fn slots(sealed: &Sealed, layout: Layout, degraded: bool) -> Vec<Option<&[u8]>> {
    let (k, m) = (layout.data_count(), layout.parity_count());
    sealed
        .fragments
        .iter()
        .map(|f| {
            let i = f.index();
            // Degraded: drop data fragments 0..m, use all parity instead.
            let wanted = if degraded { i >= m } else { i < k };
            wanted.then(|| f.as_bytes())
        })
        .collect()
}

struct Row {
    size: &'static str,
    layout: (u8, u8),
    memcpy_mb_s: f64,
    seal_mb_s: f64,
    open_all_data_mb_s: f64,
    open_m_missing_mb_s: Option<f64>,
}

/// Mean MB/s of `f` over `len`-byte operations for about `budget`.
fn rate(len: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < budget {
        f();
        iterations += 1;
    }
    (len as f64 * iterations as f64) / start.elapsed().as_secs_f64() / 1e6
}

/// The summary loops only run under `cargo bench`, not in criterion's quick test
/// mode (`cargo test --benches`) or when listing.
fn summary_wanted() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

fn bench(c: &mut Criterion) {
    let summary = summary_wanted();
    let mut rows = Vec::new();
    for &(len, size_name) in SIZES {
        let data = plaintext(len);
        let source = AlignedBuf::copy_from(&data).expect("alloc");
        let mut dest = AlignedBuf::zeroed(len).expect("alloc");
        let mut group = c.benchmark_group(format!("erasure/{size_name}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("memcpy_aligned", |b| {
            b.iter(|| dest.copy_from_slice(black_box(&source)));
        });
        let memcpy_mb_s = if !summary {
            0.0
        } else {
            rate(len, Duration::from_millis(200), || {
                dest.copy_from_slice(black_box(&source))
            })
        };
        for &(k, m) in LAYOUTS {
            let layout = Layout::new(k, m).expect("valid layout");
            let label = format!("({k},{m})");
            group.bench_with_input(BenchmarkId::new("seal", &label), &data, |b, data| {
                b.iter(|| seal(&ID, 1, black_box(data), layout).expect("seal"));
            });
            let sealed = seal(&ID, 1, &data, layout).expect("seal");
            let all_data = slots(&sealed, layout, false);
            group.bench_function(BenchmarkId::new("open_all_data", &label), |b| {
                b.iter(|| open(&ID, 1, &sealed.blob_ref, black_box(&all_data)).expect("open"));
            });
            let degraded = slots(&sealed, layout, true);
            if m > 0 {
                group.bench_function(BenchmarkId::new("open_m_missing", &label), |b| {
                    b.iter(|| open(&ID, 1, &sealed.blob_ref, black_box(&degraded)).expect("open"));
                });
            }
            if !summary {
                continue;
            }
            let budget = Duration::from_millis(300);
            rows.push(Row {
                size: size_name,
                layout: (k, m),
                memcpy_mb_s,
                seal_mb_s: rate(len, budget, || {
                    black_box(seal(&ID, 1, black_box(&data), layout).expect("seal"));
                }),
                open_all_data_mb_s: rate(len, budget, || {
                    black_box(open(&ID, 1, &sealed.blob_ref, &all_data).expect("open"));
                }),
                open_m_missing_mb_s: (m > 0).then(|| {
                    rate(len, budget, || {
                        black_box(open(&ID, 1, &sealed.blob_ref, &degraded).expect("open"));
                    })
                }),
            });
        }
        group.finish();
    }
    if summary {
        print_summary(&rows);
        print_components();
    }
}

fn print_summary(rows: &[Row]) {
    println!();
    println!(
        "| size | layout | seal MB/s | open all-data MB/s | open m-missing MB/s | memcpy MB/s | seal / memcpy | open all / memcpy | open m-missing / memcpy |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let missing = row
            .open_m_missing_mb_s
            .map_or("–".to_owned(), |v| format!("{v:.0}"));
        let missing_ratio = row
            .open_m_missing_mb_s
            .map_or("–".to_owned(), |v| format!("{:.3}", v / row.memcpy_mb_s));
        println!(
            "| {} | ({},{}) | {:.0} | {:.0} | {} | {:.0} | {:.3} | {:.3} | {} |",
            row.size,
            row.layout.0,
            row.layout.1,
            row.seal_mb_s,
            row.open_all_data_mb_s,
            missing,
            row.memcpy_mb_s,
            row.seal_mb_s / row.memcpy_mb_s,
            row.open_all_data_mb_s / row.memcpy_mb_s,
            missing_ratio,
        );
    }
}

/// The pipeline's stages measured alone at 1 MiB, to show where seal/open time goes.
fn print_components() {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    let len = 1 << 20;
    let budget = Duration::from_millis(300);
    let mut buf = AlignedBuf::copy_from(&plaintext(len + 16)).expect("alloc");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("key"));
    let aes_seal = rate(len, budget, || {
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from(b"aad"),
                &mut buf[..len],
            )
            .expect("seal");
        let _ = black_box(tag);
    });
    let blake3_rate = rate(len, budget, || {
        black_box(blake3::hash(black_box(&buf[..len])));
    });
    let rs = ReedSolomon::new(4, 2).expect("codec");
    let shard = len / 4;
    let mut shards: Vec<AlignedBuf> = (0..6)
        .map(|_| AlignedBuf::copy_from(&plaintext(shard)).expect("alloc"))
        .collect();
    let rs_encode = rate(len, budget, || {
        let (data, parity) = shards.split_at_mut(4);
        let data: Vec<&[u8]> = data.iter().map(|s| &s[..]).collect();
        let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(|s| &mut s[..]).collect();
        rs.encode_sep(&data, &mut parity).expect("encode");
    });
    let rs_rebuild = rate(len, budget, || {
        let mut slots: Vec<(&mut [u8], bool)> = shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| (&mut s[..], i >= 2))
            .collect();
        rs.reconstruct_data(&mut slots).expect("reconstruct");
    });
    println!();
    println!("| stage alone, 1 MiB, one core | MB/s |");
    println!("|---|---:|");
    println!("| AES-256-GCM encrypt (ring 0.17) | {aes_seal:.0} |");
    println!("| BLAKE3 hash (blake3 1.8) | {blake3_rate:.0} |");
    println!(
        "| RS (4,2) encode parity (reed-solomon-erasure 6, simd-accel), per data byte | {rs_encode:.0} |"
    );
    println!("| RS (4,2) rebuild 2 data shards, per data byte | {rs_rebuild:.0} |");
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
