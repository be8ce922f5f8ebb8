//! `proxrt stats [ID...] [--pods] [-o json]`: ListContainerStats or ListPodSandboxStats,
//! as a table (crictl's columns) or the CRI answer as JSON. Works against any runtime.

use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, ListContainerStatsRequest, ListPodSandboxStatsRequest,
    PodSandboxStats, PodSandboxStatsFilter,
};

use super::images::human_bytes;
use super::table::{short_id, Table};
use super::{ClientError, Cri, Output};

#[derive(Debug, Clone, Default)]
pub struct StatsOptions {
    /// Ids or unique prefixes; empty: every one.
    pub ids: Vec<String>,
    /// Pod stats instead of container stats.
    pub pods: bool,
    pub output: Output,
}

pub async fn stats(cri: &mut Cri, opts: &StatsOptions) -> Result<(), ClientError> {
    match opts.pods {
        false => containers(cri, opts).await,
        true => pods(cri, opts).await,
    }
}

fn selected(ids: &[String], id: &str) -> bool {
    ids.is_empty() || ids.iter().any(|p| id.starts_with(p.as_str()))
}

async fn list_containers(
    cri: &mut Cri,
    ids: &[String],
) -> Result<Vec<ContainerStats>, ClientError> {
    let mut stats: Vec<ContainerStats> = cri
        .runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter::default()),
        })
        .await
        .map_err(|s| ClientError::rpc("ListContainerStats", s))?
        .into_inner()
        .stats
        .into_iter()
        .filter(|s| selected(ids, &id_of(s)))
        .collect();
    stats.sort_by_key(name_of);
    Ok(stats)
}

async fn containers(cri: &mut Cri, opts: &StatsOptions) -> Result<(), ClientError> {
    let mut stats = list_containers(cri, &opts.ids).await?;
    if stats.is_empty() && !opts.ids.is_empty() {
        return Err(ClientError::Usage(format!(
            "no container matches {}",
            opts.ids.join(", ")
        )));
    }
    // A CPU rate needs two readings: a runtime that has not read these containers before
    // reports none, so read once more a second later.
    if opts.output == Output::Table && stats.iter().any(|s| nano_cores(s).is_none()) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        stats = list_containers(cri, &opts.ids).await?;
    }
    match opts.output {
        Output::Json => println!("{}", pretty(&serde_json::json!({ "stats": stats }))),
        Output::Table => print!("{}", container_table(&stats)),
    }
    Ok(())
}

async fn pods(cri: &mut Cri, opts: &StatsOptions) -> Result<(), ClientError> {
    let mut stats: Vec<PodSandboxStats> = cri
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter::default()),
        })
        .await
        .map_err(|s| ClientError::rpc("ListPodSandboxStats", s))?
        .into_inner()
        .stats
        .into_iter()
        .filter(|s| selected(&opts.ids, &pod_id_of(s)))
        .collect();
    if stats.is_empty() && !opts.ids.is_empty() {
        return Err(ClientError::Usage(format!(
            "no pod matches {}",
            opts.ids.join(", ")
        )));
    }
    stats.sort_by_key(pod_id_of);
    match opts.output {
        Output::Json => println!("{}", pretty(&serde_json::json!({ "stats": stats }))),
        Output::Table => print!("{}", pod_table(&stats)),
    }
    Ok(())
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn id_of(s: &ContainerStats) -> String {
    s.attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default()
}

fn name_of(s: &ContainerStats) -> String {
    s.attributes
        .as_ref()
        .and_then(|a| a.metadata.as_ref())
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

fn pod_id_of(s: &PodSandboxStats) -> String {
    s.attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default()
}

fn nano_cores(s: &ContainerStats) -> Option<u64> {
    s.cpu.as_ref()?.usage_nano_cores.map(|v| v.value)
}

/// nanocores as a percentage of one CPU, as crictl prints it.
fn cpu_percent(nano_cores: Option<u64>) -> String {
    match nano_cores {
        Some(n) => format!("{:.2}", n as f64 / 1e7),
        None => "-".into(),
    }
}

fn bytes(v: Option<u64>) -> String {
    v.map(human_bytes).unwrap_or_else(|| "-".into())
}

fn container_table(stats: &[ContainerStats]) -> String {
    let mut t = Table::new(&["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]);
    for s in stats {
        let layer = s.writable_layer.as_ref();
        t.row(vec![
            short_id(&id_of(s)).into(),
            name_of(s),
            cpu_percent(nano_cores(s)),
            bytes(
                s.memory
                    .as_ref()
                    .and_then(|m| m.working_set_bytes)
                    .map(|v| v.value),
            ),
            bytes(layer.and_then(|l| l.used_bytes).map(|v| v.value)),
            layer
                .and_then(|l| l.inodes_used)
                .map(|v| v.value.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

fn pod_table(stats: &[PodSandboxStats]) -> String {
    let mut t = Table::new(&["POD", "NAME", "NAMESPACE", "CPU %", "MEM", "CONTAINERS"]);
    for s in stats {
        let meta = s.attributes.as_ref().and_then(|a| a.metadata.clone());
        let linux = s.linux.as_ref();
        t.row(vec![
            short_id(&pod_id_of(s)).into(),
            meta.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            meta.map(|m| m.namespace).unwrap_or_default(),
            cpu_percent(
                linux
                    .and_then(|l| l.cpu.as_ref())
                    .and_then(|c| c.usage_nano_cores)
                    .map(|v| v.value),
            ),
            bytes(
                linux
                    .and_then(|l| l.memory.as_ref())
                    .and_then(|m| m.working_set_bytes)
                    .map(|v| v.value),
            ),
            linux
                .map(|l| l.containers.len().to_string())
                .unwrap_or_else(|| "0".into()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_reads_as_percent_of_one_cpu() {
        assert_eq!(cpu_percent(Some(250_000_000)), "25.00");
        assert_eq!(cpu_percent(Some(2_000_000_000)), "200.00");
        assert_eq!(cpu_percent(None), "-");
    }

    #[test]
    fn ids_select_by_prefix_and_none_selects_all() {
        assert!(selected(&[], "abc"));
        assert!(selected(&["ab".into()], "abc"));
        assert!(!selected(&["b".into()], "abc"));
    }
}
