//! host-local's allocation (containernetworking-plugins 1.1), for one IPv4 range: the
//! same files in the same directory under the same `flock`, so the plugin's own DEL (and
//! ADDs the plugin runs for configs the fast path does not take) share the pool with it.
//!
//! `<dataDir>/<network>/`: one file per address in use, named by the address, holding
//! `<container id>\r\n<ifname>`; `last_reserved_ip.0` holding the last address handed
//! out (allocation goes round-robin from the one after it); `lock`, flocked while
//! allocating.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// host-local's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One range after host-local's `Canonicalize`: start, end and gateway filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Range {
    /// As host-local canonicalizes a range: the subnet must be the network address and
    /// leave at least two addresses; the gateway defaults to the first address, the
    /// range to all of the subnet but its network and broadcast addresses.
    pub fn new(
        subnet: Ipv4Addr,
        prefix: u8,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Range, String> {
        if prefix > 30 {
            return Err(format!(
                "network {subnet}/{prefix} too small to allocate from"
            ));
        }
        let mask = mask_or_zero(prefix);
        let net = u32::from(subnet);
        if net & !mask != 0 {
            return Err(format!("network {subnet}/{prefix} has host bits set"));
        }
        let first = Ipv4Addr::from(net + 1);
        let last = Ipv4Addr::from((net | !mask) - 1);
        let mut r = Range {
            subnet,
            prefix,
            start: first,
            end: last,
            gateway: gateway.unwrap_or(first),
        };
        let in_subnet = |ip: Ipv4Addr| u32::from(ip) & mask == net;
        if let Some(s) = start {
            if !in_subnet(s) {
                return Err(format!("rangeStart {s} not in network {subnet}/{prefix}"));
            }
            r.start = s;
        }
        if let Some(e) = end {
            if !in_subnet(e) {
                return Err(format!("rangeEnd {e} not in network {subnet}/{prefix}"));
            }
            r.end = e;
        }
        Ok(r)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = mask_or_zero(self.prefix);
        u32::from(ip) & mask == u32::from(self.subnet) && ip >= self.start && ip <= self.end
    }
}

fn mask_or_zero(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The order host-local tries addresses in: from the one after `last` when `last` is
/// in the range (round-robin), else from the range's start; the gateway skipped; once
/// round. Pure (and lazy: a /16 has 65534), so the order can be checked against the
/// plugin's.
pub fn candidates(range: &Range, last: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> {
    let range = *range;
    let next = move |ip: Ipv4Addr| {
        if ip == range.end {
            range.start
        } else {
            Ipv4Addr::from(u32::from(ip).wrapping_add(1))
        }
    };
    let first = match last.filter(|l| range.contains(*l)) {
        Some(l) => next(l),
        None => range.start,
    };
    std::iter::successors(Some(first), move |cur| {
        Some(next(*cur)).filter(|n| *n != first)
    })
    .filter(move |ip| *ip != range.gateway)
}

/// The pool's directory: `<data_dir>/<network>`.
pub fn pool_dir(data_dir: &Path, network: &str) -> PathBuf {
    data_dir.join(network)
}

/// Allocates an address for `id`/`ifname` as host-local's ADD does: under the pool's
/// lock, refusing an id that already holds an address of the range, taking the first
/// free candidate with an exclusive create.
pub fn allocate(
    range: &Range,
    data_dir: &Path,
    network: &str,
    id: &str,
    ifname: &str,
) -> Result<Ipv4Addr, String> {
    let dir = pool_dir(data_dir, network);
    let _held = lock_pool(&dir)?;
    let owner = format!("{}\r\n{ifname}", id.trim());
    if let Some(ip) = held_by(&dir, id.trim(), &owner)
        .into_iter()
        .find(|ip| range.contains(*ip))
    {
        return Err(format!(
            "{ip} has been allocated to {id}, duplicate allocation is not allowed"
        ));
    }
    let last = fs::read_to_string(dir.join("last_reserved_ip.0"))
        .ok()
        .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
    for ip in candidates(range, last) {
        let file = dir.join(ip.to_string());
        let mut f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&file)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("reserve {}: {e}", file.display())),
        };
        if let Err(e) = f.write_all(owner.as_bytes()) {
            drop(f);
            let _ = fs::remove_file(&file);
            return Err(format!("write {}: {e}", file.display()));
        }
        drop(f);
        write_truncate(&dir.join("last_reserved_ip.0"), ip.to_string().as_bytes())?;
        return Ok(ip);
    }
    Err(format!(
        "no IP addresses available in range set: {}-{}",
        range.start, range.end
    ))
}

/// Releases what `id`/`ifname` holds as host-local's DEL does: under the pool's lock
/// (the pool dir and lock file made if missing, as the plugin makes them), every file
/// naming `id` with this ifname removed, or, if there is none, every one naming `id`
/// alone (host-local's older form). Nothing held is fine.
pub fn release(data_dir: &Path, network: &str, id: &str, ifname: &str) -> Result<(), String> {
    let dir = pool_dir(data_dir, network);
    let _held = lock_pool(&dir)?;
    let owner = format!("{}\r\n{ifname}", id.trim());
    let files = pool_files(&dir);
    for key in [owner.as_str(), id.trim()] {
        let mut found = false;
        for (name, _) in files.iter().filter(|(_, content)| content == key) {
            if fs::remove_file(dir.join(name)).is_ok() {
                found = true;
            }
        }
        if found {
            break;
        }
    }
    Ok(())
}

/// The pool dir made if missing and its lock file taken (released on drop).
fn lock_pool(dir: &Path) -> Result<nix::fcntl::Flock<File>, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o750)
        .open(dir.join("lock"))
        .map_err(|e| format!("open {}/lock: {e}", dir.display()))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock {}/lock: {e}", dir.display()))
}

/// The addresses whose files name `id` (with this ifname, or host-local's older
/// id-only form), those with the ifname first. One pass over the pool: with hundreds
/// of pods each file read costs an open, a read and a close.
fn held_by(dir: &Path, id: &str, owner: &str) -> Vec<Ipv4Addr> {
    let files = pool_files(dir);
    [owner, id]
        .into_iter()
        .flat_map(|key| files.iter().filter(move |(_, content)| content == key))
        .filter_map(|(name, _)| name.to_str()?.parse::<Ipv4Addr>().ok())
        .collect()
}

/// Every regular file of the pool (its name) with its content, trimmed; unreadable ones
/// and ones that are not UTF-8 left out. Each file is opened relative to the pool dir and
/// read into one buffer: with hundreds of pods this runs through hundreds of files per
/// ADD and DEL.
fn pool_files(dir: &Path) -> Vec<(OsString, String)> {
    use rustix::fs::{Mode, OFlags};
    let (Ok(entries), Ok(dir_fd)) = (fs::read_dir(dir), File::open(dir)) else {
        return Vec::new();
    };
    // Allocation files hold an id and an interface name; a longer one is read in full.
    let mut buf = [0u8; 512];
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name();
            let fd = rustix::fs::openat(
                &dir_fd,
                &name,
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            let mut len = 0;
            while len < buf.len() {
                match rustix::io::read(&fd, &mut buf[len..]).ok()? {
                    0 => break,
                    n => len += n,
                }
            }
            let content = if len < buf.len() {
                std::str::from_utf8(&buf[..len]).ok()?.trim().to_owned()
            } else {
                fs::read_to_string(dir.join(&name)).ok()?.trim().to_owned()
            };
            Some((name, content))
        })
        .collect()
}

/// `ioutil.WriteFile(path, data, 0644)`: truncating, not atomic (as the plugin).
fn write_truncate(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn canonical_range() {
        let r = Range::new(ip("10.77.0.0"), 24, None, None, None).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.77.0.1"), ip("10.77.0.254"), ip("10.77.0.1"))
        );
        assert!(Range::new(ip("10.77.0.1"), 24, None, None, None)
            .unwrap_err()
            .contains("host bits"));
        assert!(Range::new(ip("10.77.0.0"), 31, None, None, None)
            .unwrap_err()
            .contains("too small"));
        assert!(
            Range::new(ip("10.77.0.0"), 24, Some(ip("10.78.0.5")), None, None)
                .unwrap_err()
                .contains("rangeStart")
        );
        let wide = Range::new(ip("10.0.0.0"), 8, None, None, None).unwrap();
        assert_eq!(wide.end, ip("10.255.255.254"));
    }

    #[test]
    fn candidates_go_round_robin_and_skip_the_gateway() {
        let r = Range::new(ip("10.0.0.0"), 29, None, None, None).unwrap();
        let all =
            |v: &mut dyn Iterator<Item = Ipv4Addr>| v.map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(
            all(&mut candidates(&r, None)),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(
            all(&mut candidates(&r, Some(ip("10.0.0.4")))),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // The last address of the range: the next round starts over (the gateway
        // skipped).
        assert_eq!(
            candidates(&r, Some(ip("10.0.0.6"))).next(),
            Some(ip("10.0.0.2"))
        );
        // Outside the range (an old config's): from the start.
        assert_eq!(
            candidates(&r, Some(ip("192.168.0.9"))).next(),
            Some(ip("10.0.0.2"))
        );
        // Every address of a /16 but the gateway, once.
        let wide = Range::new(ip("10.88.0.0"), 16, None, None, None).unwrap();
        assert_eq!(candidates(&wide, Some(ip("10.88.9.9"))).count(), 65533);
        let g = Range::new(ip("10.0.0.0"), 29, None, None, Some(ip("10.0.0.6"))).unwrap();
        assert_eq!(
            all(&mut candidates(&g, None)),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        );
    }

    #[test]
    fn pool_files_are_read_whole_trimmed_and_text_only() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}\r\neth0", "x".repeat(600));
        fs::write(dir.path().join("10.0.0.2"), &long).unwrap();
        fs::write(dir.path().join("10.0.0.3"), [0xff, 0xfe]).unwrap();
        fs::write(dir.path().join("10.0.0.4"), " pod-c\r\neth0\n").unwrap();
        fs::create_dir(dir.path().join("10.0.0.5")).unwrap();
        let mut got = pool_files(dir.path());
        got.sort();
        let want: Vec<(OsString, String)> = vec![
            ("10.0.0.2".into(), long),
            ("10.0.0.4".into(), "pod-c\r\neth0".into()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn allocation_files_are_host_locals() {
        let data = tempfile::tempdir().unwrap();
        let r = Range::new(ip("10.0.0.0"), 30, None, None, None).unwrap();
        let a = allocate(&r, data.path(), "net", "pod-a", "eth0").unwrap();
        assert_eq!(a, ip("10.0.0.2"));
        let dir = data.path().join("net");
        assert_eq!(
            fs::read_to_string(dir.join("10.0.0.2")).unwrap(),
            "pod-a\r\neth0"
        );
        assert_eq!(
            fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
            "10.0.0.2"
        );
        assert!(allocate(&r, data.path(), "net", "pod-a", "eth0")
            .unwrap_err()
            .contains("duplicate allocation"));
        // A /30 has one address besides the gateway: the pool is full.
        assert!(allocate(&r, data.path(), "net", "pod-b", "eth0")
            .unwrap_err()
            .contains("no IP addresses available"));
        release(data.path(), "net", "pod-a", "eth0").unwrap();
        assert!(!dir.join("10.0.0.2").exists());
        assert_eq!(
            allocate(&r, data.path(), "net", "pod-b", "eth0").unwrap(),
            ip("10.0.0.2")
        );
        // Twice, and for an id holding nothing: nothing to do.
        release(data.path(), "net", "pod-a", "eth0").unwrap();
        assert!(dir.join("10.0.0.2").exists());
        // The older id-only form is released too; the pool dir is made if missing.
        fs::write(dir.join("10.0.0.3"), "pod-c").unwrap();
        release(data.path(), "net", "pod-c", "eth0").unwrap();
        assert!(!dir.join("10.0.0.3").exists());
        release(data.path(), "other", "pod-c", "eth0").unwrap();
        assert!(data.path().join("other/lock").exists());
        // An id holding an address in the older form cannot take another one either.
        let wide = Range::new(ip("10.0.1.0"), 29, None, None, None).unwrap();
        fs::write(data.path().join("other/10.0.1.5"), "pod-e\n").unwrap();
        let err = allocate(&wide, data.path(), "other", "pod-e", "eth0").unwrap_err();
        assert!(
            err.starts_with("10.0.1.5 has been allocated to pod-e"),
            "{err}"
        );
    }
}
