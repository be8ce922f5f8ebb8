//! The CRI face of the daemon: tonic services whose methods each hand one RPC to
//! its own file (validate → call the domain → map the result). No business logic
//! lives here; every domain error becomes a gRPC status in `errors`.

mod attach;
mod container_stats;
mod container_status;
mod create_container;
pub mod errors;
mod exec;
mod exec_sync;
mod get_container_events;
mod image_fs_info;
mod image_status;
mod import_image;
mod list_container_stats;
pub(crate) mod list_containers;
mod list_containers_wire;
mod list_images;
mod list_metric_descriptors;
mod list_pod_sandbox;
mod list_pod_sandbox_metrics;
mod list_pod_sandbox_stats;
mod pod_sandbox_stats;
mod pod_sandbox_status;
mod port_forward;
mod pull_image;
mod remove_container;
mod remove_image;
mod remove_pod_sandbox;
mod reopen_container_log;
mod run_pod_sandbox;
mod runtime_config;
mod start_container;
mod status;
mod stop_container;
mod stop_pod_sandbox;
mod update_container_resources;
mod update_runtime_config;
mod version;

use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;

pub use list_containers_wire::EncodedList;

/// runtime.v1.RuntimeService.
pub struct RuntimeApi(pub Arc<Daemon>);

/// runtime.v1.ImageService.
pub struct ImageApi(pub Arc<Daemon>);

/// proxrt.v1.Admin: what CRI has no call for (image import).
pub struct AdminApi(pub Arc<Daemon>);

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(r: Result<T, Status>) -> Reply<T> {
    r.map(Response::new)
}

/// Runs a handler that reads many files (the stats RPCs: cgroup files, a walk of each
/// writable layer) on the blocking pool, off the runtime's workers.
async fn blocking<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, Status> + Send + 'static,
) -> Reply<T> {
    let d = d.clone();
    let r = tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| Status::internal(format!("handler task: {e}")))?;
    reply(r)
}

/// An RPC proxrt does not implement yet: kubelet tolerates `Unimplemented`.
fn not_yet<T>(rpc: &str) -> Reply<T> {
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented by proxrt yet"
    )))
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(&self, r: Request<VersionRequest>) -> Reply<VersionResponse> {
        reply(version::version(&self.0, r.into_inner()))
    }
    async fn status(&self, r: Request<StatusRequest>) -> Reply<StatusResponse> {
        reply(status::status(&self.0, r.into_inner()))
    }
    async fn runtime_config(
        &self,
        r: Request<RuntimeConfigRequest>,
    ) -> Reply<RuntimeConfigResponse> {
        reply(runtime_config::runtime_config(&self.0, r.into_inner()))
    }
    async fn run_pod_sandbox(
        &self,
        r: Request<RunPodSandboxRequest>,
    ) -> Reply<RunPodSandboxResponse> {
        reply(run_pod_sandbox::run_pod_sandbox(&self.0, r.into_inner()).await)
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<StopPodSandboxRequest>,
    ) -> Reply<StopPodSandboxResponse> {
        reply(stop_pod_sandbox::stop_pod_sandbox(&self.0, r.into_inner()).await)
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<RemovePodSandboxRequest>,
    ) -> Reply<RemovePodSandboxResponse> {
        reply(remove_pod_sandbox::remove_pod_sandbox(&self.0, r.into_inner()).await)
    }
    async fn pod_sandbox_status(
        &self,
        r: Request<PodSandboxStatusRequest>,
    ) -> Reply<PodSandboxStatusResponse> {
        reply(pod_sandbox_status::pod_sandbox_status(
            &self.0,
            r.into_inner(),
        ))
    }
    async fn list_pod_sandbox(
        &self,
        r: Request<ListPodSandboxRequest>,
    ) -> Reply<ListPodSandboxResponse> {
        reply(list_pod_sandbox::list_pod_sandbox(&self.0, r.into_inner()))
    }
    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> Reply<CreateContainerResponse> {
        reply(create_container::create_container(&self.0, r.into_inner()).await)
    }
    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> Reply<StartContainerResponse> {
        reply(start_container::start_container(&self.0, r.into_inner()).await)
    }
    async fn stop_container(
        &self,
        r: Request<StopContainerRequest>,
    ) -> Reply<StopContainerResponse> {
        reply(stop_container::stop_container(&self.0, r.into_inner()).await)
    }
    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> Reply<RemoveContainerResponse> {
        reply(remove_container::remove_container(&self.0, r.into_inner()).await)
    }
    async fn list_containers(
        &self,
        r: Request<ListContainersRequest>,
    ) -> Reply<ListContainersResponse> {
        reply(list_containers::list_containers(&self.0, r.into_inner()))
    }
    async fn container_status(
        &self,
        r: Request<ContainerStatusRequest>,
    ) -> Reply<ContainerStatusResponse> {
        reply(container_status::container_status(&self.0, r.into_inner()))
    }
    async fn update_container_resources(
        &self,
        r: Request<UpdateContainerResourcesRequest>,
    ) -> Reply<UpdateContainerResourcesResponse> {
        reply(update_container_resources::update_container_resources(&self.0, r.into_inner()).await)
    }
    async fn reopen_container_log(
        &self,
        r: Request<ReopenContainerLogRequest>,
    ) -> Reply<ReopenContainerLogResponse> {
        reply(reopen_container_log::reopen_container_log(&self.0, r.into_inner()).await)
    }
    async fn exec_sync(&self, r: Request<ExecSyncRequest>) -> Reply<ExecSyncResponse> {
        reply(exec_sync::exec_sync(&self.0, r.into_inner()).await)
    }
    async fn exec(&self, r: Request<ExecRequest>) -> Reply<ExecResponse> {
        reply(exec::exec(&self.0, r.into_inner()))
    }
    async fn attach(&self, r: Request<AttachRequest>) -> Reply<AttachResponse> {
        reply(attach::attach(&self.0, r.into_inner()))
    }
    async fn port_forward(&self, r: Request<PortForwardRequest>) -> Reply<PortForwardResponse> {
        reply(port_forward::port_forward(&self.0, r.into_inner()))
    }
    async fn container_stats(
        &self,
        r: Request<ContainerStatsRequest>,
    ) -> Reply<ContainerStatsResponse> {
        let req = r.into_inner();
        blocking(&self.0, move |d| container_stats::container_stats(d, req)).await
    }
    async fn list_container_stats(
        &self,
        r: Request<ListContainerStatsRequest>,
    ) -> Reply<ListContainerStatsResponse> {
        let req = r.into_inner();
        blocking(&self.0, move |d| {
            list_container_stats::list_container_stats(d, req)
        })
        .await
    }
    async fn pod_sandbox_stats(
        &self,
        r: Request<PodSandboxStatsRequest>,
    ) -> Reply<PodSandboxStatsResponse> {
        let req = r.into_inner();
        blocking(&self.0, move |d| {
            pod_sandbox_stats::pod_sandbox_stats(d, req)
        })
        .await
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: Request<ListPodSandboxStatsRequest>,
    ) -> Reply<ListPodSandboxStatsResponse> {
        let req = r.into_inner();
        blocking(&self.0, move |d| {
            list_pod_sandbox_stats::list_pod_sandbox_stats(d, req)
        })
        .await
    }
    async fn update_runtime_config(
        &self,
        r: Request<UpdateRuntimeConfigRequest>,
    ) -> Reply<UpdateRuntimeConfigResponse> {
        reply(update_runtime_config::update_runtime_config(
            &self.0,
            r.into_inner(),
        ))
    }
    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Reply<CheckpointContainerResponse> {
        not_yet("CheckpointContainer")
    }
    type GetContainerEventsStream = get_container_events::EventStream;
    async fn get_container_events(
        &self,
        r: Request<GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        reply(Ok(get_container_events::get_container_events(
            &self.0,
            r.into_inner(),
        )))
    }
    async fn list_metric_descriptors(
        &self,
        r: Request<ListMetricDescriptorsRequest>,
    ) -> Reply<ListMetricDescriptorsResponse> {
        reply(list_metric_descriptors::list_metric_descriptors(
            r.into_inner(),
        ))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<ListPodSandboxMetricsRequest>,
    ) -> Reply<ListPodSandboxMetricsResponse> {
        let req = r.into_inner();
        blocking(&self.0, move |d| {
            list_pod_sandbox_metrics::list_pod_sandbox_metrics(d, req)
        })
        .await
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(&self, r: Request<ListImagesRequest>) -> Reply<ListImagesResponse> {
        reply(list_images::list_images(&self.0, r.into_inner()))
    }
    async fn image_status(&self, r: Request<ImageStatusRequest>) -> Reply<ImageStatusResponse> {
        reply(image_status::image_status(&self.0, r.into_inner()))
    }
    async fn pull_image(&self, r: Request<PullImageRequest>) -> Reply<PullImageResponse> {
        reply(pull_image::pull_image(&self.0, r.into_inner()).await)
    }
    async fn remove_image(&self, r: Request<RemoveImageRequest>) -> Reply<RemoveImageResponse> {
        reply(remove_image::remove_image(&self.0, r.into_inner()).await)
    }
    async fn image_fs_info(&self, r: Request<ImageFsInfoRequest>) -> Reply<ImageFsInfoResponse> {
        reply(image_fs_info::image_fs_info(&self.0, r.into_inner()).await)
    }
}

#[tonic::async_trait]
impl crate::admin::admin_server::Admin for AdminApi {
    async fn import_image(
        &self,
        r: Request<crate::admin::ImportImageRequest>,
    ) -> Reply<crate::admin::ImportImageResponse> {
        reply(import_image::import_image(&self.0, r.into_inner()).await)
    }
}

#[cfg(test)]
mod proptests;
