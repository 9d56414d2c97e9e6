//! The one polling loop of the crate: [`wait_until`] looks at a condition until it holds, fails,
//! the deadline passes or the operation is cancelled. Health, CRDs, test Jobs, HTTP probes and
//! the release lock all wait through it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one look at a condition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<T, P = ()> {
    /// It holds: the wait ends with this.
    Done(T),
    /// Not yet; what is still awaited, kept for the report if the deadline passes.
    Pending(P),
    /// Not yet, but worth another look after this when that is sooner than the usual pace
    /// (a lease about to expire).
    PendingFor(P, Duration),
}

/// Why a wait ended without its condition holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped<P, E> {
    /// A look failed for good.
    Failed(E),
    /// The deadline passed; what was still awaited at the last look.
    TimedOut(P),
    /// The operation was cancelled.
    Cancelled,
}

impl<P> Stopped<P, crate::DeployError> {
    /// The error to return: the look's own, `timed_out` of what was still awaited, or
    /// [`DeployError::Cancelled`](crate::DeployError::Cancelled).
    pub fn into_error(self, timed_out: impl FnOnce(P) -> crate::DeployError) -> crate::DeployError {
        match self {
            Self::Failed(error) => error,
            Self::TimedOut(pending) => timed_out(pending),
            Self::Cancelled => crate::DeployError::Cancelled,
        }
    }
}

/// The first pause between two looks; each next pause doubles, up to the caller's pace. What
/// becomes ready quickly (a simulated pod after 50 ms, a small Deployment) is seen within tens
/// of milliseconds, and what takes minutes is looked at no more often than the pace.
pub const FIRST_PAUSE: Duration = Duration::from_millis(20);

/// Looks at `condition` until it is done or fails, `deadline` passes, or `cancel` fires,
/// pausing [`FIRST_PAUSE`] after the first look and twice as long after each next one, never
/// longer than `pace`. The condition is looked at once even when the deadline has already
/// passed, and the deadline is checked after each look; cancellation ends the pause between
/// two looks at once.
pub async fn wait_until<T, P, E, Look>(
    mut condition: impl FnMut() -> Look,
    pace: Duration,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<T, Stopped<P, E>>
where
    Look: Future<Output = Result<Check<T, P>, E>>,
{
    let mut backoff = FIRST_PAUSE.min(pace);
    loop {
        let step = backoff;
        backoff = (backoff * 2).min(pace);
        let (pending, pause) = match condition().await.map_err(Stopped::Failed)? {
            Check::Done(value) => return Ok(value),
            Check::Pending(pending) => (pending, step),
            Check::PendingFor(pending, soon) => (pending, soon.min(step)),
        };
        if Instant::now() >= deadline {
            return Err(Stopped::TimedOut(pending));
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Stopped::Cancelled),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::ready;

    use super::*;

    const PACE: Duration = Duration::from_millis(5);

    fn in_secs(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn ends_when_the_condition_holds() {
        let mut looks = 0;
        let waited = wait_until(
            || {
                looks += 1;
                ready(Ok::<_, ()>(if looks == 3 {
                    Check::Done("ready")
                } else {
                    Check::Pending(())
                }))
            },
            PACE,
            in_secs(10),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(waited, Ok("ready"));
        assert_eq!(looks, 3);
    }

    #[tokio::test]
    async fn a_failed_look_ends_the_wait_at_once() {
        let mut looks = 0;
        let waited: Result<(), _> = wait_until(
            || {
                looks += 1;
                ready(Err::<Check<(), ()>, _>("boom"))
            },
            PACE,
            in_secs(10),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(waited, Err(Stopped::Failed("boom")));
        assert_eq!(looks, 1);
    }

    #[tokio::test]
    async fn a_passed_deadline_reports_what_was_still_awaited() {
        let mut looks = 0;
        let started = Instant::now();
        let waited: Result<(), _> = wait_until(
            || {
                looks += 1;
                ready(Ok::<_, ()>(Check::Pending(looks)))
            },
            PACE,
            started + Duration::from_millis(50),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(waited, Err(Stopped::TimedOut(looks)));
        assert!(looks > 1, "looked {looks} times");
        assert!(started.elapsed() >= Duration::from_millis(50));

        // Already past the deadline: one look, which may still succeed.
        let late = Instant::now();
        let mut looks = 0;
        let waited: Result<(), _> = wait_until(
            || {
                looks += 1;
                ready(Ok::<_, ()>(Check::Pending("not yet")))
            },
            PACE,
            late,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!((waited, looks), (Err(Stopped::TimedOut("not yet")), 1));
        let done = wait_until(
            || ready(Ok::<_, ()>(Check::<_, ()>::Done(7))),
            PACE,
            late,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(done, Ok(7));
    }

    #[tokio::test]
    async fn cancellation_ends_the_pause_at_once() {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let waited: Result<(), _> = wait_until(
            || ready(Ok::<_, ()>(Check::Pending(()))),
            Duration::from_secs(60),
            in_secs(60),
            &cancel,
        )
        .await;
        assert_eq!(waited, Err(Stopped::Cancelled));
        assert!(started.elapsed() < Duration::from_secs(5));

        // Cancelled before it starts: one look, then no pause.
        let mut looks = 0;
        let waited: Result<(), _> = wait_until(
            || {
                looks += 1;
                ready(Ok::<_, ()>(Check::Pending(())))
            },
            PACE,
            in_secs(60),
            &cancel,
        )
        .await;
        assert_eq!((waited, looks), (Err(Stopped::Cancelled), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_start_at_tens_of_milliseconds_and_double_up_to_the_pace() {
        let started = Instant::now();
        let mut looks = Vec::new();
        let waited = wait_until(
            || {
                looks.push(started.elapsed().as_millis());
                ready(Ok::<_, ()>(if looks.len() == 7 {
                    Check::Done(())
                } else {
                    Check::Pending(())
                }))
            },
            Duration::from_millis(250),
            in_secs(60),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(waited, Ok(()));
        assert_eq!(looks, [0, 20, 60, 140, 300, 550, 800]);
    }

    #[tokio::test]
    async fn pending_for_looks_again_sooner_but_never_later_than_the_pace() {
        let minute = Duration::from_secs(60);
        for (soon, pace) in [(Duration::from_millis(1), minute), (minute, PACE)] {
            let mut looks = 0;
            let started = Instant::now();
            let waited = wait_until(
                || {
                    looks += 1;
                    ready(Ok::<_, ()>(if looks == 2 {
                        Check::Done(())
                    } else {
                        Check::PendingFor((), soon)
                    }))
                },
                pace,
                in_secs(60),
                &CancellationToken::new(),
            )
            .await;
            assert_eq!(waited, Ok(()));
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{soon:?} {pace:?}"
            );
        }
    }
}
