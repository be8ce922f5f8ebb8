use k8s_cri::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};
use tonic::Status;

use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all)]
pub fn runtime_config(
    d: &Daemon,
    _req: RuntimeConfigRequest,
) -> Result<RuntimeConfigResponse, Status> {
    // Config validation admits only the drivers proxrt implements.
    let driver = match d.config().runtime.cgroup_driver.as_str() {
        "systemd" => CgroupDriver::Systemd,
        _ => CgroupDriver::Cgroupfs,
    };
    Ok(RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    })
}
