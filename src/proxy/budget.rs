//! The storage budget: disk used per owner (containers' writable layers and volumes),
//! refreshed in the background from one `/system/df` call, never on a create's path.

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

/// Per owner: writable layers of containers plus the size of volumes.
fn usage(df: &Value) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    let owner = |labels: Option<&Value>| {
        labels
            .and_then(|l| l.get(LABEL_OWNER))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // Containers' writable layers, then volumes (whose size is -1 when unknown).
    for (list, size) in [("Containers", "/SizeRw"), ("Volumes", "/UsageData/Size")] {
        for item in df.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(o) = owner(item.get("Labels")) {
                let bytes = item.pointer(size).and_then(Value::as_i64).unwrap_or(0);
                *out.entry(o).or_default() += bytes.max(0) as u64;
            }
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
                {"SizeRw": 50, "Labels": {"privledger.owner": "b"}},
                {"SizeRw": 7, "Labels": {}},
            ],
            "Volumes": [
                {"UsageData": {"Size": 1000}, "Labels": {"privledger.owner": "a"}},
                {"UsageData": {"Size": -1}, "Labels": {"privledger.owner": "b"}},
            ]
        });
        let u = usage(&df);
        assert_eq!(u["a"], 1100);
        assert_eq!(u["b"], 50);
        assert_eq!(u.len(), 2);
    }
}
