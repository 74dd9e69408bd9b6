//! Which user a container is for: the `privledger.user` label, else DockerSpawner's
//! default container name with escapism's escaping reversed.

use std::collections::BTreeMap;

use crate::ledger::{LABEL_OWNER, LABEL_USER};

/// The user a container is for: label `privledger.user`, else DockerSpawner's default
/// name `jupyter-<escaped username>` (optionally `--<server name>`).
pub fn user_of(labels: &BTreeMap<String, String>, name: &str) -> Option<String> {
    if let Some(u) = labels.get(LABEL_USER).or_else(|| labels.get(LABEL_OWNER)) {
        return Some(u.clone());
    }
    let escaped = name.trim_start_matches('/').strip_prefix("jupyter-")?;
    // An escaped username never contains "--" ("-" itself is escaped as "-2D").
    let escaped = escaped.split("--").next()?;
    unescape_dockerspawner(escaped)
}

/// Reverses escapism's escaping as DockerSpawner uses it (escape char `-`, each unsafe
/// byte as `-XX`).
pub fn unescape_dockerspawner(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let u = String::from_utf8(out).ok()?;
    (!u.is_empty()).then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_come_from_the_label_or_dockerspawner_names() {
        let mut labels = BTreeMap::new();
        assert_eq!(user_of(&labels, "/jupyter-alice").as_deref(), Some("alice"));
        assert_eq!(
            user_of(&labels, "jupyter-a-2Eb-40x").as_deref(),
            Some("a.b@x")
        );
        assert_eq!(user_of(&labels, "jupyter-bob--gpu").as_deref(), Some("bob"));
        assert_eq!(user_of(&labels, "web"), None);
        assert_eq!(user_of(&labels, "jupyter-bad-zz"), None);
        labels.insert(LABEL_USER.to_string(), "carol".to_string());
        assert_eq!(user_of(&labels, "jupyter-alice").as_deref(), Some("carol"));
    }
}
