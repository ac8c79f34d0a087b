//! cardguard's own series through the durable queue (`forward::queue`): what a record holds
//! (one rule group's results, or one tenant's overflow flush), and the sender that routes each
//! record with `own::send` and acknowledges it in the queue only once every upstream that got
//! a part acknowledged it. Consecutive records of one kind and tenant go out in one request.
//!
//! Records are routed when sent, not when queued, so a reload that changes the routes applies
//! to what is still queued.

use std::sync::Arc;
use std::time::Duration;

use super::{own, Downsampler};
use crate::forward::metrics::ForwardMetrics;
use crate::forward::queue::{DiskQueue, Record};
use crate::forward::Forwarder;
use crate::rules::metrics::RuleMetrics;
use crate::rules::InForce;
use crate::wire::OwnedSeries;

/// Series per outgoing request, as for the in-memory rule output.
const BATCH_SERIES: usize = 2000;
const PEEK_RECORDS: usize = 256;
const PEEK_BYTES: usize = 16 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often written records are fsynced.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The format of a record's payload; bumped on any change. Version 2 adds each series' native
/// histograms after its samples; a record with none is still written as version 1, so that
/// every record has one encoding (what the fuzz target checks) and older records still read.
const VERSION: u8 = 1;
const VERSION_HISTOGRAMS: u8 = 2;

/// Whose series a record carries, for the metrics they are counted in once sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Recorded rule results (`cardguard_rule_output_*`).
    Rules = 1,
    /// The guard's overflow aggregates (`cardguard_forwarded_*`).
    Overflow = 2,
}

/// One queued unit of cardguard's own output.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnRecord {
    pub kind: Kind,
    pub tenant: Option<String>,
    pub series: Vec<OwnedSeries>,
}

/// Why a payload is not a record (a bug or a newer format: the segment checksum held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record format version {0} unknown")]
    Version(u8),
    #[error("record kind {0} unknown")]
    Kind(u8),
    #[error("record tenant flag not 0 or 1")]
    Tenant,
    #[error("record cut short")]
    Short,
    #[error("record count larger than its bytes")]
    Count,
    #[error("record text not UTF-8")]
    Utf8,
    #[error("bytes after the record")]
    Trailing,
    #[error("a version 2 record without histograms (written as version 1)")]
    NotCanonical,
}

/// `[version][kind][tenant?][series...]`, little-endian, lengths as u32.
pub fn encode(r: &OwnRecord, out: &mut Vec<u8>) {
    fn text(s: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let histograms = r.series.iter().any(|s| !s.histograms.is_empty());
    out.push(if histograms {
        VERSION_HISTOGRAMS
    } else {
        VERSION
    });
    out.push(r.kind as u8);
    match &r.tenant {
        Some(t) => {
            out.push(1);
            text(t, out);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(r.series.len() as u32).to_le_bytes());
    for s in &r.series {
        out.extend_from_slice(&(s.labels.len() as u32).to_le_bytes());
        for (n, v) in &s.labels {
            text(n, out);
            text(v, out);
        }
        out.extend_from_slice(&(s.samples.len() as u32).to_le_bytes());
        for &(v, t) in &s.samples {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
            out.extend_from_slice(&t.to_le_bytes());
        }
        if histograms {
            out.extend_from_slice(&(s.histograms.len() as u32).to_le_bytes());
            for h in &s.histograms {
                out.extend_from_slice(&(h.len() as u32).to_le_bytes());
                out.extend_from_slice(h);
            }
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Short);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items of at least `min` bytes each, checked against what is left before
    /// anything is allocated for them.
    fn count(&mut self, min: usize) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        if n.saturating_mul(min) > self.0.len() {
            return Err(DecodeError::Count);
        }
        Ok(n)
    }
    fn text(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

pub fn decode(bytes: &[u8]) -> Result<OwnRecord, DecodeError> {
    let mut c = Cursor(bytes);
    let v = c.u8()?;
    if v != VERSION && v != VERSION_HISTOGRAMS {
        return Err(DecodeError::Version(v));
    }
    let kind = match c.u8()? {
        1 => Kind::Rules,
        2 => Kind::Overflow,
        k => return Err(DecodeError::Kind(k)),
    };
    let tenant = match c.u8()? {
        0 => None,
        1 => Some(c.text()?),
        _ => return Err(DecodeError::Tenant),
    };
    // A series is at least its two counts; a label two lengths; a sample 16 bytes.
    let n = c.count(8)?;
    let mut series = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = c.count(8)?;
        let mut labels = Vec::with_capacity(nl);
        for _ in 0..nl {
            labels.push((c.text()?, c.text()?));
        }
        let ns = c.count(16)?;
        let mut samples = Vec::with_capacity(ns);
        for _ in 0..ns {
            let v = f64::from_bits(c.u64()?);
            samples.push((v, c.u64()? as i64));
        }
        let mut histograms = Vec::new();
        if v == VERSION_HISTOGRAMS {
            let nh = c.count(4)?;
            histograms.reserve(nh);
            for _ in 0..nh {
                let len = c.u32()?;
                histograms.push(c.take(len)?.to_vec());
            }
        }
        series.push(OwnedSeries {
            labels,
            samples,
            histograms,
        });
    }
    if !c.0.is_empty() {
        return Err(DecodeError::Trailing);
    }
    if v == VERSION_HISTOGRAMS && series.iter().all(|s| s.histograms.is_empty()) {
        return Err(DecodeError::NotCanonical);
    }
    Ok(OwnRecord {
        kind,
        tenant,
        series,
    })
}

/// Append a record to the queue; `Err` when it could not be written (it is lost, counted by
/// the queue).
pub fn queue(q: &DiskQueue, r: &OwnRecord) -> Result<(), crate::forward::queue::QueueError> {
    let mut buf = Vec::new();
    encode(r, &mut buf);
    q.push(&buf)
}

/// Where the sender reports what it delivered or gave up on.
#[derive(Clone)]
pub struct SenderMetrics {
    pub rules: RuleMetrics,
    pub forward: ForwardMetrics,
}

fn samples(series: &[OwnedSeries]) -> u64 {
    series.iter().map(|s| s.samples.len() as u64).sum()
}

/// Send the queued records until the process ends: in order, each acknowledged in the queue
/// once delivered (or refused for good), retried with backoff while the upstream is down.
/// Meanwhile the queue is fsynced every second, outage or not.
pub async fn run<C: InForce>(
    queue: Arc<DiskQueue>,
    forwarder: Forwarder,
    config: impl Fn() -> Arc<C>,
    metrics: SenderMetrics,
    downsampler: Arc<Downsampler>,
) {
    let syncing = async {
        let mut every = tokio::time::interval(SYNC_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            sync(&queue).await;
        }
    };
    tokio::join!(
        send_all(&queue, forwarder, config, metrics, downsampler),
        syncing
    );
}

async fn send_all<C: InForce>(
    queue: &DiskQueue,
    forwarder: Forwarder,
    config: impl Fn() -> Arc<C>,
    metrics: SenderMetrics,
    downsampler: Arc<Downsampler>,
) {
    let mut scratch = own::Scratch::default();
    loop {
        let batch = match queue.peek(PEEK_RECORDS, PEEK_BYTES) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading the durable queue: {e}");
                tokio::time::sleep(SYNC_EVERY).await;
                continue;
            }
        };
        if batch.is_empty() {
            queue.appended().await;
            continue;
        }
        for (group, next) in groups(batch) {
            if let Some(r) = group {
                deliver(
                    &forwarder,
                    &config,
                    &metrics,
                    &downsampler,
                    &r,
                    &mut scratch,
                )
                .await;
            }
            if let Err(e) = queue.ack(next) {
                tracing::error!("acknowledging in the durable queue: {e}");
            }
        }
    }
}

async fn sync(queue: &Arc<DiskQueue>) {
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || q.sync()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("syncing the durable queue: {e}"),
        Err(e) => tracing::error!("syncing the durable queue: {e}"),
    }
}

/// Consecutive records of one kind and tenant merged up to `BATCH_SERIES` series, each with
/// the position after its last record. A record that does not decode is `None` (logged; its
/// position is still acknowledged so it does not block the queue).
fn groups(batch: Vec<Record>) -> Vec<(Option<OwnRecord>, crate::forward::queue::Position)> {
    let mut out: Vec<(Option<OwnRecord>, _)> = Vec::new();
    for rec in batch {
        let r = match decode(&rec.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("durable queue: a record does not decode ({e}); skipped");
                out.push((None, rec.next));
                continue;
            }
        };
        if let Some((Some(last), next)) = out.last_mut() {
            if last.kind == r.kind
                && last.tenant == r.tenant
                && last.series.len() + r.series.len() <= BATCH_SERIES
            {
                last.series.extend(r.series);
                *next = rec.next;
                continue;
            }
        }
        out.push((Some(r), rec.next));
    }
    out
}

/// Send one group until it is delivered or refused for good.
async fn deliver<C: InForce>(
    forwarder: &Forwarder,
    config: &impl Fn() -> Arc<C>,
    metrics: &SenderMetrics,
    downsampler: &Downsampler,
    r: &OwnRecord,
    scratch: &mut own::Scratch,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let cfg = config();
        let Some(routing) = cfg.routing() else {
            if r.kind == Kind::Rules {
                metrics
                    .rules
                    .output_dropped
                    .with_label_values(&["no_upstream"])
                    .inc_by(samples(&r.series));
            }
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let sent = own::send(
            forwarder,
            routing,
            downsampler,
            &r.series,
            r.tenant.as_deref(),
            now,
            scratch,
        )
        .await;
        match sent {
            Ok(delivered) => {
                match r.kind {
                    Kind::Rules => metrics.rules.output_sent.inc_by(samples(&r.series)),
                    Kind::Overflow => metrics.forward.forwarded.add(&delivered.forwarded),
                }
                return;
            }
            Err(e) if !e.class().is_retryable() => {
                tracing::warn!("cardguard's own samples refused by the upstream, dropped: {e}");
                if r.kind == Kind::Rules {
                    metrics
                        .rules
                        .output_dropped
                        .with_label_values(&["rejected"])
                        .inc_by(samples(&r.series));
                }
                return;
            }
            Err(e) => {
                tracing::debug!("queued samples not delivered, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = OwnRecord> {
        let series = (
            proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
            proptest::collection::vec((any::<f64>(), any::<i64>()), 0..4),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..2),
        )
            .prop_map(|(labels, samples, histograms)| OwnedSeries {
                labels,
                samples,
                histograms,
            });
        (
            prop_oneof![Just(Kind::Rules), Just(Kind::Overflow)],
            proptest::option::of(".{0,8}"),
            proptest::collection::vec(series, 0..5),
        )
            .prop_map(|(kind, tenant, series)| OwnRecord {
                kind,
                tenant,
                series,
            })
    }

    type Bits = Vec<(Vec<(String, String)>, Vec<(u64, i64)>)>;

    /// Bitwise, so that NaN (the stale marker among them) compares equal to itself.
    fn bits(r: &OwnRecord) -> Bits {
        r.series
            .iter()
            .map(|s| {
                (
                    s.labels.clone(),
                    s.samples.iter().map(|&(v, t)| (v.to_bits(), t)).collect(),
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn records_round_trip(r in record()) {
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            let back = decode(&buf).unwrap();
            prop_assert_eq!(back.kind, r.kind);
            prop_assert_eq!(&back.tenant, &r.tenant);
            prop_assert_eq!(bits(&back), bits(&r));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }
    }

    /// The fuzz seeds are written by hand (fuzz/seeds/queue_segment): they must be what the
    /// queue writes, or the fuzzer starts from nowhere.
    #[test]
    fn the_fuzz_seed_segment_reads_and_decodes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/seeds/queue_segment/two-records.seg"
        );
        let scan = crate::forward::queue::segment::scan(&std::fs::read(path).unwrap());
        assert_eq!(scan.corrupt, None);
        let kinds: Vec<_> = scan
            .records
            .iter()
            .map(|r| decode(r).unwrap().kind)
            .collect();
        assert_eq!(kinds, [Kind::Rules, Kind::Overflow]);
        let r = decode(&scan.records[1]).unwrap();
        assert_eq!(r.tenant.as_deref(), Some("team-a"));
        let mut again = Vec::new();
        encode(&r, &mut again);
        assert_eq!(again, scan.records[1]);
    }

    fn one(name: &str, v: f64) -> OwnedSeries {
        OwnedSeries {
            labels: vec![("__name__".into(), name.into())],
            samples: vec![(v, 1_700_000_000_000)],
            histograms: Vec::new(),
        }
    }

    /// Held while the upstream answers 503, delivered in order once it takes them, and only
    /// then gone from the queue; rule samples counted as sent.
    #[tokio::test]
    async fn the_sender_acknowledges_only_what_the_upstream_took() {
        use crate::forward::queue::{QueueMetrics, QueueOptions};
        use crate::sink::{Answer, Sink, SinkOptions};
        let sink = Sink::start(SinkOptions::recording()).await.unwrap();
        sink.answer(Answer::status(503));
        let dir = tempfile::tempdir().unwrap();
        let reg = prometheus::Registry::new();
        let q = Arc::new(
            DiskQueue::open(
                dir.path(),
                QueueOptions::new(1 << 20),
                QueueMetrics::register(&reg),
            )
            .unwrap(),
        );
        for (kind, tenant, name) in [
            (Kind::Rules, None, "a"),
            (Kind::Overflow, Some("t"), "b"),
            (Kind::Rules, None, "c"),
        ] {
            let r = OwnRecord {
                kind,
                tenant: tenant.map(Into::into),
                series: vec![one(name, 1.0)],
            };
            queue(&q, &r).unwrap();
        }
        let up = crate::forward::UpstreamConfig {
            name: "default".into(),
            url: sink.write_url().parse().unwrap(),
            version: crate::wire::Version::V1,
            timeout: Duration::from_secs(2),
            headers: Vec::new(),
            tenant_header: None,
            client: None,
        };
        let config = Arc::new(crate::config::Config {
            routing: Some(Arc::new(super::super::Routing::single(up))),
            ..Default::default()
        });
        let metrics = SenderMetrics {
            rules: RuleMetrics::register(&reg),
            forward: ForwardMetrics::register(&reg),
        };
        let task = tokio::spawn(run(
            q.clone(),
            Forwarder::new(metrics.forward.clone()),
            move || config.clone(),
            metrics.clone(),
            Arc::new(Downsampler::default()),
        ));
        while sink.requests() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(q.len(), 3, "acknowledged while the upstream answered 503");
        let refused = sink.requests() as usize;
        sink.answer(Answer::status(204));
        for _ in 0..200 {
            if q.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        assert!(q.is_empty());
        assert_eq!(metrics.rules.output_sent.get(), 2);
        // By request, the names it carried; a request racing the switch to 204 may repeat one.
        let mut names: Vec<String> = Vec::new();
        let (mut decoded, mut parsed) = (Vec::new(), crate::wire::Parsed::new());
        for r in &sink.received()[refused.saturating_sub(1)..] {
            let limits = crate::wire::Limits::default();
            crate::wire::snappy::decompress(&r.body, 1 << 20, &mut decoded).unwrap();
            parsed
                .parse(&decoded, crate::wire::Version::V1, &limits)
                .unwrap();
            for s in parsed.iter(&decoded) {
                for (n, v) in s.labels() {
                    if n == b"__name__" {
                        names.push(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
        names.dedup();
        assert!(
            names.ends_with(&["a".into(), "b".into(), "c".into()]),
            "{names:?}"
        );
    }

    #[test]
    fn a_huge_count_fails_before_allocating() {
        let mut b = vec![VERSION, 1, 0];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&b), Err(DecodeError::Count));
    }
}
