//! Lists, prune and events filtered to the owner: the `filters` query parameter
//! gains `label=privledger.owner=<user>`, whatever the caller put in it.

use serde_json::{Map, Value};

use super::rules::LABEL_OWNER;

/// The `filters` JSON of `existing` (as the caller sent it, decoded) with the owner
/// label added, percent-encoded for a query. Docker takes both the list form
/// (`{"label":["a"]}`) and the older map form (`{"label":{"a":true}}`).
pub fn owner_filter(existing: Option<&str>, user: &str) -> Result<String, String> {
    let mut f: Map<String, Value> = match existing {
        None | Some("") => Map::new(),
        Some(s) => match super::strict_json::parse(s.as_bytes()) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("filters must be a JSON object".into()),
            Err(e) => return Err(format!("filters: {e}")),
        },
    };
    let want = format!("{LABEL_OWNER}={user}");
    // One form throughout: the daemon reads the map form, or else the list form,
    // never a mix. A new `label` takes the form of the keys already there.
    let lists = f.values().any(Value::is_array);
    match f.entry("label").or_insert_with(|| {
        if lists {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    }) {
        Value::Array(a) => a.push(Value::String(want)),
        Value::Object(m) => {
            m.insert(want, Value::Bool(true));
        }
        _ => return Err("filters: label must be a list or a map".into()),
    }
    Ok(encode(&Value::Object(f).to_string()))
}

/// The query with `filters` replaced by the owner-filtered one; other parameters
/// kept (re-encoded). A repeated `filters` is refused: the daemon reads one of them.
pub fn with_owner_filter(query: Option<&str>, user: &str) -> Result<String, String> {
    let mut out = Vec::new();
    let mut filters = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if k == "filters" {
            if filters.is_some() {
                return Err("filters is given more than once".into());
            }
            filters = Some(v);
        } else {
            out.push(format!("{}={}", encode(&k), encode(&v)));
        }
    }
    out.push(format!(
        "filters={}",
        owner_filter(filters.as_deref(), user)?
    ));
    Ok(out.join("&"))
}

pub fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or("malformed escape in the query")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "malformed escape in the query")?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the query is not UTF-8".to_string())
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    super::path::percent_encode(s, b"-._~")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters_of(q: &str) -> Value {
        let f = q
            .split('&')
            .find_map(|p| p.strip_prefix("filters="))
            .unwrap();
        serde_json::from_str(&decode(f).unwrap()).unwrap()
    }

    #[test]
    fn the_owner_label_is_added_to_whatever_was_asked() {
        let q = with_owner_filter(Some("all=1"), "alice").unwrap();
        assert!(q.starts_with("all=1&"));
        assert_eq!(
            filters_of(&q)["label"],
            serde_json::json!({"privledger.owner=alice": true})
        );
        // `docker image prune -a` sends the map form; a list beside it is refused.
        let asked = encode(r#"{"dangling":{"false":true}}"#);
        let f = filters_of(&with_owner_filter(Some(&format!("filters={asked}")), "a").unwrap());
        assert_eq!(f["label"], serde_json::json!({"privledger.owner=a": true}));
        let asked = encode(r#"{"status":["exited"]}"#);
        let f = filters_of(&with_owner_filter(Some(&format!("filters={asked}")), "a").unwrap());
        assert_eq!(f["label"], serde_json::json!(["privledger.owner=a"]));
        let asked = encode(r#"{"label":["app=web"],"status":["running"]}"#);
        let q = with_owner_filter(Some(&format!("filters={asked}")), "alice").unwrap();
        let f = filters_of(&q);
        assert_eq!(
            f["label"],
            serde_json::json!(["app=web", "privledger.owner=alice"])
        );
        assert_eq!(f["status"], serde_json::json!(["running"]));
        let map_form = encode(r#"{"label":{"app=web":true}}"#);
        let f = filters_of(&with_owner_filter(Some(&format!("filters={map_form}")), "a").unwrap());
        assert_eq!(f["label"]["privledger.owner=a"], true);
    }

    #[test]
    fn tricks_with_filters_are_refused() {
        let two = format!("filters={}&filters={}", encode("{}"), encode("{}"));
        assert!(with_owner_filter(Some(&two), "a").is_err());
        assert!(with_owner_filter(Some("filters=%7B%22label%22%3A1%7D"), "a").is_err());
        assert!(
            with_owner_filter(
                Some("filters=%7B%22label%22%3A%5B%5D%2C%22label%22%3A%5B%5D%7D"),
                "a"
            )
            .is_err(),
            "duplicate key"
        );
        assert!(with_owner_filter(Some("filters=%zz"), "a").is_err());
    }
}
