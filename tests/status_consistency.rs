//! Every answer about a container is built from one snapshot of its status.
//!
//! Containers exit (with a code of their own) while other clients call ContainerStatus,
//! ListContainers and ExecSync (which refreshes the daemon's cached status from the
//! monitor's file) in tight loops. No answer may mix "still running" fields with the
//! "exited" state: an EXITED container always carries its finish time and its real exit
//! code, and a container never goes back from EXITED to RUNNING. kubelet's PLEG records
//! exactly the answer it reads at that moment, so a torn one would turn a failed
//! container into "Completed, exit 0" and `restartPolicy: OnFailure` would not restart it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::pods::*;
use k8s_cri::v1::{ContainerState, ContainerStatusRequest, ListContainersRequest};

/// How many containers exit under observation, in rounds of `PER_ROUND` at once.
const ROUNDS: usize = 6;
const PER_ROUND: usize = 6;
/// Busy threads beside the daemon: preemption is what widens a torn read's window
/// from nanoseconds to milliseconds (the flake this test reproduces came from a loaded
/// machine).
const HOGS: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Status,
    List,
    Exec,
}

#[derive(Default, Debug)]
struct Seen {
    exec_calls: usize,
    status_calls: usize,
    list_calls: usize,
    torn: Vec<String>,
}

/// The exit code a container named `exit-<code>-<n>` exits with.
fn code_of(name: &str) -> i32 {
    name.split('-')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exits_are_never_reported_torn() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("torn")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let names: Arc<std::sync::Mutex<HashMap<String, String>>> = Default::default();

    let hogs: Vec<_> = (0..HOGS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();

    // Observers on their own connections: some ask ContainerStatus of every known
    // container, one lists them all, one keeps exec'ing into them, as fast as they can.
    let mut observers = Vec::new();
    for kind in [Kind::Status, Kind::Status, Kind::List, Kind::Exec] {
        let list = kind == Kind::List;
        let mut cri = env.daemon().cri().await;
        let stop = stop.clone();
        let names = names.clone();
        observers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut last: HashMap<String, i32> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let known: Vec<(String, String)> = names
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if kind == Kind::Exec {
                    for (id, _) in known {
                        let _ = cri
                            .runtime
                            .exec_sync(k8s_cri::v1::ExecSyncRequest {
                                container_id: id,
                                cmd: vec!["true".into()],
                                timeout: 5,
                            })
                            .await;
                        seen.exec_calls += 1;
                    }
                } else if list {
                    let r = cri
                        .runtime
                        .list_containers(ListContainersRequest::default())
                        .await
                        .expect("ListContainers")
                        .into_inner();
                    seen.list_calls += 1;
                    for c in r.containers {
                        let prev = last.insert(c.id.clone(), c.state);
                        if prev == Some(ContainerState::ContainerExited as i32)
                            && c.state != ContainerState::ContainerExited as i32
                        {
                            seen.torn.push(format!("list: {} went back from EXITED to {}", c.id, c.state));
                        }
                    }
                } else {
                    for (id, name) in known {
                        let Ok(r) = cri
                            .runtime
                            .container_status(ContainerStatusRequest {
                                container_id: id.clone(),
                                verbose: false,
                            })
                            .await
                        else {
                            continue;
                        };
                        seen.status_calls += 1;
                        let s = r.into_inner().status.expect("status");
                        let prev = last.insert(id.clone(), s.state);
                        if s.state == ContainerState::ContainerExited as i32 {
                            if s.finished_at == 0 || s.exit_code != code_of(&name) {
                                seen.torn.push(format!(
                                    "status: {name} EXITED with finished_at {} exit_code {} reason {:?}",
                                    s.finished_at, s.exit_code, s.reason
                                ));
                            }
                        } else if prev == Some(ContainerState::ContainerExited as i32) {
                            seen.torn.push(format!("status: {name} went back from EXITED to {}", s.state));
                        }
                        if s.state == ContainerState::ContainerRunning as i32 && s.started_at == 0 {
                            seen.torn.push(format!("status: {name} RUNNING with started_at 0"));
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
            seen
        }));
    }

    for round in 0..ROUNDS {
        let mut ids = Vec::new();
        for n in 0..PER_ROUND {
            // Codes 1..=4 and 0: failures and successes, each exiting after a short
            // random-ish delay so the exits land while the observers are mid-answer.
            let code = (round * PER_ROUND + n) % 5;
            let name = format!("exit-{code}-{round}x{n}");
            let cfg = env.container_config(
                &pod,
                &name,
                &[
                    "sh",
                    "-c",
                    &format!("usleep {}; exit {code}", 1000 * (n + 1)),
                ],
            );
            let id = env.create(&pod, cfg).await.expect("CreateContainer");
            names.lock().unwrap().insert(id.clone(), name);
            ids.push(id);
        }
        for id in &ids {
            env.start_container(id).await.expect("StartContainer");
        }
        for id in &ids {
            let s = env.wait_exit(id).await;
            let name = names.lock().unwrap()[id].clone();
            assert_eq!(s.exit_code, code_of(&name), "{name}: {s:?}");
        }
        for id in &ids {
            names.lock().unwrap().remove(id);
            env.remove_container(id).await.expect("RemoveContainer");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut torn = Vec::new();
    for o in observers {
        let seen = o.await.expect("observer");
        eprintln!(
            "observer: {} ContainerStatus, {} ListContainers, {} ExecSync, {} torn",
            seen.status_calls,
            seen.list_calls,
            seen.exec_calls,
            seen.torn.len()
        );
        torn.extend(seen.torn);
    }
    for h in hogs {
        h.join().expect("hog");
    }
    assert!(torn.is_empty(), "torn answers:\n{}", torn.join("\n"));
    env.remove_pod(&pod.id).await.unwrap();
}
