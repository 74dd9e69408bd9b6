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
