//! The gRPC code of every failure class of each image RPC, on a real daemon: a bad
//! request (InvalidArgument), a missing object (NotFound, or the empty answer CRI asks
//! for) and an internal failure (Internal), provoked by breaking the image store on disk
//! under the running daemon (a directory replaced by a file, so the kernel answers
//! ENOTDIR/ENOENT). Each internal failure must also leave the store usable once repaired.
//!
//! ImageStatus and ListImages are answered from the in-memory index; they have no
//! internal failure to provoke, so only their other two classes are checked here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use k8s_cri::v1::{ImageFsInfoRequest, ImageSpec, PullImageRequest, RemoveImageRequest};
use tonic::Code;

const NO_SUCH_ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A directory of the store swapped for a regular file until `repair`.
struct Broken {
    dir: PathBuf,
    aside: PathBuf,
}

impl Broken {
    fn dir(dir: &Path) -> Broken {
        let aside = dir.with_extension("aside");
        fs::rename(dir, &aside).expect("move the store dir aside");
        fs::write(dir, b"not a directory").expect("put a file in its place");
        Broken {
            dir: dir.to_owned(),
            aside,
        }
    }

    fn repair(self) {
        fs::remove_file(&self.dir).expect("remove the file");
        fs::rename(&self.aside, &self.dir).expect("put the store dir back");
    }
}

fn tiny(registry: &Registry, what: &str) -> Pushed {
    TestImage::new()
        .file("hello", what.as_bytes())
        .push(registry, &format!("{}:1", unique_repo(what)))
}

#[tokio::test]
async fn pull_image_codes() {
    let registry = Registry::shared();
    let image = tiny(&registry, "codes-pull");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;

    // Bad request: no image, or a reference that does not parse.
    let empty = cri
        .images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec::default()),
            ..Default::default()
        })
        .await;
    assert_code(empty, Code::InvalidArgument, "PullImage with no image");
    assert_code(
        pull(&mut cri, "UPPER/Case::bad").await,
        Code::InvalidArgument,
        "PullImage of a malformed reference",
    );
    // Missing object: a tag the registry does not have.
    let missing = format!("{}:no-such-tag", image.name.rsplit_once(':').unwrap().0);
    assert_code(
        pull(&mut cri, &missing).await,
        Code::NotFound,
        "PullImage of a missing tag",
    );

    // Internal: downloads cannot be written (the ingest dir is a file).
    let broken = Broken::dir(&d.ingest_dir());
    let s = assert_code(
        pull(&mut cri, &image.name).await,
        Code::Internal,
        "PullImage with an unwritable store",
    );
    assert!(!s.message().is_empty(), "the failure says what broke");
    broken.repair();
    d.assert_image_store_empty("after an internal pull failure");
    assert!(
        list_images(&mut cri, None).await.is_empty(),
        "a failed pull records no image"
    );

    // Repaired, the same pull works.
    let id = pull(&mut cri, &image.name)
        .await
        .expect("pull once repaired");
    assert_eq!(id, image.id);
}

#[tokio::test]
async fn image_status_and_list_images_codes() {
    let d = TestDaemon::start();
    let mut cri = d.cri().await;

    assert_code(
        try_image_status(&mut cri, "", false).await,
        Code::InvalidArgument,
        "ImageStatus with no image",
    );
    assert_code(
        try_image_status(&mut cri, "bad::ref", false).await,
        Code::InvalidArgument,
        "ImageStatus of a malformed reference",
    );
    let missing = try_image_status(&mut cri, NO_SUCH_ID, true)
        .await
        .expect("ImageStatus of a missing image is not an error");
    assert!(
        missing.image.is_none() && missing.info.is_empty(),
        "a missing image is an empty answer: {missing:?}"
    );

    let filtered = cri
        .images
        .list_images(k8s_cri::v1::ListImagesRequest {
            filter: Some(k8s_cri::v1::ImageFilter {
                image: Some(ImageSpec {
                    image: "bad::ref".into(),
                    ..Default::default()
                }),
            }),
        })
        .await;
    assert_code(
        filtered,
        Code::InvalidArgument,
        "ListImages filtered by a malformed reference",
    );
    assert!(
        list_images(&mut cri, Some(NO_SUCH_ID)).await.is_empty(),
        "a filter matching nothing lists nothing"
    );
}

#[tokio::test]
async fn remove_image_codes() {
    let registry = Registry::shared();
    let image = tiny(&registry, "codes-remove");
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    pull(&mut cri, &image.name).await.expect("pull");

    let empty = cri
        .images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec::default()),
        })
        .await;
    assert_code(empty, Code::InvalidArgument, "RemoveImage with no image");
    assert_code(
        remove_image(&mut cri, "bad::ref").await,
        Code::InvalidArgument,
        "RemoveImage of a malformed reference",
    );
    // CRI: removing an image that is not there succeeds.
    remove_image(&mut cri, NO_SUCH_ID)
        .await
        .expect("RemoveImage of a missing image succeeds");

    // Internal: the record cannot be deleted (the records dir is a file). The image
    // stays, whole, so kubelet's retry can remove it.
    let broken = Broken::dir(&d.records_dir());
    assert_code(
        remove_image(&mut cri, &image.name).await,
        Code::Internal,
        "RemoveImage with an unwritable store",
    );
    broken.repair();
    let still = image_status(&mut cri, &image.name)
        .await
        .expect("the image is still there after a failed remove");
    assert_eq!(still.id, image.id);
    assert!(files_under(&d.snapshots_dir()) > 0, "its layers are kept");

    remove_image(&mut cri, &image.name)
        .await
        .expect("remove once repaired");
    d.assert_image_store_empty("after the retried remove");
}

#[tokio::test]
async fn image_fs_info_codes() {
    let d = TestDaemon::start();
    let mut cri = d.cri().await;

    // ImageFsInfo has no request fields to get wrong and no object to miss; its one
    // failure is the store itself: gone from under the daemon, it is Internal.
    let images = d.images_dir();
    let aside = images.with_extension("aside");
    fs::rename(&images, &aside).expect("move the image store aside");
    let s = assert_code(
        cri.images.image_fs_info(ImageFsInfoRequest {}).await,
        Code::Internal,
        "ImageFsInfo with the store gone",
    );
    assert!(
        s.message().contains("measure image store"),
        "the message says what failed: {s:?}"
    );
    fs::rename(&aside, &images).expect("put the image store back");
    let (bytes, inodes) = image_fs_usage(&mut cri).await;
    assert!(
        bytes > 0 && inodes > 0,
        "answers once repaired: {bytes} {inodes}"
    );
}
