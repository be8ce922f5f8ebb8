//! The image's StopSignal.

use super::SpecError;

/// Signal names as the kernel numbers them on Linux (x86 and arm share these).
const SIGNALS: [(&str, i32); 31] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
];

/// The highest signal number on Linux (SIGRTMAX as the kernel defines it).
const SIGNAL_MAX: i32 = 64;

/// The signal StopContainer sends first: the image's StopSignal ("SIGQUIT", "QUIT", "quit",
/// "3", "SIGRTMIN+3") or SIGTERM when the image has none.
pub fn stop_signal(image: &oci_spec::image::Config) -> Result<i32, SpecError> {
    match image.stop_signal().as_deref().map(str::trim) {
        None | Some("") => Ok(libc::SIGTERM),
        Some(s) => parse_signal(s),
    }
}

/// Parses a signal the way Docker does: a number, or a name with or without `SIG`, any case.
/// Real-time signals are `RTMIN`, `RTMIN+n`, `RTMAX`, `RTMAX-n`, counted from the kernel's
/// SIGRTMIN (32), not glibc's (which reserves two for itself).
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    let invalid = || SpecError::InvalidStopSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return (1..=SIGNAL_MAX)
            .contains(&n)
            .then_some(n)
            .ok_or_else(invalid);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(n, _)| *n == name) {
        return Ok(*n);
    }
    const RTMIN: i32 = 32;
    let rt = if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(rest, '+').map(|o| RTMIN + o)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(rest, '-').map(|o| SIGNAL_MAX - o)
    } else {
        None
    };
    rt.filter(|n| (RTMIN..=SIGNAL_MAX).contains(n))
        .ok_or_else(invalid)
}

/// "" → 0, "+3" (with `sign` '+') → 3.
fn offset(rest: &str, sign: char) -> Option<i32> {
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix(sign)?
        .parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, Kind};

    fn image(sig: Option<&str>) -> oci_spec::image::Config {
        let mut c = oci_spec::image::Config::default();
        c.set_stop_signal(sig.map(String::from));
        c
    }

    #[test]
    fn default_is_sigterm() {
        assert_eq!(stop_signal(&image(None)).unwrap(), libc::SIGTERM);
        assert_eq!(stop_signal(&image(Some(""))).unwrap(), libc::SIGTERM);
    }

    #[test]
    fn names_and_numbers() {
        for s in ["SIGQUIT", "QUIT", "quit", "SigQuit", "3", " SIGQUIT "] {
            assert_eq!(stop_signal(&image(Some(s))).unwrap(), libc::SIGQUIT, "{s}");
        }
        assert_eq!(parse_signal("SIGWINCH").unwrap(), libc::SIGWINCH);
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), 35);
        assert_eq!(parse_signal("RTMAX").unwrap(), 64);
        assert_eq!(parse_signal("SIGRTMAX-1").unwrap(), 63);
    }

    #[test]
    fn bad_signals_are_invalid_argument() {
        for s in ["SIGNOPE", "0", "65", "-1", "RTMIN+40", "RTMIN-1", "SIG"] {
            let err = parse_signal(s).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidArgument, "{s}");
        }
    }
}
