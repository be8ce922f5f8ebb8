//! Parameter validation against the PVE API schema (`pve-api-lxc.json`, a subset of the
//! PVE 9.1.2 apidoc), with PVE's messages: the errors map of a 400 "Parameter
//! verification failed.". Checks run in PVE's order: type, format, then limits.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;
use serde_json::Value;

use crate::params::Params;

pub struct Schema {
    endpoints: Value,
}

pub type Errors = BTreeMap<String, String>;

fn re(pattern: &str) -> Option<Regex> {
    // Perl's `(?^:…)` (default flags) is Rust's `(?:…)`.
    Regex::new(&format!("^(?:{})$", pattern.replace("(?^:", "(?:"))).ok()
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_opt(s: &Value) -> bool {
    s.get("optional").and_then(num) == Some(1.0)
}

impl Schema {
    pub fn load() -> Schema {
        let doc: Value = serde_json::from_str(include_str!("pve-api-lxc.json"))
            .unwrap_or_else(|e| panic!("embedded pve-api-lxc.json: {e}"));
        Schema {
            endpoints: doc.get("endpoints").cloned().unwrap_or(Value::Null),
        }
    }

    /// Validates `params` (path parameters included) for `method path_template`.
    pub fn validate(
        &self,
        path_template: &str,
        method: &str,
        params: &Params,
    ) -> Result<(), Errors> {
        let Some(def) = self
            .endpoints
            .get(path_template)
            .and_then(|m| m.get(method))
        else {
            return Ok(());
        };
        let empty = serde_json::Map::new();
        let props = def
            .pointer("/parameters/properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut errors = Errors::new();
        for (k, v) in params {
            match lookup(props, k) {
                None => {
                    errors.insert(
                        k.clone(),
                        "property is not defined in schema and the schema does not allow additional properties".into(),
                    );
                }
                Some(s) => {
                    if let Err(e) = check_value(k, v, s, false) {
                        errors.insert(k.clone(), e);
                    }
                }
            }
        }
        for (k, s) in props {
            if !is_opt(s) && !k.ends_with("[n]") && !params.contains_key(k) {
                errors.insert(
                    k.clone(),
                    "property is missing and it is not optional".into(),
                );
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors),
        }
    }

    /// The schema of one property (`net0` finds `net[n]`), for property-string parsing.
    pub fn property(&self, path_template: &str, method: &str, name: &str) -> Option<&Value> {
        let props = self
            .endpoints
            .get(path_template)?
            .get(method)?
            .pointer("/parameters/properties")?
            .as_object()?;
        lookup(props, name)
    }
}

fn lookup<'a>(props: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a Value> {
    if let Some(s) = props.get(k) {
        return Some(s);
    }
    let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
    let idx = &k[base.len()..];
    if base.is_empty() || idx.is_empty() || idx.len() > 3 || (idx.len() > 1 && idx.starts_with('0'))
    {
        return None;
    }
    props.get(&format!("{base}[n]"))
}

fn check_type(ty: &str, v: &str, in_property_string: bool) -> Result<(), String> {
    let ok = match ty {
        "integer" => re(r"[+-]?\d+").is_some_and(|r| r.is_match(v)),
        "number" => re(r"[+-]?(\d+|\d+\.\d*|\.\d+)([eE][+-]?\d+)?").is_some_and(|r| r.is_match(v)),
        // Form parameters take only 0/1; inside property strings PVE also reads
        // on/off/yes/no/true/false.
        "boolean" if in_property_string => matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "1" | "on" | "off" | "yes" | "no" | "true" | "false"
        ),
        "boolean" => v == "0" || v == "1",
        _ => true,
    };
    match ok {
        true => Ok(()),
        false => Err(format!("type check ('{ty}') failed - got '{v}'")),
    }
}

fn check_format(format: &str, v: &str) -> Result<(), String> {
    let m = |pattern: &str| re(pattern).is_some_and(|r| r.is_match(v));
    let ok_or = |ok: bool, msg: String| if ok { Ok(()) } else { Err(msg) };
    match format {
        "pve-vmid" => ok_or(
            m(r"[1-9][0-9]{2,8}"),
            "value does not look like a valid VM ID".into(),
        ),
        "pve-node" => ok_or(
            m(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"),
            "value does not look like a valid node name".into(),
        ),
        "pve-storage-id" => ok_or(
            m(r"[a-z][a-z0-9\-_.]*[a-z0-9]"),
            format!("storage ID '{v}' contains illegal characters"),
        ),
        "dns-name" => ok_or(
            m(
                r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?",
            ),
            format!("value '{v}' does not look like a valid DNS name"),
        ),
        "pve-tag-list" => {
            let tag = re(r"[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*");
            for t in v.split([';', ',', ' ']).filter(|t| !t.is_empty()) {
                if !tag.as_ref().is_some_and(|r| r.is_match(t)) {
                    return Err(format!("invalid tag '{t}'"));
                }
            }
            Ok(())
        }
        "pve-volume-id" => ok_or(
            m(r"[a-z][a-z0-9\-_.]*[a-z0-9]:.+"),
            format!("unable to parse volume ID '{v}'"),
        ),
        "ipv4" => ok_or(
            v.parse::<Ipv4Addr>().is_ok(),
            format!("value '{v}' does not look like a valid IPv4 address"),
        ),
        "ipv6" => ok_or(
            v.parse::<Ipv6Addr>().is_ok(),
            format!("value '{v}' does not look like a valid IPv6 address"),
        ),
        "mac-addr" => ok_or(
            m(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"),
            format!("value '{v}' does not look like a valid MAC address"),
        ),
        "pve-ipv4-config" => {
            let ok = v == "dhcp"
                || v == "manual"
                || v.split_once('/').is_some_and(|(a, n)| {
                    a.parse::<Ipv4Addr>().is_ok() && n.parse::<u8>().is_ok_and(|n| n <= 32)
                });
            ok_or(
                ok,
                "value does not look like a valid IPv4 network configuration".into(),
            )
        }
        "pve-ipv6-config" => {
            let ok = matches!(v, "dhcp" | "manual" | "auto")
                || v.split_once('/').is_some_and(|(a, n)| {
                    a.parse::<Ipv6Addr>().is_ok() && n.parse::<u8>().is_ok_and(|n| n <= 128)
                });
            ok_or(
                ok,
                "value does not look like a valid IPv6 network configuration".into(),
            )
        }
        // Formats this simulator does not model are accepted.
        _ => Ok(()),
    }
}

/// One value against its property schema; the error text is what PVE puts in `errors`.
pub fn check_value(name: &str, v: &str, s: &Value, in_property_string: bool) -> Result<(), String> {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("string");
    check_type(ty, v, in_property_string)?;
    match s.get("format") {
        Some(Value::String(f)) => {
            check_format(f, v).map_err(|e| format!("invalid format - {e}"))?
        }
        Some(Value::Object(fmt)) => {
            parse_property_string(name, v, fmt).map_err(|e| format!("invalid format - {e}"))?;
        }
        _ => {}
    }
    if matches!(ty, "integer" | "number") {
        let x: f64 = v.parse().unwrap_or(0.0);
        if let Some(min) = s.get("minimum").and_then(num) {
            if x < min {
                return Err(format!(
                    "value must have a minimum value of {}",
                    s["minimum"].to_string().trim_matches('"')
                ));
            }
        }
        if let Some(max) = s.get("maximum").and_then(num) {
            if x > max {
                return Err(format!(
                    "value must have a maximum value of {}",
                    s["maximum"].to_string().trim_matches('"')
                ));
            }
        }
    }
    if let Some(max) = s.get("maxLength").and_then(num) {
        if v.chars().count() as f64 > max {
            return Err(format!("value may only be {max} characters long"));
        }
    }
    if let Some(min) = s.get("minLength").and_then(num) {
        if (v.chars().count() as f64) < min {
            return Err(format!("value must be at least {min} characters long"));
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        if !re(p).is_some_and(|r| r.is_match(v)) {
            return Err("value does not match the regex pattern".into());
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let names: Vec<&str> = e.iter().filter_map(Value::as_str).collect();
        if !names.contains(&v) {
            return Err(format!(
                "value '{v}' does not have a value in the enumeration '{}'",
                names.join(", ")
            ));
        }
    }
    Ok(())
}

/// Parses `k=v,k2=v2` against a property-string format; the value without a key goes to
/// the format's `default_key`. Returns the keys and values, or PVE's "format error".
pub fn parse_property_string(
    name: &str,
    v: &str,
    fmt: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, String>, String> {
    let default_key = fmt
        .iter()
        .find(|(_, s)| s.get("default_key").and_then(num) == Some(1.0))
        .map(|(k, _)| k.clone());
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for item in v.split(',').filter(|i| !i.is_empty()) {
        let (k, val) = match item.split_once('=') {
            Some((k, val)) => (k.to_owned(), val.to_owned()),
            None => match &default_key {
                Some(d) if !out.contains_key(d) => (d.clone(), item.to_owned()),
                _ => {
                    return Err(
                        "value without key, but schema does not define a default key".into(),
                    )
                }
            },
        };
        if out.contains_key(&k) {
            return Err(format!(
                "duplicate key in comma-separated list property: {k}"
            ));
        }
        match fmt.get(&k) {
            None => errors.push(format!(
                "{name}.{k}: property is not defined in schema and the schema does not allow additional properties"
            )),
            Some(s) => {
                if let Err(e) = check_value(&k, &val, s, true) {
                    errors.push(format!("{name}.{k}: {e}"));
                }
            }
        }
        out.insert(k, val);
    }
    for (k, s) in fmt {
        if !is_opt(s) && !out.contains_key(k) {
            errors.push(format!(
                "{name}.{k}: property is missing and it is not optional"
            ));
        }
    }
    match errors.is_empty() {
        true => Ok(out),
        false => Err(format!("format error\n{}", errors.join("\n"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CREATE: &str = "/nodes/{node}/lxc";

    #[test]
    fn create_schema_checks() {
        let s = Schema::load();
        let ok = p(&[
            ("node", "pve"),
            ("vmid", "105"),
            ("ostemplate", "local:vztmpl/x.tar.zst"),
        ]);
        assert!(s.validate(CREATE, "POST", &ok).is_ok());
        // (extra parameters, the key in `errors`, what its reason says)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("vmid", "99")],
                "vmid",
                "invalid format - value does not look like a valid VM ID",
            ),
            (
                &[("vmid", "abc")],
                "vmid",
                "type check ('integer') failed - got 'abc'",
            ),
            (
                &[("unprivileged", "true")],
                "unprivileged",
                "type check ('boolean') failed - got 'true'",
            ),
            (
                &[("memory", "8")],
                "memory",
                "value must have a minimum value of 16",
            ),
            (
                &[("ostype", "windows")],
                "ostype",
                "does not have a value in the enumeration",
            ),
            (&[("net0", "name")], "net0", "value without key"),
            (
                &[("net0", "bridge=vmbr0")],
                "net0",
                "net0.name: property is missing",
            ),
            (
                &[("net0", "name=eth0,color=red")],
                "net0",
                "net0.color: property is not defined",
            ),
            (
                &[("features", "nesting=maybe")],
                "features",
                "type check ('boolean')",
            ),
            (
                &[("bogus", "1")],
                "bogus",
                "does not allow additional properties",
            ),
            (
                &[("hostname", "a_b")],
                "hostname",
                "does not look like a valid DNS name",
            ),
        ];
        for (extra, key, msg) in cases {
            let mut params = ok.clone();
            for (k, v) in *extra {
                params.insert(k.to_string(), v.to_string());
            }
            let errs = s.validate(CREATE, "POST", &params).unwrap_err();
            assert!(
                errs.get(*key).is_some_and(|e| e.contains(msg)),
                "{extra:?}: {errs:?}"
            );
        }
        let missing = s
            .validate(CREATE, "POST", &p(&[("node", "pve")]))
            .unwrap_err();
        assert_eq!(
            missing["vmid"],
            "property is missing and it is not optional"
        );
        assert!(missing.contains_key("ostemplate"));
        // Property-string booleans take the long spellings.
        let mut params = ok.clone();
        params.insert("features".into(), "nesting=on".into());
        params.insert(
            "net0".into(),
            "name=eth0,bridge=vmbr0,ip=dhcp,firewall=yes".into(),
        );
        assert!(s.validate(CREATE, "POST", &params).is_ok());
    }
}
