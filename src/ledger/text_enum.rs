//! `text_enum!`: an enum whose variants are stored and sent as fixed snake_case words
//! (`as_str`, `FromStr`, `Display`, serde and the list of all of them from one table).

/// Declares `enum Name { Variant = "word", ... }` with serde using exactly those
/// words, `as_str`, `ALL`, `Display` and a `FromStr` whose error lists the words.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $word)] $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as stored.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word ),+
                }
            }

            /// `a, b or c`: the words, for messages.
            pub fn expected() -> String {
                $crate::ledger::text_enum::one_of(&[$($word),+])
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $word => Ok($name::$variant), )+
                    other => Err(format!(
                        "unknown {} {other:?} (expected {})",
                        $what,
                        $name::expected()
                    )),
                }
            }
        }
    };
}

pub(crate) use text_enum;

/// `a`, `a or b`, `a, b or c`.
pub fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    text_enum! {
        enum Sample: "sample" {
            First = "first",
            SecondOne = "second_one",
        }
    }

    #[test]
    fn words_round_trip_through_serde_and_from_str() {
        for s in Sample::ALL {
            assert_eq!(s.as_str().parse::<Sample>(), Ok(*s));
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), *s);
        }
        let err = "third".parse::<Sample>().unwrap_err();
        assert_eq!(
            err,
            "unknown sample \"third\" (expected first or second_one)"
        );
        assert_eq!(super::one_of(&["a", "b", "c"]), "a, b or c");
    }
}
