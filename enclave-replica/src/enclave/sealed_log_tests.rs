//! Tests of the sealed store, playing the adversary of DESIGN §1 on the
//! replica's disk: copy aside and restore (rollback), flip bytes, truncate,
//! reorder, splice, and swap in another replica's files.

use super::*;
use crate::enclave::sealer::SoftwareSealer;

fn sealer(seed: u8) -> Arc<dyn Sealer> {
    Arc::new(SoftwareSealer::from_secret(&[seed; 32], u32::from(seed)))
}

fn open(dir: &Path) -> (SealedLog, Recovered) {
    SealedLog::open(dir, sealer(1)).expect("open")
}

fn payloads(recovered: &Recovered) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    match recovered {
        Recovered::State {
            snapshot, records, ..
        } => (
            snapshot.clone(),
            records.iter().map(|r| r.bytes.clone()).collect(),
        ),
        other => panic!("expected a loadable state, got {other:?}"),
    }
}

fn corruption(recovered: Recovered) -> Corruption {
    match recovered {
        Recovered::Corrupt(c) => c,
        other => panic!("expected corruption, got {other:?}"),
    }
}

fn seg(dir: &Path, id: u64) -> PathBuf {
    dir.join(segment_file_name(id))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

fn replace_dir(dir: &Path, with: &Path) {
    fs::remove_dir_all(dir).expect("rm");
    copy_dir(with, dir);
}

/// Byte ranges `[start, end)` of each record frame in a segment file (up to
/// the preallocated zeros).
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(path).expect("read");
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while at + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        out.push((at, at + 4 + len));
        at += 4 + len;
    }
    out
}

/// A record longer than a torn write can reach: tampering before it cannot
/// pass for a torn write.
fn ballast(log: &mut SealedLog) {
    log.append(&vec![0x5a; MAX_TORN_REACH as usize])
        .expect("append ballast");
}

/// A log of the records `a`, `b` and `c` in segment 1 (then [`ballast`] if
/// asked): the segment's path and its record frames.
fn records_abc(dir: &Path, with_ballast: bool) -> (PathBuf, Vec<(usize, usize)>) {
    let (mut log, _) = open(dir);
    for r in [b"a", b"b", b"c"] {
        log.append(r).expect("append");
    }
    if with_ballast {
        ballast(&mut log);
    }
    drop(log);
    let path = seg(dir, 1);
    let f = frames(&path);
    (path, f)
}

#[test]
fn empty_directory_loads_empty_and_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sealed");
    let (mut log, recovered) = open(&dir);
    assert_eq!(recovered, Recovered::Empty);
    let p0 = log.append(b"one").expect("append");
    let p1 = log.append(b"two").expect("append");
    let ps = log.append_batch(&[b"three", b"four"]).expect("batch");
    assert_eq!(
        (p0.segment_id, p0.index, p0.offset_bytes),
        (1, 0, SEGMENT_HEADER_BYTES)
    );
    assert_eq!((p1.segment_id, p1.index), (1, 1));
    assert_eq!(ps.iter().map(|p| p.index).collect::<Vec<_>>(), vec![2, 3]);
    drop(log);

    let (log, recovered) = open(&dir);
    let (snapshot, records) = payloads(&recovered);
    assert_eq!(snapshot, None);
    assert_eq!(
        records,
        vec![
            b"one".to_vec(),
            b"two".to_vec(),
            b"three".to_vec(),
            b"four".to_vec()
        ]
    );
    assert_eq!(log.records_since_snapshot(), 4);
    if let Recovered::State {
        records, torn_tail, ..
    } = &recovered
    {
        assert_eq!(records[1].position, p1);
        assert_eq!(records[1].file, seg(&dir, 1));
        assert_eq!(*torn_tail, None);
    }
}

#[test]
fn reopen_appends_continue_in_a_new_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for round in 0..3u8 {
        let (mut log, _) = open(dir);
        log.append(&[round]).expect("append");
    }
    let (_, recovered) = open(dir);
    assert_eq!(payloads(&recovered).1, vec![vec![0], vec![1], vec![2]]);
    assert!(seg(dir, 3).exists(), "each open resumes in a fresh segment");
}

#[test]
fn snapshot_replaces_covered_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut log, _) = open(dir);
    log.append(b"a").expect("append");
    log.append(b"b").expect("append");
    log.snapshot(b"state{a,b}").expect("snapshot");
    assert_eq!(log.records_since_snapshot(), 0);
    assert!(!seg(dir, 1).exists(), "covered segment deleted");
    log.append(b"c").expect("append");
    drop(log);

    let (mut log, recovered) = open(dir);
    assert_eq!(
        payloads(&recovered),
        (Some(b"state{a,b}".to_vec()), vec![b"c".to_vec()])
    );
    // A second snapshot with nothing appended since opening is fine too.
    log.snapshot(b"state{a,b,c}").expect("snapshot");
    log.snapshot(b"state{a,b,c}'").expect("snapshot");
    drop(log);
    let (_, recovered) = open(dir);
    assert_eq!(
        payloads(&recovered),
        (Some(b"state{a,b,c}'".to_vec()), vec![])
    );
}

#[test]
fn crash_between_snapshot_and_segment_deletion_is_harmless() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut log, _) = open(dir);
    log.append(b"a").expect("append");
    let aside = tmp.path().join("aside-seg");
    fs::copy(seg(dir, 1), &aside).expect("copy");
    log.snapshot(b"S").expect("snapshot");
    drop(log);
    // Put the covered segment back, as if the deletion never happened.
    fs::copy(&aside, seg(dir, 1)).expect("restore");
    let (_, recovered) = open(dir);
    assert_eq!(payloads(&recovered), (Some(b"S".to_vec()), vec![]));
    assert!(
        !seg(dir, 1).exists(),
        "open removes segments the snapshot covers"
    );
}

/// DESIGN §4 / RR §III: a stale sealed state is a valid older state, not corruption.
#[test]
fn stale_copy_loads_as_the_older_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sealed");
    let aside = tmp.path().join("aside");
    let (mut log, _) = open(&dir);
    log.append(b"w1").expect("append");
    log.snapshot(b"S1").expect("snapshot");
    log.append(b"w2").expect("append");
    drop(log);
    copy_dir(&dir, &aside);

    let (mut log, _) = open(&dir);
    log.append(b"w3").expect("append");
    log.snapshot(b"S3").expect("snapshot");
    log.append(b"w4").expect("append");
    drop(log);
    let (_, newest) = open(&dir);
    assert_eq!(
        payloads(&newest),
        (Some(b"S3".to_vec()), vec![b"w4".to_vec()])
    );

    // The adversary restores the old copy.
    replace_dir(&dir, &aside);
    let (mut log, stale) = open(&dir);
    assert_eq!(
        payloads(&stale),
        (Some(b"S1".to_vec()), vec![b"w2".to_vec()])
    );
    // And the replica carries on from there.
    log.append(b"w5").expect("append");
    drop(log);
    let (_, again) = open(&dir);
    assert_eq!(payloads(&again).1, vec![b"w2".to_vec(), b"w5".to_vec()]);
}

#[test]
fn log_cut_at_a_record_boundary_is_an_older_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_, f) = records_abc(dir, false);
    let file = OpenOptions::new()
        .write(true)
        .open(seg(dir, 1))
        .expect("open");
    file.set_len(f[1].1 as u64).expect("truncate");
    let (_, recovered) = open(dir);
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn flipped_byte_is_corruption_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (path, f) = records_abc(dir, true);
    let mut bytes = fs::read(&path).expect("read");
    bytes[f[1].0 + 10] ^= 0x40; // inside the second record's sealed bytes
    fs::write(&path, &bytes).expect("write");

    let (mut log, recovered) = open(dir);
    let c = corruption(recovered);
    assert_eq!(c.file, path);
    assert_eq!(c.offset_bytes, f[1].0 as u64);
    assert_eq!(c.kind, CorruptionKind::Unseal);
    let shown = c.to_string();
    assert!(
        shown.contains("wal-0000000000000001.seg") && shown.contains(&f[1].0.to_string()),
        "{shown}"
    );

    // Quarantined, and the log starts empty and works.
    assert!(dir.join(QUARANTINE_DIR).join(segment_file_name(1)).exists());
    assert!(!path.exists());
    log.append(b"fresh").expect("append");
    drop(log);
    let (_, recovered) = open(dir);
    assert_eq!(payloads(&recovered), (None, vec![b"fresh".to_vec()]));
}

#[test]
fn flipped_byte_in_snapshot_or_header_is_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &tmp.path().join("sealed");
    let (mut log, _) = open(dir);
    log.append(b"a").expect("append");
    log.snapshot(b"S").expect("snapshot");
    log.append(b"b").expect("append");
    drop(log);
    let aside = tmp.path().join("aside");
    copy_dir(dir, &aside);

    let snap = dir.join(SNAPSHOT_FILE);
    let mut bytes = fs::read(&snap).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&snap, &bytes).expect("write");
    let c = corruption(open(dir).1);
    assert_eq!(
        (c.file.clone(), c.kind),
        (snap.clone(), CorruptionKind::Unseal)
    );

    replace_dir(dir, &aside);
    let path = seg(dir, 2);
    let mut bytes = fs::read(&path).expect("read");
    bytes[15] ^= 1; // segment id in the header
    fs::write(&path, &bytes).expect("write");
    let c = corruption(open(dir).1);
    assert_eq!(c.file, path);
    assert!(
        matches!(c.kind, CorruptionKind::SegmentIdMismatch { in_name: 2, .. }),
        "{c}"
    );
}

#[test]
fn torn_last_record_loads_the_acknowledged_prefix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (path, f) = records_abc(dir, false);
    for cut in [f[2].0 + 2, f[2].0 + 7, f[2].1 - 1] {
        let aside = fs::read(&path).expect("read");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(cut as u64)
            .expect("truncate");
        // Reported when what was cut off is more than zeros (a cut inside
        // the length prefix leaves only its zero high bytes).
        let reported = aside[f[2].0..cut].iter().any(|b| *b != 0);
        let (_, recovered) = open(dir);
        match &recovered {
            Recovered::State {
                records, torn_tail, ..
            } => {
                assert_eq!(records.len(), 2, "cut at {cut}");
                let expected = reported.then(|| (path.clone(), f[2].0 as u64));
                assert_eq!(torn_tail.as_ref(), expected.as_ref(), "cut at {cut}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        // Open cut the file back to the valid prefix; a reopen is clean.
        assert_eq!(fs::metadata(&path).expect("stat").len(), f[2].0 as u64);
        let (mut log, recovered) = open(dir);
        assert!(matches!(
            &recovered,
            Recovered::State {
                torn_tail: None,
                ..
            }
        ));
        log.append(b"d").expect("append");
        drop(log);
        let (_, recovered) = open(dir);
        assert_eq!(
            payloads(&recovered).1,
            vec![b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]
        );
        // Reset for the next cut.
        for entry in fs::read_dir(dir).expect("ls") {
            let p = entry.expect("entry").path();
            if p.is_file() {
                fs::remove_file(p).expect("rm");
            }
        }
        fs::write(&path, &aside).expect("restore");
    }
}

#[test]
fn zero_tail_is_cut_quietly_and_a_torn_header_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut log, _) = open(dir);
    log.append(b"a").expect("append");
    drop(log);
    // The segment was preallocated: the record, then zeros.
    let path = seg(dir, 1);
    let valid = frames(&path)[0].1 as u64;
    assert_eq!(fs::metadata(&path).expect("stat").len(), PREALLOC_BYTES);
    let (_, recovered) = open(dir);
    assert!(matches!(
        &recovered,
        Recovered::State {
            torn_tail: None,
            ..
        }
    ));
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec()]);
    // Cut back to the record, since appends go on in a new segment.
    assert_eq!(fs::metadata(&path).expect("stat").len(), valid);

    // A new segment whose header never fully landed.
    fs::write(seg(dir, 2), &SEGMENT_MAGIC[..5]).expect("write");
    let (mut log, recovered) = open(dir);
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec()]);
    assert!(!seg(dir, 2).exists());
    log.append(b"b").expect("append reuses segment id 2");
    drop(log);
    assert_eq!(payloads(&open(dir).1).1, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn truncation_inside_an_earlier_segment_is_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for r in [b"a", b"b"] {
        let (mut log, _) = open(dir);
        log.append(r).expect("append");
        log.append(r).expect("append");
    }
    let path = seg(dir, 1);
    let f = frames(&path);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(f[1].0 as u64 + 3)
        .expect("truncate");
    let c = corruption(open(dir).1);
    assert_eq!(
        (c.file, c.offset_bytes, c.kind),
        (path, f[1].0 as u64, CorruptionKind::TruncatedInside)
    );
}

#[test]
fn reordered_records_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (path, f) = records_abc(dir, true);
    let bytes = fs::read(&path).expect("read");
    let mut swapped = bytes[..f[0].0].to_vec();
    swapped.extend_from_slice(&bytes[f[1].0..f[1].1]);
    swapped.extend_from_slice(&bytes[f[0].0..f[0].1]);
    swapped.extend_from_slice(&bytes[f[2].0..]);
    fs::write(&path, &swapped).expect("write");
    let c = corruption(open(dir).1);
    assert_eq!(
        (c.offset_bytes, c.kind),
        (f[0].0 as u64, CorruptionKind::Unseal)
    );
}

#[test]
fn dropped_middle_record_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (path, f) = records_abc(dir, true);
    let bytes = fs::read(&path).expect("read");
    let mut spliced = bytes[..f[1].0].to_vec();
    spliced.extend_from_slice(&bytes[f[2].0..]);
    fs::write(&path, &spliced).expect("write");
    assert_eq!(corruption(open(dir).1).kind, CorruptionKind::Unseal);
}

#[test]
fn missing_or_renamed_segments_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &tmp.path().join("sealed");
    for r in [b"a", b"b", b"c"] {
        let (mut log, _) = open(dir);
        log.append(r).expect("append");
        if r == b"c" {
            ballast(&mut log);
        }
    }
    let aside = tmp.path().join("aside");
    copy_dir(dir, &aside);

    fs::remove_file(seg(dir, 2)).expect("rm");
    let c = corruption(open(dir).1);
    assert_eq!(
        (c.file, c.kind),
        (seg(dir, 3), CorruptionKind::MissingSegment { expected: 2 })
    );

    replace_dir(dir, &aside);
    fs::remove_file(seg(dir, 1)).expect("rm");
    assert_eq!(
        corruption(open(dir).1).kind,
        CorruptionKind::MissingSnapshot { first: 2 }
    );

    // Renaming segment 3 to 2 after deleting 2, header fixed up to match:
    // its records were sealed at position 3, so they do not unseal at 2.
    replace_dir(dir, &aside);
    let mut bytes = fs::read(seg(dir, 3)).expect("read");
    bytes[8..16].copy_from_slice(&2u64.to_be_bytes());
    fs::remove_file(seg(dir, 2)).expect("rm");
    fs::remove_file(seg(dir, 3)).expect("rm");
    fs::write(seg(dir, 2), &bytes).expect("write");
    let c = corruption(open(dir).1);
    assert_eq!((c.file, c.kind), (seg(dir, 2), CorruptionKind::Unseal));
}

/// Two histories that diverged after a rollback share segment ids; a segment
/// from one cannot be spliced onto the other (hash chain in the AAD).
#[test]
fn segments_from_another_history_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sealed");
    let base = tmp.path().join("base");
    let history_a = tmp.path().join("a");
    let (mut log, _) = open(&dir);
    log.append(b"common").expect("append");
    drop(log);
    copy_dir(&dir, &base);

    for r in [b"a1", b"a2"] {
        let (mut log, _) = open(&dir);
        log.append(r).expect("append");
        if r == b"a2" {
            ballast(&mut log);
        }
    }
    copy_dir(&dir, &history_a);

    replace_dir(&dir, &base);
    for r in [b"b1", b"b2"] {
        let (mut log, _) = open(&dir);
        log.append(r).expect("append");
    }
    // Segments: 1 common, 2 and 3 per history. Take 3 from history A.
    fs::copy(seg(&history_a, 3), seg(&dir, 3)).expect("splice");
    let c = corruption(open(&dir).1);
    assert_eq!(
        (c.file, c.offset_bytes, c.kind),
        (seg(&dir, 3), SEGMENT_HEADER_BYTES, CorruptionKind::Unseal)
    );
}

#[test]
fn another_replicas_sealed_files_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mine = tmp.path().join("r1");
    let theirs = tmp.path().join("r2");
    let (mut log, _) = SealedLog::open(&theirs, sealer(2)).expect("open");
    log.append(b"x").expect("append");
    log.snapshot(b"their state").expect("snapshot");
    log.append(b"y").expect("append");
    drop(log);
    copy_dir(&theirs, &mine);
    let (_, recovered) = SealedLog::open(&mine, sealer(1)).expect("open");
    let c = corruption(recovered);
    assert_eq!(
        (c.file, c.kind),
        (mine.join(SNAPSHOT_FILE), CorruptionKind::Unseal)
    );

    // Without the snapshot, the first record fails instead.
    let (mut log, _) = SealedLog::open(&theirs, sealer(2)).expect("open");
    let _ = log
        .discard_undecodable(Path::new("x"), 0, "test reset")
        .expect("reset");
    log.append(b"z").expect("append");
    ballast(&mut log);
    drop(log);
    replace_dir(&mine, &theirs);
    let c = corruption(SealedLog::open(&mine, sealer(1)).expect("open").1);
    assert_eq!(
        (c.file, c.offset_bytes, c.kind),
        (seg(&mine, 1), SEGMENT_HEADER_BYTES, CorruptionKind::Unseal)
    );
}

#[test]
fn undecodable_record_reported_by_caller_resets_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut log, _) = open(dir);
    log.append(b"not a valid core record").expect("append");
    drop(log);
    let (mut log, recovered) = open(dir);
    let Recovered::State { records, .. } = recovered else {
        panic!("expected state")
    };
    let bad = &records[0];
    let c = log
        .discard_undecodable(
            &bad.file,
            bad.position.offset_bytes,
            "unknown record tag 0x6e",
        )
        .expect("reset");
    assert_eq!(c.offset_bytes, SEGMENT_HEADER_BYTES);
    assert!(c.to_string().contains("unknown record tag"), "{c}");
    drop(log);
    assert_eq!(open(dir).1, Recovered::Empty);
}

#[test]
fn garbage_files_never_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &tmp.path().join("sealed");
    let mut state: u64 = 0x2545f4914f6cdd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Each round fsyncs several times; 60 rounds keep this under ~2 s.
    for round in 0..60 {
        let len = (next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 16 {
            bytes[..8].copy_from_slice(SEGMENT_MAGIC);
            bytes[8..16].copy_from_slice(&1u64.to_be_bytes());
        }
        fs::create_dir_all(dir).expect("mkdir");
        let target = if round % 3 == 0 {
            dir.join(SNAPSHOT_FILE)
        } else {
            seg(dir, 1)
        };
        fs::write(&target, &bytes).expect("write");
        // Whatever it is, open returns a value and leaves a usable log.
        let (mut log, _) = open(dir);
        log.append(b"ok").expect("append");
        drop(log);
        assert!(matches!(
            open(dir).1,
            Recovered::State { .. } | Recovered::Corrupt(_)
        ));
        let _ = fs::remove_dir_all(dir);
    }
}

#[test]
fn oversized_record_is_refused_without_poisoning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(tmp.path());
    let big = vec![0u8; MAX_RECORD_BYTES];
    assert!(matches!(
        log.append(&big),
        Err(SealedStoreError::RecordTooLarge { .. })
    ));
    log.append(b"small").expect("still usable");
}

/// A crash inside `append` leaves any subset of the batch's sectors on disk,
/// over the preallocated zeros. Every subset loads as a prefix of the history
/// holding every record synced before the batch: never as corruption, which
/// would start the replica empty.
#[test]
fn a_torn_batch_loads_the_synced_prefix_whatever_sectors_landed() {
    const SECTOR: usize = 512;
    let tmp = tempfile::tempdir().expect("tempdir");
    let written = tmp.path().join("written");
    let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300]).collect();
    let (mut log, _) = open(&written);
    log.append(&records[0]).expect("append");
    log.append(&records[1]).expect("append");
    let batch: Vec<&[u8]> = records[2..].iter().map(Vec::as_slice).collect();
    log.append_batch(&batch).expect("append batch");
    drop(log);
    let path = seg(&written, 1);
    let full = fs::read(&path).expect("read");
    let f = frames(&path);
    let (batch_start, batch_end) = (f[2].0, f[4].1);
    let mut before = full.clone();
    before[batch_start..].fill(0);
    let sectors: Vec<usize> = (batch_start / SECTOR..batch_end.div_ceil(SECTOR)).collect();
    assert!(sectors.len() >= 3, "the batch spans several sectors");

    let dir = tmp.path().join("crashed");
    for landed in 0u32..(1 << sectors.len()) {
        let mut bytes = before.clone();
        for (i, s) in sectors.iter().enumerate() {
            if landed & (1 << i) != 0 {
                let range = s * SECTOR..((s + 1) * SECTOR).min(full.len());
                bytes[range.clone()].copy_from_slice(&full[range]);
            }
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(seg(&dir, 1), &bytes).expect("write");
        let (_, recovered) = open(&dir);
        let loaded = match &recovered {
            Recovered::State { records, .. } => records.len(),
            other => panic!("sectors landed {landed:b}: {other:?}"),
        };
        assert!(
            loaded >= 2,
            "sectors landed {landed:b}: lost synced records"
        );
        assert_eq!(
            payloads(&recovered).1,
            records[..loaded].to_vec(),
            "sectors landed {landed:b}"
        );
        if landed == (1 << sectors.len()) - 1 {
            assert_eq!(loaded, 5, "the whole batch landed");
        }
    }
}

/// The price of the rule above: bytes within one write's reach of the end of
/// the log cannot be told from a torn write, so tampering there cuts the log
/// (a rollback, which cutting the file would do too). Further back it is
/// corruption (`flipped_byte_is_corruption_naming_file_and_offset`).
#[test]
fn tampering_within_a_torn_writes_reach_of_the_end_reads_as_a_torn_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (path, f) = records_abc(dir, false);
    let mut bytes = fs::read(&path).expect("read");
    bytes[f[1].0 + 10] ^= 0x40;
    fs::write(&path, &bytes).expect("write");
    let (_, recovered) = open(dir);
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec()]);
    assert!(matches!(
        &recovered,
        Recovered::State { torn_tail: Some((p, at)), .. } if *p == path && *at == f[1].0 as u64
    ));
}

/// A record longer than a torn write's reach is written as its length, synced,
/// then the rest: after a crash between or during, its length says how far the
/// torn write may reach. Without that order, a body whose length never landed
/// would be corruption.
#[test]
fn a_long_record_is_written_length_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let written = tmp.path().join("written");
    let long = vec![0x33; MAX_TORN_REACH as usize + 5000];
    let (mut log, _) = open(&written);
    log.append(b"a").expect("append");
    log.append(&long).expect("append long");
    drop(log);
    let path = seg(&written, 1);
    let full = fs::read(&path).expect("read");
    let f = frames(&path);
    let (start, end) = f[1];
    assert!(
        end - start > 4 + MAX_TORN_REACH as usize,
        "one frame past the reach"
    );

    let crashed = tmp.path().join("crashed");
    let load = |bytes: &[u8]| {
        let _ = fs::remove_dir_all(&crashed);
        fs::create_dir_all(&crashed).expect("mkdir");
        fs::write(seg(&crashed, 1), bytes).expect("write");
        open(&crashed).1
    };
    let mut before = full.clone();
    before[start..].fill(0);

    // Crash after the length was synced, before the rest landed.
    let mut bytes = before.clone();
    bytes[start..start + 4].copy_from_slice(&full[start..start + 4]);
    let recovered = load(&bytes);
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec()]);
    assert!(matches!(
        &recovered,
        Recovered::State {
            torn_tail: Some(_),
            ..
        }
    ));

    // Crash while the rest was landing: only its last sectors are there.
    bytes[end - 1024..end].copy_from_slice(&full[end - 1024..end]);
    let recovered = load(&bytes);
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec()]);

    // The same bytes without the length: too far for a torn write.
    bytes[start..start + 4].fill(0);
    let c = corruption(load(&bytes));
    assert_eq!(
        (c.offset_bytes, c.kind),
        (
            start as u64,
            CorruptionKind::BadRecordLength {
                len_bytes: 0,
                max_bytes: MAX_RECORD_BYTES
            }
        )
    );

    // And everything round-trips.
    let (_, recovered) = open(&written);
    assert_eq!(payloads(&recovered).1, vec![b"a".to_vec(), long]);
}

/// Batches bigger than a torn write's reach go in pieces, and a segment grows
/// past its preallocated zeros; all of it loads back.
#[test]
fn big_batches_and_segments_past_their_preallocation_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let records: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 60 * 1024]).collect();
    let (mut log, _) = open(dir);
    let batch: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    log.append_batch(&batch).expect("append batch");
    log.append(b"after").expect("append");
    drop(log);
    let len = fs::metadata(seg(dir, 1)).expect("stat").len();
    assert!(
        len > PREALLOC_BYTES && len.is_multiple_of(PREALLOC_BYTES),
        "{len}"
    );
    let (_, recovered) = open(dir);
    let mut expected = records.clone();
    expected.push(b"after".to_vec());
    assert_eq!(payloads(&recovered).1, expected);
}
