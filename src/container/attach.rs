//! Attach: a streaming client joins a running container's stdio through its backend.
//!
//! What happens when the client's stdin ends follows containerd (and kubectl's
//! expectations): for a container with `stdin_once` and no tty, the container's stdin is
//! closed and the session goes on until the container exits; otherwise the session ends
//! there. A client asking for stdin on a container without one gets its other streams;
//! its input is dropped (containerd does the same; kubectl warns about it itself).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Container, ContainerError, Phase};
use crate::backend::BackendError;
use crate::context::Ctx;
use crate::error::Kind;
use crate::monitor::{AttachEvent, AttachInput, AttachOutput, AttachStreams};
use crate::streaming::session::{Outcome, StdioStreams, StreamOpts, TermSize};

/// Checks an attach request when the CRI call comes in, before a URL is handed out:
/// NotFound, InvalidArgument (no stream; tty with stderr), FailedPrecondition (not
/// running; a backend that cannot attach). Returns the container's full id.
pub fn validate_attach(
    ctx: &Ctx<'_>,
    id: &str,
    opts: StreamOpts,
) -> Result<String, ContainerError> {
    Ok(check(ctx, id, opts)?.id.clone())
}

fn check(ctx: &Ctx<'_>, id: &str, opts: StreamOpts) -> Result<Arc<Container>, ContainerError> {
    let c = ctx.containers.get(id)?;
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return Err(ContainerError::Invalid(
            "one of stdin, stdout and stderr must be set".into(),
        ));
    }
    if opts.tty && opts.stderr {
        return Err(ContainerError::Invalid(
            "tty and stderr cannot both be true (a terminal carries both)".into(),
        ));
    }
    let snap = c.refresh();
    if snap.phase() != Phase::Running {
        return Err(snap.wrong_state(&c.id, "attach needs a running container"));
    }
    let backend = ctx.backends.get(&c.record.backend)?;
    if let Some(why) = backend.attach_unsupported() {
        return Err(BackendError::Failed {
            backend: backend.name(),
            kind: Kind::FailedPrecondition,
            message: why,
        }
        .into());
    }
    Ok(c)
}

/// Serves one attach session: the container's output to the client's stdout/stderr, the
/// client's stdin and resizes to the container. Ends with `Success` when the container
/// exits or the client leaves; a failure is the message the client shows.
pub(crate) async fn attach(
    ctx: &Ctx<'_>,
    id: &str,
    opts: StreamOpts,
    streams: StdioStreams,
) -> Outcome {
    let c = match check(ctx, id, opts) {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    let backend = match ctx.backends.get(&c.record.backend) {
        Ok(b) => b,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    let config = &c.record.config;
    let feeds_stdin = streams.stdin.is_some() && config.stdin;
    let wanted = AttachStreams {
        stdin: feeds_stdin,
        stdout: streams.stdout.is_some(),
        stderr: streams.stderr.is_some(),
    };
    let (output, input) = match backend.attach(&c.record.run_dir, wanted).await {
        Ok(session) => session,
        Err(e) => return Outcome::Failure(format!("attach to container {}: {e}", c.id)),
    };
    tracing::debug!(container = %c.id, ?opts, "attached");
    let stdin_closes_container_stdin = config.stdin_once && !config.tty;
    bridge(
        output,
        input,
        streams,
        feeds_stdin,
        stdin_closes_container_stdin,
    )
    .await
}

/// Copies between the monitor's session and the client's channels until the container
/// exits, the client leaves, or (see the module doc) the client's stdin ends.
///
/// Input goes in a task of its own: a container that does not read its stdin must not
/// hold up its output to this client (the monitor would disconnect it).
async fn bridge(
    mut output: AttachOutput,
    input: AttachInput,
    streams: StdioStreams,
    feeds_stdin: bool,
    stdin_closes_container_stdin: bool,
) -> Outcome {
    let StdioStreams {
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    let ends_session = feeds_stdin && !stdin_closes_container_stdin;
    let (ended_tx, ended_rx) = oneshot::channel();
    // Ends with the session (aborted when this function returns or is dropped).
    let _forward = crate::streaming::task::spawn(forward_input(
        input,
        stdin,
        resize,
        feeds_stdin,
        ends_session.then_some(ended_tx),
    ));
    let mut ended = Some(ended_rx);
    loop {
        tokio::select! {
            event = output.next() => match event {
                Ok(Some(AttachEvent::Stdout(data))) => {
                    if !deliver(&stdout, data).await {
                        return Outcome::Success;
                    }
                }
                Ok(Some(AttachEvent::Stderr(data))) => {
                    if !deliver(&stderr, data).await {
                        return Outcome::Success;
                    }
                }
                Ok(Some(AttachEvent::Exited)) => return Outcome::Success,
                Ok(None) => {
                    return Outcome::Failure(
                        "the container's monitor ended the session: a client that does not \
                         keep up with the container's output is disconnected"
                            .into(),
                    )
                }
                Err(e) => return Outcome::Failure(format!("attach: {e}")),
            },
            fired = fired(&mut ended) => {
                if fired {
                    return Outcome::Success;
                }
                ended = None;
            }
            _ = closed(&stdout) => return Outcome::Success,
            _ = closed(&stderr) => return Outcome::Success,
        }
    }
}

/// The client's stdin and resizes to the monitor. When the client's stdin ends, the
/// monitor is told; `ended`, if given, is then fired (the session ends there).
async fn forward_input(
    mut input: AttachInput,
    mut stdin: Option<mpsc::Receiver<Bytes>>,
    mut resize: Option<mpsc::Receiver<TermSize>>,
    feeds_stdin: bool,
    ended: Option<oneshot::Sender<()>>,
) {
    let mut ended = ended;
    loop {
        tokio::select! {
            // A resize sent before some input is applied before it: a client that sizes
            // the terminal and then types `stty size` sees its own size.
            biased;
            size = recv(&mut resize) => match size {
                Some(size) => {
                    let _ = input.resize(size.width, size.height).await;
                }
                None => resize = None,
            },
            chunk = recv(&mut stdin) => match chunk {
                // Input for a container without stdin is read and dropped.
                Some(data) => {
                    if feeds_stdin && input.stdin(&data).await.is_err() {
                        // The monitor closed the session; the output side says why.
                        return std::future::pending().await;
                    }
                }
                None => {
                    stdin = None;
                    if feeds_stdin {
                        let _ = input.close_stdin().await;
                        if let Some(tx) = ended.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            },
        }
    }
}

/// Some(true) when fired, false when the sender went away; never resolves for None.
async fn fired(rx: &mut Option<oneshot::Receiver<()>>) -> bool {
    match rx {
        Some(rx) => rx.await.is_ok(),
        None => std::future::pending().await,
    }
}

/// False when the client has gone (or never asked for this stream, which the monitor
/// does not send).
async fn deliver(to: &Option<mpsc::Sender<Bytes>>, data: Vec<u8>) -> bool {
    match to {
        Some(tx) => tx.send(Bytes::from(data)).await.is_ok(),
        None => true,
    }
}

/// The next item of an optional channel; never resolves for a missing one.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client dropped this stream's receiver.
async fn closed(tx: &Option<mpsc::Sender<Bytes>>) {
    match tx {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::attach_session_for_tests;
    use crate::streaming::session::TermSize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// The client's ends of the channels, and the monitor's end of the socket.
    struct Client {
        stdin: Option<mpsc::Sender<Bytes>>,
        stdout: mpsc::Receiver<Bytes>,
        resize: mpsc::Sender<TermSize>,
        monitor: UnixStream,
    }

    fn start(
        stdin_once_no_tty: bool,
        feeds_stdin: bool,
    ) -> (Client, tokio::task::JoinHandle<Outcome>) {
        let (ours, monitor) = UnixStream::pair().unwrap();
        let (output, input) = attach_session_for_tests(ours);
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (stdout_tx, stdout_rx) = mpsc::channel(4);
        let (resize_tx, resize_rx) = mpsc::channel(4);
        let streams = StdioStreams {
            stdin: Some(stdin_rx),
            stdout: Some(stdout_tx),
            stderr: None,
            resize: Some(resize_rx),
        };
        let task = tokio::spawn(bridge(
            output,
            input,
            streams,
            feeds_stdin,
            stdin_once_no_tty,
        ));
        (
            Client {
                stdin: Some(stdin_tx),
                stdout: stdout_rx,
                resize: resize_tx,
                monitor,
            },
            task,
        )
    }

    async fn frame(monitor: &mut UnixStream, f: AttachFrameForTests) {
        monitor.write_all(&f.0).await.unwrap();
    }

    struct AttachFrameForTests(Vec<u8>);

    fn out(data: &[u8]) -> AttachFrameForTests {
        AttachFrameForTests(crate::monitor::encode_attach_output_for_tests(data))
    }

    fn exited() -> AttachFrameForTests {
        AttachFrameForTests(vec![3, 0, 0, 0, 0])
    }

    /// What the bridge sent the monitor until it closed its side.
    async fn sent(monitor: &mut UnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        monitor.read_to_end(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn output_reaches_the_client_and_the_exit_ends_the_session() {
        let (mut c, task) = start(false, true);
        frame(&mut c.monitor, out(b"hello")).await;
        assert_eq!(c.stdout.recv().await.unwrap(), Bytes::from_static(b"hello"));
        c.stdin
            .as_ref()
            .unwrap()
            .send(Bytes::from_static(b"in"))
            .await
            .unwrap();
        let mut wire = [0u8; 7];
        c.monitor.read_exact(&mut wire).await.unwrap();
        assert_eq!(wire, [0, 2, 0, 0, 0, b'i', b'n']);
        c.resize
            .send(TermSize {
                width: 90,
                height: 20,
            })
            .await
            .unwrap();
        let mut wire = [0u8; 9];
        c.monitor.read_exact(&mut wire).await.unwrap();
        assert_eq!(wire, [5, 4, 0, 0, 0, 90, 0, 20, 0]);
        frame(&mut c.monitor, exited()).await;
        assert_eq!(task.await.unwrap(), Outcome::Success);
        // The bridge closed its side: nothing more was sent.
        assert_eq!(sent(&mut c.monitor).await, Vec::<u8>::new());
    }

    #[tokio::test]
    async fn the_end_of_stdin_ends_the_session_unless_stdin_once_without_tty() {
        let (mut c, task) = start(false, true);
        c.stdin = None;
        assert_eq!(task.await.unwrap(), Outcome::Success);
        assert_eq!(sent(&mut c.monitor).await, vec![4, 0, 0, 0, 0]);

        let (mut c, task) = start(true, true);
        c.stdin = None;
        // The monitor was told; the session goes on until the container exits.
        let mut eof = [0u8; 5];
        c.monitor.read_exact(&mut eof).await.unwrap();
        assert_eq!(eof, [4, 0, 0, 0, 0]);
        frame(&mut c.monitor, out(b"after")).await;
        assert_eq!(c.stdout.recv().await.unwrap(), Bytes::from_static(b"after"));
        frame(&mut c.monitor, exited()).await;
        assert_eq!(task.await.unwrap(), Outcome::Success);
    }

    #[tokio::test]
    async fn input_for_a_container_without_stdin_is_dropped_and_its_end_ends_nothing() {
        let (mut c, task) = start(false, false);
        c.stdin
            .as_ref()
            .unwrap()
            .send(Bytes::from_static(b"x"))
            .await
            .unwrap();
        c.stdin = None;
        frame(&mut c.monitor, out(b"still")).await;
        assert_eq!(c.stdout.recv().await.unwrap(), Bytes::from_static(b"still"));
        frame(&mut c.monitor, exited()).await;
        assert_eq!(task.await.unwrap(), Outcome::Success);
        assert_eq!(sent(&mut c.monitor).await, Vec::<u8>::new());
    }

    #[tokio::test]
    async fn a_monitor_that_hangs_up_is_a_failure_and_a_client_that_leaves_a_success() {
        let (c, task) = start(false, true);
        drop(c.monitor);
        match task.await.unwrap() {
            Outcome::Failure(m) => assert!(m.contains("keep up"), "{m}"),
            other => panic!("{other:?}"),
        }
        let (c, task) = start(false, true);
        drop(c.stdout);
        assert_eq!(task.await.unwrap(), Outcome::Success);
    }
}
