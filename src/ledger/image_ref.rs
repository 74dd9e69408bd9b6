//! Image references as the daemon reads them (distribution's grammar), normalized to
//! `registry/repo[:tag][@digest]`, the patterns a grant's pull and push allowlists
//! hold, and the user's image namespace. One parse serves the grant's validation and
//! every check the limited socket makes, so the two cannot read a name differently.

use std::fmt;

/// The registry a name without one is on.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A reference, normalized: `docker.io/library/busybox:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `registry.example`.
    pub registry: String,
    /// `library/busybox`, `alice/tools`.
    pub repo: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `s` as the daemon does (`busybox`, `alice/x:1`, `host:5000/a/b@sha256:..`).
    pub fn parse(s: &str) -> Result<Reference, String> {
        if s.is_empty() || s.len() > 512 {
            return Err(format!("{s:?} is not an image reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("{s:?}: the digest must be sha256:<64 hex>"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is a colon after the last slash (a colon before it is a port).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(format!("{s:?}: {t:?} is not a valid tag"));
            }
        }
        let (registry, repo) = split_registry(name);
        if !registry_ok(&registry) {
            return Err(format!("{s:?}: {registry:?} is not a registry name"));
        }
        if repo.is_empty() || !repo.split('/').all(component_ok) {
            return Err(format!(
                "{s:?}: a repository name is lowercase letters, digits and . _ - between slashes"
            ));
        }
        Ok(Reference {
            registry,
            repo,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `registry/repo` with `:latest` when neither tag nor digest is given, the form
    /// a pull writes.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }

    /// `registry/repo`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The registry and the repository of `name`: the first component is a registry
/// when it holds a `.` or a `:` or is `localhost` (distribution's rule).
fn split_registry(name: &str) -> (String, String) {
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (f.to_string(), r.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    let first = if first == "index.docker.io" {
        DEFAULT_REGISTRY.to_string()
    } else {
        first
    };
    let rest = if first == DEFAULT_REGISTRY && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    (first, rest)
}

fn registry_ok(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One entry of a pull or push allowlist: a reference whose parts may hold `*` (any
/// run of characters but `/`) and `**` (anything). Without a tag it matches every
/// tag and digest of the repositories it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    name: String,
    tag: Option<String>,
}

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let bad = |why: &str| Err(format!("image pattern {p:?}: {why}"));
        if p.is_empty() || p.len() > 256 {
            return bad("must be 1 to 256 characters");
        }
        if !p.bytes().all(|b| is_alnum(b) || b"._-/:*".contains(&b)) {
            return bad("may hold lowercase letters, digits and . _ - / : * only");
        }
        let slash = p.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match p[slash..].rfind(':') {
            Some(i) => (&p[..slash + i], Some(p[slash + i + 1..].to_string())),
            None => (p, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") {
            return bad("names no repository or an empty tag");
        }
        // `**` alone, or a registry of wildcards, is taken as it stands.
        let name = if name.starts_with('*') && !name.contains('/') || name.starts_with("**") {
            name.to_string()
        } else {
            let (r, repo) = split_registry(name);
            format!("{r}/{repo}")
        };
        Ok(Pattern { name, tag })
    }

    /// Whether the reference (normalized) is one this pattern allows.
    pub fn matches(&self, r: &Reference) -> bool {
        if !glob(self.name.as_bytes(), r.name().as_bytes()) {
            return false;
        }
        match (&self.tag, &r.tag) {
            (None, _) => true,
            (Some(p), Some(t)) => glob(p.as_bytes(), t.as_bytes()),
            (Some(_), None) => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// `*` matches any run without `/`; `**` any run at all.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| glob(rest, &s[i..])),
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// The patterns of an allowlist, each valid; the first bad one named.
pub fn patterns(list: &[String]) -> Result<Vec<Pattern>, String> {
    if list.len() > 64 {
        return Err(format!("at most 64 image patterns, not {}", list.len()));
    }
    list.iter().map(|p| Pattern::parse(p)).collect()
}

/// A user's image namespace, from the operator's template: `{user}/` (the default:
/// `<user>/<name>` on any registry) or one that names a registry,
/// `registry.example/{user}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    template: String,
}

impl Default for Namespace {
    fn default() -> Namespace {
        Namespace {
            template: "{user}/".into(),
        }
    }
}

impl Namespace {
    pub fn parse(t: &str) -> Result<Namespace, String> {
        let t = if t.ends_with('/') {
            t.to_string()
        } else {
            format!("{t}/")
        };
        if t.matches("{user}").count() != 1 {
            return Err(format!("image namespace {t:?}: must hold {{user}} once"));
        }
        let probe = t.replace("{user}", "u");
        Reference::parse(&format!("{probe}x"))
            .map_err(|e| format!("image namespace {t:?}: {e}"))?;
        Ok(Namespace { template: t })
    }

    /// The prefix a user's references start with, when the user's name can be part
    /// of one (an image name is lowercase): `alice/`, `registry.example/alice/`.
    pub fn prefix(&self, user: &str) -> Option<String> {
        component_ok(user).then(|| self.template.replace("{user}", user))
    }

    /// Whether `r` is in `user`'s namespace.
    pub fn holds(&self, user: &str, r: &Reference) -> bool {
        let Some(prefix) = self.prefix(user) else {
            return false;
        };
        if self.template.starts_with("{user}") {
            // Any registry: the repository's path starts with the user.
            return r.repo.starts_with(&prefix) && r.repo.len() > prefix.len();
        }
        let Ok(p) = Reference::parse(&format!("{prefix}x")) else {
            return false;
        };
        let want = format!("{}/{}", p.registry, p.repo.trim_end_matches('x'));
        let have = r.name();
        have.starts_with(&want) && have.len() > want.len()
    }

    pub fn template(&self) -> &str {
        &self.template
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn references_normalize_as_the_daemon_reads_them() {
        assert_eq!(r("busybox"), "docker.io/library/busybox");
        assert_eq!(r("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(r("alice/tools:v1"), "docker.io/alice/tools:v1");
        assert_eq!(r("index.docker.io/alice/tools"), "docker.io/alice/tools");
        assert_eq!(r("127.0.0.1:5000/a/b:c"), "127.0.0.1:5000/a/b:c");
        assert_eq!(r("localhost/x"), "localhost/x");
        assert_eq!(r("registry.example/x"), "registry.example/x");
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(r(&d), format!("docker.io/library/{d}"));
        for bad in [
            "",
            "Busybox",
            "a//b",
            "a/",
            "/a",
            "a:",
            "a:-x",
            "a@sha256:12",
            "a b",
            "-a",
            "a..b",
            "host:port/x",
            "a/b:c/d",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} must not parse");
        }
        assert_eq!(
            Reference::parse("busybox")
                .unwrap()
                .with_default_tag()
                .to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn patterns_match_normalized_references() {
        let m = |p: &str, s: &str| {
            Pattern::parse(p)
                .unwrap()
                .matches(&Reference::parse(s).unwrap().with_default_tag())
        };
        assert!(m("busybox", "busybox:1.36"));
        assert!(m("docker.io/library/busybox:1.*", "busybox:1.36"));
        assert!(!m("docker.io/library/busybox:1.*", "busybox"));
        assert!(m("127.0.0.1:5000/*", "127.0.0.1:5000/x"));
        assert!(!m("127.0.0.1:5000/*", "127.0.0.1:5000/a/x"));
        assert!(m("127.0.0.1:5000/**", "127.0.0.1:5000/a/x:y"));
        assert!(!m("127.0.0.1:5000/**", "127.0.0.1:5001/a/x"));
        assert!(!m("127.0.0.1:5000/**", "127.0.0.1:50000/a"));
        assert!(m("**", "anything.example/x"));
        assert!(!m("jupyter/*", "jupyterx/base"));
        assert!(m("jupyter/*", "jupyter/base-notebook:2024"));
        for bad in ["", "UPPER", "a b", "a:", "x/y@sha256:1"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_namespace_holds_only_its_users_names() {
        let ns = Namespace::default();
        let h = |u: &str, s: &str| ns.holds(u, &Reference::parse(s).unwrap());
        assert!(h("alice", "alice/tools"));
        assert!(h("alice", "127.0.0.1:5000/alice/tools:1"));
        assert!(!h("alice", "alicex/tools"));
        assert!(!h("alice", "alice"));
        assert!(!h("alice", "bob/alice"));
        assert!(
            !h("Alice", "alice/tools"),
            "no namespace for a name no image can hold"
        );
        let ns = Namespace::parse("registry.example/{user}").unwrap();
        let h = |u: &str, s: &str| ns.holds(u, &Reference::parse(s).unwrap());
        assert!(h("alice", "registry.example/alice/x:1"));
        assert!(!h("alice", "alice/x"));
        assert!(!h("alice", "registry.example/alicex/x"));
        assert!(Namespace::parse("nouser/").is_err());
        assert!(Namespace::parse("{user}/{user}/").is_err());
    }
}
