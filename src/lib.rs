//! proxrt: a Kubernetes CRI runtime for Proxmox VE hosts.
//!
//! The flow of a pod through these modules is drawn in docs/architecture.md.

pub mod admin;
pub mod client;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod image;
pub mod logs;
pub mod monitor;
pub mod rollback;
pub mod spec;
pub mod store;
