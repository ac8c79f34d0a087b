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
pub fn read_at<T>(x: &T, offset: isize) {
    line(std::ptr::from_ref(x).cast::<i8>().wrapping_offset(offset));
}

/// `read` of the line at `addr`, which need not be valid or even mapped: an address
/// published by another thread and read without the lock that keeps it current.
#[inline(always)]
pub fn read_address(addr: usize) {
    line(std::ptr::without_provenance(addr));
}

#[inline(always)]
#[allow(unsafe_code)]
fn line(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and cannot fault,
    // whatever the address (callers make it with `wrapping_offset` or from an integer, without
    // claiming it is valid). SSE, which the intrinsic needs, is part of x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
