//! Criterion benches of CreateContainer's and ListContainers' hot path, on the daemon's own
//! functions (`proxrt::bench_api`): `cargo bench --bench hot_path` (root: the bundle case
//! mounts overlays). What whole RPCs cost against a live daemon is `proxrt bench`'s job
//! (docs/benchmarks.md).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use proxrt::bench_api::{self, BundleCase, ContainerList, SpecCase};

fn translation(c: &mut Criterion) {
    let case = SpecCase::typical();
    c.bench_function("cri_to_oci/spec", |b| b.iter(|| case.spec().expect("spec")));
    c.bench_function("cri_to_oci/spec_and_json", |b| {
        b.iter(|| case.config_json().expect("config.json"))
    });
}

fn bundle(c: &mut Criterion) {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("bundle/overlay: skipped (mounting overlays needs root)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("proxrt-bench-bundle")
        .tempdir()
        .expect("temp dir");
    let case = BundleCase::new(dir.path(), 5).expect("layers");
    let mut n = 0;
    c.bench_function("bundle/overlay_5_layers", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let t = Instant::now();
                let made = case.make(n).expect("bundle");
                spent += t.elapsed();
                case.remove(&made).expect("remove bundle");
            }
            spent
        })
    });
}

fn store(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("proxrt-bench-store")
        .tempdir()
        .expect("temp dir");
    let record = bench_api::container_record(1);
    let path = dir.path().join("container.json");
    c.bench_function("store/record_write_read", |b| {
        b.iter(|| bench_api::store_round_trip(&path, &record).expect("round trip"))
    });
}

fn list(c: &mut Criterion) {
    let list = ContainerList::running(1000);
    c.bench_function("list_containers/1000_all", |b| b.iter(|| list.list_all()));
    c.bench_function("list_containers/1000_all_encoded", |b| {
        b.iter(|| list.list_all_encoded())
    });
    c.bench_function("list_containers/1000_running_labelled", |b| {
        b.iter(|| list.list_running_labelled())
    });
}

criterion_group!(benches, translation, bundle, store, list);
criterion_main!(benches);
