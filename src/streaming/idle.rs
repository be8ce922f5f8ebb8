//! `[streaming] idle_timeout_secs`: a session in which no byte moves either way for that
//! long is ended (kubelet's stream idle timeout).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

// tokio's clock: the tests pause it.
use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a byte last moved, in milliseconds since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A connection that records when a byte last went through it.
pub(crate) struct IdleIo<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

/// Resolves once the connection it watches has been idle for its timeout.
pub(crate) struct IdleWatch {
    activity: Arc<Activity>,
    timeout: Duration,
}

/// Wraps `io`; the watch resolves when no byte has moved for `timeout`.
pub(crate) fn watch<IO>(io: IO, timeout: Duration) -> (IdleIo<IO>, IdleWatch) {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    (
        IdleIo {
            inner: io,
            activity: activity.clone(),
        },
        IdleWatch { activity, timeout },
    )
}

impl IdleWatch {
    pub(crate) async fn expired(self) {
        loop {
            let idle = self.activity.idle_for();
            if idle >= self.timeout {
                return;
            }
            tokio::time::sleep(self.timeout - idle).await;
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn traffic_postpones_the_timeout_and_silence_ends_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut io, watch) = watch(a, Duration::from_secs(10));
        let expired = tokio::spawn(watch.expired());
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            b.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            io.read_exact(&mut byte).await.unwrap();
            assert!(!expired.is_finished(), "expired despite traffic");
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        assert!(
            expired.is_finished(),
            "did not expire after 11 s of silence"
        );
    }
}
