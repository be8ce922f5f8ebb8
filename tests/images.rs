//! The image service end to end: a real `proxrt serve` per test and a real registry on
//! 127.0.0.1 (hack/test's shared one via PROXRT_TEST_REGISTRY, or the test's own),
//! driven over CRI the way kubelet drives it.
//!
//! Every failure case also checks that the store is left as it was: no record, blob,
//! snapshot or download in flight. Each test uses its own repositories, so tests run in
//! parallel against one registry.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tonic::Code;

const NO_SUCH_ID: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A busybox image in the shared registry under a repository of this test's own.
fn busybox(registry: &Registry, what: &str) -> Pushed {
    push_busybox(registry, &format!("{}:1", unique_repo(what)))
}

/// A second, different image (one small layer).
fn tiny(registry: &Registry, what: &str) -> Pushed {
    TestImage::new()
        .file("hello", b"hello from a tiny test image\n")
        .push(registry, &format!("{}:1", unique_repo(what)))
}

// ----- pull and name resolution ---------------------------------------------------------

#[tokio::test]
async fn pull_by_tag_then_status_by_every_name() {
    let registry = Registry::shared();
    let image = busybox(&registry, "by-tag");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;

    let id = pull(&mut cri, &image.name).await.expect("pull by tag");
    assert_eq!(
        id, image.id,
        "PullImage returns the image id (config digest)"
    );

    let hex = id.strip_prefix("sha256:").expect("id is sha256:<hex>");
    for name in [
        image.name.clone(),
        image.by_digest(),
        id.clone(),
        hex.to_owned(),
        hex[..12].to_owned(),
        format!("sha256:{}", &hex[..16]),
    ] {
        let st = image_status(&mut cri, &name)
            .await
            .unwrap_or_else(|| panic!("no status for {name}"));
        assert_eq!(st.id, id, "{name}");
        assert_eq!(st.repo_tags, vec![image.name.clone()], "{name}");
        assert_eq!(st.repo_digests, vec![image.by_digest()], "{name}");
        assert_eq!(st.size, image.size, "{name}");
        assert_eq!(
            st.uid.map(|u| u.value),
            Some(0),
            "busybox has no User: root"
        );
    }
    assert!(
        image_status(&mut cri, &format!("{}:other", image.repository))
            .await
            .is_none()
    );

    let plain = try_image_status(&mut cri, &image.name, false)
        .await
        .expect("status");
    assert!(
        plain.info.is_empty(),
        "no verbose info unless asked: {:?}",
        plain.info
    );
    let verbose = try_image_status(&mut cri, &image.name, true)
        .await
        .expect("verbose status");
    let info: serde_json::Value =
        serde_json::from_str(&verbose.info["info"]).expect("verbose info is JSON");
    assert_eq!(info["id"], json!(id));
    assert_eq!(info["manifestDigest"], json!(image.digest));
    assert_eq!(info["config"]["config"]["Cmd"], json!(["sh"]));
    assert_eq!(info["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(info["layers"][0]["digest"], json!(image.layers[0]));
    let diff_id = info["config"]["rootfs"]["diff_ids"][0]
        .as_str()
        .expect("diff_id")
        .to_owned();
    assert_eq!(info["layers"][0]["diff_id"], json!(diff_id));

    // The layer is unpacked once, under its diff_id, ready to be a lowerdir.
    let snapshot = d
        .snapshots_dir()
        .join(diff_id.trim_start_matches("sha256:"));
    assert!(
        snapshot.join("bin/busybox").is_file(),
        "{} has no bin/busybox",
        snapshot.display()
    );
    assert_eq!(
        std::fs::read_link(snapshot.join("bin/sh")).ok(),
        Some("busybox".into())
    );

    // Pulling again changes nothing.
    assert_eq!(pull(&mut cri, &image.name).await.expect("pull again"), id);
    assert_eq!(list_images(&mut cri, None).await.len(), 1);
    assert_eq!(files_under(&d.records_dir()), 1);
    assert_eq!(std::fs::read_dir(d.snapshots_dir()).unwrap().count(), 1);
}

#[tokio::test]
async fn pull_by_digest() {
    let registry = Registry::shared();
    let image = busybox(&registry, "by-digest");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;

    let id = pull(&mut cri, &image.by_digest())
        .await
        .expect("pull by digest");
    assert_eq!(id, image.id);
    let st = image_status(&mut cri, &image.by_digest())
        .await
        .expect("status by digest");
    assert!(
        st.repo_tags.is_empty(),
        "a digest pull adds no tag: {:?}",
        st.repo_tags
    );
    assert_eq!(st.repo_digests, vec![image.by_digest()]);
    assert!(
        image_status(&mut cri, &image.name).await.is_none(),
        "the tag was never pulled"
    );

    // The same image by tag: one image with both names.
    assert_eq!(pull(&mut cri, &image.name).await.expect("pull by tag"), id);
    let st = image_status(&mut cri, &image.by_digest())
        .await
        .expect("status");
    assert_eq!(st.repo_tags, vec![image.name.clone()]);
    assert_eq!(st.repo_digests, vec![image.by_digest()]);
    assert_eq!(files_under(&d.records_dir()), 1);
}

#[tokio::test]
async fn pull_by_wrong_digest_is_not_found() {
    let registry = Registry::shared();
    let image = busybox(&registry, "wrong-digest");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let wrong = format!("{}@{NO_SUCH_ID}", image.repository);
    assert_code(
        pull(&mut cri, &wrong).await,
        Code::NotFound,
        "unknown manifest digest",
    );
    d.assert_image_store_empty("after a pull of an unknown digest");
}

#[tokio::test]
async fn pull_through_a_mirror_never_asks_the_registry() {
    let registry = Registry::shared();
    let repo = unique_repo("mirrored");
    let image = push_busybox(&registry, &format!("{repo}:1"));
    // `.invalid` never resolves (RFC 2606): had the daemon asked the registry itself
    // rather than the mirror, the pull would fail.
    let d = TestDaemon::start_with(&format!(
        "[registries.\"mirror-test.invalid\"]\nmirrors = [\"http://{}\"]\n",
        registry.addr
    ));
    let mut cri = d.cri().await;

    let name = format!("mirror-test.invalid/{repo}:1");
    assert_eq!(
        pull(&mut cri, &name)
            .await
            .expect("pull through the mirror"),
        image.id
    );
    let by_digest = format!("mirror-test.invalid/{repo}@{}", image.digest);
    let st = image_status(&mut cri, &name)
        .await
        .expect("status by the name pulled");
    assert_eq!(
        st.repo_tags,
        vec![name.clone()],
        "names are the ones asked for, not the mirror's"
    );
    assert_eq!(st.repo_digests, vec![by_digest.clone()]);
    assert!(
        image_status(&mut cri, &image.name).await.is_none(),
        "the mirror's name is not recorded"
    );

    // A digest reference is rewritten for the mirror too.
    assert_eq!(
        pull(&mut cri, &by_digest)
            .await
            .expect("pull by digest through the mirror"),
        image.id
    );
    assert!(
        !d.log().contains("mirror failed"),
        "a mirror failed:\n{}",
        d.log()
    );
}

#[tokio::test]
async fn mirror_down_with_mirrors_only_is_unavailable() {
    let d = TestDaemon::start_with(
        "[registries.\"mirror-test.invalid\"]\nmirrors = [\"http://127.0.0.1:1\"]\nmirrors_only = true\n",
    );
    let mut cri = d.cri().await;
    let status = assert_code(
        pull(&mut cri, "mirror-test.invalid/some/image:1").await,
        Code::Unavailable,
        "every mirror down",
    );
    assert!(
        status.message().contains("127.0.0.1:1"),
        "the message names the mirror: {status:?}"
    );
    d.assert_image_store_empty("after a pull with every mirror down");
}

// ----- list ------------------------------------------------------------------------------

#[tokio::test]
async fn list_images_with_and_without_filter() {
    let registry = Registry::shared();
    let bb = busybox(&registry, "list-bb");
    let small = tiny(&registry, "list-tiny");
    assert_ne!(bb.id, small.id);
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    assert!(list_images(&mut cri, None).await.is_empty());
    pull(&mut cri, &bb.name).await.expect("pull busybox");
    pull(&mut cri, &small.name).await.expect("pull tiny");

    let mut all: Vec<String> = list_images(&mut cri, None)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    all.sort();
    let mut want = vec![bb.id.clone(), small.id.clone()];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(
        list_images(&mut cri, Some("")).await.len(),
        2,
        "an empty filter is no filter"
    );

    for (filter, id) in [
        (small.name.clone(), &small.id),
        (bb.by_digest(), &bb.id),
        (bb.id.clone(), &bb.id),
        (small.id["sha256:".len()..][..14].to_owned(), &small.id),
    ] {
        let found: Vec<String> = list_images(&mut cri, Some(&filter))
            .await
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(found, vec![id.clone()], "filter {filter}");
    }
    assert!(
        list_images(&mut cri, Some(&format!("{}:nope", bb.repository)))
            .await
            .is_empty()
    );
    assert!(list_images(&mut cri, Some(NO_SUCH_ID)).await.is_empty());
}

// ----- remove ----------------------------------------------------------------------------

/// Pulls busybox, removes it by the name `by` picks, and checks it is gone everywhere.
async fn remove_leaves_nothing(what: &str, by: fn(&Pushed) -> String) {
    let registry = Registry::shared();
    let image = busybox(&registry, what);
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    pull(&mut cri, &image.name).await.expect("pull");
    assert_eq!(files_under(&d.records_dir()), 1);
    assert_eq!(files_under(&d.blobs_dir()), 3, "manifest, config, layer");
    assert_eq!(std::fs::read_dir(d.snapshots_dir()).unwrap().count(), 1);

    remove_image(&mut cri, &by(&image)).await.expect("remove");
    for name in [image.name.clone(), image.by_digest(), image.id.clone()] {
        assert!(
            image_status(&mut cri, &name).await.is_none(),
            "{name} still has a status"
        );
    }
    assert!(list_images(&mut cri, None).await.is_empty());
    d.assert_image_store_empty("after RemoveImage");
}

#[tokio::test]
async fn remove_by_tag_leaves_nothing() {
    remove_leaves_nothing("rm-tag", |i| i.name.clone()).await;
}

#[tokio::test]
async fn remove_by_id_leaves_nothing() {
    remove_leaves_nothing("rm-id", |i| i.id.clone()).await;
}

#[tokio::test]
async fn remove_by_digest_leaves_nothing() {
    remove_leaves_nothing("rm-digest", |i| i.by_digest()).await;
}

#[tokio::test]
async fn remove_by_one_tag_removes_the_image_and_every_name() {
    let registry = Registry::shared();
    let repo = unique_repo("rm-two-tags");
    let one = push_busybox(&registry, &format!("{repo}:1"));
    let two = push_busybox(&registry, &format!("{repo}:2"));
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    pull(&mut cri, &one.name).await.expect("pull :1");
    pull(&mut cri, &two.name).await.expect("pull :2");
    let st = image_status(&mut cri, &one.name).await.expect("status");
    assert_eq!(
        st.repo_tags,
        vec![one.name.clone(), two.name.clone()],
        "one image, two tags"
    );

    remove_image(&mut cri, &one.name).await.expect("remove :1");
    assert!(
        image_status(&mut cri, &two.name).await.is_none(),
        "CRI RemoveImage removes the image, not a tag"
    );
    d.assert_image_store_empty("after RemoveImage");
}

#[tokio::test]
async fn remove_keeps_what_another_image_uses() {
    let registry = Registry::shared();
    let bb = busybox(&registry, "rm-keep-bb");
    let small = tiny(&registry, "rm-keep-tiny");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    pull(&mut cri, &bb.name).await.expect("pull busybox");
    pull(&mut cri, &small.name).await.expect("pull tiny");
    assert_eq!(files_under(&d.blobs_dir()), 6);

    remove_image(&mut cri, &small.name)
        .await
        .expect("remove tiny");
    assert!(image_status(&mut cri, &small.name).await.is_none());
    assert_eq!(
        image_status(&mut cri, &bb.name).await.map(|i| i.id),
        Some(bb.id.clone())
    );
    assert_eq!(
        files_under(&d.blobs_dir()),
        3,
        "busybox's manifest, config and layer stay"
    );
    assert_eq!(std::fs::read_dir(d.snapshots_dir()).unwrap().count(), 1);
    assert_eq!(files_under(&d.records_dir()), 1);
    // And busybox can still be removed afterwards.
    remove_image(&mut cri, &bb.id)
        .await
        .expect("remove busybox");
    d.assert_image_store_empty("after removing both");
}

#[tokio::test]
async fn remove_of_an_unknown_image_succeeds() {
    let registry = Registry::shared();
    let image = busybox(&registry, "rm-unknown");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    // CRI: removing what is not there succeeds (kubelet's image GC retries removals).
    for name in [
        "127.0.0.1:1/never/pulled:1",
        NO_SUCH_ID,
        "000000000000",
        "busybox",
    ] {
        remove_image(&mut cri, name)
            .await
            .unwrap_or_else(|s| panic!("RemoveImage({name}): {s:?}"));
    }
    pull(&mut cri, &image.name).await.expect("pull");
    remove_image(&mut cri, &format!("{}:other", image.repository))
        .await
        .expect("remove another tag");
    assert!(
        image_status(&mut cri, &image.name).await.is_some(),
        "an unknown name removed nothing"
    );
    remove_image(&mut cri, &image.name).await.expect("remove");
    remove_image(&mut cri, &image.name)
        .await
        .expect("remove twice");
}

// ----- image filesystem usage ------------------------------------------------------------

#[tokio::test]
async fn image_fs_info_grows_with_a_pull_and_shrinks_with_a_remove() {
    let registry = Registry::shared();
    let image = busybox(&registry, "fsinfo");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;

    let (bytes0, inodes0) = image_fs_usage(&mut cri).await;
    pull(&mut cri, &image.name).await.expect("pull");
    let (bytes1, inodes1) = image_fs_usage(&mut cri).await;
    assert!(
        bytes1 >= bytes0 + image.size,
        "bytes grow by at least the blobs pulled ({}): {bytes0} -> {bytes1}",
        image.size
    );
    // 3 blobs, a record, the snapshot dir and busybox's files and applet links.
    assert!(inodes1 >= inodes0 + 100, "inodes: {inodes0} -> {inodes1}");

    remove_image(&mut cri, &image.id).await.expect("remove");
    let (bytes2, inodes2) = image_fs_usage(&mut cri).await;
    assert!(
        bytes2 + image.size <= bytes1,
        "bytes shrink: {bytes1} -> {bytes2}"
    );
    assert_eq!(inodes2, inodes0, "every inode the pull made is gone");
}

// ----- restarts --------------------------------------------------------------------------

async fn assert_still_there(d: &TestDaemon, image: &Pushed) {
    let mut cri = d.cri().await;
    let listed: Vec<String> = list_images(&mut cri, None)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, vec![image.id.clone()]);
    let st = image_status(&mut cri, &image.name)
        .await
        .expect("status after restart");
    assert_eq!(st.repo_tags, vec![image.name.clone()]);
    assert_eq!(st.repo_digests, vec![image.by_digest()]);
    assert!(image_status(&mut cri, &image.id).await.is_some());
    let verbose = try_image_status(&mut cri, &image.name, true)
        .await
        .expect("verbose");
    assert!(verbose.info["info"].contains(&image.layers[0]));
    // A pull finds it complete.
    assert_eq!(
        pull(&mut cri, &image.name)
            .await
            .expect("pull after restart"),
        image.id
    );
    assert_eq!(files_under(&d.records_dir()), 1);
}

#[tokio::test]
async fn images_survive_a_restart() {
    let registry = Registry::shared();
    let image = busybox(&registry, "restart");
    let mut d = TestDaemon::start();
    pull(&mut d.cri().await, &image.name).await.expect("pull");
    d.restart();
    assert_still_there(&d, &image).await;
}

#[tokio::test]
async fn images_survive_kill_9() {
    let registry = Registry::shared();
    let image = busybox(&registry, "kill9");
    let mut d = TestDaemon::start();
    pull(&mut d.cri().await, &image.name).await.expect("pull");
    d.kill9();
    assert!(
        is_socket(&d.socket),
        "a killed daemon leaves its socket behind"
    );
    assert!(!version_answers(&d.endpoint()));
    d.restart();
    assert_still_there(&d, &image).await;
}

// ----- concurrency -----------------------------------------------------------------------

/// Waits until the registry's access log shows every blob served, then lets late lines
/// arrive: the registry writes a line after the response has gone out.
async fn settled_blob_gets(registry: &Registry, image: &Pushed) -> Vec<usize> {
    let blobs: Vec<&String> = std::iter::once(&image.id).chain(&image.layers).collect();
    let count = || {
        blobs
            .iter()
            .map(|b| registry.blob_gets(image.repo_path(), b))
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if count().iter().all(|&n| n > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    count()
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let registry = Registry::private();
    let image = busybox(&registry, "concurrent");
    let d = TestDaemon::start();
    let (mut a, mut b) = (d.cri().await, d.cri().await);

    let (ra, rb) = tokio::join!(pull(&mut a, &image.name), pull(&mut b, &image.name));
    assert_eq!(ra.expect("first pull"), image.id);
    assert_eq!(rb.expect("second pull"), image.id);
    assert_eq!(list_images(&mut a, None).await.len(), 1);
    assert_eq!(files_under(&d.records_dir()), 1);
    assert_eq!(
        settled_blob_gets(&registry, &image).await,
        vec![1, 1],
        "config and layer each fetched once; registry log:\n{}",
        registry.log()
    );
}

#[tokio::test]
async fn concurrent_pulls_by_tag_and_digest_fetch_each_blob_once() {
    let registry = Registry::private();
    let image = busybox(&registry, "concurrent-names");
    let d = TestDaemon::start();
    let (mut a, mut b) = (d.cri().await, d.cri().await);

    let by_digest = image.by_digest();
    let (ra, rb) = tokio::join!(pull(&mut a, &image.name), pull(&mut b, &by_digest));
    assert_eq!(ra.expect("pull by tag"), image.id);
    assert_eq!(rb.expect("pull by digest"), image.id);
    let st = image_status(&mut a, &image.id).await.expect("status");
    assert_eq!(st.repo_tags, vec![image.name.clone()]);
    assert_eq!(st.repo_digests, vec![image.by_digest()]);
    assert_eq!(files_under(&d.records_dir()), 1);
    assert_eq!(
        settled_blob_gets(&registry, &image).await,
        vec![1, 1],
        "config and layer each fetched once; registry log:\n{}",
        registry.log()
    );
}

// ----- bad input -------------------------------------------------------------------------

#[tokio::test]
async fn malformed_references_are_invalid_argument() {
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    for name in [
        "UPPER/x",
        "a b",
        "",
        "x@sha256:short",
        "x@md5:0123",
        "-x",
        "a:b:c",
    ] {
        assert_code(
            pull(&mut cri, name).await,
            Code::InvalidArgument,
            &format!("PullImage({name:?})"),
        );
        assert_code(
            try_image_status(&mut cri, name, false).await,
            Code::InvalidArgument,
            &format!("ImageStatus({name:?})"),
        );
        assert_code(
            remove_image(&mut cri, name).await,
            Code::InvalidArgument,
            &format!("RemoveImage({name:?})"),
        );
    }
    d.assert_image_store_empty("after malformed references");
}

#[tokio::test]
async fn unknown_repository_or_tag_is_not_found() {
    let registry = Registry::shared();
    let image = busybox(&registry, "not-found");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let never = format!("{}/{}:1", registry.addr, unique_repo("never-pushed"));
    let status = assert_code(
        pull(&mut cri, &never).await,
        Code::NotFound,
        "unknown repository",
    );
    assert!(
        status.message().contains(&never),
        "the message names the image: {status:?}"
    );
    assert_code(
        pull(&mut cri, &format!("{}:nope", image.repository)).await,
        Code::NotFound,
        "unknown tag",
    );
    d.assert_image_store_empty("after NotFound pulls");
}

#[tokio::test]
async fn unreachable_registry_is_unavailable() {
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let status = assert_code(
        pull(&mut cri, "127.0.0.1:1/x:1").await,
        Code::Unavailable,
        "nothing listens on :1",
    );
    assert!(
        status.message().contains("127.0.0.1:1"),
        "the message names the registry: {status:?}"
    );
    d.assert_image_store_empty("after an unreachable registry");
}

#[tokio::test]
async fn corrupted_registry_blob_is_data_loss() {
    let registry = Registry::private();
    let image = busybox(&registry, "corrupt");
    let data = registry.blob_data(&image.layers[0]);
    let len = std::fs::metadata(&data)
        .expect("layer blob in registry storage")
        .len() as usize;
    std::fs::write(&data, vec![0x5a; len]).expect("corrupt the blob");

    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let status = assert_code(
        pull(&mut cri, &image.name).await,
        Code::DataLoss,
        "layer bytes do not match the digest",
    );
    assert!(
        status.message().contains(&image.layers[0]),
        "the message names the blob: {status:?}"
    );
    assert!(image_status(&mut cri, &image.name).await.is_none());
    d.assert_image_store_empty("after a digest mismatch");
}

#[tokio::test]
async fn a_layer_that_unpacks_but_is_not_the_blob_leaves_nothing() {
    // The layer is unpacked as it downloads: here the registry serves a valid tar that
    // is shorter than the manifest says. It unpacks whole; the download then fails its
    // size check, and what the unpack made must go with it.
    let registry = Registry::private();
    let image = TestImage::new()
        .file("big", &[7u8; 64 * 1024])
        .push(&registry, &format!("{}:1", unique_repo("swapped")));
    let data = registry.blob_data(&image.layers[0]);
    let other = TestImage::new().file("small", b"not the layer").layer_tar();
    assert!(other.len() < std::fs::metadata(&data).expect("layer blob").len() as usize);
    std::fs::write(&data, &other).expect("swap the blob");

    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    assert_code(
        pull(&mut cri, &image.name).await,
        Code::DataLoss,
        "a layer blob shorter than its descriptor",
    );
    assert!(image_status(&mut cri, &image.name).await.is_none());
    d.assert_image_store_empty("after a blob that unpacked but was not the layer");
}

#[tokio::test]
async fn an_open_registry_is_asked_for_v2_once() {
    // A registry that asks for no credentials gives no token: its blobs are plain GETs,
    // not each preceded by another GET /v2/ (oci-client's way when it has no token), and
    // the next pull asks for the manifest straight away.
    let registry = Registry::private();
    let image = busybox(&registry, "open");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let before = registry.log().lines().count();
    assert_eq!(pull(&mut cri, &image.name).await.expect("pull"), image.id);
    remove_image(&mut cri, &image.name)
        .await
        .expect("remove image");
    assert_eq!(
        pull(&mut cri, &image.name).await.expect("pull again"),
        image.id
    );
    assert_eq!(settled_blob_gets(&registry, &image).await, vec![2, 2]);
    let log = registry.log();
    let pings = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("\"GET /v2/ "))
        .count();
    assert_eq!(
        pings, 1,
        "GET /v2/ once, for the first pull; registry log:\n{log}"
    );
}

#[tokio::test]
async fn layer_that_is_not_a_tar_is_invalid_argument() {
    let registry = Registry::shared();
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    for media_type in [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
    ] {
        // Valid by digest (the registry and oci-client accept it), not a layer.
        let image = TestImage::new()
            .raw_layer(&b"this is not a tar archive. ".repeat(80))
            .media_type(media_type)
            .push(&registry, &format!("{}:1", unique_repo("not-a-tar")));
        assert_code(
            pull(&mut cri, &image.name).await,
            Code::InvalidArgument,
            media_type,
        );
        assert!(image_status(&mut cri, &image.name).await.is_none());
        d.assert_image_store_empty(&format!("after a {media_type} layer that is not one"));
    }
}

#[tokio::test]
async fn config_diff_id_not_matching_the_layer_is_data_loss() {
    let registry = Registry::shared();
    let image = TestImage::new()
        .file("hello", b"hello\n")
        .diff_id(&format!("sha256:{}", "ab".repeat(32)))
        .push(&registry, &format!("{}:1", unique_repo("bad-diff-id")));
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let status = assert_code(
        pull(&mut cri, &image.name).await,
        Code::DataLoss,
        "diff_id mismatch",
    );
    assert!(status.message().contains("diff_id"), "{status:?}");
    d.assert_image_store_empty("after a diff_id mismatch");
}

// ----- the daemon's socket and root ------------------------------------------------------

const REFUSE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn second_daemon_on_the_same_socket_refuses_to_start() {
    let d = TestDaemon::start();
    let out = output_within(
        d.serve_command()
            .arg("--root")
            .arg(d.dir().join("root2"))
            .arg("--run-dir")
            .arg(d.dir().join("run2")),
        REFUSE_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second daemon started: {stderr}");
    assert!(
        stderr.contains(&d.socket.display().to_string()),
        "stderr names the socket: {stderr}"
    );
    assert!(
        version_answers(&d.endpoint()),
        "the first daemon still serves"
    );
}

#[test]
fn second_daemon_on_the_same_root_refuses_to_start() {
    let d = TestDaemon::start();
    let other_socket = d.dir().join("other.sock");
    let out = output_within(
        d.serve_command().arg("--socket").arg(&other_socket),
        REFUSE_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second daemon started: {stderr}");
    assert!(
        stderr.contains(&d.root.display().to_string()),
        "stderr names the root: {stderr}"
    );
    let pid = d.pid().expect("first daemon runs").to_string();
    assert!(
        stderr.contains(&pid),
        "stderr names the holder's pid {pid}: {stderr}"
    );
    assert!(!other_socket.exists(), "the refused daemon bound a socket");
    assert!(
        version_answers(&d.endpoint()),
        "the first daemon still serves"
    );
}

#[test]
fn stale_socket_file_is_replaced() {
    let mut d = TestDaemon::start();
    let (status, killed) = d.stop();
    assert!(status.success() && !killed, "clean stop: {status}");
    assert!(!d.socket.exists(), "a clean stop removes the socket");
    // A socket file nobody listens on, as a crash leaves it.
    drop(std::os::unix::net::UnixListener::bind(&d.socket).expect("bind"));
    assert!(is_socket(&d.socket) && !version_answers(&d.endpoint()));
    d.restart();
    assert!(version_answers(&d.endpoint()));
    assert!(d.log().contains("replacing stale socket"), "{}", d.log());
}

// ----- configuration ---------------------------------------------------------------------

#[test]
fn config_default_prints_the_defaults() {
    let out = output_within(
        std::process::Command::new(proxrt_bin()).args(["config", "default"]),
        REFUSE_TIMEOUT,
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let parsed = proxrt::config::Config::from_toml_str(&text, std::path::Path::new("<stdout>"))
        .expect("parses");
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        serde_json::to_value(proxrt::config::Config::default()).unwrap()
    );
    // Every key is written out, not left to the defaults it is laid over.
    let table: toml::Table = toml::from_str(&text).expect("TOML");
    for (section, keys) in [
        (
            "daemon",
            &[
                "socket",
                "socket_mode",
                "socket_group",
                "root",
                "run_dir",
                "log_level",
            ][..],
        ),
        (
            "images",
            &[
                "max_concurrent_downloads",
                "connect_timeout_secs",
                "read_timeout_secs",
            ][..],
        ),
    ] {
        for key in keys {
            assert!(
                table[section].get(*key).is_some(),
                "{section}.{key} missing from config default"
            );
        }
    }
}

#[test]
fn unknown_config_key_stops_serve_naming_key_and_file() {
    let dir = temp_dir("proxrt-config-");
    let file = dir.path().join("config.toml");
    // Paths inside the temp dir: were the file wrongly accepted, the daemon would not
    // touch the host's /var/lib/proxrt.
    let d = dir.path().display();
    let paths = format!(
        "[daemon]\nroot = \"{d}/root\"\nrun_dir = \"{d}/run\"\nsocket = \"{d}/run/s.sock\"\n"
    );
    for (bad, key) in [
        ("sockett = \"/x\"\n", "sockett"),
        ("[deamon]\nroot = \"/x\"\n", "deamon"),
        (
            "[images]\nmax_concurrent_downloads = 0\n",
            "images.max_concurrent_downloads",
        ),
        (
            "[runtime]\ncreate_template_idle_seconds = 0\n",
            "runtime.create_template_idle_seconds",
        ),
    ] {
        let text = format!("{paths}{bad}");
        std::fs::write(&file, &text).unwrap();
        let out = output_within(
            std::process::Command::new(proxrt_bin())
                .arg("serve")
                .arg("--config")
                .arg(&file),
            REFUSE_TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} accepted: {stderr}");
        assert!(
            stderr.contains(key),
            "{text:?}: stderr names {key}: {stderr}"
        );
        assert!(
            stderr.contains(&file.display().to_string()),
            "{text:?}: stderr names the file: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing but the config file was made"
    );
}
