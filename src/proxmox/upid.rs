//! UPIDs: PVE's task ids, `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`
//! (pid and starttime 8 hex digits, pstart 8 or 9; trailing colon), e.g.
//! `UPID:pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam!proxrt:`.
//! The node in a UPID says where to poll it, which need not be the configured node.

use std::fmt;
use std::str::FromStr;

use super::error::ProxmoxError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    /// `vzcreate`, `vzstart`, `vzstop`, `vzshutdown`, `vzdestroy`, …
    pub task_type: String,
    /// The object, e.g. the VMID; may be empty.
    pub id: String,
    /// Who started it: `user@realm` or `user@realm!tokenid`.
    pub user: String,
    raw: String,
}

impl Upid {
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn hex_field<T>(
    raw: &str,
    name: &str,
    text: &str,
    lens: &[usize],
    parse: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Result<T, ProxmoxError> {
    if !lens.contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ProxmoxError::BadUpid {
            upid: raw.to_owned(),
            reason: format!("{name} {text:?} is not {lens:?} hex digits"),
        });
    }
    parse(text, 16).map_err(|e| ProxmoxError::BadUpid {
        upid: raw.to_owned(),
        reason: format!("{name}: {e}"),
    })
}

impl FromStr for Upid {
    type Err = ProxmoxError;

    fn from_str(raw: &str) -> Result<Upid, ProxmoxError> {
        let bad = |reason: &str| ProxmoxError::BadUpid {
            upid: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let body = raw
            .strip_prefix("UPID:")
            .ok_or_else(|| bad("does not start with UPID:"))?;
        let body = body
            .strip_suffix(':')
            .ok_or_else(|| bad("does not end with ':'"))?;
        let f: Vec<&str> = body.split(':').collect();
        let [node, pid, pstart, starttime, task_type, id, user] = f.as_slice() else {
            return Err(bad("expected 7 fields between UPID: and the trailing ':'"));
        };
        let node_ok = !node.is_empty()
            && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        if !node_ok {
            return Err(bad("node is not a node name"));
        }
        if task_type.is_empty() || user.is_empty() {
            return Err(bad("empty task type or user"));
        }
        if f.iter().any(|x| x.contains(char::is_whitespace)) {
            return Err(bad("contains whitespace"));
        }
        Ok(Upid {
            node: (*node).to_owned(),
            pid: hex_field(raw, "pid", pid, &[8], u32::from_str_radix)?,
            pstart: hex_field(raw, "pstart", pstart, &[8, 9], u64::from_str_radix)?,
            starttime: hex_field(raw, "starttime", starttime, &[8], i64::from_str_radix)?,
            task_type: (*task_type).to_owned(),
            id: (*id).to_owned(),
            user: (*user).to_owned(),
            raw: raw.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let u: Upid = "UPID:pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam!proxrt:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "pve");
        assert_eq!(u.pid, 0x0001A2B3);
        assert_eq!(u.pstart, 0x00C4D5E6);
        assert_eq!(u.starttime, 0x6650A1B2);
        assert_eq!(u.task_type, "vzcreate");
        assert_eq!(u.id, "105");
        assert_eq!(u.user, "root@pam!proxrt");
        assert_eq!(
            u.to_string(),
            "UPID:pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam!proxrt:"
        );
    }

    #[test]
    fn nine_digit_pstart_and_empty_id_are_valid() {
        let u: Upid = "UPID:node-2:00000001:1C4D5E6F0:6650A1B2:aptupdate::root@pam:"
            .parse()
            .unwrap();
        assert_eq!(u.pstart, 0x1C4D5E6F0);
        assert_eq!(u.id, "");
        assert_eq!(u.node, "node-2");
    }

    #[test]
    fn malformed_upids_are_refused() {
        for bad in [
            "",
            "UPID:pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam",
            "pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam:",
            "UPID:pve:1A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam:",
            "UPID:pve:0001A2BZ:00C4D5E6:6650A1B2:vzcreate:105:root@pam:",
            "UPID:pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam:extra:",
            "UPID:-pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105:root@pam:",
            "UPID:pve:0001A2B3:00C4D5E6:6650A1B2::105:root@pam:",
            "UPID:pve:0001A2B3:00C4D5E6:6650A1B2:vzcreate:105::",
        ] {
            assert!(bad.parse::<Upid>().is_err(), "{bad:?} parsed");
        }
    }
}
