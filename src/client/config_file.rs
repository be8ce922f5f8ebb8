//! crictl-style JSON config files (`proxrt runp pod.json`, `proxrt create POD ctr.json`)
//! read into the CRI structs.
//!
//! The structs' serde derive (k8s-cri) has no `#[serde(default)]`: every field that is
//! not an `Option` must be spelled out, while crictl's files name only the fields they
//! set. A missing field is filled with its zero value, and which zero (`""`, `0`,
//! `false`, `[]`, `{}`) is learnt from the deserializer itself: it names the missing
//! field and rejects a zero of the wrong type at that path.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ClientError;

/// Zero values in the order they are tried for a missing field.
fn zeros() -> [Value; 5] {
    [
        Value::String(String::new()),
        Value::from(0),
        Value::Bool(false),
        Value::Array(Vec::new()),
        Value::Object(serde_json::Map::new()),
    ]
}

/// Reads a JSON config file into `T`; field names are snake_case as in the proto
/// (`log_directory`, `security_context`), enums are numbers (`"network": 2`).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    parse_config(&text).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    // Which zero each filled field (by JSON pointer) currently holds.
    let mut filled: HashMap<String, usize> = HashMap::new();
    // Bounded: each round fills a field or advances one field's zero.
    for _ in 0..10_000 {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let at = pointer(err.path());
        let message = err.inner().to_string();
        let (pointer, zero) = if let Some(field) = missing_field(&message) {
            (format!("{at}/{}", escape(field)), 0)
        } else if let Some(&tried) = filled.get(&at).filter(|&&z| z + 1 < zeros().len()) {
            (at, tried + 1)
        } else {
            let shown = err.path().to_string();
            return Err(if shown == "." {
                message
            } else {
                format!("{shown}: {message}")
            });
        };
        set(&mut value, &pointer, zeros()[zero].clone())?;
        filled.insert(pointer, zero);
    }
    Err("config has too many missing fields".into())
}

/// serde's "missing field `name`" message → `name`.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    Some(&rest[..rest.find('`')?])
}

fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('/');
                out.push_str(&escape(key));
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Sets the value at a JSON pointer whose parent exists and is an object.
fn set(root: &mut Value, pointer: &str, v: Value) -> Result<(), String> {
    let (parent, key) = pointer
        .rsplit_once('/')
        .ok_or_else(|| format!("bad path {pointer}"))?;
    let key = key.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key, v);
            Ok(())
        }
        _ => Err(format!(
            "cannot fill {pointer}: its parent is not an object"
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};

    use super::*;

    #[test]
    fn fills_every_missing_field_of_a_crictl_pod_config() {
        let pod: PodSandboxConfig = parse_config(
            r#"{
                "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
                "log_directory": "/tmp/logs",
                "labels": {"app": "web"},
                "linux": {"security_context": {"namespace_options": {"network": 2}}}
            }"#,
        )
        .unwrap();
        let m = pod.metadata.unwrap();
        assert_eq!((m.name.as_str(), m.attempt), ("web", 0));
        assert_eq!(pod.log_directory, "/tmp/logs");
        assert_eq!(pod.hostname, "");
        assert_eq!(pod.labels["app"], "web");
        let ns = pod
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        assert_eq!(ns.pid, 0);
        assert!(pod.dns_config.is_none());
    }

    #[test]
    fn fills_fields_inside_arrays() {
        let c: ContainerConfig = parse_config(
            r#"{"metadata": {"name": "c"}, "image": {"image": "busybox"}, "command": ["sh"],
                "envs": [{"key": "A"}], "mounts": [{"container_path": "/x", "host_path": "/tmp"}]}"#,
        )
        .unwrap();
        assert_eq!(c.envs[0].key, "A");
        assert_eq!(c.envs[0].value, "");
        assert!(!c.mounts[0].readonly);
        assert_eq!(c.image.unwrap().image, "busybox");
    }

    #[test]
    fn wrong_types_are_reported_with_their_path() {
        let err = parse_config::<PodSandboxConfig>(r#"{"metadata": {"name": 7}}"#).unwrap_err();
        assert!(err.starts_with("metadata.name: invalid type"), "{err}");
        let err = parse_config::<PodSandboxConfig>("{not json").unwrap_err();
        assert!(err.contains("key must be a string"), "{err}");
    }
}
