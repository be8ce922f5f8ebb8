//! CNI networking with the real plugins (Debian's containernetworking-plugins) and real
//! network namespaces: pods on a bridge reach each other, a hostPort reaches a container,
//! teardown after kill -9 of the daemon leaves nothing, a failing plugin leaves nothing,
//! NetworkReady follows the config dir, DEL is idempotent, UpdateRuntimeConfig's pod
//! CIDR reaches the config.
//!
//! Each test runs its daemon inside a network namespace of its own (`ip netns add`), so
//! the bridge (`prx<pid><tag>`), its 10.x subnet, the iptables rules and the sysctls the
//! plugins set (the bridge plugin turns on ip_forward) never touch the host's network;
//! dropping the namespace at the end removes whatever a failed test left.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::pods::*;
use common::temp_dir;
use k8s_cri::v1::{
    NamespaceMode, NetworkConfig, PortMapping, Protocol, RuntimeConfig, StatusRequest,
    UpdateRuntimeConfigRequest,
};
use tempfile::TempDir;
use tonic::Code;

/// The shared chains portmap makes once per namespace and never removes (containerd's
/// hosts keep them too); every other `CNI-` chain belongs to one pod.
const SHARED_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

/// How long a container's server may take to answer (it is polled, never timed).
const SERVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A test's network: its namespace, bridge, subnet, config dir, plugin dir, IPAM dir.
struct Net {
    /// The network's name in the config (the iptables rules' comments carry it).
    name: String,
    /// `ip netns` name; the daemon runs in it.
    ns: String,
    bridge: String,
    /// `10.a.b`: the subnet is `10.a.b.0/24`, the gateway `10.a.b.1`.
    prefix: String,
    dir: TempDir,
}

impl Net {
    fn new(tag: char) -> Net {
        let pid = std::process::id();
        let net = Net {
            name: format!("prxtest-{pid}-{tag}"),
            ns: format!("prxcni{pid}{tag}"),
            bridge: format!("prx{pid}{tag}"),
            prefix: format!("10.{}.{}", (pid >> 8) & 0xff, pid & 0xff),
            dir: temp_dir("proxrt-cni-"),
        };
        assert!(
            net.bridge.len() <= 15,
            "bridge name {} too long",
            net.bridge
        );
        run_ok(Command::new("ip").args(["netns", "add", &net.ns]));
        net.exec_ok(&["ip", "link", "set", "lo", "up"]);
        for d in ["conf", "bin", "data"] {
            fs::create_dir_all(net.dir.path().join(d)).expect("mkdir");
        }
        net
    }

    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ns)
    }
    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }
    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// The `[cni]` table of the daemon's config.
    fn toml(&self) -> String {
        format!(
            "[cni]\nconf_dir = {:?}\nbin_dirs = [\"/usr/lib/cni\", {:?}]\n",
            self.conf_dir().display().to_string(),
            self.bin_dir().display().to_string()
        )
    }

    /// bridge (gateway, masquerade) + host-local in the temp dir + portmap, then `extra`
    /// plugins (JSON objects).
    fn conflist(&self, extra: &[&str]) -> String {
        let mut plugins = vec![
            format!(
                r#"{{"type":"bridge","bridge":"{}","isGateway":true,"ipMasq":true,"hairpinMode":true,
                "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{}.0/24"}}]],
                "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":{:?}}}}}"#,
                self.bridge,
                self.prefix,
                self.dir.path().join("data").display().to_string()
            ),
            r#"{"type":"portmap","capabilities":{"portMappings":true},"snat":true}"#.into(),
        ];
        plugins.extend(extra.iter().map(|s| s.to_string()));
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{}","plugins":[{}]}}"#,
            self.name,
            plugins.join(",")
        )
    }

    fn write_config(&self, file: &str, text: &str) {
        fs::write(self.conf_dir().join(file), text).expect("write cni config");
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The veths on the bridge (none once every pod is gone; no bridge: none).
    fn veths(&self) -> Vec<String> {
        let out = self.exec(&["ip", "-o", "link", "show", "master", &self.bridge]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// host-local's allocation files (one per address in use).
    fn allocations(&self) -> Vec<String> {
        let dir = self.dir.path().join("data").join(&self.name);
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// nat-table lines that belong to a pod: its chains, and rules naming this network.
    fn pod_rules(&self) -> Vec<String> {
        let nat = self.exec_ok(&["iptables-save", "-t", "nat"]);
        nat.lines()
            .filter(|l| {
                let own_chain = l.starts_with(":CNI-")
                    && !SHARED_CHAINS
                        .iter()
                        .any(|c| l.starts_with(&format!(":{c} ")));
                own_chain || l.contains(&self.name)
            })
            .map(str::to_owned)
            .collect()
    }

    fn assert_clean(&self, context: &str) {
        assert_eq!(self.veths(), Vec::<String>::new(), "{context}: veths left");
        assert_eq!(
            self.allocations(),
            Vec::<String>::new(),
            "{context}: host-local allocations left"
        );
        assert_eq!(
            self.pod_rules(),
            Vec::<String>::new(),
            "{context}: iptables left"
        );
    }

    /// An HTTP GET of `/` from the daemon's namespace (the "host" of the pods), retried
    /// until the server answers.
    fn http_get(&self, addr: SocketAddr) -> String {
        self.http_get_path(addr, "/")
    }

    fn http_get_path(&self, addr: SocketAddr, path: &str) -> String {
        let ns = self.netns_path();
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        std::thread::spawn(move || {
            let file = fs::File::open(&ns).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let deadline = Instant::now() + SERVE_TIMEOUT;
            loop {
                let attempt = (|| -> std::io::Result<String> {
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(request.as_bytes())?;
                    let mut body = String::new();
                    s.read_to_string(&mut body)?;
                    Ok(body)
                })();
                match attempt {
                    Ok(body) if body.contains("200 OK") => return body,
                    r if Instant::now() > deadline => panic!("GET http://{addr}/: {r:?}"),
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })
        .join()
        .expect("http thread")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Takes the bridge, every veth left and every rule with it.
        let _ = self.exec(&["ip", "link", "del", &self.bridge]);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container serving `hello-<name>` over HTTP on :8080 (busybox httpd).
fn web_server(env: &PodEnv, pod: &Pod, name: &str) -> k8s_cri::v1::ContainerConfig {
    let script = format!(
        "mkdir -p /www && echo hello-{name} > /www/index.html && exec httpd -f -p 8080 -h /www"
    );
    env.container_config(pod, name, &["sh", "-c", &script])
}

async fn pod_ip(env: &mut PodEnv, id: &str) -> String {
    let status = env.pod_status(id).await.expect("PodSandboxStatus");
    status.network.expect("network status").ip
}

/// Whether the pod's ADD was done in-process (the fast path), from the verbose status.
async fn added_in_process(env: &mut PodEnv, id: &str) -> bool {
    let r = env
        .cri
        .runtime
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus verbose")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).expect("info JSON");
    info["network"]["inProcess"]
        .as_bool()
        .unwrap_or_else(|| panic!("no inProcess in {info}"))
}

async fn network_ready(env: &mut PodEnv) -> (bool, String, String) {
    let status = env
        .cri
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let c = status
        .status
        .expect("runtime status")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady condition");
    (c.status, c.reason, c.message)
}

/// A pod's intent is on disk before CNI allocates its address (which outlives a host
/// crash: the intent is what the start after one undoes it from), while the fsync runs
/// beside the pod's namespaces being made: with that fsync slowed down (a failpoint,
/// `--features failpoints` as hack/test builds), strace (not proxrt) on the daemon sees
/// the fsync of `intent.json` before the first open in host-local's data dir, and the
/// pod's record fsync'd (after the answer) before its intent goes.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_pods_intent_is_on_disk_before_its_address_is_allocated() {
    let net = Net::new('i');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    env.daemon_mut()
        .set_env("FAILPOINTS", Some("run_pod_sandbox.intent_sync=sleep(300)"));
    env.restart().await;
    let daemon = env.daemon().pid().expect("daemon running");
    let out = env.daemon().dir().join("strace-intent.out");
    let strace = common::Strace::attach(daemon, "fsync,openat,unlink", &out).await;
    let pod = env.run_pod(env.pod_config("intent")).await;
    let state_dir = env.daemon().root.join("sandboxes").join(&pod.id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_dir.join("intent.json").exists() {
        assert!(Instant::now() < deadline, "the intent stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let trace = strace.finish();
    let lines: Vec<&str> = trace.lines().collect();
    let at = |what: &str, pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("no {what} in the trace:\n{trace}"))
    };
    let data_dir = net.dir.path().join("data").display().to_string();
    let intent_synced = at("fsync of the intent", &|l| {
        l.contains("fsync(") && l.contains("/intent.json>")
    });
    let allocated = at("open in host-local's data dir", &|l| {
        l.contains("openat(") && l.contains(&data_dir)
    });
    assert!(
        intent_synced < allocated,
        "allocated before the intent was on disk:\n{trace}"
    );
    let record_synced = at("fsync of the record", &|l| {
        l.contains("fsync(") && l.contains("/sandbox.json>")
    });
    let intent_gone = at("unlink of the intent", &|l| {
        l.contains("unlink(") && l.contains("/intent.json")
    });
    assert!(
        record_synced < intent_gone,
        "the intent went before the record was on disk:\n{trace}"
    );
    assert_eq!(net.allocations().len(), 1);
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_reach_each_other_over_the_bridge() {
    let net = Net::new('a');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let toml = format!("{}[metrics]\naddress = \"127.0.0.1:0\"\n", net.toml());
    let mut env = PodEnv::start_in_netns(&toml, &net.netns_path()).await;

    let web = env.run_pod(env.pod_config("web")).await;
    let client = env.run_pod(env.pod_config("client")).await;
    let web_ip = pod_ip(&mut env, &web.id).await;
    let client_ip = pod_ip(&mut env, &client.id).await;
    for ip in [&web_ip, &client_ip] {
        assert!(ip.starts_with(&format!("{}.", net.prefix)), "pod IP {ip}");
    }
    assert_ne!(web_ip, client_ip);
    assert_eq!(net.allocations().len(), 2);
    // The standard config: ADD in-process; DEL (below) the plugins'.
    assert!(added_in_process(&mut env, &web.id).await);

    env.create_start(&web, web_server(&env, &web, "web")).await;
    let sleeper = env.container_config(&client, "sleeper", &["sleep", "300"]);
    let sleeper = env.create_start(&client, sleeper).await;
    // The client pod's own address and hostname in its /etc/hosts.
    let hosts = env.exec_ok(&sleeper, &["cat", "/etc/hosts"]).await;
    assert!(hosts.contains(&format!("{client_ip}\tclient\n")), "{hosts}");
    // busybox-static's wget crashes in glibc's static resolver; nc does not resolve.
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {web_ip} 8080");
    let deadline = Instant::now() + SERVE_TIMEOUT;
    let body = loop {
        let r = env
            .try_exec(&sleeper, &["sh", "-c", &fetch], 10)
            .await
            .expect("ExecSync nc");
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        if r.exit_code == 0 && out.contains("200 OK") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "{fetch} in the client pod: {out} {}",
            String::from_utf8_lossy(&r.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.trim_end().ends_with("\r\n\r\nhello-web"), "{body}");

    for pod in [&web, &client] {
        env.stop_pod(&pod.id).await.expect("StopPodSandbox");
        // Stopped: no address any more (DEL ran).
        assert_eq!(pod_ip(&mut env, &pod.id).await, "");
        env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    }
    net.assert_clean("after removing both pods");
    // Both ADDs and both DELs in-process, as the metrics count them.
    let metrics = net.http_get_path(metrics_addr(&env), "/metrics");
    for command in ["add", "del"] {
        let series = format!(
            "proxrt_cni_operations_total{{command=\"{command}\",path=\"in_process\",outcome=\"success\"}} 2"
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    assert!(!metrics.contains("path=\"plugins\""), "{metrics}");
}

/// Where a daemon serves its metrics (`proxrt info`), in its namespace.
fn metrics_addr(env: &PodEnv) -> SocketAddr {
    let out = common::output_within(
        Command::new(common::proxrt_bin())
            .arg("--endpoint")
            .arg(format!("unix://{}", env.daemon().socket.display()))
            .arg("info"),
        Duration::from_secs(60),
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info is JSON");
    let url = info["metrics"].as_str().expect("metrics URL in info");
    url.trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn host_port_reaches_the_container() {
    let net = Net::new('b');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let mut config = env.pod_config("ported");
    let host_port = 18080;
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let pod = env.run_pod(config).await;
    // Port mappings are portmap's work: the plugins run.
    assert!(!added_in_process(&mut env, &pod.id).await);
    env.create_start(&pod, web_server(&env, &pod, "ported"))
        .await;
    // The node's address on the bridge: a local address, so portmap's DNAT in OUTPUT
    // applies, and the reply routes back over the bridge. 127.0.0.1 would need
    // route_localnet on the bridge.
    let addr: SocketAddr = format!("{}:{host_port}", net.gateway()).parse().unwrap();
    let body = net.http_get(addr);
    assert!(body.contains("hello-ported"), "{body}");
    assert!(
        net.pod_rules().iter().any(|l| l.contains("--dports 18080")),
        "portmap's DNAT rule: {:?}",
        net.pod_rules()
    );
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    net.assert_clean("after RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_after_kill9_of_the_daemon_leaves_nothing() {
    let net = Net::new('c');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let mut config = env.pod_config("survivor");
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 18081,
        host_ip: String::new(),
    }];
    let pod = env.run_pod(config).await;
    let sleeper = env.container_config(&pod, "sleeper", &["sleep", "300"]);
    env.create_start(&pod, sleeper).await;
    let ip = pod_ip(&mut env, &pod.id).await;
    assert_eq!(net.veths().len(), 1);
    assert!(!net.pod_rules().is_empty());

    env.kill9();
    // The config changes while the daemon is down: DEL must use what ADD used.
    fs::remove_file(net.conf_dir().join("10-test.conflist")).unwrap();
    env.restart().await;
    assert_eq!(pod_ip(&mut env, &pod.id).await, ip, "IP after a restart");
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.stop_pod(&pod.id).await.expect("StopPodSandbox again");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    net.assert_clean("after kill -9, restart, stop, remove");
}

/// A daemon killed between CNI ADD and the sandbox record (issue 12, item 8; the crash
/// point exists only with `--features failpoints`, as hack/test builds): the next start
/// runs DEL from the pod's intent, so the veth, the host-local address and the portmap
/// rules are gone before anything is served, and the same pod can be made again.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_after_add_releases_the_network_at_start() {
    use std::os::unix::process::ExitStatusExt;
    let net = Net::new('k');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let mut config = env.pod_config("killed");
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 18089,
        host_ip: String::new(),
    }];
    env.daemon_mut()
        .set_env("FAILPOINTS", Some("run_pod_sandbox.network=return"));
    env.restart().await;
    let call = env.try_run_pod(config.clone()).await;
    assert!(call.is_err(), "RunPodSandbox answered: {call:?}");
    let status = env
        .daemon_mut()
        .wait_exited(SERVE_TIMEOUT)
        .expect("the daemon dies at the crash point");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_eq!(net.allocations().len(), 1, "ADD ran before the kill");
    assert_eq!(net.veths().len(), 1, "ADD ran before the kill");
    assert!(!net.pod_rules().is_empty(), "ADD ran before the kill");

    env.daemon_mut().set_env("FAILPOINTS", None);
    env.restart().await;
    assert!(env.list_pods(Default::default()).await.is_empty());
    net.assert_clean("after a kill between ADD and the record, and a restart");

    let pod = env.run_pod(config).await;
    assert!(pod_ip(&mut env, &pod.id).await.starts_with(&net.prefix));
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    net.assert_clean("after the same pod again");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_after_the_holder_or_the_netns_is_gone_still_releases_the_network() {
    let net = Net::new('d');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let mut pods = Vec::new();
    for (name, port) in [("held", 18082), ("orphan", 18083)] {
        let mut config = env.pod_config(name);
        config.port_mappings = vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 80,
            host_port: port,
            host_ip: String::new(),
        }];
        pods.push(env.run_pod(config).await);
    }
    assert_eq!(net.allocations().len(), 2);

    // The daemon dies and so do both holders (pods without containers: nothing else is
    // in their namespaces). "held" keeps its netns file (the bind mount holds the
    // namespace); "orphan" loses it too, as after a reboot of the node.
    env.kill9();
    for pod in &pods {
        let record: serde_json::Value = serde_json::from_slice(
            &fs::read(
                env.daemon()
                    .root
                    .join("sandboxes")
                    .join(&pod.id)
                    .join("sandbox.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let holder = record["holder_pid"].as_i64().expect("holder pid") as i32;
        assert_eq!(comm(holder), "proxrt-pause");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let orphan_netns = env
        .daemon()
        .run_dir
        .join("s")
        .join(&pods[1].id[..16])
        .join("ns")
        .join("net");
    nix::mount::umount2(&orphan_netns, nix::mount::MntFlags::MNT_DETACH).expect("unmount netns");
    env.restart().await;
    for pod in &pods {
        env.stop_pod(&pod.id).await.expect("StopPodSandbox");
        env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    }
    assert_eq!(net.veths(), Vec::<String>::new(), "veths left");
    assert_eq!(net.allocations(), Vec::<String>::new(), "addresses left");
    // DEL without a netns: portmap removes its rules; the bridge plugin (1.1) can only
    // find its masquerade rules through the pod's interface, so those of "orphan" stay
    // (on a rebooted node iptables is empty anyway). Nothing else may stay.
    let left = net.pod_rules();
    let masq_chains: Vec<String> = left
        .iter()
        .filter(|l| l.starts_with("-A POSTROUTING") && l.contains(&pods[1].id))
        .filter_map(|l| l.rsplit(" -j ").next().map(str::to_owned))
        .collect();
    let unexpected: Vec<&String> = left
        .iter()
        .filter(|l| {
            let of_orphan_masq = l.contains(&pods[1].id) && !l.contains("dnat");
            let its_chain = masq_chains.iter().any(|c| l.starts_with(&format!(":{c} ")));
            !(of_orphan_masq || its_chain)
        })
        .collect();
    assert!(unexpected.is_empty(), "iptables left: {unexpected:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_plugin_gives_a_clear_error_and_leaves_nothing() {
    let net = Net::new('e');
    // A plugin that refuses ADD with a spec error object and accepts DEL.
    let plugin = net.bin_dir().join("refuse");
    fs::write(
        &plugin,
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"test plugin refuses\",\"details\":\"by design\"}'\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
    net.write_config("10-test.conflist", &net.conflist(&[r#"{"type":"refuse"}"#]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let before = env.settled_snapshot().await;

    let mut config = env.pod_config("doomed");
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18083,
        host_ip: String::new(),
    }];
    let err = env.try_run_pod(config.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message()
            .contains("CNI plugin refuse ADD failed: test plugin refuses (by design)"),
        "{}",
        err.message()
    );
    assert!(err.message().contains(&net.name), "{}", err.message());
    net.assert_clean("after a failed ADD");
    env.assert_back_to(&before, "after a failed ADD").await;
    assert!(env.list_pods(Default::default()).await.is_empty());
    // The name is free again: the same pod runs once the config is fixed.
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let pod = env.run_pod(config).await;
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    net.assert_clean("after the retry's removal");
}

/// A fast-path ADD that fails after it allocated and wired the pod (the bridge already
/// holds another address, which the bridge plugin refuses too) fails RunPodSandbox with
/// the plugin's words, and the plugins' DEL takes back all it made; with the fast path
/// off the plugins fail the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_fast_path_add_is_undone_and_says_what_the_plugin_says() {
    let net = Net::new('i');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    net.exec_ok(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
    net.exec_ok(&["ip", "addr", "add", "192.168.250.1/24", "dev", &net.bridge]);
    for fast_path in [true, false] {
        let toml = format!("{}fast_path = {fast_path}\n", net.toml());
        let mut env = PodEnv::start_in_netns(&toml, &net.netns_path()).await;
        let err = env
            .try_run_pod(env.pod_config(&format!("clash-{fast_path}")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        let plugin = if fast_path {
            "bridge (in-process)"
        } else {
            "bridge"
        };
        assert!(
            err.message()
                .contains(&format!("CNI plugin {plugin} ADD failed"))
                && err.message().contains(&format!(
                    "{:?} already has an IP address different from {}/24",
                    net.bridge,
                    net.gateway()
                )),
            "fast_path {fast_path}: {}",
            err.message()
        );
        net.assert_clean(&format!("after a failed ADD, fast_path {fast_path}"));
        assert!(env.list_pods(Default::default()).await.is_empty());
    }
}

/// Eight pods attached and detached at once on a bridge that does not exist yet: the
/// fast path's races (the bridge and its gateway address made by whichever ADD comes
/// first, host-local's pool under its lock, eight iptables-restores) end with eight
/// distinct addresses, and the DELs at once leave nothing.
#[tokio::test(flavor = "multi_thread")]
async fn pods_attached_and_detached_at_once() {
    let net = Net::new('j');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let configs: Vec<_> = (0..8)
        .map(|i| env.pod_config(&format!("burst-{i}")))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for config in configs {
        let mut client = env.cri.runtime.clone();
        tasks.spawn(async move {
            client
                .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.push(r.expect("task").expect("RunPodSandbox"));
    }
    let mut ips = Vec::new();
    for id in &ids {
        assert!(added_in_process(&mut env, id).await);
        ips.push(pod_ip(&mut env, id).await);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    assert_eq!(net.allocations().len(), 8);
    assert_eq!(net.veths().len(), 8);
    for id in ids.clone() {
        let mut client = env.cri.runtime.clone();
        tasks.spawn(async move {
            client
                .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map(|_| String::new())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("StopPodSandbox");
    }
    for id in &ids {
        env.remove_pod(id).await.expect("RemovePodSandbox");
    }
    net.assert_clean("after eight DELs at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn network_ready_follows_the_config_dir() {
    let net = Net::new('f');
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let (ready, reason, message) = network_ready(&mut env).await;
    assert!(!ready);
    assert_eq!(reason, "NetworkPluginNotReady");
    assert!(
        message.contains(&format!(
            "no network config found in {}",
            net.conf_dir().display()
        )),
        "{message}"
    );
    // Pods with their own netns cannot run; host-network pods can.
    let err = env.try_run_pod(env.pod_config("early")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let mut host = env.pod_config("hostnet");
    pod_security(&mut host)
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let host_pod = env.run_pod(host).await;
    assert_eq!(pod_ip(&mut env, &host_pod.id).await, "");

    // A config that is not valid keeps it false, and says why.
    net.write_config("05-bad.conflist", "{");
    let (ready, _, message) = network_ready(&mut env).await;
    assert!(!ready);
    assert!(message.contains("05-bad.conflist: not JSON"), "{message}");

    net.write_config("10-test.conflist", &net.conflist(&[]));
    let (ready, reason, _) = network_ready(&mut env).await;
    assert!(ready, "{reason}");
    let pod = env.run_pod(env.pod_config("late")).await;
    assert!(pod_ip(&mut env, &pod.id).await.starts_with(&net.prefix));

    fs::remove_file(net.conf_dir().join("10-test.conflist")).unwrap();
    assert!(!network_ready(&mut env).await.0);
    // The running pod keeps its network and is torn down with the config it was made with.
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    env.remove_pod(&host_pod.id)
        .await
        .expect("RemovePodSandbox");
    net.assert_clean("after removing the pods");
}

#[tokio::test(flavor = "multi_thread")]
async fn update_runtime_config_hands_the_pod_cidr_to_cni() {
    let net = Net::new('g');
    let template = net.dir.path().join("template.conflist");
    // The test's subnet comes only from the pod CIDR kubelet sends.
    let text = net
        .conflist(&[])
        .replace(&format!("{}.0/24", net.prefix), "{{.PodCIDR}}");
    fs::write(&template, text).unwrap();
    let toml = format!(
        "{}conf_template = {:?}\n",
        net.toml(),
        template.display().to_string()
    );
    let mut env = PodEnv::start_in_netns(&toml, &net.netns_path()).await;
    assert!(!network_ready(&mut env).await.0);
    let cidr = format!("{}.128/25", net.prefix);
    env.cri
        .runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: cidr.clone(),
                }),
            }),
        })
        .await
        .expect("UpdateRuntimeConfig");
    let written = fs::read_to_string(net.conf_dir().join("10-proxrt-net.conflist")).unwrap();
    assert!(written.contains(&cidr), "{written}");
    assert!(network_ready(&mut env).await.0);
    let info = env
        .cri
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
        .info;
    assert!(info["network"].contains(&cidr), "{}", info["network"]);
    let pod = env.run_pod(env.pod_config("cidr")).await;
    let ip = pod_ip(&mut env, &pod.id).await;
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip.starts_with(&net.prefix) && last > 128,
        "{ip} not in {cidr}"
    );
    // A bad CIDR is the request's fault.
    let err = env
        .cri
        .runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: "10.0.0.0/99".into(),
                }),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    net.assert_clean("after RemovePodSandbox");
}

#[test]
fn del_is_idempotent_also_without_a_netns() {
    use proxrt::network::{AttachRequest, Network};
    let net = Net::new('h');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let pod_ns = format!("prxpod{}", std::process::id());
    run_ok(Command::new("ip").args(["netns", "add", &pod_ns]));
    let pod_ns_path = Path::new("/run/netns").join(&pod_ns);
    let mut cni = proxrt::config::Config::default().cni;
    cni.conf_dir = net.conf_dir();
    cni.bin_dirs = vec!["/usr/lib/cni".into(), net.bin_dir()];
    let pod = k8s_cri::v1::PodSandboxConfig {
        metadata: Some(k8s_cri::v1::PodSandboxMetadata {
            name: "direct".into(),
            namespace: "default".into(),
            uid: "u-direct".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    // The plugins run in the test's namespace: from a thread that entered it.
    let (ns_file, pod_path) = (net.netns_path(), pod_ns_path.clone());
    let ip = std::thread::spawn(move || {
        let file = fs::File::open(&ns_file).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let network = Network::new(&cni);
            let attached = network
                .attach(AttachRequest {
                    id: "direct0123456789",
                    config: &pod,
                    netns: &pod_path,
                })
                .await
                .expect("ADD");
            network
                .detach(&attached, Some(&pod_path))
                .await
                .expect("DEL");
            network
                .detach(&attached, Some(&pod_path))
                .await
                .expect("DEL again");
            let _ = Command::new("ip").args(["netns", "del", &pod_ns]).status();
            network
                .detach(&attached, Some(&pod_path))
                .await
                .expect("DEL once the netns is gone");
            attached.ips[0].clone()
        })
    })
    .join()
    .expect("cni thread");
    assert!(ip.starts_with(&net.prefix), "{ip}");
    net.assert_clean("after three DELs");
}

/// RunPodSandbox with the bridge CNI (bridge + host-local + portmap) beside a
/// host-network pod, interleaved; prints median and p99. Measures, asserts nothing:
/// `cargo nextest run --test cni --run-ignored only -E 'test(bench_)' --no-capture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_run_pod_sandbox_bridge_vs_host_network() {
    let rounds: usize = std::env::var("PROXRT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let net = Net::new('z');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let (mut bridge, mut host) = (Vec::new(), Vec::new());
    for i in 0..rounds + 1 {
        for host_net in [false, true] {
            let mut config = env.pod_config(&format!("bench-{i}-{host_net}"));
            if host_net {
                pod_security(&mut config)
                    .namespace_options
                    .as_mut()
                    .unwrap()
                    .network = NamespaceMode::Node as i32;
            }
            let start = Instant::now();
            let pod = env.run_pod(config).await;
            let took = start.elapsed();
            // Round 0 warms up (first plugin exec, page cache).
            if i > 0 {
                if host_net { &mut host } else { &mut bridge }.push(took);
            }
            env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
        }
    }
    for (what, mut samples) in [("bridge CNI", bridge), ("host network", host)] {
        samples.sort();
        let q = |p: f64| {
            samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        println!(
            "RunPodSandbox {what}: n={} median {:.1} ms, p99 {:.1} ms, min {:.1} ms",
            samples.len(),
            q(0.5).as_secs_f64() * 1e3,
            q(0.99).as_secs_f64() * 1e3,
            samples[0].as_secs_f64() * 1e3
        );
    }
    net.assert_clean("after the benchmark");
}

/// PodSandboxStatus from grpcio (not proxrt's own client): the pod IP CNI gave is on the
/// wire where kubelet reads it, and the verbose info says the fast path gave it.
#[tokio::test(flavor = "multi_thread")]
async fn grpcio_reads_the_pod_ip() {
    let venv = std::env::var_os("PROXRT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/proxrt-test/venv"));
    let python = venv.join("bin/python3");
    assert!(
        python.exists(),
        "no grpcio venv at {}: run hack/setup",
        venv.display()
    );
    let net = Net::new('p');
    net.write_config("10-test.conflist", &net.conflist(&[]));
    let mut env = PodEnv::start_in_netns(&net.toml(), &net.netns_path()).await;
    let pod = env.run_pod(env.pod_config("pyip")).await;
    let ip = pod_ip(&mut env, &pod.id).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/cri_client.py");
    let out = common::output_within(
        Command::new(python)
            .arg(script)
            .arg(&env.daemon().socket)
            .args(["podip", &pod.id]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "grpcio podip: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("id={} ip={ip} additional=\n", pod.id)),
        "{stdout}"
    );
    assert!(ip.starts_with(&net.prefix), "{ip}");
    // The verbose info, through grpcio too: the fast path attached the pod.
    assert!(stdout.contains("inProcess=True\n"), "{stdout}");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    net.assert_clean("after RemovePodSandbox");
}

/// The config hack/run installs is one proxrt takes (valid, every plugin installed).
#[test]
fn the_hack_run_default_config_is_valid() {
    let dir = temp_dir("proxrt-cni-default-");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/cni/10-proxrt-bridge.conflist");
    fs::copy(&file, dir.path().join("10-proxrt-bridge.conflist")).unwrap();
    let list = proxrt::network::cni::config::load_dir(dir.path(), &[PathBuf::from("/usr/lib/cni")])
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(list.types(), ["loopback", "bridge", "portmap"]);
    assert_eq!(list.cni_version, "1.0.0");
}

/// What a pod's network leaves in the runtime's and the pod's namespaces, as text with
/// what differs by chance (MACs, the veth's random name, link-local addresses, timers,
/// the namespaces' names) masked: links with their details, addresses, routes of every
/// table, every `net.ipv4`/`net.ipv6` sysctl, every sysfs attribute of every interface
/// (its bridge and bridge-port attributes too), the whole nat and filter tables.
fn network_state(ns: &str, names: &[(&str, &str)]) -> Vec<String> {
    const SCRIPT: &str = r#"
        ip -d link show; ip -d addr show
        ip -d -4 route show table all; ip -d -6 route show table all
        sysctl -a 2>/dev/null | grep -E '^net\.(ipv4|ipv6)\.'
        for f in /sys/class/net/*/* /sys/class/net/*/brport/* /sys/class/net/*/bridge/*; do
            [ -f "$f" ] && [ -r "$f" ] && echo "$f=$(cat "$f" 2>/dev/null | tr '\n' ' ')"
        done
        iptables-save -t nat; iptables-save -t filter"#;
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", SCRIPT])
        .output()
        .expect("ip netns exec");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        // Timers, counters of time and of random: not state.
        .filter(|l| {
            ![
                "_timer=",
                "/stable_secret=",
                "base_reachable_time",
                "/brforward=",
            ]
            .iter()
            .any(|v| l.contains(v))
        })
        .map(|l| masked(l, names))
        .collect()
}

/// `text` with `names` replaced and what differs by chance between two equal networks
/// masked: MACs, bridge ids, the veth's random name, link-local addresses, timers.
fn masked(text: &str, names: &[(&str, &str)]) -> String {
    static MASKS: std::sync::LazyLock<Vec<(regex::Regex, &str)>> = std::sync::LazyLock::new(|| {
        [
            (r"fe80::[0-9a-f:]+", "fe80::LL"),
            // Bridge ids: priority and MAC (`ip` drops the MAC's leading zeros).
            (r"8000\.[0-9a-f:]+", "8000.ID"),
            (r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "MAC"),
            (r"veth[0-9a-f]{8}", "VETH"),
            (r"(_timer)\s+[0-9.]+", "$1 T"),
            (r" tentative", ""),
            (r"^# (Generated|Completed).*", "#"),
        ]
        .iter()
        .map(|(re, to)| (regex::Regex::new(re).unwrap(), *to))
        .collect()
    });
    let mut t = text.to_owned();
    for (from, to) in names {
        t = t.replace(from, to);
    }
    for (re, to) in MASKS.iter() {
        t = re.replace_all(&t, *to).into_owned();
    }
    t
}

/// The lines only one of two states has, each marked with the side it is on.
fn state_diff(a: &[String], b: &[String], labels: (&str, &str)) -> Vec<String> {
    let only = |x: &[String], y: &[String], label: &str| {
        x.iter()
            .filter(|l| !y.contains(l))
            .map(|l| format!("{label}: {l}"))
            .collect::<Vec<_>>()
    };
    let mut d = only(a, b, labels.0);
    d.extend(only(b, a, labels.1));
    d
}

/// The fast path leaves exactly what the plugins leave (issue 13): the same config, the
/// same container id, one side through Debian's plugins, the other in-process, each in a
/// runtime namespace and a pod namespace of its own. ADD, then DEL four ways: as after
/// StopPodSandbox (and a second DEL), with the pod's namespace gone (host-local's
/// release only, the rules stay: the bridge plugin's own behaviour), with the pod's nat
/// jump already gone (the rest torn down step by step), and with a second address on
/// the pod's interface (the fast path declines and changes nothing; the plugins' DEL
/// then runs on both). CNI 1.0.0 and 0.4.0 results.
#[test]
fn the_fast_path_leaves_what_the_plugins_leave() {
    use proxrt::network::{cni, fast};
    for (round, version) in [(0, "1.0.0"), (1, "0.4.0"), (2, "1.0.0"), (3, "1.0.0")] {
        let pid = std::process::id();
        let id = format!("fastcmp{pid}r{round}");
        let name = format!("prxfast-{pid}");
        let bridge = format!("prxf{pid}");
        let sides: Vec<(Net, PodNs)> = ['f', 'g']
            .into_iter()
            .map(|tag| (Net::new(tag), PodNs::new(format!("prxfp{pid}{tag}"))))
            .collect();
        let conflist = |net: &Net| {
            format!(
                r#"{{"cniVersion":"{version}","name":"{name}","plugins":[
                {{"type":"loopback"}},
                {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,"hairpinMode":true,
                  "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{}.0/24"}}]],
                  "routes":[{{"dst":"0.0.0.0/0"}},{{"dst":"192.168.77.0/24","gw":"{}.254"}}],
                  "dataDir":{:?}}}}},
                {{"type":"portmap","capabilities":{{"portMappings":true}},"snat":true}}]}}"#,
                net.prefix,
                net.prefix,
                net.dir.path().join("data").display().to_string()
            )
        };
        let list_of = |net: &Net| {
            cni::config::parse(Path::new("cmp.conflist"), conflist(net).as_bytes())
                .expect("conflist")
        };
        let bins = [PathBuf::from("/usr/lib/cni")];
        let in_ns = |net: &Net, work: Box<dyn FnOnce() -> serde_json::Value + Send>| {
            let ns_file = net.netns_path();
            std::thread::spawn(move || {
                let file = fs::File::open(&ns_file).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                work()
            })
            .join()
            .expect("netns thread")
        };
        // The plugins' ADD or DEL (with `prev` as its prevResult) in `net`'s namespace;
        // `pod_path` empty: the pod's namespace is gone. ADD's result, or the error with
        // what differs by chance masked.
        let plugins_run = |net: &Net,
                           command: cni::Command,
                           pod_path: PathBuf,
                           prev: Option<serde_json::Value>|
         -> Result<serde_json::Value, String> {
            let (list, id, bins) = (list_of(net), id.clone(), bins.clone());
            let out = in_ns(
                net,
                Box::new(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let inv = cni::Invocation {
                        command,
                        container_id: &id,
                        netns: &pod_path,
                        ifname: "eth0",
                        args: "",
                        bin_dirs: &bins,
                    };
                    let runtime = serde_json::Map::new();
                    let done = rt.block_on(async {
                        match command {
                            cni::Command::Add => cni::add(&list, &inv, &runtime).await,
                            cni::Command::Del => cni::del(&list, &inv, &runtime, prev.as_ref())
                                .await
                                .map(|()| serde_json::Value::Null),
                        }
                    });
                    serde_json::json!({ "ok": done.as_ref().ok(), "err": done.err().map(|e| e.to_string()) })
                }),
            );
            match out["err"].as_str() {
                Some(e) => Err(masked(e, &[])),
                None => Ok(out["ok"].clone()),
            }
        };
        let try_del = |net: &Net, pod_path: PathBuf, result: serde_json::Value| {
            plugins_run(net, cni::Command::Del, pod_path, Some(result)).err()
        };
        let del = |net: &Net, pod_path: PathBuf, result: serde_json::Value| {
            if let Some(e) = try_del(net, pod_path, result) {
                panic!("the plugins' DEL: {e}");
            }
        };

        // ADD: the plugins on one side, the fast path on the other.
        let (plugins, fast_side) = (&sides[0], &sides[1]);
        let plugin_result = plugins_run(&plugins.0, cni::Command::Add, plugins.1.path(), None)
            .expect("the plugins' ADD");
        let fast_result = {
            let plan = fast::plan(&list_of(&fast_side.0), &serde_json::Map::new())
                .expect("the fast path takes the standard config");
            let id = id.clone();
            let pod_path = fast_side.1.path();
            in_ns(
                &fast_side.0,
                Box::new(move || {
                    fast::add_blocking(&plan, &id, &pod_path, "eth0").expect("fast ADD")
                }),
            )
        };

        let state = |(net, pod_ns): &(Net, PodNs)| {
            let names = [
                (net.ns.as_str(), "RUNTIME_NS"),
                (pod_ns.0.as_str(), "POD_NS"),
                (net.dir.path().to_str().unwrap(), "DIR"),
            ];
            let mut s = network_state(&net.ns, &names);
            if pod_ns.path().exists() {
                s.extend(
                    network_state(&pod_ns.0, &names)
                        .into_iter()
                        .map(|l| format!("pod {l}")),
                );
            }
            let pool = net.dir.path().join("data").join(&name);
            let mut files: Vec<String> = fs::read_dir(&pool)
                .expect("host-local pool")
                .flatten()
                .map(|e| {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = e.metadata().unwrap().permissions().mode();
                    let content = fs::read_to_string(e.path()).unwrap_or_default();
                    format!("pool {:?} {mode:o} {content:?}", e.file_name())
                })
                .collect();
            files.sort();
            s.extend(files);
            s
        };
        // The kernel tells carrier changes to operstate in a batch up to a second later:
        // a difference that lasts is one.
        let settled = || {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let (a, b) = (state(plugins), state(fast_side));
                let diff = state_diff(&a, &b, ("plugins", "fast"));
                if diff.is_empty() || Instant::now() > deadline {
                    return (a, b, diff);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let compare = |when: &str| {
            let (a, _, diff) = settled();
            assert!(
                diff.is_empty(),
                "cniVersion {version}, {when}:\n{}",
                diff.join("\n")
            );
            a
        };
        compare("after ADD");
        // The same result, but for what differs by chance.
        let mask = |r: &serde_json::Value, pod_ns: &str| {
            let t = masked(&r.to_string(), &[(pod_ns, "POD_NS")]);
            serde_json::from_str::<serde_json::Value>(&t).unwrap()
        };
        assert_eq!(
            mask(&fast_result, &fast_side.1 .0),
            mask(&plugin_result, &plugins.1 .0),
            "cniVersion {version}: the results"
        );

        let fast_del = |pod_path: PathBuf| {
            let plan = fast::plan(&list_of(&fast_side.0), &serde_json::Map::new()).unwrap();
            let id = id.clone();
            let outcome = in_ns(
                &fast_side.0,
                Box::new(move || {
                    let o = fast::del_blocking(&plan, &id, &pod_path, "eth0").expect("fast DEL");
                    serde_json::Value::String(format!("{o:?}"))
                }),
            );
            outcome.as_str().unwrap().to_owned()
        };
        let pool_files = |net: &Net| {
            fs::read_dir(net.dir.path().join("data").join(&name))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&net.prefix))
                .collect::<Vec<_>>()
        };
        match round {
            0 => {
                // As after StopPodSandbox: nothing of the pod left; DEL again: still so.
                del(&plugins.0, plugins.1.path(), plugin_result.clone());
                assert_eq!(fast_del(fast_side.1.path()), "Done");
                let a = compare("after DEL");
                assert!(
                    !a.iter().any(|l| l.contains("VETH") || l.contains(&id)),
                    "the pod's veth or rules left: {a:?}"
                );
                assert!(pool_files(&plugins.0).is_empty() && pool_files(&fast_side.0).is_empty());
                del(&plugins.0, plugins.1.path(), plugin_result);
                assert_eq!(fast_del(fast_side.1.path()), "Done");
                compare("after a second DEL");
            }
            1 => {
                // The pod's namespace gone: the address is released, the rules stay (the
                // bridge plugin finds the pod's address only on its interface).
                plugins.1.delete();
                fast_side.1.delete();
                del(&plugins.0, PathBuf::new(), plugin_result);
                assert_eq!(fast_del(PathBuf::new()), "Done");
                let a = compare("after DEL without the pod's namespace");
                assert!(a.iter().any(|l| l.contains(&id)), "the rules stay: {a:?}");
                assert!(pool_files(&fast_side.0).is_empty());
            }
            2 => {
                // The nat jump gone by hand on both sides: not the state ADD left. The
                // fast path tears the rest down step by step, as the plugin does.
                for (net, _) in &sides {
                    net.exec_ok(&["iptables", "-t", "nat", "-F", "POSTROUTING"]);
                }
                del(&plugins.0, plugins.1.path(), plugin_result);
                assert_eq!(fast_del(fast_side.1.path()), "Done");
                let a = compare("after DEL with the nat jump gone");
                assert!(!a.iter().any(|l| l.contains("VETH") || l.contains(&id)));
            }
            _ => {
                // A second address on the pod's interface: the fast path declines and
                // changes nothing. The plugins' DEL then fails on both sides alike (it
                // deletes the chain for the first address and fails to find it for the
                // second), and a second DEL of theirs finishes.
                for (_, pod_ns) in &sides {
                    run_ok(Command::new("ip").args([
                        "netns",
                        "exec",
                        &pod_ns.0,
                        "ip",
                        "addr",
                        "add",
                        "192.168.99.9/24",
                        "dev",
                        "eth0",
                    ]));
                }
                let outcome = fast_del(fast_side.1.path());
                assert!(
                    outcome.starts_with("Plugins(") && outcome.contains("not one IPv4 address"),
                    "{outcome}"
                );
                compare("after a declined fast DEL");
                let failed = [
                    try_del(&plugins.0, plugins.1.path(), plugin_result.clone()),
                    try_del(&fast_side.0, fast_side.1.path(), fast_result.clone()),
                ];
                assert!(failed[0].is_some(), "the plugins' DEL with two addresses");
                assert_eq!(
                    failed[0]
                        .as_ref()
                        .map(|e| e.replace(&plugins.1 .0, "POD_NS")),
                    failed[1]
                        .as_ref()
                        .map(|e| e.replace(&fast_side.1 .0, "POD_NS"))
                );
                compare("after the plugins' failed DEL");
                del(&plugins.0, plugins.1.path(), plugin_result);
                del(&fast_side.0, fast_side.1.path(), fast_result);
                let a = compare("after the plugins' second DEL");
                assert!(!a.iter().any(|l| l.contains("VETH") || l.contains(&id)));
            }
        }
    }
}

/// A pod network namespace of a test (`ip netns`), deleted when dropped.
struct PodNs(String);

impl PodNs {
    fn new(name: String) -> PodNs {
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        PodNs(name)
    }
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
    fn delete(&self) {
        run_ok(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        if self.path().exists() {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}
