//! LXC guest operations: `/cluster/nextid`, `/nodes/{node}/lxc/…` and storage content.
//!
//! Requests are checked against the API schema before they are sent where a mistake
//! would otherwise come back as a 400 after a round trip (VMID range, sizes), or would be
//! silently misread (a value PVE's property string parser would split).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tracing::debug;

use super::error::ProxmoxError;
use super::form::{property_string, BoolFlag, Params};
use super::transport::Client;
use super::upid::Upid;

/// PVE's VMID range (`pve-vmid`).
pub const MIN_VMID: u32 = 100;
pub const MAX_VMID: u32 = 999_999_999;

fn invalid(param: &str, message: impl Into<String>) -> ProxmoxError {
    ProxmoxError::InvalidParam {
        param: param.to_owned(),
        message: message.into(),
    }
}

pub(crate) fn check_vmid(vmid: u32) -> Result<(), ProxmoxError> {
    if (MIN_VMID..=MAX_VMID).contains(&vmid) {
        Ok(())
    } else {
        Err(invalid(
            "vmid",
            format!("{vmid} is outside {MIN_VMID}..={MAX_VMID}"),
        ))
    }
}

/// PVE's `pve-storage-id`.
pub(crate) fn is_storage_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
}

/// PVE's `dns-name`: labels of letters, digits and inner dashes.
pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A word PVE's property strings take as is (`[-_.\w\d]+`): bridge and interface names.
pub(crate) fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// PVE's `pve-tag`: `[a-z0-9_][a-z0-9_\-+.]*`, case-insensitive.
fn is_tag(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || b"_-+.".contains(&c))
}

/// `rootfs=<storage>:<GiB>`: a new volume of that size. A bare size (`rootfs=8`) is
/// refused to API tokens by PVE ("Only root can pass arbitrary filesystem paths.").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFs {
    pub storage: String,
    pub size_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    Dhcp,
    Manual,
    /// `a.b.c.d/nn`
    Static(String),
}

/// `net0`: `name=eth0,bridge=vmbr0,ip=dhcp[,gw=…][,hwaddr=…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub name: String,
    pub bridge: String,
    pub ip: IpConfig,
    pub gw: Option<String>,
    pub hwaddr: Option<String>,
    pub firewall: Option<bool>,
}

impl NetConfig {
    /// `eth0` on `bridge` with DHCP.
    pub fn dhcp(bridge: impl Into<String>) -> NetConfig {
        NetConfig {
            name: "eth0".into(),
            bridge: bridge.into(),
            ip: IpConfig::Dhcp,
            gw: None,
            hwaddr: None,
            firewall: None,
        }
    }

    pub fn to_property_string(&self) -> Result<String, ProxmoxError> {
        for (k, v) in [("name", &self.name), ("bridge", &self.bridge)] {
            if !is_plain_word(v) {
                return Err(invalid(
                    &format!("net0.{k}"),
                    format!("{v:?} is not a valid name"),
                ));
            }
        }
        let mut items = vec![("name", self.name.clone()), ("bridge", self.bridge.clone())];
        if let Some(f) = self.firewall {
            items.push(("firewall", f.flag().into()));
        }
        if let Some(gw) = &self.gw {
            if gw.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(invalid("net0.gw", format!("{gw:?} is not an IPv4 address")));
            }
            items.push(("gw", gw.clone()));
        }
        if let Some(hw) = &self.hwaddr {
            let ok = hw.split(':').count() == 6
                && hw
                    .split(':')
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(invalid(
                    "net0.hwaddr",
                    format!("{hw:?} is not XX:XX:XX:XX:XX:XX"),
                ));
            }
            items.push(("hwaddr", hw.clone()));
        }
        items.push((
            "ip",
            match &self.ip {
                IpConfig::Dhcp => "dhcp".into(),
                IpConfig::Manual => "manual".into(),
                IpConfig::Static(cidr) => {
                    let ok = cidr.split_once('/').is_some_and(|(a, n)| {
                        a.parse::<std::net::Ipv4Addr>().is_ok()
                            && n.parse::<u8>().is_ok_and(|n| n <= 32)
                    });
                    if !ok {
                        return Err(invalid("net0.ip", format!("{cidr:?} is not IPv4/CIDR")));
                    }
                    cidr.clone()
                }
            },
        ));
        property_string("net0", &items)
    }
}

/// The parameters of `POST /nodes/{node}/lxc` proxrt uses. `None` leaves PVE's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateLxc {
    pub vmid: u32,
    /// A template volid, `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    pub ostemplate: String,
    pub hostname: Option<String>,
    pub memory_mib: Option<u64>,
    pub swap_mib: Option<u64>,
    pub cores: Option<u32>,
    pub cpulimit: Option<f64>,
    pub cpuunits: Option<u32>,
    pub storage: Option<String>,
    pub rootfs: Option<RootFs>,
    pub net0: Option<NetConfig>,
    pub unprivileged: Option<bool>,
    /// `features=nesting=<0|1>`: the only feature flag PVE lets an API token set.
    pub nesting: Option<bool>,
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
    pub ostype: Option<String>,
    pub start: Option<bool>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub ssh_public_keys: Option<String>,
}

impl CreateLxc {
    /// The form, after checking every value against the schema's limits.
    pub fn to_params(&self) -> Result<Params, ProxmoxError> {
        check_vmid(self.vmid)?;
        let mut p: Params = vec![("vmid".into(), self.vmid.to_string())];
        let t = &self.ostemplate;
        let volid_ok = t
            .split_once(':')
            .is_some_and(|(s, rest)| is_storage_id(s) && !rest.is_empty());
        if !volid_ok || t.len() > 255 {
            return Err(invalid(
                "ostemplate",
                format!("{t:?} is not a volume id like local:vztmpl/<file>"),
            ));
        }
        p.push(("ostemplate".into(), t.clone()));
        if let Some(h) = &self.hostname {
            if !is_dns_name(h) {
                return Err(invalid("hostname", format!("{h:?} is not a DNS name")));
            }
            p.push(("hostname".into(), h.clone()));
        }
        if let Some(m) = self.memory_mib {
            if m < 16 {
                return Err(invalid(
                    "memory",
                    format!("{m} MiB is below PVE's minimum of 16"),
                ));
            }
            p.push(("memory".into(), m.to_string()));
        }
        if let Some(s) = self.swap_mib {
            p.push(("swap".into(), s.to_string()));
        }
        if let Some(c) = self.cores {
            if !(1..=8192).contains(&c) {
                return Err(invalid("cores", format!("{c} is outside 1..=8192")));
            }
            p.push(("cores".into(), c.to_string()));
        }
        if let Some(c) = self.cpulimit {
            if !(0.0..=8192.0).contains(&c) {
                return Err(invalid("cpulimit", format!("{c} is outside 0..=8192")));
            }
            // PVE's number type takes plain decimals: no exponent, no NaN.
            p.push((
                "cpulimit".into(),
                format!("{}", (c * 100.0).round() / 100.0),
            ));
        }
        if let Some(u) = self.cpuunits {
            if u > 500_000 {
                return Err(invalid("cpuunits", format!("{u} is above 500000")));
            }
            p.push(("cpuunits".into(), u.to_string()));
        }
        if let Some(s) = &self.storage {
            if !is_storage_id(s) {
                return Err(invalid("storage", format!("{s:?} is not a storage id")));
            }
            p.push(("storage".into(), s.clone()));
        }
        if let Some(r) = &self.rootfs {
            if !is_storage_id(&r.storage) || r.size_gb == 0 {
                return Err(invalid(
                    "rootfs",
                    format!("{}:{} is not <storage>:<GiB>", r.storage, r.size_gb),
                ));
            }
            p.push(("rootfs".into(), format!("{}:{}", r.storage, r.size_gb)));
        }
        if let Some(n) = &self.net0 {
            p.push(("net0".into(), n.to_property_string()?));
        }
        if let Some(u) = self.unprivileged {
            p.push(("unprivileged".into(), u.flag().into()));
        }
        if let Some(n) = self.nesting {
            p.push(("features".into(), format!("nesting={}", n.flag())));
        }
        for (k, v) in [
            ("nameserver", &self.nameserver),
            ("searchdomain", &self.searchdomain),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.contains(char::is_control) {
                    return Err(invalid(k, format!("{v:?} is not a valid list")));
                }
                p.push((k.into(), v.clone()));
            }
        }
        if let Some(o) = &self.ostype {
            p.push(("ostype".into(), o.clone()));
        }
        if let Some(s) = self.start {
            p.push(("start".into(), s.flag().into()));
        }
        if !self.tags.is_empty() {
            if let Some(bad) = self.tags.iter().find(|t| !is_tag(t)) {
                return Err(invalid("tags", format!("{bad:?} is not a valid tag")));
            }
            p.push(("tags".into(), self.tags.join(";")));
        }
        if let Some(d) = &self.description {
            if d.len() > 8192 {
                return Err(invalid("description", "longer than 8192 bytes"));
            }
            p.push(("description".into(), d.clone()));
        }
        if let Some(k) = &self.ssh_public_keys {
            p.push(("ssh-public-keys".into(), k.clone()));
        }
        Ok(p)
    }
}

/// A number PVE may send as a JSON number or a string (`nextid` sends `"105"`).
fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn de_lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    lenient_u64(&v).ok_or_else(|| serde::de::Error::custom(format!("{v} is not a number")))
}

fn de_lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(lenient_u64))
}

fn de_vmid<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = de_lenient_u64(d)?;
    u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("VMID {n} out of range")))
}

/// One entry of `GET /nodes/{node}/lxc`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LxcSummary {
    #[serde(deserialize_with = "de_vmid")]
    pub vmid: u32,
    #[serde(default)]
    pub name: Option<String>,
    /// `running` or `stopped`.
    pub status: String,
    /// `create` while the create task runs.
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub uptime: Option<u64>,
}

/// `GET …/status/current`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LxcStatus {
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub vmid: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    pub status: String,
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub pid: Option<u64>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de_lenient_opt_u64")]
    pub maxmem: Option<u64>,
}

impl LxcStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// One entry of `GET …/interfaces`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub hwaddr: Option<String>,
    /// `10.0.0.5/24`
    #[serde(default)]
    pub inet: Option<String>,
    #[serde(default)]
    pub inet6: Option<String>,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct StorageItem {
    pub volid: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "de_lenient_u64")]
    pub size: u64,
    #[serde(default)]
    pub content: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, ProxmoxError> {
    serde_json::from_value(v).map_err(|e| ProxmoxError::Decode {
        method: "GET".into(),
        path: what.to_owned(),
        message: e.to_string(),
    })
}

fn upid(path: &str, v: Value) -> Result<Upid, ProxmoxError> {
    let text = v.as_str().ok_or_else(|| ProxmoxError::Decode {
        method: "POST".into(),
        path: path.to_owned(),
        message: format!("expected a UPID string, got {v}"),
    })?;
    text.parse()
}

fn flag(k: &str, v: bool) -> (String, String) {
    (k.to_owned(), v.flag().to_owned())
}

impl Client {
    /// PVE's version (`GET /version`): a cheap call that proves the endpoint answers and
    /// accepts the token.
    pub async fn version(&self) -> Result<String, ProxmoxError> {
        let v = self.get(&["version"], &[]).await?;
        Ok(v["version"].as_str().unwrap_or_default().to_owned())
    }

    /// The next free VMID. Not a reservation: a create may still find it taken.
    pub async fn nextid(&self) -> Result<u32, ProxmoxError> {
        let v = self.get(&["cluster", "nextid"], &[]).await?;
        lenient_u64(&v)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (MIN_VMID..=MAX_VMID).contains(n))
            .ok_or_else(|| ProxmoxError::Decode {
                method: "GET".into(),
                path: "/cluster/nextid".into(),
                message: format!("{v} is not a VMID"),
            })
    }

    /// Starts a create task; the guest exists (locked `create`) once this returns.
    pub async fn create_lxc(&self, params: &CreateLxc) -> Result<Upid, ProxmoxError> {
        let form = params.to_params()?;
        let v = self.post(&["nodes", self.node(), "lxc"], &form).await?;
        upid("/nodes/{node}/lxc", v)
    }

    /// Creates with a VMID from `nextid`, taking the next one whenever PVE says the VMID
    /// already exists (nextid reserves nothing, so concurrent creators race for it).
    /// `params.vmid` is ignored. A POST whose outcome is unknown (connection lost after
    /// sending) is `CreateOutcomeUnknown` with the VMID, for the caller to clean up.
    pub async fn create_with_next_vmid(
        &self,
        params: &CreateLxc,
        max_attempts: u32,
    ) -> Result<(u32, Upid), ProxmoxError> {
        let mut last = None;
        for attempt in 1..=max_attempts.max(1) {
            let vmid = self.nextid().await?;
            let p = CreateLxc {
                vmid,
                ..params.clone()
            };
            match self.create_lxc(&p).await {
                Ok(upid) => return Ok((vmid, upid)),
                Err(e) if e.is_already_exists() => {
                    debug!(vmid, attempt, "VMID taken meanwhile, taking the next");
                    last = Some(e);
                    // Spread racing creators apart so they do not all take the same next id.
                    tokio::time::sleep(jitter(attempt)).await;
                }
                Err(e @ (ProxmoxError::Timeout { .. } | ProxmoxError::Transport { .. })) => {
                    return Err(ProxmoxError::CreateOutcomeUnknown {
                        vmid,
                        source: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| invalid("vmid", "no attempt made")))
    }

    pub async fn list_lxc(&self) -> Result<Vec<LxcSummary>, ProxmoxError> {
        let v = self.get(&["nodes", self.node(), "lxc"], &[]).await?;
        decode("/nodes/{node}/lxc", v)
    }

    pub async fn status_current(&self, vmid: u32) -> Result<LxcStatus, ProxmoxError> {
        check_vmid(vmid)?;
        let id = vmid.to_string();
        let v = self
            .get(
                &["nodes", self.node(), "lxc", &id, "status", "current"],
                &[],
            )
            .await?;
        decode("/nodes/{node}/lxc/{vmid}/status/current", v)
    }

    async fn power(
        &self,
        vmid: u32,
        action: &str,
        form: &[(String, String)],
    ) -> Result<Upid, ProxmoxError> {
        check_vmid(vmid)?;
        let id = vmid.to_string();
        let v = self
            .post(&["nodes", self.node(), "lxc", &id, "status", action], form)
            .await?;
        upid(action, v)
    }

    /// Starts the guest (task). Fails at once (500) if it already runs.
    pub async fn start(&self, vmid: u32) -> Result<Upid, ProxmoxError> {
        self.power(vmid, "start", &[]).await
    }

    /// Hard stop (task). Fails at once (500 "not running") if stopped or unknown.
    pub async fn stop(&self, vmid: u32) -> Result<Upid, ProxmoxError> {
        self.power(vmid, "stop", &[]).await
    }

    /// Clean shutdown (task): `timeout` seconds, then a hard stop if `force_stop`.
    pub async fn shutdown(
        &self,
        vmid: u32,
        timeout: Option<Duration>,
        force_stop: bool,
    ) -> Result<Upid, ProxmoxError> {
        let mut form = vec![flag("forceStop", force_stop)];
        if let Some(t) = timeout {
            form.push(("timeout".into(), t.as_secs().to_string()));
        }
        self.power(vmid, "shutdown", &form).await
    }

    /// Destroys the guest (task); `purge` also removes it from backup jobs, HA and
    /// replication. PVE refuses while it runs unless `force`.
    pub async fn destroy(&self, vmid: u32, purge: bool, force: bool) -> Result<Upid, ProxmoxError> {
        check_vmid(vmid)?;
        let id = vmid.to_string();
        let mut query = vec![flag("purge", purge)];
        if force {
            query.push(flag("force", true));
        }
        let v = self
            .delete(&["nodes", self.node(), "lxc", &id], &query)
            .await?;
        upid("/nodes/{node}/lxc/{vmid}", v)
    }

    /// The guest's configuration, key by key (`hostname`, `memory`, `net0`, `rootfs`, …).
    pub async fn get_config(&self, vmid: u32) -> Result<BTreeMap<String, Value>, ProxmoxError> {
        check_vmid(vmid)?;
        let id = vmid.to_string();
        let v = self
            .get(&["nodes", self.node(), "lxc", &id, "config"], &[])
            .await?;
        decode("/nodes/{node}/lxc/{vmid}/config", v)
    }

    /// Updates configuration keys (synchronous in PVE).
    pub async fn set_config(
        &self,
        vmid: u32,
        params: &[(String, String)],
    ) -> Result<(), ProxmoxError> {
        check_vmid(vmid)?;
        let id = vmid.to_string();
        self.put(&["nodes", self.node(), "lxc", &id, "config"], params)
            .await?;
        Ok(())
    }

    /// The guest's interfaces; `None` when PVE has none to report (stopped or unknown).
    pub async fn interfaces(&self, vmid: u32) -> Result<Option<Vec<Interface>>, ProxmoxError> {
        check_vmid(vmid)?;
        let id = vmid.to_string();
        let v = self
            .get(&["nodes", self.node(), "lxc", &id, "interfaces"], &[])
            .await?;
        match v {
            Value::Null => Ok(None),
            v => decode("/nodes/{node}/lxc/{vmid}/interfaces", v).map(Some),
        }
    }

    /// Volumes of one content type on a storage (`vztmpl` for templates).
    pub async fn storage_content(
        &self,
        storage: &str,
        content: &str,
    ) -> Result<Vec<StorageItem>, ProxmoxError> {
        if !is_storage_id(storage) {
            return Err(invalid(
                "storage",
                format!("{storage:?} is not a storage id"),
            ));
        }
        let v = self
            .get(
                &["nodes", self.node(), "storage", storage, "content"],
                &[("content".into(), content.to_owned())],
            )
            .await?;
        decode("/nodes/{node}/storage/{storage}/content", v)
    }
}

fn jitter(attempt: u32) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::fill(&mut b)
        .map(|_| u16::from_le_bytes(b))
        .unwrap_or(0);
    Duration::from_millis(u64::from(r % (5 * attempt.min(10) as u16 + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CreateLxc {
        CreateLxc {
            vmid: 105,
            ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
            ..Default::default()
        }
    }

    #[test]
    fn full_create_form() {
        let p = CreateLxc {
            hostname: Some("web-1".into()),
            memory_mib: Some(512),
            swap_mib: Some(0),
            cores: Some(2),
            cpulimit: Some(1.5),
            cpuunits: Some(100),
            rootfs: Some(RootFs {
                storage: "local-lvm".into(),
                size_gb: 8,
            }),
            net0: Some(NetConfig::dhcp("vmbr0")),
            unprivileged: Some(true),
            nesting: Some(true),
            tags: vec!["proxrt".into(), "pod-1234".into()],
            ..base()
        };
        let form = p.to_params().unwrap();
        let get = |k: &str| form.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("net0"), Some("name=eth0,bridge=vmbr0,ip=dhcp"));
        assert_eq!(get("rootfs"), Some("local-lvm:8"));
        assert_eq!(get("unprivileged"), Some("1"));
        assert_eq!(get("features"), Some("nesting=1"));
        assert_eq!(get("tags"), Some("proxrt;pod-1234"));
        assert_eq!(get("cpulimit"), Some("1.5"));
        let body = super::super::encode_form(&form);
        assert!(
            body.contains("net0=name%3Deth0%2Cbridge%3Dvmbr0%2Cip%3Ddhcp"),
            "{body}"
        );
        assert!(body.contains("rootfs=local-lvm%3A8"), "{body}");
    }

    #[test]
    fn out_of_schema_values_are_refused_before_sending() {
        let cases = [
            CreateLxc { vmid: 99, ..base() },
            CreateLxc {
                vmid: 1_000_000_000,
                ..base()
            },
            CreateLxc {
                ostemplate: "debian.tar.zst".into(),
                ..base()
            },
            CreateLxc {
                hostname: Some("bad_name".into()),
                ..base()
            },
            CreateLxc {
                memory_mib: Some(8),
                ..base()
            },
            CreateLxc {
                cores: Some(0),
                ..base()
            },
            CreateLxc {
                cpulimit: Some(-1.0),
                ..base()
            },
            CreateLxc {
                rootfs: Some(RootFs {
                    storage: "local-lvm".into(),
                    size_gb: 0,
                }),
                ..base()
            },
            CreateLxc {
                net0: Some(NetConfig::dhcp("vmbr0,firewall=1")),
                ..base()
            },
            CreateLxc {
                tags: vec!["a b".into()],
                ..base()
            },
            CreateLxc {
                net0: Some(NetConfig {
                    ip: IpConfig::Static("10.0.0.1".into()),
                    ..NetConfig::dhcp("vmbr0")
                }),
                ..base()
            },
        ];
        for c in cases {
            assert!(
                matches!(c.to_params(), Err(ProxmoxError::InvalidParam { .. })),
                "{c:?}"
            );
        }
    }

    #[test]
    fn static_ip_and_gateway() {
        let n = NetConfig {
            ip: IpConfig::Static("10.1.2.3/24".into()),
            gw: Some("10.1.2.1".into()),
            hwaddr: Some("BC:24:11:00:00:01".into()),
            ..NetConfig::dhcp("vmbr1")
        };
        assert_eq!(
            n.to_property_string().unwrap(),
            "name=eth0,bridge=vmbr1,gw=10.1.2.1,hwaddr=BC:24:11:00:00:01,ip=10.1.2.3/24"
        );
    }

    #[test]
    fn lenient_numbers() {
        assert_eq!(lenient_u64(&Value::String("105".into())), Some(105));
        assert_eq!(lenient_u64(&serde_json::json!(105)), Some(105));
        assert_eq!(lenient_u64(&Value::Null), None);
        let s: LxcSummary = serde_json::from_value(serde_json::json!(
            {"vmid": "105", "status": "stopped", "lock": "create", "maxmem": 536870912}
        ))
        .unwrap();
        assert_eq!(s.vmid, 105);
        assert_eq!(s.lock.as_deref(), Some("create"));
    }
}
