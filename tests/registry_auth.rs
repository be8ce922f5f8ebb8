//! PullImage with the request's AuthConfig against a real registry that demands basic
//! auth (docker-registry with htpasswd, started by hack/registry).

mod common;

use std::process::Command;

use common::{busybox_layout, hack, temp_dir, TestDaemon};
use k8s_cri::v1::{AuthConfig, ImageSpec, PullImageRequest};
use tonic::Code;

struct AuthRegistry {
    addr: String,
    dir: tempfile::TempDir,
}

impl AuthRegistry {
    fn start(user_pass: &str) -> AuthRegistry {
        let dir = temp_dir("proxrt-auth-registry-");
        let out = Command::new(hack("registry"))
            .arg("start")
            .arg(dir.path())
            .env("REGISTRY_HTPASSWD", user_pass)
            .output()
            .expect("run hack/registry");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        AuthRegistry {
            addr: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            dir,
        }
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = Command::new(hack("registry"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

async fn pull_with(
    cri: &mut proxrt::client::Cri,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

#[tokio::test]
async fn basic_auth_from_the_request_is_used_and_wrong_credentials_are_refused() {
    let registry = AuthRegistry::start("tester:s3cret");
    let layout = busybox_layout();
    let dest = format!("docker://{}/private/busybox:1", registry.addr);
    let push = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "tester:s3cret",
        ])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(&dest)
        .output()
        .expect("skopeo");
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );

    let daemon = TestDaemon::start();
    let mut cri = daemon.cri().await;
    let image = format!("{}/private/busybox:1", registry.addr);

    // Anonymous first: the daemon must not remember this as the registry's credentials.
    let err = pull_with(&mut cri, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let wrong = AuthConfig {
        username: "tester".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = pull_with(&mut cri, &image, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    daemon.assert_image_store_empty("after refused pulls");

    // The base64 `auth` form, as kubelet sends from an image pull secret.
    use base64::Engine as _;
    let right = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("tester:s3cret"),
        ..Default::default()
    };
    let id = pull_with(&mut cri, &image, Some(right))
        .await
        .expect("pull with credentials");
    assert!(id.starts_with("sha256:"), "{id}");

    let plain = AuthConfig {
        username: "tester".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        pull_with(&mut cri, &image, Some(plain))
            .await
            .expect("pull again"),
        id
    );
}
