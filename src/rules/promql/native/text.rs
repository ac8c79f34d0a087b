//! A histogram as Prometheus prints it (`FloatHistogram.String`), the label value
//! `count_values` gives a histogram.

use std::fmt::Write as _;

use super::Histogram;

impl Histogram {
    /// `{count:N, sum:S, <bucket>:<count>...}` with every populated bucket from the lowest,
    /// each written `[lower,upper)` with Prometheus's inclusivity marks.
    pub fn to_prometheus_string(&self) -> String {
        let mut s = format!("{{count:{}, sum:{}", go_g(self.count), go_g(self.sum));
        let custom = self.uses_custom_buckets();
        let bucket = |s: &mut String, lower: f64, upper: f64, lower_incl: bool, count: f64| {
            let upper_incl = custom || upper > 0.0;
            let _ = write!(
                s,
                ", {}{},{}{}:{}",
                if lower_incl { '[' } else { '(' },
                go_g(lower),
                go_g(upper),
                if upper_incl { ']' } else { ')' },
                go_g(count)
            );
        };
        for (i, c) in self.negative_pairs().into_iter().rev() {
            if c != 0.0 {
                let (lower, upper) = (-self.bound(i), -self.bound(i - 1));
                bucket(&mut s, lower, upper, lower < 0.0, c);
            }
        }
        if self.zero_count != 0.0 {
            let zt = self.zero_threshold;
            let _ = write!(
                s,
                ", [{},{}]:{}",
                go_g(-zt),
                go_g(zt),
                go_g(self.zero_count)
            );
        }
        for (i, c) in self.positive_pairs() {
            if c != 0.0 {
                let (lower, upper) = (self.bound(i - 1), self.bound(i));
                let lower_incl = if custom { i == 0 } else { lower < 0.0 };
                bucket(&mut s, lower, upper, lower_incl, c);
            }
        }
        s.push('}');
        s
    }
}

/// Go's `%g` (and `%v`) of a float64, `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest
/// digits that round-trip, in exponent form when the decimal exponent is below -4 or at
/// least 6 (Go's precision for that decision when the precision is the shortest).
pub(crate) fn go_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` is the shortest round-tripping digits, as Go's shortest formatting.
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::go_g;

    #[test]
    fn go_g_matches_go() {
        for (f, want) in [
            (1.0, "1"),
            (0.5, "0.5"),
            (-0.001, "-0.001"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1e21, "1e+21"),
            (123456789.0, "1.23456789e+08"),
        ] {
            assert_eq!(go_g(f), want, "{f}");
        }
    }
}
