//! The door the criterion benches (`benches/hot_path.rs`) use into the daemon's hot path:
//! CRI→OCI translation, the bundle (spec + overlay mount of an unpacked image), the state
//! store, ListContainers over 1000 containers. Each case runs the daemon's own functions
//! on realistic inputs; nothing here is an API for anyone else (hidden, may change).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerStateValue, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    SecurityProfile,
};

use crate::container::{rootfs, Container, ContainerRecord};
use crate::events::Events;
use crate::monitor::ContainerStatusFile;
use crate::spec::fixture::Fixture;

/// A container as kubelet sends it for an ordinary Deployment: env, a volume, limits,
/// RuntimeDefault seccomp, dropped and added capabilities, in a pod with its own
/// namespaces, on an image with a user database.
pub struct SpecCase {
    fixture: Fixture,
}

impl SpecCase {
    pub fn typical() -> SpecCase {
        let mut f = Fixture::new();
        f.config = typical_config("web");
        f.image.set_env(Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "LANG=C.UTF-8".into(),
        ]));
        f.image.set_cmd(Some(vec![
            "nginx".into(),
            "-g".into(),
            "daemon off;".into(),
        ]));
        f.image.set_working_dir(Some("/srv".into()));
        SpecCase { fixture: f }
    }

    /// The OCI spec, as CreateContainer makes it (no I/O).
    pub fn spec(&self) -> std::io::Result<oci_spec::runtime::Spec> {
        crate::spec::container_spec(&self.fixture.input()).map_err(std::io::Error::other)
    }

    /// The spec serialized as config.json is written.
    pub fn config_json(&self) -> std::io::Result<Vec<u8>> {
        serde_json::to_vec(&self.spec()?).map_err(std::io::Error::other)
    }
}

fn typical_config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        args: vec!["--port".into(), "8080".into()],
        envs: (0..12)
            .map(|i| KeyValue {
                key: format!("SERVICE_{i}_HOST"),
                value: format!("10.96.0.{i}"),
            })
            .collect(),
        mounts: vec![Mount {
            container_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            host_path: "/var/lib/kubelet/pods/uid/volumes/token".into(),
            readonly: true,
            ..Default::default()
        }],
        labels: [
            ("io.kubernetes.container.name".to_owned(), name.to_owned()),
            ("io.kubernetes.pod.name".to_owned(), "web-7d4b9c".to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                "default".to_owned(),
            ),
        ]
        .into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 256 << 20,
                oom_score_adj: 900,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: vec!["NET_BIND_SERVICE".into()],
                    drop_capabilities: vec!["NET_RAW".into()],
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: 0, // RuntimeDefault
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A bundle as CreateContainer makes it for a cached image: the writable layer's dirs, the
/// overlay of the image's unpacked layers, config.json. Runs as root (real mounts) in
/// its own temp dir.
pub struct BundleCase {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
    spec: SpecCase,
}

impl BundleCase {
    /// `layers` unpacked layers of a few files each under `dir` (made, must not exist).
    pub fn new(dir: &Path, layers: usize) -> std::io::Result<BundleCase> {
        let mut lowers = Vec::new();
        for i in 0..layers {
            let layer = dir.join(format!("layers/{i}"));
            std::fs::create_dir_all(layer.join("bin"))?;
            std::fs::create_dir_all(layer.join("etc"))?;
            std::fs::write(layer.join(format!("bin/tool{i}")), b"#!/bin/sh\n")?;
            std::fs::write(layer.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n")?;
            lowers.push(layer);
        }
        Ok(BundleCase {
            dir: dir.to_owned(),
            lowers,
            spec: SpecCase::typical(),
        })
    }

    /// Makes bundle `n` (dirs, overlay mount, spec, config.json); returns its dir.
    pub fn make(&self, n: usize) -> std::io::Result<PathBuf> {
        let c = self.dir.join(format!("c/{n}"));
        let (bundle, upper, work, root) = (
            c.join("bundle"),
            c.join("upper"),
            c.join("work"),
            c.join("rootfs"),
        );
        for d in [&bundle, &upper, &work, &root] {
            std::fs::create_dir_all(d)?;
        }
        let lower: Vec<PathBuf> = self.lowers.iter().rev().cloned().collect();
        rootfs::mount_overlay(&lower, &upper, &work, &root)?;
        crate::store::replace_file(&bundle.join("config.json"), &self.spec.config_json()?)
            .map_err(std::io::Error::other)?;
        Ok(c)
    }

    /// Undoes `make` (not measured).
    pub fn remove(&self, c: &Path) -> std::io::Result<()> {
        rootfs::unmount(&c.join("rootfs"))?;
        std::fs::remove_dir_all(c)
    }
}

/// A container record as the store persists it.
pub fn container_record(n: usize) -> ContainerRecord {
    let id = format!("{n:064x}");
    ContainerRecord {
        name: format!("web-{n}_web-7d4b9c_default_uid_0"),
        sandbox_id: format!("{:064x}", n / 10),
        config: typical_config(&format!("web-{n}")),
        image_name: "registry.local/web:1.2".into(),
        image_id: format!("sha256:{:064x}", 7),
        image_ref: format!("registry.local/web@sha256:{:064x}", 8),
        created_at: 1_700_000_000_000_000_000 + n as i64,
        log_path: Some(format!("/var/log/pods/default_web_uid/web-{n}/0.log").into()),
        backend: "libcontainer".into(),
        backend_reason: "default".into(),
        stop_signal: 15,
        run_dir: format!("/run/proxrt/c/{}", &id[..16]).into(),
        id,
    }
}

/// Writes a record the way the stores do (atomic replace) and reads it back.
pub fn store_round_trip(path: &Path, record: &ContainerRecord) -> std::io::Result<()> {
    crate::store::write_json(path, record).map_err(std::io::Error::other)?;
    let back: Option<ContainerRecord> =
        crate::store::read_json(path).map_err(std::io::Error::other)?;
    back.map(|_| ())
        .ok_or_else(|| std::io::Error::other("record vanished"))
}

/// `n` running containers in memory, as the ContainerStore holds them.
pub struct ContainerList {
    containers: Vec<Arc<Container>>,
}

impl ContainerList {
    pub fn running(n: usize) -> ContainerList {
        let events = Events::default();
        let containers = (0..n)
            .map(|i| {
                let mut status = ContainerStatusFile::created(1000 + i as i32, 2000 + i as i32, 1);
                status.started_at = Some(2);
                Arc::new(Container::new(
                    container_record(i),
                    Some(status),
                    events.clone(),
                ))
            })
            .collect();
        ContainerList { containers }
    }

    /// ListContainers' answer with no filter; the number of containers answered.
    pub fn list_all(&self) -> usize {
        crate::cri::list_containers::answer(self.containers.clone(), &ContainerFilter::default())
            .len()
    }

    /// ListContainers' answer with no filter as the daemon sends it (the cached entries,
    /// encoded); its length in bytes.
    pub fn list_all_encoded(&self) -> usize {
        crate::cri::list_containers::encode_answer(
            self.containers.clone(),
            &ContainerFilter::default(),
        )
        .len()
    }

    /// ListContainers' answer for running containers with one label (kubelet's relist).
    pub fn list_running_labelled(&self) -> usize {
        let f = ContainerFilter {
            state: Some(ContainerStateValue { state: 1 }),
            label_selector: [(
                "io.kubernetes.pod.namespace".to_owned(),
                "default".to_owned(),
            )]
            .into(),
            ..Default::default()
        };
        crate::cri::list_containers::answer(self.containers.clone(), &f).len()
    }
}
