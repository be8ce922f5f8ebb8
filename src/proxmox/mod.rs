//! The Proxmox VE API client: what the `proxmox-lxc` backend will use to run pods as LXC
//! guests (the backend itself comes later; docs/proxmox.md).
//!
//! - `transport`: one HTTPS client over several endpoints (failover), the API token header,
//!   PVE's response envelope turned into typed errors, retries only where they are safe.
//! - `lxc`, `task`: the operations (nextid, create, start, stop, … and UPID polling).
//! - `tls`: CA file, pinned leaf fingerprint (like Proxmox's own tools) or insecure.
//! - `secret`: the token secret, which never reaches a log line or an error.
//! - `templates`: `[[proxmox.templates]]`, image name → template volid.
//!
//! Everything is tested against the `pve-sim` binary (src/bin/pve-sim), never a mock.

mod error;
mod form;
mod lxc;
mod secret;
mod task;
mod templates;
mod tls;
mod transport;
mod upid;

pub use error::ProxmoxError;
pub use form::{encode_form, BoolFlag};
pub use lxc::{
    CreateLxc, Interface, IpConfig, LxcStatus, LxcSummary, NetConfig, RootFs, StorageItem,
    MAX_VMID, MIN_VMID,
};
pub use secret::Secret;
pub use task::{LogLine, TaskOutcome, TaskStatus};
pub use templates::TemplateRules;
pub use tls::{Fingerprint, TlsMode};
pub use transport::{Client, ClientOptions, RetryPolicy};
pub use upid::Upid;

pub(crate) use templates::validate_config;
