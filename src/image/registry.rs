//! Talking to OCI / Docker v2 registries: endpoint choice (mirrors, plain HTTP),
//! credentials, manifest resolution (index → this host's platform), blob download.
//!
//! The HTTP work is oci-client's (it verifies every blob's digest while streaming);
//! this module decides where to ask and what to accept.

use std::path::Path;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};

use super::content::sha256_bytes;
use super::ImageError;
use crate::config::{parse_endpoint, Config, RegistryConfig};
use crate::error::error_chain;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED: &[&str] = &[
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// Registry credentials from a CRI AuthConfig.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    /// CRI AuthConfig fields → credentials: a registry token wins, then
    /// username/password, then the base64 `auth` ("user:password").
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        registry_token: &str,
    ) -> Result<Credentials, ImageError> {
        if !registry_token.is_empty() {
            return Ok(Credentials::Bearer(registry_token.to_owned()));
        }
        if !username.is_empty() {
            return Ok(Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            });
        }
        if !auth.is_empty() {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ImageError::InvalidAuth("auth is not base64 of \"user:password\"".into())
                })?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| {
                ImageError::InvalidAuth("auth does not decode to \"user:password\"".into())
            })?;
            return Ok(Credentials::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            });
        }
        Ok(Credentials::Anonymous)
    }

    fn to_oci(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// One place to fetch an image from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub plain_http: bool,
    pub mirror: bool,
}

/// A manifest resolved for this host: the image manifest and, when the reference
/// named an index, the index too.
pub struct Resolved {
    pub endpoint: Endpoint,
    /// The credentials the manifest was fetched with (blobs use the same).
    pub creds: Credentials,
    /// The reference rewritten for the endpoint (mirror host, same repository).
    pub remote: Reference,
    pub manifest: ImageManifest,
    pub manifest_raw: Vec<u8>,
    pub manifest_digest: String,
    pub index: Option<(Vec<u8>, String)>,
}

pub struct Registry {
    /// One oci-client per (plain HTTP, credentials): oci-client keeps the first
    /// credentials it sees for a registry, so clients are never shared across credentials.
    clients: std::sync::Mutex<std::collections::HashMap<(bool, Credentials), Client>>,
    max_concurrent_download: usize,
    connect_timeout: Duration,
    read_timeout: Duration,
    registries: std::collections::BTreeMap<String, RegistryConfig>,
}

/// Clients kept for distinct credentials before the cache is emptied.
const MAX_CLIENTS: usize = 64;

impl Registry {
    pub fn new(config: &Config) -> Registry {
        Registry {
            clients: Default::default(),
            max_concurrent_download: config.images.max_concurrent_downloads,
            connect_timeout: Duration::from_secs(config.images.connect_timeout_secs),
            read_timeout: Duration::from_secs(config.images.read_timeout_secs),
            registries: config.registries.clone(),
        }
    }

    /// Mirrors in configured order, then the registry itself (unless `mirrors_only`).
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let cfg = self.registries.get(registry).cloned().unwrap_or_default();
        let mut out: Vec<Endpoint> = cfg
            .mirrors
            .iter()
            .filter_map(|m| parse_endpoint(m))
            .map(|(host, plain_http)| Endpoint {
                host,
                plain_http,
                mirror: true,
            })
            .collect();
        if !cfg.mirrors_only {
            out.push(Endpoint {
                host: registry.to_owned(),
                plain_http: cfg.plain_http || is_loopback(registry),
                mirror: false,
            });
        }
        out
    }

    fn client(&self, endpoint: &Endpoint, creds: &Credentials) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|(_, c), _| *c == Credentials::Anonymous);
        }
        clients
            .entry((endpoint.plain_http, creds.clone()))
            .or_insert_with(|| {
                Client::new(ClientConfig {
                    protocol: if endpoint.plain_http {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    platform_resolver: None,
                    max_concurrent_download: self.max_concurrent_download,
                    connect_timeout: Some(self.connect_timeout),
                    read_timeout: Some(self.read_timeout),
                    user_agent: concat!("proxrt/", env!("CARGO_PKG_VERSION")),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// Finds the image manifest for `reference`, trying each endpoint in turn.
    /// Credentials go to the registry itself only, never to a mirror.
    pub async fn resolve(
        &self,
        reference: &Reference,
        creds: &Credentials,
    ) -> Result<Resolved, ImageError> {
        let mut failures = Vec::new();
        for endpoint in self.endpoints(reference.registry()) {
            let remote = rewrite(reference, &endpoint);
            let creds = if endpoint.mirror {
                Credentials::Anonymous
            } else {
                creds.clone()
            };
            match self.resolve_at(&endpoint, &remote, &creds, reference).await {
                Ok(resolved) => return Ok(resolved),
                Err(e) if endpoint.mirror => {
                    tracing::info!(mirror = %endpoint.host, error = %e, "mirror failed, trying next endpoint");
                    failures.push(format!("{}: {e}", endpoint.host));
                }
                Err(e) => {
                    if failures.is_empty() {
                        return Err(e);
                    }
                    failures.push(format!("{}: {e}", endpoint.host));
                    return Err(ImageError::AllEndpointsFailed {
                        reference: reference.whole(),
                        kind: e.kind_of(),
                        details: failures.join("; "),
                    });
                }
            }
        }
        Err(ImageError::AllEndpointsFailed {
            reference: reference.whole(),
            kind: crate::error::Kind::Unavailable,
            details: failures.join("; "),
        })
    }

    async fn resolve_at(
        &self,
        endpoint: &Endpoint,
        remote: &Reference,
        creds: &Credentials,
        original: &Reference,
    ) -> Result<Resolved, ImageError> {
        let client = self.client(endpoint, creds);
        let auth = &creds.to_oci();
        let (raw, _) = client
            .pull_manifest_raw(remote, auth, ACCEPTED)
            .await
            .map_err(|e| registry_error(&endpoint.host, original, e))?;
        let raw = raw.to_vec();
        let digest = sha256_bytes(&raw);
        if let Some(want) = remote.digest() {
            if want != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {}", original.whole()),
                    expected: want.to_owned(),
                    actual: digest,
                });
            }
        }
        let media_type = media_type_of(&raw);
        if media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST {
            let index: ImageIndex = serde_json::from_slice(&raw).map_err(|e| {
                ImageError::InvalidContent(format!("image index of {}: {e}", original.whole()))
            })?;
            let chosen = select_platform(&index).ok_or_else(|| ImageError::NoPlatform {
                reference: original.whole(),
                platform: host_platform_name(),
            })?;
            let by_digest = remote.clone_with_digest(chosen.clone());
            let (mraw, _) = client
                .pull_manifest_raw(&by_digest, auth, ACCEPTED)
                .await
                .map_err(|e| registry_error(&endpoint.host, original, e))?;
            let mraw = mraw.to_vec();
            let mdigest = sha256_bytes(&mraw);
            if mdigest != chosen {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {}", original.whole()),
                    expected: chosen,
                    actual: mdigest,
                });
            }
            let manifest = parse_manifest(&mraw, original)?;
            return Ok(Resolved {
                endpoint: endpoint.clone(),
                creds: creds.clone(),
                remote: remote.clone(),
                manifest,
                manifest_raw: mraw,
                manifest_digest: mdigest,
                index: Some((raw, digest)),
            });
        }
        let manifest = parse_manifest(&raw, original)?;
        Ok(Resolved {
            endpoint: endpoint.clone(),
            creds: creds.clone(),
            remote: remote.clone(),
            manifest,
            manifest_raw: raw,
            manifest_digest: digest,
            index: None,
        })
    }

    /// Downloads one blob to `dest`; oci-client checks the digest while streaming and
    /// fails on a mismatch, so a completed file holds exactly `descriptor.digest`.
    pub async fn fetch_blob(
        &self,
        resolved: &Resolved,
        original: &Reference,
        descriptor: &OciDescriptor,
        dest: &Path,
    ) -> Result<(), ImageError> {
        let file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| ImageError::io(format!("create {}", dest.display()), e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        self.client(&resolved.endpoint, &resolved.creds)
            .pull_blob(&resolved.remote, descriptor, &mut writer)
            .await
            .map_err(|e| registry_error(&resolved.endpoint.host, original, e))?;
        use tokio::io::AsyncWriteExt as _;
        writer
            .flush()
            .await
            .map_err(|e| ImageError::io(format!("write {}", dest.display()), e))
    }
}

fn rewrite(reference: &Reference, endpoint: &Endpoint) -> Reference {
    if !endpoint.mirror {
        return reference.clone();
    }
    let repo = reference.repository().to_owned();
    let host = endpoint.host.clone();
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => Reference::with_digest(host, repo, d.to_owned()),
        (None, t) => Reference::with_tag(host, repo, t.unwrap_or("latest").to_owned()),
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn media_type_of(raw: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(raw) {
        Ok(p) if !p.media_type.is_empty() => p.media_type,
        // OCI allows an index without mediaType; it has "manifests".
        Ok(p) if p.manifests.is_some() => MEDIA_OCI_INDEX.to_owned(),
        _ => MEDIA_OCI_MANIFEST.to_owned(),
    }
}

fn parse_manifest(raw: &[u8], original: &Reference) -> Result<ImageManifest, ImageError> {
    let media_type = media_type_of(raw);
    if media_type != MEDIA_OCI_MANIFEST && media_type != MEDIA_DOCKER_MANIFEST {
        return Err(ImageError::InvalidContent(format!(
            "manifest of {} has unsupported media type {media_type}",
            original.whole()
        )));
    }
    serde_json::from_slice(raw)
        .map_err(|e| ImageError::InvalidContent(format!("manifest of {}: {e}", original.whole())))
}

/// `linux/amd64`, `linux/arm64/v8`: the platform proxrt pulls for.
pub fn host_platform_name() -> String {
    let (arch, variant) = host_arch();
    match variant {
        Some(v) => format!("linux/{arch}/{v}"),
        None => format!("linux/{arch}"),
    }
}

fn host_arch() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    }
}

/// Picks this host's manifest from an index: OS linux, our architecture, and for
/// arm the variant when the index states one.
pub fn select_platform(index: &ImageIndex) -> Option<String> {
    let (arch, variant) = host_arch();
    let mut fallback = None;
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        if p.os().to_string() != "linux" || p.architecture().to_string() != arch {
            continue;
        }
        match (p.variant().as_deref(), variant) {
            (Some(v), Some(want)) if v == want => return Some(m.digest().to_string()),
            (None, _) | (_, None) => {
                fallback.get_or_insert_with(|| m.digest().to_string());
            }
            _ => {}
        }
    }
    fallback
}

fn registry_error(host: &str, original: &Reference, e: OciDistributionError) -> ImageError {
    use crate::error::Kind;
    let name = original.whole();
    let (kind, message) = match &e {
        OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => (
            Kind::Unavailable,
            format!("registry {host} unreachable: {}", error_chain(re)),
        ),
        OciDistributionError::RequestError(re) => (
            Kind::Unavailable,
            format!("registry {host}: {}", error_chain(re)),
        ),
        OciDistributionError::ImageManifestNotFoundError(_) => {
            (Kind::NotFound, format!("{name} not found on {host}"))
        }
        OciDistributionError::AuthenticationFailure(m)
        | OciDistributionError::UnauthorizedError { url: m } => (
            Kind::PermissionDenied,
            format!("registry {host} refused the credentials for {name}: {m}"),
        ),
        // oci-client's message already says "Expected <digest>, got <digest>".
        OciDistributionError::DigestError(d) => {
            (Kind::DataLoss, format!("blob of {name} from {host}: {d}"))
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            (Kind::NotFound, format!("{name} not found on {host}"))
        }
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => (
            Kind::PermissionDenied,
            format!("registry {host} refused access to {name}: {message}"),
        ),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let not_found = codes.iter().any(|c| c.contains("Unknown"));
            let denied = codes
                .iter()
                .any(|c| c.contains("Unauthorized") || c.contains("Denied"));
            let kind = if not_found {
                Kind::NotFound
            } else if denied {
                Kind::PermissionDenied
            } else {
                Kind::Unavailable
            };
            (kind, format!("registry {host} answered for {name}: {e}"))
        }
        _ => (
            Kind::Unavailable,
            format!("registry {host} for {name}: {e}"),
        ),
    };
    ImageError::Registry { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(toml: &str) -> Registry {
        Registry::new(&Config::from_toml_str(toml, Path::new("t.toml")).unwrap())
    }

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let r = registry("[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\", \"https://m.example\"]\n");
        let eps = r.endpoints("registry.k8s.io");
        assert_eq!(eps.len(), 3);
        assert_eq!(
            (eps[0].host.as_str(), eps[0].plain_http, eps[0].mirror),
            ("127.0.0.1:5000", true, true)
        );
        assert_eq!(
            (eps[1].host.as_str(), eps[1].plain_http),
            ("m.example", false)
        );
        assert_eq!(
            (eps[2].host.as_str(), eps[2].plain_http, eps[2].mirror),
            ("registry.k8s.io", false, false)
        );
    }

    #[test]
    fn mirrors_only_and_plain_http() {
        let r = registry("[registries.\"a.io\"]\nmirrors = [\"http://127.0.0.1:1\"]\nmirrors_only = true\n[registries.\"b.io:80\"]\nplain_http = true\n");
        assert_eq!(r.endpoints("a.io").len(), 1);
        assert!(r.endpoints("b.io:80")[0].plain_http);
        assert!(!r.endpoints("c.io")[0].plain_http);
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.k8s.io", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn mirror_rewrite_keeps_repository_and_tag() {
        let r: Reference = "registry.k8s.io/pause:3.9".parse().unwrap();
        let ep = Endpoint {
            host: "127.0.0.1:5000".into(),
            plain_http: true,
            mirror: true,
        };
        assert_eq!(rewrite(&r, &ep).whole(), "127.0.0.1:5000/pause:3.9");
    }

    #[test]
    fn credentials_from_cri() {
        assert_eq!(
            Credentials::from_cri("", "", "", "").unwrap(),
            Credentials::Anonymous
        );
        assert_eq!(
            Credentials::from_cri("", "", "", "tok").unwrap(),
            Credentials::Bearer("tok".into())
        );
        assert_eq!(
            Credentials::from_cri("", "", "dTpw", "").unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert!(Credentials::from_cri("", "", "!!", "").is_err());
        assert!(format!(
            "{:?}",
            Credentials::from_cri("u", "secret", "", "").unwrap()
        )
        .contains("***"));
    }

    #[test]
    fn platform_selection() {
        let arch = host_arch().0;
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_INDEX}","manifests":[
            {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"{other}"}}}},
            {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"windows","architecture":"{arch}"}}}},
            {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"}}}}]}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        let index: ImageIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(select_platform(&index), Some(d('c')));
        assert_eq!(media_type_of(json.as_bytes()), MEDIA_OCI_INDEX);
    }
}
