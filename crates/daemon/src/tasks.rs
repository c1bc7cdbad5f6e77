//! Long-lived tasks, spawned by name: each runs inside a span carrying its
//! name, and says when it stops and how.

use std::future::Future;

use tracing::Instrument;

/// Spawns an async task under a name.
pub(crate) fn spawn<F, T, E>(
    set: &mut tokio::task::JoinSet<Result<T, E>>,
    name: &'static str,
    fut: F,
) where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    set.spawn(
        async move {
            tracing::debug!(message = "task started");
            let result = fut.await;
            match &result {
                Ok(_) => tracing::debug!(message = "task stopped"),
                Err(e) => tracing::error!(message = "task failed", error = %e),
            }
            result
        }
        .instrument(tracing::info_span!("task", name)),
    );
}

/// Runs synchronous work on its own named OS thread (the engine: pure
/// computation and SQLite, which must not block the async workers), and
/// returns a future for its result.
pub(crate) fn spawn_thread<F, T>(
    name: &'static str,
    work: F,
) -> std::io::Result<impl Future<Output = std::thread::Result<T>>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::info_span!("task", name);
    let handle = std::thread::Builder::new()
        .name(format!("drainguard-{name}"))
        .spawn(move || span.in_scope(work))?;
    Ok(async move {
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .unwrap_or_else(|e| Err(Box::new(e.to_string())))
    })
}
