//! When to reopen a long-poll stream (image build logs, exec output). A stream that made
//! progress — delivered a message, or stayed open long enough to be a long poll that ran its
//! course — is reopened at once. One that failed or closed straight away is reopened after a
//! jittered, capped, exponentially growing delay, and only a bounded number of times in a row:
//! a server that keeps closing the stream must not be hammered in a tight loop forever.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReopenPolicy {
    /// Delay before the first reopen after a failure; doubled after each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Failures in a row (without progress in between) before the reader gives up.
    pub max_failures: u32,
    /// A stream open at least this long counts as progress even without a message (the
    /// server ends its long polls after about 55 s).
    pub healthy_after: Duration,
}

impl Default for ReopenPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_failures: 8,
            healthy_after: Duration::from_secs(10),
        }
    }
}

/// The failure count and next delay of one reader.
#[derive(Debug)]
pub struct Backoff {
    policy: ReopenPolicy,
    failures: u32,
    delay: Duration,
}

impl Backoff {
    pub fn new(policy: ReopenPolicy) -> Self {
        Self { policy, failures: 0, delay: policy.first_delay }
    }

    /// How a stream that was open for `open_for` ended: `None` to reopen at once (it made
    /// progress), `Some(Ok(delay))` to wait first, `Some(Err(n))` when `n` failures in a row
    /// used up the attempts.
    pub fn after(&mut self, progressed: bool, open_for: Duration) -> Option<Result<Duration, u32>> {
        if progressed || open_for >= self.policy.healthy_after {
            self.failures = 0;
            self.delay = self.policy.first_delay;
            return None;
        }
        Some(self.failure())
    }

    /// One more failure: the jittered delay to wait, or `Err(failures)` when there were too many.
    pub fn failure(&mut self) -> Result<Duration, u32> {
        self.failures += 1;
        if self.failures > self.policy.max_failures {
            return Err(self.failures);
        }
        let step = self.delay;
        self.delay = (step * 2).min(self.policy.max_delay);
        // Equal jitter: at least half the step (spacing is guaranteed), the rest random so many
        // readers failing together do not come back in lockstep.
        let half = step / 2;
        let extra = rand::rng().random_range(0..=half.as_micros() as u64);
        Ok(half + Duration::from_micros(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReopenPolicy {
        ReopenPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_failures: 5,
            healthy_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_grow_jittered_and_capped_then_stop() {
        let mut b = Backoff::new(policy());
        let steps = [100u64, 200, 400, 400, 400];
        for step in steps {
            let d = b.failure().expect("within the limit");
            let step = Duration::from_millis(step);
            assert!(d >= step / 2 && d <= step, "{d:?} not in [{:?}, {step:?}]", step / 2);
        }
        assert_eq!(b.failure(), Err(6));
    }

    #[test]
    fn progress_resets_and_long_polls_count_as_progress() {
        let mut b = Backoff::new(policy());
        for _ in 0..5 {
            assert!(matches!(b.after(false, Duration::ZERO), Some(Ok(_))));
        }
        assert_eq!(b.after(true, Duration::ZERO), None, "a message is progress");
        assert!(b.after(false, Duration::ZERO).unwrap().unwrap() <= Duration::from_millis(100), "delay reset");
        assert_eq!(b.after(false, Duration::from_secs(55)), None, "a long poll that ran out");
    }
}
