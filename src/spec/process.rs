//! The container's first process: argv, environment, working directory, terminal.

use std::path::PathBuf;

use k8s_cri::v1::KeyValue;
use oci_spec::runtime::Spec;

use super::{process_mut, SpecError, SpecInput};

/// PATH when the image does not set one (the value Docker, containerd and CRI-O use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn apply_process(spec: &mut Spec, input: &SpecInput) -> Result<(), SpecError> {
    let config = input.config;
    let image = input.image;
    let argv = build_argv(
        &config.command,
        &config.args,
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
    )?;
    let env = build_env(
        image.env().as_deref().unwrap_or_default(),
        &config.envs,
        &input.sandbox.hostname,
    )?;
    let cwd = working_dir(&config.working_dir, image.working_dir().as_deref())?;

    let process = process_mut(spec);
    process.set_args(Some(argv));
    process.set_env(Some(env));
    process.set_cwd(cwd);
    // stdin/stdin_once are the backend's business (it holds the pipes); only the tty is a
    // property of the process the runtime creates.
    process.set_terminal(Some(config.tty));
    Ok(())
}

/// Docker's and kubelet's rule: `command` replaces the image Entrypoint; `args` replaces the
/// image Cmd, and the image Cmd is dropped as soon as a command is given (it was written for the
/// image's own entrypoint).
pub fn build_argv(
    command: &[String],
    args: &[String],
    image_entrypoint: &[String],
    image_cmd: &[String],
) -> Result<Vec<String>, SpecError> {
    let (head, tail) = match (command.is_empty(), args.is_empty()) {
        (true, true) => (image_entrypoint, image_cmd),
        (true, false) => (image_entrypoint, args),
        (false, _) => (command, args),
    };
    let argv: Vec<String> = head.iter().chain(tail).cloned().collect();
    if argv.is_empty() {
        return Err(SpecError::EmptyCommand);
    }
    if let Some(bad) = argv.iter().find(|a| a.contains('\0')) {
        return Err(SpecError::NulByte {
            what: "argument",
            value: bad.clone(),
        });
    }
    Ok(argv)
}

/// PATH default, then the image Env, then the CRI envs; a later value replaces an earlier one
/// but keeps the place where the name first appeared; HOSTNAME is the pod's unless set.
///
/// Image entries without `=` carry no value and are skipped. A CRI env name that is empty or
/// contains `=` or NUL cannot be expressed as `NAME=value` and is rejected.
pub fn build_env(
    image_env: &[String],
    cri_envs: &[KeyValue],
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = OrderedEnv::default();
    env.set("PATH", DEFAULT_PATH);
    for entry in image_env {
        if let Some((key, value)) = entry.split_once('=') {
            if !key.is_empty() {
                env.set(key, value);
            }
        }
    }
    for kv in cri_envs {
        let reason = if kv.key.is_empty() {
            Some("empty name")
        } else if kv.key.contains('=') {
            Some("name contains '='")
        } else if kv.key.contains('\0') || kv.value.contains('\0') {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(SpecError::InvalidEnv {
                key: kv.key.clone(),
                reason,
            });
        }
        env.set(&kv.key, &kv.value);
    }
    // With host networking the caller passes the node's name; an empty hostname means there
    // is nothing meaningful to announce.
    if !hostname.is_empty() && !env.contains("HOSTNAME") {
        env.set("HOSTNAME", hostname);
    }
    Ok(env.into_strings())
}

/// CRI `working_dir`, else the image WorkingDir, else `/`. Creating it when missing is the
/// runtime's job at start (runc, crun and libcontainer all do).
pub fn working_dir(cri: &str, image: Option<&str>) -> Result<PathBuf, SpecError> {
    let dir = [Some(cri), image]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())
        .unwrap_or("/");
    if dir.contains('\0') {
        return Err(SpecError::NulByte {
            what: "working directory",
            value: dir.to_string(),
        });
    }
    if !dir.starts_with('/') {
        return Err(SpecError::RelativeWorkingDir(dir.to_string()));
    }
    Ok(PathBuf::from(dir))
}

/// Environment variables in order of first appearance; setting a name again replaces its
/// value in place.
#[derive(Default)]
struct OrderedEnv {
    entries: Vec<(String, String)>,
}

impl OrderedEnv {
    fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    fn into_strings(self) -> Vec<String> {
        self.entries
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn argv_uses_image_entrypoint_and_cmd_when_nothing_is_given() {
        let argv = build_argv(&[], &[], &s(&["/entry"]), &s(&["serve", "-v"])).unwrap();
        assert_eq!(argv, ["/entry", "serve", "-v"]);
    }

    #[test]
    fn argv_args_replace_image_cmd_but_keep_entrypoint() {
        let argv = build_argv(&[], &s(&["run"]), &s(&["/entry"]), &s(&["serve"])).unwrap();
        assert_eq!(argv, ["/entry", "run"]);
    }

    #[test]
    fn argv_command_drops_image_cmd() {
        let argv = build_argv(&s(&["/bin/sh"]), &[], &s(&["/entry"]), &s(&["serve"])).unwrap();
        assert_eq!(argv, ["/bin/sh"]);
    }

    #[test]
    fn argv_is_command_then_args() {
        let argv = build_argv(
            &s(&["/bin/sh", "-c"]),
            &s(&["echo hi"]),
            &s(&["/entry"]),
            &s(&["serve"]),
        )
        .unwrap();
        assert_eq!(argv, ["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn argv_image_cmd_alone_is_enough() {
        let argv = build_argv(&[], &[], &[], &s(&["/bin/app"])).unwrap();
        assert_eq!(argv, ["/bin/app"]);
    }

    #[test]
    fn empty_argv_is_invalid_argument() {
        let err = build_argv(&[], &[], &[], &[]).unwrap_err();
        assert!(matches!(err, SpecError::EmptyCommand));
        assert_eq!(err.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn argv_with_nul_is_rejected() {
        let err = build_argv(&s(&["/bin/sh\0x"]), &[], &[], &[]).unwrap_err();
        assert!(matches!(err, SpecError::NulByte { .. }));
    }

    #[test]
    fn env_defaults_path_and_sets_hostname() {
        let env = build_env(&[], &[], "pod-a").unwrap();
        assert_eq!(
            env,
            [format!("PATH={DEFAULT_PATH}"), "HOSTNAME=pod-a".into()]
        );
    }

    #[test]
    fn env_image_path_replaces_default_in_place() {
        let env = build_env(&s(&["LANG=C", "PATH=/opt/bin"]), &[], "h").unwrap();
        assert_eq!(env, ["PATH=/opt/bin", "LANG=C", "HOSTNAME=h"]);
    }

    #[test]
    fn env_cri_overrides_image_and_keeps_first_position() {
        let env = build_env(
            &s(&["A=1", "B=2"]),
            &[kv("A", "x"), kv("C", "3"), kv("C", "4")],
            "h",
        )
        .unwrap();
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "A=x".into(),
                "B=2".into(),
                "C=4".into(),
                "HOSTNAME=h".into()
            ]
        );
    }

    #[test]
    fn env_hostname_set_by_user_is_kept_and_not_duplicated() {
        let env = build_env(&[], &[kv("HOSTNAME", "mine")], "pod").unwrap();
        assert_eq!(env.iter().filter(|e| e.starts_with("HOSTNAME=")).count(), 1);
        assert!(env.contains(&"HOSTNAME=mine".to_string()));
        let env = build_env(&s(&["HOSTNAME=img"]), &[], "pod").unwrap();
        assert!(env.contains(&"HOSTNAME=img".to_string()));
    }

    #[test]
    fn env_no_hostname_when_pod_has_none() {
        let env = build_env(&[], &[], "").unwrap();
        assert!(!env.iter().any(|e| e.starts_with("HOSTNAME=")));
    }

    #[test]
    fn env_value_may_contain_equals_and_be_empty() {
        let env = build_env(&s(&["A=b=c", "NOVALUE", "E="]), &[kv("F", "")], "").unwrap();
        assert!(env.contains(&"A=b=c".to_string()));
        assert!(env.contains(&"E=".to_string()));
        assert!(env.contains(&"F=".to_string()));
        assert!(!env.iter().any(|e| e.starts_with("NOVALUE")));
    }

    #[test]
    fn env_bad_cri_names_are_rejected() {
        for key in ["", "A=B", "A\0"] {
            let err = build_env(&[], &[kv(key, "v")], "h").unwrap_err();
            assert!(matches!(err, SpecError::InvalidEnv { .. }), "{key:?}");
            assert_eq!(err.kind(), Kind::InvalidArgument);
        }
    }

    #[test]
    fn cwd_prefers_cri_then_image_then_root() {
        assert_eq!(
            working_dir("/w", Some("/img")).unwrap(),
            PathBuf::from("/w")
        );
        assert_eq!(
            working_dir("", Some("/img")).unwrap(),
            PathBuf::from("/img")
        );
        assert_eq!(working_dir("", Some("")).unwrap(), PathBuf::from("/"));
        assert_eq!(working_dir("", None).unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn cwd_must_be_absolute() {
        let err = working_dir("app", None).unwrap_err();
        assert!(matches!(err, SpecError::RelativeWorkingDir(ref d) if d == "app"));
        assert!(working_dir("", Some("rel")).is_err());
    }

    #[test]
    fn apply_process_sets_argv_env_cwd_terminal() {
        let mut f = Fixture::new();
        f.image = serde_json::from_str(
            r#"{"Entrypoint":["/e"],"Cmd":["c"],"Env":["X=1"],"WorkingDir":"/srv"}"#,
        )
        .unwrap();
        f.config.tty = true;
        let mut spec = Spec::default();
        apply_process(&mut spec, &f.input()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["/e", "c"]);
        assert!(p.env().as_ref().unwrap().contains(&"X=1".to_string()));
        assert_eq!(p.cwd(), &PathBuf::from("/srv"));
        assert_eq!(p.terminal(), Some(true));
    }
}
