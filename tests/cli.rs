//! The debugging CLI end to end: the real `proxrt` binary against a real daemon, as a
//! user on a host without kubelet drives it (import an image, make a pod and a
//! container, look at them, exec, read the log, tear down, `proxrt run`).
//!
//! Skipped (passing) when not run as root: pods need namespaces, mounts and cgroups.

mod common;

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{busybox_layout, output_within, proxrt_bin, TestDaemon};

const BUSYBOX: &str = "docker.io/library/busybox:latest";
/// Generous: a CLI call that hangs should fail the test, not hang it.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn proxrt(d: &TestDaemon, args: &[&str]) -> Output {
    output_within(
        Command::new(proxrt_bin())
            .arg("--endpoint")
            .arg(d.endpoint())
            .args(args),
        CALL_TIMEOUT,
    )
}

/// Runs a command that must succeed; returns its stdout.
fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = proxrt(d, args);
    assert!(
        out.status.success(),
        "proxrt {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// The data rows of a `pods`/`ps` table (header dropped), split into columns.
fn rows(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().expect("a table has a header");
    assert!(
        header.starts_with("ID") || header.starts_with("CONTAINER"),
        "header: {header}"
    );
    lines
        .map(|l| {
            l.split("   ")
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

#[test]
fn pod_and_container_lifecycle_through_the_cli() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = TestDaemon::start();
    let layout = busybox_layout();
    let imported = ok(&d, &["image", "import", layout.to_str().unwrap()]);
    assert!(imported.contains(BUSYBOX), "{imported}");
    assert!(ok(&d, &["images"]).contains("docker.io/library/busybox"));

    // A crictl-style pod config naming only some fields.
    let logs = d.dir().join("pod-logs");
    let pod_json = d.dir().join("pod.json");
    fs::write(
        &pod_json,
        serde_json::json!({
            "metadata": {"name": "cli", "namespace": "test", "uid": "cli-uid"},
            "log_directory": logs,
            "labels": {"app": "cli"},
            "linux": {"security_context": {"namespace_options": {"pid": 1}}},
        })
        .to_string(),
    )
    .unwrap();
    let pod = ok(&d, &["runp", pod_json.to_str().unwrap()])
        .trim()
        .to_owned();
    assert_eq!(pod.len(), 64, "runp prints the pod id: {pod:?}");
    let pods = rows(&ok(&d, &["pods", "--label", "app=cli"]));
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0][..4], [&pod[..13], "cli", "test", "Ready"]);
    assert!(ok(&d, &["pods", "--state", "notready", "-q"]).is_empty());

    // Flags; the pod by a prefix. The trap makes it exit 0 on SIGTERM (pid 1 has no
    // default action for it).
    let script =
        "trap 'exit 0' TERM; echo to-stdout; echo to-stderr >&2; while true; do sleep 0.1; done";
    let ctr = ok(
        &d,
        &[
            "create",
            &pod[..12],
            "--name",
            "main",
            "--image",
            BUSYBOX,
            "-e",
            "GREETING=hello",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .trim()
    .to_owned();
    assert_eq!(ctr.len(), 64, "create prints the container id: {ctr:?}");
    assert!(
        ok(&d, &["ps", "-q"]).is_empty(),
        "a created container is not listed without -a"
    );
    let ps = rows(&ok(&d, &["ps", "-a"]));
    assert_eq!(
        ps[0],
        [
            &ctr[..13],
            BUSYBOX,
            &ps[0][2],
            "Created",
            "main",
            &pod[..13]
        ]
    );

    assert_eq!(ok(&d, &["start", &ctr[..10]]).trim(), &ctr[..10]);
    let ps = rows(&ok(&d, &["ps", "--pod", &pod]));
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0][3], "Running");

    // The log: each stream to its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = proxrt(&d, &["logs", &ctr]);
        if String::from_utf8_lossy(&out.stderr).contains("to-stderr") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    assert!(
        logs.join("main/0.log").exists(),
        "log path defaults to <name>/0.log in the pod's log_directory"
    );

    // exec: output and exit code come back.
    let out = proxrt(
        &d,
        &[
            "exec",
            &ctr,
            "--",
            "sh",
            "-c",
            "echo $GREETING from exec; echo oops >&2; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from exec\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let out = proxrt(&d, &["--timeout", "1", "exec", &ctr, "--", "sleep", "30"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "exec --timeout kills the command"
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&d, &["inspect", &ctr])).expect("inspect prints JSON");
    assert_eq!(inspect["status"]["id"], ctr.as_str());
    assert_eq!(inspect["info"]["sandboxId"], pod.as_str());
    let inspectp: serde_json::Value =
        serde_json::from_str(&ok(&d, &["inspectp", &pod])).expect("inspectp prints JSON");
    assert_eq!(inspectp["status"]["metadata"]["name"], "cli");

    // A second container from a JSON config naming only some fields.
    let ctr_json = d.dir().join("ctr.json");
    fs::write(
        &ctr_json,
        serde_json::json!({"metadata": {"name": "json"}, "image": {"image": BUSYBOX}, "command": ["true"]}).to_string(),
    )
    .unwrap();
    let second = ok(&d, &["create", &pod, ctr_json.to_str().unwrap()])
        .trim()
        .to_owned();
    assert_eq!(rows(&ok(&d, &["ps", "--state", "created"]))[0][4], "json");
    ok(&d, &["rm", &second]);

    ok(&d, &["stop", "-t", "10", &ctr]);
    let ps = rows(&ok(&d, &["ps", "-a"]));
    assert_eq!(ps[0][3], "Exited", "{ps:?}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&d, &["inspect", &ctr])).unwrap();
    assert_eq!(
        inspect["status"]["exit_code"], 0,
        "the trap exits 0 on SIGTERM"
    );
    ok(&d, &["rm", &ctr]);
    assert!(ok(&d, &["ps", "-a", "-q"]).is_empty());

    // Errors name the RPC and the gRPC code, and exit 1.
    let out = proxrt(&d, &["inspect", &ctr]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("proxrt: ContainerStatus: NotFound: "),
        "{stderr}"
    );

    ok(&d, &["stopp", &pod]);
    assert_eq!(rows(&ok(&d, &["pods"]))[0][3], "NotReady");
    ok(&d, &["rmp", &pod]);
    assert!(ok(&d, &["pods", "-q"]).is_empty());

    // A pod from flags, removed while ready with -f.
    let flagged = ok(&d, &["runp", "--name", "flagged", "--label", "k=v"])
        .trim()
        .to_owned();
    assert_eq!(rows(&ok(&d, &["pods", "--label", "k=v"]))[0][1], "flagged");
    ok(&d, &["rmp", "-f", &flagged]);
    assert!(ok(&d, &["pods", "-q"]).is_empty());

    // `proxrt run`: output streamed, the exit code passed on, nothing left behind.
    let out = proxrt(
        &d,
        &[
            "run",
            "--image",
            BUSYBOX,
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(ok(&d, &["pods", "-q"]).is_empty());
    assert!(ok(&d, &["ps", "-a", "-q"]).is_empty());
}

/// `proxrt health` runs the CRI Status call and answers with its exit code.
fn health(endpoint: &str) -> Output {
    output_within(
        Command::new(proxrt_bin())
            .arg("--endpoint")
            .arg(endpoint)
            .arg("health"),
        CALL_TIMEOUT,
    )
}

#[test]
fn health_exits_0_when_ready_and_says_why_not_otherwise() {
    let d = TestDaemon::start();
    let out = health(&d.endpoint());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("RuntimeReady"));

    // A default backend that cannot create containers here (no [proxmox] endpoints, or
    // not implemented yet in this build) makes the runtime not ready.
    let unready = TestDaemon::start_with("[runtime]\ndefault_backend = \"proxmox-lxc\"\n");
    let out = health(&unready.endpoint());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runtime not ready: DefaultBackendUnavailable")
            && stderr.contains("the default backend proxmox-lxc cannot create containers"),
        "{stderr}"
    );

    // No daemon at all: the socket is absent.
    let missing = d.dir().join("no-such.sock");
    let out = health(&format!("unix://{}", missing.display()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect") && stderr.contains("no-such.sock"),
        "{stderr}"
    );
}

/// A running `proxrt events`: its stdout lines as they come.
struct EventsCommand {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl EventsCommand {
    /// Starts `proxrt events ARGS` and waits until it says it is watching (the runtime
    /// has subscribed it: everything after this is shown).
    fn start(d: &TestDaemon, args: &[&str]) -> EventsCommand {
        use std::io::BufRead;
        let mut child = Command::new(proxrt_bin())
            .arg("--endpoint")
            .arg(d.endpoint())
            .arg("events")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(first.contains("watching"), "events said: {first:?}");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        EventsCommand { child, lines }
    }

    /// Lines until one contains `last` (a hang guard of a minute per line).
    fn until(&self, last: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("no event line ({e}) after {out:#?}"));
            let done = line.contains(last);
            out.push(line);
            if done {
                return out;
            }
        }
    }

    /// Ctrl-C: the command ends with success.
    fn interrupt(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "events after Ctrl-C: {status}");
    }
}

#[test]
fn stats_update_and_events_through_the_cli() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = TestDaemon::start();
    let layout = busybox_layout();
    ok(&d, &["image", "import", layout.to_str().unwrap()]);
    let table = EventsCommand::start(&d, &[]);
    let json = EventsCommand::start(&d, &["-o", "json"]);

    let pod = ok(&d, &["runp", "--name", "obs"]).trim().to_owned();
    let ctr = ok(
        &d,
        &[
            "create", &pod, "--name", "app", "--image", BUSYBOX, "--", "sleep", "600",
        ],
    )
    .trim()
    .to_owned();
    ok(&d, &["start", &ctr]);

    // update: the flags given change, ContainerStatus shows them.
    assert_eq!(
        ok(
            &d,
            &[
                "update",
                &ctr[..12],
                "--memory",
                "64m",
                "--cpu-quota",
                "20000",
                "--cpu-period",
                "100000"
            ]
        )
        .trim(),
        ctr
    );
    let inspect: serde_json::Value = serde_json::from_str(&ok(&d, &["inspect", &ctr])).unwrap();
    let linux = &inspect["status"]["resources"]["linux"];
    assert_eq!(linux["memory_limit_in_bytes"], 64 << 20, "{linux}");
    assert_eq!(linux["cpu_quota"], 20000, "{linux}");
    ok(&d, &["update", &ctr, "--cpu-shares", "512"]);
    let inspect: serde_json::Value = serde_json::from_str(&ok(&d, &["inspect", &ctr])).unwrap();
    let linux = &inspect["status"]["resources"]["linux"];
    assert_eq!(
        (&linux["cpu_shares"], &linux["memory_limit_in_bytes"]),
        (&serde_json::json!(512), &serde_json::json!(64 << 20)),
        "what is not given stays: {linux}"
    );
    let out = proxrt(&d, &["update", &ctr, "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory"));
    let out = proxrt(&d, &["update", &"f".repeat(64), "--memory", "64m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    // stats: the table, JSON, pods, an id that matches nothing.
    let stats = ok(&d, &["stats"]);
    let mut lines = stats.lines();
    assert!(lines.next().unwrap().starts_with("CONTAINER"), "{stats}");
    let row = lines.next().expect("a row for the container");
    assert!(
        row.starts_with(&ctr[..13]) && row.contains("app"),
        "{stats}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&d, &["stats", &ctr[..8], "-o", "json"])).unwrap();
    let s = &stats["stats"][0];
    assert_eq!(s["attributes"]["id"], ctr.as_str());
    assert!(
        s["memory"]["working_set_bytes"]["value"].as_u64().unwrap() > 0,
        "{s}"
    );
    let pods = ok(&d, &["stats", "--pods"]);
    assert!(pods.lines().next().unwrap().starts_with("POD"), "{pods}");
    assert!(pods.contains(&pod[..13]) && pods.contains("obs"), "{pods}");
    let out = proxrt(&d, &["stats", "nosuchid"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container matches"));

    ok(&d, &["rmp", "--force", &pod]);

    let seen = table.until(&format!("deleted pod {}", &pod[..13]));
    let kinds: Vec<String> = seen
        .iter()
        .map(|l| l.split(' ').skip(1).take(3).collect::<Vec<_>>().join(" "))
        .collect();
    let (p, c) = (&pod[..13], &ctr[..13]);
    assert_eq!(
        kinds,
        [
            format!("created pod {p}"),
            format!("started pod {p}"),
            format!("created container {c}"),
            format!("started container {c}"),
            format!("stopped container {c}"),
            format!("stopped pod {p}"),
            format!("deleted container {c}"),
            format!("deleted pod {p}"),
        ]
    );
    assert!(seen[2].ends_with(" app default/obs"), "{}", seen[2]);
    table.interrupt();

    let seen = json.until(&format!(
        "\"container_id\":\"{pod}\",\"container_event_type\":3"
    ));
    assert_eq!(seen.len(), 8, "{seen:#?}");
    let started: serde_json::Value = serde_json::from_str(&seen[3]).unwrap();
    assert_eq!(started["container_id"], ctr.as_str());
    assert_eq!(started["pod_sandbox_status"]["id"], pod.as_str());
    assert_eq!(started["containers_statuses"][0]["state"], 1, "running");
    json.interrupt();
}
