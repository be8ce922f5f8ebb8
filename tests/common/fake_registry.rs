//! A registry in the test process, on 127.0.0.1, that serves images the way a hostile or
//! broken registry would: a manifest bigger than any real one, a blob longer than its
//! descriptor, a blob that trickles a byte at a time, a blob that stops halfway until
//! the test lets it go on. HTTP/1.1, one response per connection (`Connection: close`),
//! bodies without Content-Length where the test wants the client to count.
//!
//! Everything runs on the test's tokio runtime and ends with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::sha256;

/// How a blob is served.
#[derive(Clone)]
pub enum Serve {
    /// Whole, with Content-Length.
    Normal,
    /// The blob, then `extra` more bytes, without Content-Length (the client must count).
    Longer { extra: u64 },
    /// One byte every `every`, without end (a registry that never times out a read).
    Drip { every: Duration },
    /// The first half, then nothing until `gate` is notified, then the rest.
    Stall { gate: Arc<Notify> },
}

/// One image: manifest, config and one layer, in memory.
#[derive(Clone, Debug)]
pub struct FakeImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer: Vec<u8>,
    pub layer_digest: String,
}

impl FakeImage {
    /// A one-layer image of `tar` (uncompressed). `pad` bytes of annotation make the
    /// manifest that much bigger, and still valid.
    pub fn new(tar: Vec<u8>, pad: usize) -> FakeImage {
        let layer_digest = sha256(&tar);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .expect("config JSON");
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": tar.len()}],
            "annotations": {"padding": "x".repeat(pad)},
        }))
        .expect("manifest JSON");
        FakeImage {
            manifest_digest: sha256(&manifest),
            manifest,
            config,
            config_digest,
            layer_digest,
            layer: tar,
        }
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A tar with one file of `size` bytes of `fill` at `path`.
pub fn tar_with(path: &str, size: usize, fill: u8) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, vec![fill; size].as_slice())
        .expect("tar entry");
    builder.into_inner().expect("finish tar")
}

#[derive(Default)]
struct State {
    /// "<repo>:<tag>" and "<repo>@<digest>" → manifest bytes
    manifests: HashMap<String, Vec<u8>>,
    /// digest → (bytes, how)
    blobs: HashMap<String, (Vec<u8>, Serve)>,
}

/// The registry; `addr` is `127.0.0.1:PORT`.
pub struct FakeRegistry {
    pub addr: String,
    state: Arc<Mutex<State>>,
    /// Bytes of blob bodies written to clients, all blobs together.
    pub blob_bytes_sent: Arc<AtomicU64>,
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, se) = (state.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(handle(conn, st.clone(), se.clone()));
            }
        });
        FakeRegistry {
            addr,
            state,
            blob_bytes_sent: sent,
        }
    }

    /// Serves `image` as `<repo>:<tag>`, its layer as `layer`; returns the pull name.
    pub fn add(&self, repo: &str, tag: &str, image: &FakeImage, layer: Serve) -> String {
        let mut s = self.state.lock().unwrap();
        s.manifests
            .insert(format!("{repo}:{tag}"), image.manifest.clone());
        s.manifests.insert(
            format!("{repo}@{}", image.manifest_digest),
            image.manifest.clone(),
        );
        s.blobs.insert(
            image.config_digest.clone(),
            (image.config.clone(), Serve::Normal),
        );
        s.blobs
            .insert(image.layer_digest.clone(), (image.layer.clone(), layer));
        format!("{}/{repo}:{tag}", self.addr)
    }
}

async fn handle(mut conn: TcpStream, state: Arc<Mutex<State>>, sent: Arc<AtomicU64>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if path == "/v2/" || path == "/v2" {
        let _ = respond(&mut conn, "200 OK", "application/json", b"{}", head_only).await;
        return;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        let _ = respond(&mut conn, "404 Not Found", "text/plain", b"", head_only).await;
        return;
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let key = if reference.starts_with("sha256:") {
            format!("{repo}@{reference}")
        } else {
            format!("{repo}:{reference}")
        };
        let body = state.lock().unwrap().manifests.get(&key).cloned();
        let _ = match body {
            Some(b) => {
                respond(
                    &mut conn,
                    "200 OK",
                    "application/vnd.oci.image.manifest.v1+json",
                    &b,
                    head_only,
                )
                .await
            }
            None => not_found(&mut conn, "MANIFEST_UNKNOWN").await,
        };
        return;
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        let blob = state.lock().unwrap().blobs.get(digest).cloned();
        let Some((bytes, how)) = blob else {
            let _ = not_found(&mut conn, "BLOB_UNKNOWN").await;
            return;
        };
        let _ = serve_blob(&mut conn, &bytes, how, &sent).await;
        return;
    }
    let _ = not_found(&mut conn, "NAME_UNKNOWN").await;
}

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    if !head_only {
        conn.write_all(body).await?;
    }
    conn.shutdown().await
}

async fn not_found(conn: &mut TcpStream, code: &str) -> std::io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"not here"}}]}}"#);
    respond(
        conn,
        "404 Not Found",
        "application/json",
        body.as_bytes(),
        false,
    )
    .await
}

async fn serve_blob(
    conn: &mut TcpStream,
    bytes: &[u8],
    how: Serve,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let open_ended = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                      Connection: close\r\n\r\n";
    match how {
        Serve::Normal => {
            respond(conn, "200 OK", "application/octet-stream", bytes, false).await?;
            sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        Serve::Longer { extra } => {
            conn.write_all(open_ended.as_bytes()).await?;
            conn.write_all(bytes).await?;
            sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            let chunk = vec![0u8; 64 << 10];
            let mut left = extra;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                conn.write_all(&chunk[..n]).await?;
                sent.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            conn.shutdown().await?;
        }
        Serve::Drip { every } => {
            conn.write_all(open_ended.as_bytes()).await?;
            for b in bytes.iter().cycle() {
                conn.write_all(std::slice::from_ref(b)).await?;
                conn.flush().await?;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(every).await;
            }
        }
        Serve::Stall { gate } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            conn.write_all(head.as_bytes()).await?;
            let half = bytes.len() / 2;
            conn.write_all(&bytes[..half]).await?;
            conn.flush().await?;
            sent.fetch_add(half as u64, Ordering::SeqCst);
            gate.notified().await;
            conn.write_all(&bytes[half..]).await?;
            sent.fetch_add((bytes.len() - half) as u64, Ordering::SeqCst);
            conn.shutdown().await?;
        }
    }
    Ok(())
}
