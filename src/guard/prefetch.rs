//! Start a load early: what a request's table lookups use so that their cache misses overlap.

/// Bring the line holding `x` into the cache, without waiting for it: several can be in
/// flight at once, where a lookup waits for its own line alone.
#[inline(always)]
#[allow(unsafe_code)]
pub fn read<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program, cannot fault, and
    // `x` is a live reference anyway. SSE, which the intrinsic needs, is part of x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(x).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
