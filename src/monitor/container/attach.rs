//! Attach sessions in the monitor: each attached client gets a copy of the container's
//! output and may feed its stdin (or terminal) and resize its terminal.
//!
//! The container's output never waits for a client: what a client has not read yet is
//! queued, and a client that falls more than [`CLIENT_BACKLOG`] bytes behind is
//! disconnected. The CRI log always gets everything, attached or not.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::monitor::protocol::{AttachFrame, MAX_ATTACH_PAYLOAD};

/// Bytes of output a client may fall behind before it is disconnected.
pub(super) const CLIENT_BACKLOG: usize = 1024 * 1024;
/// Bytes the container's stdin may have queued before attached clients' input is no
/// longer read (their sockets then fill up, which slows the clients down).
pub(super) const INPUT_BACKLOG: usize = 64 * 1024;
/// Bytes read from one client per turn of the loop.
const READ_BUDGET: usize = 64 * 1024;
/// At the container's exit, how long a client gets to take what is queued for it.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// What a client's frames ask the monitor to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Input {
    Stdin(Vec<u8>),
    /// The session's stdin ended (the client said so, or went away).
    StdinEnded,
    Resize {
        width: u16,
        height: u16,
    },
}

/// One attached client.
pub(super) struct Session {
    pub(super) stream: UnixStream,
    /// stdout, stderr.
    wants: [bool; 2],
    /// Its input goes to the container (it asked for stdin and the container has one) and
    /// has not ended.
    feeds_stdin: bool,
    out: Vec<u8>,
    sent: usize,
    inbuf: Vec<u8>,
    /// Disconnected, too slow, or broke the protocol: removed at the end of the turn.
    pub(super) gone: bool,
}

impl Session {
    pub(super) fn new(stream: UnixStream, feeds_stdin: bool, wants: [bool; 2]) -> Session {
        Session {
            stream,
            wants,
            feeds_stdin,
            out: Vec::new(),
            sent: 0,
            inbuf: Vec::new(),
            gone: false,
        }
    }

    /// Its input still goes to the container.
    pub(super) fn feeds_stdin(&self) -> bool {
        self.feeds_stdin
    }

    /// Queues output of `stream` (0 stdout, 1 stderr) if the client asked for it; a client
    /// that is too far behind is dropped instead.
    pub(super) fn output(&mut self, stream: usize, data: &[u8]) {
        if self.gone || !self.wants[stream] {
            return;
        }
        for chunk in data.chunks(MAX_ATTACH_PAYLOAD) {
            AttachFrame::encode_output(stream, chunk, &mut self.out);
        }
        if self.out.len() - self.sent > CLIENT_BACKLOG {
            self.gone = true;
        }
    }

    pub(super) fn has_queued(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Writes what is queued until the socket is full.
    pub(super) fn flush(&mut self) {
        while !self.gone && self.has_queued() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => self.gone = true,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        if !self.has_queued() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > CLIENT_BACKLOG {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// The container has exited: the client gets what is queued and the `Exited` frame,
    /// within [`FINAL_FLUSH`], then the connection closes.
    pub(super) fn finish(mut self) {
        if self.gone {
            return;
        }
        AttachFrame::Exited.encode_into(&mut self.out);
        let _ = self.stream.set_nonblocking(false);
        let _ = self.stream.set_write_timeout(Some(FINAL_FLUSH));
        let _ = self.stream.write_all(&self.out[self.sent..]);
    }

    /// Reads what the client sent (at most [`READ_BUDGET`] bytes) and turns its frames
    /// into `inputs`. A client that closed its connection or sent a malformed frame is
    /// gone; if it was feeding stdin, that stdin has ended.
    pub(super) fn read(&mut self, inputs: &mut Vec<Input>) {
        let mut chunk = [0u8; 16 * 1024];
        let mut read = 0;
        while read < READ_BUDGET && !self.gone {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.gone = true,
                Ok(n) => {
                    read += n;
                    self.inbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        self.take(&[], inputs);
        if self.gone {
            self.end_stdin(inputs);
        }
    }

    /// Adds `bytes` from the client and turns the complete frames into `inputs`.
    pub(super) fn take(&mut self, bytes: &[u8], inputs: &mut Vec<Input>) {
        self.inbuf.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            match AttachFrame::decode(&self.inbuf[used..]) {
                Ok(Some((frame, n))) => {
                    used += n;
                    self.input(frame, inputs);
                }
                Ok(None) => break,
                Err(_) => {
                    self.gone = true;
                    break;
                }
            }
        }
        self.inbuf.drain(..used);
    }

    fn input(&mut self, frame: AttachFrame, inputs: &mut Vec<Input>) {
        match frame {
            AttachFrame::Stdin(data) if self.feeds_stdin => inputs.push(Input::Stdin(data)),
            // Input of a session without stdin is dropped (containerd does the same).
            AttachFrame::Stdin(_) => {}
            AttachFrame::StdinEof => self.end_stdin(inputs),
            AttachFrame::Resize { width, height } => inputs.push(Input::Resize { width, height }),
            AttachFrame::Stdout(_) | AttachFrame::Stderr(_) | AttachFrame::Exited => {
                self.gone = true
            }
        }
    }

    fn end_stdin(&mut self, inputs: &mut Vec<Input>) {
        if self.feeds_stdin {
            self.feeds_stdin = false;
            inputs.push(Input::StdinEnded);
        }
    }

    /// Dropped by the monitor (disconnected, too slow): a session still feeding stdin
    /// ends its stdin.
    pub(super) fn close(mut self, inputs: &mut Vec<Input>) {
        self.end_stdin(inputs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair(feeds: bool, wants: [bool; 2]) -> (Session, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Session::new(a, feeds, wants), b)
    }

    fn frames(mut bytes: &[u8]) -> Vec<AttachFrame> {
        let mut out = Vec::new();
        while let Some((f, n)) = AttachFrame::decode(bytes).unwrap() {
            out.push(f);
            bytes = &bytes[n..];
        }
        assert!(bytes.is_empty());
        out
    }

    #[test]
    fn output_goes_only_to_the_streams_asked_for() {
        let (mut s, mut client) = pair(false, [true, false]);
        s.output(0, b"out");
        s.output(1, b"err");
        s.flush();
        s.finish();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(
            frames(&got),
            vec![AttachFrame::Stdout(b"out".to_vec()), AttachFrame::Exited]
        );
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_past_the_backlog() {
        let (mut s, _client) = pair(false, [true, true]);
        let chunk = vec![b'y'; 64 * 1024];
        let mut sent = 0;
        while !s.gone {
            s.output(0, &chunk);
            s.flush();
            sent += chunk.len();
            assert!(sent < 64 * 1024 * 1024, "never dropped");
        }
        // Past what the socket buffers, at most the backlog (and a chunk) was queued.
        assert!(s.out.len() - s.sent <= CLIENT_BACKLOG + chunk.len() + 5);
    }

    #[test]
    fn input_frames_become_inputs_and_stdin_ends_once() {
        let (mut s, mut client) = pair(true, [true, true]);
        let mut wire = Vec::new();
        AttachFrame::Stdin(b"abc".to_vec()).encode_into(&mut wire);
        AttachFrame::Resize {
            width: 100,
            height: 30,
        }
        .encode_into(&mut wire);
        AttachFrame::StdinEof.encode_into(&mut wire);
        AttachFrame::Stdin(b"late".to_vec()).encode_into(&mut wire);
        client.write_all(&wire).unwrap();
        let mut inputs = Vec::new();
        s.read(&mut inputs);
        assert_eq!(
            inputs,
            vec![
                Input::Stdin(b"abc".to_vec()),
                Input::Resize {
                    width: 100,
                    height: 30
                },
                Input::StdinEnded,
            ]
        );
        assert!(!s.gone);
        drop(client);
        inputs.clear();
        s.read(&mut inputs);
        assert!(s.gone);
        assert_eq!(inputs, vec![], "stdin had already ended");
    }

    #[test]
    fn a_client_that_goes_away_ends_its_stdin_and_garbage_drops_it() {
        let (mut s, client) = pair(true, [true, false]);
        drop(client);
        let mut inputs = Vec::new();
        s.read(&mut inputs);
        assert!(s.gone);
        assert_eq!(inputs, vec![Input::StdinEnded]);

        let (mut s, mut client) = pair(false, [true, false]);
        client.write_all(&[42, 0, 0, 0, 0]).unwrap();
        let mut inputs = Vec::new();
        s.read(&mut inputs);
        assert!(s.gone);
        assert_eq!(inputs, vec![]);
    }
}
