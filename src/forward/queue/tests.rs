use std::path::Path;

use super::*;

fn metrics() -> QueueMetrics {
    QueueMetrics::register(&Registry::new())
}

fn small() -> QueueOptions {
    QueueOptions {
        max_bytes: 4096,
        segment_bytes: 1024,
    }
}

fn open(dir: &Path, opts: QueueOptions) -> (DiskQueue, QueueMetrics) {
    let m = metrics();
    (DiskQueue::open(dir, opts, m.clone()).unwrap(), m)
}

fn rec(i: u32) -> Vec<u8> {
    format!("record {i:04} {}", "x".repeat(40)).into_bytes()
}

/// Everything queued, in order, acknowledged as read when `ack`.
fn drain(q: &DiskQueue, ack: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let b = q.peek(3, usize::MAX).unwrap();
        if b.is_empty() {
            return out;
        }
        let next = b.last().unwrap().next;
        out.extend(b.into_iter().map(|r| r.payload));
        if !ack {
            return out;
        }
        q.ack(next).unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn records_come_out_in_order_and_stay_until_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let (q, m) = open(d.path(), QueueOptions::new(1 << 20));
    for i in 0..5 {
        q.push(&rec(i)).unwrap();
    }
    assert_eq!(m.records.get(), 5);
    let first = q.peek(2, usize::MAX).unwrap();
    assert_eq!(first[0].payload, rec(0));
    // Not acknowledged: the same records again.
    assert_eq!(q.peek(2, usize::MAX).unwrap()[0].payload, rec(0));
    q.ack(first[1].next).unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(drain(&q, true), (2..5).map(rec).collect::<Vec<_>>());
    assert!(q.is_empty());
    assert_eq!(m.records.get(), 0);
}

#[test]
fn a_restart_resends_what_was_not_acknowledged_in_order() {
    let d = tempfile::tempdir().unwrap();
    {
        let (q, _) = open(d.path(), small());
        for i in 0..40 {
            q.push(&rec(i)).unwrap();
        }
        let b = q.peek(7, usize::MAX).unwrap();
        q.ack(b[6].next).unwrap();
        // Read but not acknowledged: must come again.
        let _ = q.peek(5, usize::MAX).unwrap();
    }
    let (q, m) = open(d.path(), small());
    assert_eq!(m.records.get(), 33);
    q.push(&rec(40)).unwrap();
    assert_eq!(drain(&q, true), (7..41).map(rec).collect::<Vec<_>>());
    // Acknowledged through the end: the next start has nothing to send.
    drop(q);
    let (q, _) = open(d.path(), small());
    assert!(q.is_empty());
    assert_eq!(segment_files(d.path()).len(), 1);
}

#[test]
fn acknowledged_segments_are_deleted() {
    let d = tempfile::tempdir().unwrap();
    let (q, m) = open(d.path(), small());
    for i in 0..50 {
        q.push(&rec(i)).unwrap();
    }
    assert!(segment_files(d.path()).len() >= 3);
    drain(&q, true);
    assert_eq!(segment_files(d.path()).len(), 1);
    // What is left is the segment appended to.
    assert!(m.bytes.get() as u64 <= small().segment_bytes);
}

#[test]
fn a_full_queue_drops_its_oldest_records_and_counts_them() {
    let d = tempfile::tempdir().unwrap();
    let (q, m) = open(d.path(), small());
    for i in 0..200 {
        q.push(&rec(i)).unwrap();
        assert!(m.bytes.get() as u64 <= small().max_bytes);
    }
    let left = drain(&q, false);
    let kept = q.len();
    assert_eq!(m.dropped_records.get() + kept, 200);
    assert!(m.dropped_records.get() > 100);
    assert!(m.dropped_bytes.get() > 0);
    // The newest survive, oldest first.
    let all = drain(&q, true);
    assert_eq!(all.last().unwrap(), &rec(199));
    assert_eq!(all.first(), left.first());
    let first: u32 = String::from_utf8_lossy(&all[0][7..11]).parse().unwrap();
    assert_eq!(all, (first..200).map(rec).collect::<Vec<_>>());
}

#[test]
fn dropping_the_segment_being_sent_leaves_the_late_ack_harmless() {
    let d = tempfile::tempdir().unwrap();
    let (q, _) = open(d.path(), small());
    q.push(&rec(0)).unwrap();
    let sending = q.peek(1, usize::MAX).unwrap();
    for i in 1..200 {
        q.push(&rec(i)).unwrap();
    }
    let len = q.len();
    q.ack(sending[0].next).unwrap();
    assert_eq!(q.len(), len);
    assert_eq!(drain(&q, true).last().unwrap(), &rec(199));
}

#[test]
fn a_record_larger_than_the_queue_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (q, m) = open(d.path(), small());
    assert!(matches!(
        q.push(&vec![0; 5000]),
        Err(QueueError::TooLarge(5000))
    ));
    assert_eq!(m.dropped_records.get(), 1);
    assert!(q.is_empty());
}

#[test]
fn a_torn_tail_is_truncated_and_counted() {
    let d = tempfile::tempdir().unwrap();
    {
        let (q, _) = open(d.path(), QueueOptions::new(1 << 20));
        for i in 0..3 {
            q.push(&rec(i)).unwrap();
        }
    }
    let seg = segment_files(d.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the last append.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    let (q, m) = open(d.path(), QueueOptions::new(1 << 20));
    assert_eq!(m.corruptions.get(), 1);
    assert_eq!(drain(&q, true), vec![rec(0), rec(1)]);
}

#[test]
fn a_flipped_bit_ends_the_segment_there() {
    let d = tempfile::tempdir().unwrap();
    {
        let (q, _) = open(d.path(), QueueOptions::new(1 << 20));
        for i in 0..3 {
            q.push(&rec(i)).unwrap();
        }
    }
    let seg = segment_files(d.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let second = (segment::HEADER_LEN + segment::FRAME_LEN) as usize + rec(0).len() + 12;
    bytes[second] ^= 0x10;
    fs::write(&seg, &bytes).unwrap();
    let (q, m) = open(d.path(), QueueOptions::new(1 << 20));
    assert_eq!(m.corruptions.get(), 1);
    assert_eq!(drain(&q, true), vec![rec(0)]);
    // Junk that is not a segment at all is counted and removed.
    fs::write(d.path().join("00000000000000000099.seg"), b"junk").unwrap();
    drop(q);
    let (q, m) = open(d.path(), QueueOptions::new(1 << 20));
    assert_eq!(m.corruptions.get(), 1);
    assert!(q.is_empty());
}

#[test]
fn a_corrupt_ack_file_sends_everything_again() {
    let d = tempfile::tempdir().unwrap();
    {
        let (q, _) = open(d.path(), QueueOptions::new(1 << 20));
        for i in 0..4 {
            q.push(&rec(i)).unwrap();
        }
        let b = q.peek(2, usize::MAX).unwrap();
        q.ack(b[1].next).unwrap();
    }
    fs::write(d.path().join(ACK_FILE), b"garbage").unwrap();
    let (q, m) = open(d.path(), QueueOptions::new(1 << 20));
    assert_eq!(m.corruptions.get(), 1);
    assert_eq!(drain(&q, true), (0..4).map(rec).collect::<Vec<_>>());
}

#[test]
fn sync_and_reopen_keep_everything() {
    let d = tempfile::tempdir().unwrap();
    {
        let (q, _) = open(d.path(), small());
        for i in 0..10 {
            q.push(&rec(i)).unwrap();
        }
        q.sync().unwrap();
    }
    // Reopened twice without sending: nothing lost, nothing doubled.
    drop(open(d.path(), small()));
    let (q, _) = open(d.path(), small());
    assert_eq!(drain(&q, true), (0..10).map(rec).collect::<Vec<_>>());
}
