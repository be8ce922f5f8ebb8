//! `proxrt update ID --memory 64m --cpu-shares N ...`: UpdateContainerResources. CRI
//! replaces a container's resources as a whole, so the flags are laid over what
//! ContainerStatus reports in force (what is not given stays as it is).

use k8s_cri::v1::{LinuxContainerResources, UpdateContainerResourcesRequest};

use super::{ClientError, Cri};

#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    pub id: String,
    /// Bytes, or with a k/m/g suffix (powers of 1024).
    pub memory: Option<String>,
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

pub async fn update(cri: &mut Cri, opts: &UpdateOptions) -> Result<(), ClientError> {
    let memory = opts.memory.as_deref().map(parse_bytes).transpose()?;
    let status = cri.status_of(&opts.id).await?;
    let current = status.resources.and_then(|r| r.linux).unwrap_or_default();
    let linux = overlay(current, opts, memory);
    cri.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: status.id.clone(),
            linux: Some(linux),
            ..Default::default()
        })
        .await
        .map_err(|s| ClientError::rpc("UpdateContainerResources", s))?;
    println!("{}", status.id);
    Ok(())
}

fn overlay(
    mut r: LinuxContainerResources,
    o: &UpdateOptions,
    memory: Option<i64>,
) -> LinuxContainerResources {
    if let Some(v) = memory {
        r.memory_limit_in_bytes = v;
    }
    if let Some(v) = o.cpu_shares {
        r.cpu_shares = v;
    }
    if let Some(v) = o.cpu_quota {
        r.cpu_quota = v;
    }
    if let Some(v) = o.cpu_period {
        r.cpu_period = v;
    }
    if let Some(v) = &o.cpuset_cpus {
        r.cpuset_cpus = v.clone();
    }
    if let Some(v) = &o.cpuset_mems {
        r.cpuset_mems = v.clone();
    }
    r
}

/// `64m`, `1g`, `512k`, `1048576` (powers of 1024, case-insensitive, optional `b`).
pub fn parse_bytes(s: &str) -> Result<i64, ClientError> {
    let bad = || {
        ClientError::Usage(format!(
            "--memory {s:?}: expected bytes, or a number with k, m or g"
        ))
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift)
        .filter(|v| *v >= 0)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        for bad in ["", "m", "-1m", "1t", "1.5g", "99999999999g"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_given_replace_and_the_rest_stays() {
        let current = LinuxContainerResources {
            cpu_shares: 2,
            memory_limit_in_bytes: 1 << 30,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let o = UpdateOptions {
            cpu_quota: Some(50_000),
            ..Default::default()
        };
        let r = overlay(current.clone(), &o, Some(64 << 20));
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!((r.cpu_shares, r.cpuset_cpus.as_str()), (2, "0"));
    }
}
