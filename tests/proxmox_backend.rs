//! The proxmox-lxc backend through CRI, against a real `pve-sim` process (HTTPS, token
//! auth, UPID tasks that take time and can fail): pods become guests and every failure
//! leaves no guest behind. ExecSync goes through a stand-in `pct` (the node's tool does
//! not exist here) that checks its arguments and runs the command on the host.

mod common;
mod pve_sim;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::pods::{Pod, PodEnv};
use k8s_cri::v1::{
    ContainerConfig, ContainerState, ImageFilter, ImageSpec, LinuxContainerResources,
    ListImagesRequest, RemoveImageRequest, StatusRequest,
};
use pve_sim::{PveSim, SimOptions};
use serde_json::{json, Value};
use tonic::Code;

const DEBIAN: &str = "lxc/debian-12";
const DEBIAN_VOLID: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
const MISSING_VOLID: &str = "local:vztmpl/nowhere-1.0_amd64.tar.zst";

/// A stand-in for `pct exec <vmid> -- cmd…`: refuses any other shape, says which VMID it
/// was asked for on stderr, runs the command.
const PCT: &str = r#"#!/bin/sh
[ "$1" = exec ] && [ "$3" = "--" ] || { echo "pct stand-in: bad arguments: $*" >&2; exit 2; }
echo "vmid=$2" >&2
shift 3
exec "$@"
"#;

/// Fields drop in order: the daemon's teardown (which removes every pod, so every
/// guest) needs the simulator still up.
struct Env {
    pods: PodEnv,
    sim: PveSim,
}

/// The daemon's `[proxmox]` section for `sim`, with `extra` TOML lines in it.
fn proxmox_toml(sim: &PveSim, pct: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[proxmox]
endpoints = ["{endpoint}"]
node = "pve"
token_id = "{token_id}"
token_secret_file = "{secret}"
{ca}
storage = "local-lvm"
bridge = "vmbr0"
{timeout}
pct_path = "{pct}"
{extra}

[[proxmox.templates]]
match = "prefix"
pattern = "{DEBIAN}"
template = "{DEBIAN_VOLID}"

[[proxmox.templates]]
match = "prefix"
pattern = "lxc/missing"
template = "{MISSING_VOLID}"
"#,
        endpoint = sim.endpoint(),
        token_id = sim.token_id,
        secret = sim.dir.path().join("token-secret").display(),
        ca = match extra.contains("ca_file") {
            true => String::new(),
            false => format!("ca_file = \"{}\"", sim.ca_file.display()),
        },
        pct = pct.display(),
        timeout = match extra.contains("task_timeout_secs") {
            true => "",
            false => "task_timeout_secs = 30",
        },
    )
}

impl Env {
    async fn start() -> Env {
        Env::with(SimOptions::default(), "", "").await
    }

    async fn with(opts: SimOptions, proxmox_extra: &str, daemon_toml: &str) -> Env {
        let sim = PveSim::with(opts);
        let pct = sim.dir.path().join("pct");
        std::fs::write(&pct, PCT).unwrap();
        std::fs::set_permissions(&pct, std::fs::Permissions::from_mode(0o755)).unwrap();
        let toml = format!("{daemon_toml}\n{}", proxmox_toml(&sim, &pct, proxmox_extra));
        let pods = PodEnv::start_with(&toml).await;
        Env { pods, sim }
    }

    /// A kubelet-shaped pod the `proxrt.io/runtime` annotation sends to proxmox-lxc.
    async fn run_pod(&mut self, name: &str) -> Pod {
        let mut config = self.pods.pod_config(name);
        config
            .annotations
            .insert("proxrt.io/runtime".into(), "proxmox-lxc".into());
        self.pods.run_pod(config).await
    }

    fn guest_config(&self, pod: &Pod, image: &str) -> ContainerConfig {
        let mut c = self.pods.container_config(pod, "main", &[]);
        c.image = Some(ImageSpec {
            image: image.into(),
            user_specified_image: image.into(),
            ..Default::default()
        });
        c.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 512 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        });
        c
    }

    async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        common::pull(&mut self.pods.cri, image).await
    }

    /// Every guest the simulator holds, by VMID.
    async fn guests(&self) -> Vec<Value> {
        self.sim.guests().await
    }

    async fn assert_no_guest(&self, context: &str) {
        let guests = self.guests().await;
        assert!(guests.is_empty(), "{context}: guests left: {guests:?}");
    }

    async fn guest_vmid(&self, pod: &Pod) -> u64 {
        let uid = pod.config.metadata.as_ref().unwrap().uid.to_lowercase();
        let guests = self.guests().await;
        let g = guests
            .iter()
            .find(|g| {
                g["config"]["tags"]
                    .as_str()
                    .is_some_and(|t| t.split(';').any(|t| t == uid))
            })
            .unwrap_or_else(|| panic!("no guest tagged {uid}: {guests:?}"));
        g["vmid"].as_u64().unwrap()
    }

    async fn info(&mut self) -> Value {
        let resp = self
            .pods
            .cri
            .runtime
            .status(StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        serde_json::from_str(&resp.info["backends"]).unwrap()
    }
}

#[tokio::test]
async fn a_pod_lives_its_whole_life_as_one_guest() {
    let mut env = Env::start().await;

    // PullImage of a mapped image: the template is checked and recorded, nothing downloaded.
    let id = env.pull(DEBIAN).await.unwrap();
    let image = common::image_status(&mut env.pods.cri, DEBIAN)
        .await
        .expect("template image recorded");
    assert_eq!(image.id, id);
    assert!(image.size > 0, "size from the storage listing: {image:?}");
    assert!(image
        .repo_tags
        .iter()
        .any(|t| t.ends_with("lxc/debian-12:latest")));
    let missing = env.pull("lxc/missing").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(missing.message().contains(MISSING_VOLID), "{missing:?}");

    let pod = env.run_pod("db").await;
    env.assert_no_guest("RunPodSandbox makes no guest yet")
        .await;
    let config = env.guest_config(&pod, DEBIAN);
    let cid = env.pods.create(&pod, config.clone()).await.unwrap();
    let vmid = env.guest_vmid(&pod).await;
    let guest = env
        .guests()
        .await
        .into_iter()
        .find(|g| g["vmid"] == vmid)
        .unwrap();
    let conf = &guest["config"];
    // PVE keeps no `ostemplate`; the OS type it read from the template shows it was used.
    assert_eq!(conf["ostype"], "debian", "{conf}");
    assert_eq!(conf["hostname"], "db");
    assert_eq!(conf["memory"], json!(512));
    assert_eq!(conf["swap"], json!(0));
    assert_eq!(conf["cores"], json!(1));
    assert_eq!(conf["cpulimit"], "0.5");
    assert_eq!(conf["unprivileged"], json!(1));
    assert_eq!(conf["features"], "nesting=1");
    assert!(
        conf["rootfs"].as_str().unwrap().starts_with("local-lvm:"),
        "{conf}"
    );
    assert!(
        conf["net0"].as_str().unwrap().contains("bridge=vmbr0"),
        "{conf}"
    );
    assert!(conf["net0"].as_str().unwrap().contains("ip=dhcp"), "{conf}");
    assert!(
        conf["tags"]
            .as_str()
            .unwrap()
            .split(';')
            .any(|t| t == "proxrt"),
        "{conf}"
    );
    assert_eq!(guest["status"], "stopped");
    assert_eq!(
        env.pods.status(&cid).await.state,
        ContainerState::ContainerCreated as i32
    );

    // One container per guest pod.
    let mut second = config.clone();
    second.metadata.as_mut().unwrap().name = "sidecar".into();
    let e = env.pods.create(&pod, second).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("one container"), "{e:?}");
    // An OCI image cannot run in a guest pod, a template cannot run in a host pod.
    let e = env
        .pods
        .create(&pod, env.pods.container_config(&pod, "oci", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    env.pods.start_container(&cid).await.unwrap();
    let status = env.pods.status(&cid).await;
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    assert_eq!(env.guests().await[0]["status"], "running");
    // Stats: a guest is listed (its figures live on the node, not in this host's cgroups).
    let stats = env
        .pods
        .cri
        .runtime
        .list_container_stats(k8s_cri::v1::ListContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(
        stats
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == cid)),
        "{stats:?}"
    );
    let pod_status = env.pods.pod_status(&pod.id).await.unwrap();
    let ip = pod_status.network.unwrap().ip;
    assert!(
        ip.starts_with("10."),
        "pod IP from the guest's interfaces: {ip:?}"
    );

    let out = env
        .pods
        .try_exec(&cid, &["sh", "-c", "echo hello; echo oops >&2; exit 3"], 10)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("vmid={vmid}")) && stderr.contains("oops"),
        "{stderr}"
    );
    let slow = env.pods.try_exec(&cid, &["sleep", "5"], 1).await.unwrap();
    assert_eq!(slow.exit_code, 137, "timed out exec: {slow:?}");

    // UpdateContainerResources becomes guest config.
    env.pods
        .cri
        .runtime
        .update_container_resources(k8s_cri::v1::UpdateContainerResourcesRequest {
            container_id: cid.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 30,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(env.guests().await[0]["config"]["memory"], json!(1024));

    env.pods.stop_container(&cid, 10).await.unwrap();
    let exited = env.pods.status(&cid).await;
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!((exited.exit_code, exited.reason.as_str()), (0, "Completed"));
    assert_eq!(env.guests().await[0]["status"], "stopped");

    let log = std::fs::read_to_string(pod.log_path(&config)).unwrap();
    for line in [
        format!("created guest VMID {vmid} from template {DEBIAN_VOLID}"),
        format!("started guest VMID {vmid}"),
        format!("guest VMID {vmid} shut down"),
    ] {
        assert!(log.contains(&line), "log lacks {line:?}:\n{log}");
    }
    assert!(
        log.lines().all(|l| l.contains(" stdout F proxrt: ")),
        "CRI log format:\n{log}"
    );

    env.pods.remove_container(&cid).await.unwrap();
    env.assert_no_guest("RemoveContainer destroys the guest")
        .await;
    assert!(env.pods.try_status(&cid).await.is_err());
    env.pods.stop_pod(&pod.id).await.unwrap();
    env.pods.remove_pod(&pod.id).await.unwrap();

    // RemoveImage forgets the record; the template stays on its storage.
    env.pods
        .cri
        .images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: DEBIAN.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let left = env
        .pods
        .cri
        .images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(ImageSpec {
                    image: DEBIAN.into(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(left.is_empty(), "{left:?}");
    env.pull(DEBIAN).await.expect("the template is still there");
}

#[tokio::test]
async fn a_guest_that_stops_by_itself_is_exited_and_removing_the_pod_destroys_it() {
    let mut env = Env::start().await;
    env.pull(DEBIAN).await.unwrap();
    let pod = env.run_pod("web").await;
    let cid = env
        .pods
        .create_start(&pod, env.guest_config(&pod, DEBIAN))
        .await;
    let vmid = env.guest_vmid(&pod).await;
    let mut events = env
        .pods
        .cri
        .runtime
        .clone()
        .get_container_events(k8s_cri::v1::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    env.sim.power_off(vmid).await;
    let st = env.pods.wait_exit(&cid).await;
    assert!(st.message.contains("stopped"), "{st:?}");
    // The watcher's finding is an event too, for kubelet's Evented PLEG.
    let e = tokio::time::timeout(Duration::from_secs(60), events.message())
        .await
        .expect("an event within a minute")
        .unwrap()
        .expect("the stream stays open");
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (
            cid.as_str(),
            k8s_cri::v1::ContainerEventType::ContainerStoppedEvent as i32
        )
    );
    let exited = e.containers_statuses.iter().find(|c| c.id == cid).unwrap();
    assert!(exited.message.contains("stopped"), "{exited:?}");

    // RemovePodSandbox alone takes the container and its guest with it.
    env.pods.remove_pod(&pod.id).await.unwrap();
    env.assert_no_guest("RemovePodSandbox").await;
}

#[tokio::test]
async fn every_failure_on_the_way_leaves_no_guest_and_no_container() {
    let mut env = Env::start().await;
    env.pull(DEBIAN).await.unwrap();
    let pod = env.run_pod("flaky").await;
    let config = env.guest_config(&pod, DEBIAN);

    // The create task fails: the guest PVE made is destroyed, the task log is reported.
    env.sim
        .set_faults(json!({"fail_next_tasks": {"vzcreate": 1}}))
        .await;
    let e = env.pods.create(&pod, config.clone()).await.unwrap_err();
    assert!(
        e.message().contains("vzcreate") || e.message().contains("task"),
        "{e:?}"
    );
    env.assert_no_guest("failed create task").await;

    // The create's answer is lost after PVE did it: the guest is found and destroyed.
    env.sim
        .set_faults(json!({"rules": [{"method": "POST", "path": "/nodes/pve/lxc", "action": "reset_after", "count": 1}]}))
        .await;
    let e = env.pods.create(&pod, config.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    env.assert_no_guest("create with a lost answer").await;

    // nextid is down.
    env.sim
        .set_faults(json!({"rules": [{"method": "GET", "path": "/cluster/nextid", "action": "status", "status": 500, "message": "cluster not ready - no quorum?", "count": 0}]}))
        .await;
    let e = env.pods.create(&pod, config.clone()).await.unwrap_err();
    assert!(e.message().contains("quorum"), "{e:?}");
    env.assert_no_guest("nextid refused").await;
    env.sim.clear_faults().await;

    // CRI mounts cannot reach a guest: refused before any call to PVE.
    let mut with_mount = config.clone();
    with_mount.mounts.push(k8s_cri::v1::Mount {
        host_path: "/tmp".into(),
        container_path: "/data".into(),
        ..Default::default()
    });
    let e = env.pods.create(&pod, with_mount).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    env.assert_no_guest("refused mount").await;
    let listed = env.pods.list_containers(Default::default()).await;
    assert!(
        listed.is_empty(),
        "no container after failed creates: {listed:?}"
    );

    // After all that the name is free and the next create works; a failing start
    // leaves the container created and its guest removable.
    let cid = env.pods.create(&pod, config.clone()).await.unwrap();
    env.sim
        .set_faults(json!({"fail_next_tasks": {"vzstart": 1}}))
        .await;
    let e = env.pods.start_container(&cid).await.unwrap_err();
    assert!(e.message().contains("startup for container"), "{e:?}");
    assert_eq!(
        env.pods.status(&cid).await.state,
        ContainerState::ContainerCreated as i32
    );
    let log = std::fs::read_to_string(pod.log_path(&config)).unwrap();
    assert!(
        log.contains("create task of VMID") && log.contains("failed"),
        "{log}"
    );
    env.pods.remove_container(&cid).await.unwrap();
    env.assert_no_guest("removed after a failed start").await;
}

#[tokio::test]
async fn a_default_pod_whose_first_image_goes_to_proxmox_becomes_a_guest_pod() {
    let mut env = Env::start().await;
    env.pull(DEBIAN).await.unwrap();
    // No handler, no annotation: the pod gets the default backend (namespaces, holder).
    let pod = env.pods.run_pod(env.pods.pod_config("ruled")).await;
    let before = env.pods.pod_status(&pod.id).await.unwrap();
    assert!(before.network.unwrap().ip.is_empty());
    // Its first container's image matches the shipped `lxc/` rule: the pod moves.
    let cid = env
        .pods
        .create_start(&pod, env.guest_config(&pod, DEBIAN))
        .await;
    env.guest_vmid(&pod).await;
    let ip = env
        .pods
        .pod_status(&pod.id)
        .await
        .unwrap()
        .network
        .unwrap()
        .ip;
    assert!(ip.starts_with("10."), "{ip:?}");
    let info = env
        .pods
        .cri
        .runtime
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: Value = serde_json::from_str(&info["info"]).unwrap();
    assert_eq!(info["backend"], "proxmox-lxc", "{info}");
    assert!(
        info["backendReason"].as_str().unwrap().contains("lxc/"),
        "{info}"
    );
    assert!(
        info["pid"].is_null(),
        "the host pod's holder is gone: {info}"
    );
    env.pods.remove_container(&cid).await.unwrap();

    // A pod that already runs a host container stays a host pod: the image is refused.
    let host = env.pods.run_pod(env.pods.pod_config("mixed")).await;
    let c = env.pods.container_config(&host, "app", &["sleep", "60"]);
    env.pods.create_start(&host, c).await;
    let e = env
        .pods
        .create(&host, env.guest_config(&host, DEBIAN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("proxmox-lxc"), "{e:?}");
    env.assert_no_guest("refused in a host pod").await;
}

#[tokio::test]
async fn a_create_task_that_outlives_its_timeout_and_a_failed_destroy_leave_no_guest() {
    let mut env = Env::with(SimOptions::default(), "task_timeout_secs = 1", "").await;
    env.pull(DEBIAN).await.unwrap();
    let pod = env.run_pod("slow").await;
    let config = env.guest_config(&pod, DEBIAN);
    // The create task takes 1.5 s, the daemon waits 1 s: DeadlineExceeded, and the guest
    // (locked by the task until it ends) is destroyed once the lock is gone.
    env.sim
        .set_faults(json!({"task_ms": {"vzcreate": 1500}}))
        .await;
    let e = env.pods.create(&pod, config.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    env.assert_no_guest("create task timed out").await;
    env.sim.clear_faults().await;

    // A destroy task that fails: RemoveContainer fails and keeps the container, so the
    // next RemoveContainer (kubelet retries) destroys the guest.
    let cid = env.pods.create(&pod, config).await.unwrap();
    env.sim
        .set_faults(json!({"fail_next_tasks": {"vzdestroy": 1}}))
        .await;
    let e = env.pods.remove_container(&cid).await.unwrap_err();
    assert!(!e.message().is_empty(), "{e:?}");
    assert_eq!(env.guests().await.len(), 1);
    assert!(env.pods.try_status(&cid).await.is_ok(), "kept for a retry");
    env.pods.remove_container(&cid).await.unwrap();
    env.assert_no_guest("destroy retried").await;
}

#[tokio::test]
async fn twenty_pods_created_at_once_get_twenty_vmids() {
    let mut env = Env::start().await;
    env.pull(DEBIAN).await.unwrap();
    let mut pods = Vec::new();
    for i in 0..20 {
        pods.push(env.run_pod(&format!("p{i}")).await);
    }
    let creates = pods.iter().map(|pod| {
        let mut cri = env.pods.cri.clone();
        let config = env.guest_config(pod, DEBIAN);
        let pod = pod.clone();
        async move {
            cri.runtime
                .create_container(k8s_cri::v1::CreateContainerRequest {
                    pod_sandbox_id: pod.id.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.config.clone()),
                })
                .await
                .map(|r| r.into_inner().container_id)
        }
    });
    let results = futures_util::future::join_all(creates).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let vmids: BTreeSet<u64> = env
        .guests()
        .await
        .iter()
        .map(|g| g["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(vmids.len(), 20, "{vmids:?}");
    for pod in &pods {
        env.pods.remove_pod(&pod.id).await.unwrap();
    }
    env.assert_no_guest("every pod removed").await;
}

#[tokio::test]
async fn a_restarted_daemon_adopts_its_guests_and_reports_orphans_it_never_destroys() {
    let mut env = Env::start().await;
    env.pull(DEBIAN).await.unwrap();
    let pod = env.run_pod("keep").await;
    let cid = env
        .pods
        .create_start(&pod, env.guest_config(&pod, DEBIAN))
        .await;
    let vmid = env.guest_vmid(&pod).await;
    // A guest tagged proxrt that no pod owns (made by a daemon whose state was lost).
    let client = env.sim.client();
    let orphan = proxrt::proxmox::CreateLxc {
        ostemplate: DEBIAN_VOLID.into(),
        rootfs: Some(proxrt::proxmox::RootFs {
            storage: "local-lvm".into(),
            size_gb: 1,
        }),
        tags: vec!["proxrt".into(), "lost-pod".into()],
        ..Default::default()
    };
    let (orphan_vmid, upid) = client.create_with_next_vmid(&orphan, 5).await.unwrap();
    client
        .wait_task(&upid, Duration::from_secs(10))
        .await
        .unwrap();

    env.pods.kill9();
    env.pods.restart().await;
    assert_eq!(
        env.pods.status(&cid).await.state,
        ContainerState::ContainerRunning as i32
    );
    let mut orphans = Value::Null;
    for _ in 0..100 {
        orphans = env.info().await["proxmox-lxc"]["orphans"].clone();
        if !orphans.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(orphans, json!([orphan_vmid]), "{}", env.pods.daemon().log());
    assert!(env.pods.daemon().log().contains("no pod owns"));

    // Still driven after the restart: a stop is seen, the guest is destroyed on remove.
    env.pods.stop_container(&cid, 0).await.unwrap();
    assert_eq!(env.pods.status(&cid).await.exit_code, 137);
    env.pods.remove_pod(&pod.id).await.unwrap();
    let left: Vec<u64> = env
        .guests()
        .await
        .iter()
        .map(|g| g["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        left,
        vec![u64::from(orphan_vmid)],
        "only the orphan stays (vmid {vmid} destroyed)"
    );
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_and_the_token_is_never_logged() {
    // A pinned fingerprint that is not the simulator's: nothing is sent to it.
    let wrong = ["AB"; 32].join(":");
    let mut env = Env::with(
        SimOptions::default(),
        &format!("fingerprint = \"{wrong}\"\nca_file = \"\""),
        "[daemon]\nlog_level = \"trace\"",
    )
    .await;
    let e = env.pull(DEBIAN).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().to_lowercase().contains("fingerprint"), "{e:?}");
    let mut config = env.pods.pod_config("nope");
    config
        .annotations
        .insert("proxrt.io/runtime".into(), "proxmox-lxc".into());
    let e = env.pods.try_run_pod(config).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let log = env.pods.daemon().log();
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "trace logging is on"
    );
    assert!(
        !log.contains(&env.sim.secret),
        "the token secret is in the daemon's log"
    );
}

#[tokio::test]
async fn the_token_stays_out_of_a_full_lifecycle_at_trace_level() {
    let mut env = Env::with(SimOptions::default(), "", "[daemon]\nlog_level = \"trace\"").await;
    env.pull(DEBIAN).await.unwrap();
    let pod = env.run_pod("quiet").await;
    let cid = env
        .pods
        .create_start(&pod, env.guest_config(&pod, DEBIAN))
        .await;
    env.pods.stop_container(&cid, 5).await.unwrap();
    env.pods.remove_pod(&pod.id).await.unwrap();
    let log = env.pods.daemon().log();
    assert!(log.contains("guest created"), "{log}");
    assert!(
        !log.contains(&env.sim.secret),
        "the token secret is in the daemon's log"
    );
    env.assert_no_guest("lifecycle at trace level").await;
}

/// Median and p99 of `samples` in ms.
fn summary(samples: &mut [f64]) -> String {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:7.2} ms  p99 {:7.2} ms  (n={})",
        at(0.5),
        at(0.99),
        samples.len()
    )
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let t = std::time::Instant::now();
    let out = f.await;
    (out, t.elapsed().as_secs_f64() * 1000.0)
}

/// proxrt's own cost per operation on top of PVE: the same guest operations through CRI
/// and straight through the API client, interleaved, with tasks that take no time (so
/// what remains is round trips plus proxrt's work); then pods from nothing with task
/// times like a real node's. Prints medians and p99; asserts nothing about speed.
/// `cargo nextest run --test proxmox_backend --run-ignored only --no-capture`
#[tokio::test]
#[ignore = "benchmark: run with --run-ignored only --no-capture"]
async fn overhead_on_top_of_the_api() {
    const N: usize = 40;
    let mut env = Env::start().await;
    env.sim.set_faults(json!({"task_ms": {"default": 0}})).await;
    env.pull(DEBIAN).await.unwrap();
    let client = env.sim.client();
    let wait = Duration::from_secs(10);
    let names = ["create", "start", "stop", "remove"];
    let mut cri: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut api: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let pod = env.run_pod("bench").await;
    let config = env.guest_config(&pod, DEBIAN);
    let params = proxrt::backend::proxmox::create_params(
        "bench",
        DEBIAN_VOLID,
        &config,
        &pod.config,
        &proxrt::config::Config::default().proxmox,
    )
    .unwrap();
    for _ in 0..N {
        let (vmid, ms) = timed(async {
            let (vmid, upid) = client.create_with_next_vmid(&params, 5).await.unwrap();
            client.wait_task(&upid, wait).await.unwrap();
            vmid
        })
        .await;
        api[0].push(ms);
        let (_, ms) = timed(async {
            let upid = client.start(vmid).await.unwrap();
            client.wait_task(&upid, wait).await.unwrap();
        })
        .await;
        api[1].push(ms);
        let (_, ms) = timed(async {
            let upid = client.stop(vmid).await.unwrap();
            client.wait_task(&upid, wait).await.unwrap();
        })
        .await;
        api[2].push(ms);
        let (_, ms) = timed(async {
            let upid = client.destroy(vmid, true, true).await.unwrap();
            client.wait_task(&upid, wait).await.unwrap();
        })
        .await;
        api[3].push(ms);

        let (cid, ms) = timed(env.pods.create(&pod, config.clone())).await;
        let cid = cid.unwrap();
        cri[0].push(ms);
        let (r, ms) = timed(env.pods.start_container(&cid)).await;
        r.unwrap();
        cri[1].push(ms);
        let (r, ms) = timed(env.pods.stop_container(&cid, 0)).await;
        r.unwrap();
        cri[2].push(ms);
        let (r, ms) = timed(env.pods.remove_container(&cid)).await;
        r.unwrap();
        cri[3].push(ms);
    }
    println!("\nguest operations, tasks of 0 ms, interleaved ({N} rounds):");
    for (i, name) in names.iter().enumerate() {
        let mut overhead: Vec<f64> = cri[i].iter().zip(&api[i]).map(|(c, a)| c - a).collect();
        println!("  {name:7} CRI {}", summary(&mut cri[i]));
        println!("  {name:7} API {}", summary(&mut api[i]));
        println!("  {name:7} CRI − API per round: {}", summary(&mut overhead));
    }

    // Task times of a real node creating from a local template on LVM-thin.
    env.sim
        .set_faults(json!({"task_ms": {"vzcreate": 4000, "vzstart": 1200, "vzstop": 600, "vzdestroy": 800, "default": 500}}))
        .await;
    let mut e2e = Vec::new();
    for i in 0..5 {
        let (_, ms) = timed(async {
            let pod = env.run_pod(&format!("e2e{i}")).await;
            let c = env.guest_config(&pod, DEBIAN);
            env.pods.create_start(&pod, c).await;
        })
        .await;
        e2e.push(ms);
    }
    println!(
        "pod from nothing (runp + create + start), vzcreate 4 s + vzstart 1.2 s: {}",
        summary(&mut e2e)
    );
}
