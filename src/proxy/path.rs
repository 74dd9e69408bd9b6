//! The canonical form of a request path, as the daemon will route it: one version
//! grammar, percent-decoding once, and no way to smuggle a different path past the
//! classifier (`..`, `//`, encoded slashes, a second round of encoding).

use std::fmt;

/// A request path reduced to what the classifier matches and what is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// `(major, minor)` of a `/vX.Y` or `/vX.Y.Z` prefix; `None` without one.
    pub version: Option<(u32, u32)>,
    /// The decoded segments after the version.
    pub segments: Vec<String>,
}

/// Why a path is refused before it is classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    #[error("the path has an encoded '/', '\\' or '%', or a malformed escape")]
    BadEscape,
    #[error("the path has a control character or is not UTF-8")]
    BadCharacter,
    #[error("the API version {0:?} is not of the form vMAJOR.MINOR[.PATCH]")]
    BadVersion(String),
}

impl CanonicalPath {
    /// Parses the path part of a request target (no query).
    pub fn parse(raw: &str) -> Result<CanonicalPath, PathError> {
        let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if seg.is_empty() {
                return Err(PathError::EmptySegment);
            }
            let s = decode_segment(seg)?;
            if s == "." || s == ".." {
                return Err(PathError::DotSegment);
            }
            segments.push(s);
        }
        // Docker's router strips `/v{version:[0-9.]+}`; take only the sane forms and
        // refuse every other `v<digits and dots>` so none falls through unversioned.
        let mut version = None;
        if let Some(first) = segments.first() {
            if let Some(v) = first.strip_prefix('v') {
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    version =
                        Some(parse_version(v).ok_or_else(|| PathError::BadVersion(first.clone()))?);
                    segments.remove(0);
                }
            }
        }
        if segments.is_empty() {
            return Err(PathError::EmptySegment);
        }
        Ok(CanonicalPath { version, segments })
    }

    pub fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

/// `/v1.41/containers/abc/json`: what is forwarded, every segment re-encoded.
impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((major, minor)) = self.version {
            write!(f, "/v{major}.{minor}")?;
        }
        for s in &self.segments {
            write!(f, "/{}", segment(s))?;
        }
        Ok(())
    }
}

/// One path segment, percent-encoded but for characters Docker names use.
pub fn segment(s: &str) -> String {
    percent_encode(s, b"-._~:@+=,")
}

/// `s` with every byte but ASCII letters, digits and `keep` written as `%XX`.
pub fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let parts: Vec<&str> = v.split('.').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || p.len() > 4) {
        return None;
    }
    let n: Vec<u32> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    Some((n[0], n[1]))
}

/// Percent-decodes one segment, once. An escape that decodes to a separator or to
/// `%` (a second round of encoding) is refused: what the classifier sees must be what
/// the daemon routes.
fn decode_segment(seg: &str) -> Result<String, PathError> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = seg.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            if matches!(v, b'/' | b'\\' | b'%') {
                return Err(PathError::BadEscape);
            }
            out.push(v);
            i += 3;
        } else {
            if b[i] == b'\\' {
                return Err(PathError::BadEscape);
            }
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| PathError::BadCharacter)?;
    if s.chars().any(char::is_control) {
        return Err(PathError::BadCharacter);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        CanonicalPath::parse(p).unwrap().segments
    }

    #[test]
    fn every_version_form_docker_routes_is_stripped_to_one() {
        for p in [
            "/containers/json",
            "/v1.41/containers/json",
            "/v1.41.0/containers/json",
            "/v1.4/containers/json",
        ] {
            assert_eq!(segs(p), ["containers", "json"], "{p}");
        }
        assert_eq!(
            CanonicalPath::parse("/v1.41.0/_ping").unwrap().to_string(),
            "/v1.41/_ping"
        );
        for bad in [
            "/v1/_ping",
            "/v1..41/_ping",
            "/v.1/_ping",
            "/v1.41.0.0/_ping",
            "/v1./_ping",
            "/v99999.1/_ping",
        ] {
            assert!(
                matches!(CanonicalPath::parse(bad), Err(PathError::BadVersion(_))),
                "{bad}"
            );
        }
        // Not a version: a segment merely starting with v.
        assert_eq!(segs("/volumes"), ["volumes"]);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            ("containers/json", PathError::NotAbsolute),
            ("//containers/json", PathError::EmptySegment),
            ("/containers//json", PathError::EmptySegment),
            ("/containers/json/", PathError::EmptySegment),
            ("/v1.41/", PathError::EmptySegment),
            ("/containers/../images/json", PathError::DotSegment),
            ("/containers/%2e%2e/x", PathError::DotSegment),
            ("/containers/./json", PathError::DotSegment),
            ("/containers%2fjson", PathError::BadEscape),
            ("/containers%2Fjson", PathError::BadEscape),
            ("/containers%5cjson", PathError::BadEscape),
            ("/containers\\json", PathError::BadEscape),
            ("/containers/%252e%252e/json", PathError::BadEscape),
            ("/containers/%zz", PathError::BadEscape),
            ("/containers/%4", PathError::BadEscape),
            ("/containers/a%00b", PathError::BadCharacter),
            ("/containers/%ff", PathError::BadCharacter),
        ];
        for (p, want) in cases {
            assert_eq!(CanonicalPath::parse(p), Err(want), "{p}");
        }
    }

    #[test]
    fn decoded_segments_are_reencoded_when_forwarded() {
        let p = CanonicalPath::parse("/v1.41/containers/my%20box/json").unwrap();
        assert_eq!(p.segments, ["containers", "my box", "json"]);
        assert_eq!(p.to_string(), "/v1.41/containers/my%20box/json");
        let p = CanonicalPath::parse("/images/library%2Dbusybox:latest/json").unwrap();
        assert_eq!(p.to_string(), "/images/library-busybox:latest/json");
    }

    proptest::proptest! {
        /// Whatever a caller sends, the path forwarded parses back to the very path
        /// that was classified (so the daemon routes what was checked), and it holds
        /// no separator or dot segment the classifier did not see.
        #[test]
        fn the_forwarded_path_is_the_classified_path(
            raw in "(/(v1\\.41(\\.0)?|containers|volumes|exec|json|\\.|\\.\\.|%2[eEfF]|%25|%41|%2|a\\.b|x y|[a-z0-9]{1,3}|)){1,6}",
            method in proptest::sample::select(vec!["GET", "POST", "DELETE", "HEAD", "PUT"]),
        ) {
            if let Ok(p) = CanonicalPath::parse(&raw) {
                let fwd = p.to_string();
                let again = CanonicalPath::parse(&fwd).expect("the forwarded path parses");
                proptest::prop_assert_eq!(&again, &p);
                proptest::prop_assert!(!fwd.contains("//"));
                proptest::prop_assert!(p.segments.iter().all(|s| s != "." && s != ".." && !s.contains('/')));
                proptest::prop_assert_eq!(
                    super::super::classify::classify(method, &p),
                    super::super::classify::classify(method, &again)
                );
            }
        }
    }
}
