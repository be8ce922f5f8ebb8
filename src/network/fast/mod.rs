//! The in-process fast path for the standard bridge network (issue 13): ADD and DEL of
//! `[loopback,] bridge + host-local [, portmap]` done by proxrt itself — netlink, the
//! host-local pool's files, one `iptables-restore` — leaving exactly the state and the
//! result the plugins (containernetworking-plugins 1.1, Debian 12's) leave, so either's
//! DEL removes the other's ADD. Every other config, and any option of these plugins the
//! fast path does not reproduce, goes to the plugins: [`plan`] says which and why; a DEL
//! that finds the pod's interface holding other than one IPv4 address declines
//! ([`DelOutcome::Plugins`]).
//!
//! What it reproduces, step by step as `bridge`'s `cmdAdd` does it: the bridge made if
//! missing (kernel defaults) and up, `accept_ra` 0 on it; a veth pair made in the pod's
//! namespace with its host end `veth<8 hex>` moved out, up, `accept_ra` 0, on the bridge,
//! hairpin as configured; host-local's allocation; in the pod `accept_dad` 0,
//! `arp_notify` 1, the address (with its broadcast), eth0 up, the IPAM routes through the
//! gateway; with `isGateway` the gateway on the bridge (the bridge's MAC then set to
//! itself) and `ip_forward` 1; with `ipMasq` the nat rules (masq.rs); the host end's
//! operstate waited for as the plugin waits; the result in the list's CNI version.
//! `tests/cni.rs` runs the plugins and the fast path side by side in two namespaces and
//! compares all of it.

pub mod host_local;
pub mod masq;
pub mod netlink;

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::cni::{self, NetworkList};
use host_local::Range;
use netlink::{Link, Netlink};

/// CNI versions whose result the fast path writes.
const VERSIONS: &[&str] = &["1.0.0", "0.4.0", "0.3.1", "0.3.0"];

/// The bridge plugin's default bridge name.
const DEFAULT_BRIDGE: &str = "cni0";

/// What the fast path does for one config: the bridge plugin's options and host-local's
/// range, routes and data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub network: String,
    pub cni_version: String,
    /// The list starts with `loopback`: lo is set up in the pod.
    pub loopback: bool,
    pub bridge: String,
    pub is_gateway: bool,
    pub ip_masq: bool,
    pub hairpin: bool,
    pub range: Range,
    /// `(destination, prefix, gateway)`.
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    pub data_dir: PathBuf,
}

/// Whether the fast path takes `list` for a pod with capability args `runtime`: the plan,
/// or why the plugins run instead.
pub fn plan(list: &NetworkList, runtime: &Map<String, Value>) -> Result<Plan, String> {
    if !VERSIONS.contains(&list.cni_version.as_str()) {
        return Err(format!("cniVersion {}", list.cni_version));
    }
    if !plain_name(&list.name) {
        return Err(format!("network name {:?}", list.name));
    }
    let types = list.types();
    let loopback = types.first() == Some(&"loopback");
    let rest = &types[usize::from(loopback)..];
    let bridge_at = usize::from(loopback);
    match rest {
        ["bridge"] | ["bridge", "portmap"] => {}
        _ => return Err(format!("plugins {types:?}")),
    }
    for (i, kind) in types.iter().enumerate() {
        // What each plugin would read: any capability arg it declares (port mappings,
        // bandwidth, ipRanges …) is work the fast path does not do.
        if cni::config::plugin_stdin(list, i, runtime, None)
            .get("runtimeConfig")
            .is_some()
        {
            return Err(format!("capability args for {kind}"));
        }
    }
    if loopback {
        only_keys(&list.plugins[0], &["type"], "loopback")?;
    }
    if rest.len() == 2 {
        let portmap = &list.plugins[bridge_at + 1];
        only_keys(portmap, &["type", "capabilities", "snat"], "portmap")?;
        if portmap.get("snat").is_some_and(|v| !v.is_boolean()) {
            return Err("portmap snat not a bool".into());
        }
    }
    let b = &list.plugins[bridge_at];
    only_keys(
        b,
        &[
            "type",
            "bridge",
            "isGateway",
            "isDefaultGateway",
            "forceAddress",
            "ipMasq",
            "hairpinMode",
            "promiscMode",
            "mtu",
            "ipam",
        ],
        "bridge",
    )?;
    let flag = |key: &str| -> Result<bool, String> {
        match b.get(key) {
            None => Ok(false),
            Some(Value::Bool(v)) => Ok(*v),
            Some(_) => Err(format!("bridge {key} not a bool")),
        }
    };
    for off in ["isDefaultGateway", "forceAddress", "promiscMode"] {
        if flag(off)? {
            return Err(format!("bridge {off}"));
        }
    }
    if b.get("mtu").is_some_and(|m| m.as_u64() != Some(0)) {
        return Err("bridge mtu".into());
    }
    let bridge = match b.get("bridge") {
        None => DEFAULT_BRIDGE.to_owned(),
        Some(Value::String(s)) if plain_name(s) && !s.is_empty() && s.len() <= 15 => s.clone(),
        Some(v) => return Err(format!("bridge name {v}")),
    };
    let ipam = b
        .get("ipam")
        .and_then(Value::as_object)
        .ok_or("bridge without ipam")?;
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        return Err("ipam is not host-local".into());
    }
    only_keys(
        ipam,
        &[
            "type",
            "ranges",
            "subnet",
            "rangeStart",
            "rangeEnd",
            "gateway",
            "routes",
            "dataDir",
        ],
        "host-local",
    )?;
    let range = match (ipam.get("ranges"), ipam.get("subnet")) {
        (Some(Value::Array(sets)), None) => match sets.as_slice() {
            [Value::Array(set)] => match set.as_slice() {
                [Value::Object(r)] => {
                    only_keys(r, &["subnet", "rangeStart", "rangeEnd", "gateway"], "range")?;
                    range_of(r)?
                }
                _ => return Err("host-local range set of other than one range".into()),
            },
            _ => return Err("host-local ranges of other than one set".into()),
        },
        (None, Some(_)) => range_of(ipam)?,
        _ => return Err("host-local ranges".into()),
    };
    let mut routes = Vec::new();
    for r in ipam
        .get("routes")
        .map(|v| v.as_array().ok_or("host-local routes not a list"))
        .transpose()?
        .into_iter()
        .flatten()
    {
        let r = r.as_object().ok_or("host-local route not an object")?;
        only_keys(r, &["dst", "gw"], "route")?;
        let (dst, prefix) = cidr_v4(r.get("dst").ok_or("route without dst")?)?;
        let dst = Ipv4Addr::from(u32::from(dst) & mask(prefix));
        let gw = r.get("gw").map(ip_v4).transpose()?;
        routes.push((dst, prefix, gw));
    }
    let data_dir = match ipam.get("dataDir") {
        None => PathBuf::from(host_local::DEFAULT_DATA_DIR),
        Some(Value::String(d)) if !d.is_empty() => PathBuf::from(d),
        Some(v) => return Err(format!("host-local dataDir {v}")),
    };
    Ok(Plan {
        network: list.name.clone(),
        cni_version: list.cni_version.clone(),
        loopback,
        bridge,
        is_gateway: flag("isGateway")?,
        ip_masq: flag("ipMasq")?,
        hairpin: flag("hairpinMode")?,
        range,
        routes,
        data_dir,
    })
}

/// Names the plugins quote as they are (Go's `%q` of them is `"name"`) and that make
/// plain file and interface names.
pub fn plain_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn only_keys(m: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what} option {k:?}")),
        None => Ok(()),
    }
}

fn range_of(r: &Map<String, Value>) -> Result<Range, String> {
    let (subnet, prefix) = cidr_v4(r.get("subnet").ok_or("range without subnet")?)?;
    let opt = |k: &str| r.get(k).map(ip_v4).transpose();
    let range = Range::new(
        subnet,
        prefix,
        opt("rangeStart")?,
        opt("rangeEnd")?,
        opt("gateway")?,
    )?;
    // host-local 1.1 would walk the whole address space round to find the end: the
    // plugin's to do (and fail at), not the fast path's.
    if range.start > range.end {
        return Err(format!(
            "rangeStart {} after rangeEnd {}",
            range.start, range.end
        ));
    }
    Ok(range)
}

fn cidr_v4(v: &Value) -> Result<(Ipv4Addr, u8), String> {
    let s = v.as_str().ok_or_else(|| format!("{v} not a CIDR"))?;
    let (ip, len) = s.split_once('/').ok_or_else(|| format!("{s} not a CIDR"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s} not an IPv4 CIDR"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{s} not an IPv4 CIDR"))?;
    Ok((ip, len))
}

fn ip_v4(v: &Value) -> Result<Ipv4Addr, String> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{v} not an IPv4 address"))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Which plugin builds the fast path reproduces: containernetworking-plugins 1.1.x,
/// told by the Go module version a release binary carries; a distribution's build
/// (Debian's carries none) is taken as the distribution's 1.1 package. Cached per
/// binary (path, mtime, size): a plugin upgrade is seen at the next ADD.
#[derive(Default)]
pub struct PluginCheck {
    seen: Mutex<HashMap<PathBuf, Checked>>,
}

/// A binary's (mtime, size) when checked, and the verdict.
type Checked = (Option<SystemTime>, u64, Result<(), String>);

impl PluginCheck {
    pub fn check(&self, binary: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
        let key = (meta.modified().ok(), meta.len());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((m, l, verdict)) = seen.get(binary) {
            if (*m, *l) == key {
                return verdict.clone();
            }
        }
        let verdict = std::fs::read(binary)
            .map_err(|e| format!("read {}: {e}", binary.display()))
            .and_then(|bytes| match module_version(&bytes) {
                None => Ok(()),
                Some(v) if v.starts_with("v1.1.") => Ok(()),
                Some(v) => Err(format!(
                    "{} is containernetworking-plugins {v} (the fast path reproduces 1.1)",
                    binary.display()
                )),
            });
        seen.insert(binary.to_owned(), (key.0, key.1, verdict.clone()));
        verdict
    }
}

/// The version of containernetworking-plugins in a Go binary's build info
/// (`mod\tgithub.com/containernetworking/plugins\tv1.4.0\t…`), if it carries one.
pub fn module_version(binary: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"mod\tgithub.com/containernetworking/plugins\t";
    let at = binary.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &binary[at..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'\t' | b'\n' | 0))
        .unwrap_or(rest.len().min(64));
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Runs ADD for `plan` on a thread of its own (it enters the pod's network namespace
/// and back; a thread of the runtime never changes namespace). The runtime's side is
/// the namespace of the calling thread.
pub async fn add(plan: &Plan, id: &str, netns: &Path, ifname: &str) -> Result<Value, String> {
    on_own_thread(plan, id, netns, ifname, add_blocking).await
}

/// Runs `work` with its own copies of the arguments on a thread of its own and waits for
/// its answer (the thread enters the pod's network namespace and back; a thread of the
/// runtime never changes namespace).
async fn on_own_thread<T: Send + 'static>(
    plan: &Plan,
    id: &str,
    netns: &Path,
    ifname: &str,
    work: fn(&Plan, &str, &Path, &str) -> Result<T, String>,
) -> Result<T, String> {
    let (plan, id, netns, ifname) = (
        plan.clone(),
        id.to_owned(),
        netns.to_owned(),
        ifname.to_owned(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cni-fast".into())
        .spawn(move || {
            let _ = tx.send(work(&plan, &id, &netns, &ifname));
        })
        .map_err(|e| format!("start the network thread: {e}"))?;
    rx.await
        .map_err(|_| "the network thread ended without an answer".to_owned())?
}

/// What a fast DEL did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelOutcome {
    /// Everything the plugins' DEL would have done.
    Done,
    /// Nothing: the pod's interface holds addresses the fast path does not tear down
    /// (why); the plugins' DEL is to run.
    Plugins(String),
}

/// DEL for `plan` as the plugins' DEL of the list does it (portmap without mappings:
/// nothing; bridge: the pod's rules, its interface, host-local's release; loopback: lo
/// down). An empty `netns` (the namespace is gone): host-local's release only, as the
/// bridge plugin does. Rules not as ADD left them are torn down step by step as the
/// plugin does; an interface holding more than one global address (or an IPv6 one)
/// changes nothing and answers [`DelOutcome::Plugins`].
pub async fn del(plan: &Plan, id: &str, netns: &Path, ifname: &str) -> Result<DelOutcome, String> {
    on_own_thread(plan, id, netns, ifname, del_blocking).await
}

/// DEL, blocking; as [`add_blocking`], the thread must be one that may change network
/// namespace.
pub fn del_blocking(
    plan: &Plan,
    id: &str,
    netns: &Path,
    ifname: &str,
) -> Result<DelOutcome, String> {
    let release = || host_local::release(&plan.data_dir, &plan.network, id, ifname);
    if netns.as_os_str().is_empty() {
        release()?;
        return Ok(DelOutcome::Done);
    }
    let mut s = Sides::open(netns)?;
    let out = (|| {
        let nl = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let cont = s
            .pod
            .link(ifname)
            .map_err(|e| nl(&format!("failed to lookup {ifname:?}"), e))?;
        if let Some(cont) = &cont {
            let global: Vec<(std::net::IpAddr, u8)> = s
                .pod
                .addresses(cont.index)
                .map_err(|e| nl(&format!("failed to get IP addresses for {ifname:?}"), e))?
                .into_iter()
                .filter(|(ip, _)| global_unicast(ip))
                .collect();
            let ip = match global.as_slice() {
                [] => None,
                [(std::net::IpAddr::V4(ip), _)] => Some(*ip),
                _ => {
                    return Ok(DelOutcome::Plugins(format!(
                        "{ifname} holds {global:?}, not one IPv4 address"
                    )))
                }
            };
            let prefix = global.first().map(|(_, prefix)| *prefix).unwrap_or(32);
            // The nat rules from a thread of its own (in the runtime's namespace, where
            // this thread is) while the kernel takes the interface down: both wait on
            // the kernel's grace periods, so side by side they take the time of one.
            std::thread::scope(|scope| {
                let masq = match (plan.ip_masq, ip) {
                    (true, Some(ip)) => Some(scope.spawn(move || {
                        masq::apply(&masq::teardown_input(&plan.network, id, ip)).or_else(|_| {
                            // Not as ADD left them: step by step, as the plugin does.
                            masq::teardown_each(&plan.network, id, ip, prefix)
                        })
                    })),
                    _ => None,
                };
                let deleted = s
                    .pod
                    .delete_link(cont.index)
                    .map_err(|e| nl(&format!("failed to delete {ifname:?}"), e));
                masq.map(joined).transpose()?;
                deleted
            })?;
        }
        release()?;
        if plan.loopback {
            if let Some(lo) = s.pod.link("lo").map_err(|e| nl("lookup lo", e))? {
                s.pod.set_down(lo.index).map_err(|e| nl("set lo down", e))?;
            }
        }
        Ok(DelOutcome::Done)
    })();
    out
}

/// Go's `IP.IsGlobalUnicast`: not unspecified, loopback, multicast, link-local or the
/// IPv4 broadcast address.
fn global_unicast(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => {
            !(v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || v.is_link_local()
                || v.is_broadcast())
        }
        std::net::IpAddr::V6(v) => {
            !(v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || v.is_unicast_link_local())
        }
    }
}

/// The two namespaces and a netlink socket opened in each. The thread that holds them
/// stays in the runtime's namespace but while it writes the pod's sysctls.
struct Sides {
    host_ns: File,
    pod_ns: File,
    host: Netlink,
    pod: Netlink,
}

impl Sides {
    /// The calling thread's namespace (the runtime's side) and the pod's at `netns`,
    /// with a netlink socket opened in each. The thread is back in its own at return.
    fn open(netns: &Path) -> Result<Sides, String> {
        let host_ns = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("open the runtime's network namespace: {e}"))?;
        let pod_ns =
            File::open(netns).map_err(|e| format!("failed to open netns {netns:?}: {e}"))?;
        let host = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        nix::sched::setns(&pod_ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter the pod's network namespace: {e}"))?;
        let pod = Netlink::open();
        let back = nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("return to the runtime's network namespace: {e}"));
        let pod = pod.map_err(|e| format!("netlink in the pod's network namespace: {e}"))?;
        back?;
        Ok(Sides {
            host_ns,
            pod_ns,
            host,
            pod,
        })
    }

    fn enter_pod(&self) -> Result<(), String> {
        nix::sched::setns(&self.pod_ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter the pod's network namespace: {e}"))
    }
    fn enter_host(&self) -> Result<(), String> {
        nix::sched::setns(&self.host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("return to the runtime's network namespace: {e}"))
    }
}

/// ADD, blocking; the calling thread must be one that may change network namespace
/// (it is left in the one it started in).
pub fn add_blocking(plan: &Plan, id: &str, netns: &Path, ifname: &str) -> Result<Value, String> {
    if !plain_name(id) {
        return Err(format!("container id {id:?}"));
    }
    let mut sides = Sides::open(netns)?;
    let out = run(plan, &mut sides, id, netns, ifname);
    // Whatever happened, the thread ends where it began.
    sides.enter_host()?;
    out
}

fn run(plan: &Plan, s: &mut Sides, id: &str, netns: &Path, ifname: &str) -> Result<Value, String> {
    let nl = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // The thread stays in the runtime's namespace but for the pod's sysctls: a netlink
    // socket acts in the namespace it was opened in.
    if plan.loopback {
        let lo = s
            .pod
            .link("lo")
            .map_err(|e| nl("lookup lo", e))?
            .ok_or("failed to find lo")?;
        s.pod.set_up(lo.index).map_err(|e| nl("set lo up", e))?;
    }
    // The bridge.
    let br = ensure_bridge(&mut s.host, &plan.bridge)?;
    sysctl(&format!("net/ipv6/conf/{}/accept_ra", plan.bridge), "0");
    s.host
        .set_up(br.index)
        .map_err(|e| nl(&format!("set {} up", plan.bridge), e))?;
    // The veth pair, made in the pod with its host end moved out.
    let host_veth_name = make_veth(s, ifname)?;
    let cont = s
        .pod
        .link(ifname)
        .map_err(|e| nl("lookup the pod's veth", e))?
        .ok_or_else(|| format!("failed to lookup {ifname:?}"))?;
    let hv = s
        .host
        .link(&host_veth_name)
        .map_err(|e| nl("lookup the host veth", e))?
        .ok_or_else(|| format!("failed to lookup {host_veth_name:?}"))?;
    s.host
        .set_up(hv.index)
        .map_err(|e| nl(&format!("failed to set {host_veth_name:?} up"), e))?;
    sysctl(&format!("net/ipv6/conf/{host_veth_name}/accept_ra"), "0");
    s.host.set_master(hv.index, br.index).map_err(|e| {
        nl(
            &format!(
                "failed to connect {host_veth_name:?} to bridge {}",
                plan.bridge
            ),
            e,
        )
    })?;
    s.host.set_hairpin(hv.index, plan.hairpin).map_err(|e| {
        nl(
            &format!("failed to setup hairpin mode for {host_veth_name}"),
            e,
        )
    })?;
    // IPAM.
    let ip = host_local::allocate(&plan.range, &plan.data_dir, &plan.network, id, ifname)?;
    let addr = (ip, plan.range.prefix, plan.range.gateway);
    let wired = Wired {
        br,
        cont,
        host_veth_name,
    };
    // The nat rules go in from a thread of their own (its iptables-restore runs in the
    // runtime's namespace, where this thread is now) while the rest is set up: the end
    // state is the plugin's either way, in about half the time.
    std::thread::scope(|scope| {
        let masq = plan.ip_masq.then(|| {
            let network = Ipv4Addr::from(u32::from(ip) & mask(addr.1));
            let input = masq::restore_input(&plan.network, id, ip, network, addr.1);
            scope.spawn(move || masq::apply(&input))
        });
        let out = finish(plan, s, &wired, netns, ifname, addr);
        masq.map(joined).transpose()?;
        out
    })
}

/// What ADD made before the address: the bridge, the pod's veth end, the host end's name.
struct Wired {
    br: Link,
    cont: Link,
    host_veth_name: String,
}

/// The iptables thread's answer.
fn joined(h: std::thread::ScopedJoinHandle<'_, Result<(), String>>) -> Result<(), String> {
    h.join()
        .unwrap_or_else(|_| Err("the iptables thread panicked".into()))
}

/// ADD after IPAM: the pod's side, the gateway, forwarding, the port's state, the
/// result.
fn finish(
    plan: &Plan,
    s: &mut Sides,
    wired: &Wired,
    netns: &Path,
    ifname: &str,
    (ip, prefix, gateway): (Ipv4Addr, u8, Ipv4Addr),
) -> Result<Value, String> {
    let nl = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let (cont, host_veth_name) = (&wired.cont, &wired.host_veth_name);
    // The pod's side.
    s.enter_pod()?;
    sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
    sysctl(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
    s.enter_host()?;
    s.pod.add_address_v4(cont.index, ip, prefix).map_err(|e| {
        nl(
            &format!("failed to add IP addr {ip}/{prefix} to {ifname:?}"),
            e,
        )
    })?;
    s.pod
        .set_up(cont.index)
        .map_err(|e| nl(&format!("failed to set {ifname:?} UP"), e))?;
    for (dst, len, gw) in &plan.routes {
        let via = gw.unwrap_or(gateway);
        s.pod
            .add_route_v4(*dst, *len, Some(via), cont.index)
            .map_err(|e| {
                nl(
                    &format!("failed to add route '{dst}/{len} via {via} dev {ifname}'"),
                    e,
                )
            })?;
    }
    if plan.is_gateway {
        ensure_gateway(&mut s.host, &wired.br, &plan.bridge, gateway, prefix)?;
        enable_ip_forward()?;
    }
    // The plugin waits for the port to come up (STP off: at once).
    let mut host_veth = None;
    for (attempt, pause) in [0u64, 50, 500, 1000, 1000].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(pause));
        let l = s
            .host
            .link(host_veth_name)
            .map_err(|e| nl("lookup the host veth", e))?
            .ok_or_else(|| format!("failed to lookup {host_veth_name:?}"))?;
        if l.up {
            host_veth = Some(l);
            break;
        }
        if attempt == 4 {
            return Err("bridge port in error state: down".into());
        }
    }
    let host_veth = host_veth.ok_or("bridge port in error state")?;
    let br = s
        .host
        .link(&plan.bridge)
        .map_err(|e| nl("lookup the bridge", e))?
        .ok_or_else(|| format!("could not lookup {:?}", plan.bridge))?;
    Ok(result(
        plan,
        &br,
        &host_veth,
        cont,
        netns,
        (ip, prefix, gateway),
    ))
}

fn ensure_bridge(host: &mut Netlink, name: &str) -> Result<Link, String> {
    if let Err(e) = host.add_bridge(name) {
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!(
                "failed to create bridge {name:?}: could not add {name:?}: {e}"
            ));
        }
    }
    let br = host
        .link(name)
        .map_err(|e| format!("could not lookup {name:?}: {e}"))?
        .ok_or_else(|| format!("could not lookup {name:?}: Link not found"))?;
    if br.kind != Some(netlink_packet_route::link::InfoKind::Bridge) {
        return Err(format!(
            "failed to create bridge {name:?}: {name:?} already exists but is not a bridge"
        ));
    }
    Ok(br)
}

/// The pod's end made in the pod's namespace, its peer `veth<8 hex>` in the runtime's
/// (a name taken there: another). Returns the peer's name.
fn make_veth(s: &mut Sides, ifname: &str) -> Result<String, String> {
    for _ in 0..10 {
        let mut entropy = [0u8; 4];
        getrandom::fill(&mut entropy).map_err(|e| format!("random veth name: {e}"))?;
        let peer = format!("veth{}", hex::encode(entropy));
        match s.pod.add_veth(ifname, &peer, s.host_ns.as_raw_fd()) {
            Ok(()) => return Ok(peer),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if s.host.link(&peer).ok().flatten().is_some() {
                    continue;
                }
                return Err(format!(
                    "container veth name provided ({ifname}) already exists"
                ));
            }
            Err(e) => return Err(format!("failed to make veth pair: {e}")),
        }
    }
    Err("failed to find a unique veth name".into())
}

/// `ensureAddr`: the gateway on the bridge unless it is there; another IPv4 address
/// there is an error (no `forceAddress`); after adding, the bridge's MAC set to itself so
/// it no longer follows its ports.
fn ensure_gateway(
    host: &mut Netlink,
    br: &Link,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<(), String> {
    let present = host
        .addresses_v4(br.index)
        .map_err(|e| format!("could not get list of IP addresses: {e}"))?;
    if present.contains(&(gateway, prefix)) {
        return Ok(());
    }
    if !present.is_empty() {
        return Err(format!(
            "failed to set bridge addr: {name:?} already has an IP address different from {gateway}/{prefix}"
        ));
    }
    match host.add_address_v4(br.index, gateway, prefix) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(format!(
                "failed to set bridge addr: could not add IP address to {name:?}: {e}"
            ))
        }
        _ => {}
    }
    // The MAC as the link was read before the address went on (as the plugin's is).
    host.set_mac(br.index, &br.mac)
        .map_err(|e| format!("failed to set bridge addr: could not set bridge's mac: {e}"))
}

/// `net.ipv4.ip_forward` to 1 unless it is.
fn enable_ip_forward() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| format!("failed to enable forwarding: {e}"))
}

/// A sysctl of the calling thread's network namespace; failures ignored, as the plugin
/// ignores them.
fn sysctl(name: &str, value: &str) {
    let _ = std::fs::write(Path::new("/proc/sys").join(name), value);
}

/// The bridge plugin's result (portmap passes it through unchanged), in the list's
/// version.
fn result(
    plan: &Plan,
    br: &Link,
    host_veth: &Link,
    cont: &Link,
    netns: &Path,
    (ip, prefix, gateway): (Ipv4Addr, u8, Ipv4Addr),
) -> Value {
    let mut ipc = serde_json::json!({
        "interface": 2,
        "address": format!("{ip}/{prefix}"),
        "gateway": gateway.to_string(),
    });
    if plan.cni_version != "1.0.0" {
        ipc["version"] = "4".into();
    }
    let routes: Vec<Value> = plan
        .routes
        .iter()
        .map(|(dst, len, gw)| {
            let mut r = serde_json::json!({ "dst": format!("{dst}/{len}") });
            if let Some(gw) = gw {
                r["gw"] = gw.to_string().into();
            }
            r
        })
        .collect();
    let mut out = serde_json::json!({
        "cniVersion": plan.cni_version,
        "interfaces": [
            { "name": plan.bridge, "mac": br.mac_string() },
            { "name": host_veth.name, "mac": host_veth.mac_string() },
            { "name": cont.name, "mac": cont.mac_string(), "sandbox": netns.display().to_string() },
        ],
        "ips": [ipc],
        "dns": {},
    });
    if !routes.is_empty() {
        out["routes"] = Value::Array(routes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn list(json: &str) -> NetworkList {
        cni::config::parse(Path::new("t.conflist"), json.as_bytes()).unwrap()
    }

    const STANDARD: &str = r#"{"cniVersion":"1.0.0","name":"pods","plugins":[
        {"type":"loopback"},
        {"type":"bridge","bridge":"br9","isGateway":true,"ipMasq":true,"hairpinMode":true,
         "ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]],
                 "routes":[{"dst":"0.0.0.0/0"},{"dst":"10.9.9.9/8","gw":"10.88.0.254"}]}},
        {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#;

    #[test]
    fn the_standard_bridge_config_is_taken() {
        let p = plan(&list(STANDARD), &Map::new()).unwrap();
        assert!(p.loopback && p.is_gateway && p.ip_masq && p.hairpin);
        assert_eq!(p.bridge, "br9");
        assert_eq!(p.range.gateway, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(
            p.routes,
            [
                (Ipv4Addr::UNSPECIFIED, 0, None),
                (
                    Ipv4Addr::new(10, 0, 0, 0),
                    8,
                    Some(Ipv4Addr::new(10, 88, 0, 254))
                )
            ]
        );
        assert_eq!(p.data_dir, Path::new("/var/lib/cni/networks"));
    }

    #[test]
    fn anything_else_goes_to_the_plugins() {
        let mut ports = Map::new();
        ports.insert("portMappings".into(), serde_json::json!([{"hostPort": 80}]));
        let why = plan(&list(STANDARD), &ports).unwrap_err();
        assert!(why.contains("capability args for portmap"), "{why}");
        for (from, to, expect) in [
            (
                r#""hairpinMode":true"#,
                r#""hairpinMode":true,"mtu":1400"#,
                "mtu",
            ),
            (
                r#""hairpinMode":true"#,
                r#""hairpinMode":true,"vlan":5"#,
                "\"vlan\"",
            ),
            (
                r#""isGateway":true"#,
                r#""isGateway":"yes""#,
                "isGateway not a bool",
            ),
            (r#""10.88.0.0/16""#, r#""fd00::/64""#, "IPv4"),
            (r#"{"dst":"0.0.0.0/0"},"#, r#"{"dst":"::/0"},"#, "IPv4"),
            (
                r#""isGateway":true"#,
                r#""isDefaultGateway":true"#,
                "isDefaultGateway",
            ),
            (r#""type":"host-local""#, r#""type":"dhcp""#, "host-local"),
            (
                r#"{"type":"loopback"},"#,
                r#"{"type":"tuning"},"#,
                "plugins",
            ),
            (r#""name":"pods""#, r#""name":"a b""#, "network name"),
            (
                r#""snat":true"#,
                r#""snat":true,"markMasqBit":3"#,
                "markMasqBit",
            ),
            (r#""routes""#, r#""resolvConf":"/x","routes""#, "resolvConf"),
            (
                r#"{"subnet":"10.88.0.0/16"}"#,
                r#"{"subnet":"10.88.0.0/16","rangeStart":"10.88.9.0","rangeEnd":"10.88.1.0"}"#,
                "after rangeEnd",
            ),
            (
                r#"[{"subnet":"10.88.0.0/16"}]"#,
                r#"[{"subnet":"10.88.0.0/16"},{"subnet":"10.89.0.0/16"}]"#,
                "one range",
            ),
        ] {
            assert!(STANDARD.contains(from), "{from}");
            let why = plan(&list(&STANDARD.replace(from, to)), &Map::new()).unwrap_err();
            assert!(why.contains(expect), "{to}: {why}");
        }
        // The plugin's own errors (a subnet with host bits) are the plugin's to report.
        let bad = STANDARD.replace("10.88.0.0/16", "10.88.0.1/16");
        assert!(plan(&list(&bad), &Map::new()).is_err());
    }

    #[test]
    fn legacy_single_range_and_defaults() {
        let single = r#"{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"bridge",
            "ipam":{"type":"host-local","subnet":"10.1.0.0/24","gateway":"10.1.0.254"}}]}"#;
        let p = plan(&list(single), &Map::new()).unwrap();
        assert_eq!(p.bridge, "cni0");
        assert!(!p.loopback && !p.is_gateway && !p.ip_masq);
        assert_eq!(p.range.gateway, Ipv4Addr::new(10, 1, 0, 254));
        assert!(p.routes.is_empty());
    }

    #[test]
    fn results_in_the_lists_version() {
        let p = plan(&list(STANDARD), &Map::new()).unwrap();
        let link = |name: &str, mac: u8| Link {
            index: 1,
            name: name.into(),
            mac: vec![0, 0, 0, 0, 0, mac],
            kind: None,
            up: true,
        };
        let r = result(
            &p,
            &link("br9", 1),
            &link("veth0a0b0c0d", 2),
            &link("eth0", 3),
            Path::new("/run/netns/x"),
            (Ipv4Addr::new(10, 88, 0, 2), 16, Ipv4Addr::new(10, 88, 0, 1)),
        );
        assert_eq!(
            r,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "br9", "mac": "00:00:00:00:00:01"},
                    {"name": "veth0a0b0c0d", "mac": "00:00:00:00:00:02"},
                    {"name": "eth0", "mac": "00:00:00:00:00:03", "sandbox": "/run/netns/x"}
                ],
                "ips": [{"interface": 2, "address": "10.88.0.2/16", "gateway": "10.88.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.88.0.254"}],
                "dns": {}
            })
        );
        let old = plan(&list(&STANDARD.replace("1.0.0", "0.4.0")), &Map::new()).unwrap();
        let r = result(
            &old,
            &link("br9", 1),
            &link("v", 2),
            &link("eth0", 3),
            Path::new("/x"),
            (Ipv4Addr::new(10, 88, 0, 2), 16, Ipv4Addr::new(10, 88, 0, 1)),
        );
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(cni::pod_ips(&r, "eth0")[0].to_string(), "10.88.0.2");
    }

    #[test]
    fn plugin_builds() {
        assert_eq!(
            module_version(b"xx\x00path\tgithub.com/containernetworking/plugins/plugins/main/bridge\nmod\tgithub.com/containernetworking/plugins\tv1.4.0\th1:abc\n"),
            Some("v1.4.0".into())
        );
        assert_eq!(module_version(b"path\tgithub.com/containernetworking/plugins/plugins/main/bridge\nbuild\t-compiler=gc\n"), None);
        let dir = tempfile::tempdir().unwrap();
        let (debian, upstream, old) = (
            dir.path().join("debian"),
            dir.path().join("upstream"),
            dir.path().join("old"),
        );
        std::fs::write(
            &debian,
            b"path\tgithub.com/containernetworking/plugins/plugins/main/bridge\n",
        )
        .unwrap();
        std::fs::write(
            &upstream,
            b"mod\tgithub.com/containernetworking/plugins\tv1.5.1\th1:x\n",
        )
        .unwrap();
        std::fs::write(
            &old,
            b"mod\tgithub.com/containernetworking/plugins\tv1.1.1\th1:x\n",
        )
        .unwrap();
        let check = PluginCheck::default();
        assert!(check.check(&debian).is_ok());
        assert!(check.check(&old).is_ok());
        assert!(check.check(&upstream).unwrap_err().contains("v1.5.1"));
        assert!(check.check(&dir.path().join("none")).is_err());
    }
}
