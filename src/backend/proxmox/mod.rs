//! The `proxmox-lxc` backend: a pod is one Proxmox VE LXC guest, made through the PVE API
//! (docs/proxmox.md).
//!
//! - RunPodSandbox records the pod and checks the API answers with the token; the guest
//!   comes with the pod's one container, because only then is its template known.
//! - CreateContainer: VMID from nextid (retried when taken), the guest created from the
//!   template the image was pulled as, the create task polled to its end. Any failure
//!   destroys what was made; the VMID is recorded ([`guests`]) as soon as PVE accepted it.
//! - Start/Stop/Remove are the guest's start, shutdown (then stop) and destroy tasks; the
//!   container's status lives in its run dir's status.json like a host container's, kept
//!   true by `wait`, which polls `status/current` (a guest that stops by itself is EXITED).
//! - ExecSync runs `pct exec` ([`exec`]); the CRI log file gets one line per lifecycle step.
//!
//! Guests carry the tag `proxrt` and their pod's uid: a restarted daemon re-adopts the
//! guests it has records of and reports the others (orphans) without touching them.

mod exec;
mod guests;
mod translate;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{LinuxResources, Spec};

pub use translate::{create_params, is_proxrt_guest, PROXRT_TAG};

use self::guests::{GuestRecord, Guests};
use super::{
    Backend, BackendError, ContainerForm, CreateParams, Payload, PodParams, PodRuntime,
    PreparedSpec, TemplateImage,
};
use crate::config::{Config, ProxmoxConfig};
use crate::error::Kind;
use crate::logs::LogTarget;
use crate::monitor::{
    AttachInput, AttachOutput, AttachStreams, ContainerStatusFile, ExecSyncResult, ExitStatus,
};
use crate::proxmox::{Client, ClientOptions, ProxmoxError, TemplateRules};
use crate::sandbox::SandboxRecord;

pub const NAME: &str = "proxmox-lxc";

/// How often `wait` asks PVE whether a guest still runs.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// VMIDs tried when nextid's answer is taken by a concurrent creator.
const VMID_ATTEMPTS: u32 = 20;
/// Pause between destroy attempts while a guest is locked by a running task.
const LOCKED_RETRY: Duration = Duration::from_millis(200);

pub struct ProxmoxBackend {
    settings: ProxmoxConfig,
    /// Err: why the backend cannot take new pods (no endpoints, unreadable token, …).
    client: Result<Client, String>,
    templates: TemplateRules,
    guests: Guests,
    /// Guests tagged `proxrt` that no record owns, as found at startup.
    orphans: Mutex<Option<Vec<u32>>>,
    exec_max_output: usize,
    /// Serializes status.json updates (a stop and the exit watcher may race).
    status_lock: Mutex<()>,
}

fn invalid(message: String) -> BackendError {
    BackendError::Failed {
        backend: NAME,
        kind: Kind::InvalidArgument,
        message,
    }
}

fn internal(message: String) -> BackendError {
    BackendError::internal(NAME, message)
}

/// PVE's answer for a VMID that has no guest (any more).
fn is_gone(e: &ProxmoxError) -> bool {
    e.pve_message()
        .is_some_and(|m| m.contains("does not exist") || m.contains("no such"))
}

/// PVE refused because another task holds the guest's lock (`CT is locked (create)`).
fn is_locked(e: &ProxmoxError) -> bool {
    e.pve_message().is_some_and(|m| m.contains("is locked"))
}

fn is_not_running(e: &ProxmoxError) -> bool {
    e.pve_message().is_some_and(|m| m.contains("not running"))
}

impl ProxmoxBackend {
    /// The backend as configured. `online` false (`proxrt select`): availability only,
    /// no state is read or created.
    pub fn new(config: &Config, online: bool) -> ProxmoxBackend {
        let settings = config.proxmox.clone();
        let templates = TemplateRules::new(&settings.templates);
        let guests_dir = config.daemon.root.join("proxmox").join("guests");
        let guests = match online {
            true => Guests::load(&guests_dir)
                .map_err(|e| format!("guest records {}: {e}", guests_dir.display())),
            false => Ok(Guests::empty()),
        };
        let client = match (settings.unavailable_reason(), &templates, &guests) {
            (Some(reason), _, _) => Err(reason.to_owned()),
            (_, Err((key, why)), _) => Err(format!("{key}: {why}")),
            (_, _, Err(why)) => Err(why.clone()),
            _ => ClientOptions::from_config(&settings)
                .and_then(Client::new)
                .map_err(|e| e.to_string()),
        };
        ProxmoxBackend {
            templates: templates.unwrap_or_else(|_| TemplateRules::none()),
            guests: guests.unwrap_or_else(|_| Guests::empty()),
            settings,
            client,
            orphans: Mutex::new(None),
            exec_max_output: config.runtime.exec_sync_max_output,
            status_lock: Mutex::new(()),
        }
    }

    fn client(&self) -> Result<&Client, BackendError> {
        self.client.as_ref().map_err(|why| BackendError::Failed {
            backend: NAME,
            kind: Kind::FailedPrecondition,
            message: format!("backend unavailable: {why}"),
        })
    }

    fn task_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.task_timeout_secs)
    }

    fn guest(&self, run_dir: &Path) -> Result<GuestRecord, BackendError> {
        self.guests.get(run_dir).ok_or_else(|| {
            internal(format!(
                "no guest recorded for the container of {}",
                run_dir.display()
            ))
        })
    }

    /// Destroys the guest (purge), waiting out tasks that hold its lock, then forgets it.
    /// A guest that no longer exists is destroyed already. The lock may belong to a create
    /// task that outlived our wait for it: up to twice the task timeout is waited.
    async fn destroy(&self, g: &GuestRecord) -> Result<(), BackendError> {
        let client = self.client()?;
        let deadline = tokio::time::Instant::now() + 2 * self.task_timeout();
        loop {
            let result = match client.destroy(g.vmid, true, true).await {
                Ok(upid) => client.wait_task(&upid, self.task_timeout()).await.map(drop),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(e) if is_gone(&e) => break,
                Err(e) if is_locked(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCKED_RETRY).await;
                }
                Err(e) => {
                    log_event(
                        g.log.as_ref(),
                        &format!("destroying guest VMID {} failed: {e}", g.vmid),
                    );
                    return Err(e.into());
                }
            }
        }
        self.guests
            .remove(&g.run_dir)
            .map_err(|e| internal(format!("forget guest VMID {}: {e}", g.vmid)))?;
        tracing::info!(vmid = g.vmid, container = %g.container_id, "guest destroyed");
        Ok(())
    }

    /// A create whose answer was lost may have made guest `vmid`: destroyed if it is ours
    /// (its description names the container), left alone otherwise.
    async fn clean_up_unknown_create(&self, vmid: u32, p: &CreateParams, pod_id: &str) {
        let Ok(client) = self.client() else { return };
        let ours = match client.get_config(vmid).await {
            Ok(conf) => conf
                .get("description")
                .and_then(|d| d.as_str())
                .is_some_and(|d| d.contains(&p.id)),
            Err(_) => false,
        };
        if ours {
            let g = self.record_of(vmid, p, pod_id, "");
            if let Err(e) = self.destroy(&g).await {
                tracing::warn!(vmid, error = %e, "could not destroy a guest whose create was interrupted");
            }
        }
    }

    fn record_of(&self, vmid: u32, p: &CreateParams, pod_id: &str, template: &str) -> GuestRecord {
        GuestRecord {
            container_id: p.id.clone(),
            pod_id: pod_id.to_owned(),
            vmid,
            node: self.settings.node.clone(),
            template: template.to_owned(),
            log: p.log.clone(),
            run_dir: p.run_dir.clone(),
            ips: Vec::new(),
        }
    }

    /// Updates status.json under the status lock; a final status is never changed.
    fn update_status(
        &self,
        run_dir: &Path,
        change: impl FnOnce(&mut ContainerStatusFile),
    ) -> Result<ContainerStatusFile, BackendError> {
        let _one = self.status_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = crate::monitor::read_status(run_dir)?
            .unwrap_or_else(|| ContainerStatusFile::created(0, 0, crate::store::now_nanos()));
        if !s.is_final() {
            change(&mut s);
            crate::monitor::write_status(run_dir, &s)?;
        }
        Ok(s)
    }

    /// Records the exit (once) and says so in the log.
    fn finish(
        &self,
        g: &GuestRecord,
        exit_code: i32,
        message: &str,
    ) -> Result<ExitStatus, BackendError> {
        let s = self.update_status(&g.run_dir, |s| {
            s.finished_at = Some(crate::store::now_nanos());
            s.exit_code = Some(exit_code);
            s.signal = (exit_code == 128 + libc::SIGKILL).then_some(libc::SIGKILL);
            s.message = Some(message.to_owned());
            log_event(g.log.as_ref(), message);
        })?;
        Ok(exit_status(&s))
    }

    /// Reads the guest's addresses into the record's cache (best effort).
    async fn refresh_ips(&self, g: &GuestRecord) {
        let Ok(client) = self.client() else { return };
        if let Ok(Some(ifaces)) = client.interfaces(g.vmid).await {
            let ips = ifaces
                .iter()
                .filter(|i| i.name != "lo")
                .flat_map(|i| [i.inet.as_deref(), i.inet6.as_deref()])
                .flatten()
                .map(|a| a.split('/').next().unwrap_or(a).to_owned())
                .filter(|a| a != "127.0.0.1" && a != "::1" && !a.starts_with("fe80:"))
                .collect();
            self.guests.set_ips(&g.run_dir, ips);
        }
    }

    /// Looks for guests tagged `proxrt` that no record owns and reports them (log, `proxrt
    /// info`). Never destroys one: a guest proxrt cannot account for may be someone's data.
    pub async fn find_orphans(&self) -> Result<Vec<u32>, BackendError> {
        let client = self.client()?;
        let known = self.guests.vmids();
        let orphans: Vec<u32> = client
            .list_lxc()
            .await?
            .into_iter()
            .filter(|g| is_proxrt_guest(g.tags.as_deref()) && !known.contains(&g.vmid))
            .map(|g| g.vmid)
            .collect();
        for vmid in &orphans {
            tracing::warn!(vmid, node = %self.settings.node, "guest tagged proxrt that no pod owns (left alone; destroy it by hand if it is not needed)");
        }
        *self.orphans.lock().unwrap_or_else(|e| e.into_inner()) = Some(orphans.clone());
        Ok(orphans)
    }
}

fn exit_status(s: &ContainerStatusFile) -> ExitStatus {
    ExitStatus {
        exit_code: s.exit_code.unwrap_or(255),
        signal: s.signal,
        finished_at: s.finished_at.unwrap_or_default(),
        oom_killed: false,
    }
}

/// Appends one line to the container's CRI log (`kubectl logs` shows a guest's
/// lifecycle); a log that cannot be written never fails the operation.
fn log_event(target: Option<&LogTarget>, text: &str) {
    let Some(target) = target else { return };
    let line = format!("proxrt: {text}\n");
    let written = crate::logs::CriLogWriter::open(Some(target), 0).and_then(|mut w| {
        w.write_chunk(
            crate::logs::Stream::Stdout,
            line.as_bytes(),
            chrono::Utc::now(),
        )
    });
    if let Err(e) = written {
        tracing::warn!(log = %target.path().display(), error = %e, "write guest lifecycle to the container log");
    }
}

#[tonic::async_trait]
impl Backend for ProxmoxBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn unavailable_reason(&self) -> Option<String> {
        self.client.as_ref().err().cloned()
    }

    fn describe(&self) -> serde_json::Value {
        let orphans = self
            .orphans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({
            "endpoints": self.settings.endpoints,
            "node": self.settings.node,
            "storage": self.settings.storage,
            "bridge": self.settings.bridge,
            "pctPath": self.settings.pct_path,
            "templates": self.settings.templates.len(),
            "guests": self.guests.len(),
            "orphans": orphans,
        })
    }

    fn container_form(&self) -> ContainerForm {
        ContainerForm::Guest
    }

    fn template_for(&self, image: &str) -> Option<String> {
        self.templates.template_for(image).map(str::to_owned)
    }

    async fn pull_template(&self, template: &str) -> Result<TemplateImage, BackendError> {
        let client = self.client()?;
        let storage = template.split_once(':').map(|(s, _)| s).unwrap_or_default();
        let found = client
            .storage_content(storage, "vztmpl")
            .await?
            .into_iter()
            .find(|i| i.volid == template);
        match found {
            Some(item) => Ok(TemplateImage {
                template: item.volid,
                size: item.size,
            }),
            None => Err(BackendError::Failed {
                backend: NAME,
                kind: Kind::NotFound,
                message: format!(
                    "template {template} not found on storage {storage} of node {}",
                    self.settings.node
                ),
            }),
        }
    }

    async fn run_pod(&self, pod: PodParams<'_>) -> Result<PodRuntime, BackendError> {
        let client = self.client()?;
        let version = client.version().await?;
        std::fs::create_dir_all(pod.run_dir)
            .map_err(|e| internal(format!("create {}: {e}", pod.run_dir.display())))?;
        tracing::debug!(pod = pod.id, pve = %version, "proxmox pod recorded; its guest comes with its container");
        Ok(PodRuntime {
            hostname: pod.config.hostname.clone(),
            ..Default::default()
        })
    }

    async fn stop_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        for g in self.guests.of_pod(&pod.id) {
            self.stop(&g.run_dir, libc::SIGTERM, Duration::ZERO).await?;
        }
        Ok(())
    }

    async fn remove_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        for g in self.guests.of_pod(&pod.id) {
            self.destroy(&g).await?;
        }
        match std::fs::remove_dir_all(&pod.run_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(internal(format!("remove {}: {e}", pod.run_dir.display())))
            }
            _ => Ok(()),
        }
    }

    fn pod_alive(&self, _pod: &SandboxRecord) -> bool {
        // The pod is a record until its container; its guest's life is the container's.
        true
    }

    fn pod_ips(&self, pod: &SandboxRecord) -> Vec<String> {
        self.guests
            .of_pod(&pod.id)
            .into_iter()
            .flat_map(|g| g.ips)
            .collect()
    }

    fn prepare_spec(&self, _spec: &mut Spec) -> Result<PreparedSpec, BackendError> {
        Ok(PreparedSpec::default())
    }

    async fn create(&self, p: CreateParams) -> Result<(), BackendError> {
        let Payload::Guest(req) = &p.payload else {
            return Err(internal(
                "proxmox-lxc makes guests from templates, not from OCI bundles".into(),
            ));
        };
        let client = self.client()?;
        let params = create_params(
            &p.id,
            &req.template,
            &req.config,
            &req.pod.config,
            &self.settings,
        )
        .map_err(invalid)?;
        let log = p.log.as_ref();
        log_event(
            log,
            &format!(
                "creating a guest from template {} on node {}",
                req.template, self.settings.node
            ),
        );
        let (vmid, upid) = match client.create_with_next_vmid(&params, VMID_ATTEMPTS).await {
            Ok(made) => made,
            Err(e) => {
                log_event(log, &format!("create failed: {e}"));
                if let ProxmoxError::CreateOutcomeUnknown { vmid, .. } = &e {
                    self.clean_up_unknown_create(*vmid, &p, &req.pod.id).await;
                }
                return Err(e.into());
            }
        };
        let record = self.record_of(vmid, &p, &req.pod.id, &req.template);
        if let Err(e) = self.guests.put(record.clone()) {
            // Without a record the guest would be an orphan: do not keep it.
            let _ = client.wait_task(&upid, self.task_timeout()).await;
            let _ = self.destroy(&record).await;
            return Err(internal(format!("record guest VMID {vmid}: {e}")));
        }
        if let Err(e) = client.wait_task(&upid, self.task_timeout()).await {
            log_event(log, &format!("create task of VMID {vmid} failed: {e}"));
            if let Err(d) = self.destroy(&record).await {
                tracing::warn!(vmid, error = %d, "destroy after a failed create");
            }
            return Err(e.into());
        }
        self.update_status(&p.run_dir, |_| {})?;
        log_event(
            log,
            &format!("created guest VMID {vmid} from template {}", req.template),
        );
        tracing::info!(vmid, container = %p.id, template = %req.template, "guest created");
        Ok(())
    }

    async fn start(&self, run_dir: &Path) -> Result<(), BackendError> {
        let g = self.guest(run_dir)?;
        let client = self.client()?;
        let started = match client.start(g.vmid).await {
            Ok(upid) => client.wait_task(&upid, self.task_timeout()).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            log_event(
                g.log.as_ref(),
                &format!("start of guest VMID {} failed: {e}", g.vmid),
            );
            return Err(e.into());
        }
        self.update_status(run_dir, |s| s.started_at = Some(crate::store::now_nanos()))?;
        self.refresh_ips(&g).await;
        log_event(g.log.as_ref(), &format!("started guest VMID {}", g.vmid));
        Ok(())
    }

    /// SIGKILL stops the guest hard; any other signal asks it to shut down.
    async fn signal(&self, run_dir: &Path, signal: i32) -> Result<(), BackendError> {
        let g = self.guest(run_dir)?;
        let client = self.client()?;
        let sent = match signal {
            libc::SIGKILL => client.stop(g.vmid).await,
            _ => client.shutdown(g.vmid, None, false).await,
        };
        match sent {
            Ok(_) => Ok(()),
            Err(e) if is_not_running(&e) || is_gone(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn wait(&self, run_dir: &Path) -> Result<ExitStatus, BackendError> {
        let g = self.guest(run_dir)?;
        let client = self.client()?;
        loop {
            let status = crate::monitor::read_status(run_dir)?;
            if let Some(s) = status.as_ref().filter(|s| s.is_final()) {
                return Ok(exit_status(s));
            }
            let started = status.as_ref().is_some_and(|s| s.started_at.is_some());
            match client.status_current(g.vmid).await {
                Ok(st) if st.is_running() => {
                    if self.guests.get(run_dir).is_some_and(|r| r.ips.is_empty()) {
                        self.refresh_ips(&g).await;
                    }
                }
                Ok(_) if started => {
                    return self.finish(&g, 0, &format!("guest VMID {} stopped", g.vmid));
                }
                Ok(_) => {}
                Err(e) if is_gone(&e) => {
                    return self.finish(
                        &g,
                        255,
                        &format!("guest VMID {} no longer exists on node {}", g.vmid, g.node),
                    );
                }
                Err(e) => tracing::debug!(vmid = g.vmid, error = %e, "guest status"),
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }

    /// A shutdown task with the CRI timeout that stops the guest hard when it expires
    /// (`forceStop=1`); with no grace, a hard stop.
    async fn stop(
        &self,
        run_dir: &Path,
        _stop_signal: i32,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let g = self.guest(run_dir)?;
        let client = self.client()?;
        let started = crate::monitor::read_status(run_dir)?.is_some_and(|s| s.started_at.is_some());
        if !started {
            self.finish(
                &g,
                128 + libc::SIGKILL,
                &format!("guest VMID {} stopped before it started", g.vmid),
            )?;
            return Ok(());
        }
        let (task, exit_code, how) = if timeout.is_zero() {
            (client.stop(g.vmid).await, 128 + libc::SIGKILL, "stopped")
        } else {
            (
                client.shutdown(g.vmid, Some(timeout), true).await,
                0,
                "shut down",
            )
        };
        let done = match task {
            Ok(upid) => client
                .wait_task(&upid, timeout + self.task_timeout())
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {}
            Err(e) if is_not_running(&e) => {}
            Err(e) if is_gone(&e) => {
                self.finish(
                    &g,
                    255,
                    &format!("guest VMID {} no longer exists on node {}", g.vmid, g.node),
                )?;
                return Ok(());
            }
            Err(e) => {
                log_event(
                    g.log.as_ref(),
                    &format!("stopping guest VMID {} failed: {e}", g.vmid),
                );
                return Err(e.into());
            }
        }
        self.finish(&g, exit_code, &format!("guest VMID {} {how}", g.vmid))?;
        Ok(())
    }

    async fn remove(&self, run_dir: &Path) -> Result<(), BackendError> {
        let Some(g) = self.guests.get(run_dir) else {
            return Ok(());
        };
        self.destroy(&g).await?;
        log_event(g.log.as_ref(), &format!("destroyed guest VMID {}", g.vmid));
        Ok(())
    }

    fn streaming_unsupported(&self) -> Option<String> {
        Some(
            "proxmox-lxc guests have no streaming Exec, Attach or PortForward yet \
             (ExecSync works: `proxrt exec` without -i/-t)"
                .into(),
        )
    }

    async fn exec_stream(
        &self,
        _run_dir: &Path,
        _args: Vec<String>,
        _opts: crate::streaming::session::StreamOpts,
        _streams: crate::streaming::session::StdioStreams,
    ) -> Result<crate::streaming::session::Outcome, BackendError> {
        Err(BackendError::Failed {
            backend: self.name(),
            kind: Kind::FailedPrecondition,
            message: self.streaming_unsupported().unwrap_or_default(),
        })
    }

    fn pod_dialer(
        &self,
        _pod: &SandboxRecord,
    ) -> Result<crate::streaming::session::Dialer, BackendError> {
        Err(BackendError::Failed {
            backend: self.name(),
            kind: Kind::FailedPrecondition,
            message: self.streaming_unsupported().unwrap_or_default(),
        })
    }

    async fn exec_sync(
        &self,
        run_dir: &Path,
        args: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecSyncResult, BackendError> {
        let g = self.guest(run_dir)?;
        exec::pct_exec(
            &PathBuf::from(&self.settings.pct_path),
            g.vmid,
            &args,
            timeout,
            self.exec_max_output,
        )
        .await
        .map_err(|e| internal(format!("exec in guest VMID {}: {e}", g.vmid)))
    }

    /// Memory, swap and CPU limits as guest config (PVE applies them to a running guest).
    async fn update_resources(
        &self,
        run_dir: &Path,
        _cgroup: Option<&str>,
        requested: &LinuxContainerResources,
        _computed: &LinuxResources,
    ) -> Result<(), BackendError> {
        let g = self.guest(run_dir)?;
        let params = translate::config_update(requested).map_err(invalid)?;
        if params.is_empty() {
            return Ok(());
        }
        self.client()?.set_config(g.vmid, &params).await?;
        log_event(
            g.log.as_ref(),
            &format!("guest VMID {} resources updated", g.vmid),
        );
        Ok(())
    }

    /// Nothing to reopen: each lifecycle line opens the log file anew.
    async fn reopen_log(&self, _run_dir: &Path) -> Result<(), BackendError> {
        Ok(())
    }

    fn attach_unsupported(&self) -> Option<String> {
        Some(format!(
            "{NAME} cannot attach to a guest's console (use exec: `pct exec` runs commands in it)"
        ))
    }

    /// A guest's init is not proxrt's child: there is no stdio to join.
    async fn attach(
        &self,
        _run_dir: &Path,
        _streams: AttachStreams,
    ) -> Result<(AttachOutput, AttachInput), BackendError> {
        Err(BackendError::Failed {
            backend: NAME,
            kind: Kind::FailedPrecondition,
            message: self.attach_unsupported().unwrap_or_default(),
        })
    }

    fn is_alive(&self, run_dir: &Path) -> bool {
        self.guests.get(run_dir).is_some()
    }

    /// Guests run on the Proxmox node, in its cgroups, not this host's.
    fn host_cgroups(&self) -> bool {
        false
    }

    async fn reconcile(&self) {
        if self.client.is_err() {
            return;
        }
        if let Err(e) = self.find_orphans().await {
            tracing::warn!(error = %e, "could not list guests to look for orphans");
        }
    }
}
