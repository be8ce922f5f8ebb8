use k8s_cri::v1::{VersionRequest, VersionResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub const RUNTIME_NAME: &str = "proxrt";
pub const RUNTIME_API_VERSION: &str = "v1";

#[tracing::instrument(level = "debug", skip_all)]
pub fn version(_d: &Daemon, _req: VersionRequest) -> Result<VersionResponse, Status> {
    Ok(VersionResponse {
        // The kubelet-facing API version this server speaks.
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    })
}
