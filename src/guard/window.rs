//! The sliding window in slices. A series is active while it was seen in one of the last
//! `slices` slices; each admitted series carries the 8-bit tag of the slice it was last seen in.
//! Tags wrap at 256, which is safe because every owner evicts stale tags whenever its slice
//! advances and the window has at most 60 slices.

use std::time::Duration;

/// Maps wall-clock milliseconds to slice numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    slice_ms: u64,
    slices: u8,
}

impl Window {
    pub fn new(window: Duration, slices: u8) -> Self {
        let slices = slices.max(1);
        let slice_ms = (window.as_millis() as u64 / u64::from(slices)).max(1);
        Window { slice_ms, slices }
    }

    /// The slice `now_ms` falls in.
    pub fn slice(&self, now_ms: i64) -> u64 {
        now_ms.max(0) as u64 / self.slice_ms
    }

    pub fn tag(slice: u64) -> u8 {
        (slice % 256) as u8
    }

    pub fn slice_ms(&self) -> u64 {
        self.slice_ms
    }

    pub fn slices(&self) -> u8 {
        self.slices
    }

    /// Whether a series last seen in the slice tagged `tag` is still active in slice `now`.
    pub fn is_live(&self, tag: u8, now: u64) -> bool {
        Self::tag(now).wrapping_sub(tag) < self.slices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_expire_after_a_whole_window() {
        let w = Window::new(Duration::from_secs(3600), 6);
        let t0 = 1_700_000_000_000i64;
        let s0 = w.slice(t0);
        let tag = Window::tag(s0);
        assert!(w.is_live(tag, s0));
        assert!(w.is_live(tag, s0 + 5));
        assert!(!w.is_live(tag, s0 + 6));
        assert_eq!(w.slice(t0 + 10 * 60 * 1000), s0 + 1);
    }

    #[test]
    fn tags_wrap() {
        let w = Window::new(Duration::from_secs(3600), 6);
        assert!(w.is_live(254, 256 + 1)); // tag 1 now, 254 is 3 slices ago
        assert!(!w.is_live(250, 256 + 1));
    }
}
