use std::collections::HashMap;

use k8s_cri::v1::{RuntimeCondition, RuntimeStatus, StatusRequest, StatusResponse};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all)]
pub fn status(d: &Daemon, req: StatusRequest) -> Result<StatusResponse, Status> {
    let health = d.health();
    let condition = |type_: &str, problem: &Option<(String, String)>| RuntimeCondition {
        r#type: type_.into(),
        status: problem.is_none(),
        reason: problem.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
        message: problem.as_ref().map(|p| p.1.clone()).unwrap_or_default(),
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".into(), d.config_json());
        // Which backends take new containers here, and why not (docs/runtime-selection.md).
        info.insert("backends".into(), d.backends().describe().to_string());
        info.insert("metrics".into(), d.metrics_url());
        // Where Exec, Attach and PortForward URLs point.
        info.insert(
            "streaming".into(),
            d.streaming()
                .base_url()
                .unwrap_or("not listening")
                .to_owned(),
        );
        // The CNI config in force (or why none is) and the pod CIDR (docs/networking.md).
        info.insert("network".into(), d.network().describe().to_string());
        // Whether AppArmor profiles are applied here (docs/security.md).
        info.insert("apparmor".into(), d.host().apparmor.describe());
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", &health.runtime),
                condition("NetworkReady", &health.network),
            ],
        }),
        info,
        ..Default::default()
    })
}
