//! Request parameters as PVE reads them: `application/x-www-form-urlencoded`.
//!
//! PVE's server splits the body on `&` and `;`, then each pair on `=` keeping only the
//! first two pieces: an unencoded `net0=name=eth0,bridge=vmbr0` arrives as `net0=name`.
//! So every value is percent-encoded (serde_urlencoded: `=` → `%3D`, `,` → `%2C`,
//! `;` → `%3B`), and booleans are written `0`/`1`, the only spellings PVE's form
//! parameters accept (`unprivileged=true` is a 400). GET and DELETE options use the same
//! encoding in the query string: PVE refuses a body on those methods (501).

/// Ordered parameter list: PVE does not care about order, but logs and tests read better.
pub type Params = Vec<(String, String)>;

/// A boolean as PVE's form parameters spell it.
pub trait BoolFlag {
    fn flag(self) -> &'static str;
}

impl BoolFlag for bool {
    fn flag(self) -> &'static str {
        match self {
            true => "1",
            false => "0",
        }
    }
}

/// `k1=v1&k2=v2`, every key and value percent-encoded.
pub fn encode_form(params: &[(String, String)]) -> String {
    // Serializing a slice of string pairs cannot fail (it fails only for nested values).
    serde_urlencoded::to_string(params).unwrap_or_default()
}

/// A PVE property string (`name=eth0,bridge=vmbr0,ip=dhcp`): the values inside are not
/// escaped by PVE's parser, so a value holding `,` or `=` cannot be expressed; refuse it.
pub(crate) fn property_string(
    param: &str,
    items: &[(&str, String)],
) -> Result<String, super::ProxmoxError> {
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        if v.is_empty() || v.contains([',', '=', ';']) || v.contains(char::is_control) {
            return Err(super::ProxmoxError::InvalidParam {
                param: format!("{param}.{k}"),
                message: format!("{v:?} cannot be written in a property string"),
            });
        }
        out.push(format!("{k}={v}"));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn property_strings_are_percent_encoded() {
        let body = encode_form(&[
            p("vmid", "105"),
            p("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
            p("unprivileged", true.flag()),
        ]);
        assert_eq!(
            body,
            "vmid=105&net0=name%3Deth0%2Cbridge%3Dvmbr0%2Cip%3Ddhcp&unprivileged=1"
        );
    }

    #[test]
    fn separators_and_spaces_cannot_split_a_value() {
        let body = encode_form(&[p("description", "a;b&c=d e+f/g:h")]);
        assert_eq!(body, "description=a%3Bb%26c%3Dd+e%2Bf%2Fg%3Ah");
        // Decoding it the way PVE does (split on [;&], then on '=') gives it back whole.
        let pairs: Vec<&str> = body.split(['&', ';']).collect();
        assert_eq!(pairs.len(), 1);
        let decoded: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        assert_eq!(decoded, vec![p("description", "a;b&c=d e+f/g:h")]);
    }

    #[test]
    fn volids_keep_their_meaning() {
        let body = encode_form(&[p(
            "ostemplate",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        )]);
        assert_eq!(
            body,
            "ostemplate=local%3Avztmpl%2Fdebian-12-standard_12.7-1_amd64.tar.zst"
        );
    }

    #[test]
    fn property_string_refuses_unwritable_values() {
        assert_eq!(
            property_string(
                "net0",
                &[
                    ("name", "eth0".into()),
                    ("bridge", "vmbr0".into()),
                    ("ip", "dhcp".into())
                ]
            )
            .unwrap(),
            "name=eth0,bridge=vmbr0,ip=dhcp"
        );
        assert!(property_string("net0", &[("bridge", "a,b".into())]).is_err());
        assert!(property_string("net0", &[("bridge", "a=b".into())]).is_err());
        assert!(property_string("net0", &[("bridge", "".into())]).is_err());
    }
}
