//! CRI log files: what a container writes on stdout/stderr, as kubelet reads it.
//!
//! Each line of the file is `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\n`
//! (the format kubelet's log parser and `kubectl logs` expect). A line longer than the
//! configured maximum is split into `P` (partial) pieces followed by the `F` (full) end.
//!
//! The writer runs inside each container's monitor process (see `crate::monitor`), which
//! owns the container's stdout/stderr pipes; it is plain blocking code with no threads.

mod target;
mod writer;

pub use target::{split_confined, LogTarget};
pub use writer::{CriLogWriter, Stream};
