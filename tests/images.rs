mod common;
use common::*;

#[tokio::test]
async fn pull_by_tag() {
    let registry = Registry::shared();
    let image = push_busybox(&registry, &format!("{}:1", unique_repo("busybox")));
    let d = TestDaemon::start();
    let mut cri = d.cri().await;
    let id = pull(&mut cri, &image.name).await.unwrap();
    assert_eq!(id, image.id);
}
