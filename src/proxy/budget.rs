//! The storage budget: disk used per owner (containers' writable layers, volumes and
//! images), refreshed in the background from one `/system/df` call, never on a
//! create's path, and again after a call that made images.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tracing::debug;

use super::daemon::Daemon;
use super::rules::LABEL_OWNER;

/// How often the budget is refreshed: disk use changes slowly, and `/system/df`
/// walks every layer.
pub const REFRESH: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Budget {
    used: Mutex<HashMap<String, u64>>,
}

impl Budget {
    /// Bytes `user` was using at the last refresh.
    pub fn used(&self, user: &str) -> u64 {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    /// Counts `bytes` more for `user` until the next refresh (an image just made).
    pub fn add(&self, user: &str, bytes: u64) {
        let mut m = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(user.to_string()).or_default() += bytes;
    }

    /// Counts `bytes` less for `user` until the next refresh (an image just removed).
    pub fn sub(&self, user: &str, bytes: u64) {
        let mut m = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.get_mut(user) {
            *v = v.saturating_sub(bytes);
        }
    }

    pub async fn refresh(&self, d: &Daemon) {
        match d.get_json("/system/df").await {
            Ok((s, v)) if s.is_success() => {
                let used = usage(&v);
                *self.used.lock().unwrap_or_else(|p| p.into_inner()) = used;
            }
            Ok((s, _)) => debug!(status = %s, "system df refused"),
            Err(e) => debug!(error = %e, "system df failed"),
        }
    }
}

/// Per owner: writable layers of containers, the size of volumes and of images. A
/// volume without an owner label (an anonymous one) is its container's owner's; an
/// image is its labelled owner's (layers it shares with others are counted in full:
/// the budget is what the user's images hold, not what they alone hold).
fn usage(df: &Value) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    let owner = |labels: Option<&Value>| {
        labels
            .and_then(|l| l.get(LABEL_OWNER))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let list = |name: &str| df.get(name).and_then(Value::as_array).into_iter().flatten();
    let size = |item: &Value, at: &str| {
        item.pointer(at).and_then(Value::as_i64).unwrap_or(0).max(0) as u64
    };
    let mut anonymous: HashMap<&str, String> = HashMap::new();
    for c in list("Containers") {
        let Some(o) = owner(c.get("Labels")) else {
            continue;
        };
        *out.entry(o.clone()).or_default() += size(c, "/SizeRw");
        for m in c
            .get("Mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if m.get("Type").and_then(Value::as_str) == Some("volume") {
                if let Some(n) = m.get("Name").and_then(Value::as_str) {
                    anonymous.insert(n, o.clone());
                }
            }
        }
    }
    for i in list("Images") {
        if let Some(o) = owner(i.get("Labels")) {
            *out.entry(o).or_default() += size(i, "/Size");
        }
    }
    // Volumes' sizes are -1 when unknown.
    for v in list("Volumes") {
        let name = v.get("Name").and_then(Value::as_str).unwrap_or("");
        let o = owner(v.get("Labels")).or_else(|| anonymous.get(name).cloned());
        if let Some(o) = o {
            *out.entry(o).or_default() += size(v, "/UsageData/Size");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_layers_and_volumes_by_owner() {
        let df = serde_json::json!({
            "Containers": [
                {"SizeRw": 100, "Labels": {"privledger.owner": "a"}},
                {"SizeRw": 50, "Labels": {"privledger.owner": "b"},
                 "Mounts": [{"Type": "volume", "Name": "anon1"}]},
                {"SizeRw": 7, "Labels": {}, "Mounts": [{"Type": "volume", "Name": "anon2"}]},
            ],
            "Images": [
                {"Size": 300, "Labels": {"privledger.owner": "a"}},
                {"Size": 999, "Labels": null},
            ],
            "Volumes": [
                {"Name": "v", "UsageData": {"Size": 1000}, "Labels": {"privledger.owner": "a"}},
                {"Name": "w", "UsageData": {"Size": -1}, "Labels": {"privledger.owner": "b"}},
                {"Name": "anon1", "UsageData": {"Size": 5000}, "Labels": null},
                {"Name": "anon2", "UsageData": {"Size": 9000}, "Labels": {}},
            ]
        });
        let u = usage(&df);
        assert_eq!(u["a"], 1400, "layers, volumes and images");
        assert_eq!(
            u["b"], 5050,
            "an anonymous volume is its container's owner's"
        );
        assert_eq!(u.len(), 2);
    }
}
