//! Runtime selection: which backend gets a pod and each of its containers, and why.
//!
//! The order (docs/runtime-selection.md), first match wins:
//! 1. the RuntimeClass handler of RunPodSandbox (`runtime_handler`), a configured
//!    `[handlers.<name>]`; an unknown handler is refused (InvalidArgument);
//! 2. the pod annotation `proxrt.io/runtime`, whose value names a configured handler;
//! 3. the `[[image_rules]]` (CreateContainer only: RunPodSandbox carries no image);
//! 4. `runtime.default_backend`.
//!
//! A pod chosen by 1 or 2 keeps that backend for all its containers. A pod that got the
//! default has its containers matched against the image rules; a rule may send a container
//! to another backend of the same family (crun in a libcontainer pod: both run OCI bundles
//! in the pod's namespaces on this host), never to another family (a Proxmox guest cannot
//! join the namespaces of a host pod): that is refused with FailedPrecondition, before
//! anything of the container is made.
//!
//! Everything here is pure: the config in, a decision with its reason out. The daemon adds
//! what only it knows (whether the chosen backend is available on this host).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::{Config, HandlerConfig, ImageRuleConfig, MatchKind};
use crate::error::{Classify, Kind};

/// The pod annotation that names a handler when the pod has no RuntimeClass.
pub const RUNTIME_ANNOTATION: &str = "proxrt.io/runtime";

/// A backend proxrt knows by name, implemented on this daemon or not.
#[derive(Debug, Clone, Copy)]
pub struct KnownBackend {
    pub name: &'static str,
    /// Backends of one family can serve containers of one pod.
    pub family: &'static str,
    /// False: selecting it fails with "not implemented yet".
    pub implemented: bool,
    /// The handler options it accepts; `None`: not validated yet (unimplemented backend).
    pub options: Option<&'static [&'static str]>,
}

/// Every backend name a config may use.
pub const KNOWN_BACKENDS: &[KnownBackend] = &[
    KnownBackend {
        name: "libcontainer",
        family: "oci",
        implemented: true,
        options: Some(&[]),
    },
    KnownBackend {
        name: "crun",
        family: "oci",
        implemented: true,
        options: Some(&[]),
    },
    KnownBackend {
        name: "proxmox-lxc",
        family: "proxmox-lxc",
        implemented: true,
        options: None,
    },
];

pub fn known_backend(name: &str) -> Option<&'static KnownBackend> {
    KNOWN_BACKENDS.iter().find(|b| b.name == name)
}

fn known_names() -> String {
    KNOWN_BACKENDS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SelectError {
    #[error("unknown runtime handler {name:?} (configured handlers: {known})")]
    UnknownHandler { name: String, known: String },
    #[error("pod annotation {RUNTIME_ANNOTATION}={value:?} names no configured handler (configured handlers: {known})")]
    UnknownAnnotation { value: String, known: String },
    #[error(
        "container image {image:?} goes to backend {target} by {rule}, but its pod sandbox runs on backend \
         {pod_backend} ({pod_reason}); the containers of a pod share its backend family: give the pod the \
         RuntimeClass handler or the {RUNTIME_ANNOTATION} annotation of a {target} handler"
    )]
    MixedPod {
        image: String,
        rule: String,
        target: String,
        pod_backend: String,
        pod_reason: String,
    },
    #[error("backend {backend} is not available on this daemon ({why}); selected by {reason}")]
    Unavailable {
        backend: String,
        why: String,
        reason: String,
    },
}

impl Classify for SelectError {
    fn kind(&self) -> Kind {
        match self {
            SelectError::UnknownHandler { .. } | SelectError::UnknownAnnotation { .. } => {
                Kind::InvalidArgument
            }
            SelectError::MixedPod { .. } | SelectError::Unavailable { .. } => {
                Kind::FailedPrecondition
            }
        }
    }
}

/// Which step of the order made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Handler,
    Annotation,
    ImageRule,
    Default,
}

/// A backend and why it was chosen: "handler crun", "annotation proxrt.io/runtime=crun",
/// "image rule #2 prefix lxc/", "default".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub backend: String,
    pub reason: String,
    pub source: Source,
    /// The handler's options (empty unless a handler decided).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl Decision {
    fn explicit(&self) -> bool {
        matches!(self.source, Source::Handler | Source::Annotation)
    }
}

/// What CreateContainer knows of the pod's decision (from the sandbox record).
#[derive(Debug, Clone, Copy)]
pub struct PodChoice<'a> {
    pub backend: &'a str,
    pub reason: &'a str,
    /// Handler or annotation: image rules are not consulted. Default: they are.
    pub source: Source,
}

impl<'a> PodChoice<'a> {
    /// From what RunPodSandbox was given (an invalid handler or annotation would have been
    /// refused then, so their presence says which step decided).
    pub fn from_request(
        backend: &'a str,
        reason: &'a str,
        runtime_handler: &str,
        annotations: &HashMap<String, String>,
    ) -> PodChoice<'a> {
        let source = if !runtime_handler.is_empty() {
            Source::Handler
        } else if annotations.contains_key(RUNTIME_ANNOTATION) {
            Source::Annotation
        } else {
            Source::Default
        };
        PodChoice {
            backend,
            reason,
            source,
        }
    }
}

/// A compiled `match` + `pattern` pair; `[[proxmox.templates]]` uses the same matching.
#[derive(Debug)]
pub(crate) enum Matcher {
    Prefix(String),
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl Matcher {
    pub(crate) fn compile(kind: MatchKind, pattern: &str) -> Result<Matcher, String> {
        if pattern.is_empty() {
            return Err("pattern is empty".into());
        }
        Ok(match kind {
            MatchKind::Prefix => Matcher::Prefix(pattern.to_owned()),
            MatchKind::Glob => globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map(|g| Matcher::Glob(g.compile_matcher()))
                .map_err(|e| format!("glob {pattern:?}: {e}"))?,
            // Full-match semantics: the pattern must match a whole name form, as a glob does.
            MatchKind::Regex => regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(1 << 20)
                .build()
                .map(Matcher::Regex)
                .map_err(|e| format!("regex {pattern:?}: {e}"))?,
        })
    }

    pub(crate) fn matches(&self, form: &str) -> bool {
        match self {
            Matcher::Prefix(p) => form.starts_with(p.as_str()),
            Matcher::Glob(g) => g.is_match(form),
            Matcher::Regex(r) => r.is_match(form),
        }
    }
}

/// One `[[image_rules]]` entry, compiled.
#[derive(Debug)]
struct Rule {
    /// 1-based position in the config: "#2".
    number: usize,
    kind: MatchKind,
    pattern: String,
    backend: String,
    priority: i32,
    matcher: Matcher,
}

impl Rule {
    fn compile(number: usize, r: &ImageRuleConfig) -> Result<Rule, String> {
        let matcher = Matcher::compile(r.kind, &r.pattern)?;
        Ok(Rule {
            number,
            kind: r.kind,
            pattern: r.pattern.clone(),
            backend: r.backend.clone(),
            priority: r.priority,
            matcher,
        })
    }

    fn matches(&self, form: &str) -> bool {
        self.matcher.matches(form)
    }

    /// "image rule #2 prefix lxc/"
    fn describe(&self) -> String {
        format!(
            "image rule #{} {} {}",
            self.number,
            self.kind.name(),
            self.pattern
        )
    }

    /// The first of `forms` this rule matches.
    fn first_match<'f>(&self, forms: &'f [String]) -> Option<&'f str> {
        forms.iter().map(String::as_str).find(|f| self.matches(f))
    }
}

/// The compiled selection config.
#[derive(Debug)]
pub struct Selector {
    default_backend: String,
    handlers: BTreeMap<String, HandlerConfig>,
    /// In evaluation order: priority descending, then config order.
    rules: Vec<Rule>,
}

/// A config problem: the key and what is wrong with it.
pub type ConfigProblem = (String, String);

impl Selector {
    /// Compiles and checks the selection parts of a config: every backend name is known,
    /// handler options are ones the backend takes, every rule compiles.
    pub fn new(config: &Config) -> Result<Selector, ConfigProblem> {
        let default_backend = &config.runtime.default_backend;
        if known_backend(default_backend).is_none() {
            return Err((
                "runtime.default_backend".into(),
                format!(
                    "unknown backend {default_backend:?} (known: {})",
                    known_names()
                ),
            ));
        }
        for (name, h) in &config.handlers {
            let key = format!("handlers.{name:?}");
            if name.is_empty() {
                return Err((key, "a handler name must not be empty".into()));
            }
            let Some(known) = known_backend(&h.backend) else {
                return Err((
                    format!("{key}.backend"),
                    format!("unknown backend {:?} (known: {})", h.backend, known_names()),
                ));
            };
            if let Some(accepted) = known.options {
                if let Some(k) = h.options.keys().find(|k| !accepted.contains(&k.as_str())) {
                    return Err((
                        format!("{key}.options.{k}"),
                        match accepted.is_empty() {
                            true => format!("backend {} takes no options", known.name),
                            false => {
                                format!("backend {} takes only {}", known.name, accepted.join(", "))
                            }
                        },
                    ));
                }
            }
        }
        let mut rules = Vec::with_capacity(config.image_rules.len());
        for (i, r) in config.image_rules.iter().enumerate() {
            let key = format!("image_rules[{i}]");
            if known_backend(&r.backend).is_none() {
                return Err((
                    format!("{key}.backend"),
                    format!(
                        "rule #{}: unknown backend {:?} (known: {})",
                        i + 1,
                        r.backend,
                        known_names()
                    ),
                ));
            }
            rules
                .push(Rule::compile(i + 1, r).map_err(|e| (key, format!("rule #{}: {e}", i + 1)))?);
        }
        // Stable: equal priorities keep config order.
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        Ok(Selector {
            default_backend: default_backend.clone(),
            handlers: config.handlers.clone(),
            rules,
        })
    }

    fn handler(&self, name: &str) -> Option<&HandlerConfig> {
        self.handlers.get(name)
    }

    fn handler_names(&self) -> String {
        self.handlers.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The pod's backend: handler, then annotation, then the default (image rules come
    /// later, per container).
    pub fn for_pod(
        &self,
        runtime_handler: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<Decision, SelectError> {
        if !runtime_handler.is_empty() {
            let h = self
                .handler(runtime_handler)
                .ok_or_else(|| SelectError::UnknownHandler {
                    name: runtime_handler.to_owned(),
                    known: self.handler_names(),
                })?;
            return Ok(Decision {
                backend: h.backend.clone(),
                reason: format!("handler {runtime_handler}"),
                source: Source::Handler,
                options: h.options.clone(),
            });
        }
        if let Some(value) = annotations.get(RUNTIME_ANNOTATION) {
            let h = self
                .handler(value)
                .ok_or_else(|| SelectError::UnknownAnnotation {
                    value: value.clone(),
                    known: self.handler_names(),
                })?;
            return Ok(Decision {
                backend: h.backend.clone(),
                reason: format!("annotation {RUNTIME_ANNOTATION}={value}"),
                source: Source::Annotation,
                options: h.options.clone(),
            });
        }
        Ok(Decision {
            backend: self.default_backend.clone(),
            reason: "default".into(),
            source: Source::Default,
            options: BTreeMap::new(),
        })
    }

    /// A container's backend in a pod that already has one. `image_names` are the names
    /// the container's image goes by (see `image_forms`); `image` is how the request
    /// spelled it, for messages.
    pub fn for_container(
        &self,
        pod: PodChoice<'_>,
        image: &str,
        image_names: &[String],
    ) -> Result<Decision, SelectError> {
        let inherited = |source| Decision {
            backend: pod.backend.to_owned(),
            reason: pod.reason.to_owned(),
            source,
            options: BTreeMap::new(),
        };
        if pod.source != Source::Default {
            return Ok(inherited(pod.source));
        }
        let forms = all_forms(image_names);
        let Some((rule, _)) = self.first_rule(&forms) else {
            return Ok(inherited(Source::Default));
        };
        let family = |b: &str| known_backend(b).map(|k| k.family);
        if family(&rule.backend) != family(pod.backend) {
            return Err(SelectError::MixedPod {
                image: image.to_owned(),
                rule: rule.describe(),
                target: rule.backend.clone(),
                pod_backend: pod.backend.to_owned(),
                pod_reason: pod.reason.to_owned(),
            });
        }
        Ok(Decision {
            backend: rule.backend.clone(),
            reason: rule.describe(),
            source: Source::ImageRule,
            options: BTreeMap::new(),
        })
    }

    /// The rule that decides for these name forms, and the form it matched.
    fn first_rule<'s, 'f>(&'s self, forms: &'f [String]) -> Option<(&'s Rule, &'f str)> {
        self.rules
            .iter()
            .find_map(|r| r.first_match(forms).map(|f| (r, f)))
    }

    /// Every step of the decision for a pod with one container of `image`, for
    /// `proxrt select`.
    pub fn explain(
        &self,
        image: &str,
        runtime_handler: &str,
        annotations: &HashMap<String, String>,
    ) -> Explanation {
        let forms = image_forms(image);
        let mut steps = Vec::new();
        steps.push(match runtime_handler {
            "" => "1. RuntimeClass handler: none given".to_owned(),
            h => match self.handler(h) {
                Some(c) => format!(
                    "1. RuntimeClass handler {h}: configured, backend {}",
                    c.backend
                ),
                None => format!("1. RuntimeClass handler {h}: not configured (InvalidArgument)"),
            },
        });
        steps.push(match annotations.get(RUNTIME_ANNOTATION) {
            None => format!("2. annotation {RUNTIME_ANNOTATION}: not set"),
            Some(_) if !runtime_handler.is_empty() => {
                format!("2. annotation {RUNTIME_ANNOTATION}: ignored (the handler decides)")
            }
            Some(v) => match self.handler(v) {
                Some(c) => format!("2. annotation {RUNTIME_ANNOTATION}={v}: handler {v}, backend {}", c.backend),
                None => format!("2. annotation {RUNTIME_ANNOTATION}={v}: names no configured handler (InvalidArgument)"),
            },
        });
        let pod = self.for_pod(runtime_handler, annotations);
        let consulted = matches!(&pod, Ok(d) if !d.explicit());
        steps.push(format!(
            "3. image rules{}, matched against {}:",
            match &pod {
                Ok(d) if d.source == Source::Handler =>
                    " (not consulted: the pod's handler decides)",
                Ok(d) if d.source == Source::Annotation =>
                    " (not consulted: the pod's annotation decides)",
                _ => "",
            },
            forms
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut decided = false;
        for r in &self.rules {
            let outcome = match r.first_match(&forms) {
                Some(f) if !decided => {
                    decided = true;
                    format!("matches {f:?}{}", if consulted { " → decides" } else { "" })
                }
                Some(f) => format!("matches {f:?} (an earlier rule decided)"),
                None => "no match".to_owned(),
            };
            steps.push(format!(
                "   #{} {} {:?} → {} (priority {}): {outcome}",
                r.number,
                r.kind.name(),
                r.pattern,
                r.backend,
                r.priority
            ));
        }
        if self.rules.is_empty() {
            steps.push("   (no rules configured)".into());
        }
        steps.push(format!("4. default backend: {}", self.default_backend));
        let container = pod.clone().and_then(|p| {
            let choice = PodChoice {
                backend: &p.backend,
                reason: &p.reason,
                source: p.source,
            };
            self.for_container(choice, image, &[image.to_owned()])
        });
        Explanation {
            image: image.to_owned(),
            forms,
            steps,
            pod: pod.map_err(|e| e.to_string()),
            container: container.map_err(|e| e.to_string()),
            unavailable: BTreeMap::new(),
            outcome: Err("not checked against this host".into()),
        }
    }

    /// `explain`, then what RunPodSandbox and CreateContainer would answer on a host where
    /// `unavailable` says why a backend cannot take new containers.
    pub fn explain_on_host(
        &self,
        image: &str,
        runtime_handler: &str,
        annotations: &HashMap<String, String>,
        unavailable: impl Fn(&str) -> Option<String>,
    ) -> Explanation {
        let mut e = self.explain(image, runtime_handler, annotations);
        e.unavailable = KNOWN_BACKENDS
            .iter()
            .map(|k| (k.name.to_owned(), unavailable(k.name)))
            .collect();
        let refused = |call: &str, d: &Decision, why: String| {
            let err = SelectError::Unavailable {
                backend: d.backend.clone(),
                why,
                reason: d.reason.clone(),
            };
            format!("{call} fails ({:?}): {err}", err.kind())
        };
        e.outcome = match (&e.pod, &e.container) {
            (Err(msg), _) => Err(format!("RunPodSandbox fails (InvalidArgument): {msg}")),
            (Ok(pod), _) if unavailable(&pod.backend).is_some() => Err(refused(
                "RunPodSandbox",
                pod,
                unavailable(&pod.backend).unwrap_or_default(),
            )),
            (Ok(_), Err(msg)) => Err(format!("CreateContainer fails (FailedPrecondition): {msg}")),
            (Ok(_), Ok(c)) => match unavailable(&c.backend) {
                Some(why) => Err(refused("CreateContainer", c, why)),
                None => Ok(format!(
                    "the container runs on {} ({})",
                    c.backend, c.reason
                )),
            },
        };
        e
    }
}

/// What `proxrt select` prints.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub image: String,
    /// The forms the image rules were matched against.
    pub forms: Vec<String>,
    pub steps: Vec<String>,
    /// The pod sandbox's backend (RunPodSandbox), or the error.
    pub pod: Result<Decision, String>,
    /// The container's backend (CreateContainer), or the error.
    pub container: Result<Decision, String>,
    /// Every known backend and why it cannot take new containers on this host (None: it can).
    pub unavailable: BTreeMap<String, Option<String>>,
    /// Where the container would run, or which call would fail and how.
    pub outcome: Result<String, String>,
}

impl Explanation {
    /// The text `proxrt select` prints.
    pub fn render(&self) -> String {
        let decision = |d: &Result<Decision, String>| match d {
            Ok(d) => format!("{} ({})", d.backend, d.reason),
            Err(e) => format!("refused: {e}"),
        };
        let mut out = format!(
            "image:     {}\npod:       {}\ncontainer: {}\n",
            self.image,
            decision(&self.pod),
            decision(&self.container)
        );
        out.push_str(&match &self.outcome {
            Ok(s) => format!("outcome:   {s}\n"),
            Err(s) => format!("outcome:   {s}\n"),
        });
        out.push_str("\nhow:\n");
        for s in &self.steps {
            out.push_str(&format!("  {s}\n"));
        }
        if !self.unavailable.is_empty() {
            out.push_str("\nbackends on this host:\n");
            for (name, why) in &self.unavailable {
                match why {
                    None => out.push_str(&format!("  {name}: available\n")),
                    Some(why) => out.push_str(&format!("  {name}: unavailable ({why})\n")),
                }
            }
        }
        out
    }
}

/// `proxrt select`, offline: the config's decision for a pod with one container of
/// `image`, checked against this host by the same registry the daemon uses (crun probed
/// as the daemon would probe it).
pub fn explain_offline(
    config: &Config,
    image: &str,
    runtime_handler: &str,
    annotations: &HashMap<String, String>,
) -> Result<Explanation, ConfigProblem> {
    let selector = Selector::new(config)?;
    let network = std::sync::Arc::new(crate::network::Network::new(&config.cni));
    let backends = crate::backend::Backends::probe(config, None, network);
    Ok(
        selector.explain_on_host(image, runtime_handler, annotations, |name| {
            backends.why_unavailable(name)
        }),
    )
}

/// The forms of an image name that image rules are matched against, in this order,
/// without duplicates:
///
/// 1. as written (`lxc/debian-12`);
/// 2. normalized, with the tag or digest (`docker.io/lxc/debian-12:latest`; `:latest` is
///    added when neither is given);
/// 3. short: the normalized form without `docker.io/` and `library/`
///    (`lxc/debian-12:latest`, `busybox:1.36`); other registries keep their name;
/// 4. normalized repository, no tag or digest (`docker.io/lxc/debian-12`);
/// 5. short repository (`lxc/debian-12`).
///
/// Forms 2–5 depend only on the parsed reference, so every spelling of one image
/// (`lxc/debian-12`, `docker.io/lxc/debian-12`, `docker.io/lxc/debian-12:latest`) gets the
/// same decision from any rule written in one of those forms. A name that is not a valid
/// reference (an image id) has only form 1.
pub fn image_forms(written: &str) -> Vec<String> {
    use crate::image::reference::{parse_query, parse_reference, ImageQuery};
    let written = written.trim();
    let mut forms = vec![written.to_owned()];
    if matches!(parse_query(written), Ok(ImageQuery::Id(_))) {
        return forms;
    }
    let Ok(r) = parse_reference(written) else {
        return forms;
    };
    let repo_full = format!("{}/{}", r.registry(), r.repository());
    let repo_short = match r.registry() {
        "docker.io" => r
            .repository()
            .strip_prefix("library/")
            .unwrap_or(r.repository())
            .to_owned(),
        _ => repo_full.clone(),
    };
    let suffix = format!(
        "{}{}",
        r.tag().map(|t| format!(":{t}")).unwrap_or_default(),
        r.digest().map(|d| format!("@{d}")).unwrap_or_default()
    );
    for f in [
        format!("{repo_full}{suffix}"),
        format!("{repo_short}{suffix}"),
        repo_full,
        repo_short,
    ] {
        if !forms.contains(&f) {
            forms.push(f);
        }
    }
    forms
}

/// The forms of every name, deduplicated, in order.
fn all_forms(names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        for f in image_forms(n) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        Config::from_toml_str(extra, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rules(text: &str) -> Selector {
        Selector::new(&config(text)).unwrap()
    }

    fn no_annotations() -> HashMap<String, String> {
        HashMap::new()
    }

    /// The container decision in a default pod.
    fn pick(s: &Selector, image: &str) -> Result<Decision, SelectError> {
        let pod = PodChoice {
            backend: "libcontainer",
            reason: "default",
            source: Source::Default,
        };
        s.for_container(pod, image, &[image.to_owned()])
    }

    /// (backend, reason) of the container decision, or the error text.
    fn outcome(s: &Selector, image: &str) -> (String, String) {
        match pick(s, image) {
            Ok(d) => (d.backend, d.reason),
            Err(e) => ("ERROR".into(), e.to_string()),
        }
    }

    fn rule(kind: &str, pattern: &str, backend: &str, priority: i32) -> String {
        format!("[[image_rules]]\nmatch = \"{kind}\"\npattern = '{pattern}'\nbackend = \"{backend}\"\npriority = {priority}\n")
    }

    #[test]
    fn forms_of_one_image_do_not_depend_on_its_spelling() {
        let a = image_forms("lxc/debian-12");
        assert_eq!(
            a,
            vec![
                "lxc/debian-12",
                "docker.io/lxc/debian-12:latest",
                "lxc/debian-12:latest",
                "docker.io/lxc/debian-12"
            ]
        );
        let b = image_forms("docker.io/lxc/debian-12");
        let c = image_forms("docker.io/lxc/debian-12:latest");
        let set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(set(&a), set(&b));
        assert_eq!(set(&a), set(&c));
        assert_eq!(
            image_forms("busybox:1.36"),
            vec![
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "docker.io/library/busybox",
                "busybox"
            ]
        );
        assert_eq!(
            image_forms("127.0.0.1:5000/a/b"),
            vec!["127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest"]
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            image_forms(&format!("busybox@{digest}")),
            vec![
                format!("busybox@{digest}"),
                format!("docker.io/library/busybox@{digest}"),
                "docker.io/library/busybox".into(),
                "busybox".into()
            ]
        );
        // An image id is no reference: it is matched as written only.
        assert_eq!(image_forms(&digest), vec![digest.clone()]);
    }

    #[test]
    fn the_shipped_rules_send_lxc_db_and_vm_images_to_proxmox_in_every_spelling() {
        let s = Selector::new(&Config::default()).unwrap();
        for image in [
            "lxc/debian-12",
            "docker.io/lxc/debian-12",
            "docker.io/lxc/debian-12:latest",
            "lxc/debian-12:bookworm",
            "db-postgres:15",
            "docker.io/library/db-postgres:15",
            "vm-windows",
        ] {
            let (backend, reason) = outcome(&s, image);
            assert_eq!(backend, "ERROR", "{image}: {reason}");
            assert!(
                reason.contains("goes to backend proxmox-lxc by image rule #"),
                "{image}: {reason}"
            );
            assert!(
                reason.contains("runs on backend libcontainer (default)"),
                "{image}: {reason}"
            );
        }
        let (_, reason) = outcome(&s, "lxc/debian-12");
        assert!(reason.contains("image rule #1 prefix lxc/"), "{reason}");
        let (_, reason) = outcome(&s, "db-x");
        assert!(reason.contains("image rule #2 prefix db-"), "{reason}");
        // Not at the start of the short name: no rule.
        for image in [
            "busybox",
            "mydb-1",
            "registry.example/lxc/debian-12",
            "quay.io/vm-x",
            "alxc/x",
        ] {
            assert_eq!(
                outcome(&s, image),
                ("libcontainer".into(), "default".into()),
                "{image}"
            );
        }
    }

    #[test]
    fn regexes_must_match_a_whole_form() {
        let s = rules(&rule("regex", "lxc/.*", "crun", 0));
        assert_eq!(outcome(&s, "lxc/debian-12").0, "crun");
        assert_eq!(outcome(&s, "docker.io/lxc/debian-12:1").0, "crun");
        // A match inside a form is not enough.
        assert_eq!(outcome(&s, "registry.example/lxc/x").0, "libcontainer");
        let s = rules(&rule("regex", "debian", "crun", 0));
        assert_eq!(outcome(&s, "lxc/debian-12").0, "libcontainer");
        // Anchors written by the user are harmless.
        let s = rules(&rule("regex", "^lxc/debian-[0-9]+$", "crun", 0));
        assert_eq!(outcome(&s, "docker.io/lxc/debian-12:latest").0, "crun");
        assert_eq!(outcome(&s, "lxc/debian-12x").0, "libcontainer");
        // An alternation is grouped, so the anchors apply to all of it.
        let s = rules(&rule("regex", "a|lxc/x", "crun", 0));
        assert_eq!(outcome(&s, "lxc/x").0, "crun");
        assert_eq!(outcome(&s, "lxc/x-a").0, "libcontainer");
        // Without a tag in the pattern any tag matches (the repository forms).
        let s = rules(&rule("regex", "lxc/debian-12", "crun", 0));
        assert_eq!(outcome(&s, "lxc/debian-12:bookworm").0, "crun");
        assert_eq!(outcome(&s, "docker.io/lxc/debian-12").0, "crun");
    }

    #[test]
    fn globs_do_not_cross_slashes_unless_double_starred() {
        let s = rules(&rule("glob", "lxc/*", "crun", 0));
        assert_eq!(outcome(&s, "lxc/debian-12").0, "crun");
        assert_eq!(outcome(&s, "docker.io/lxc/debian-12:1").0, "crun");
        assert_eq!(outcome(&s, "lxc/a/b").0, "libcontainer");
        let s = rules(&rule("glob", "**/pause*", "crun", 0));
        assert_eq!(outcome(&s, "registry.k8s.io/pause:3.9").0, "crun");
        let s = rules(&rule("glob", "*.example:5000/**", "crun", 0));
        assert_eq!(outcome(&s, "r.example:5000/a/b").0, "crun");
        assert_eq!(outcome(&s, "busybox").0, "libcontainer");
    }

    #[test]
    fn priorities_then_config_order_decide_between_overlapping_rules() {
        let text = [
            rule("prefix", "lxc/", "proxmox-lxc", 0),
            rule("glob", "lxc/debian-*", "crun", 0),
            rule("regex", "lxc/debian-12", "libcontainer", 10),
        ]
        .concat();
        let s = rules(&text);
        // Highest priority first.
        assert_eq!(
            outcome(&s, "lxc/debian-12"),
            (
                "libcontainer".into(),
                "image rule #3 regex lxc/debian-12".into()
            )
        );
        // Equal priorities: the earlier rule in the file wins.
        let (backend, reason) = outcome(&s, "lxc/debian-11");
        assert_eq!(backend, "ERROR");
        assert!(reason.contains("image rule #1 prefix lxc/"), "{reason}");
        // Negative priorities go after the default 0.
        let s = rules(
            &[
                rule("prefix", "lxc/", "proxmox-lxc", -1),
                rule("prefix", "lxc/", "crun", 0),
            ]
            .concat(),
        );
        assert_eq!(
            outcome(&s, "lxc/x"),
            ("crun".into(), "image rule #2 prefix lxc/".into())
        );
    }

    #[test]
    fn a_file_with_rules_replaces_the_shipped_ones_and_an_empty_list_removes_them() {
        let s = rules(&rule("prefix", "x/", "crun", 0));
        assert_eq!(outcome(&s, "lxc/debian-12").0, "libcontainer");
        let s = rules("image_rules = []\n");
        assert_eq!(outcome(&s, "lxc/debian-12").0, "libcontainer");
    }

    #[test]
    fn invalid_rules_are_refused_at_load_naming_the_rule() {
        for (text, key, what) in [
            (
                rule("regex", "(", "crun", 0),
                "image_rules[0]",
                "rule #1: regex \"(\"",
            ),
            (
                rule("regex", "a{99999999}", "crun", 0),
                "image_rules[0]",
                "rule #1: regex",
            ),
            (
                rule("glob", "a[", "crun", 0),
                "image_rules[0]",
                "rule #1: glob",
            ),
            (
                rule("prefix", "", "crun", 0),
                "image_rules[0]",
                "rule #1: pattern is empty",
            ),
            (
                [
                    rule("prefix", "a", "crun", 0),
                    rule("prefix", "b", "lxd", 0),
                ]
                .concat(),
                "image_rules[1].backend",
                "rule #2: unknown backend \"lxd\"",
            ),
            (
                rule("suffix", "a", "crun", 0),
                "image_rules[0].match",
                "unknown variant",
            ),
        ] {
            let err = Config::from_toml_str(&text, Path::new("/etc/proxrt/config.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(what), "{text}\n→ {err}");
        }
    }

    #[test]
    fn handlers_and_default_backend_are_checked_at_load() {
        for (text, key) in [
            (
                "[handlers.x]\nbackend = \"runc\"\n",
                "handlers.\"x\".backend",
            ),
            (
                "[handlers.x]\nbackend = \"crun\"\noptions = { cpu = \"1\" }\n",
                "handlers.\"x\".options.cpu",
            ),
            ("[handlers.x]\nbackennd = \"crun\"\n", "backennd"),
            (
                "[runtime]\ndefault_backend = \"runc\"\n",
                "runtime.default_backend",
            ),
        ] {
            let err = Config::from_toml_str(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}\n→ {err}");
        }
        // Options of a backend that is not implemented yet are kept as given.
        let c = config(
            "[handlers.pve]\nbackend = \"proxmox-lxc\"\noptions = { storage = \"local-lvm\" }\n",
        );
        let d = Selector::new(&c)
            .unwrap()
            .for_pod("pve", &no_annotations())
            .unwrap();
        assert_eq!(
            d.options.get("storage").map(String::as_str),
            Some("local-lvm")
        );
    }

    #[test]
    fn handler_then_annotation_then_default_for_the_pod() {
        let s = Selector::new(&Config::default()).unwrap();
        let ann = |v: &str| HashMap::from([(RUNTIME_ANNOTATION.to_owned(), v.to_owned())]);
        let d = s.for_pod("crun", &ann("libcontainer")).unwrap();
        assert_eq!(
            (d.backend.as_str(), d.reason.as_str(), d.source),
            ("crun", "handler crun", Source::Handler)
        );
        let d = s.for_pod("", &ann("crun")).unwrap();
        assert_eq!(d.reason, "annotation proxrt.io/runtime=crun");
        assert_eq!(d.source, Source::Annotation);
        let d = s.for_pod("", &no_annotations()).unwrap();
        assert_eq!(
            (d.backend.as_str(), d.reason.as_str()),
            ("libcontainer", "default")
        );

        let e = s.for_pod("runc", &no_annotations()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert!(
            e.to_string().contains("unknown runtime handler \"runc\""),
            "{e}"
        );
        assert!(
            e.to_string().contains("crun, libcontainer, proxmox-lxc"),
            "{e}"
        );
        let e = s.for_pod("", &ann("runc")).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        // The handler wins even over an annotation that would be refused.
        assert!(s.for_pod("crun", &ann("runc")).is_ok());

        let c = config("[runtime]\ndefault_backend = \"crun\"\n");
        let d = Selector::new(&c)
            .unwrap()
            .for_pod("", &no_annotations())
            .unwrap();
        assert_eq!((d.backend.as_str(), d.reason.as_str()), ("crun", "default"));
    }

    #[test]
    fn containers_follow_an_explicit_pod_and_rules_stay_within_a_family() {
        let s = rules(
            &[
                rule("prefix", "lxc/", "proxmox-lxc", 0),
                rule("prefix", "fast/", "crun", 0),
            ]
            .concat(),
        );
        let explicit = PodChoice {
            backend: "libcontainer",
            reason: "handler libcontainer",
            source: Source::Handler,
        };
        let d = s
            .for_container(explicit, "lxc/x", &["lxc/x".into()])
            .unwrap();
        assert_eq!(
            (d.backend.as_str(), d.reason.as_str()),
            ("libcontainer", "handler libcontainer")
        );

        // Same family: the rule moves the container to crun inside a libcontainer pod.
        assert_eq!(
            outcome(&s, "fast/app"),
            ("crun".into(), "image rule #2 prefix fast/".into())
        );
        // Another family: refused, naming both.
        let e = pick(&s, "lxc/x").unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        let text = e.to_string();
        assert!(
            text.contains("proxmox-lxc") && text.contains("libcontainer (default)"),
            "{text}"
        );
        // A Proxmox pod refuses an OCI image rule the same way.
        let pve = PodChoice {
            backend: "proxmox-lxc",
            reason: "default",
            source: Source::Default,
        };
        assert!(s
            .for_container(pve, "fast/app", &["fast/app".into()])
            .is_err());
        assert_eq!(
            s.for_container(pve, "busybox", &["busybox".into()])
                .unwrap()
                .backend,
            "proxmox-lxc"
        );
    }

    #[test]
    fn any_of_the_images_names_may_match() {
        // CreateContainer with an image id: the names come from the image store.
        let s = rules(&rule("prefix", "fast/", "crun", 0));
        let pod = PodChoice {
            backend: "libcontainer",
            reason: "default",
            source: Source::Default,
        };
        let id = format!("sha256:{}", "b".repeat(64));
        let d = s
            .for_container(pod, &id, &[id.clone(), "docker.io/fast/app:1".into()])
            .unwrap();
        assert_eq!(d.backend, "crun");
    }

    #[test]
    fn explain_walks_every_step() {
        let s = Selector::new(&Config::default()).unwrap();
        let e = s.explain("docker.io/lxc/debian-12", "", &no_annotations());
        let text = e.steps.join("\n");
        assert!(
            text.contains("1. RuntimeClass handler: none given"),
            "{text}"
        );
        assert!(text.contains("#1 prefix \"lxc/\" → proxmox-lxc (priority 0): matches \"lxc/debian-12:latest\" → decides"), "{text}");
        assert!(
            text.contains("#2 prefix \"db-\" → proxmox-lxc (priority 0): no match"),
            "{text}"
        );
        assert_eq!(e.pod.as_ref().unwrap().backend, "libcontainer");
        assert!(e.container.as_ref().unwrap_err().contains("proxmox-lxc"));

        let e = s.explain("lxc/debian-12", "proxmox-lxc", &no_annotations());
        assert_eq!(e.pod.as_ref().unwrap().reason, "handler proxmox-lxc");
        assert_eq!(e.container.as_ref().unwrap().backend, "proxmox-lxc");
        assert!(e.steps.join("\n").contains("not consulted"));
    }
}
