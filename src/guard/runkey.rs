//! The key the fresh table knows a 1.0 series read lazily by: a hash of its run of canonical
//! label bytes, made with the CPU's AES rounds where it has them.
//!
//! The series' id is a seeded xxh3 of the same bytes, and has to be: snapshots and Redis
//! hold it, and replicas on other CPUs must agree on it. The fresh table is this process's
//! own, so its key need not be the id, only as unlikely to collide.
//!
//! Each 16-byte block goes into one of two lanes through a keyed AES round, a bijection of
//! the lane for a given block, so two runs of one length that differ in one block leave a
//! lane, and then the whole state, different (but for a chance of 2⁻¹²⁸ where an
//! overlapping last block holds the difference again); the final rounds spread that over
//! both halves before they are folded to 64 bits. The length starts both lanes, so runs of
//! different lengths start apart. The round keys come from the guard's seed, random per
//! process: without them, runs that collide cannot be chosen.

/// How this process makes run keys: its AES round keys, or, on a CPU without AES rounds,
/// the id itself (`raw_id` with the config's seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunKeys {
    /// Two 128-bit round keys, as four words; `None`: no AES rounds on this CPU.
    aes: Option<[u64; 4]>,
}

impl RunKeys {
    /// Round keys from `seed` (none if this CPU has no AES rounds).
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut next = || {
            // splitmix64: four well-spread words from one seed.
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let words = [next(), next(), next(), next()];
        RunKeys {
            aes: has_aes().then_some(words),
        }
    }

    /// Whether keys are ids (no AES rounds on this CPU).
    #[cfg(test)]
    pub fn are_ids(&self) -> bool {
        self.aes.is_none()
    }

    /// The key of `run` (`id_seed`, the id's seed, is used only where keys are ids).
    #[inline]
    pub fn key(&self, id_seed: u64, run: &[u8]) -> u64 {
        match self.aes {
            #[cfg(target_arch = "x86_64")]
            Some(k) => aes::key(k, run),
            _ => super::identity::raw_id(id_seed, run),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_aes() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("sse4.1")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_aes() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod aes {
    use std::arch::x86_64::{
        __m128i, _mm_aesenc_si128, _mm_cvtsi128_si64, _mm_extract_epi64, _mm_loadu_si128,
        _mm_set1_epi64x, _mm_set_epi64x, _mm_xor_si128,
    };

    #[inline]
    pub(super) fn key(k: [u64; 4], run: &[u8]) -> u64 {
        // SAFETY: `RunKeys` holds round keys only when `has_aes` found AES and SSE4.1 on
        // this CPU, the features `hash` is compiled for.
        unsafe { hash(k, run) }
    }

    /// One lane's step: the 16 bytes at `p` mixed in, then a keyed round.
    ///
    /// # Safety
    ///
    /// `p` starts 16 readable bytes; the CPU has AES.
    #[inline(always)]
    unsafe fn absorb(lane: __m128i, p: *const u8, k: __m128i) -> __m128i {
        _mm_aesenc_si128(_mm_xor_si128(lane, _mm_loadu_si128(p.cast::<__m128i>())), k)
    }

    /// # Safety
    ///
    /// The CPU has AES and SSE4.1.
    #[target_feature(enable = "aes,sse4.1")]
    unsafe fn hash(k: [u64; 4], run: &[u8]) -> u64 {
        let k0 = _mm_set_epi64x(k[0] as i64, k[1] as i64);
        let k1 = _mm_set_epi64x(k[2] as i64, k[3] as i64);
        let n = run.len();
        let len = _mm_set1_epi64x(n as i64);
        let mut a = _mm_xor_si128(k0, len);
        let mut b = _mm_xor_si128(k1, len);
        let p = run.as_ptr();
        if n >= 16 {
            // Two blocks a step, one per lane; then the last block, ending at `n` (it may
            // overlap the one before: the same overlap for every run of this length), and
            // the one before it when more than 16 bytes are left. Every load lies in `run`.
            let mut i = 0;
            while i + 32 <= n {
                a = absorb(a, p.add(i), k0);
                b = absorb(b, p.add(i + 16), k1);
                i += 32;
            }
            if i < n {
                a = absorb(a, p.add(n - 16), k1);
                if n - i > 16 {
                    b = absorb(b, p.add(i), k0);
                }
            }
        } else {
            let mut block = [0u8; 16];
            block[..n].copy_from_slice(run);
            a = absorb(a, block.as_ptr(), k1);
        }
        let x = _mm_aesenc_si128(_mm_aesenc_si128(a, b), k0);
        let x = _mm_aesenc_si128(x, k1);
        (_mm_cvtsi128_si64(x) ^ _mm_extract_epi64::<1>(x)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn without_aes_keys_are_ids() {
        let keys = RunKeys { aes: None };
        let run = b"\x0a\x0c\x0a\x08__name__\x12\x00";
        assert_eq!(keys.key(7, run), super::super::identity::raw_id(7, run));
    }

    /// Every run of up to 300 bytes that differs from a base run in one bit, or only in
    /// length, has a key of its own, and another seed changes every key.
    #[test]
    fn near_runs_have_different_keys() {
        let keys = RunKeys::new(42);
        let other = RunKeys::new(43);
        let base: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut seen = HashSet::new();
        for n in 0..=base.len() {
            let run = &base[..n];
            assert!(seen.insert(keys.key(0, run)), "length {n}");
            if keys.aes.is_some() {
                assert_ne!(keys.key(0, run), other.key(0, run), "seed, length {n}");
            }
            for at in 0..n {
                for bit in [0x01u8, 0x80] {
                    let mut v = run.to_vec();
                    v[at] ^= bit;
                    assert!(seen.insert(keys.key(0, &v)), "length {n}, byte {at}");
                }
            }
        }
    }

    proptest! {
        /// A key depends on the bytes alone, not on where they lie.
        #[test]
        fn keys_depend_on_the_bytes_only(
            run in proptest::collection::vec(any::<u8>(), 0..400),
            pad in 0usize..16,
        ) {
            let keys = RunKeys::new(9);
            let mut moved = vec![0xAA; pad];
            moved.extend_from_slice(&run);
            prop_assert_eq!(keys.key(0, &run), keys.key(0, &moved[pad..]));
        }
    }
}
