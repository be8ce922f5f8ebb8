//! Network configuration files (CNI spec 1.0.0 "Network configuration list"): parsing
//! `.conflist` files and single-plugin `.conf`/`.json` files, choosing the first valid one
//! of a directory, and building each plugin's stdin. Pure apart from `load_dir`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Config versions whose plugins proxrt runs: the ones Debian's plugins (1.1.x) speak.
const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// File name endings libcni reads; anything else in the directory is ignored.
pub const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

/// One network configuration list, as read from a file (a single-plugin file becomes a
/// list of one).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Each plugin's object as written in the file (it has a string `type`).
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// The plugin types, in order.
    pub fn types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .map(|p| p.get("type").and_then(Value::as_str).unwrap_or(""))
            .collect()
    }

    /// The list as JSON (stored with a pod so that DEL uses what ADD used).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": self.plugins,
        })
    }

    /// Whether DEL passes the ADD result as `prevResult` (spec 0.4.0 and later).
    pub fn del_has_prev_result(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }
}

/// Parses a config file's bytes; `file` decides between a list and a single plugin
/// (`.conflist` is a list).
pub fn parse(file: &Path, bytes: &[u8]) -> Result<NetworkList, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let is_list = file.extension().is_some_and(|e| e == "conflist");
    let text = |key: &str| -> Result<String, String> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("no {key:?} string")),
        }
    };
    let name = text("name")?;
    let cni_version = text("cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(format!(
            "cniVersion {cni_version:?} is not one proxrt runs ({})",
            SUPPORTED_VERSIONS.join(", ")
        ));
    }
    let plugins = if is_list {
        match obj.get("plugins") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|p| match p {
                    Value::Object(p) => Ok(p.clone()),
                    _ => Err("a plugin entry is not an object".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("no \"plugins\" list".into()),
        }
    } else {
        let mut plugin = obj.clone();
        plugin.remove("cniVersion");
        plugin.remove("name");
        vec![plugin]
    };
    for p in &plugins {
        match p.get("type") {
            Some(Value::String(t)) if valid_type(t) => {}
            _ => return Err("a plugin has no valid \"type\"".into()),
        }
    }
    Ok(NetworkList {
        file: file.to_owned(),
        name,
        cni_version,
        plugins,
    })
}

/// A plugin type is a file name in a bin dir, never a path.
fn valid_type(t: &str) -> bool {
    !t.is_empty() && !t.contains('/') && t != "." && t != ".."
}

/// The binary of plugin `kind`: the first bin dir that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], kind: &str) -> Option<PathBuf> {
    if !valid_type(kind) {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file())
}

/// The config files of `dir` libcni would look at, in lexical order.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The first valid config of `dir` whose plugins are all found in `bin_dirs`; the error
/// says why there is none (naming each file skipped and why).
pub fn load_dir(dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkList, String> {
    let files = match config_files(dir) {
        Ok(f) => f,
        Err(e) => return Err(format!("no network config found in {}: {e}", dir.display())),
    };
    let mut skipped = Vec::new();
    for file in files {
        let parsed = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse(&file, &bytes))
            .and_then(|list| {
                match list
                    .types()
                    .into_iter()
                    .find(|t| find_plugin(bin_dirs, t).is_none())
                {
                    Some(t) => Err(format!(
                        "plugin {t:?} not found in {}",
                        bin_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    None => Ok(list),
                }
            });
        match parsed {
            Ok(list) => {
                for (f, why) in &skipped {
                    tracing::warn!(file = %f, reason = %why, "CNI config skipped");
                }
                return Ok(list);
            }
            Err(why) => skipped.push((file.display().to_string(), why)),
        }
    }
    let mut message = format!("no network config found in {}", dir.display());
    if !skipped.is_empty() {
        let why: Vec<String> = skipped.iter().map(|(f, w)| format!("{f}: {w}")).collect();
        message.push_str(&format!(" (invalid: {})", why.join("; ")));
    }
    Err(message)
}

/// What plugin number `index` of `list` reads on stdin: its own object with the list's
/// `name` and `cniVersion`, `runtimeConfig` holding those of `runtime`'s capability args
/// the plugin declares in `capabilities`, and `prevResult` when there is one.
pub fn plugin_stdin(
    list: &NetworkList,
    index: usize,
    runtime: &Map<String, Value>,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf = list.plugins[index].clone();
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    conf.insert("name".into(), Value::String(list.name.clone()));
    let declared = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut rc = Map::new();
    for (cap, value) in runtime {
        if declared.get(cap).and_then(Value::as_bool) == Some(true) {
            rc.insert(cap.clone(), value.clone());
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"pods","plugins":[
        {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}},
        {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn parses_lists_and_single_plugins() {
        let l = parse(Path::new("/d/10-a.conflist"), LIST.as_bytes()).unwrap();
        assert_eq!(l.name, "pods");
        assert_eq!(l.types(), ["bridge", "portmap"]);
        let single = r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"b0"}"#;
        let s = parse(Path::new("/d/10-a.conf"), single.as_bytes()).unwrap();
        assert_eq!(s.types(), ["bridge"]);
        assert!(s.plugins[0].get("name").is_none());
        assert!(s.del_has_prev_result());
    }

    #[test]
    fn refuses_what_libcni_refuses() {
        for (bad, why) in [
            ("{", "not JSON"),
            (
                r#"{"name":"x","plugins":[{"type":"bridge"}]}"#,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"x","plugins":[{"type":"b"}]}"#,
                "9.9.9",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
                "plugins",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../sh"}]}"#,
                "type",
            ),
        ] {
            let e = parse(Path::new("a.conflist"), bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let l = parse(Path::new("a.conflist"), LIST.as_bytes()).unwrap();
        let mut rt = Map::new();
        rt.insert(
            "portMappings".into(),
            serde_json::json!([{"hostPort": 8080}]),
        );
        rt.insert("dns".into(), serde_json::json!({"servers": ["10.0.0.10"]}));
        let bridge = plugin_stdin(&l, 0, &rt, None);
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["name"], "pods");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        let prev = serde_json::json!({"ips": []});
        let portmap = plugin_stdin(&l, 1, &rt, Some(&prev));
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert!(portmap["runtimeConfig"].get("dns").is_none());
        assert_eq!(portmap["prevResult"], prev);
    }

    #[test]
    fn first_valid_file_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        for t in ["bridge", "portmap"] {
            std::fs::write(bin.path().join(t), "").unwrap();
        }
        let bins = [bin.path().to_owned()];
        assert!(load_dir(dir.path(), &bins)
            .unwrap_err()
            .starts_with("no network config found in"));
        std::fs::write(dir.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(dir.path().join("07-notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("20-b.conflist"), LIST).unwrap();
        let missing = LIST.replace("portmap", "nosuch");
        std::fs::write(dir.path().join("10-missing.conflist"), missing).unwrap();
        let l = load_dir(dir.path(), &bins).unwrap();
        assert!(l.file.ends_with("20-b.conflist"));
        std::fs::remove_file(dir.path().join("20-b.conflist")).unwrap();
        let e = load_dir(dir.path(), &bins).unwrap_err();
        assert!(e.contains("05-broken.conflist: not JSON"), "{e}");
        assert!(e.contains("plugin \"nosuch\" not found"), "{e}");
    }
}
