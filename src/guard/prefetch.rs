//! Start a load early: what a request's table lookups use so that their cache misses overlap.

/// Bring the line holding `x` into the cache, without waiting for it: several can be in
/// flight at once, where a lookup waits for its own line alone.
#[inline(always)]
pub fn read<T>(x: &T) {
    read_at(x, 0);
}

/// `read` of the line `offset` bytes from `x`: the neighbouring lines of one allocation,
/// fields that cannot be borrowed without a lock, a header before the value.
#[inline(always)]
#[allow(unsafe_code)]
pub fn read_at<T>(x: &T, offset: isize) {
    let p = std::ptr::from_ref(x).cast::<i8>().wrapping_offset(offset);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and cannot fault,
    // whatever the address (`wrapping_offset` makes one without claiming it is valid). SSE,
    // which the intrinsic needs, is part of x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
