//! The snapshot's primitive encoding: LEB128 varints, zigzag for signed values, fixed-width
//! little-endian floats, length-prefixed bytes. Hand-written because the one structure that
//! dominates the size (sorted 56-bit series keys) wants delta coding, which no serde format
//! does; the rest is a handful of calls.
//!
//! The decoder reads untrusted bytes: every length is checked against what is left before
//! anything is allocated, so a corrupt length costs an error, never a huge allocation.

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("ends early")]
    Truncated,
    #[error("a varint longer than 64 bits")]
    Varint,
    #[error("a length of {0} past the end of the section")]
    Length(u64),
    #[error("an invalid value: {0}")]
    Invalid(&'static str),
    #[error("{0} bytes left over at the end of the section")]
    Trailing(usize),
}

/// Appends values to a buffer.
#[derive(Debug, Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.usize(v.len());
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn labels(&mut self, labels: &[(String, String)]) {
        self.usize(labels.len());
        for (n, v) in labels {
            self.str(n);
            self.str(v);
        }
    }
}

/// Reads values back, failing on anything malformed.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf }
    }

    /// Fails unless everything was read: a section must be exactly what its writer wrote.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7F);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Varint);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint)
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("a flag other than 0 or 1")),
        }
    }

    /// A count of items that each take at least `min_bytes` bytes: bounded by what is left,
    /// so that `Vec::with_capacity(count)` is safe.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n.saturating_mul(min_bytes.max(1) as u64) > self.buf.len() as u64 {
            return Err(DecodeError::Length(n));
        }
        Ok(n as usize)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count(1)?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DecodeError::Invalid("a string that is not UTF-8"))
    }

    pub fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(DecodeError::Invalid("an option tag other than 0 or 1")),
        }
    }

    pub fn labels(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let n = self.count(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push((self.string()?, self.string()?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn primitives_round_trip(a in any::<u64>(), b in any::<i64>(), c in any::<f64>(), s in ".*", t in any::<bool>()) {
            let mut e = Enc::default();
            e.u64(a);
            e.i64(b);
            e.f64(c);
            e.str(&s);
            e.bool(t);
            let mut d = Dec::new(&e.buf);
            prop_assert_eq!(d.u64().unwrap(), a);
            prop_assert_eq!(d.i64().unwrap(), b);
            prop_assert_eq!(d.f64().unwrap().to_bits(), c.to_bits());
            prop_assert_eq!(d.string().unwrap(), s);
            prop_assert_eq!(d.bool().unwrap(), t);
            d.finish().unwrap();
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Dec::new(&bytes);
            let _ = d.labels();
            let mut d = Dec::new(&bytes);
            let _ = (d.u64(), d.i64(), d.f64(), d.opt_string());
        }
    }

    #[test]
    fn an_overlong_varint_is_refused() {
        let mut d = Dec::new(&[0xFF; 11]);
        assert_eq!(d.u64(), Err(DecodeError::Varint));
        let mut d = Dec::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]);
        assert_eq!(d.u64(), Err(DecodeError::Varint));
    }

    #[test]
    fn a_length_past_the_end_allocates_nothing() {
        let mut e = Enc::default();
        e.u64(u64::MAX / 2);
        assert!(matches!(
            Dec::new(&e.buf).bytes(),
            Err(DecodeError::Length(_))
        ));
    }
}
