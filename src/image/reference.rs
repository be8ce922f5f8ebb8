//! Image names as users write them, and the one normalized form proxrt stores and
//! matches: `docker.io/library/busybox:latest`, `registry.k8s.io/pause@sha256:…`.

use oci_client::Reference;

use super::ImageError;

/// What a user may name an image by in ImageStatus, RemoveImage or CreateContainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageQuery {
    /// The image id (the config digest): `sha256:<64 hex>`, or `<64 hex>`, or a unique
    /// hex prefix of at least 12 characters as debugging clients print them.
    Id(String),
    /// A tag or digest reference, normalized.
    Name(Reference),
    /// A bare hex string of 12 to 63 characters: an id prefix as debugging clients
    /// print it, but also a valid name (`docker.io/library/<hex>:latest`). A name that
    /// matches wins, else the id prefix is tried (containerd resolves the same way).
    NameOrIdPrefix(Reference, String),
}

/// Parses a reference for pulling: a name with a tag, a digest, or neither (`latest`).
pub fn parse_reference(image: &str) -> Result<Reference, ImageError> {
    let image = image.trim();
    if image.is_empty() {
        return Err(ImageError::InvalidReference {
            reference: image.into(),
            reason: "empty image name".into(),
        });
    }
    let reference = grammar::parse(image).map_err(|reason| ImageError::InvalidReference {
        reference: image.into(),
        reason: reason.into(),
    })?;
    // oci-spec takes an uppercase first component ("UPPER/x") for a registry host and
    // then files it under docker.io; Docker's grammar refuses uppercase repositories.
    if reference
        .repository()
        .bytes()
        .any(|b| b.is_ascii_uppercase())
    {
        return Err(ImageError::InvalidReference {
            reference: image.into(),
            reason: "repository name must be lowercase".into(),
        });
    }
    Ok(reference)
}

/// Parses what ImageStatus/RemoveImage accept: an id, an id prefix, or a reference.
pub fn parse_query(image: &str) -> Result<ImageQuery, ImageError> {
    let s = image.trim();
    if let Some(hex) = s.strip_prefix("sha256:") {
        if is_hex(hex) && (12..=64).contains(&hex.len()) {
            return Ok(ImageQuery::Id(hex.to_owned()));
        }
        return Err(ImageError::InvalidReference {
            reference: image.into(),
            reason: "an image id is sha256: followed by hex digits".into(),
        });
    }
    if is_hex(s) && s.len() == 64 {
        return Ok(ImageQuery::Id(s.to_owned()));
    }
    match parse_reference(s) {
        Ok(r) if is_hex(s) && s.len() >= 12 => Ok(ImageQuery::NameOrIdPrefix(r, s.to_owned())),
        Ok(r) => Ok(ImageQuery::Name(r)),
        // A short hex prefix that is not a valid name is still a fine id prefix.
        Err(_) if is_hex(s) && s.len() >= 12 => Ok(ImageQuery::Id(s.to_owned())),
        Err(e) => Err(e),
    }
}

/// `docker.io/library/busybox:latest` (tag form) of a reference.
pub fn tag_name(r: &Reference) -> Option<String> {
    r.tag()
        .map(|t| format!("{}/{}:{}", r.registry(), r.repository(), t))
}

/// `docker.io/library/busybox@sha256:…` (digest form) for a repository and a digest.
pub fn digest_name(r: &Reference, digest: &str) -> String {
    format!("{}/{}@{}", r.registry(), r.repository(), digest)
}

/// The distribution reference grammar (Docker's `reference.go`, as oci-spec reads it)
/// without a regex. oci-spec's `Reference::try_from` matches one regex whose tag part,
/// `[\w][\w.-]{0,127}` with Unicode `\w`, compiles to 5.4 MB of NFA kept for the
/// daemon's life (massif; most of what the first pull added to the daemon's memory). Here
/// the same grammar is checked by hand, ASCII only as in Docker's Go regexps, and the
/// result built with oci-spec's constructors; `tests::the_grammar_agrees_with_oci_spec`
/// compares the two on generated references (vendor-notes/oci-spec.md).
mod grammar {
    use oci_client::Reference;

    const DOCKER_HUB: &str = "docker.io";
    const DOCKER_HUB_LEGACY: &str = "index.docker.io";
    const NAME_MAX: usize = 255;
    const INVALID: &str = "invalid reference format";

    /// `name [":" tag] ["@" digest]`, normalized: the Docker Hub domain when the first
    /// component is not a host, `library/` for its one-component names, `latest` when
    /// neither tag nor digest is given.
    pub(super) fn parse(s: &str) -> Result<Reference, &'static str> {
        if s.is_empty() {
            return Err("repository name must have at least one component");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (s, None),
        };
        // A tag follows the last ':' when no '/' comes after it ("host:5000/x" has none).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if !valid_name(name) || !tag.is_none_or(valid_tag) || !digest.is_none_or(valid_digest) {
            return Err(INVALID);
        }
        let (registry, repository) = split_domain(name);
        if repository.len() > NAME_MAX {
            return Err("repository name must not be more than 255 characters");
        }
        if let Some(digest) = digest {
            let hex_len = match digest.split_once(':') {
                Some(("sha256", hex)) => (hex.len(), 64),
                Some(("sha384", hex)) => (hex.len(), 96),
                Some(("sha512", hex)) => (hex.len(), 128),
                _ => return Err("unsupported digest algorithm"),
            };
            if hex_len.0 != hex_len.1 {
                return Err("invalid checksum digest length");
            }
        }
        Ok(match (tag, digest) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
            }
            (Some(tag), None) => Reference::with_tag(registry, repository, tag.into()),
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
            (None, None) => Reference::with_tag(registry, repository, "latest".into()),
        })
    }

    /// `[domain "/"] path-component ("/" path-component)*`: all components are path
    /// components, or the first is a domain and at least one follows.
    fn valid_name(name: &str) -> bool {
        let mut parts = name.split('/');
        let first = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        rest.iter().all(|c| path_component(c))
            && (path_component(first) || (!rest.is_empty() && domain(first)))
    }

    /// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
    fn path_component(c: &str) -> bool {
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let b = c.as_bytes();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        // Between alphanumeric runs: one '.', one or two '_', or any number of '-'.
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &b[start..i];
            let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&s| s == b'-');
            if !ok {
                return false;
            }
        }
        true
    }

    /// `domain-component ("." domain-component)* [":" [0-9]+]`, a domain component being
    /// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
    fn domain(d: &str) -> bool {
        let (host, port) = match d.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (d, None),
        };
        let component = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        };
        host.split('.').all(component)
            && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }

    /// `[\w][\w.-]{0,127}`, `\w` being ASCII `[0-9A-Za-z_]`.
    fn valid_tag(t: &str) -> bool {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && word(b[0])
            && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
    }

    /// `algorithm ":" [0-9a-fA-F]{32,}`, the algorithm being `[A-Za-z][A-Za-z0-9]*`
    /// components joined by one of `-_+.`.
    fn valid_digest(d: &str) -> bool {
        let Some((algorithm, hex)) = d.split_once(':') else {
            return false;
        };
        let component = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        };
        algorithm.split(['-', '_', '+', '.']).all(component)
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// Docker's `splitDomain`: the first component is a host when it has a '.' or a
    /// ':' or is `localhost`; otherwise the name is on Docker Hub.
    fn split_domain(name: &str) -> (String, String) {
        let (mut domain, mut rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if domain == DOCKER_HUB_LEGACY {
            domain = DOCKER_HUB.to_owned();
        }
        if domain == DOCKER_HUB && !rest.contains('/') {
            rest = format!("library/{rest}");
        }
        (domain, rest)
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_normalized() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(tag_name(&r).unwrap(), "docker.io/library/busybox:latest");
        let r = parse_reference("lxc/debian-12:1").unwrap();
        assert_eq!(tag_name(&r).unwrap(), "docker.io/lxc/debian-12:1");
        let r = parse_reference("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(tag_name(&r).unwrap(), "127.0.0.1:5000/a/b:v1");
    }

    #[test]
    fn digests_are_kept() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("registry.k8s.io/pause@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(digest_name(&r, &d), format!("registry.k8s.io/pause@{d}"));
    }

    /// oci-spec's reading of a reference (its regex), with parse_reference's own
    /// uppercase check: what `grammar::parse` must agree with on ASCII input.
    fn oci_spec_reading(s: &str) -> Option<(String, String, Option<String>, Option<String>)> {
        let r = Reference::try_from(s).ok()?;
        if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        Some((
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(str::to_owned),
        ))
    }

    fn reference_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let domain = prop_oneof![
            Just(""),
            Just("localhost/"),
            Just("localhost:5000/"),
            Just("127.0.0.1:5000/"),
            Just("Reg.Example-1.io/"),
            Just("index.docker.io/"),
            Just("docker.io/"),
            Just("-bad.io/"),
            Just("UP/"),
            Just("a:b/"),
        ];
        let path = proptest::collection::vec("[a-z0-9][a-z0-9._-]{0,6}[a-z0-9]?", 1..4)
            .prop_map(|c| c.join("/"));
        let tag = prop_oneof![
            Just(String::new()),
            "[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}".prop_map(|t| format!(":{t}")),
            Just(format!(":{}", "t".repeat(128))),
            Just(format!(":{}", "t".repeat(129))),
            Just(":".to_owned()),
            Just(":é".to_owned()),
        ];
        let hex64 = "0123456789abcdef".repeat(4);
        let digest = prop_oneof![
            Just(String::new()),
            Just(format!("@sha256:{hex64}")),
            Just(format!("@sha256:{}", &hex64[..40])),
            Just(format!("@sha512:{hex64}{hex64}")),
            Just(format!("@md5:{}", &hex64[..32])),
            Just(format!("@sha256:{}G", &hex64[..63])),
            Just(format!("@sha256+b64u.x_y:{hex64}")),
            Just("@".to_owned()),
        ];
        let noise = "[a-zA-Z0-9._:/@ -]{0,24}";
        prop_oneof![
            4 => (domain, path, tag, digest).prop_map(|(d, p, t, g)| format!("{d}{p}{t}{g}")),
            1 => noise.prop_map(|s| s),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn the_grammar_agrees_with_oci_spec(s in reference_like()) {
            let ours = grammar::parse(&s).ok().filter(|r| {
                !r.repository().bytes().any(|b| b.is_ascii_uppercase())
            }).map(|r| (
                r.registry().to_owned(),
                r.repository().to_owned(),
                r.tag().map(str::to_owned),
                r.digest().map(str::to_owned),
            ));
            // oci-spec's `\w` is Unicode; Docker's (and ours) is ASCII.
            if s.is_ascii() {
                proptest::prop_assert_eq!(ours, oci_spec_reading(&s), "{:?}", s);
            } else {
                proptest::prop_assert!(ours.is_none(), "{:?} accepted", s);
            }
        }
    }

    #[test]
    fn tags_are_ascii_as_in_docker() {
        assert!(parse_reference("busybox:é").is_err());
        assert!(parse_reference("busybox:v1.2_3-rc").is_ok());
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "x@sha256:short",
            "x@md5:abcd",
            "-bad",
            "a:b:c",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_and_prefixes() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            parse_query(&format!("sha256:{hex}")).unwrap(),
            ImageQuery::Id(hex.clone())
        );
        assert_eq!(parse_query(&hex).unwrap(), ImageQuery::Id(hex.clone()));
        assert_eq!(
            parse_query("sha256:0123456789ab").unwrap(),
            ImageQuery::Id("0123456789ab".into())
        );
        assert!(parse_query("sha256:xyz").is_err());
        assert!(
            matches!(parse_query("0123456789ab").unwrap(), ImageQuery::NameOrIdPrefix(_, p) if p == "0123456789ab")
        );
        assert!(matches!(
            parse_query("0123456789a").unwrap(),
            ImageQuery::Name(_)
        ));
        assert!(matches!(
            parse_query("busybox").unwrap(),
            ImageQuery::Name(_)
        ));
    }
}
