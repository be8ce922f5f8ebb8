use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all)]
pub async fn image_fs_info(
    d: &Daemon,
    _req: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let usage = d.images().fs_usage().await.map_err(to_status)?;
    let fs = FilesystemUsage {
        timestamp: crate::store::now_nanos(),
        fs_id: Some(FilesystemIdentifier {
            mountpoint: d.images().root().display().to_string(),
        }),
        used_bytes: Some(UInt64Value { value: usage.bytes }),
        inodes_used: Some(UInt64Value {
            value: usage.inodes,
        }),
    };
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![fs],
        container_filesystems: Vec::new(),
    })
}
