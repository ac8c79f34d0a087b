//! Shared bodies of the fuzz targets: everything cardguard does with untrusted bytes (request
//! bodies) and with the text of its configuration, which must never panic whatever the bytes.
//!
//! Also compiled into the main crate's `tests/fuzz_regressions.rs`, which runs every pinned
//! finding in `testdata/fuzz-regressions/<target>/` through the same body: a finding is fixed
//! when that test passes.
#![allow(dead_code)] // each target uses one body; the regression test uses them all

use cardguard::wire::{snappy, Limits, OwnedSeries, Parsed, Version, Writer};

/// The targets, by name (the directory names under `testdata/fuzz-regressions/`).
pub const TARGETS: [&str; 10] = [
    "snappy_v1",
    "snappy_v2",
    "translate",
    "config_yaml",
    "rule_file",
    "relabel_config",
    "route_selector",
    "web_config",
    "snapshot",
    "queue_segment",
];

/// Run target `name`'s body over `data`.
///
/// # Panics
///
/// On an unknown target name, and wherever the body finds a bug.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "snappy_v1" => run(data, Version::V1),
        "snappy_v2" => run(data, Version::V2),
        "translate" => translate(data),
        "config_yaml" => config_yaml(data),
        "rule_file" => rule_file(data),
        "relabel_config" => relabel_config(data),
        "route_selector" => route_selector(data),
        "web_config" => web_config(data),
        "snapshot" => snapshot(data),
        "queue_segment" => queue_segment(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// 1.0 bodies read lazily (`Parsed::set_lazy_labels`, what the server does when the guard
/// reads labels first) give the series the full pass gave (`full`, validated), with the same
/// labels, and the guard's check of a lazy series the same verdict as the full walk. With runs
/// guessed from the series' ends (`Parsed::set_guessed_runs`) too, when every guess settles.
fn lazy_agrees(buf: &[u8], limits: &Limits, full: &Parsed) {
    let mut guess = Parsed::new();
    guess.set_lazy_labels(true);
    guess.set_guessed_runs(true);
    guess
        .parse(buf, Version::V1, limits)
        .expect("with guesses, a body the full pass accepted");
    if (0..guess.len()).all(|i| guess.settle_guess(buf, i)) {
        assert_eq!((guess.len(), guess.counts()), (full.len(), full.counts()));
        for i in 0..guess.len() {
            let (f, g) = (full.series(buf, i), guess.series(buf, i));
            assert!(
                f.labels().eq(g.labels()),
                "series {i}: other labels, guessed"
            );
            assert_eq!(f.raw(), g.raw());
            if guess.lazy(i) {
                let walked = full.flags_and_check(buf, i).1.map(|_| ());
                assert_eq!(g.check_lazy(i).map(|_| ()), walked, "series {i}, guessed");
            }
        }
    }

    let mut lazy = Parsed::new();
    lazy.set_lazy_labels(true);
    lazy.parse(buf, Version::V1, limits)
        .expect("lazily, a body the full pass accepted");
    assert_eq!((lazy.len(), lazy.counts()), (full.len(), full.counts()));
    for i in 0..lazy.len() {
        let (f, l) = (full.series(buf, i), lazy.series(buf, i));
        assert!(f.labels().eq(l.labels()), "series {i}: other labels");
        assert_eq!(f.raw(), l.raw());
        if lazy.lazy(i) {
            let walked = full.flags_and_check(buf, i).1.map(|_| ());
            assert_eq!(l.check_lazy(i).map(|_| ()), walked, "series {i}");
            if walked.is_ok() {
                assert_eq!(
                    l.check_lazy(i),
                    Ok(f.canonical_labels().is_some()),
                    "series {i}: canonical"
                );
            }
        }
    }
}

/// 2.0 bodies read lazily: what depends on the symbols table is found when a series is
/// checked, not by the pass. A body is accepted, and its series pass their checks
/// (`check_lazy` as the guard does, `Parsed::validate`), exactly when the full pass accepts
/// them all, and then with the labels the full pass read.
fn lazy_v2_agrees(buf: &[u8], limits: &Limits) {
    let mut full = Parsed::new();
    let walked = full
        .parse(buf, Version::V2, limits)
        .and_then(|()| (0..full.len()).try_for_each(|i| full.validate(buf, i)));
    let mut lazy = Parsed::new();
    lazy.set_lazy_labels(true);
    let checked = lazy.parse(buf, Version::V2, limits).and_then(|()| {
        (0..lazy.len()).try_for_each(|i| {
            if lazy.lazy(i) {
                let check = lazy.series(buf, i).check_lazy(i);
                assert_eq!(
                    check.clone().map(|_| ()),
                    lazy.validate(buf, i),
                    "series {i}"
                );
                assert_ne!(
                    check,
                    Ok(true),
                    "series {i}: 2.0 labels are never canonical"
                );
            }
            lazy.validate(buf, i)
        })
    });
    assert_eq!(
        walked.is_ok(),
        checked.is_ok(),
        "full: {walked:?}, lazy: {checked:?}"
    );
    if checked.is_ok() {
        for i in 0..lazy.len() {
            let (f, l) = (full.series(buf, i), lazy.series(buf, i));
            assert!(f.labels().eq(l.labels()), "series {i}: other labels");
            assert_eq!(f.raw(), l.raw());
        }
    }
}

/// Snappy block as it arrives, or (if that fails to decompress) the bytes as the decoded body,
/// so that the fuzzer also explores the protobuf reader directly.
fn decoded<'a>(data: &'a [u8], limits: &Limits, body: &'a mut Vec<u8>) -> &'a [u8] {
    match snappy::decompress(data, limits.max_decoded_bytes, body) {
        Ok(()) => body,
        Err(_) => data,
    }
}

/// `snappy_v1`, `snappy_v2`: decompress, parse, walk, validate and write out again.
pub fn run(data: &[u8], version: Version) {
    // Small caps so the fuzzer reaches the limit paths too.
    let limits = Limits {
        max_decoded_bytes: 1 << 20,
        max_series: 1000,
        max_labels_per_series: 32,
        max_label_name_bytes: 64,
        max_label_value_bytes: 256,
        max_symbols: 4096,
        max_output_bytes: 1 << 20,
    };
    let mut body = Vec::new();
    let buf = decoded(data, &limits, &mut body);
    if version == Version::V2 {
        lazy_v2_agrees(buf, &limits);
    }
    let mut parsed = Parsed::new();
    if parsed.parse(buf, version, &limits).is_err() {
        return;
    }
    let counts = parsed.counts();
    assert_eq!(counts.series as usize, parsed.len());
    let mut samples = 0u64;
    for (i, s) in parsed.iter(buf).enumerate() {
        let _ = s.validate(i);
        let _ = s.metric_name();
        assert_eq!(s.labels().count(), s.label_count());
        for sample in s.samples() {
            samples += 1;
            std::hint::black_box(sample);
        }
        std::hint::black_box((
            s.histograms_raw().count(),
            s.exemplars_raw().count(),
            s.raw().len(),
        ));
    }
    assert_eq!(samples, counts.samples);
    // The pass's flags: the same verdict as the view's check, and sorted names as they are.
    // What the parse settled alone (a 1.0 canonical run, 2.0 names in rank order) must be
    // what the full walk finds.
    for i in 0..parsed.len() {
        let (settled, full) = parsed.flags_and_check(buf, i);
        if settled != 0 {
            assert_eq!(
                full,
                Ok(settled),
                "series {i}: the pass accepted what the walk does not"
            );
        }
        let view_said = parsed.series(buf, i).validate(i);
        assert_eq!(view_said, full.clone().map(|_| ()));
        assert_eq!(parsed.validate(buf, i), view_said);
        let s = parsed.series(buf, i);
        let names: Vec<&[u8]> = s.labels().map(|(n, _)| n).collect();
        let increasing = names.windows(2).all(|w| w[0] < w[1]);
        assert_eq!(s.sorted(), view_said.is_ok().then_some(increasing));
    }
    if version == Version::V1 {
        lazy_agrees(buf, &limits, &parsed);
    }

    let extra = OwnedSeries {
        histograms: Vec::new(),
        labels: vec![("__name__".into(), "cardguard_fuzz".into())],
        samples: vec![(1.0, 0)],
    };
    for out in [Version::V1, Version::V2] {
        let mut w = Writer::new(out);
        w.begin(&parsed, buf);
        for i in 0..parsed.len() {
            match i % 3 {
                0 => w.copy_series(&parsed, buf, i),
                1 => w.relabeled_series(
                    &parsed,
                    buf,
                    i,
                    &[(b"__name__", b"relabeled"), (b"job", b"fuzz")],
                ),
                _ => {}
            }
        }
        w.push_series(&extra);
        w.copy_metadata(&parsed, buf);
        let written = w.finish().expect("no limit set").to_vec();
        // What we write must read back (framing-wise) with generous caps.
        let mut again = Parsed::new();
        again
            .parse(&written, out, &Limits::default())
            .expect("writer output must parse");
        let mut compressed = Vec::new();
        snappy::compress(&written, &mut compressed);
    }
}

/// `translate`: a body read in one version and written in the other (v1 → v2 and v2 → v1)
/// through every writer path, with the output limited. The first byte picks the input
/// version (bit 0) and the limit (bit 1: the decoded size itself, or the default 32 MiB).
///
/// Whatever the body, the output is within the limit or refused with a size over it, and the
/// writer holds at most `8·max(limit, decoded)` bytes (see the property test next to the
/// writer for why). Run it under `-malloc_limit_mb` so that an amplification the checks
/// missed shows as a finding too.
pub fn translate(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (version, out) = match mode & 1 {
        0 => (Version::V1, Version::V2),
        _ => (Version::V2, Version::V1),
    };
    // The default caps, as a server runs with, on fuzzer-sized bodies.
    let limits = Limits {
        max_decoded_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut body = Vec::new();
    let buf = decoded(rest, &limits, &mut body);
    if version == Version::V2 {
        lazy_v2_agrees(buf, &limits);
    }
    let mut parsed = Parsed::new();
    if parsed.parse(buf, version, &limits).is_err() {
        return;
    }
    let limit = match mode & 2 {
        0 => buf.len().max(1),
        _ => Limits::default().max_output_bytes,
    };
    let mut w = Writer::new(out);
    w.set_limit(limit);
    w.begin(&parsed, buf);
    let mut labels: Vec<(&[u8], &[u8])> = Vec::new();
    let mut keep: Vec<bool> = Vec::new();
    for i in 0..parsed.len() {
        let s = parsed.series(buf, i);
        // The same series through another path now and then: relabeled (here to its own
        // labels, reversed) or with every other sample left out.
        match (usize::from(mode >> 2) + i) % 4 {
            0 | 1 => w.copy_series(&parsed, buf, i),
            2 => {
                labels.clear();
                labels.extend(s.labels());
                labels.reverse();
                w.relabeled_series(&parsed, buf, i, &labels);
            }
            _ => {
                keep.clear();
                keep.extend((0..s.sample_count()).map(|k| k % 2 == 0));
                w.filtered_series(&parsed, buf, i, None, &keep);
            }
        }
    }
    w.copy_metadata(&parsed, buf);
    match w.finish() {
        Ok(written) => {
            assert!(written.len() <= limit, "{} > {limit}", written.len());
            let written = written.to_vec();
            Parsed::new()
                .parse(&written, out, &Limits::default())
                .expect("writer output must parse");
        }
        Err(e) => {
            assert_eq!(e.limit, limit);
            assert!(e.size > limit as u64, "{e}");
        }
    }
    let heap = w.heap_bytes();
    assert!(
        heap <= 8 * limit.max(buf.len()) + (64 << 10),
        "writer holds {heap} bytes for {} decoded, limit {limit}",
        buf.len()
    );
}

/// `config_yaml`: the whole config loader (raw YAML, then every validation) from bytes.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cardguard::config::Config::from_yaml(text) {
        Ok(c) => {
            std::hint::black_box(c);
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

/// `rule_file`: a recording-rule file (Prometheus format), parsed and checked (PromQL too).
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cardguard::rules::file::parse("fuzz.yml", text) {
        Ok(groups) => {
            std::hint::black_box(groups);
        }
        Err(errors) => {
            for e in errors {
                std::hint::black_box(e.to_string());
            }
        }
    }
}

/// Labels to match and relabel against; the fuzzer's rules and selectors see a realistic set.
const LABELS: [(&[u8], &[u8]); 4] = [
    (b"__name__", b"http_requests_total"),
    (b"instance", b"127.0.0.1:9090"),
    (b"job", b"api"),
    (b"path", b"/api/v1/write"),
];

/// `relabel_config`: a `relabel_configs:` list in YAML, compiled and applied.
pub fn relabel_config(data: &[u8]) {
    use cardguard::relabel::{self, Rule, RuleSet, RuleSpec};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(Some(specs)) = serde_saphyr::from_str::<Option<Vec<RuleSpec>>>(text) else {
        return;
    };
    let rules: Vec<Rule> = specs.iter().filter_map(|s| Rule::compile(s).ok()).collect();
    let set = RuleSet::new(rules);
    let mut scratch = relabel::Scratch::default();
    let result = relabel::process(&set, LABELS.iter().copied(), &mut scratch);
    std::hint::black_box(result);
}

/// `route_selector`: a route's `match` selector, parsed and matched.
pub fn route_selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = cardguard::route::selector::Selector::parse(text) {
        std::hint::black_box(selector.matches(LABELS.iter().copied()));
    }
}

/// `web_config`: the bytes as a web config file (`--web.config.file`), then as an
/// `Authorization` header (what any sender controls): neither may panic, and accepted
/// credentials split at the first colon.
pub fn web_config(data: &[u8]) {
    use cardguard::ingest::web::{auth, WebConfig};
    if let Ok(text) = std::str::from_utf8(data) {
        match WebConfig::from_yaml(text, std::path::Path::new("/nonexistent")) {
            Ok(c) => {
                std::hint::black_box(c);
            }
            Err(e) => {
                std::hint::black_box(e.iter().map(ToString::to_string).count());
            }
        }
    }
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        if let Some(c) = auth::parse(Some(&v)) {
            assert!(
                !c.user.contains(':'),
                "a user name holds a colon: {:?}",
                c.user
            );
        }
    }
}

/// `snapshot`: the snapshot reader over arbitrary bytes, as a whole file (header, checksums)
/// and, since random bytes rarely pass a checksum, as one section's payload (first byte: which
/// section). Whatever decodes is restored into fresh state, which is then used: a file that
/// passes its checksums must still never make a later request, tick or report panic.
pub fn snapshot(data: &[u8]) {
    use cardguard::storage::{decode_file, decode_section_unframed};
    if let Ok(image) = decode_file(data) {
        restore_and_use(image);
    }
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(image) = decode_section_unframed(kind, payload) {
            restore_and_use(image);
        }
    }
}

fn restore_and_use(mut image: cardguard::storage::Image) {
    let guard = cardguard::guard::GuardConfig::with_default_budget(5, vec!["service".into()]);
    // Made to fit the config, so that the owners get restored rather than refused.
    if let Some(g) = &mut image.guard {
        let snapshot = encode_header_fields(&guard);
        (g.slice_ms, g.slices, g.seed_check) = snapshot;
    }
    let config = cardguard::config::Config {
        guard: Some(guard.clone()),
        ..Default::default()
    };
    let parts = cardguard::storage::Parts::standalone(config);
    if parts.apply(image).is_err() {
        return;
    }
    let now = 1_700_000_000_000;
    let _ = parts.guard.report(&guard);
    parts.guard.tick(&guard, now);
    parts.guard.tick(&guard, now + 3_600_000);
    let _ = parts.guard.overflow.flush(now, 60_000);
    parts.rules.buffer.sweep(now);
    let _ = cardguard::storage::encode_file(&parts.capture());
}

/// What a guard image must say to be restored under `cfg`.
fn encode_header_fields(cfg: &cardguard::guard::GuardConfig) -> (u64, u8, u64) {
    let slices = cfg.window_slices.max(1);
    let slice_ms = (cfg.window.as_millis() as u64 / u64::from(slices)).max(1);
    (
        slice_ms,
        slices,
        cardguard::guard::image::seed_check(cfg.hash_seed),
    )
}

/// `queue_segment`: a durable-queue segment file as a crash or a bad disk may leave it: read
/// through (records up to the first bad one), each record decoded, and one that decodes
/// encodes back to the same bytes.
pub fn queue_segment(data: &[u8]) {
    use cardguard::forward::queue::segment;
    use cardguard::route::durable;
    let scan = segment::scan(data);
    assert!(scan.valid as usize <= data.len());
    for r in &scan.records {
        if let Ok(rec) = durable::decode(r) {
            let mut again = Vec::new();
            durable::encode(&rec, &mut again);
            assert_eq!(&again, r, "a decoded record encodes to other bytes");
        }
    }
}
