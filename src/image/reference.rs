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
    let reference = Reference::try_from(image).map_err(|e| ImageError::InvalidReference {
        reference: image.into(),
        reason: e.to_string(),
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
