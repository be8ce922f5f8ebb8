//! proxrt: a Kubernetes CRI runtime for Proxmox VE hosts.
//!
//! The flow of a pod through these modules is drawn in docs/architecture.md.

pub mod admin;
pub mod authority;
pub mod backend;
pub mod client;
pub mod config;
pub mod container;
pub mod context;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod image;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod notify;
pub mod proxmox;
pub mod rollback;
pub mod sandbox;
pub mod select;
pub mod spec;
pub mod store;
