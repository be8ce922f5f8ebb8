//! CreateContainer: sandbox ready → backend selected → image present → what the backend's
//! form needs checked → name reserved → dirs and intent → bundle (config.json + overlay
//! rootfs, see `bundle.rs`) or guest request → backend create, the record written
//! meanwhile → intent cleared. Every step that
//! makes something pushes its undo; any failure leaves no name, dir, mount, cgroup,
//! process or guest behind. A daemon killed midway leaves the intent without a record,
//! and the next start undoes the rest (`intent.rs`, `abandon` below).

use std::sync::Arc;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

use super::bundle::BundleInputs;
use super::{confine, container_name, Container, ContainerError, ContainerPaths, ContainerRecord};
use crate::backend::{Backend, ContainerForm, CreateParams, GuestRequest, Payload, Unsupervised};
use crate::context::Ctx;
use crate::image::ImageEntry;
use crate::rollback::Rollback;
use crate::sandbox::{SandboxRecord, SandboxState};
use crate::select::SelectError;
use crate::spec;

pub async fn create_container(
    ctx: &Ctx<'_>,
    sandbox_id: &str,
    mut config: ContainerConfig,
    sandbox_config: Option<PodSandboxConfig>,
) -> Result<String, ContainerError> {
    let sandbox = ctx.sandboxes.get(sandbox_id)?;
    let mut sb = sandbox.record();
    if sb.state != SandboxState::Ready {
        return Err(crate::sandbox::SandboxError::NotReady {
            id: sb.id.clone(),
            state: "not ready",
        }
        .into());
    }
    // The holder may have died a moment ago (the watch marks the pod soon): never join
    // namespaces that are gone, or a recycled pid's.
    if !ctx.backends.get(&sb.backend)?.pod_alive(&sb) {
        return Err(crate::sandbox::SandboxError::NotReady {
            id: sb.id.clone(),
            state: "its namespace holder has exited",
        }
        .into());
    }
    // kubelet sends the pod config again; the one the sandbox was made with is authoritative.
    let sandbox_config = sandbox_config
        .filter(|c| c.metadata.is_some())
        .unwrap_or_else(|| sb.config.clone());
    let name = container_name(&config, &sb.config)?;
    let log = confine::log_target(&sb.config.log_directory, &config.log_path)?;
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(ContainerError::Invalid(
            "container config has no image".into(),
        ));
    }
    // Before anything is made and before the image is looked up: an image rule may send
    // this image to a backend that cannot take it (another family, not available here).
    let image_spec = config.image.clone().unwrap_or_default();
    let (backend, decision) =
        match ctx
            .backends
            .for_container(ctx.selector, ctx.images, &sb, &image_spec)
        {
            // The pod's first container decides its family (sandbox/rehome.rs).
            Err(SelectError::MixedPod { target, rule, .. })
                if crate::sandbox::can_move(ctx, &sandbox) =>
            {
                let to = ctx.backends.available(&target, &rule)?;
                crate::sandbox::move_pod(ctx, &sandbox, to, rule).await?;
                sb = sandbox.record();
                ctx.backends
                    .for_container(ctx.selector, ctx.images, &sb, &image_spec)?
            }
            other => other?,
        };
    // The container's process joins its cgroup in a few ms: let the kernel's lock for
    // that get ready meanwhile (backend/host/migration.rs).
    backend.expect_cgroup_move();
    // CreateContainer never pulls: the image must be present. The lease keeps
    // RemoveImage from taking it (and its layers) until the container is in the store.
    let (image, _image_lease) = ctx.images.lease_for_container(&image_name)?;
    let image_config = image.config.config().clone().unwrap_or_default();
    let stop_signal = spec::stop_signal(&image_config)?;
    let form = backend.container_form();
    let bundle_inputs = match form {
        ContainerForm::Bundle => Some(BundleInputs::gather(&mut config, &image)?),
        ContainerForm::Guest => {
            check_guest(ctx, &sb, &config, &image)?;
            None
        }
    };

    let id = crate::store::new_id();
    let mut rb = Rollback::new(format!("create container {id}"));
    ctx.names.reserve(&name, &id)?;
    {
        let (names, name, id) = (ctx.names.clone(), name.clone(), id.clone());
        rb.push("name", move || names.release(&name, &id));
    }

    let paths = ContainerPaths::new(ctx.containers.dir(), ctx.run_dir, &id);
    for dir in [&paths.state_dir, &paths.run_dir] {
        if dir.exists() {
            return Err(ContainerError::io(
                format!("create {}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "id clash"),
            ));
        }
        rb.create_dir_all(dir)
            .map_err(|e| ContainerError::io(format!("create {}", dir.display()), e))?;
    }
    crate::intent::write_container(
        &paths.state_dir,
        &crate::intent::ContainerIntent {
            id: id.clone(),
            backend: backend.name().to_owned(),
            sandbox_id: sb.id.clone(),
            run_dir: paths.run_dir.clone(),
        },
    )?;
    crate::crash_point!("create_container.intent");

    let payload = match bundle_inputs {
        Some(inputs) => inputs.make(
            ctx,
            &mut rb,
            &id,
            &paths,
            &sb,
            &sandbox_config,
            &config,
            &image,
            backend.as_ref(),
        )?,
        None => Payload::Guest(Box::new(GuestRequest {
            template: image.record.template.clone().unwrap_or_default(),
            config: config.clone(),
            pod: sb.clone(),
        })),
    };

    let image_ref = image
        .record
        .repo_digests
        .first()
        .cloned()
        .unwrap_or_else(|| image.record.id.clone());
    let record = ContainerRecord {
        id: id.clone(),
        name,
        sandbox_id: sb.id.clone(),
        config,
        image_name,
        image_id: image.record.id.clone(),
        image_ref,
        created_at: crate::store::now_nanos(),
        log_path: log.as_ref().map(|l| l.path()),
        backend: backend.name().to_owned(),
        backend_reason: decision.reason,
        stop_signal,
        run_dir: paths.run_dir.clone(),
    };
    crate::crash_point!("create_container.bundle");

    // The record is complete before the backend runs: it is written and synced meanwhile,
    // off the create's critical path. Until the intent goes (below), a record beside an
    // intent is a create that did not finish, undone at the next start (intent.rs).
    let write_record = {
        let (path, record) = (paths.record(), record.clone());
        tokio::task::spawn_blocking(move || crate::store::write_json(&path, &record))
    };
    // On failure the backend has already removed what it made.
    let created = backend
        .create(CreateParams {
            id: id.clone(),
            run_dir: paths.run_dir.clone(),
            log,
            tty: record.config.tty,
            stdin: record.config.stdin,
            stdin_once: record.config.stdin_once,
            payload,
        })
        .await;
    // Awaited either way: the rollback removes the state dir, which the write must not
    // be filling at that moment.
    let recorded = write_record.await;
    created?;
    {
        let (backend, id, paths) = (backend.clone(), id.clone(), paths.clone());
        rb.push_async("backend container", move || async move {
            abandon(backend.as_ref(), &id, &paths).await
        });
    }
    recorded.map_err(|e| {
        ContainerError::io("write the record", std::io::Error::other(e.to_string()))
    })??;
    crate::crash_point!("create_container.created");
    crate::intent::clear(&paths.state_dir);
    crate::crash_point!("create_container.record");
    rb.commit();
    if matches!(form, ContainerForm::Bundle) {
        // Beside the answer, not before it: an unmount waits for the kernel's RCU grace
        // period (0.05-0.1 ms here, a few ms at times).
        let (paths, id) = (paths.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = super::bundle::release_host_rootfs(&paths) {
                tracing::warn!(container = %id, error = %e, "release the host's rootfs mount");
            }
        });
    }

    let container = Arc::new(Container::new(
        record,
        None,
        ctx.containers.events().clone(),
    ));
    container.refresh();
    ctx.containers.insert(container);
    tracing::info!(container = %id, sandbox = %sb.id, backend = backend.name(), "container created");
    Ok(id)
}

/// Undoes a container the backend made and the daemon did not finish creating
/// (CreateContainer's rollback after `Backend::create`, and the start after a crash in
/// CreateContainer): kills it through its monitor, or its cgroup when no monitor
/// answers, has the backend remove what it kept, and removes its run and state dirs,
/// mounts first. Everything missing is fine; failures are logged.
pub(crate) async fn abandon(backend: &dyn Backend, id: &str, paths: &ContainerPaths) {
    let run_dir = &paths.run_dir;
    let bundle = paths.bundle();
    let killed = if backend.is_alive(run_dir) {
        backend
            .stop(run_dir, libc::SIGKILL, std::time::Duration::ZERO)
            .await
    } else if bundle.join("config.json").exists() {
        backend
            .kill_unsupervised(Unsupervised {
                id,
                run_dir,
                bundle: &bundle,
                reason: "its creation was interrupted",
            })
            .await
    } else {
        Ok(())
    };
    if let Err(e) = killed {
        tracing::warn!(container = %id, error = %e, "undo container: kill");
    }
    if let Err(e) = backend.remove(run_dir).await {
        tracing::warn!(container = %id, error = %e, "undo container: backend remove");
    }
    for dir in [run_dir, &paths.state_dir] {
        if let Err(e) = crate::mounts::remove_tree(dir) {
            tracing::warn!(container = %id, error = %e, "undo container: remove {}", dir.display());
        }
    }
}

/// A guest pod runs one container, which is the guest, made from a template image.
fn check_guest(
    ctx: &Ctx<'_>,
    sb: &SandboxRecord,
    config: &ContainerConfig,
    image: &ImageEntry,
) -> Result<(), ContainerError> {
    if let Some(other) = ctx.containers.in_sandbox(&sb.id).first() {
        return Err(ContainerError::WrongState {
            id: other.id.clone(),
            state: "present",
            what: format!(
                "pod {} runs on {} as one guest, which is its container {}: a pod of this \
                 backend takes one container",
                sb.id, sb.backend, other.id
            ),
        });
    }
    if image.record.template.is_none() {
        return Err(ContainerError::WrongImage(format!(
            "image {} ({}) is an OCI image: {} runs Proxmox templates; map the image name to \
             a template in [[proxmox.templates]] and pull it",
            config
                .image
                .as_ref()
                .map(|i| i.image.as_str())
                .unwrap_or_default(),
            image.record.id,
            sb.backend
        )));
    }
    Ok(())
}
