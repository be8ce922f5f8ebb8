//! Talking to OCI / Docker v2 registries: endpoint choice (mirrors, plain HTTP),
//! credentials, manifest resolution (index → this host's platform), blob download.
//!
//! oci-client does the token dance and streams blobs (verifying their digests); this
//! module decides where to ask and what to accept, fetches manifests itself (reading
//! at most `MAX_MANIFEST_BYTES`, which oci-client cannot bound), and counts every
//! blob's bytes against its descriptor as they arrive.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{ImageIndex, ImageManifest};

use sha2::{Digest as _, Sha256};

use super::content::sha256_bytes;
use super::ImageError;
use crate::config::{parse_endpoint, Config, RegistryConfig};
use crate::error::error_chain;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests, indexes and image configs larger than this are refused (containerd's
/// limit for manifests and configs): they are read into memory whole.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
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
    /// The registry gave no token and the pull has no credentials: blobs are fetched
    /// with a plain GET (`fetch_blob`).
    pub open: bool,
}

pub struct Registry {
    /// One oci-client per (plain HTTP, credentials): oci-client keeps the first
    /// credentials it sees for a registry, so clients are never shared across credentials.
    clients: std::sync::Mutex<std::collections::HashMap<(bool, Credentials), Client>>,
    max_concurrent_download: usize,
    connect_timeout: Duration,
    read_timeout: Duration,
    registries: std::collections::BTreeMap<String, RegistryConfig>,
    /// Manifest requests (with oci-client's tokens), read with a size cap.
    http: reqwest::Client,
    /// Registries (`scheme://host`) that last answered an anonymous pull with no token
    /// to get: their manifests are asked for straight away (`get_manifest`).
    open: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Clients kept for distinct credentials before the cache is emptied.
const MAX_CLIENTS: usize = 64;

/// Open registries remembered before the set is emptied.
const MAX_OPEN: usize = 256;

impl Registry {
    pub fn new(config: &Config) -> Registry {
        Registry {
            clients: Default::default(),
            max_concurrent_download: config.images.max_concurrent_downloads,
            connect_timeout: Duration::from_secs(config.images.connect_timeout_secs),
            read_timeout: Duration::from_secs(config.images.read_timeout_secs),
            registries: config.registries.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(config.images.connect_timeout_secs))
                .read_timeout(Duration::from_secs(config.images.read_timeout_secs))
                .user_agent(concat!("proxrt/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "registry HTTP client: using defaults");
                    reqwest::Client::default()
                }),
            open: Default::default(),
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
        let (raw, token) = self
            .get_manifest(&client, endpoint, remote, creds, original)
            .await?;
        let open = token.is_none() && *creds == Credentials::Anonymous;
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
            let (mraw, _) = self
                .get_manifest(&client, endpoint, &by_digest, creds, original)
                .await?;
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
                open,
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
            open,
        })
    }

    /// GETs one manifest or index, with oci-client's token for the repository (or the
    /// basic credentials a registry without a token service takes), reading at most
    /// `MAX_MANIFEST_BYTES`: a bigger body fails as soon as it is seen to be bigger.
    /// Also returns the token (`None`: the registry gave none).
    async fn get_manifest(
        &self,
        client: &Client,
        endpoint: &Endpoint,
        remote: &Reference,
        creds: &Credentials,
        original: &Reference,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let host = &endpoint.host;
        let base = format!(
            "{scheme}://{registry}",
            scheme = if endpoint.plain_http { "http" } else { "https" },
            registry = remote.resolve_registry(),
        );
        let url = format!(
            "{base}/v2/{repository}/manifests/{reference}",
            repository = remote.repository(),
            reference = remote
                .digest()
                .unwrap_or_else(|| remote.tag().unwrap_or("latest")),
        );
        let what = format!("manifest of {}", original.whole());
        let http_error = |e: reqwest::Error| http_error(host, original, e);
        let anonymous = *creds == Credentials::Anonymous;
        // oci-client's `auth` asks the registry's /v2/ what it wants every time. A
        // registry that wanted nothing from an anonymous pull before is asked for the
        // manifest straight away (as containerd does); if it asks for credentials after
        // all (401), the token dance runs and the request is made again, once.
        let mut known_open = anonymous && self.is_open(&base);
        let (token, mut response) = loop {
            let token = if known_open {
                None
            } else {
                client
                    .auth(remote, &creds.to_oci(), RegistryOperation::Pull)
                    .await
                    .map_err(|e| registry_error(host, original, e))?
            };
            let mut request = self
                .http
                .get(&url)
                .header(reqwest::header::ACCEPT, ACCEPTED.join(", "));
            request = match (&token, creds) {
                (Some(token), _) => request.bearer_auth(token),
                (None, Credentials::Basic { username, password }) => {
                    request.basic_auth(username, Some(password))
                }
                (None, _) => request,
            };
            let response = request.send().await.map_err(http_error)?;
            if known_open && response.status() == reqwest::StatusCode::UNAUTHORIZED {
                self.set_open(&base, false);
                known_open = false;
                continue;
            }
            break (token, response);
        };
        let status = response.status();
        if !status.is_success() {
            let body = error_body(&mut response).await;
            return Err(status_error(host, original, status, &body));
        }
        let too_large = || ImageError::TooLarge {
            what: what.clone(),
            limit: MAX_MANIFEST_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if anonymous {
            self.set_open(&base, token.is_none());
        }
        Ok((body, token))
    }

    fn is_open(&self, base: &str) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.contains(base)
    }

    fn set_open(&self, base: &str, is_open: bool) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !is_open {
            open.remove(base);
            return;
        }
        if open.len() >= MAX_OPEN && !open.contains(base) {
            open.clear();
        }
        open.insert(base.to_owned());
    }

    /// Downloads one blob into `out` (a fresh ingest file). Its digest is checked as the
    /// stream ends (by oci-client, or here for an open registry); the bytes are counted
    /// as they come, and more than the descriptor's size fails at once, so a completed
    /// file holds exactly `descriptor.digest`. Each chunk written is also sent to `tee`
    /// while its receiver lives (an unpack reading the blob as it arrives); what `tee`
    /// gets is unverified until this returns `Ok`.
    pub async fn fetch_blob(
        &self,
        resolved: &Resolved,
        original: &Reference,
        descriptor: &OciDescriptor,
        out: std::fs::File,
        dest: &Path,
        mut tee: Option<&tokio::sync::mpsc::Sender<bytes::Bytes>>,
    ) -> Result<(), ImageError> {
        use tokio::io::AsyncWriteExt as _;
        let host = &resolved.endpoint.host;
        let what = format!("blob {} of {}", descriptor.digest, original.whole());
        let expected = u64::try_from(descriptor.size).map_err(|_| {
            ImageError::InvalidContent(format!("{what}: negative size {}", descriptor.size))
        })?;
        let mismatch = |got: String| ImageError::SizeMismatch {
            what: format!("{what} from {host}"),
            expected,
            got,
        };
        // oci-client sends its token for the repository; with none to send (an open
        // registry: most local registries and pull-through mirrors) it asks the
        // registry's /v2/ again before every blob, a round trip for nothing. Those
        // blobs are a plain GET, their digest checked here as they stream.
        let (content_length, mut stream, mut unchecked) = if resolved.open {
            let (length, stream) = self.get_blob(resolved, original, descriptor).await?;
            (length, stream, Some(Sha256::new()))
        } else {
            let sized = self
                .client(&resolved.endpoint, &resolved.creds)
                .pull_blob_stream(&resolved.remote, descriptor)
                .await
                .map_err(|e| registry_error(host, original, e))?;
            (sized.content_length, sized.stream, None)
        };
        if let Some(len) = content_length.filter(|n| *n > expected) {
            return Err(mismatch(len.to_string()));
        }
        let mut writer =
            tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(out));
        let write_err = |e| ImageError::io(format!("write {}", dest.display()), e);
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(host, &what, e))?;
            got += chunk.len() as u64;
            if got > expected {
                return Err(mismatch(format!("more than {expected}")));
            }
            writer.write_all(&chunk).await.map_err(write_err)?;
            if let Some(hasher) = unchecked.as_mut() {
                hasher.update(&chunk);
            }
            if let Some(tx) = tee {
                // An unpack that stopped (a layer that is not a tar) stops reading; the
                // download goes on, so that a corrupted blob still reads as one.
                if tx.send(chunk).await.is_err() {
                    tee = None;
                }
            }
        }
        if got != expected {
            return Err(mismatch(got.to_string()));
        }
        if let Some(hasher) = unchecked {
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != descriptor.digest {
                return Err(ImageError::Registry {
                    kind: crate::error::Kind::DataLoss,
                    message: format!(
                        "{what} from {host}: Expected digest {}, got {actual}",
                        descriptor.digest
                    ),
                });
            }
        }
        writer.flush().await.map_err(write_err)
    }

    /// A plain GET of a blob from an open registry (`Resolved::open`): no credentials
    /// to send, none to leak on a redirect. The caller checks the digest.
    async fn get_blob(
        &self,
        resolved: &Resolved,
        original: &Reference,
        descriptor: &OciDescriptor,
    ) -> Result<(Option<u64>, BlobStream), ImageError> {
        let host = &resolved.endpoint.host;
        let url = format!(
            "{scheme}://{registry}/v2/{repository}/blobs/{digest}",
            scheme = if resolved.endpoint.plain_http {
                "http"
            } else {
                "https"
            },
            registry = resolved.remote.resolve_registry(),
            repository = resolved.remote.repository(),
            digest = descriptor.digest,
        );
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_error(host, original, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = error_body(&mut response).await;
            return Err(status_error(host, original, status, &body));
        }
        let length = response.content_length();
        let stream = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other));
        Ok((length, Box::pin(stream)))
    }
}

/// The first 4 KiB or so of an error answer's body, for its message.
async fn error_body(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 4096 {
            break;
        }
    }
    body
}

/// A blob's bytes as they arrive.
type BlobStream = futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// An error from a blob stream: a digest mismatch (oci-client's, as the stream ends),
/// or the connection failing.
fn stream_error(host: &str, what: &str, e: std::io::Error) -> ImageError {
    use crate::error::Kind;
    let digest = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestError>());
    match digest {
        // oci-client's message already says "Expected <digest>, got <digest>".
        Some(d) => ImageError::Registry {
            kind: Kind::DataLoss,
            message: format!("{what} from {host}: {d}"),
        },
        None => ImageError::Registry {
            kind: Kind::Unavailable,
            message: format!("{what} from {host}: {}", error_chain(&e)),
        },
    }
}

fn http_error(host: &str, original: &Reference, e: reqwest::Error) -> ImageError {
    let message = if e.is_connect() || e.is_timeout() {
        format!("registry {host} unreachable: {}", error_chain(&e))
    } else {
        format!(
            "registry {host} for {}: {}",
            original.whole(),
            error_chain(&e)
        )
    };
    ImageError::Registry {
        kind: crate::error::Kind::Unavailable,
        message,
    }
}

/// A registry's non-2xx answer to a manifest request.
fn status_error(
    host: &str,
    original: &Reference,
    status: reqwest::StatusCode,
    body: &[u8],
) -> ImageError {
    use crate::error::Kind;
    let name = original.whole();
    let text: String = String::from_utf8_lossy(body).chars().take(512).collect();
    let (kind, message) = match status.as_u16() {
        404 => (Kind::NotFound, format!("{name} not found on {host}")),
        401 | 403 => (
            Kind::PermissionDenied,
            format!("registry {host} refused access to {name} ({status}): {text}"),
        ),
        _ => (
            Kind::Unavailable,
            format!("registry {host} answered {status} for {name}: {text}"),
        ),
    };
    ImageError::Registry { kind, message }
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
