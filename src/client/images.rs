//! `proxrt pull|images|rmi|inspecti|image import`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};

use super::{ClientError, Cri};
use crate::admin::admin_client::AdminClient;
use crate::admin::ImportImageRequest;

/// `proxrt pull IMAGE [--creds user:password]`: PullImage, with a live line on a
/// terminal showing the image store growing while the daemon downloads.
pub async fn pull(
    cri: &mut Cri,
    image: &str,
    creds: Option<&str>,
    quiet: bool,
) -> Result<(), ClientError> {
    let auth = match creds {
        Some(c) => {
            let (u, p) = c
                .split_once(':')
                .ok_or_else(|| ClientError::Usage("--creds takes USER:PASSWORD".into()))?;
            Some(AuthConfig {
                username: u.into(),
                password: p.into(),
                ..Default::default()
            })
        }
        None => None,
    };
    let req = PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    let started = Instant::now();
    let mut images = cri.images.clone();
    let mut pulling = Box::pin(async move { images.pull_image(req).await });
    let show = !quiet && std::io::stderr().is_terminal();
    let base = if show { store_bytes(cri).await } else { 0 };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        tokio::select! {
            r = &mut pulling => break r,
            _ = tick.tick(), if show => {
                let now = store_bytes(cri).await.saturating_sub(base);
                eprint!("\r\x1b[Kpulling {image}: {} stored, {:.1}s", human_bytes(now), started.elapsed().as_secs_f64());
                let _ = std::io::stderr().flush();
            }
        }
    };
    if show {
        eprint!("\r\x1b[K");
    }
    let image_ref = result
        .map_err(|s| ClientError::rpc("PullImage", s))?
        .into_inner()
        .image_ref;
    if quiet {
        println!("{image_ref}");
    } else {
        println!(
            "Image is up to date for {image_ref} ({} ms)",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

async fn store_bytes(cri: &mut Cri) -> u64 {
    cri.images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .ok()
        .and_then(|r| {
            r.into_inner()
                .image_filesystems
                .first()
                .and_then(|f| f.used_bytes)
                .map(|u| u.value)
        })
        .unwrap_or(0)
}

/// `proxrt images [-q] [IMAGE]`
pub async fn images(cri: &mut Cri, filter: Option<&str>, quiet: bool) -> Result<(), ClientError> {
    let req = ListImagesRequest {
        filter: filter.map(|f| ImageFilter {
            image: Some(ImageSpec {
                image: f.into(),
                ..Default::default()
            }),
        }),
    };
    let list = cri
        .images
        .list_images(req)
        .await
        .map_err(|s| ClientError::rpc("ListImages", s))?
        .into_inner()
        .images;
    if quiet {
        for i in &list {
            println!("{}", i.id);
        }
        return Ok(());
    }
    println!(
        "{:<50} {:<20} {:<15} {:>10}",
        "IMAGE", "TAG", "IMAGE ID", "SIZE"
    );
    for i in &list {
        let id = short_id(&i.id);
        let size = human_bytes(i.size);
        if i.repo_tags.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(r, _)| r)
                .unwrap_or("<none>");
            println!("{repo:<50} {:<20} {id:<15} {size:>10}", "<none>");
        }
        for t in &i.repo_tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((t.as_str(), ""));
            println!("{repo:<50} {tag:<20} {id:<15} {size:>10}");
        }
    }
    Ok(())
}

/// `proxrt rmi IMAGE...`
pub async fn rmi(cri: &mut Cri, names: &[String]) -> Result<(), ClientError> {
    for name in names {
        let status = cri
            .images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|s| ClientError::rpc("ImageStatus", s))?
            .into_inner();
        let Some(image) = status.image else {
            return Err(ClientError::Usage(format!("no such image: {name}")));
        };
        cri.images
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| ClientError::rpc("RemoveImage", s))?;
        println!("Deleted: {}", image.id);
    }
    Ok(())
}

/// `proxrt inspecti IMAGE`: ImageStatus with verbose info, as JSON.
pub async fn inspecti(cri: &mut Cri, name: &str) -> Result<(), ClientError> {
    let status = cri
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .map_err(|s| ClientError::rpc("ImageStatus", s))?
        .into_inner();
    let Some(image) = status.image else {
        return Err(ClientError::Usage(format!("no such image: {name}")));
    };
    let mut out = serde_json::json!({ "status": image });
    for (k, v) in status.info {
        out[k] = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// `proxrt image import PATH [--tag NAME]...`: the daemon reads PATH itself.
pub async fn import(cri: &mut Cri, path: &Path, tags: &[String]) -> Result<(), ClientError> {
    let abs = std::fs::canonicalize(path)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let mut admin = AdminClient::new(cri.channel.clone());
    let resp = admin
        .import_image(ImportImageRequest {
            path: abs.display().to_string(),
            tags: tags.to_vec(),
        })
        .await
        .map_err(|s| ClientError::rpc("ImportImage", s))?
        .into_inner();
    for i in resp.images {
        println!("Imported {} {}", i.id, i.repo_tags.join(" "));
    }
    Ok(())
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(13)]
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}
