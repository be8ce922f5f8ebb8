//! Image store safety (issue 12, items 9 and 10), end to end on a real daemon, real
//! files and mounts:
//! - a container being created holds its image: a RemoveImage racing CreateContainer
//!   is refused and the rootfs stays whole;
//! - the collection at start keeps what an unreadable image record, or a container's
//!   image without a record, may need;
//! - one layer pushed twice, compressed differently, pulled by two images at once;
//! - a pull stalled on a slow registry blocks neither another pull nor a RemoveImage;
//! - what a registry serves is bounded: a manifest over the cap, a blob longer than its
//!   descriptor, a blob that trickles past the whole-pull deadline, each a clear error
//!   that leaves nothing in the image store.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fake_registry::{tar_with, FakeImage, FakeRegistry, Serve};
use common::pods::*;
use common::*;
use k8s_cri::v1::ContainerState;
use tonic::Code;

/// A bound on steps that must finish (a deadlock shows as this, not as a hung test).
const MUST_FINISH: Duration = Duration::from_secs(60);

fn entries(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(MUST_FINISH, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {MUST_FINISH:?}"))
}

// ----- item 9: leases, start-up collection, layer locks, no lock across I/O -----------

/// RemoveImage fired again and again while CreateContainer runs (from the moment the
/// container's state dir exists until the create returns): every one is refused with
/// FailedPrecondition, the image stays, and the container runs from an intact rootfs.
/// Before the fix the image had no lease until the container reached the container
/// store: a RemoveImage during the backend's create succeeded and its collection
/// deleted the layers under the freshly mounted overlay (the container then failed to
/// start: /bin/sleep gone).
#[tokio::test(flavor = "multi_thread")]
async fn remove_image_during_create_container_keeps_the_rootfs() {
    let mut env = PodEnv::start().await;
    let containers_dir = env.daemon().root.join("containers");
    let snapshots = entries(&env.daemon().snapshots_dir());
    let pod = env.run_pod(env.pod_config("lease")).await;
    let mut raced = 0;
    for round in 0..5 {
        let before = entries(&containers_dir);
        let done = Arc::new(AtomicBool::new(false));
        let remover = {
            let (mut cri, done, image, dir) = (
                env.cri.clone(),
                done.clone(),
                env.image.clone(),
                containers_dir.clone(),
            );
            tokio::spawn(async move {
                while entries(&dir) == before {
                    if done.load(Ordering::SeqCst) {
                        return Vec::new();
                    }
                    tokio::task::yield_now().await;
                }
                let mut results = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    results.push(remove_image(&mut cri, &image).await.map_err(|s| s.code()));
                }
                results
            })
        };
        let config = env.container_config(&pod, &format!("c{round}"), &["sleep", "3600"]);
        let created = env.create(&pod, config).await;
        done.store(true, Ordering::SeqCst);
        let results = within("the remover", remover).await.expect("remover task");
        let id = created.unwrap_or_else(|s| panic!("CreateContainer: {s:?}"));
        assert!(
            results.iter().all(|r| *r == Err(Code::FailedPrecondition)),
            "round {round}: RemoveImage while the container was being created: {results:?}"
        );
        raced += results.len();
        env.start_container(&id)
            .await
            .unwrap_or_else(|s| panic!("StartContainer after the race: {s:?}"));
        env.exec_ok(&id, &["/bin/busybox", "true"]).await;
        let status = env.status(&id).await;
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        assert!(
            image_status(&mut env.cri, &env.image.clone())
                .await
                .is_some(),
            "the image is still there"
        );
        assert_eq!(entries(&env.daemon().snapshots_dir()), snapshots);
        if raced > 0 {
            break;
        }
        // No RemoveImage landed in the window: start over from a store without users.
        env.stop_container(&id, 0).await.expect("stop");
        env.remove_container(&id).await.expect("remove");
    }
    assert!(
        raced > 0,
        "no RemoveImage landed while a container was being created in 5 rounds"
    );
    // Once created, the container keeps the image (CRI-O's behaviour).
    let err = remove_image(&mut env.cri, &env.image.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("in use"), "{err:?}");
}

/// A running container's image record is torn (then gone) across a daemon restart: the
/// collection at start keeps every snapshot and says why, and the container still reads
/// its image's files. Before the fix the collection ran when the image store opened,
/// before containers were loaded, skipped the record and deleted its snapshot from
/// under the running container.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_image_record_keeps_its_layers_at_start() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("torn")).await;
    let config = env.container_config(&pod, "c", &["sleep", "3600"]);
    let id = env.create_start(&pod, config).await;
    let image_id = image_status(&mut env.cri, &env.image.clone())
        .await
        .expect("image")
        .id;
    let snapshots = entries(&env.daemon().snapshots_dir());
    assert!(!snapshots.is_empty());
    let record = env
        .daemon()
        .records_dir()
        .join(format!("{}.json", image_id.trim_start_matches("sha256:")));
    assert!(record.exists(), "{}", record.display());

    // 1. The record is torn.
    env.kill9();
    std::fs::write(&record, b"{\"id\": ").expect("tear the record");
    env.restart().await;
    assert_eq!(
        entries(&env.daemon().snapshots_dir()),
        snapshots,
        "snapshots kept"
    );
    assert!(
        env.daemon().log().contains("image record unreadable"),
        "the daemon says why it kept them:\n{}",
        env.daemon().log()
    );
    env.exec_ok(&id, &["/bin/busybox", "true"]).await;

    // 2. The record is gone; a container still uses the image.
    env.kill9();
    std::fs::remove_file(&record).expect("remove the record");
    env.restart().await;
    assert_eq!(entries(&env.daemon().snapshots_dir()), snapshots);
    assert!(
        env.daemon()
            .log()
            .contains("a container uses an image that has no record"),
        "{}",
        env.daemon().log()
    );
    env.exec_ok(&id, &["/bin/busybox", "true"]).await;
}

/// One layer tar pushed twice, once gzip-compressed and once not, by two images pulled
/// at the same time, round after round: both pulls succeed and share one snapshot.
/// Before the fix the layer lock was keyed by the compressed digest: both pulls
/// unpacked, and the second rename onto the first's snapshot failed the pull.
#[tokio::test(flavor = "multi_thread")]
async fn one_layer_compressed_two_ways_pulled_at_once() {
    let registry = Registry::shared();
    let d = TestDaemon::start();
    for round in 0..4 {
        // Big enough that the two unpacks overlap.
        let mut base = TestImage::new();
        for i in 0..64 {
            let fill = format!("round {round} file {i} {}\n", random_hex(4)).repeat(2048);
            base = base.file(&format!("f{i}"), fill.as_bytes());
        }
        let plain = base
            .clone()
            .label("plain")
            .push(&registry, &format!("{}:1", unique_repo("plain")));
        let gzip = base
            .clone()
            .gzip()
            .label("gzip")
            .push(&registry, &format!("{}:1", unique_repo("gzip")));
        assert_ne!(plain.layers, gzip.layers, "two compressed digests");
        let (mut a, mut b) = (d.cri().await, d.cri().await);
        let (ra, rb) = within(
            "two pulls",
            futures_util::future::join(pull(&mut a, &plain.name), pull(&mut b, &gzip.name)),
        )
        .await;
        assert_eq!(ra.expect("pull of the uncompressed copy"), plain.id);
        assert_eq!(rb.expect("pull of the gzip copy"), gzip.id);
    }
    let mut cri = d.cri().await;
    assert_eq!(list_images(&mut cri, None).await.len(), 8);
    assert_eq!(
        entries(&d.snapshots_dir()).len(),
        4,
        "one snapshot per layer tar"
    );
}

/// A pull stalled halfway through a layer (the registry waits for the test) blocks
/// neither the pull of another image nor a RemoveImage; then it completes. Before the
/// fix the stalled pull held the collection lock shared: the RemoveImage's collection
/// waited for it, and every pull behind that waiting collection too.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_pull_blocks_neither_a_pull_nor_a_remove() {
    let fake = FakeRegistry::start().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let slow = FakeImage::new(tar_with("slow", 1 << 20, b's'), 0);
    let slow_name = fake.add("slow", "1", &slow, Serve::Stall { gate: gate.clone() });
    let other = FakeImage::new(tar_with("other", 4096, b'o'), 0);
    let other_name = fake.add("other", "1", &other, Serve::Normal);
    let doomed = FakeImage::new(tar_with("doomed", 4096, b'd'), 0);
    let doomed_name = fake.add("doomed", "1", &doomed, Serve::Normal);

    // The stalled read must not time out while the test waits on it.
    let d = TestDaemon::start_with("[images]\nread_timeout_secs = 600\n");
    let mut cri = d.cri().await;
    pull(&mut cri, &doomed_name).await.expect("pull doomed");

    let stalled = {
        let mut cri = d.cri().await;
        let name = slow_name.clone();
        tokio::spawn(async move { pull(&mut cri, &name).await })
    };
    // The slow pull is stalled once half its layer is out.
    within("the slow pull's first half", async {
        while fake.blob_bytes_sent.load(Ordering::SeqCst) < slow.layer.len() as u64 / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    within(
        "RemoveImage during a stalled pull",
        remove_image(&mut cri, &doomed_name),
    )
    .await
    .expect("remove doomed");
    assert!(image_status(&mut cri, &doomed_name).await.is_none());
    let id = within("a pull during a stalled pull", pull(&mut cri, &other_name))
        .await
        .expect("pull other");
    assert_eq!(id, other.config_digest);
    assert!(!stalled.is_finished(), "the slow pull waits for the test");

    gate.notify_one();
    let id = within("the slow pull", stalled)
        .await
        .expect("task")
        .expect("the slow pull completes");
    assert_eq!(id, slow.config_digest);
}

// ----- item 10: bounded sizes, descriptor sizes, whole-pull deadline ------------------

/// A manifest over 4 MiB is refused while it is read: InvalidArgument naming the limit,
/// nothing stored. Before the fix it was read whole and the pull succeeded.
#[tokio::test]
async fn oversize_manifest_is_invalid_argument() {
    let fake = FakeRegistry::start().await;
    let image = FakeImage::new(tar_with("x", 16, b'x'), 5 << 20);
    let name = fake.add("big-manifest", "1", &image, Serve::Normal);
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let err = pull(&mut cri, &name).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("over the limit"), "{err:?}");
    assert_eq!(
        fake.blob_bytes_sent.load(Ordering::SeqCst),
        0,
        "no blob fetched"
    );
    d.assert_image_store_empty("after an oversize manifest");
}

/// A blob that goes on past its descriptor's size (no Content-Length: the client must
/// count) fails as soon as it is longer, with DataLoss naming the blob; the download
/// stops then, long before the registry sent its 64 MiB. Before the fix the whole body
/// was read (and written to the ingest dir) before the digest check failed.
#[tokio::test]
async fn blob_longer_than_its_descriptor_is_data_loss_at_once() {
    let fake = FakeRegistry::start().await;
    let image = FakeImage::new(tar_with("x", 4096, b'x'), 0);
    let extra = 64u64 << 20;
    let name = fake.add("longer", "1", &image, Serve::Longer { extra });
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let err = within("the pull", pull(&mut cri, &name)).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains(&image.layer_digest), "{err:?}");
    assert!(err.message().contains("descriptor"), "{err:?}");
    // The registry's writes stop once the client is gone (socket buffers aside).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = fake.blob_bytes_sent.load(Ordering::SeqCst);
    assert!(
        sent < image.layer.len() as u64 + extra / 2,
        "the client stopped reading early: {sent} bytes sent"
    );
    d.assert_image_store_empty("after a blob longer than its descriptor");
}

/// Layer downloads start while the config is still on its way, so the manifest's
/// digests are checked before any: a layer named by a digest the store cannot hold
/// (sha512: blobs are kept by sha256 only) fails the pull with InvalidArgument naming
/// it, before a byte of any blob is fetched.
#[tokio::test]
async fn a_layer_digest_the_store_cannot_hold_is_refused_before_any_download() {
    let fake = FakeRegistry::start().await;
    let mut image = FakeImage::new(tar_with("x", 4096, b'x'), 0);
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let manifest = String::from_utf8(image.manifest.clone())
        .expect("manifest JSON")
        .replace(&image.layer_digest, &sha512);
    image.manifest = manifest.into_bytes();
    image.manifest_digest = sha256(&image.manifest);
    image.layer_digest = sha512.clone();
    let name = fake.add("sha512", "1", &image, Serve::Normal);
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let err = within("the pull", pull(&mut cri, &name)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&sha512), "{err:?}");
    assert_eq!(
        fake.blob_bytes_sent.load(Ordering::SeqCst),
        0,
        "a blob was downloaded"
    );
    d.assert_image_store_empty("after a layer digest the store cannot hold");
}

/// A layer that trickles a byte at a time never trips the per-read timeout; the
/// whole-pull deadline (`[images] pull_timeout_secs`) ends it: DeadlineExceeded naming
/// the setting, nothing stored. Before the fix there was no such deadline (and the key
/// was refused as unknown).
#[tokio::test]
async fn trickling_blob_hits_the_pull_deadline() {
    let fake = FakeRegistry::start().await;
    let image = FakeImage::new(tar_with("x", 4096, b'x'), 0);
    let name = fake.add(
        "drip",
        "1",
        &image,
        Serve::Drip {
            every: Duration::from_millis(50),
        },
    );
    let d = TestDaemon::start_with("[images]\npull_timeout_secs = 2\n");
    let mut cri = d.cri().await;
    let err = within("the pull", pull(&mut cri, &name)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("pull_timeout_secs"), "{err:?}");
    d.assert_image_store_empty("after a pull past its deadline");
}

// ----- durability (item 10) -----------------------------------------------------------

/// The two quoted paths of a rename/renameat/renameat2 line of strace.
fn rename_paths(line: &str) -> Option<(String, String)> {
    let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    match quoted[..] {
        [from, to, ..] => Some((from.to_owned(), to.to_owned())),
        _ => None,
    }
}

/// The path strace -y shows for the fd a sync call was given: `fsync(7</a/b>)`.
fn synced_path(line: &str) -> Option<String> {
    let start = line.find('<')? + 1;
    let end = start + line[start..].find('>')?;
    Some(line[start..end].to_owned())
}

/// strace (not proxrt) watches the daemon's syscalls during a pull: every blob,
/// snapshot and image record is synced (fdatasync/fsync of the file, syncfs of a
/// snapshot's tree) before the rename that publishes it, and its directory is fsync'd
/// after — for blobs and snapshots, before the image record is renamed into place
/// (one fsync of a dir may cover several renames). Before the item, a download's data
/// reached the disk whenever the kernel wrote it back: a host crash could leave a
/// published blob with holes and a valid name.
#[tokio::test]
async fn what_a_pull_publishes_is_synced_before_the_rename() {
    let registry = Registry::shared();
    let image = TestImage::new()
        .file("synced", random_hex(16).as_bytes())
        .gzip()
        .push(&registry, &format!("{}:1", unique_repo("synced")));
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let pid = d.pid().expect("daemon running");
    let strace = Strace::attach(
        pid,
        "fsync,fdatasync,syncfs,rename,renameat,renameat2",
        &d.dir().join("strace.out"),
    )
    .await;
    within("pull", pull(&mut cri, &image.name)).await.unwrap();
    let text = strace.finish();
    let lines: Vec<&str> = text.lines().collect();
    let store = d.images_dir().display().to_string();
    let records = d.records_dir().display().to_string();
    let record_at = lines
        .iter()
        .position(|l| {
            l.contains(" rename") && rename_paths(l).is_some_and(|(_, to)| to.starts_with(&records))
        })
        .unwrap_or_else(|| panic!("no image record renamed into {records}:\n{text}"));
    let mut published = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.contains(" rename") {
            continue;
        }
        let Some((from, to)) = rename_paths(line) else {
            continue;
        };
        if !to.starts_with(&store) {
            continue;
        }
        published += 1;
        let synced_before = lines[..i].iter().any(|l| {
            ["fsync(", "fdatasync(", "syncfs("]
                .iter()
                .any(|call| l.contains(call))
                && synced_path(l).as_deref() == Some(from.as_str())
        });
        assert!(synced_before, "{to} published unsynced:\n{text}");
        let parent = std::path::Path::new(&to)
            .parent()
            .unwrap()
            .display()
            .to_string();
        // The record's own dir is synced after the record; every other dir before it.
        let until = if i < record_at {
            record_at
        } else {
            lines.len()
        };
        let dir_synced_after = lines[i..until]
            .iter()
            .any(|l| l.contains("fsync(") && synced_path(l).as_deref() == Some(parent.as_str()));
        assert!(
            dir_synced_after,
            "{parent} not synced after {to} went in (and before the record):\n{text}"
        );
    }
    // manifest, config, layer blob, the snapshot, the image record
    assert!(
        published >= 5,
        "only {published} renames into the image store:\n{text}"
    );
}
