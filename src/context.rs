//! What the pod and container operations use of the daemon: its stores, the name
//! registry, the image store, the backends and the selector. The daemon lends one to each
//! RPC ([`crate::daemon::Daemon::ctx`]); unit tests build one from temp stores and a fake
//! backend, with no zygote and no mounts.

use std::path::Path;
use std::sync::Arc;

use crate::backend::Backends;
use crate::container::ContainerStore;
use crate::image::Images;
use crate::names::NameRegistry;
use crate::sandbox::SandboxStore;
use crate::select::Selector;
use crate::spec::HostView;

#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub sandboxes: &'a SandboxStore,
    pub containers: &'a ContainerStore,
    pub names: &'a Arc<NameRegistry>,
    pub images: &'a Images,
    pub backends: &'a Backends,
    pub selector: &'a Selector,
    /// What the spec translation needs to know about this host.
    pub host: &'a HostView,
    /// The daemon's run dir: pods under `s/`, containers under `c/`.
    pub run_dir: &'a Path,
}
