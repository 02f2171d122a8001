//! Giving memory back to the system after a flood.
//!
//! glibc keeps freed memory for reuse and only returns the top of its heap; after ten
//! thousand listeners have come and gone, the daemon would keep tens of megabytes it no
//! longer needs. `malloc_trim` returns the free pages in the middle of the heap too. It is
//! called only after large drops, never on the steady path.

/// Returns free heap pages to the kernel (glibc only; elsewhere a no-op).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(
        unsafe_code,
        reason = "malloc_trim has no preconditions: it only releases free pages"
    )]
    // SAFETY: malloc_trim(0) walks glibc's own free lists; it touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Decides when a release is worth it: after the number of things held (listeners, plus
/// events waiting for the sinks) has fallen by at least `min_drop` from its high-water
/// mark, and a few polls later, once the sinks have written and freed what was queued.
#[derive(Debug, Default)]
pub struct TrimAfterDrop {
    high_water: usize,
    /// Polls to wait before releasing.
    countdown: Option<u32>,
}

/// Polls between a large drop and the release.
const SETTLE_POLLS: u32 = 3;

impl TrimAfterDrop {
    /// Records a level without deciding anything (a peak that is about to pass).
    pub fn note(&mut self, level: usize) {
        self.high_water = self.high_water.max(level);
    }

    /// Called once per poll with what is held now; true when memory should be released.
    pub fn observe(&mut self, current: usize, min_drop: usize) -> bool {
        self.high_water = self.high_water.max(current);
        if self.high_water >= current + min_drop {
            self.high_water = current;
            self.countdown = Some(SETTLE_POLLS);
        }
        match &mut self.countdown {
            Some(0) => {
                self.countdown = None;
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_large_drop() {
        let mut t = TrimAfterDrop::default();
        assert!(!t.observe(100, 1000));
        assert!(!t.observe(10_000, 1000));
        assert!(!t.observe(9_500, 1000), "not enough of a drop");
        let polls: Vec<bool> = (0..6).map(|_| t.observe(100, 1000)).collect();
        assert_eq!(
            polls,
            [false, false, false, true, false, false],
            "once, a few polls later"
        );
        assert!(!t.observe(50, 1000), "too small a drop");
    }
}
