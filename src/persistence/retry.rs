//! Bounded retries for writes whose loss would lose user data (transcripts, workspace files).

use std::future::Future;
use std::time::Duration;

use super::{PResult, PersistenceError};

/// Retry policy: `attempts` tries in total, doubling the delay from `first_delay`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, first_delay: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// Run `op` until it succeeds or the attempts are used up. A `Closed` environment is not retried.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> PResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = PResult<T>>,
    {
        let mut delay = self.first_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e @ PersistenceError::Closed { .. }) => return Err(e),
                Err(e) if attempt >= self.attempts => return Err(e),
                Err(e) => {
                    tracing::warn!(method = e.method(), attempt, error = %e, "persistence write failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let n = AtomicU32::new(0);
        let r = RetryPolicy::default()
            .run(|| async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(PersistenceError::Failed { method: "saveTranscript", message: "x".into() })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_attempts() {
        let n = AtomicU32::new(0);
        let r: PResult<()> = RetryPolicy { attempts: 3, first_delay: Duration::from_millis(1) }
            .run(|| async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(PersistenceError::Failed { method: "saveTranscript", message: "x".into() })
            })
            .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
