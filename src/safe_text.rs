//! Text that cannot deceive a reader: the characters that forge lines, hide
//! themselves or reorder what is shown around them, refused in names and escaped in
//! everything privledger prints (tables, `audit tail`, logs).
//!
//! A reason such as `ok\n    99  ...  grant_revoked` must print as one line that
//! visibly contains `\n`, and a group called `docker\u{200b}-privileged` must not look
//! like `docker-privileged`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is invisible or changes how neighbouring text is laid out: controls
/// (C0, C1, DEL), the line and paragraph separators, bidirectional controls, zero
/// width characters, the byte order mark, and the other default-ignorable format
/// characters (soft hyphen, fillers, variation selectors, tags).
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                    // combining grapheme joiner
            | '\u{061C}'                    // arabic letter mark
            | '\u{115F}' | '\u{1160}'       // hangul fillers
            | '\u{17B4}' | '\u{17B5}'       // khmer inherent vowels
            | '\u{180B}'..='\u{180F}'       // mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}'       // zero width space/non-joiner/joiner, LRM, RLM
            | '\u{2028}' | '\u{2029}'       // line and paragraph separators
            | '\u{202A}'..='\u{202E}'       // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}'       // word joiner, invisible operators, isolates
            | '\u{3164}' | '\u{FFA0}'       // hangul fillers
            | '\u{FE00}'..='\u{FE0F}'       // variation selectors
            | '\u{FEFF}'                    // byte order mark, zero width no-break space
            | '\u{FFF0}'..='\u{FFFB}'       // interlinear annotation controls
            | '\u{FFFE}' | '\u{FFFF}'       // noncharacters
            | '\u{1D173}'..='\u{1D17A}'     // musical symbol format characters
            | '\u{E0000}'..='\u{E0FFF}' // tags, variation selectors supplement
        )
}

/// `s` with every [`is_deceptive`] character written as an escape (`\n`, `\t`,
/// `\u{202e}`) and backslashes doubled, so that what is printed reads back as exactly
/// one `s`. Borrowed when nothing needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_deceptive(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_deceptive(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_forged_line_stays_on_one_visible_line() {
        let forged = "ok\n    99  2026-12-01  admin  grant_revoked  grant_id=31";
        let e = escape(forged);
        assert!(!e.contains('\n'));
        assert!(e.starts_with("ok\\n    99"));
    }

    #[test]
    fn hidden_and_reordering_characters_are_shown() {
        for (s, shown) in [
            ("docker\u{200b}-privileged", "docker\\u{200b}-privileged"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
            ("\u{feff}bom", "\\u{feff}bom"),
            ("a\u{2028}b", "a\\u{2028}b"),
            ("esc\u{1b}[31m", "esc\\u{1b}[31m"),
            ("back\\slash", "back\\\\slash"),
        ] {
            assert_eq!(escape(s), shown);
        }
        assert!(matches!(escape("jörg ok"), Cow::Borrowed(_)));
    }

    proptest! {
        /// Whatever the input, the output has no deceptive character and the input
        /// can be read back from it.
        #[test]
        fn escaped_text_is_plain_and_unambiguous(s in any::<String>()) {
            let e = escape(&s);
            prop_assert!(!e.chars().any(is_deceptive));
            prop_assert_eq!(unescape(&e), s);
        }
    }

    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hex: String = it.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("bad escape {other:?}"),
            }
        }
        out
    }
}
