//! Remote write 1.0 hand-encoded and decoded, independently of `cardguard::wire` so that a bug
//! there cannot hide itself: series are raw bytes, so the hostile-input tests can send invalid
//! UTF-8, missing names and oversized varints.

pub const STANDARD_HEADERS: [(&str, &str); 4] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ("User-Agent", "cardguard-tests/0"),
];

/// One series as raw bytes (so invalid UTF-8 can be encoded).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(Vec<u8>, Vec<u8>)>,
    pub samples: Vec<(f64, i64)>,
}

impl Series {
    /// `name{labels...}` with one sample; labels are sorted with `__name__`.
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64, ts_ms: i64) -> Series {
        let mut l: Vec<(Vec<u8>, Vec<u8>)> = std::iter::once(("__name__", name))
            .chain(labels.iter().copied())
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        l.sort();
        Series {
            labels: l,
            samples: vec![(value, ts_ms)],
        }
    }
    pub fn label(&self, name: &str) -> Option<&[u8]> {
        self.labels
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, ((field as u64) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encode a `prometheus.WriteRequest` (uncompressed).
pub fn encode(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in series {
        let mut ts = Vec::new();
        for (k, v) in &s.labels {
            let mut l = Vec::new();
            put_len(&mut l, 1, k);
            put_len(&mut l, 2, v);
            put_len(&mut ts, 1, &l);
        }
        for (v, t) in &s.samples {
            let mut smp = Vec::new();
            smp.push(0x09); // field 1, fixed64
            smp.extend_from_slice(&v.to_bits().to_le_bytes());
            smp.push(0x10); // field 2, varint
            put_varint(&mut smp, *t as u64);
            put_len(&mut ts, 2, &smp);
        }
        put_len(&mut out, 1, &ts);
    }
    out
}

pub fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("snappy compress")
}

pub fn unsnappy(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    cardguard::wire::snappy::decompress(body, 64 << 20, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encode + snappy.
pub fn body(series: &[Series]) -> Vec<u8> {
    snappy(&encode(series))
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// One protobuf field: number, wire type, payload bytes, varint value.
type Field<'a> = (u64, u8, &'a [u8], u64);

/// Iterate (field, wire type, payload) over one message.
fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = get_varint(b, &mut pos)?;
        let (field, wt) = (key >> 3, (key & 7) as u8);
        match wt {
            0 => {
                let v = get_varint(b, &mut pos)?;
                out.push((field, wt, &b[0..0], v));
            }
            1 => {
                let s = b.get(pos..pos + 8).ok_or("truncated fixed64")?;
                pos += 8;
                out.push((field, wt, s, 0));
            }
            2 => {
                let n = get_varint(b, &mut pos)? as usize;
                let s = b
                    .get(pos..pos.checked_add(n).ok_or("len overflow")?)
                    .ok_or("truncated bytes")?;
                pos += n;
                out.push((field, wt, s, 0));
            }
            5 => {
                let s = b.get(pos..pos + 4).ok_or("truncated fixed32")?;
                pos += 4;
                out.push((field, wt, s, 0));
            }
            _ => return Err(format!("bad wire type {wt} at {pos}")),
        }
    }
    Ok(out)
}

/// Decode the series (labels + float samples) of an uncompressed WriteRequest; exemplars,
/// histograms and metadata are skipped. Also returns the number of metadata entries.
pub fn decode(raw: &[u8]) -> Result<(Vec<Series>, usize), String> {
    let mut series = Vec::new();
    let mut metadata = 0;
    for (f, wt, ts, _) in fields(raw)? {
        if f == 3 && wt == 2 {
            metadata += 1;
        }
        if f != 1 || wt != 2 {
            continue;
        }
        let mut s = Series {
            labels: Vec::new(),
            samples: Vec::new(),
        };
        for (f, wt, p, _) in fields(ts)? {
            match (f, wt) {
                (1, 2) => {
                    let (mut k, mut v) = (Vec::new(), Vec::new());
                    for (f, _, p, _) in fields(p)? {
                        match f {
                            1 => k = p.to_vec(),
                            2 => v = p.to_vec(),
                            _ => {}
                        }
                    }
                    s.labels.push((k, v));
                }
                (2, 2) => {
                    let (mut v, mut t) = (0f64, 0i64);
                    for (f, wt, p, n) in fields(p)? {
                        match (f, wt) {
                            (1, 1) => v = f64::from_bits(u64::from_le_bytes(p.try_into().unwrap())),
                            (2, 0) => t = n as i64,
                            _ => {}
                        }
                    }
                    s.samples.push((v, t));
                }
                _ => {}
            }
        }
        series.push(s);
    }
    Ok((series, metadata))
}
