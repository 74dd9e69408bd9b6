//! Input rules for names and free text, shared by every way into the ledger.
//!
//! Usernames follow what JupyterHub accepts (almost any text, compared exactly as
//! given) with bounds that keep the ledger, labels and paths sane:
//! 1–128 characters, no control characters, no `/` (JupyterHub routes users by URL
//! path), no leading or trailing whitespace. Group names follow the same rules.
//! Token names are narrower (`[A-Za-z0-9._-]`, 1–64) because they appear as actors.

use super::Error;

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
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(
            what,
            format!("{what} contains the control character {:?}", c),
        ));
    }
    Ok(())
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
    Ok(())
}

pub fn user(value: &str) -> Result<(), Error> {
    check_name("user name", value)
}

pub fn group(value: &str) -> Result<(), Error> {
    check_name("group name", value)
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
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(invalid(
            "reason",
            format!("reason contains the control character {c:?}"),
        ));
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
    fn reason_is_mandatory() {
        assert!(reason("").is_err());
        assert!(reason("   ").is_err());
        reason("needs to build images\nticket 42").unwrap();
        assert!(reason("esc\u{1b}[31m").is_err());
    }
}
