//! The API token secret. It is a bearer credential for the whole Proxmox cluster (within
//! the token's privileges), so it must never reach a log line, a trace field, an error
//! message or a `Debug` dump: the type redacts itself and only `expose` gives the text,
//! which the transport uses once, to build a header marked sensitive.

use std::fmt;
use std::path::Path;

use super::error::ProxmoxError;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// Reads a token secret file: the secret on its first line (what `pveum user token add`
    /// prints as `value`); surrounding whitespace is ignored. Errors name the file, never
    /// its content.
    pub fn from_file(path: &Path) -> Result<Secret, ProxmoxError> {
        let bad = |message: String| ProxmoxError::TokenFile {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let secret = text.lines().next().unwrap_or("").trim();
        if secret.is_empty() {
            return Err(bad("the file is empty".into()));
        }
        // The secret goes into an HTTP header: refuse what a header cannot carry rather
        // than fail later with a message that might quote it.
        if secret.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad(
                "the secret contains spaces or control characters".into()
            ));
        }
        Ok(Secret(secret.to_owned()))
    }

    /// The secret itself: only for building the Authorization header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("0a1b2c3d-dead-beef");
        assert!(!format!("{s:?}").contains("dead"));
        assert!(!format!("{s}").contains("dead"));
        assert_eq!(s.expose(), "0a1b2c3d-dead-beef");
    }

    #[test]
    fn file_is_trimmed_and_errors_do_not_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  abc-123 \n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "abc-123");
        std::fs::write(&p, "abc 123\n").unwrap();
        let err = Secret::from_file(&p).unwrap_err().to_string();
        assert!(!err.contains("abc"), "{err}");
        std::fs::write(&p, "\n").unwrap();
        assert!(Secret::from_file(&p).is_err());
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }
}
