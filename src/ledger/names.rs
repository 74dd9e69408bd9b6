//! Input rules for names and free text, shared by every way into the ledger.
//!
//! Usernames follow what JupyterHub accepts (almost any text, compared exactly as
//! given) with bounds that keep the ledger, labels and paths sane:
//! 1–128 characters, no control characters, no `/` (JupyterHub routes users by URL
//! path), no leading or trailing whitespace. Group names follow the same rules.
//! Token names are narrower (`[A-Za-z0-9._-]`, 1–64) because they appear as actors.
//!
//! No text field may hold a character that hides itself or reorders what is shown
//! around it ([`crate::safe_text::is_deceptive`]: bidi controls, zero-width
//! characters, the BOM, line and paragraph separators, ...); reasons alone may hold
//! newlines and tabs. User and group names must be in Unicode NFC, so that one name
//! has one spelling, and a new group may not be confusable (UTS #39 skeleton, case
//! folded) with an existing one: `dοcker-privileged` with a Greek omicron is refused
//! while `docker-privileged` exists.

use super::Error;
use crate::safe_text::is_deceptive;

pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_TOKEN_NAME_CHARS: usize = 64;
pub const MAX_REASON_CHARS: usize = 1024;
pub const MAX_REQUEST_ID_CHARS: usize = 128;
pub const MAX_SERVER_NAME_CHARS: usize = 255;
pub const MAX_IMAGE_CHARS: usize = 512;

fn invalid(field: &'static str, problem: String) -> Error {
    Error::InvalidText { field, problem }
}

fn check_text(what: &'static str, value: &str, max: usize, allow_empty: bool) -> Result<(), Error> {
    let n = value.chars().count();
    if n == 0 && !allow_empty {
        return Err(invalid(what, format!("{what} must not be empty")));
    }
    if n > max {
        return Err(invalid(
            what,
            format!("{what} is {n} characters long; at most {max} are allowed"),
        ));
    }
    if let Some(c) = value.chars().find(|&c| is_deceptive(c)) {
        return Err(refused_char(what, c));
    }
    Ok(())
}

fn refused_char(what: &'static str, c: char) -> Error {
    let kind = if c.is_control() {
        "the control character"
    } else {
        "the invisible or text-reordering character"
    };
    invalid(
        what,
        format!(
            "{what} contains {kind} U+{:04X}, which is not allowed",
            c as u32
        ),
    )
}

/// The form two names are compared in for confusion: UTS #39 skeleton, case folded.
fn skeleton(name: &str) -> String {
    unicode_security::skeleton(&name.to_lowercase())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The first of `existing` that `name` could be mistaken for (same skeleton, not the
/// same name).
pub fn confusable_with<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let s = skeleton(name);
    existing
        .into_iter()
        .find(|e| *e != name && skeleton(e) == s)
}

fn check_name(what: &'static str, value: &str) -> Result<(), Error> {
    check_text(what, value, MAX_NAME_CHARS, false)?;
    if value.trim() != value {
        return Err(invalid(
            what,
            format!("{what} {value:?} has leading or trailing whitespace"),
        ));
    }
    if value.contains('/') {
        return Err(invalid(what, format!("{what} {value:?} contains '/'")));
    }
    if !unicode_normalization::is_nfc(value) {
        return Err(invalid(
            what,
            format!("{what} {value:?} is not in Unicode normalization form C (NFC)"),
        ));
    }
    Ok(())
}

pub fn user(value: &str) -> Result<(), Error> {
    check_name("user name", value)
}

pub fn group(value: &str) -> Result<(), Error> {
    check_name("group name", value)
}

/// A Docker host's id, as a `privledger watch` agent names its host: the name of its
/// watcher token, so the same rules.
pub fn host(value: &str) -> Result<(), Error> {
    token_name(value)
}

pub fn token_name(value: &str) -> Result<(), Error> {
    check_text("token name", value, MAX_TOKEN_NAME_CHARS, false)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            "token name",
            format!("token name {value:?} contains {c:?}; use letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

/// A mandatory human reason. Newlines and tabs are fine; other control characters
/// are not.
pub fn reason(value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(invalid("reason", "a reason is required".into()));
    }
    let n = value.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(invalid(
            "reason",
            format!("reason is {n} characters long; at most {MAX_REASON_CHARS} are allowed"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| is_deceptive(c) && !matches!(c, '\n' | '\t'))
    {
        return Err(refused_char("reason", c));
    }
    Ok(())
}

/// Free text that may be empty (a proxy refusal's reason), bounded like a reason.
pub fn reason_text(value: &str) -> Result<(), Error> {
    check_text("reason", value, MAX_REASON_CHARS, true)
}

pub fn request_id(value: &str) -> Result<(), Error> {
    check_text("request_id", value, MAX_REQUEST_ID_CHARS, false)
}

pub fn server_name(value: &str) -> Result<(), Error> {
    check_text("server_name", value, MAX_SERVER_NAME_CHARS, true)
}

pub fn image(value: &str) -> Result<(), Error> {
    check_text("image", value, MAX_IMAGE_CHARS, true)
}

/// A stream's subject filter: a user, group, token name, or decimal id.
pub fn check_subject_filter(value: &str) -> Result<(), Error> {
    check_text("subject filter", value, MAX_NAME_CHARS, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jupyterhub_style_usernames_pass() {
        for ok in ["alice", "a.b@example.org", "jörg", "x-1_2", "with space"] {
            user(ok).unwrap();
        }
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in ["", " lead", "trail ", "a/b", "nul\0", "bell\u{7}"] {
            let e = user(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidText {
                        field: "user name",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        assert!(user(&"x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(user(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn token_names_are_narrow() {
        token_name("jupyterhub-spawner").unwrap();
        assert!(token_name("has space").is_err());
        assert!(token_name("").is_err());
    }

    #[test]
    fn invisible_reordering_and_unnormalized_names_are_refused() {
        for bad in [
            "docker\u{200b}-privileged",
            "docker-privileged\u{200d}",
            "\u{feff}docker-privileged",
            "admin\u{202e}",
            "a\u{2066}b\u{2069}",
            "line\u{2028}sep",
            "para\u{2029}sep",
            "soft\u{ad}hyphen",
            "tag\u{e0041}",
            "e\u{301}", // NFD for é
        ] {
            assert!(user(bad).is_err(), "{bad:?}");
            assert!(group(bad).is_err(), "{bad:?}");
        }
        user("\u{e9}").unwrap(); // NFC é
        assert!(reason("fine\nsecond line").is_ok());
        assert!(reason("hidden\u{202e}").is_err());
        assert!(request_id("r\u{200b}1").is_err());
        assert!(image("img\u{2028}").is_err());
    }

    #[test]
    fn confusable_group_names_are_found() {
        let existing = ["docker-privileged", "team"];
        // Greek omicron, Cyrillic а, and a case variant.
        assert_eq!(
            confusable_with("d\u{3bf}cker-privileged", existing),
            Some("docker-privileged")
        );
        assert_eq!(confusable_with("te\u{430}m", existing), Some("team"));
        assert_eq!(confusable_with("Team", existing), Some("team"));
        assert_eq!(confusable_with("team", existing), None, "itself");
        assert_eq!(confusable_with("other", existing), None);
    }

    #[test]
    fn reason_is_mandatory() {
        assert!(reason("").is_err());
        assert!(reason("   ").is_err());
        reason("needs to build images\nticket 42").unwrap();
        assert!(reason("esc\u{1b}[31m").is_err());
    }
}
