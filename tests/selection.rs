//! Runtime selection observed through CRI and the CLI (docs/runtime-selection.md): the
//! RuntimeClass handler, the `proxrt.io/runtime` annotation, image rules at CreateContainer,
//! the default; refusals with their gRPC codes and nothing left behind; the decision and
//! its reason in verbose status and `proxrt inspect`; crun reported unavailable on a host
//! whose cgroups it refuses; invalid rules stopping startup; `proxrt select` offline.
//!
//! The rule tables themselves (anchors, priorities, name forms) are unit tests in
//! src/select.rs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pods::*;
use common::{busybox_layout, output_within, proxrt_bin, temp_dir};
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ImageSpec, PodSandboxStatusRequest,
    RunPodSandboxRequest, StatusRequest,
};
use proxrt::admin::admin_client::AdminClient;
use proxrt::admin::ImportImageRequest;
use proxrt::backend::crun::{CgroupLayout, CrunProbe};
use proxrt::config::{CrunConfig, HybridCgroups};
use tonic::{Code, Status};

const ANNOTATION: &str = "proxrt.io/runtime";

async fn try_run_pod_on(
    env: &mut PodEnv,
    name: &str,
    handler: &str,
    annotations: &[(&str, &str)],
) -> Result<Pod, Status> {
    let mut config = env.pod_config(name);
    for (k, v) in annotations {
        config.annotations.insert((*k).into(), (*v).into());
    }
    let id = env
        .cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    Ok(Pod { id, config })
}

async fn run_pod_on(
    env: &mut PodEnv,
    name: &str,
    handler: &str,
    annotations: &[(&str, &str)],
) -> Pod {
    match try_run_pod_on(env, name, handler, annotations).await {
        Ok(p) => p,
        Err(s) => panic!(
            "RunPodSandbox {name} (handler {handler:?}): {s:?}\n{}",
            env.daemon().log()
        ),
    }
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, what: &str) -> String {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            s.message().to_owned()
        }
    }
}

/// (backend, backendReason) from a verbose PodSandboxStatus.
async fn pod_decision(env: &mut PodEnv, id: &str) -> (String, String) {
    let r = env
        .cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    decision(r.info.get("info").expect("verbose info"))
}

/// (backend, backendReason) from a verbose ContainerStatus.
async fn container_decision(env: &mut PodEnv, id: &str) -> (String, String) {
    let r = env
        .cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    decision(r.info.get("info").expect("verbose info"))
}

fn decision(info: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(info).expect("info is JSON");
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
            .to_owned()
    };
    (s("backend"), s("backendReason"))
}

fn pair(backend: &str, reason: &str) -> (String, String) {
    (backend.to_owned(), reason.to_owned())
}

/// Imports the busybox layout into the daemon under more names.
async fn import_as(env: &mut PodEnv, names: &[&str]) {
    let mut admin = AdminClient::new(env.cri.channel.clone());
    admin
        .import_image(ImportImageRequest {
            path: busybox_layout().display().to_string(),
            tags: names.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .unwrap_or_else(|s| panic!("ImportImage as {names:?}: {s:?}"));
}

/// A container config for `image` as kubelet 1.28+ sends it: the pod spec's name in
/// `user_specified_image`, and `image` (the resolved id, or the name again).
fn with_image(
    env: &PodEnv,
    pod: &Pod,
    name: &str,
    image: &str,
    resolved: &str,
    command: &[&str],
) -> k8s_cri::v1::ContainerConfig {
    let mut c = env.container_config(pod, name, command);
    c.image = Some(ImageSpec {
        image: resolved.into(),
        user_specified_image: image.into(),
        ..Default::default()
    });
    c
}

/// The state, once the daemon stopped changing (a started container's monitor connection).
async fn settled(env: &PodEnv) -> Snapshot {
    let mut last = env.snapshot();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = env.snapshot();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// A running container in a pod of its own: the cgroup parents exist before "before".
async fn steady(env: &mut PodEnv) {
    let pod = run_pod_on(env, "steady", "", &[]).await;
    let cfg = env.container_config(&pod, "steady", &["sleep", "1000"]);
    env.create_start(&pod, cfg).await;
}

/// Why crun refuses this host with the default config, if it does.
fn crun_refusal_here() -> Option<String> {
    let probe = CrunProbe::run(&CrunConfig {
        path: "crun".into(),
        hybrid_cgroups: HybridCgroups::Refuse,
    });
    probe.binary.as_ref()?;
    probe.cgroups.crun_refusal()
}

#[tokio::test]
async fn handler_then_annotation_then_default_decide_the_pod() {
    let mut env = PodEnv::start().await;
    let by_handler = run_pod_on(&mut env, "by-handler", "libcontainer", &[]).await;
    let by_annotation = run_pod_on(
        &mut env,
        "by-annotation",
        "",
        &[(ANNOTATION, "libcontainer")],
    )
    .await;
    let by_default = run_pod_on(&mut env, "by-default", "", &[]).await;
    // The handler decides; the annotation is not even looked at.
    let both = run_pod_on(
        &mut env,
        "both",
        "libcontainer",
        &[(ANNOTATION, "no-such-handler")],
    )
    .await;
    assert_eq!(
        pod_decision(&mut env, &by_handler.id).await,
        pair("libcontainer", "handler libcontainer")
    );
    assert_eq!(
        pod_decision(&mut env, &by_annotation.id).await,
        pair("libcontainer", "annotation proxrt.io/runtime=libcontainer")
    );
    assert_eq!(
        pod_decision(&mut env, &by_default.id).await,
        pair("libcontainer", "default")
    );
    assert_eq!(
        pod_decision(&mut env, &both.id).await,
        pair("libcontainer", "handler libcontainer")
    );
    let st = env.pod_status(&by_handler.id).await.unwrap();
    assert_eq!(st.runtime_handler, "libcontainer");

    // Containers carry their pod's decision.
    for (pod, reason) in [
        (&by_handler, "handler libcontainer"),
        (&by_annotation, "annotation proxrt.io/runtime=libcontainer"),
        (&by_default, "default"),
    ] {
        let cfg = env.container_config(pod, "main", &["sh", "-c", "exit 6"]);
        let id = env.create_start(pod, cfg).await;
        assert_eq!(
            container_decision(&mut env, &id).await,
            pair("libcontainer", reason)
        );
        assert_eq!(env.wait_exit(&id).await.exit_code, 6);
    }
}

#[tokio::test]
async fn unknown_handlers_are_invalid_argument_and_leave_nothing() {
    let mut env = PodEnv::start().await;
    steady(&mut env).await;
    let before = settled(&env).await;
    let msg = expect_code(
        try_run_pod_on(&mut env, "web", "runc", &[]).await,
        Code::InvalidArgument,
        "handler runc",
    );
    assert!(msg.contains("unknown runtime handler \"runc\""), "{msg}");
    assert!(
        msg.contains("crun, libcontainer, proxmox-lxc"),
        "the configured handlers are listed: {msg}"
    );
    let msg = expect_code(
        try_run_pod_on(&mut env, "web", "", &[(ANNOTATION, "runc")]).await,
        Code::InvalidArgument,
        "annotation runc",
    );
    assert!(
        msg.contains("proxrt.io/runtime=\"runc\" names no configured handler"),
        "{msg}"
    );
    env.assert_back_to(&before, "refused RunPodSandbox").await;
    // The pod's name was not kept.
    run_pod_on(&mut env, "web", "", &[]).await;
}

#[tokio::test]
async fn a_backend_that_is_not_implemented_is_refused_before_anything_is_made() {
    let mut env = PodEnv::start().await;
    steady(&mut env).await;
    let before = settled(&env).await;
    for (handler, annotations, reason) in [
        ("proxmox-lxc", vec![], "handler proxmox-lxc"),
        (
            "",
            vec![(ANNOTATION, "proxmox-lxc")],
            "annotation proxrt.io/runtime=proxmox-lxc",
        ),
    ] {
        let msg = expect_code(
            try_run_pod_on(&mut env, "guest", handler, &annotations).await,
            Code::FailedPrecondition,
            reason,
        );
        assert!(
            msg.contains(
                "backend proxmox-lxc is not available on this daemon (no [proxmox] endpoints configured)"
            ),
            "{msg}"
        );
        assert!(msg.contains(reason), "the decision is named: {msg}");
        env.assert_back_to(&before, reason).await;
    }
}

#[tokio::test]
async fn image_rules_refuse_a_container_of_another_family_in_every_spelling() {
    let mut env = PodEnv::start().await;
    // Present locally, so the refusal is the rule's, not a missing image.
    import_as(
        &mut env,
        &[
            "docker.io/lxc/debian-12:latest",
            "docker.io/library/db-postgres:15",
        ],
    )
    .await;
    let id_of_lxc = common::image_status(&mut env.cri, "docker.io/lxc/debian-12:latest")
        .await
        .expect("imported")
        .id;
    let pod = run_pod_on(&mut env, "mixed", "", &[]).await;
    // A pod with a host container stays a host pod (an empty default pod would move to
    // the rule's backend instead: tests/proxmox_backend.rs).
    let first = env.container_config(&pod, "first", &["sleep", "600"]);
    env.create_start(&pod, first).await;
    steady(&mut env).await;
    let before = settled(&env).await;
    let spellings: Vec<(&str, String, &str)> = vec![
        (
            "lxc/debian-12",
            "lxc/debian-12".into(),
            "image rule #1 prefix lxc/",
        ),
        (
            "docker.io/lxc/debian-12",
            "docker.io/lxc/debian-12".into(),
            "image rule #1 prefix lxc/",
        ),
        (
            "docker.io/lxc/debian-12:latest",
            "docker.io/lxc/debian-12:latest".into(),
            "image rule #1 prefix lxc/",
        ),
        // kubelet: the pod spec's name and the resolved id.
        (
            "lxc/debian-12",
            id_of_lxc.clone(),
            "image rule #1 prefix lxc/",
        ),
        // Only the id (older kubelets): the store's names for it are matched.
        ("", id_of_lxc.clone(), "image rule #1 prefix lxc/"),
        (
            "db-postgres:15",
            "db-postgres:15".into(),
            "image rule #2 prefix db-",
        ),
        (
            "docker.io/library/db-postgres:15",
            "docker.io/library/db-postgres:15".into(),
            "image rule #2 prefix db-",
        ),
        // Not present at all: still the rule's answer, not NotFound.
        (
            "vm-windows:11",
            "vm-windows:11".into(),
            "image rule #3 prefix vm-",
        ),
    ];
    for (written, resolved, rule) in &spellings {
        let cfg = with_image(&env, &pod, "guest", written, resolved, &["true"]);
        let msg = expect_code(
            env.create(&pod, cfg).await,
            Code::FailedPrecondition,
            written,
        );
        assert!(
            msg.contains(&format!("goes to backend proxmox-lxc by {rule}")),
            "{written:?}/{resolved}: {msg}"
        );
        assert!(
            msg.contains("runs on backend libcontainer (default)"),
            "both backends are named: {msg}"
        );
        env.assert_back_to(&before, &format!("refused CreateContainer of {written:?}"))
            .await;
    }
    // The name "guest" was never reserved.
    let id = env
        .create_start(
            &pod,
            env.container_config(&pod, "guest", &["sh", "-c", "exit 3"]),
        )
        .await;
    assert_eq!(env.wait_exit(&id).await.exit_code, 3);

    // A pod whose handler chose libcontainer runs the same image there: the handler wins.
    let explicit = run_pod_on(&mut env, "explicit", "libcontainer", &[]).await;
    let cfg = with_image(
        &env,
        &explicit,
        "guest",
        "lxc/debian-12",
        &id_of_lxc,
        &["sh", "-c", "exit 5"],
    );
    let id = env.create_start(&explicit, cfg).await;
    assert_eq!(
        container_decision(&mut env, &id).await,
        pair("libcontainer", "handler libcontainer")
    );
    assert_eq!(env.wait_exit(&id).await.exit_code, 5);
}

#[tokio::test]
async fn an_image_rule_moves_a_container_within_the_pods_backend_family() {
    let crun_extra = match crun_refusal_here() {
        Some(reason) => {
            eprintln!("NOTE: crun runs with [crun] hybrid_cgroups = \"v1-view\" here ({reason})");
            "[crun]\nhybrid_cgroups = \"v1-view\"\n"
        }
        None => "",
    };
    if CrunProbe::run(&CrunConfig {
        path: "crun".into(),
        hybrid_cgroups: HybridCgroups::V1View,
    })
    .unavailable
    .is_some()
    {
        eprintln!("SKIP: an_image_rule_moves_a_container_within_the_pods_backend_family: crun cannot run here");
        return;
    }
    let rules = r#"
[[image_rules]]
match = "glob"
pattern = "proxrt.test/fast-*"
backend = "crun"

[[image_rules]]
match = "regex"
pattern = 'proxrt\.test/(fast|slow)-box(:.*)?'
backend = "libcontainer"
priority = -1
"#;
    let mut env = PodEnv::start_with(&format!("{crun_extra}{rules}")).await;
    import_as(
        &mut env,
        &["proxrt.test/fast-box:1", "proxrt.test/slow-box:1"],
    )
    .await;
    let pod = run_pod_on(&mut env, "rules", "", &[]).await;
    let plain = env.image.clone();
    let cases = [
        (
            "fast",
            "proxrt.test/fast-box:1",
            pair("crun", "image rule #1 glob proxrt.test/fast-*"),
        ),
        (
            "slow",
            "proxrt.test/slow-box:1",
            pair(
                "libcontainer",
                r"image rule #2 regex proxrt\.test/(fast|slow)-box(:.*)?",
            ),
        ),
        ("plain", plain.as_str(), pair("libcontainer", "default")),
    ];
    let mut ids = Vec::new();
    for (name, image, expected) in cases.clone() {
        let cfg = with_image(
            &env,
            &pod,
            name,
            image,
            image,
            &["sh", "-c", "echo ran; exit 4"],
        );
        let id = env.create_start(&pod, cfg).await;
        assert_eq!(container_decision(&mut env, &id).await, expected, "{image}");
        ids.push(id);
    }
    for id in &ids {
        let st = env.wait_exit(id).await;
        assert_eq!(st.exit_code, 4, "{st:?}");
    }
    // The pod itself stays on the default backend; `proxrt inspect` shows the decision.
    assert_eq!(
        pod_decision(&mut env, &pod.id).await,
        pair("libcontainer", "default")
    );
    let out = Command::new(proxrt_bin())
        .args(["--endpoint", &env.daemon().endpoint(), "inspect", &ids[0]])
        .output()
        .expect("run proxrt inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "proxrt inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"backend\": \"crun\""), "{text}");
    assert!(
        text.contains("\"backendReason\": \"image rule #1 glob proxrt.test/fast-*\""),
        "{text}"
    );
    // And the same for a restart: the records keep the decision.
    env.restart().await;
    assert_eq!(container_decision(&mut env, &ids[0]).await, cases[0].2);
    assert_eq!(
        env.status(&ids[0]).await.state,
        ContainerState::ContainerExited as i32
    );
}

#[tokio::test]
async fn crun_refused_by_the_hosts_cgroups_is_reported_and_refused() {
    let Some(reason) = crun_refusal_here() else {
        eprintln!(
            "SKIP: crun_refused_by_the_hosts_cgroups_is_reported_and_refused: crun accepts this host's cgroups \
             ({:?}), so there is no refusal to report",
            CgroupLayout::detect()
        );
        return;
    };
    let mut env = PodEnv::start().await;
    // Status verbose, as `proxrt info` shows it.
    let r = env
        .cri
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let backends: serde_json::Value =
        serde_json::from_str(r.info.get("backends").expect("backends info")).unwrap();
    assert_eq!(backends["crun"]["available"], false, "{backends}");
    assert_eq!(backends["crun"]["reason"], reason.as_str(), "{backends}");
    assert_eq!(backends["libcontainer"]["available"], true, "{backends}");
    assert_eq!(
        backends["proxmox-lxc"]["reason"], "no [proxmox] endpoints configured",
        "{backends}"
    );
    // The default backend works, so the runtime is ready.
    let ready = r
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(ready.status, "{ready:?}");
    let out = output_within(
        Command::new(proxrt_bin()).args(["--endpoint", &env.daemon().endpoint(), "info"]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("drop all controllers from cgroupv2"),
        "proxrt info shows the reason: {text}"
    );

    steady(&mut env).await;
    let before = settled(&env).await;
    let msg = expect_code(
        try_run_pod_on(&mut env, "c", "crun", &[]).await,
        Code::FailedPrecondition,
        "handler crun",
    );
    assert!(
        msg.contains(&format!(
            "backend crun is not available on this daemon ({reason})"
        )),
        "{msg}"
    );
    env.assert_back_to(&before, "refused crun pod").await;
}

#[tokio::test]
async fn a_default_backend_that_cannot_run_makes_the_runtime_not_ready() {
    let mut env = PodEnv::start_with("[runtime]\ndefault_backend = \"proxmox-lxc\"\n").await;
    let r = env
        .cri
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let ready = r
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(!ready.status, "{ready:?}");
    assert_eq!(ready.reason, "DefaultBackendUnavailable");
    assert!(
        ready.message.contains("proxmox-lxc")
            && ready.message.contains("no [proxmox] endpoints configured"),
        "{ready:?}"
    );
    let msg = expect_code(
        try_run_pod_on(&mut env, "p", "", &[]).await,
        Code::FailedPrecondition,
        "default",
    );
    assert!(msg.contains("selected by default"), "{msg}");
    // A handler still reaches a backend that works.
    run_pod_on(&mut env, "q", "libcontainer", &[]).await;
}

/// A config file in a temp dir, for the commands that read one.
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = temp_dir("proxrt-select-");
    let path = dir.path().join("config.toml");
    let root = dir.path().join("root");
    let run = dir.path().join("run");
    let full = format!(
        "[daemon]\nroot = \"{}\"\nrun_dir = \"{}\"\nsocket = \"{}\"\n{text}",
        root.display(),
        run.display(),
        run.join("proxrt.sock").display()
    );
    std::fs::write(&path, full).unwrap();
    (dir, path)
}

#[test]
fn invalid_rules_stop_the_daemon_naming_the_rule() {
    for (rules, key, what) in [
        (
            "[[image_rules]]\nmatch = \"prefix\"\npattern = \"a/\"\nbackend = \"crun\"\n\n\
             [[image_rules]]\nmatch = \"regex\"\npattern = \"lxc/(\"\nbackend = \"proxmox-lxc\"\n",
            "image_rules[1]",
            "rule #2: regex \"lxc/(\"",
        ),
        (
            "[[image_rules]]\nmatch = \"glob\"\npattern = \"a[\"\nbackend = \"crun\"\n",
            "image_rules[0]",
            "rule #1: glob",
        ),
        (
            "[[image_rules]]\nmatch = \"prefix\"\npattern = \"a\"\nbackend = \"lxd\"\n",
            "image_rules[0].backend",
            "lxd",
        ),
        (
            "[handlers.fast]\nbackend = \"runc\"\n",
            "handlers.\"fast\".backend",
            "runc",
        ),
    ] {
        let (dir, path) = config_file(rules);
        let out = output_within(
            Command::new(proxrt_bin())
                .arg("serve")
                .arg("--config")
                .arg(&path),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rules}: {err}");
        assert!(err.contains(key) && err.contains(what), "{rules}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "the file is named: {err}"
        );
        assert!(
            !dir.path().join("run").join("proxrt.sock").exists(),
            "nothing was served"
        );
        let out = Command::new(proxrt_bin())
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "config check refuses it too");
    }
}

fn select(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = output_within(
        Command::new(proxrt_bin())
            .arg("select")
            .arg("--config")
            .arg(config)
            .args(args),
        Duration::from_secs(30),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn proxrt_select_explains_the_decision_offline() {
    let (_dir, path) = config_file("");
    for image in [
        "lxc/debian-12",
        "docker.io/lxc/debian-12",
        "docker.io/lxc/debian-12:latest",
    ] {
        let (code, out, err) = select(&path, &["--image", image]);
        assert_eq!(code, 1, "would be refused: {out}{err}");
        assert!(out.contains("pod:       libcontainer (default)"), "{out}");
        assert!(
            out.contains("goes to backend proxmox-lxc by image rule #1 prefix lxc/"),
            "{out}"
        );
        assert!(
            out.contains("#1 prefix \"lxc/\" → proxmox-lxc (priority 0): matches"),
            "{out}"
        );
        assert!(
            out.contains("CreateContainer fails (FailedPrecondition)"),
            "{out}"
        );
    }
    let (code, out, _) = select(
        &path,
        &["--image", "lxc/debian-12", "--handler", "proxmox-lxc"],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("RunPodSandbox fails (FailedPrecondition): backend proxmox-lxc is not available on this daemon (no [proxmox] endpoints configured)"),
        "{out}"
    );
    let (code, out, _) = select(
        &path,
        &["--image", "lxc/debian-12", "--handler", "libcontainer"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("container: libcontainer (handler libcontainer)"),
        "{out}"
    );
    assert!(out.contains("not consulted"), "{out}");
    let (code, out, _) = select(
        &path,
        &[
            "--image",
            "busybox",
            "--annotation",
            "proxrt.io/runtime=libcontainer",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("libcontainer (annotation proxrt.io/runtime=libcontainer)"),
        "{out}"
    );
    let (code, out, _) = select(&path, &["--image", "busybox", "--handler", "runc"]);
    assert_eq!(code, 1);
    assert!(out.contains("unknown runtime handler \"runc\""), "{out}");
    let (code, out, _) = select(&path, &["--image", "busybox", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["container"]["Ok"]["backend"], "libcontainer", "{v}");
    assert_eq!(v["container"]["Ok"]["reason"], "default", "{v}");
    assert_eq!(
        v["unavailable"]["proxmox-lxc"], "no [proxmox] endpoints configured",
        "{v}"
    );
    let (code, _, err) = select(&path, &["--image", "busybox", "--annotation", "novalue"]);
    assert_eq!(code, 2, "{err}");
    let (bad_dir, bad) =
        config_file("[[image_rules]]\nmatch = \"regex\"\npattern = \"(\"\nbackend = \"crun\"\n");
    let (code, _, err) = select(&bad, &["--image", "busybox"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("image_rules[0]") && err.contains("rule #1"),
        "{err}"
    );
    // Offline: nothing was created.
    assert!(!bad_dir.path().join("root").exists() && !bad_dir.path().join("run").exists());
}
