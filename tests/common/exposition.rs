//! Reading the Prometheus text exposition format (cardguard's and Prometheus's `/metrics`):
//! sums over a metric name, and every sample of a name with its unescaped labels.

use super::Labels;

pub fn parse_prom_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad float {s:?}: {e}")),
    }
}

/// Sum of all samples of `name` in a Prometheus text exposition (None if absent).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(name) {
            continue;
        }
        let rest = &line[name.len()..];
        let value_part = if let Some(r) = rest.strip_prefix('{') {
            match r.rfind('}') {
                Some(i) => &r[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        if let Some(v) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| parse_prom_float(v).ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Every sample of metric `name` in a text exposition: (labels, value). Handles escaped
/// label values; `__name__` is not included in the labels.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let mut l = Labels::new();
        let value_part = if let Some(mut r) = rest.strip_prefix('{') {
            // name="value",... }
            loop {
                r = r.trim_start_matches([',', ' ']);
                if let Some(after) = r.strip_prefix('}') {
                    break after;
                }
                let Some(eq) = r.find('=') else { break "" };
                let key = r[..eq].trim().to_string();
                let Some(v) = r[eq + 1..].strip_prefix('"') else {
                    break "";
                };
                let mut val = String::new();
                let mut chars = v.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => val.push('\n'),
                            Some((_, c2)) => val.push(c2),
                            None => break,
                        },
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                let Some(end) = end else { break "" };
                l.insert(key, val);
                r = &v[end..];
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // a longer metric name with this prefix
        };
        if let Some(v) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| parse_prom_float(v).ok())
        {
            out.push((l, v));
        }
    }
    out
}

/// The value of the sample of `name` whose labels include all of `want` (the first match).
pub fn metric_value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    metric_samples(text, name)
        .into_iter()
        .find(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
}
