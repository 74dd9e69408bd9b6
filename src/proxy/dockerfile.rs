//! A Dockerfile read as the classic builder reads it, for what would reach past the
//! user's own build: `ADD` of a URL (the daemon fetches it from the host's network
//! namespace), a source it would expand into one, a base image (`FROM`,
//! `COPY --from`) it may pull, and labels that would speak for the ledger. The
//! same reader checks the `changes` of a commit or an import.

use std::collections::HashMap;

use super::refusal::{refuse, Refusal};

/// What a Dockerfile asks of the daemon beyond its context.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Images named by `FROM` (after the global `ARG`s) and `COPY --from`, stages
    /// and `scratch` left out, in order.
    pub images: Vec<String>,
}

/// One instruction: its keyword (upper case) and the rest of its (joined) line.
struct Instruction {
    keyword: String,
    rest: String,
    line: usize,
}

/// Lines joined at the escape character, comments and parser directives dropped.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut directives = true;
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if directives {
            if let Some(d) = line.strip_prefix('#') {
                if let Some((k, v)) = d.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("escape") {
                        escape = if v.trim() == "`" { '`' } else { '\\' };
                    }
                    continue;
                }
            }
            directives = false;
        }
        if cur.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if !cur.is_empty() && line.starts_with('#') {
            // A comment inside a continued instruction is dropped, as the builder does.
            continue;
        }
        if cur.is_empty() {
            start = i + 1;
        }
        let trimmed = line.trim_end();
        match trimmed.strip_suffix(escape) {
            Some(body) => {
                cur.push_str(body);
                cur.push(' ');
            }
            None => {
                cur.push_str(trimmed);
                push(&mut out, &cur, start);
                cur.clear();
            }
        }
    }
    if !cur.trim().is_empty() {
        push(&mut out, &cur, start);
    }
    out
}

fn push(out: &mut Vec<Instruction>, s: &str, line: usize) {
    let s = s.trim();
    let (k, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    out.push(Instruction {
        keyword: k.to_ascii_uppercase(),
        rest: rest.trim().to_string(),
        line,
    });
}

/// Arguments: the JSON form (`["a", "b"]`) or words.
fn words(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    rest.split_whitespace().map(str::to_string).collect()
}

/// `--flag=value` options first, then the arguments.
fn flags_and_args(rest: &str) -> (HashMap<String, String>, Vec<String>) {
    let mut flags = HashMap::new();
    let mut r = rest.trim();
    while let Some(f) = r.strip_prefix("--") {
        let (flag, after) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
        let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
        flags.insert(k.to_ascii_lowercase(), v.to_string());
        r = after.trim_start();
    }
    (flags, words(r))
}

/// `$NAME` and `${NAME}` from `vars`; `None` when anything is left unresolved.
fn expand(s: &str, vars: &HashMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = if chars.peek() == Some(&'{') {
            chars.next();
            let n: String = chars.by_ref().take_while(|&c| c != '}').collect();
            if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None; // `${A:-b}` and the like: not read here.
            }
            n
        } else {
            let mut n = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    n.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            n
        };
        out.push_str(vars.get(&name)?);
    }
    Some(out)
}

fn is_remote(src: &str) -> bool {
    let l = src.to_ascii_lowercase();
    l.contains("://") || l.starts_with("git@") || l.starts_with("github.com/")
}

/// Checks `text` as a Dockerfile built with `build_args`.
pub fn scan(text: &str, build_args: &HashMap<String, String>) -> Result<Scan, Refusal> {
    let mut scan = Scan::default();
    let mut global: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    for ins in instructions(text) {
        let at = |why: String| refuse::<()>("dockerfile", format!("line {}: {why}", ins.line));
        match ins.keyword.as_str() {
            "ARG" if !seen_from => {
                for w in words(&ins.rest) {
                    let (k, v) = w.split_once('=').unwrap_or((&w, ""));
                    let v = build_args
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| v.trim_matches('"').to_string());
                    global.insert(k.to_string(), v);
                }
            }
            "FROM" => {
                seen_from = true;
                let (_, args) = flags_and_args(&ins.rest);
                let Some(image) = args.first() else {
                    at("FROM names no image".into())?;
                    continue;
                };
                let Some(image) = expand(image, &global) else {
                    at(format!(
                        "FROM {image}: a variable the limited socket cannot resolve; write the image out or give it a default with ARG"
                    ))?;
                    continue;
                };
                let stage = matches!(args.get(1), Some(a) if a.eq_ignore_ascii_case("as"))
                    .then(|| args.get(2).cloned())
                    .flatten();
                if image != "scratch" && !stages.iter().any(|s| s.eq_ignore_ascii_case(&image)) {
                    scan.images.push(image);
                }
                stages.push(stage.unwrap_or_default());
            }
            "ADD" | "COPY" => check_copy(&ins, &stages, &mut scan)?,
            "ONBUILD" => {
                // A trigger runs in whoever builds from this image: it must pass too.
                let inner = instructions(&ins.rest);
                for i in inner {
                    let i = Instruction {
                        line: ins.line,
                        ..i
                    };
                    match i.keyword.as_str() {
                        "ADD" | "COPY" => check_copy(&i, &stages, &mut Scan::default())?,
                        "ONBUILD" | "FROM" | "MAINTAINER" => {}
                        _ => {}
                    }
                }
            }
            "LABEL" => check_labels(&ins.rest).map_err(|r| Refusal {
                reason: format!("line {}: {}", ins.line, r.reason),
                ..r
            })?,
            _ => {}
        }
    }
    if !seen_from {
        return refuse("dockerfile", "the Dockerfile has no FROM");
    }
    Ok(scan)
}

fn check_copy(ins: &Instruction, stages: &[String], scan: &mut Scan) -> Result<(), Refusal> {
    let (flags, args) = flags_and_args(&ins.rest);
    let at = |why: String| refuse::<()>("dockerfile", format!("line {}: {why}", ins.line));
    if let Some(from) = flags.get("from") {
        let stage = from.bytes().all(|b| b.is_ascii_digit())
            || stages
                .iter()
                .any(|s| !s.is_empty() && s.eq_ignore_ascii_case(from));
        if !stage {
            scan.images.push(from.clone());
        }
    }
    if ins.keyword == "ADD" {
        let sources = &args[..args.len().saturating_sub(1)];
        for s in sources {
            if is_remote(s) {
                at(format!(
                    "ADD {s}: the daemon would fetch it from the host's network; download it in a RUN step, or COPY it from the build context"
                ))?;
            }
            if s.contains('$') {
                at(format!(
                    "ADD {s}: a source with a variable could name a URL; write the path out or use COPY"
                ))?;
            }
        }
    }
    Ok(())
}

/// A `LABEL` may not set the ledger's own labels (`privledger.*`): those say who an
/// image belongs to, and the socket writes them.
pub fn check_labels(rest: &str) -> Result<(), Refusal> {
    for w in words(rest) {
        let key = w.split('=').next().unwrap_or("").trim_matches('"');
        if key.to_ascii_lowercase().starts_with("privledger.") {
            return refuse(
                "labels",
                format!("LABEL {key}: privledger.* labels are written by the limited socket"),
            );
        }
    }
    Ok(())
}

/// The instructions a commit or an import may apply (moby's list, less `ONBUILD`,
/// whose trigger would run in someone else's build).
const CHANGES: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "HEALTHCHECK",
    "ENV",
    "EXPOSE",
    "LABEL",
    "USER",
    "VOLUME",
    "WORKDIR",
    "STOPSIGNAL",
];

/// Checks the `changes` of a commit or an import (joined by newlines, as the daemon
/// reads them).
pub fn check_changes(changes: &[String]) -> Result<(), Refusal> {
    let text = changes.join("\n");
    for ins in instructions(&text) {
        if !CHANGES.contains(&ins.keyword.as_str()) {
            return refuse(
                "changes",
                format!(
                    "{} is not a change the limited socket applies (allowed: {})",
                    ins.keyword,
                    CHANGES.join(", ")
                ),
            );
        }
        if ins.keyword == "LABEL" {
            check_labels(&ins.rest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<String> {
        scan(text, &HashMap::new()).unwrap().images
    }
    fn refused(text: &str) -> String {
        scan(text, &HashMap::new()).unwrap_err().reason
    }

    #[test]
    fn base_images_are_found_and_stages_are_not_images() {
        assert_eq!(
            ok("FROM busybox AS build\nRUN x\nFROM build\nCOPY --from=build /a /b\nCOPY --from=0 /a /b\nCOPY --from=alpine:3 /a /b\n"),
            vec!["busybox", "alpine:3"]
        );
        assert_eq!(ok("FROM scratch\nCOPY a /"), Vec::<String>::new());
        assert_eq!(ok("ARG B=busybox:1\nFROM $B\n"), vec!["busybox:1"]);
        let args = HashMap::from([("B".to_string(), "alpine".to_string())]);
        assert_eq!(
            scan("ARG B=busybox\nFROM ${B}\n", &args).unwrap().images,
            vec!["alpine"]
        );
        assert_eq!(ok("# escape=`\nFROM `\n  busybox\n"), vec!["busybox"]);
        assert_eq!(
            ok("from --platform=linux/amd64 busybox as b\n"),
            vec!["busybox"]
        );
    }

    #[test]
    fn what_would_reach_past_the_build_is_refused() {
        for text in [
            "FROM busybox\nADD http://127.0.0.1:1/x /x\n",
            "FROM busybox\nadd HTTPS://example.com/x /x\n",
            "FROM busybox\nADD --chown=1 git@github.com:a/b /x\n",
            "FROM busybox\nADD [\"http://h/x\", \"/x\"]\n",
            "FROM busybox\nADD \\\n  http://h/x \\\n  /x\n",
            "FROM busybox\nARG U=http://h/x\nADD $U /x\n",
            "FROM busybox\nONBUILD ADD http://h/x /x\n",
            "FROM $NOPE\n",
            "FROM ${B:-busybox}\n",
            "FROM busybox\nLABEL privledger.owner=bob\n",
            "FROM busybox\nLABEL a=b \"PRIVLEDGER.user\"=x\n",
            "RUN x\n",
        ] {
            assert!(
                scan(text, &HashMap::new()).is_err(),
                "{text:?} must be refused"
            );
        }
        assert!(refused("FROM busybox\nADD http://h/x /x\n").starts_with("line 2:"));
        // COPY never fetches; ADD of a local archive is fine.
        ok("FROM busybox\nCOPY $X /x\nADD a.tar /x\n");
    }

    #[test]
    fn changes_allow_moby_s_list_but_onbuild_and_owner_labels() {
        check_changes(&["CMD [\"sh\"]".into(), "ENV A=1".into(), "LABEL a=b".into()]).unwrap();
        for c in [
            "RUN x",
            "ONBUILD RUN x",
            "FROM busybox",
            "LABEL privledger.owner=bob",
            "ADD http://h /x",
        ] {
            assert!(check_changes(&[c.into()]).is_err(), "{c}");
        }
        assert!(
            check_changes(&["ENV A=1\nRUN x".into()]).is_err(),
            "one value may hold several lines"
        );
    }
}
