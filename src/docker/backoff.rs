//! Jittered exponential backoff for reconnecting to the daemon.

use std::time::Duration;

/// 100 ms doubling to 30 s, each wait 50–100 % of its step.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) const MIN: Duration = Duration::from_millis(100);
    pub(super) const MAX: Duration = Duration::from_secs(30);

    pub(super) fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::MIN;
    }

    pub(super) fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        // 50%..100% of the step, so many watchers do not retry in lockstep.
        let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
        base.mul_f64(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            b.next();
        }
        let capped = b.next();
        assert!(capped <= Backoff::MAX && capped >= Backoff::MAX / 2);
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
