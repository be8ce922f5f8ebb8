//! How the client trusts a Proxmox node.
//!
//! A PVE node's certificate is signed by the cluster's own CA (`/etc/pve/pve-root-ca.pem`)
//! and names the node's host name, which the client often does not use (it may connect by
//! IP). Proxmox's own tools therefore pin the SHA-256 fingerprint of the leaf certificate
//! and skip the host name check; proxrt offers the same, or a CA file with full
//! verification, or the system roots (a node with an ACME certificate), or, only when
//! asked, no verification at all. Pinning and insecure mode still verify the handshake
//! signatures: the server must hold the key of the certificate it shows.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::ProxmoxError;

/// A SHA-256 certificate fingerprint, written `AA:BB:…` (32 bytes) as `pvenode cert info`
/// prints it; parsing accepts any case and also 64 hex digits without colons.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Fingerprint, String> {
        let t = text.trim();
        let hex_digits: String = if t.contains(':') {
            let parts: Vec<&str> = t.split(':').collect();
            if parts.len() != 32 || parts.iter().any(|p| p.len() != 2) {
                return Err(format!(
                    "{text:?} is not a SHA-256 fingerprint (32 hex byte pairs like AA:BB:…)"
                ));
            }
            parts.concat()
        } else {
            t.to_owned()
        };
        let bytes = hex::decode(&hex_digits)
            .map_err(|_| format!("{text:?} is not a SHA-256 fingerprint: not hex"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            format!("{text:?} is not a SHA-256 fingerprint (32 bytes, AA:BB:… form)")
        })?;
        Ok(Fingerprint(arr))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// How server certificates are checked.
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// The system's trust roots, with host name check (e.g. an ACME certificate).
    System,
    /// A PEM file of CA certificates (e.g. a copy of /etc/pve/pve-root-ca.pem), with host
    /// name check.
    CaFile(PathBuf),
    /// PEM text of CA certificates (tests, embedded configs).
    CaPem(Vec<u8>),
    /// The leaf certificate's SHA-256 must match; no chain or host name check.
    Fingerprint(Fingerprint),
    /// No certificate check at all (only when asked for).
    Insecure,
}

/// The error a pinned-fingerprint check fails with, found again in reqwest's error chain
/// to give the caller a typed `FingerprintMismatch`.
#[derive(Debug)]
pub(crate) struct FingerprintMismatch {
    pub expected: Fingerprint,
    pub actual: Fingerprint,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: pinned {}, server presented {}",
            self.expected, self.actual
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts the leaf whose fingerprint is pinned (or any, when `expected` is None:
/// insecure mode), then verifies handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct PinnedLeaf {
    expected: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = self.expected else {
            return Ok(ServerCertVerified::assertion());
        };
        let actual = Fingerprint::of_der(end_entity.as_ref());
        // Not constant-time: the fingerprint is public (any client can read the leaf).
        if actual == expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(FingerprintMismatch { expected, actual })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn ca_roots(pem: &[u8], path: &Path) -> Result<rustls::RootCertStore, ProxmoxError> {
    let bad = |message: String| ProxmoxError::CaFile {
        path: path.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// The rustls config for a mode; `None` for `System`, which reqwest's own rustls setup
/// (the platform verifier) handles.
pub(crate) fn client_config(mode: &TlsMode) -> Result<Option<rustls::ClientConfig>, ProxmoxError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxmoxError::Config(format!("TLS setup: {e}")))?;
    let mut config = match mode {
        TlsMode::System => return Ok(None),
        TlsMode::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| ProxmoxError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            builder
                .with_root_certificates(ca_roots(&pem, path)?)
                .with_no_client_auth()
        }
        TlsMode::CaPem(pem) => builder
            .with_root_certificates(ca_roots(pem, Path::new("<inline PEM>"))?)
            .with_no_client_auth(),
        TlsMode::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedLeaf {
                expected: Some(*fp),
                provider,
            }))
            .with_no_client_auth(),
        TlsMode::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedLeaf {
                expected: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    // pveproxy speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// What went wrong in a TLS handshake, if that is what `err` is: the fingerprint
/// mismatch, or another rustls error's text.
pub(crate) fn tls_failure(
    err: &(dyn std::error::Error + 'static),
) -> Option<Result<(Fingerprint, Fingerprint), String>> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(m) = e.downcast_ref::<FingerprintMismatch>() {
            return Some(Ok((m.expected, m.actual)));
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            if let rustls::Error::InvalidCertificate(CertificateError::Other(o)) = r {
                if let Some(m) = o.0.downcast_ref::<FingerprintMismatch>() {
                    return Some(Ok((m.expected, m.actual)));
                }
            }
            return Some(Err(r.to_string()));
        }
        // io::Error hides its inner error from `source()`: look inside.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = tls_failure(inner) {
                    return Some(found);
                }
            }
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str =
        "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

    #[test]
    fn fingerprints_parse_in_any_case_and_print_upper() {
        let a: Fingerprint = FP.parse().unwrap();
        let b: Fingerprint = FP.to_lowercase().parse().unwrap();
        let c: Fingerprint = FP.replace(':', "").parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), FP);
        assert_eq!(a.0[0], 0xAA);
    }

    #[test]
    fn malformed_fingerprints_are_refused() {
        for bad in [
            "",
            "AA:BB",
            &FP[3..],
            &FP.replace("AA:", "A:A"),
            &FP.replace("FF", "GG"),
            &format!("{FP}:00"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mismatch_is_found_in_an_error_chain() {
        let fp: Fingerprint = FP.parse().unwrap();
        let other = Fingerprint([0; 32]);
        let rustls_err = rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(FingerprintMismatch {
                expected: fp,
                actual: other,
            })),
        ));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        assert_eq!(tls_failure(&io), Some(Ok((fp, other))));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_failure(&plain), None);
    }

    #[test]
    fn bad_ca_files_are_refused() {
        assert!(matches!(
            client_config(&TlsMode::CaPem(b"not pem".to_vec())),
            Err(ProxmoxError::CaFile { .. })
        ));
        assert!(matches!(
            client_config(&TlsMode::CaFile("/nonexistent/ca.pem".into())),
            Err(ProxmoxError::CaFile { .. })
        ));
        assert!(client_config(&TlsMode::Insecure).unwrap().is_some());
        assert!(client_config(&TlsMode::System).unwrap().is_none());
    }
}
