//! Admission-table benches: `guard::table::SeriesTable` against `std::collections::HashMap`
//! (with a pass-through hasher, since ids are already xxh3 hashes) in the same run, STYLE.md
//! habit 10, plus a memory report printed to stdout.
//!
//! - `table/touch_existing`: 1M ids admitted, then touch existing ones in a shuffled order,
//!   the per-sample path of an admitted series. `table/std_hashmap_touch_existing` is the
//!   same on the baseline.
//! - `table/insert_new`: 1M new ids into an empty table, growth included; per-op time is the
//!   reported time / 1M (criterion also prints elements/s).
//! - `table/miss`: lookups of absent ids in a 1M table, the path of a refused series;
//!   `table/std_hashmap_miss` is the same on the baseline.
//!
//! Run: `cargo bench --bench table -- --warm-up-time 1 --measurement-time 3`

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;

use cardguard::guard::table::{SeriesTable, Touch};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 1_000_000;

/// splitmix64: distinct, well-mixed ids, as xxh3 would produce.
fn ids(seed: u64, n: usize) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// Fisher–Yates with the ids themselves as the random source, so the touch order is
/// unrelated to the insert order.
fn shuffled(ids: &[u64]) -> Vec<u64> {
    let mut out = ids.to_vec();
    let rand = self::ids(7, out.len());
    for i in (1..out.len()).rev() {
        out.swap(i, (rand[i] % (i as u64 + 1)) as usize);
    }
    out
}

/// Passes a u64 key through: the ids are hashes already, hashing them again is wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap = HashMap<u64, u8, BuildHasherDefault<IdHasher>>;

fn table_of(ids: &[u64]) -> SeriesTable {
    let mut t = SeriesTable::new();
    for &id in ids {
        t.insert(id, 0);
    }
    t
}

/// Resident pages of this process, from /proc/self/statm (Linux; 0 elsewhere).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Bytes per series, from `memory_bytes()` and from the process RSS growth while building
/// the table (growth included, so the transient old arrays are freed by then). Builds each
/// table once, so it stays quick in `cargo test --benches`.
fn memory_report(_: &mut Criterion) {
    let all = ids(1, N);
    for n in [100_000, N] {
        let before = rss_bytes();
        let t = table_of(&all[..n]);
        let rss = rss_bytes().saturating_sub(before);
        println!(
            "table memory: {n} series, {:.1} bytes/series (heap), {:.1} bytes/series (RSS delta)",
            t.memory_bytes() as f64 / n as f64,
            rss as f64 / n as f64,
        );
        drop(t);
    }
    let before = rss_bytes();
    let t = SeriesTable::with_capacity(N);
    let t = all.iter().fold(t, |mut t, &id| {
        t.insert(id, 0);
        t
    });
    let rss = rss_bytes().saturating_sub(before);
    println!(
        "table memory: {N} series presized, {:.1} bytes/series (heap), {:.1} bytes/series (RSS delta)",
        t.memory_bytes() as f64 / N as f64,
        rss as f64 / N as f64,
    );
    drop(t);
    let before = rss_bytes();
    let m: IdMap = all.iter().map(|&id| (id, 0)).collect();
    let rss = rss_bytes().saturating_sub(before);
    println!(
        "std HashMap<u64, u8> memory: {N} series, {:.1} bytes/series (RSS delta)",
        rss as f64 / N as f64,
    );
    black_box(m);
}

fn bench_table(c: &mut Criterion) {
    let present = ids(1, N);
    let absent = ids(2, N);
    let order = shuffled(&present);
    let mut g = c.benchmark_group("table");

    g.throughput(Throughput::Elements(1));
    let mut t = table_of(&present);
    let mut at = 0;
    g.bench_function("touch_existing", |b| {
        b.iter(|| {
            let r = t.touch(order[at], 1);
            at = if at + 1 == order.len() { 0 } else { at + 1 };
            debug_assert_eq!(r, Touch::Updated);
            black_box(r)
        })
    });

    let mut m: IdMap = present.iter().map(|&id| (id, 0)).collect();
    let mut at = 0;
    g.bench_function("std_hashmap_touch_existing", |b| {
        b.iter(|| {
            let r = match m.get_mut(&order[at]) {
                Some(tag) => {
                    *tag = 1;
                    true
                }
                None => false,
            };
            at = if at + 1 == order.len() { 0 } else { at + 1 };
            black_box(r)
        })
    });

    let mut at = 0;
    g.bench_function("miss", |b| {
        b.iter(|| {
            let r = t.contains(absent[at]);
            at = if at + 1 == absent.len() { 0 } else { at + 1 };
            black_box(r)
        })
    });
    drop(t);

    let mut at = 0;
    g.bench_function("std_hashmap_miss", |b| {
        b.iter(|| {
            let r = m.contains_key(&absent[at]);
            at = if at + 1 == absent.len() { 0 } else { at + 1 };
            black_box(r)
        })
    });
    drop(m);

    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("insert_new", |b| {
        b.iter_with_large_drop(|| table_of(&present))
    });
    g.bench_function("insert_new_presized", |b| {
        b.iter_with_large_drop(|| {
            let mut t = SeriesTable::with_capacity(N);
            for &id in &present {
                t.insert(id, 0);
            }
            t
        })
    });
    g.finish();
}

criterion_group!(benches, memory_report, bench_table);
criterion_main!(benches);
