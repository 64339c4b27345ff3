//! Image references normalised the way Kubernetes and containerd do:
//! `mqfleet/mq-broker:0.1.0` is `docker.io/mqfleet/mq-broker:0.1.0`, `nginx` is
//! `docker.io/library/nginx:latest`, a registry host (with a `.`, a `:` or `localhost`)
//! is its own name, and `name@sha256:…` names a manifest by digest.

use std::fmt;

use super::{ImageError, Result, layout::sha256_hex};

/// The registry a reference without one means.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `domain/path`, e.g. `docker.io/mqfleet/mq-broker`.
    pub name: String,
    /// The tag (`None` when the reference has only a digest).
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins one.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `text`; errors say what is wrong.
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = |why: &str| ImageError::Reference {
            reference: text.to_owned(),
            why: why.to_owned(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                sha256_hex(digest).map_err(|_| bad("the digest must be sha256:<64 hex digits>"))?;
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (a registry port does).
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag.to_owned())),
            _ => (rest, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(bad(
                "a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
            ));
        }
        let name = normalise_name(path).ok_or_else(|| {
            bad("the name must be lowercase path components of [a-z0-9._-] separated by '/'")
        })?;
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        };
        Ok(Reference { name, tag, digest })
    }

    /// `name:tag` (the reference a tag lookup uses), if it has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name))
    }

    /// `name@digest`, if it has a digest.
    pub fn digested(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{d}", self.name))
    }

    /// The reference with `digest` instead of its tag (what a manifest answers to).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            name: self.name.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `domain/path` with Docker Hub's defaults filled in, or `None` when invalid.
fn normalise_name(path: &str) -> Option<String> {
    let (domain, remainder) = match path.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), path.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    if !valid_domain(&domain) || remainder.is_empty() || !remainder.split('/').all(valid_component)
    {
        return None;
    }
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("library/{remainder}")
    } else {
        remainder
    };
    Some(format!("{domain}/{remainder}"))
}

/// A path component: lowercase alphanumerics joined by `.`, `_`, `__` or dashes.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    !c.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A registry host with an optional port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (d, None),
    };
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn docker_hub_defaults_are_filled_in() {
        assert_eq!(
            norm("mqfleet/mq-broker:0.1.0"),
            "docker.io/mqfleet/mq-broker:0.1.0"
        );
        assert_eq!(
            norm("docker.io/mqfleet/mq-broker:0.1.0"),
            "docker.io/mqfleet/mq-broker:0.1.0"
        );
        assert_eq!(
            norm("index.docker.io/mqfleet/mq-broker:0.1.0"),
            "docker.io/mqfleet/mq-broker:0.1.0"
        );
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("docker.io/nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(
            norm("mqfleet/mq-broker"),
            "docker.io/mqfleet/mq-broker:latest"
        );
    }

    #[test]
    fn a_registry_host_is_its_own_name() {
        assert_eq!(
            norm("registry.local:5000/mqfleet/mq-broker:0.1.0"),
            "registry.local:5000/mqfleet/mq-broker:0.1.0"
        );
        assert_eq!(norm("localhost/mq-broker"), "localhost/mq-broker:latest");
        assert_eq!(norm("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_ne!(
            Reference::parse("registry.local:5000/mqfleet/mq-broker:0.1.0").unwrap(),
            Reference::parse("mqfleet/mq-broker:0.1.0").unwrap()
        );
    }

    #[test]
    fn digests_pin_a_manifest() {
        let hex = "0123456789abcdef".repeat(4);
        let r = Reference::parse(&format!("mqfleet/mq-broker@sha256:{hex}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(format!("sha256:{hex}").as_str()));
        assert_eq!(
            r.digested().unwrap(),
            format!("docker.io/mqfleet/mq-broker@sha256:{hex}")
        );
        let both = Reference::parse(&format!("mqfleet/mq-broker:0.1.0@sha256:{hex}")).unwrap();
        assert_eq!(both.tag.as_deref(), Some("0.1.0"));
        assert_eq!(both.digest, r.digest);
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "MQFleet/broker",
            "mqfleet//broker",
            "mqfleet/broker:",
            "mqfleet/broker:-x",
            "mqfleet/broker@sha256:xyz",
            "mqfleet/broker@md5:00",
            "reg:port/x",
            "/x",
            "x/",
            "../x",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid image reference"), "{err}");
        }
    }
}
