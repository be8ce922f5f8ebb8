//! Request parameters read the way PVE's HTTP server reads them.
//!
//! Form bodies and query strings are split on `&` *and* `;`, each pair on `=` keeping only
//! the first two pieces (so an unencoded `net0=name=eth0,bridge=vmbr0` arrives as
//! `net0=name`), `+` becomes a space and `%XX` is decoded. JSON bodies must be an object;
//! its scalars become strings as PVE's handlers see them (true → 1).

use std::collections::BTreeMap;

use serde_json::Value;

pub type Params = BTreeMap<String, String>;

fn unescape(s: &str) -> String {
    percent_decode(s, true)
}

/// `%XX` decoding; `+` is a space in forms and query strings, not in paths.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=2;c=3` → {a: 1, b: 2, c: 3}; a later duplicate wins.
pub fn parse_form(text: &str, into: &mut Params) {
    for pair in text.split(['&', ';']).filter(|p| !p.is_empty()) {
        let mut it = pair.split('=');
        let k = unescape(it.next().unwrap_or(""));
        let v = unescape(it.next().unwrap_or(""));
        if !k.is_empty() {
            into.insert(k, v);
        }
    }
}

/// A JSON object body; `Err` holds PVE's message for what is not one.
pub fn parse_json(body: &[u8], into: &mut Params) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        match body.iter().all(u8::is_ascii_whitespace) {
            true => "malformed JSON string, neither tag, array, object, number, string or atom, at character offset 0 (before \"(end of string)\")".to_owned(),
            false => "malformed JSON string".to_owned(),
        }
    })?;
    let Value::Object(map) = v else {
        return Err("malformed JSON string: not an object".into());
    };
    for (k, v) in map {
        let s = match v {
            Value::Null => continue,
            Value::Bool(b) => (if b { "1" } else { "0" }).to_owned(),
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        into.insert(k, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unencoded_equals_truncates_like_pve() {
        let mut p = Params::new();
        parse_form("vmid=105&net0=name=eth0,bridge=vmbr0;memory=512", &mut p);
        assert_eq!(p["net0"], "name");
        assert_eq!(p["memory"], "512");
        let mut p = Params::new();
        parse_form("net0=name%3Deth0%2Cbridge%3Dvmbr0&d=a+b%3Bc", &mut p);
        assert_eq!(p["net0"], "name=eth0,bridge=vmbr0");
        assert_eq!(p["d"], "a b;c");
    }

    #[test]
    fn json_scalars_become_strings() {
        let mut p = Params::new();
        parse_json(br#"{"vmid":105,"unprivileged":true,"x":null}"#, &mut p).unwrap();
        assert_eq!(p["vmid"], "105");
        assert_eq!(p["unprivileged"], "1");
        assert!(!p.contains_key("x"));
        assert!(parse_json(b"", &mut p)
            .unwrap_err()
            .contains("malformed JSON string"));
    }
}
