//! `[[proxmox.templates]]`: which template volid an image name becomes, and the
//! validation of the whole `[proxmox]` section.
//!
//! Matching reuses `select::Matcher` and `select::image_forms`, so a template rule reads
//! exactly like an `[[image_rules]]` entry (`lxc/debian-12` matches
//! `docker.io/lxc/debian-12:latest` too).

use crate::config::{ProxmoxConfig, TemplateRuleConfig};
use crate::select::{image_forms, Matcher};

use super::lxc::{is_dns_name, is_plain_word, is_storage_id};
use super::tls::Fingerprint;
use super::transport::{check_token_id, endpoint_url};

#[derive(Debug)]
pub struct TemplateRules {
    rules: Vec<(Matcher, String)>,
}

impl TemplateRules {
    pub fn new(rules: &[TemplateRuleConfig]) -> Result<TemplateRules, (String, String)> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let key = format!("proxmox.templates[{i}]");
            let m = Matcher::compile(r.kind, &r.pattern).map_err(|e| (key.clone(), e))?;
            let volid_ok = r
                .template
                .split_once(':')
                .is_some_and(|(s, rest)| is_storage_id(s) && !rest.is_empty());
            if !volid_ok {
                return Err((
                    format!("{key}.template"),
                    format!(
                        "{:?} is not a template volid like local:vztmpl/<file>",
                        r.template
                    ),
                ));
            }
            out.push((m, r.template.clone()));
        }
        Ok(TemplateRules { rules: out })
    }

    /// No rules: no image maps to a template.
    pub fn none() -> TemplateRules {
        TemplateRules { rules: Vec::new() }
    }

    /// The template of the first rule matching any name form of `image`.
    pub fn template_for(&self, image: &str) -> Option<&str> {
        let forms = image_forms(image);
        self.rules
            .iter()
            .find(|(m, _)| forms.iter().any(|f| m.matches(f)))
            .map(|(_, t)| t.as_str())
    }
}

/// Checks `[proxmox]`; returns the offending key and why. Endpoint-dependent keys are
/// checked only when endpoints are set: an unused section must not stop the daemon.
pub(crate) fn validate_config(c: &ProxmoxConfig) -> Result<(), (String, String)> {
    let bad = |key: &str, message: String| Err((format!("proxmox.{key}"), message));
    TemplateRules::new(&c.templates)?;
    let node_ok = is_dns_name(&c.node) && !c.node.contains('.');
    if !node_ok {
        return bad("node", format!("{:?} is not a node name", c.node));
    }
    if !is_storage_id(&c.storage) {
        return bad("storage", format!("{:?} is not a storage id", c.storage));
    }
    if c.rootfs_size_gb == 0 {
        return bad("rootfs_size_gb", "must be at least 1".into());
    }
    if !is_plain_word(&c.bridge) {
        return bad("bridge", format!("{:?} is not a bridge name", c.bridge));
    }
    if c.task_timeout_secs == 0 {
        return bad("task_timeout_secs", "must be at least 1".into());
    }
    if c.pct_path.is_empty() {
        return bad("pct_path", "must name the pct binary".into());
    }
    if !c.fingerprint.is_empty() {
        if let Err(e) = c.fingerprint.parse::<Fingerprint>() {
            return bad("fingerprint", e);
        }
        if !c.ca_file.as_os_str().is_empty() {
            return bad(
                "fingerprint",
                "set together with ca_file: choose one way to check the certificate".into(),
            );
        }
    }
    if c.insecure && (!c.fingerprint.is_empty() || !c.ca_file.as_os_str().is_empty()) {
        return bad(
            "insecure",
            "set together with ca_file or fingerprint, which it would ignore".into(),
        );
    }
    if !c.ca_file.as_os_str().is_empty() && !c.ca_file.is_absolute() {
        return bad(
            "ca_file",
            format!("{} is not an absolute path", c.ca_file.display()),
        );
    }
    if c.endpoints.is_empty() {
        return Ok(());
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        if let Err(m) = endpoint_url(e) {
            return bad(&format!("endpoints[{i}]"), m);
        }
    }
    if let Err(m) = check_token_id(&c.token_id) {
        return bad("token_id", m);
    }
    if !c.token_secret_file.is_absolute() {
        return bad(
            "token_secret_file",
            format!("{} is not an absolute path", c.token_secret_file.display()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchKind;

    fn rule(kind: MatchKind, pattern: &str, template: &str) -> TemplateRuleConfig {
        TemplateRuleConfig {
            kind,
            pattern: pattern.into(),
            template: template.into(),
        }
    }

    #[test]
    fn first_match_wins_over_every_name_form() {
        let r = TemplateRules::new(&[
            rule(
                MatchKind::Prefix,
                "lxc/debian-12",
                "local:vztmpl/debian-12.tar.zst",
            ),
            rule(MatchKind::Glob, "lxc/*", "local:vztmpl/generic.tar.zst"),
            rule(MatchKind::Regex, "db-(pg|my)sql", "local:vztmpl/db.tar.zst"),
        ])
        .unwrap();
        assert_eq!(
            r.template_for("lxc/debian-12"),
            Some("local:vztmpl/debian-12.tar.zst")
        );
        assert_eq!(
            r.template_for("docker.io/lxc/debian-12:latest"),
            Some("local:vztmpl/debian-12.tar.zst")
        );
        assert_eq!(
            r.template_for("lxc/alpine"),
            Some("local:vztmpl/generic.tar.zst")
        );
        assert_eq!(r.template_for("db-pgsql"), Some("local:vztmpl/db.tar.zst"));
        // A regex matches a whole form, never a part.
        assert_eq!(r.template_for("db-pgsql-extra"), None);
        assert_eq!(r.template_for("busybox"), None);
    }

    #[test]
    fn bad_rules_name_their_index() {
        let e = TemplateRules::new(&[
            rule(MatchKind::Prefix, "a", "local:vztmpl/a.tar.zst"),
            rule(MatchKind::Prefix, "", "local:vztmpl/a.tar.zst"),
        ])
        .unwrap_err();
        assert_eq!(e.0, "proxmox.templates[1]");
    }
}
