//! Waiting for something to happen, bounded: poll a check at a steady
//! pace until it holds, and fail the test, saying what it waited for and
//! how things stood, once the limit has passed.

use std::time::{Duration, Instant};

/// Polls `check` every `every` until it gives a value, and returns it;
/// after `limit`, panics naming `what`, with `why()` (read then: a log, the
/// state it is stuck in) if that says anything.
pub fn until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, limit, why());
        }
        std::thread::sleep(every);
    }
}

/// `until`, for a check that awaits (and sleeping on the runtime).
pub async fn until_async<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
    why: impl AsyncFnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, limit, why().await);
        }
        tokio::time::sleep(every).await;
    }
}

fn timed_out(what: &str, limit: Duration, why: String) -> ! {
    match why.is_empty() {
        true => panic!("waited {limit:?} for {what}"),
        false => panic!("waited {limit:?} for {what}:\n{why}"),
    }
}
