//! The daemon's configuration: one TOML file whose every key has a default.
//!
//! The defaults live in one place, `default.toml` beside this file, which is embedded
//! in the binary, printed by `proxrt config default` and documented key by key in
//! docs/configuration.md. A user file is laid over it table by table, so a file only
//! names what it changes; unknown keys and bad values are refused with the key's path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default configuration file, as shipped.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Where `proxrt serve` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/proxrt/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("config file {file}: key `{key}`: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub runtime: RuntimeConfig,
    /// RuntimeClass handlers: `[handlers.<name>]` (docs/runtime-selection.md).
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// `[[image_rules]]`, in the order written; a file that lists any replaces the
    /// shipped ones.
    pub image_rules: Vec<ImageRuleConfig>,
    pub crun: CrunConfig,
    pub images: ImagesConfig,
    pub registries: BTreeMap<String, RegistryConfig>,
    pub proxmox: ProxmoxConfig,
    pub metrics: MetricsConfig,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub socket_mode: String,
    pub socket_group: String,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub log_level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub default_backend: String,
    pub cgroup_driver: String,
    pub max_log_line_size: usize,
    pub exec_sync_max_output: usize,
    /// Create containers from a copy of the zygote's create template (architecture.md,
    /// "The mount namespace a container is created in"); false: from a copy of the host's
    /// mount namespace each time.
    pub create_template: bool,
    /// The zygote lets the template go after this long without a create (it holds the
    /// filesystems it keeps referenced) and makes it again for the next pod or create.
    pub create_template_idle_seconds: u64,
    /// After a create begins (or a pod runs), the kernel's cgroup migration lock is kept
    /// warm this long (backend/host/migration.rs); 0: taken once each time.
    pub keep_cgroup_lock_warm_ms: u64,
}

/// `[handlers.<name>]`: a RuntimeClass handler (also named by the `proxrt.io/runtime` pod
/// annotation).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// `libcontainer`, `crun` or `proxmox-lxc`.
    pub backend: String,
    /// Passed to the backend; each backend names the keys it takes (libcontainer and crun
    /// take none, so a typo is caught at startup).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// One `[[image_rules]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageRuleConfig {
    #[serde(rename = "match")]
    pub kind: MatchKind,
    pub pattern: String,
    pub backend: String,
    /// Higher first; equal priorities keep the file's order.
    #[serde(default)]
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// The name form starts with the pattern.
    Prefix,
    /// Shell glob over the whole name form; `*` does not cross `/`, `**` does.
    Glob,
    /// A regular expression (Rust `regex` syntax) matching a whole name form.
    Regex,
}

impl MatchKind {
    pub fn name(self) -> &'static str {
        match self {
            MatchKind::Prefix => "prefix",
            MatchKind::Glob => "glob",
            MatchKind::Regex => "regex",
        }
    }
}

/// `[crun]`: the crun backend. Its state root is `<daemon.run_dir>/crun`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrunConfig {
    /// The crun binary: an absolute path, or a name looked up in `PATH` at startup.
    pub path: String,
    pub hybrid_cgroups: HybridCgroups,
}

/// What the crun backend does on a hybrid cgroup host whose cgroup2 hierarchy still has
/// controllers, which crun refuses (docs/libcontainer.md).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HybridCgroups {
    /// The backend is unavailable, with crun's reason.
    Refuse,
    /// Every crun command runs in a private mount namespace without the cgroup2 mount,
    /// where crun sees (and manages) the cgroup v1 hierarchies only, as libcontainer does.
    V1View,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    pub max_concurrent_downloads: usize,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub pull_timeout_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub mirrors: Vec<String>,
    pub plain_http: bool,
    pub mirrors_only: bool,
}

/// `[proxmox]`: the Proxmox VE API the `proxmox-lxc` backend creates guests through
/// (docs/proxmox.md). Key names are fixed by issue 10: docs and outside tooling use them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxConfig {
    /// `https://host[:port]`, tried in order; empty: the backend is unavailable.
    pub endpoints: Vec<String>,
    /// The node guests are created on.
    pub node: String,
    /// `user@realm!tokenid`.
    pub token_id: String,
    /// A file holding the token secret (never the secret itself in the config).
    pub token_secret_file: PathBuf,
    /// PEM CA certificates (`""`: none).
    pub ca_file: PathBuf,
    /// Pinned SHA-256 fingerprint of the node's leaf certificate (`""`: none).
    pub fingerprint: String,
    pub insecure: bool,
    /// Storage of guest root filesystems.
    pub storage: String,
    pub rootfs_size_gb: u32,
    pub bridge: String,
    pub task_timeout_secs: u64,
    /// `pct`, for ExecSync (the API has no exec for LXC guests).
    pub pct_path: String,
    /// `[[proxmox.templates]]`: image → template volid, first match wins.
    #[serde(default)]
    pub templates: Vec<TemplateRuleConfig>,
}

impl ProxmoxConfig {
    /// Why the backend is unavailable when no endpoint is configured.
    pub const NO_ENDPOINTS: &'static str = "no [proxmox] endpoints configured";

    /// `Some(reason)` when the config cannot reach a Proxmox API at all.
    pub fn unavailable_reason(&self) -> Option<&'static str> {
        self.endpoints.is_empty().then_some(Self::NO_ENDPOINTS)
    }
}

/// `[metrics]`: the Prometheus endpoint (docs/configuration.md, src/metrics).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` served over plain HTTP at `/metrics`; `""`: no endpoint.
    pub address: String,
}

impl MetricsConfig {
    /// The address to serve on: `None` when metrics are off. Only an IP literal and a
    /// port: a name would be resolved at every start, and could resolve off-host.
    pub fn socket_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        if self.address.is_empty() {
            return Ok(None);
        }
        self.address.parse().map(Some).map_err(|_| {
            format!(
                "{:?} is not an address like \"127.0.0.1:9712\" or \"[::1]:9712\" (an IP and a port)",
                self.address
            )
        })
    }
}

/// `[streaming]`: the server Exec, Attach and PortForward hand out URLs on
/// (docs/configuration.md, src/streaming).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    /// `ip:port` the streaming server listens on; port 0 takes a free port.
    pub address: String,
    /// A session in which no byte moves either way for this long is ended.
    pub idle_timeout_secs: u64,
}

impl StreamingConfig {
    /// The address to listen on: an IP literal and a port (like `[metrics] address`).
    pub fn socket_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.address.parse().map_err(|_| {
            format!(
                "{:?} is not an address like \"127.0.0.1:0\" or \"[::1]:10010\" (an IP and a port)",
                self.address
            )
        })
    }
}

/// `[cni]`: pod networking for pods with their own network namespace on the host backends
/// (docs/networking.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    /// Where network configs are read (`.conflist`, `.conf`, `.json`; the first valid one
    /// in lexical order is used).
    pub conf_dir: PathBuf,
    /// Where plugin binaries are looked up, in order (CNI_PATH).
    pub bin_dirs: Vec<PathBuf>,
    /// A config file with `{{.PodCIDR}}` placeholders, written to
    /// `<conf_dir>/10-proxrt-net.conflist` when UpdateRuntimeConfig hands over a pod CIDR
    /// and no valid config exists (containerd's `conf_template`); `""`: none.
    pub conf_template: PathBuf,
    /// ADD and DEL of the standard bridge network in-process (src/network/fast); false:
    /// the plugins always.
    pub fast_path: bool,
}

/// One `[[proxmox.templates]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TemplateRuleConfig {
    #[serde(rename = "match")]
    pub kind: MatchKind,
    pub pattern: String,
    /// A template volid, `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    pub template: String,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml_str(DEFAULT_TOML, Path::new("<embedded default>"))
            .unwrap_or_else(|e| panic!("embedded default config is invalid: {e}"))
    }
}

impl Config {
    /// Reads `path`, laid over the embedded defaults. A missing file at the default
    /// path means "all defaults"; a missing file that was asked for is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml_str(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                file: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses a user file's text over the defaults and validates the result.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let syntax = |message: String| ConfigError::Syntax {
            file: file.to_owned(),
            message,
        };
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e| syntax(e.to_string()))?;
        let user: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
        merge_tables(&mut merged, user);
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                ConfigError::Key {
                    file: file.to_owned(),
                    key: e.path().to_string(),
                    message: e.inner().to_string(),
                }
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Key {
                file: file.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }

    /// Checks values serde cannot: returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_owned(), message));
        if self.daemon.socket_mode().is_none() {
            return bad(
                "daemon.socket_mode",
                format!(
                    "{:?} is not an octal mode like \"0660\"",
                    self.daemon.socket_mode
                ),
            );
        }
        for (key, path) in [
            ("daemon.socket", &self.daemon.socket),
            ("daemon.root", &self.daemon.root),
            ("daemon.run_dir", &self.daemon.run_dir),
            ("cni.conf_dir", &self.cni.conf_dir),
        ] {
            if !path.is_absolute() {
                return bad(key, format!("{} is not an absolute path", path.display()));
            }
        }
        if let Some(dir) = self.cni.bin_dirs.iter().find(|d| !d.is_absolute()) {
            return bad(
                "cni.bin_dirs",
                format!("{} is not an absolute path", dir.display()),
            );
        }
        let template = &self.cni.conf_template;
        if !template.as_os_str().is_empty() && !template.is_absolute() {
            return bad(
                "cni.conf_template",
                format!("{} is not an absolute path", template.display()),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.daemon.log_level).is_err() {
            return bad(
                "daemon.log_level",
                format!("{:?} is not a log filter", self.daemon.log_level),
            );
        }
        // runtime.default_backend, [handlers] and [[image_rules]]: compiled once here so
        // that a bad rule stops startup naming it.
        crate::select::Selector::new(self)?;
        crate::proxmox::validate_config(&self.proxmox)?;
        if let Err(message) = self.metrics.socket_addr() {
            return bad("metrics.address", message);
        }
        if let Err(message) = self.streaming.socket_addr() {
            return bad("streaming.address", message);
        }
        if self.streaming.idle_timeout_secs == 0 {
            return bad(
                "streaming.idle_timeout_secs",
                "must be at least 1 (seconds without a byte before a session ends)".into(),
            );
        }
        if self.crun.path.is_empty() {
            return bad("crun.path", "must name the crun binary".into());
        }
        if self.runtime.cgroup_driver != "cgroupfs" {
            return bad(
                "runtime.cgroup_driver",
                format!(
                    "{:?} is not supported (supported: cgroupfs)",
                    self.runtime.cgroup_driver
                ),
            );
        }
        if self.runtime.max_log_line_size < 64 {
            return bad(
                "runtime.max_log_line_size",
                "must be at least 64 bytes".into(),
            );
        }
        if self.runtime.create_template_idle_seconds == 0 {
            return bad(
                "runtime.create_template_idle_seconds",
                "must be at least 1 (create_template = false goes without the template)".into(),
            );
        }
        if self.images.max_concurrent_downloads == 0 {
            return bad(
                "images.max_concurrent_downloads",
                "must be at least 1".into(),
            );
        }
        if self.images.pull_timeout_secs == 0 {
            return bad("images.pull_timeout_secs", "must be at least 1".into());
        }
        for (host, registry) in &self.registries {
            if host.is_empty() || host.contains('/') {
                return bad(
                    &format!("registries.{host:?}"),
                    "the key must be a registry host[:port]".into(),
                );
            }
            for (i, mirror) in registry.mirrors.iter().enumerate() {
                if parse_endpoint(mirror).is_none() {
                    return bad(
                        &format!("registries.{host:?}.mirrors[{i}]"),
                        format!("{mirror:?} is not an endpoint like \"https://mirror.example\" or \"http://127.0.0.1:5000\""),
                    );
                }
            }
            if registry.mirrors_only && registry.mirrors.is_empty() {
                return bad(
                    &format!("registries.{host:?}.mirrors_only"),
                    "set, but no mirrors are listed".into(),
                );
            }
        }
        Ok(())
    }
}

impl DaemonConfig {
    /// The socket's permission bits, parsed from the octal string.
    pub fn socket_mode(&self) -> Option<u32> {
        let digits = self.socket_mode.trim_start_matches("0o");
        u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
    }
}

/// A registry endpoint from the config: `https://host[:port]` or `http://host[:port]`.
/// Returns (host[:port], plain_http).
pub fn parse_endpoint(url: &str) -> Option<(String, bool)> {
    let (rest, plain) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, false)
    } else {
        return None;
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), plain))
}

fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/etc/proxrt/config.toml"))
    }

    #[test]
    fn embedded_default_parses_with_documented_values() {
        let c = Config::default();
        assert_eq!(c.daemon.socket, Path::new("/run/proxrt/proxrt.sock"));
        assert_eq!(c.daemon.root, Path::new("/var/lib/proxrt"));
        assert_eq!(c.daemon.run_dir, Path::new("/run/proxrt"));
        assert_eq!(c.daemon.socket_mode(), Some(0o660));
        assert_eq!(c.runtime.cgroup_driver, "cgroupfs");
        assert!(c.registries.is_empty());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = parse("[daemon]\nroot = \"/tmp/x\"\n[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n").unwrap();
        assert_eq!(c.daemon.root, Path::new("/tmp/x"));
        assert_eq!(c.daemon.run_dir, Path::new("/run/proxrt"));
        assert_eq!(
            c.registries["registry.k8s.io"].mirrors,
            vec!["http://127.0.0.1:5000"]
        );
    }

    #[test]
    fn unknown_key_is_named_with_file() {
        let err = parse("[daemon]\nsockett = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/proxrt/config.toml"), "{err}");
        assert!(err.contains("daemon") && err.contains("sockett"), "{err}");
    }

    #[test]
    fn unknown_section_is_refused() {
        let err = parse("[deamon]\n").unwrap_err().to_string();
        assert!(err.contains("deamon"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse("[images]\nmax_concurrent_downloads = \"three\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("images.max_concurrent_downloads"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (text, key) in [
            ("[daemon]\nsocket_mode = \"rw\"\n", "daemon.socket_mode"),
            ("[daemon]\nroot = \"relative\"\n", "daemon.root"),
            (
                "[runtime]\ncgroup_driver = \"systemd\"\n",
                "runtime.cgroup_driver",
            ),
            (
                "[images]\nmax_concurrent_downloads = 0\n",
                "images.max_concurrent_downloads",
            ),
            (
                "[registries.\"r.io\"]\nmirrors = [\"ftp://x\"]\n",
                "mirrors[0]",
            ),
            ("[registries.\"r.io\"]\nmirrorz = []\n", "mirrorz"),
            (
                "[metrics]\naddress = \"localhost:9712\"\n",
                "metrics.address",
            ),
            ("[metrics]\naddress = \"127.0.0.1\"\n", "metrics.address"),
            ("[metrics]\nport = 9712\n", "port"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_take_an_ip_and_port() {
        assert_eq!(Config::default().metrics.socket_addr(), Ok(None));
        let c = parse("[metrics]\naddress = \"[::1]:9712\"\n").unwrap();
        assert_eq!(
            c.metrics.socket_addr(),
            Ok(Some("[::1]:9712".parse().unwrap()))
        );
    }

    #[test]
    fn proxmox_defaults_leave_the_backend_unavailable() {
        let c = Config::default();
        assert_eq!(
            c.proxmox.unavailable_reason(),
            Some("no [proxmox] endpoints configured")
        );
        assert_eq!(c.proxmox.storage, "local-lvm");
        assert_eq!(c.proxmox.rootfs_size_gb, 8);
        assert_eq!(c.proxmox.bridge, "vmbr0");
        assert_eq!(c.proxmox.task_timeout_secs, 300);
        assert_eq!(c.proxmox.pct_path, "pct");
        assert!(c.proxmox.templates.is_empty());
    }

    #[test]
    fn proxmox_section_parses_with_templates() {
        let c = parse(
            "[proxmox]\nendpoints = [\"https://pve1:8006\", \"https://10.0.0.2\"]\n\
             token_id = \"proxrt@pve!cri\"\ntoken_secret_file = \"/etc/proxrt/proxmox-token\"\n\
             fingerprint = \"aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99\"\n\
             [[proxmox.templates]]\nmatch = \"prefix\"\npattern = \"lxc/debian-12\"\n\
             template = \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.proxmox.endpoints.len(), 2);
        assert_eq!(c.proxmox.unavailable_reason(), None);
        assert_eq!(c.proxmox.templates[0].kind, MatchKind::Prefix);
        assert_eq!(c.proxmox.node, "pve");
    }

    #[test]
    fn invalid_proxmox_values_name_the_key() {
        for (extra, key) in [
            ("", ""),
            ("endpoints = [\"http://pve1\"]\n", "proxmox.endpoints[0]"),
            ("token_id = \"proxrt@pve\"\n", "proxmox.token_id"),
            ("fingerprint = \"AA:BB\"\n", "proxmox.fingerprint"),
            ("ca_file = \"/x.pem\"\nfingerprint = \"AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\"\n", "proxmox.fingerprint"),
            ("insecure = true\nca_file = \"/x.pem\"\n", "proxmox.insecure"),
            ("storage = \"Local LVM\"\n", "proxmox.storage"),
            ("node = \"-pve\"\n", "proxmox.node"),
            ("rootfs_size_gb = 0\n", "proxmox.rootfs_size_gb"),
            ("bridge = \"vmbr0,tag=5\"\n", "proxmox.bridge"),
            ("task_timeout_secs = 0\n", "proxmox.task_timeout_secs"),
            ("token_secret_file = \"relative\"\n", "proxmox.token_secret_file"),
            ("[[proxmox.templates]]\nmatch = \"regex\"\npattern = \"(\"\ntemplate = \"local:vztmpl/x.tar.zst\"\n", "proxmox.templates[0]"),
            ("[[proxmox.templates]]\nmatch = \"prefix\"\npattern = \"lxc/\"\ntemplate = \"x.tar.zst\"\n", "proxmox.templates[0].template"),
            ("endpointz = []\n", "endpointz"),
        ] {
            let mut text = "[proxmox]\n".to_owned();
            if !extra.contains("endpoints =") {
                text += "endpoints = [\"https://pve1:8006\"]\n";
            }
            if !extra.contains("token_id =") {
                text += "token_id = \"proxrt@pve!cri\"\n";
            }
            text += extra;
            match (key, parse(&text)) {
                ("", r) => assert!(r.is_ok(), "{text}: {r:?}"),
                (key, r) => {
                    let err = r.unwrap_err().to_string();
                    assert!(err.contains(key), "{text}: {err}");
                }
            }
        }
    }

    #[test]
    fn syntax_error_names_file() {
        let err = parse("[daemon\n").unwrap_err().to_string();
        assert!(
            err.starts_with("config file /etc/proxrt/config.toml:"),
            "{err}"
        );
    }

    #[test]
    fn missing_default_file_means_defaults_but_explicit_is_an_error() {
        let p = Path::new("/nonexistent/proxrt.toml");
        assert!(Config::load(p, false).is_ok());
        assert!(Config::load(p, true).is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:5000"),
            Some(("127.0.0.1:5000".into(), true))
        );
        assert_eq!(
            parse_endpoint("https://m.io/"),
            Some(("m.io".into(), false))
        );
        assert_eq!(parse_endpoint("m.io"), None);
        assert_eq!(parse_endpoint("https://m.io/v2/x"), None);
    }
}
