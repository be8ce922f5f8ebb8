//! `CriLogWriter`: turns raw stdout/stderr chunks into CRI log lines.

use std::fs::File;
use std::io::{self, Write};

use chrono::{DateTime, Utc};

use super::LogTarget;

/// containerd's default `max_container_log_line_size`: lines longer than this are split
/// into partial (`P`) records so one runaway line cannot make kubelet buffer megabytes.
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;

/// Which of the container's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 1 of the container's process.
    Stdout,
    /// fd 2 of the container's process.
    Stderr,
}

impl Stream {
    /// The stream's name as it appears in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Writes one container's CRI log file.
///
/// Each stream keeps its own pending partial line, so interleaved stdout and stderr
/// never mix inside one record. With no path every byte is discarded (CRI allows a
/// container without `log_path`). The file is opened confined to its directory
/// ([`LogTarget`]), also when it is reopened.
pub struct CriLogWriter {
    target: Option<LogTarget>,
    file: Option<File>,
    max_line_size: usize,
    pending: [Vec<u8>; 2],
}

impl CriLogWriter {
    /// Opens (appending, creating it and its parent directories) the log file of `target`.
    /// `max_line_size` of 0 means `DEFAULT_MAX_LINE_SIZE`.
    pub fn open(target: Option<&LogTarget>, max_line_size: usize) -> io::Result<Self> {
        let file = match target {
            Some(t) => Some(t.open_append()?.0),
            None => None,
        };
        Ok(CriLogWriter::with_file(target, file, max_line_size))
    }

    /// A writer on a file its caller already opened from `target` (for reopening later).
    pub fn with_file(target: Option<&LogTarget>, file: Option<File>, max_line_size: usize) -> Self {
        CriLogWriter {
            target: target.cloned(),
            file,
            max_line_size: if max_line_size == 0 {
                DEFAULT_MAX_LINE_SIZE
            } else {
                max_line_size
            },
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// The log file this writer appends to, if any.
    #[cfg(test)]
    pub fn target(&self) -> Option<&LogTarget> {
        self.target.as_ref()
    }

    /// Feeds raw bytes read from `stream` at time `now`: every complete line becomes an `F`
    /// record; a pending part longer than the maximum line size is cut into `P` records of
    /// exactly that size. Whatever is left (at most the maximum) waits for more data.
    pub fn write_chunk(
        &mut self,
        stream: Stream,
        data: &[u8],
        now: DateTime<Utc>,
    ) -> io::Result<()> {
        if self.target.is_none() || data.is_empty() {
            return Ok(());
        }
        let max = self.max_line_size;
        let pending = &mut self.pending[stream.index()];
        pending.extend_from_slice(data);
        let stamp = timestamp(now);
        let mut out = Vec::with_capacity(pending.len() + 64);
        let mut start = 0;
        loop {
            let rest = &pending[start..];
            // A newline within the first max+1 bytes ends a line of at most `max` bytes.
            let window = &rest[..rest.len().min(max + 1)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                push_record(&mut out, &stamp, stream, 'F', &rest[..nl]);
                start += nl + 1;
            } else if rest.len() > max {
                push_record(&mut out, &stamp, stream, 'P', &rest[..max]);
                start += max;
            } else {
                break;
            }
        }
        pending.drain(..start);
        self.append(&out)
    }

    /// The stream reached EOF: its pending partial line is written as a full (`F`) record,
    /// as containerd does.
    pub fn close_stream(&mut self, stream: Stream, now: DateTime<Utc>) -> io::Result<()> {
        let rest = std::mem::take(&mut self.pending[stream.index()]);
        if rest.is_empty() || self.target.is_none() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(rest.len() + 64);
        push_record(&mut out, &timestamp(now), stream, 'F', &rest);
        self.append(&out)
    }

    /// ReopenContainerLog: kubelet renamed the file away to rotate it; start a new one
    /// at the same path. Pending partial lines are kept and go to the new file.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        if let Some(t) = &self.target {
            self.file = Some(t.open_append()?.0);
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            // A failed reopen (directory briefly missing during rotation) is retried here
            // rather than losing the rest of the container's output.
            if let Some(t) = &self.target {
                self.file = Some(t.open_append()?.0);
            }
        }
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Ok(()),
        }
    }
}

/// RFC 3339 with nanoseconds, always nine fraction digits, UTC (`2026-11-26T06:08:02.123456789Z`).
fn timestamp(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn push_record(out: &mut Vec<u8>, stamp: &str, stream: Stream, tag: char, text: &[u8]) {
    out.extend_from_slice(stamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(tag as u8);
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn at(nanos: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 6, 8, 2).unwrap()
            + chrono::Duration::nanoseconds(nanos as i64)
    }

    fn log_target(dir: &tempfile::TempDir) -> LogTarget {
        LogTarget {
            dir: dir.path().join("pods/p"),
            file: "c/0.log".into(),
        }
    }

    fn writer(max: usize) -> (tempfile::TempDir, PathBuf, CriLogWriter) {
        let dir = tempfile::tempdir().unwrap();
        let target = log_target(&dir);
        let w = CriLogWriter::open(Some(&target), max).unwrap();
        (dir, target.path(), w)
    }

    fn read(path: &Path) -> String {
        String::from_utf8(fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn formats_full_lines_with_nanosecond_utc_timestamps() {
        let (_d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stdout, b"hello\nworld\n", at(123_456_789))
            .unwrap();
        w.write_chunk(Stream::Stderr, b"oops\n", at(5)).unwrap();
        assert_eq!(
            read(&path),
            "2026-11-26T06:08:02.123456789Z stdout F hello\n\
             2026-11-26T06:08:02.123456789Z stdout F world\n\
             2026-11-26T06:08:02.000000005Z stderr F oops\n"
        );
    }

    #[test]
    fn empty_lines_are_full_records() {
        let (_d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stdout, b"\n\n", at(0)).unwrap();
        assert_eq!(
            read(&path).lines().collect::<Vec<_>>(),
            vec![
                "2026-11-26T06:08:02.000000000Z stdout F ",
                "2026-11-26T06:08:02.000000000Z stdout F ",
            ]
        );
    }

    #[test]
    fn partial_line_waits_for_its_newline() {
        let (_d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stdout, b"hel", at(0)).unwrap();
        assert_eq!(read(&path), "");
        w.write_chunk(Stream::Stdout, b"lo\nnext", at(1)).unwrap();
        assert_eq!(
            read(&path),
            "2026-11-26T06:08:02.000000001Z stdout F hello\n"
        );
    }

    #[test]
    fn long_lines_split_into_partial_records_at_max_size() {
        let (_d, path, mut w) = writer(4);
        w.write_chunk(Stream::Stdout, b"abcdefghij\n", at(0))
            .unwrap();
        let tags: Vec<String> = read(&path).lines().map(|l| l[31..].to_string()).collect();
        assert_eq!(tags, vec!["stdout P abcd", "stdout P efgh", "stdout F ij"]);
    }

    #[test]
    fn a_line_of_exactly_max_size_is_one_full_record() {
        let (_d, path, mut w) = writer(4);
        w.write_chunk(Stream::Stdout, b"abcd", at(0)).unwrap();
        w.write_chunk(Stream::Stdout, b"\nxy", at(0)).unwrap();
        let tags: Vec<String> = read(&path).lines().map(|l| l[31..].to_string()).collect();
        assert_eq!(tags, vec!["stdout F abcd"]);
    }

    #[test]
    fn partial_records_are_emitted_without_waiting_for_a_newline() {
        let (_d, path, mut w) = writer(4);
        w.write_chunk(Stream::Stdout, b"abcdefghi", at(0)).unwrap();
        let tags: Vec<String> = read(&path).lines().map(|l| l[31..].to_string()).collect();
        assert_eq!(tags, vec!["stdout P abcd", "stdout P efgh"]);
        w.close_stream(Stream::Stdout, at(0)).unwrap();
        let tags: Vec<String> = read(&path).lines().map(|l| l[31..].to_string()).collect();
        assert_eq!(tags, vec!["stdout P abcd", "stdout P efgh", "stdout F i"]);
    }

    #[test]
    fn streams_keep_separate_pending_lines() {
        let (_d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stdout, b"out-a", at(0)).unwrap();
        w.write_chunk(Stream::Stderr, b"err-a", at(0)).unwrap();
        w.write_chunk(Stream::Stderr, b"\n", at(0)).unwrap();
        w.write_chunk(Stream::Stdout, b"\n", at(0)).unwrap();
        let tags: Vec<String> = read(&path).lines().map(|l| l[31..].to_string()).collect();
        assert_eq!(tags, vec!["stderr F err-a", "stdout F out-a"]);
    }

    #[test]
    fn eof_flushes_the_remainder_as_full() {
        let (_d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stderr, b"no newline", at(0)).unwrap();
        w.close_stream(Stream::Stderr, at(0)).unwrap();
        w.close_stream(Stream::Stdout, at(0)).unwrap();
        assert_eq!(
            read(&path),
            "2026-11-26T06:08:02.000000000Z stderr F no newline\n"
        );
    }

    #[test]
    fn no_path_discards_everything() {
        let mut w = CriLogWriter::open(None, 0).unwrap();
        w.write_chunk(Stream::Stdout, b"x\ny", at(0)).unwrap();
        w.close_stream(Stream::Stdout, at(0)).unwrap();
        w.reopen().unwrap();
        assert!(w.target().is_none());
    }

    #[test]
    fn appends_to_an_existing_file() {
        let (d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stdout, b"one\n", at(0)).unwrap();
        drop(w);
        let mut w = CriLogWriter::open(Some(&log_target(&d)), 100).unwrap();
        w.write_chunk(Stream::Stdout, b"two\n", at(0)).unwrap();
        assert_eq!(read(&path).lines().count(), 2);
    }

    #[test]
    fn reopen_starts_a_new_file_after_rotation() {
        let (_d, path, mut w) = writer(100);
        w.write_chunk(Stream::Stdout, b"before\nhalf", at(0))
            .unwrap();
        let rotated = path.with_extension("log.1");
        fs::rename(&path, &rotated).unwrap();
        w.reopen().unwrap();
        w.write_chunk(Stream::Stdout, b"-done\nafter\n", at(0))
            .unwrap();
        assert!(read(&rotated).ends_with("stdout F before\n"));
        let new: Vec<String> = read(&path).lines().map(|l| l[31..].to_string()).collect();
        assert_eq!(new, vec!["stdout F half-done", "stdout F after"]);
    }
}
