//! Which backends this daemon has, whether each can take new pods here and why not, and
//! the selection of a backend for a new pod or container. The daemon, `proxrt info`
//! (Status verbose) and `proxrt select` all read these answers; nothing else decides
//! availability.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_cri::v1::{ImageSpec, PodSandboxConfig};

use super::host::HostBackend;
use super::proxmox::ProxmoxBackend;
use super::{Backend, BackendError};
use crate::config::Config;
use crate::error::Kind;
use crate::image::reference::{parse_query, ImageQuery};
use crate::image::Images;
use crate::monitor::Zygote;
use crate::network::Network;
use crate::sandbox::SandboxRecord;
use crate::select::{known_backend, Decision, PodChoice, SelectError, Selector, KNOWN_BACKENDS};

/// Every backend implemented on this daemon, available or not: pods and containers a
/// backend already runs are supervised through it even when it can no longer take new ones.
pub struct Backends {
    registered: BTreeMap<&'static str, Arc<dyn Backend>>,
    default_backend: String,
}

impl Backends {
    /// The backends of this build, probed on this host. `zygote` is None for offline use
    /// (`proxrt select`): availability is known, nothing can run.
    /// `network` is the CNI setup the host backends attach their pods with.
    pub fn probe(config: &Config, zygote: Option<Arc<Zygote>>, network: Arc<Network>) -> Backends {
        let online = zygote.is_some();
        let list: Vec<Arc<dyn Backend>> = vec![
            Arc::new(HostBackend::libcontainer(
                config,
                zygote.clone(),
                network.clone(),
            )),
            Arc::new(HostBackend::crun(config, zygote, network)),
            Arc::new(ProxmoxBackend::new(config, online)),
        ];
        Backends::with(list, &config.runtime.default_backend)
    }

    /// A registry of exactly these backends (tests register fakes this way).
    pub fn with(list: Vec<Arc<dyn Backend>>, default_backend: &str) -> Backends {
        Backends {
            registered: list.into_iter().map(|b| (b.name(), b)).collect(),
            default_backend: default_backend.to_owned(),
        }
    }

    /// Logs every backend that cannot take new pods, with why.
    pub fn log_unavailable(&self) {
        for b in self.registered.values() {
            if let Some(reason) = b.unavailable_reason() {
                tracing::warn!(backend = b.name(), %reason, "backend unavailable: new pods and containers cannot use it");
            }
        }
    }

    /// The backend registered under `name`, to supervise a pod or container it already runs.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Backend>, BackendError> {
        self.registered
            .get(name)
            .cloned()
            .ok_or_else(|| BackendError::Failed {
                backend: "daemon",
                kind: Kind::FailedPrecondition,
                message: format!(
                    "backend {name} is not available on this daemon ({})",
                    self.why_unavailable(name).unwrap_or_default()
                ),
            })
    }

    /// Why `name` cannot take new pods and containers here, or None when it can.
    pub fn why_unavailable(&self, name: &str) -> Option<String> {
        match (self.registered.get(name), known_backend(name)) {
            (Some(b), _) => b.unavailable_reason(),
            (None, Some(k)) if !k.implemented => Some("not implemented yet".into()),
            (None, Some(_)) => Some("not registered".into()),
            (None, None) => Some("unknown backend".into()),
        }
    }

    /// Backend `name` when it can take new pods, else why not (`reason`: why it was chosen).
    pub fn available(&self, name: &str, reason: &str) -> Result<Arc<dyn Backend>, SelectError> {
        self.for_new(&Decision {
            backend: name.to_owned(),
            reason: reason.to_owned(),
            source: crate::select::Source::ImageRule,
            options: Default::default(),
        })
    }

    /// The backend a decision names, when it can take something new.
    fn for_new(&self, decision: &Decision) -> Result<Arc<dyn Backend>, SelectError> {
        let unavailable = |why| SelectError::Unavailable {
            backend: decision.backend.clone(),
            why,
            reason: decision.reason.clone(),
        };
        if let Some(why) = self.why_unavailable(&decision.backend) {
            return Err(unavailable(why));
        }
        self.registered
            .get(decision.backend.as_str())
            .cloned()
            .ok_or_else(|| unavailable("not registered".into()))
    }

    /// Which backend a new pod gets, and why (docs/runtime-selection.md): the handler, the
    /// `proxrt.io/runtime` annotation, or the default. Refused before anything is made
    /// when the handler is unknown (InvalidArgument) or the backend cannot take new pods
    /// here (FailedPrecondition).
    pub fn for_pod(
        &self,
        selector: &Selector,
        runtime_handler: &str,
        config: &PodSandboxConfig,
    ) -> Result<(Arc<dyn Backend>, Decision), SelectError> {
        let decision = selector.for_pod(runtime_handler, &config.annotations)?;
        Ok((self.for_new(&decision)?, decision))
    }

    /// Which backend a new container of `sandbox` gets, and why: the pod's when a handler
    /// or the annotation chose it, else the first matching image rule of the same backend
    /// family, else the pod's (`default`). Pure lookups: called before CreateContainer
    /// makes anything.
    pub fn for_container(
        &self,
        selector: &Selector,
        images: &Images,
        sandbox: &SandboxRecord,
        image: &ImageSpec,
    ) -> Result<(Arc<dyn Backend>, Decision), SelectError> {
        let pod = PodChoice::from_request(
            &sandbox.backend,
            &sandbox.backend_reason,
            &sandbox.runtime_handler,
            &sandbox.config.annotations,
        );
        // kubelet (1.28+) sends the pod spec's image in `user_specified_image` and the
        // resolved image id in `image`; an id is matched by the names the store has for it.
        let written = match image.user_specified_image.as_str() {
            "" => image.image.as_str(),
            name => name,
        };
        let mut names = vec![written.to_owned()];
        if matches!(parse_query(written), Ok(ImageQuery::Id(_))) {
            if let Ok(entry) = images.get(written) {
                names.extend(entry.record.repo_tags.iter().cloned());
                names.extend(entry.record.repo_digests.iter().cloned());
            }
        }
        let decision = selector.for_container(pod, written, &names)?;
        Ok((self.for_new(&decision)?, decision))
    }

    /// The backend that provides `image` as a template, and the template: PullImage
    /// checks it there instead of pulling from a registry.
    pub fn template_for(&self, image: &str) -> Option<(Arc<dyn Backend>, String)> {
        self.registered
            .values()
            .find_map(|b| b.template_for(image).map(|t| (b.clone(), t)))
    }

    /// Runs every backend's after-startup work (orphan reports), concurrently.
    pub async fn reconcile(&self) {
        futures_util::future::join_all(self.registered.values().map(|b| b.reconcile())).await;
    }

    /// Every backend proxrt knows and whether it takes new pods here, for Status verbose
    /// info (`proxrt info`).
    pub fn describe(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for known in KNOWN_BACKENDS {
            let mut v = match self.registered.get(known.name) {
                Some(b) => b.describe(),
                None => serde_json::json!({}),
            };
            let why = self.why_unavailable(known.name);
            v["available"] = serde_json::Value::Bool(why.is_none());
            if let Some(why) = why {
                v["reason"] = serde_json::Value::String(why);
            }
            v["family"] = serde_json::Value::String(known.family.into());
            v["default"] = serde_json::Value::Bool(self.default_backend == known.name);
            out.insert(known.name.into(), v);
        }
        serde_json::Value::Object(out)
    }
}
