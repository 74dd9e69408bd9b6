//! A request's query read as the daemon reads it (Go's `url.ParseQuery`: `+` is a
//! space, a pair holding `;` is dropped, a single-valued parameter is its first
//! value), checked against the parameters a route takes, and written back encoded.
//! Reading it the daemon's way, and refusing what the two readings could disagree
//! on (a `;`, a single-valued parameter given twice, a parameter no rule knows),
//! means what is checked is what the daemon acts on.

use super::filters::{decode, encode};
use super::refusal::{refuse, Refusal};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, Refusal> {
        let raw = raw.unwrap_or("");
        if raw.contains(';') {
            return refuse(
                "query",
                "a query holding ';' is read differently by the daemon",
            );
        }
        let mut pairs = Vec::new();
        for p in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = decode(k).map_err(|e| Refusal::new("query", e))?;
            let v = decode(v).map_err(|e| Refusal::new("query", e))?;
            pairs.push((k, v));
        }
        Ok(Query { pairs })
    }

    /// Refuses a parameter outside `known` (the route's own list).
    pub fn only(&self, known: &[&str]) -> Result<(), Refusal> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => refuse(
                format!("query {k}"),
                format!(
                    "the limited socket does not pass {k:?} (it takes: {})",
                    known.join(", ")
                ),
            ),
            None => Ok(()),
        }
    }

    /// The one value of `key`: given twice, it is refused (the daemon reads the first).
    pub fn one(&self, key: &str) -> Result<Option<&str>, Refusal> {
        let mut it = self.pairs.iter().filter(|(k, _)| k == key);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return refuse(
                format!("query {key}"),
                format!("{key} given more than once"),
            );
        }
        Ok(first)
    }

    /// Every value of a repeated parameter.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The daemon's boolean: false is "", 0, no, false or none; anything else true.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, Refusal> {
        Ok(self.one(key)?.map(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        }))
    }

    /// Sets `key` to `value`, replacing every value it had.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.remove(key);
        self.pairs.push((key.to_string(), value.into()));
    }

    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.push((key.to_string(), value.into()));
    }

    /// Encoded for the forwarded request.
    pub fn encoded(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_as_the_daemon_reads_it() {
        let q = Query::parse(Some("t=a%2Fb&t=c+d&q=1&rm=")).unwrap();
        assert_eq!(q.all("t"), vec!["a/b", "c d"]);
        assert_eq!(q.flag("q").unwrap(), Some(true));
        assert_eq!(q.flag("rm").unwrap(), Some(false));
        assert_eq!(q.flag("pull").unwrap(), None);
        assert!(q.one("t").is_err(), "a single value given twice");
        assert!(Query::parse(Some("networkmode=bridge;networkmode=host")).is_err());
        assert!(q.only(&["t", "q"]).is_err());
        q.only(&["t", "q", "rm"]).unwrap();
        let mut q = q;
        q.set("rm", "1");
        assert_eq!(q.encoded(), "t=a%2Fb&t=c%20d&q=1&rm=1");
        assert_eq!(Query::parse(Some(&q.encoded())).unwrap(), q);
        assert_eq!(
            Query::parse(Some("flag")).unwrap().flag("flag").unwrap(),
            Some(false)
        );
        assert_eq!(
            Query::parse(Some("x=off")).unwrap().flag("x").unwrap(),
            Some(true)
        );
    }
}
