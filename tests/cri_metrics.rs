//! ListMetricDescriptors and ListPodSandboxMetrics against a real daemon and cgroups: every
//! metric has its descriptor with as many labels as values, and the figures are the ones
//! the stats RPCs report for the same pod and container.

mod common;

use std::collections::HashMap;

use common::pods::*;
use k8s_cri::v1::{
    ContainerStatsRequest, ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest, Metric,
};

const LIMIT: i64 = 64 << 20;

fn value(metrics: &[Metric], name: &str) -> Option<u64> {
    metrics
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.value)
        .map(|v| v.value)
}

#[tokio::test]
async fn metrics_have_descriptors_and_the_stats_figures() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("metrics")).await;
    let mut config = env.container_config(&pod, "app", &["sleep", "600"]);
    resources(&mut config).memory_limit_in_bytes = LIMIT;
    let app = env.create_start(&pod, config).await;
    let mut rt = env.cri.runtime.clone();

    let descriptors: HashMap<String, Vec<String>> = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name, d.label_keys))
        .collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_spec_memory_limit_bytes",
    ] {
        assert!(descriptors.contains_key(name), "{name}: {descriptors:?}");
    }

    let pods = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert_eq!(pods.len(), 1);
    let p = &pods[0];
    assert_eq!(p.pod_sandbox_id, pod.id);
    assert_eq!(p.container_metrics.len(), 1);
    let c = &p.container_metrics[0];
    assert_eq!(c.container_id, app);
    for m in p.metrics.iter().chain(&c.metrics) {
        let keys = descriptors
            .get(&m.name)
            .unwrap_or_else(|| panic!("no descriptor: {m:?}"));
        assert_eq!(keys.len(), m.label_values.len(), "{m:?}");
        let labels: HashMap<_, _> = keys.iter().zip(&m.label_values).collect();
        assert_eq!(labels[&"namespace".to_string()], "default");
        assert_eq!(
            labels[&"pod".to_string()],
            &pod.config.metadata.as_ref().unwrap().name
        );
    }
    let label = |m: &Metric, key: &str| {
        let keys = &descriptors[&m.name];
        m.label_values[keys.iter().position(|k| k == key).unwrap()].clone()
    };
    assert_eq!(label(&c.metrics[0], "container"), "app");
    assert_eq!(label(&c.metrics[0], "id"), app);

    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: app.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let memory = stats.memory.unwrap();
    assert_eq!(
        value(&c.metrics, "container_spec_memory_limit_bytes"),
        Some(LIMIT as u64)
    );
    assert_eq!(
        value(&c.metrics, "container_memory_working_set_bytes").map(|v| v > 0),
        Some(true)
    );
    // Two readings of an idle `sleep`: the same whole seconds of CPU, close memory.
    let cpu_ns = stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    assert_eq!(
        value(&c.metrics, "container_cpu_usage_seconds_total"),
        Some(cpu_ns / 1_000_000_000)
    );
    let ws = value(&c.metrics, "container_memory_working_set_bytes").unwrap();
    let stats_ws = memory.working_set_bytes.unwrap().value;
    assert!(
        ws.abs_diff(stats_ws) < 4 << 20,
        "metrics {ws}, stats {stats_ws}"
    );
    assert_eq!(value(&c.metrics, "container_processes"), Some(1));
    // The pod's own cgroup holds at least its container.
    assert!(value(&p.metrics, "container_memory_working_set_bytes").is_some());
    env.remove_pod(&pod.id).await.unwrap();
    let pods = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert!(pods.is_empty());
}
