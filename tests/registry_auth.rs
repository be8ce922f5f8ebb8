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
        AuthRegistry::start_on(user_pass, None)
    }

    /// On `port` (a given one, for a test that replaces an open registry by this one),
    /// with its access log in `log()`.
    fn start_on(user_pass: &str, port: Option<&str>) -> AuthRegistry {
        let dir = temp_dir("proxrt-auth-registry-");
        let mut cmd = Command::new(hack("registry"));
        cmd.arg("start")
            .arg(dir.path())
            .env("REGISTRY_HTPASSWD", user_pass)
            .env("REGISTRY_ACCESSLOG", "1");
        if let Some(port) = port {
            cmd.env("REGISTRY_PORT", port);
        }
        let out = cmd.output().expect("run hack/registry");
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

impl AuthRegistry {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the busybox image as `<registry>/private/busybox:1`, with credentials.
    fn push_busybox(&self, user_pass: &str) -> String {
        let name = format!("{}/private/busybox:1", self.addr);
        let push = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
            .arg(user_pass)
            .arg(format!("oci:{}:latest", busybox_layout().display()))
            .arg(format!("docker://{name}"))
            .output()
            .expect("skopeo");
        assert!(
            push.status.success(),
            "{}",
            String::from_utf8_lossy(&push.stderr)
        );
        name
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
    let image = registry.push_busybox("tester:s3cret");

    let daemon = TestDaemon::start();
    let mut cri = daemon.cri().await;

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

/// A registry remembered as open (an anonymous pull got no token) is asked for the
/// manifest straight away next time. When the same address asks for credentials
/// after all, the 401 sends the daemon back to asking /v2/ (the token dance) and the
/// request again: an anonymous pull fails as with a registry never seen, one with
/// credentials succeeds.
#[tokio::test]
async fn a_registry_that_was_open_and_now_asks_for_credentials_is_asked_properly() {
    let open = common::Registry::private();
    let port = open.addr.rsplit_once(':').expect("host:port").1.to_owned();
    let pushed = common::push_busybox(&open, "private/busybox:1");
    let daemon = TestDaemon::start();
    let mut cri = daemon.cri().await;
    let id = pull_with(&mut cri, &pushed.name, None)
        .await
        .expect("anonymous pull from the open registry");
    drop(open);

    let registry = AuthRegistry::start_on("tester:s3cret", Some(&port));
    let image = registry.push_busybox("tester:s3cret");
    assert_eq!(image, pushed.name, "the same name at the same address");
    let before = registry.log().lines().count();
    let err = pull_with(&mut cri, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let log = registry.log();
    let asked: Vec<&str> = log
        .lines()
        .skip(before)
        .filter_map(|l| {
            if l.contains("\"GET /v2/ ") {
                Some("v2")
            } else if l.contains("\"GET /v2/") && l.contains("/manifests/") {
                Some("manifest")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        asked,
        ["manifest", "v2", "manifest"],
        "straight to the manifest, then /v2/ after its 401, then the manifest again:\n{log}"
    );

    let right = AuthConfig {
        username: "tester".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let again = pull_with(&mut cri, &image, Some(right))
        .await
        .expect("pull with credentials");
    assert_eq!(again, id);
}
