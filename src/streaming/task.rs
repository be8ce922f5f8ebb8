//! Tasks a session owns. A session future can be dropped half way (the idle timeout,
//! the daemon shutting down, a client gone): every task it spawned must end with it, or
//! the task keeps the connection (and the process's stdio) open with nobody serving it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that is aborted when this handle is dropped. Awaiting it gives the
/// task's result, as a `JoinHandle` does.
pub(crate) struct Owned<T>(JoinHandle<T>);

/// Spawns `future` as a task owned by the caller.
pub(crate) fn spawn<F>(future: F) -> Owned<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Owned(tokio::spawn(future))
}

impl<T> Owned<T> {
    pub(crate) fn abort(&self) {
        self.0.abort();
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for Owned<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_handle_ends_the_task_and_awaiting_it_gives_its_result() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let owned = spawn(async move {
            // Holds `tx` until aborted: the receiver sees it dropped only then.
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(owned);
        assert!(
            rx.await.is_err(),
            "the task was aborted and dropped its sender"
        );

        assert_eq!(spawn(async { 7 }).await.unwrap(), 7);
    }
}
