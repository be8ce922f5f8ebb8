//! `image import` end to end against a real image store (as root: layers unpack with
//! their owners and device nodes): OCI layout directories, OCI archives (plain and
//! gzip) and docker-archives, built here from `hack/busybox-image`.
//!
//! Every test opens its own store under a temp dir; failure tests check that the
//! store is left empty (no blobs, no snapshots, no ingest files).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use proxrt::config::Config;
use proxrt::error::{Classify, Kind};
use proxrt::image::{ImageError, Images};
use sha2::{Digest, Sha256};

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (passing) without root, which unpacking layers needs.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

struct Store {
    _dir: tempfile::TempDir,
    state: PathBuf,
    images: Arc<Images>,
}

impl Store {
    fn open() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let images = Arc::new(Images::open(&state, &Config::default()).unwrap());
        Store {
            _dir: dir,
            state,
            images,
        }
    }

    fn count(&self, sub: &str) -> usize {
        fs::read_dir(self.state.join("images").join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Blobs, snapshots and ingest files: all zero after a failed import into an empty store.
    fn leftovers(&self) -> (usize, usize, usize) {
        (
            self.count("content/blobs/sha256"),
            self.count("snapshots"),
            self.count("content/ingest"),
        )
    }

    async fn import(
        &self,
        path: &Path,
        tags: &[&str],
    ) -> Result<Vec<Arc<proxrt::image::ImageEntry>>, ImageError> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        proxrt::image::import::import(&self.images, path, &tags).await
    }

    /// The image is found by `name` with `id`, and its rootfs has busybox.
    fn assert_busybox(&self, name: &str, id: &str) {
        let entry = self
            .images
            .status(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(entry.record.id, id);
        let lowers = self.images.lower_dirs(&entry).unwrap();
        assert!(!lowers.is_empty());
        assert!(lowers.iter().all(|l| l.is_dir()), "{lowers:?}");
        assert!(
            lowers.iter().any(|l| l.join("bin/busybox").is_file()),
            "no bin/busybox in {lowers:?}"
        );
    }
}

/// A busybox OCI layout from the repo script.
fn busybox_layout(out: &Path, name: Option<&str>) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/busybox-image");
    let mut cmd = Command::new(script);
    cmd.arg(out);
    cmd.args(name);
    let status = cmd.status().unwrap();
    assert!(status.success(), "hack/busybox-image failed");
    out.to_owned()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// (manifest, config id, layer digests) of a single-image layout.
fn layout_digests(layout: &Path) -> (String, String, Vec<String>) {
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let manifest = read_json(&blob(layout, &manifest_digest));
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    (manifest_digest, config, layers)
}

fn tar_dir(dir: &Path, out: &Path, gzip: bool) -> PathBuf {
    let flags = if gzip { "-czf" } else { "-cf" };
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg(flags)
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    out.to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn append_file(builder: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data).unwrap();
}

/// Appends an entry whose name is written raw, bypassing the tar crate's own checks.
fn append_raw_name(builder: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

/// One image of a hand-made docker-archive.
struct DockerImage {
    config: Vec<u8>,
    repo_tags: Vec<String>,
}

/// A `docker save`-style tar of `images`, which all use the layout's single layer
/// (uncompressed, or gzip as stored when `gzip_layer`); `manifest.json` goes last as
/// docker writes it. `layer_path` overrides the name manifest.json gives the layer.
fn docker_archive(
    layout: &Path,
    out: &Path,
    images: &[DockerImage],
    gzip_layer: bool,
    layer_path: Option<&str>,
) -> PathBuf {
    let (_, _, layers) = layout_digests(layout);
    let stored = fs::read(blob(layout, &layers[0])).unwrap();
    let layer = if gzip_layer { stored } else { gunzip(&stored) };
    let layer_name = format!("{}/layer.tar", sha256_hex(&layer));
    let mut builder = tar::Builder::new(fs::File::create(out).unwrap());
    append_file(&mut builder, &layer_name, &layer);
    let mut manifest = Vec::new();
    for image in images {
        let config_name = format!("{}.json", sha256_hex(&image.config));
        append_file(&mut builder, &config_name, &image.config);
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": image.repo_tags,
            "Layers": [layer_path.unwrap_or(&layer_name)],
        }));
    }
    append_file(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    builder.into_inner().unwrap().flush().unwrap();
    out.to_owned()
}

fn layout_config(layout: &Path) -> Vec<u8> {
    let (_, config, _) = layout_digests(layout);
    fs::read(blob(layout, &config)).unwrap()
}

/// A copy of `layout` with one byte of its layer blob flipped.
fn corrupt_copy(layout: &Path, out: &Path) -> PathBuf {
    let status = Command::new("cp")
        .arg("-a")
        .arg(layout)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    let (_, _, layers) = layout_digests(out);
    let path = blob(out, &layers[0]);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    out.to_owned()
}

fn assert_kind(err: &ImageError, kind: Kind, text: &str) {
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.to_string().contains(text),
        "{err:?} does not say {text:?}"
    );
}

#[tokio::test]
async fn oci_layout_directory() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (manifest, id, _) = layout_digests(&layout);
    let store = Store::open();
    let started = Instant::now();
    let imported = store.import(&layout, &[]).await.unwrap();
    eprintln!("imported the busybox layout in {:?}", started.elapsed());
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].record.repo_tags, vec![BUSYBOX.to_owned()]);
    assert_eq!(imported[0].record.manifest_digest, manifest);
    store.assert_busybox(BUSYBOX, &id);
    assert_eq!(store.count("content/ingest"), 0);
}

/// `umoci insert` (Debian 12's umoci) writes its layer with nothing after the last entry's
/// data: no padding to 512 bytes and no end-of-archive blocks. containerd accepts such
/// layers; so must proxrt.
#[tokio::test]
async fn layer_from_umoci_insert_without_end_of_archive() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let file = tmp.path().join("hello.txt");
    fs::write(&file, "inserted by umoci\n").unwrap();
    let status = Command::new("umoci")
        .arg("insert")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&file)
        .arg("/etc/umoci-hello")
        .status()
        .expect("run umoci (hack/setup installs it)");
    assert!(status.success(), "umoci insert failed");
    let (_, id, layers) = layout_digests(&layout);
    let added = gunzip(&fs::read(blob(&layout, layers.last().unwrap())).unwrap());
    assert_ne!(
        added.len() % 512,
        0,
        "umoci's layer should stop right after the file's data ({} bytes)",
        added.len()
    );

    let store = Store::open();
    let imported = store.import(&layout, &[]).await.unwrap();
    assert_eq!(imported.len(), 1);
    store.assert_busybox(BUSYBOX, &id);
    let lowers = store.images.lower_dirs(&imported[0]).unwrap();
    let found: Vec<String> = lowers
        .iter()
        .filter_map(|l| fs::read_to_string(l.join("etc/umoci-hello")).ok())
        .collect();
    assert_eq!(found, ["inserted by umoci\n"]);
}

#[tokio::test]
async fn oci_archive_plain_and_gzip() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (manifest, id, _) = layout_digests(&layout);
    for gzip in [false, true] {
        let archive = tar_dir(
            &layout,
            &tmp.path().join(format!("busybox-{gzip}.tar")),
            gzip,
        );
        let store = Store::open();
        let imported = store.import(&archive, &[]).await.unwrap();
        assert_eq!(imported.len(), 1, "gzip={gzip}");
        assert_eq!(imported[0].record.manifest_digest, manifest);
        store.assert_busybox(BUSYBOX, &id);
        assert_eq!(store.count("content/ingest"), 0);
    }
}

#[tokio::test]
async fn docker_archive_plain_and_gzip_layers() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (_, id, _) = layout_digests(&layout);
    let image = DockerImage {
        config: layout_config(&layout),
        repo_tags: vec!["busybox:latest".into()],
    };
    for gzip_layer in [false, true] {
        let out = tmp.path().join(format!("docker-{gzip_layer}.tar"));
        let archive = docker_archive(
            &layout,
            &out,
            std::slice::from_ref(&image),
            gzip_layer,
            None,
        );
        let store = Store::open();
        let imported = store.import(&archive, &[]).await.unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].record.repo_tags, vec![BUSYBOX.to_owned()]);
        let media_type = &imported[0].record.layers[0].media_type;
        let want = if gzip_layer { ".tar.gzip" } else { ".diff.tar" };
        assert!(media_type.ends_with(want), "{media_type}");
        store.assert_busybox(BUSYBOX, &id);
        // The written manifest is a Docker schema2 manifest, stored like any other blob.
        let manifest = store
            .images
            .content()
            .read(&imported[0].record.manifest_digest)
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(manifest["config"]["digest"], id.as_str());
    }
}

#[tokio::test]
async fn tag_renames() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (_, id, _) = layout_digests(&layout);
    let store = Store::open();
    let imported = store
        .import(&layout, &["example.com/tools/bb:v1", "bb:2"])
        .await
        .unwrap();
    assert_eq!(
        imported[0].record.repo_tags,
        vec![
            "example.com/tools/bb:v1".to_owned(),
            "docker.io/library/bb:2".to_owned()
        ]
    );
    store.assert_busybox("example.com/tools/bb:v1", &id);
    store.assert_busybox("bb:2", &id);
    assert!(
        store.images.status(BUSYBOX).unwrap().is_none(),
        "the archive's own name is not used with --tag"
    );

    let err = store
        .import(&layout, &[&format!("bb@sha256:{}", "a".repeat(64))])
        .await
        .unwrap_err();
    assert_kind(&err, Kind::InvalidArgument, "--tag");
}

#[tokio::test]
async fn importing_twice_is_idempotent() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let docker = docker_archive(
        &layout,
        &tmp.path().join("docker.tar"),
        &[DockerImage {
            config: layout_config(&layout),
            repo_tags: vec!["busybox:latest".into()],
        }],
        false,
        None,
    );
    for source in [layout.clone(), docker] {
        let store = Store::open();
        let first = store.import(&source, &[]).await.unwrap();
        let counts = (
            store.count("content/blobs/sha256"),
            store.count("snapshots"),
            store.count("records"),
        );
        let second = store.import(&source, &[]).await.unwrap();
        assert_eq!(first[0].record.id, second[0].record.id);
        assert_eq!(
            first[0].record.manifest_digest,
            second[0].record.manifest_digest
        );
        assert_eq!(second[0].record.repo_tags, vec![BUSYBOX.to_owned()]);
        assert_eq!(store.images.list(None).unwrap().len(), 1);
        let again = (
            store.count("content/blobs/sha256"),
            store.count("snapshots"),
            store.count("records"),
        );
        assert_eq!(counts, again, "{}", source.display());
        assert_eq!(store.count("content/ingest"), 0);
    }
}

#[tokio::test]
async fn corrupt_blob_is_a_digest_mismatch_and_leaves_nothing() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let corrupt = corrupt_copy(&layout, &tmp.path().join("corrupt"));
    let archive = tar_dir(&corrupt, &tmp.path().join("corrupt.tar.gz"), true);
    for source in [corrupt, archive] {
        let store = Store::open();
        let err = store.import(&source, &[]).await.unwrap_err();
        eprintln!("expected error: {err}");
        assert!(
            matches!(err, ImageError::DigestMismatch { .. }),
            "{}: {err:?}",
            source.display()
        );
        assert_eq!(store.leftovers(), (0, 0, 0), "{}", source.display());
        assert!(store.images.list(None).unwrap().is_empty());
    }
}

#[tokio::test]
async fn corrupt_docker_layer_is_a_digest_mismatch_and_leaves_nothing() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    // The config's diff_id no longer matches the (uncompressed) layer.
    let mut config = read_json(&blob(&layout, &layout_digests(&layout).1));
    config["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    let image = DockerImage {
        config: serde_json::to_vec(&config).unwrap(),
        repo_tags: vec!["busybox:latest".into()],
    };
    for gzip_layer in [false, true] {
        let out = tmp.path().join(format!("bad-{gzip_layer}.tar"));
        let archive = docker_archive(
            &layout,
            &out,
            std::slice::from_ref(&image),
            gzip_layer,
            None,
        );
        let store = Store::open();
        let err = store.import(&archive, &[]).await.unwrap_err();
        assert!(
            matches!(err, ImageError::DigestMismatch { .. }),
            "gzip={gzip_layer}: {err:?}"
        );
        assert_eq!(store.leftovers(), (0, 0, 0));
    }
}

#[tokio::test]
async fn hostile_entry_names_are_ignored() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (_, id, _) = layout_digests(&layout);
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let absolute = tmp.path().join("abs-evil");

    // An OCI archive with extra entries that would land outside if extracted.
    let archive = work.join("hostile.tar");
    let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
    append_raw_name(&mut builder, "../evil", b"{\"x\":1}");
    append_raw_name(&mut builder, absolute.to_str().unwrap(), b"{\"x\":1}");
    append_raw_name(&mut builder, "blobs/sha256/../../../evil2", b"payload");
    for name in ["oci-layout", "index.json"] {
        append_file(&mut builder, name, &fs::read(layout.join(name)).unwrap());
    }
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = format!("blobs/sha256/{}", entry.file_name().to_str().unwrap());
        append_file(&mut builder, &name, &fs::read(entry.path()).unwrap());
    }
    builder.into_inner().unwrap().flush().unwrap();

    let store = Store::open();
    store.import(&archive, &[]).await.unwrap();
    store.assert_busybox(BUSYBOX, &id);
    assert!(!tmp.path().join("evil").exists());
    assert!(!tmp.path().join("evil2").exists());
    assert!(!absolute.exists());
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        1,
        "only the archive is in its directory"
    );

    // A docker-archive whose manifest.json points outside is refused outright.
    for bad in ["../evil/layer.tar", "/etc/passwd"] {
        let out = work.join("hostile-docker.tar");
        let image = DockerImage {
            config: layout_config(&layout),
            repo_tags: vec!["busybox:latest".into()],
        };
        let archive = docker_archive(&layout, &out, &[image], false, Some(bad));
        let store = Store::open();
        let err = store.import(&archive, &[]).await.unwrap_err();
        assert_kind(&err, Kind::InvalidArgument, "not a path inside the archive");
        assert_eq!(store.leftovers(), (0, 0, 0));
    }
}

#[tokio::test]
async fn unnamed_layout_needs_a_tag() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (_, id, _) = layout_digests(&layout);
    // As skopeo writes `oci:dir:latest`: only a bare tag, which names no image.
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let store = Store::open();
    let err = store.import(&layout, &[]).await.unwrap_err();
    assert_kind(&err, Kind::InvalidArgument, "give --tag NAME");
    assert_eq!(store.leftovers(), (0, 0, 0));

    store.import(&layout, &["local/busybox:1"]).await.unwrap();
    store.assert_busybox("docker.io/local/busybox:1", &id);
}

#[tokio::test]
async fn multi_image_archive_refuses_tag() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (_, id, _) = layout_digests(&layout);
    let first = layout_config(&layout);
    let mut second: serde_json::Value = serde_json::from_slice(&first).unwrap();
    second["config"]["Cmd"] = serde_json::json!(["true"]);
    let second = serde_json::to_vec(&second).unwrap();
    let second_id = format!("sha256:{}", sha256_hex(&second));
    let images = [
        DockerImage {
            config: first,
            repo_tags: vec!["busybox:latest".into()],
        },
        DockerImage {
            config: second,
            repo_tags: vec!["example.com/bb-true:1".into()],
        },
    ];
    let archive = docker_archive(&layout, &tmp.path().join("two.tar"), &images, false, None);

    let store = Store::open();
    let err = store.import(&archive, &["x:1"]).await.unwrap_err();
    assert_kind(
        &err,
        Kind::InvalidArgument,
        "give --tag only for a single-image archive",
    );
    assert_eq!(store.leftovers(), (0, 0, 0));

    let imported = store.import(&archive, &[]).await.unwrap();
    assert_eq!(imported.len(), 2);
    store.assert_busybox(BUSYBOX, &id);
    store.assert_busybox("example.com/bb-true:1", &second_id);
    assert_eq!(
        store.count("snapshots"),
        1,
        "the shared layer is unpacked once"
    );
}

#[tokio::test]
async fn not_an_image_is_invalid_content() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.bin");
    fs::write(
        &garbage,
        (0..10_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let empty_dir = tmp.path().join("empty");
    fs::create_dir(&empty_dir).unwrap();
    // A valid tar, but of nothing image-like.
    let plain_tar = tmp.path().join("plain.tar");
    let mut builder = tar::Builder::new(fs::File::create(&plain_tar).unwrap());
    append_file(&mut builder, "hello.txt", b"hello");
    builder.into_inner().unwrap().flush().unwrap();

    let store = Store::open();
    for path in [&garbage, &empty_dir, &plain_tar] {
        let err = store.import(path, &[]).await.unwrap_err();
        eprintln!("expected error: {err}");
        assert!(
            matches!(err, ImageError::InvalidContent(_)),
            "{}: {err:?}",
            path.display()
        );
        assert!(
            err.to_string().contains(path.to_str().unwrap()),
            "{err} does not name the path"
        );
    }
    let err = store
        .import(&tmp.path().join("missing.tar"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert_eq!(store.leftovers(), (0, 0, 0));
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[tokio::test]
async fn nested_index_gives_this_hosts_image() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let (manifest, id, _) = layout_digests(&layout);
    let manifest_size = fs::metadata(blob(&layout, &manifest)).unwrap().len();
    // Another platform's manifest the layout does not hold: it must not be looked for.
    let foreign = if host_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "1".repeat(64)), "size": 100,
             "platform": {"os": "linux", "architecture": foreign}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": manifest, "size": manifest_size,
             "platform": {"os": "linux", "architecture": host_arch()}},
        ],
    }))
    .unwrap();
    let nested_digest = format!("sha256:{}", sha256_hex(&nested));
    fs::write(blob(&layout, &nested_digest), &nested).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nested_digest, "size": nested.len(),
            "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest",
                            "org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let archive = tar_dir(&layout, &tmp.path().join("multi.tar"), false);

    for source in [layout, archive] {
        let store = Store::open();
        let imported = store.import(&source, &[]).await.unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].record.manifest_digest, manifest);
        store.assert_busybox(BUSYBOX, &id);
    }
}

#[tokio::test]
async fn a_failing_image_undoes_the_whole_archive() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox_layout(&tmp.path().join("layout"), None);
    let good = layout_config(&layout);
    // The second image's diff_id does not match the (gzip) layer: only unpacking
    // finds out, after the first image was recorded.
    let mut bad: serde_json::Value = serde_json::from_slice(&good).unwrap();
    bad["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    let images = [
        DockerImage {
            config: good,
            repo_tags: vec!["busybox:latest".into()],
        },
        DockerImage {
            config: serde_json::to_vec(&bad).unwrap(),
            repo_tags: vec!["example.com/bad:1".into()],
        },
    ];
    let archive = docker_archive(&layout, &tmp.path().join("two.tar"), &images, true, None);
    let store = Store::open();
    let err = store.import(&archive, &[]).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(
        store.images.list(None).unwrap().is_empty(),
        "the first image was removed again"
    );
    assert_eq!(store.leftovers(), (0, 0, 0));
    assert_eq!(store.count("records"), 0);
}
