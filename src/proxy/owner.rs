//! Ownership: which user a container, volume, network or exec belongs to, as the
//! daemon resolves the name (full id, id prefix or name), by the owner label.

use serde_json::Value;

use super::classify::Kind;
use super::daemon::Daemon;
use super::filters::owner_filter;
use super::rules::LABEL_OWNER;
use super::Error;

/// A resource the daemon resolved: its full id and its owner label.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub id: String,
    pub owner: Option<String>,
}

/// Resolves `name` of `kind` through the daemon; `None` when there is none.
pub async fn resolve(d: &Daemon, kind: Kind, name: &str) -> Result<Option<Resolved>, Error> {
    let (status, v) = d.get_json(&kind.inspect_path(name)).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(Error::Daemon(format!(
            "inspect {} {name:?}: {status}",
            kind.as_str()
        )));
    }
    Ok(Some(of_inspect(kind, &v, name)))
}

/// The id and owner an inspect of `kind` shows (`name` when it shows no id).
pub fn of_inspect(kind: Kind, v: &Value, name: &str) -> Resolved {
    let (id, labels) = match kind {
        Kind::Container => (v.get("Id"), v.pointer("/Config/Labels")),
        Kind::Volume => (v.get("Name"), v.get("Labels")),
        Kind::Network => (v.get("Id"), v.get("Labels")),
    };
    Resolved {
        id: id.and_then(Value::as_str).unwrap_or(name).to_string(),
        owner: labels
            .and_then(|l| l.get(LABEL_OWNER))
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// The container an exec runs in.
pub async fn exec_container(d: &Daemon, exec_id: &str) -> Result<Option<String>, Error> {
    let path = format!("/exec/{}/json", super::path::segment(exec_id));
    let (status, v) = d.get_json(&path).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    Ok(v.get("ContainerID")
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// How many `kind` resources `user` owns.
pub async fn count(d: &Daemon, kind: Kind, user: &str) -> Result<usize, Error> {
    let f = owner_filter(None, user).map_err(Error::Daemon)?;
    let path = match kind {
        Kind::Container => format!("/containers/json?all=1&filters={f}"),
        Kind::Volume => format!("/volumes?filters={f}"),
        Kind::Network => format!("/networks?filters={f}"),
    };
    let (status, v) = d.get_json(&path).await?;
    if !status.is_success() {
        return Err(Error::Daemon(format!(
            "listing {}s: {status}",
            kind.as_str()
        )));
    }
    let list = match kind {
        Kind::Volume => v.get("Volumes").cloned().unwrap_or(Value::Null),
        _ => v,
    };
    Ok(list.as_array().map_or(0, Vec::len))
}

/// The volumes a user holds: named ones (labelled theirs) and the anonymous ones
/// their containers mount (the daemon labels those with nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeUse {
    pub named: std::collections::HashSet<String>,
    pub anonymous: std::collections::HashSet<String>,
}

impl VolumeUse {
    pub fn total(&self) -> usize {
        self.named.len() + self.anonymous.len()
    }
}

/// What `user` holds in volumes, from one volume list and one container list.
pub async fn volume_use(d: &Daemon, user: &str) -> Result<VolumeUse, Error> {
    let f = owner_filter(None, user).map_err(Error::Daemon)?;
    let (s1, vols) = d.get_json(&format!("/volumes?filters={f}")).await?;
    let (s2, containers) = d
        .get_json(&format!("/containers/json?all=1&filters={f}"))
        .await?;
    if !s1.is_success() || !s2.is_success() {
        return Err(Error::Daemon(format!(
            "listing volumes and containers: {s1}, {s2}"
        )));
    }
    Ok(volume_use_of(&vols, &containers))
}

fn volume_use_of(vols: &Value, containers: &Value) -> VolumeUse {
    let mut u = VolumeUse::default();
    for v in vols
        .get("Volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = v.get("Name").and_then(Value::as_str) {
            u.named.insert(n.to_string());
        }
    }
    for c in containers.as_array().into_iter().flatten() {
        for m in c
            .get("Mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = m.get("Name").and_then(Value::as_str).unwrap_or("");
            if m.get("Type").and_then(Value::as_str) == Some("volume")
                && !name.is_empty()
                && !u.named.contains(name)
            {
                u.anonymous.insert(name.to_string());
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_volumes_are_those_mounted_but_not_labelled() {
        let vols = serde_json::json!({"Volumes": [{"Name": "data"}]});
        let containers = serde_json::json!([
            {"Mounts": [{"Type": "volume", "Name": "data"}, {"Type": "volume", "Name": "aaaa"}, {"Type": "tmpfs", "Name": ""}]},
            {"Mounts": [{"Type": "volume", "Name": "aaaa"}, {"Type": "volume", "Name": "bbbb"}, {"Type": "bind", "Name": ""}]},
        ]);
        let u = volume_use_of(&vols, &containers);
        assert_eq!(u.named.len(), 1);
        assert_eq!(
            u.anonymous.len(),
            2,
            "shared through VolumesFrom: counted once"
        );
        assert_eq!(u.total(), 3);
    }
}
