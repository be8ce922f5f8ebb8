//! proxrt: a Kubernetes CRI runtime for Proxmox VE hosts.
//!
//! The flow of a pod through these modules is drawn in docs/architecture.md.

pub mod admin;
pub mod apparmor;
pub mod authority;
pub mod backend;
#[doc(hidden)]
pub mod bench_api;
pub mod client;
pub mod config;
pub(crate) mod container;
pub(crate) mod context;
#[doc(hidden)]
pub mod crash;
pub(crate) mod cri;
pub mod daemon;
pub mod error;
pub mod events;
pub mod image;
pub(crate) mod intent;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub(crate) mod mounts;
pub(crate) mod names;
pub mod network;
pub mod notify;
pub mod proxmox;
pub(crate) mod rollback;
pub(crate) mod sandbox;
pub mod select;
pub(crate) mod spec;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod streaming;
