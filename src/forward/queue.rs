//! The durable queue for what cardguard itself sends (overflow aggregates, recorded rule
//! results): nobody upstream of cardguard can send those again, so they wait on disk in
//! `storage.path` until the upstream acknowledged them, across an outage and a restart.
//!
//! Records are appended to segment files (`queue/<first sequence number>.seg`, framed and
//! checksummed by `segment`); the position of the oldest record not yet acknowledged is kept
//! in `queue/ack` (replaced atomically by a rename on every acknowledgement). On open, every
//! segment is read through: a record that does not check out ends its segment there (the
//! file is truncated and `cardguard_queue_corruptions_total` counted), records already
//! acknowledged are skipped, and the rest are handed out again in order.
//!
//! The queue is bounded by `storage.max_queue_bytes` on disk: when a record does not fit,
//! the oldest segment goes (its records counted in `cardguard_queue_dropped_records_total`),
//! so an outage longer than the queue holds costs the oldest data, never the disk.
//!
//! Why not a crate: `yaque` has no bound in bytes nor drop-oldest, and its reader state is
//! lost on a crash between reads; `queue-file` (a port of Tape's QueueFile) keeps one ring
//! file with no per-record checksum, so a torn write after a crash is undetected. Both are
//! lightly maintained. What is needed here (append, read from the head, acknowledge, drop the
//! oldest segment, truncate a bad tail) is a few hundred lines over `std::fs` and `crc32fast`.
//!
//! Appends are `write(2)`s of whole records into the page cache, and every acknowledgement
//! renames a new `ack` file in: a killed process (SIGKILL) loses nothing written. The files
//! are fsynced at most once a second and at shutdown, so a power loss can cost the last second
//! of records, or send up to a second's worth twice. Files are only touched under the queue's
//! lock, by small appends and reads; the lock is never held across an `await`.

pub mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::Notify;

use crate::telemetry::{counter, gauge};
use segment::{Corrupt, Reader, FRAME_LEN, HEADER_LEN, MAGIC, MAX_RECORD};

/// The queue's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Bytes on disk, segments included whole.
    pub max_bytes: u64,
    /// A segment is closed once it reaches this size; the oldest is dropped whole.
    pub segment_bytes: u64,
}

impl QueueOptions {
    /// Segments of an eighth of the bound (between 64 KiB and 64 MiB), so that dropping the
    /// oldest frees a useful amount without throwing away much.
    pub fn new(max_bytes: u64) -> Self {
        QueueOptions {
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 << 10, 64 << 20),
        }
    }
}

/// The queue's metrics.
#[derive(Clone)]
pub struct QueueMetrics {
    pub bytes: IntGauge,
    pub records: IntGauge,
    pub dropped_records: IntCounter,
    pub dropped_bytes: IntCounter,
    pub corruptions: IntCounter,
    pub write_errors: IntCounter,
}

impl QueueMetrics {
    pub fn register(r: &Registry) -> Self {
        QueueMetrics {
            bytes: gauge(
                r,
                "cardguard_queue_bytes",
                "Bytes of the durable queue's segment files on disk.",
            ),
            records: gauge(
                r,
                "cardguard_queue_records",
                "Records in the durable queue not yet acknowledged by the upstream.",
            ),
            dropped_records: counter(
                r,
                "cardguard_queue_dropped_records_total",
                "Records dropped unsent from the durable queue because it was full (oldest first).",
            ),
            dropped_bytes: counter(
                r,
                "cardguard_queue_dropped_bytes_total",
                "Bytes dropped unsent from the durable queue because it was full (oldest first).",
            ),
            corruptions: counter(
                r,
                "cardguard_queue_corruptions_total",
                "Corrupt or torn queue files found (each truncated where the good part ends).",
            ),
            write_errors: counter(
                r,
                "cardguard_queue_write_errors_total",
                "Records that could not be written to the durable queue (I/O errors).",
            ),
        }
    }
}

/// What went wrong with the queue's files.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("durable queue {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("a record of {0} bytes does not fit in the durable queue")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a record starts: its segment (by the segment's first sequence number), its offset in
/// the file and its own sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    segment: u64,
    offset: u64,
    seq: u64,
}

/// One record handed out by `peek`, with the position after it (what `ack` takes).
pub struct Record {
    pub payload: Vec<u8>,
    pub next: Position,
}

struct Segment {
    first: u64,
    /// Bytes of the file (header included).
    len: u64,
    records: u64,
}

struct Inner {
    dir: PathBuf,
    opts: QueueOptions,
    /// Oldest first; never empty: the last is the one appended to.
    segments: VecDeque<Segment>,
    writer: File,
    /// The oldest record not acknowledged; always in `segments[0]`.
    head: Position,
    next_seq: u64,
    bytes: u64,
    /// Something was written since the last fsync.
    dirty: bool,
}

/// A durable FIFO of byte records with one consumer: `peek` from the head, `ack` when done.
pub struct DiskQueue {
    inner: Mutex<Inner>,
    metrics: QueueMetrics,
    appended: Notify,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

const ACK_FILE: &str = "ack";

impl DiskQueue {
    /// Open the queue in `dir` (created if missing), reading every segment through: corrupt
    /// tails are truncated and counted, acknowledged records skipped.
    pub fn open(
        dir: &Path,
        opts: QueueOptions,
        metrics: QueueMetrics,
    ) -> Result<DiskQueue, QueueError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ack = read_ack(dir, &metrics);
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                found.push((first, path));
            }
        }
        found.sort();

        let mut segments = VecDeque::new();
        for (first, path) in found {
            match check_segment(&path, &metrics)? {
                Some((len, records)) if records > 0 && first + records > ack => {
                    segments.push_back(Segment {
                        first,
                        len,
                        records,
                    })
                }
                // Empty, unreadable or wholly acknowledged: nothing to keep.
                _ => fs::remove_file(&path).map_err(io_err(&path))?,
            }
        }
        let next_seq = segments
            .back()
            .map_or(ack, |s: &Segment| s.first + s.records)
            .max(ack);
        let head = match segments.front() {
            Some(s) if ack > s.first => Position {
                segment: s.first,
                offset: offset_of(&segment_path(dir, s.first), ack - s.first)?,
                seq: ack,
            },
            Some(s) => Position {
                segment: s.first,
                offset: HEADER_LEN,
                seq: s.first,
            },
            None => Position {
                segment: next_seq,
                offset: HEADER_LEN,
                seq: next_seq,
            },
        };
        // Appends go to a fresh segment, never after a tail that was just repaired.
        let writer = create_segment(dir, next_seq)?;
        segments.push_back(Segment {
            first: next_seq,
            len: HEADER_LEN,
            records: 0,
        });
        let bytes = segments.iter().map(|s| s.len).sum();
        let q = DiskQueue {
            inner: Mutex::new(Inner {
                dir: dir.to_owned(),
                opts,
                segments,
                writer,
                head,
                next_seq,
                bytes,
                dirty: true,
            }),
            metrics,
            appended: Notify::new(),
        };
        {
            let mut inner = q.lock();
            inner.remove_consumed()?;
            q.publish(&inner);
            let pending = inner.pending();
            if pending > 0 {
                tracing::info!(
                    dir = %dir.display(),
                    records = pending,
                    "durable queue: resending what the upstream had not acknowledged before the restart"
                );
            }
        }
        Ok(q)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.metrics.bytes.set(inner.bytes as i64);
        self.metrics.records.set(inner.pending() as i64);
    }

    /// Records not acknowledged yet.
    pub fn len(&self) -> u64 {
        self.lock().pending()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append one record. When the queue is full the oldest segments are dropped (counted) to
    /// make room; a record larger than the whole queue is refused.
    pub fn push(&self, payload: &[u8]) -> Result<(), QueueError> {
        let framed = FRAME_LEN + payload.len() as u64;
        let mut inner = self.lock();
        if payload.len() > MAX_RECORD || framed + HEADER_LEN > inner.opts.max_bytes {
            self.metrics.dropped_records.inc();
            self.metrics.dropped_bytes.inc_by(framed);
            return Err(QueueError::TooLarge(payload.len()));
        }
        let mut buf = Vec::with_capacity(framed as usize);
        segment::frame(payload, &mut buf);
        let result = self.append(&mut inner, &buf);
        if result.is_err() {
            self.metrics.write_errors.inc();
        }
        self.publish(&inner);
        drop(inner);
        self.appended.notify_one();
        result
    }

    fn append(&self, inner: &mut Inner, buf: &[u8]) -> Result<(), QueueError> {
        let n = buf.len() as u64;
        let active = inner.segments.back().expect("never empty");
        if active.records > 0 && active.len + n > inner.opts.segment_bytes {
            inner.roll()?;
        }
        while inner.bytes + n > inner.opts.max_bytes {
            if inner.segments.len() == 1 {
                // Only the active segment holds the queue: close it so it can go.
                inner.roll()?;
            }
            let (records, bytes) = inner.drop_oldest()?;
            self.metrics.dropped_records.inc_by(records);
            self.metrics.dropped_bytes.inc_by(bytes);
            tracing::warn!(
                records,
                bytes,
                "durable queue full (storage.max_queue_bytes): dropped its oldest records unsent"
            );
        }
        let active_first = inner.segments.back().expect("never empty").first;
        if let Err(e) = inner.writer.write_all(buf) {
            // Leave no partial record behind for the next append to follow.
            let len = inner.segments.back().expect("never empty").len;
            let _ = inner.writer.set_len(len);
            return Err(QueueError::Io {
                path: segment_path(&inner.dir, active_first),
                source: e,
            });
        }
        let active = inner.segments.back_mut().expect("never empty");
        active.len += n;
        active.records += 1;
        inner.next_seq += 1;
        inner.bytes += n;
        inner.dirty = true;
        Ok(())
    }

    /// Up to `max_records` records (and about `max_bytes`, at least one) from the head, in
    /// order, each with the position after it. They stay queued until `ack`.
    pub fn peek(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, QueueError> {
        let mut inner = self.lock();
        let mut out: Vec<Record> = Vec::new();
        let mut taken = 0usize;
        let mut pos = inner.head;
        let mut i = 0;
        while i < inner.segments.len() && out.len() < max_records && taken < max_bytes {
            let (first, len) = (inner.segments[i].first, inner.segments[i].len);
            if pos.segment != first {
                pos = Position {
                    segment: first,
                    offset: HEADER_LEN,
                    seq: first,
                };
            }
            if pos.offset < len {
                let path = segment_path(&inner.dir, first);
                let mut file = File::open(&path).map_err(io_err(&path))?;
                file.seek(SeekFrom::Start(pos.offset))
                    .map_err(io_err(&path))?;
                let mut r = Reader::at(BufReader::new(file), pos.offset);
                while r.valid < len && out.len() < max_records && taken < max_bytes {
                    let mut payload = Vec::new();
                    match r.next(&mut payload).map_err(io_err(&path))? {
                        Ok(true) => {
                            pos = Position {
                                segment: first,
                                offset: r.valid,
                                seq: pos.seq + 1,
                            };
                            taken += payload.len();
                            out.push(Record { payload, next: pos });
                        }
                        Ok(false) => break,
                        Err(c) => {
                            // Checked at open and written by us since: the disk changed it.
                            self.metrics.corruptions.inc();
                            tracing::error!(
                                file = %path.display(),
                                offset = r.valid,
                                "durable queue: {c}; dropping the rest of the segment"
                            );
                            inner.truncate(i, r.valid)?;
                            break;
                        }
                    }
                }
            }
            i += 1;
        }
        // A record ending its (closed) segment leads to the next one, so that acknowledging
        // it lets the finished segment go.
        for rec in &mut out {
            if let Some(k) = inner
                .segments
                .iter()
                .position(|s| s.first == rec.next.segment)
            {
                if k + 1 < inner.segments.len() && rec.next.offset >= inner.segments[k].len {
                    let n = inner.segments[k + 1].first;
                    rec.next = Position {
                        segment: n,
                        offset: HEADER_LEN,
                        seq: n,
                    };
                }
            }
        }
        Ok(out)
    }

    /// Everything up to `next` (a position `peek` returned) was delivered or given up on:
    /// forget it, on disk too. A position older than the head (its segment was dropped as the
    /// queue filled meanwhile) changes nothing.
    pub fn ack(&self, next: Position) -> Result<(), QueueError> {
        let mut inner = self.lock();
        if next.seq <= inner.head.seq {
            return Ok(());
        }
        if !inner.segments.iter().any(|s| s.first == next.segment) {
            return Ok(());
        }
        inner.head = next;
        let result = inner
            .remove_consumed()
            .and_then(|()| inner.write_ack(false));
        self.publish(&inner);
        result
    }

    /// Wait until something is appended (returns at once if something was since the last
    /// wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// fsync what was written since the last call: the segment appended to, the ack file and
    /// the directory (for renames and new files).
    pub fn sync(&self) -> Result<(), QueueError> {
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(());
        }
        let path = segment_path(
            &inner.dir,
            inner.segments.back().expect("never empty").first,
        );
        inner.writer.sync_data().map_err(io_err(&path))?;
        inner.write_ack(true)?;
        inner.dirty = false;
        Ok(())
    }
}

impl Inner {
    fn pending(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.records).sum();
        total - (self.head.seq - self.segments[0].first).min(total)
    }

    /// Close the active segment and start the next.
    fn roll(&mut self) -> Result<(), QueueError> {
        let _ = self.writer.sync_data();
        self.writer = create_segment(&self.dir, self.next_seq)?;
        self.segments.push_back(Segment {
            first: self.next_seq,
            len: HEADER_LEN,
            records: 0,
        });
        self.bytes += HEADER_LEN;
        Ok(())
    }

    /// Delete the oldest (closed) segment; the records and bytes lost with it that were not
    /// acknowledged.
    fn drop_oldest(&mut self) -> Result<(u64, u64), QueueError> {
        debug_assert!(self.segments.len() > 1);
        let s = self.segments.pop_front().expect("more than one");
        let consumed = self.head.seq.saturating_sub(s.first);
        let lost = (s.records.saturating_sub(consumed), s.len - self.head.offset);
        self.bytes -= s.len;
        let path = segment_path(&self.dir, s.first);
        fs::remove_file(&path).map_err(io_err(&path))?;
        let n = self.segments[0].first;
        self.head = Position {
            segment: n,
            offset: HEADER_LEN,
            seq: n,
        };
        Ok(lost)
    }

    /// Delete closed segments the head has moved past.
    fn remove_consumed(&mut self) -> Result<(), QueueError> {
        while self.segments.len() > 1 {
            let s = &self.segments[0];
            let finished = s.first < self.head.segment
                || (s.first == self.head.segment && self.head.offset >= s.len);
            if !finished {
                break;
            }
            let s = self.segments.pop_front().expect("more than one");
            self.bytes -= s.len;
            let path = segment_path(&self.dir, s.first);
            fs::remove_file(&path).map_err(io_err(&path))?;
            if self.head.segment == s.first {
                let n = self.segments[0].first;
                self.head = Position {
                    segment: n,
                    offset: HEADER_LEN,
                    seq: n,
                };
            }
        }
        Ok(())
    }

    /// Cut segment `i` at `valid` (a corrupt record found there).
    fn truncate(&mut self, i: usize, valid: u64) -> Result<(), QueueError> {
        let s = &mut self.segments[i];
        let path = segment_path(&self.dir, s.first);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.set_len(valid).map_err(io_err(&path))?;
        self.bytes -= s.len - valid;
        s.len = valid;
        // The records after the cut are gone; count what is left by reading it again.
        s.records = count_records(&path)?;
        Ok(())
    }

    /// Replace the ack file by a rename (atomic: the old or the new one, never half of one).
    fn write_ack(&mut self, fsync: bool) -> Result<(), QueueError> {
        let tmp = self.dir.join("ack.tmp");
        let mut bytes = self.head.seq.to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        if fsync {
            f.sync_data().map_err(io_err(&tmp))?;
        }
        let path = self.dir.join(ACK_FILE);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
        } else {
            self.dirty = true;
        }
        Ok(())
    }
}

/// The first sequence number not acknowledged, from the ack file; 0 (send everything again)
/// when it is missing or corrupt.
fn read_ack(dir: &Path, metrics: &QueueMetrics) -> u64 {
    let path = dir.join(ACK_FILE);
    let Ok(bytes) = fs::read(&path) else {
        return 0;
    };
    if bytes.len() == 12 && crc32fast::hash(&bytes[..8]).to_le_bytes() == bytes[8..] {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[..8]);
        return u64::from_le_bytes(seq);
    }
    metrics.corruptions.inc();
    tracing::error!(
        file = %path.display(),
        "durable queue: the acknowledgement file is corrupt; every queued record will be sent again"
    );
    0
}

/// Read a segment through: its good length and its records, the file truncated after the last
/// good record. `None` for a file with no header (removed by the caller).
fn check_segment(path: &Path, metrics: &QueueMetrics) -> Result<Option<(u64, u64)>, QueueError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut r = match Reader::new(BufReader::new(file)).map_err(io_err(path))? {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(c) => {
            metrics.corruptions.inc();
            tracing::error!(file = %path.display(), "durable queue: {c}; removing the file");
            return Ok(None);
        }
    };
    let mut records = 0;
    let mut buf = Vec::new();
    let corrupt: Option<Corrupt> = loop {
        match r.next(&mut buf).map_err(io_err(path))? {
            Ok(true) => records += 1,
            Ok(false) => break None,
            Err(c) => break Some(c),
        }
    };
    if let Some(c) = corrupt {
        metrics.corruptions.inc();
        tracing::warn!(
            file = %path.display(),
            offset = r.valid,
            records,
            "durable queue: {c} (a crash while writing?); truncated after the last good record"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(r.valid).map_err(io_err(path))?;
    }
    Ok(Some((r.valid, records)))
}

fn count_records(path: &Path) -> Result<u64, QueueError> {
    let file = File::open(path).map_err(io_err(path))?;
    let Ok(Some(mut r)) = Reader::new(BufReader::new(file)).map_err(io_err(path))? else {
        return Ok(0);
    };
    let mut n = 0;
    let mut buf = Vec::new();
    while let Ok(true) = r.next(&mut buf).map_err(io_err(path))? {
        n += 1;
    }
    Ok(n)
}

/// The byte offset of record number `skip` (from 0) in a segment already checked.
fn offset_of(path: &Path, skip: u64) -> Result<u64, QueueError> {
    let file = File::open(path).map_err(io_err(path))?;
    let Ok(Some(mut r)) = Reader::new(BufReader::new(file)).map_err(io_err(path))? else {
        return Ok(HEADER_LEN);
    };
    let mut buf = Vec::new();
    for _ in 0..skip {
        if !matches!(r.next(&mut buf).map_err(io_err(path))?, Ok(true)) {
            break;
        }
    }
    Ok(r.valid)
}

fn create_segment(dir: &Path, first: u64) -> Result<File, QueueError> {
    let path = segment_path(dir, first);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(MAGIC).map_err(io_err(&path))?;
    Ok(f)
}
