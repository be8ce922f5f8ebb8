//! The files a pod's containers see at /etc/hostname, /etc/hosts and /etc/resolv.conf,
//! built as plain text by pure functions.

use k8s_cri::v1::DnsConfig;

/// /etc/hosts of a pod with its own network namespace: the hostname on the pod's IP
/// (its CNI address), or on 127.0.1.1 while it has none.
pub fn hosts(hostname: &str, pod_ip: Option<&str>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
    if !hostname.is_empty() {
        s.push_str(&format!("{}\t{hostname}\n", pod_ip.unwrap_or("127.0.1.1")));
    }
    s
}

/// /etc/resolv.conf from the pod's DNSConfig; `None` when the pod gave none (the
/// caller then copies the host's file, as kubelet's "Default" DNS policy expects).
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Result<Option<String>, String> {
    let Some(dns) = dns else { return Ok(None) };
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return Ok(None);
    }
    let mut s = String::new();
    for server in &dns.servers {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("dns server {server:?} is not an IP address"));
        }
        s.push_str(&format!("nameserver {server}\n"));
    }
    for (what, list) in [("search", &dns.searches), ("options", &dns.options)] {
        if let Some(bad) = list
            .iter()
            .find(|v| v.is_empty() || v.contains(char::is_whitespace))
        {
            return Err(format!("dns {what} entry {bad:?} is empty or has spaces"));
        }
        if !list.is_empty() {
            s.push_str(&format!("{what} {}\n", list.join(" ")));
        }
    }
    Ok(Some(s))
}

/// A hostname the kernel accepts (RFC 1123 label chars, ≤ 64 bytes).
pub fn check_hostname(h: &str) -> Result<(), String> {
    if h.len() > 64
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!("hostname {h:?} is not a valid hostname"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap().unwrap(),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(None).unwrap(), None);
        let bad = DnsConfig {
            servers: vec!["not-an-ip".into()],
            ..Default::default()
        };
        assert!(resolv_conf(Some(&bad)).is_err());
    }

    #[test]
    fn hosts_names_the_pod() {
        assert!(hosts("web-0", None).contains("127.0.1.1\tweb-0\n"));
        assert!(hosts("web-0", Some("10.22.0.5")).ends_with("\n10.22.0.5\tweb-0\n"));
        assert!(hosts("", None).starts_with("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("web-0.example").is_ok());
        assert!(check_hostname("bad name").is_err());
        assert!(check_hostname(&"a".repeat(65)).is_err());
    }
}
