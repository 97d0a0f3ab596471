//! The one retry loop: exponential backoff with jitter (backon) over an
//! attempt function, retrying while the error is transient (or a predicate
//! says so). Every connector's retries go through [`retry`], each with a
//! [`RetryPolicy`] of its own service.

use std::time::Duration;

use backon::BackoffBuilder;

use crate::error::{Error, Result};

/// Attempts and waits of one service's retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// No new attempt starts after this much waiting in total.
    pub total_delay: Option<Duration>,
}

impl RetryPolicy {
    pub const fn new(attempts: u32, min_delay: Duration, max_delay: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts,
            min_delay,
            max_delay,
            total_delay: None,
        }
    }

    fn delays(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .with_total_delay(self.total_delay)
            .with_jitter()
            .build()
    }
}

/// Runs `attempt(n)` (n = 1, 2, …) until it succeeds, fails with an error
/// `retry_if` rejects, or the policy is exhausted; the last error carries
/// the number of attempts as context.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    retry_if: impl Fn(&Error) -> bool,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delays = policy.delays();
    let mut n = 1;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) if retry_if(&e) => match delays.next() {
                Some(wait) => {
                    tracing::debug!(attempt = n, ?wait, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    n += 1;
                }
                None => return Err(e.with_context("attempts", n)),
            },
            Err(e) => return Err(e),
        }
    }
}

/// `retry` while the error is transient (`ErrorKind::is_transient`).
pub async fn retry_transient<T, F, Fut>(policy: &RetryPolicy, attempt: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry(policy, |e| e.kind().is_transient(), attempt).await
}

/// `call` with a deadline: a service that does not answer within `limit`
/// (a dead peer, a black-holed connection that never closes) fails
/// `Timeout` — transient, so the caller's retry or restart takes over. The
/// outcome of a write cut short is unknown; callers that write check it.
pub async fn within<T>(
    limit: Duration,
    what: impl std::fmt::Display,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            crate::ErrorKind::Timeout,
            format!(
                "{what} got no answer within {} s (the server or the network to it is stuck)",
                limit.as_secs_f64()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const FAST: RetryPolicy =
        RetryPolicy::new(4, Duration::from_millis(1), Duration::from_millis(2));

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_the_limit_and_others_never() {
        let mut calls = 0;
        let r: Result<()> = retry_transient(&FAST, |_| {
            calls += 1;
            async { Err(Error::new(ErrorKind::Connection, "refused")) }
        })
        .await;
        assert_eq!(calls, 4);
        assert!(r.unwrap_err().to_string().contains("attempts: 4"));

        let mut calls = 0;
        let r: Result<()> = retry_transient(&FAST, |_| {
            calls += 1;
            async { Err(Error::invalid_data("bad row")) }
        })
        .await;
        assert_eq!((calls, r.is_err()), (1, true));

        let got = retry_transient(&FAST, |n| async move {
            if n < 3 {
                Err(Error::new(ErrorKind::Timeout, "slow"))
            } else {
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }
}
