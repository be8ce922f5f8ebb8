//! The debugging client: `proxrt version|info|pull|images|rmi|inspecti|image import`,
//! pods (`pods|runp|stopp|rmp|inspectp`), containers (`create|start|stop|rm|ps|
//! inspect|logs|exec|attach|port-forward|update`) and observation (`stats|events`), speaking CRI to a daemon (proxrt's, or any CRI endpoint for
//! the CRI calls).

pub mod bench;
mod bench_pods;
pub mod bench_report;
pub mod config_file;
mod containers;
mod events;
mod images;
mod pods;
pub mod run;
mod stats;
mod stream;
pub mod table;
mod update;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::error_chain;

pub use bench::BenchArgs;
pub use containers::{create, exec, inspect, logs, ps, rm, start, stop, CreateOptions, PsOptions};
pub use events::events;
pub use images::{images, import, inspecti, pull, rmi};
pub use pods::{inspectp, pods, rmp, runp, stopp, PodsOptions, RunpOptions};
pub use run::{run, RunOptions};
pub use stats::{stats, StatsOptions};
pub use stream::{attach, exec_stream, port_forward};
pub use update::{update, UpdateOptions};

/// `-o`: how a listing command prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {reason} (is `proxrt serve` running? try `sudo`)")]
    Connect { endpoint: String, reason: String },
    #[error("{rpc}: {status}")]
    Rpc {
        rpc: &'static str,
        status: String,
        code: tonic::Code,
    },
    #[error("{0}")]
    Usage(String),
    #[error("runtime not ready: {reason}: {message}")]
    NotReady { reason: String, message: String },
    #[error("interrupted")]
    Interrupted,
}

impl ClientError {
    pub fn rpc(rpc: &'static str, s: tonic::Status) -> ClientError {
        ClientError::Rpc {
            rpc,
            code: s.code(),
            status: format!("{:?}: {}", s.code(), s.message()),
        }
    }
}

/// A connection to a CRI endpoint: both services over one channel.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub channel: Channel,
}

impl Cri {
    /// ContainerStatus (not verbose) of `id`: its status, or an error naming it.
    pub async fn status_of(
        &mut self,
        id: &str,
    ) -> Result<k8s_cri::v1::ContainerStatus, ClientError> {
        self.runtime
            .container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|s| ClientError::rpc("ContainerStatus", s))?
            .into_inner()
            .status
            .ok_or_else(|| ClientError::Usage(format!("container {id} has no status")))
    }
}

/// `unix:///run/proxrt/proxrt.sock` or a bare path → the socket path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Cri, ClientError> {
    let path = socket_path(endpoint);
    let err = |reason: String| ClientError::Connect {
        endpoint: endpoint.to_owned(),
        reason,
    };
    // The URI is a placeholder: the connector below always dials the unix socket.
    let channel = Endpoint::from_static("http://[::]:50051")
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(&path).await?))
            }
        }))
        .await
        .map_err(|e| err(error_chain(&e)))?;
    const MAX: usize = 64 * 1024 * 1024;
    Ok(Cri {
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX)
            .max_encoding_message_size(MAX),
        images: ImageServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX)
            .max_encoding_message_size(MAX),
        channel,
    })
}

/// `proxrt version`
pub async fn version(cri: &mut Cri) -> Result<(), ClientError> {
    let v = cri
        .runtime
        .version(k8s_cri::v1::VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(|s| ClientError::rpc("Version", s))?
        .into_inner();
    println!("Version:           {}", v.version);
    println!("RuntimeName:       {}", v.runtime_name);
    println!("RuntimeVersion:    {}", v.runtime_version);
    println!("RuntimeApiVersion: {}", v.runtime_api_version);
    Ok(())
}

/// `proxrt info`: Status with verbose info, as JSON.
pub async fn info(cri: &mut Cri) -> Result<(), ClientError> {
    let s = cri
        .runtime
        .status(k8s_cri::v1::StatusRequest { verbose: true })
        .await
        .map_err(|s| ClientError::rpc("Status", s))?
        .into_inner();
    let conditions: Vec<_> = s
        .status
        .map(|st| st.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| serde_json::json!({"type": c.r#type, "status": c.status, "reason": c.reason, "message": c.message}))
        .collect();
    let mut out = serde_json::json!({ "conditions": conditions });
    for (k, v) in s.info {
        out[k] = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// `proxrt health`: Ok when Status reports RuntimeReady; the reason otherwise. Network
/// readiness is not asked: it is the CNI plugin's, and kubelet reports it on its own.
pub async fn health(cri: &mut Cri) -> Result<(), ClientError> {
    let s = cri
        .runtime
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .map_err(|s| ClientError::rpc("Status", s))?
        .into_inner();
    let conditions = s.status.map(|st| st.conditions).unwrap_or_default();
    match conditions.into_iter().find(|c| c.r#type == "RuntimeReady") {
        Some(c) if c.status => {
            println!("ok: RuntimeReady");
            Ok(())
        }
        Some(c) => Err(ClientError::NotReady {
            reason: c.reason,
            message: c.message,
        }),
        None => Err(ClientError::NotReady {
            reason: "NoRuntimeReadyCondition".into(),
            message: "Status answered without a RuntimeReady condition".into(),
        }),
    }
}

/// The default endpoint: the daemon's default socket.
pub fn default_endpoint() -> String {
    format!("unix://{}", Path::new("/run/proxrt/proxrt.sock").display())
}
