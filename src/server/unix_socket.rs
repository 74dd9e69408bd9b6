//! The gRPC Unix socket: bound with the configured mode and group, never taking the
//! path from a live server, and removed at shutdown only if it is still ours.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    #[error(
        "{0} is the socket of a running server (it accepts connections); stop that \
         server, or choose another --unix-socket"
    )]
    Live(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("unix_socket_group {0:?}: no such group in /etc/group (a numeric gid also works)")]
    NoSuchGroup(String),
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
}

fn io<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> UnixSocketError + 'a {
    move |source| UnixSocketError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// The socket file this server made, identified by its inode.
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
}

/// Binds `path` with `mode` and, when given, `group`. A socket already there that
/// accepts a connection belongs to a live server and is left alone; one that refuses
/// is stale and replaced.
pub fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<(UnixListener, SocketFile), UnixSocketError> {
    let gid = group.map(resolve_group).transpose()?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(UnixSocketError::NotASocket(path.to_path_buf()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(UnixSocketError::Live(path.to_path_buf())),
            Err(_) => std::fs::remove_file(path).map_err(io(path, "remove the stale socket"))?,
        }
    }
    let listener = UnixListener::bind(path).map_err(io(path, "bind"))?;
    // Until the chmod, the socket has the umask's mode (0600 under `serve`): never
    // wider than asked.
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io(path, "chown"))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(path, "chmod"))?;
    let ino = std::fs::symlink_metadata(path)
        .map_err(io(path, "stat"))?
        .ino();
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            ino,
        },
    ))
}

impl SocketFile {
    /// Removes the socket file if it is still the one this server bound (another
    /// process may have replaced it meanwhile).
    pub fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A group name from /etc/group, or a numeric gid.
fn resolve_group(g: &str) -> Result<u32, UnixSocketError> {
    if let Ok(gid) = g.parse() {
        return Ok(gid);
    }
    let text =
        std::fs::read_to_string("/etc/group").map_err(io(Path::new("/etc/group"), "read"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .find(|(name, _)| *name == g)
        .map(|(_, gid)| gid)
        .ok_or_else(|| UnixSocketError::NoSuchGroup(g.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mode_is_applied_a_live_socket_is_kept_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let (listener, _) = bind(&p, 0o660, None).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        // Live: a second bind is refused and the file is untouched.
        assert!(matches!(
            bind(&p, 0o600, None),
            Err(UnixSocketError::Live(_))
        ));
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), meta.ino());
        // Stale (its listener gone): replaced.
        drop(listener);
        let (_l, b2) = bind(
            &p,
            0o600,
            Some(&rustix::process::getegid().as_raw().to_string()),
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Removal only removes our own file.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"someone else's").unwrap();
        b2.remove();
        assert!(p.exists());
        assert!(matches!(
            bind(&p, 0o600, None),
            Err(UnixSocketError::NotASocket(_))
        ));
        assert!(matches!(
            bind(
                &dir.path().join("t.sock"),
                0o600,
                Some("no-such-group-here")
            ),
            Err(UnixSocketError::NoSuchGroup(_))
        ));
    }
}
