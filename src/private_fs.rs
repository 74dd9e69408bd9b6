//! Files and directories only this process's user can reach: the data directory is
//! created 0700 and checked before use, files are created 0600, never through a
//! symlink, and never by truncating a file privledger did not create.
//!
//! Why: the data directory holds the admin secret and the ledger. Run as root on a
//! directory another user controls, a planted symlink would otherwise make privledger
//! overwrite a root-owned file, or write the admin secret where that user reads it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A refused or failed file operation, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{path} is owned by uid {owner}, not by this process's uid {me}: another user could \
         plant links or read the admin secret there (chown it, or pass --allow-unsafe-data-dir)"
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}): chmod 700 it, or pass \
         --allow-unsafe-data-dir"
    )]
    Writable { path: PathBuf, mode: u32 },
}

impl FsError {
    /// The underlying I/O error, when there is one.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            FsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Makes files this process creates private whatever umask it was started with.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (mode 0700) if missing; otherwise checks that this process's user
/// owns it and that neither group nor others may write it, unless `allow_unsafe`.
pub fn ensure_private_dir(dir: &Path, allow_unsafe: bool) -> Result<(), FsError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io(parent, "create directory"))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io(dir, "create directory"))?;
            // The mode given to mkdir is masked by the umask; this is not.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir, "chmod 0700"))?;
            sync_parent(dir)
        }
        Err(e) => Err(io(dir, "stat")(e)),
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(io(dir, "use as data directory")(std::io::Error::other(
                    "not a directory",
                )));
            }
            if allow_unsafe {
                return Ok(());
            }
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me {
                return Err(FsError::ForeignOwner {
                    path: dir.to_path_buf(),
                    owner: meta.uid(),
                    me,
                });
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(FsError::Writable {
                    path: dir.to_path_buf(),
                    mode,
                });
            }
            Ok(())
        }
    }
}

/// Creates a directory inside a private one (0700), or accepts an existing directory.
pub fn ensure_subdir(dir: &Path) -> Result<(), FsError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io(dir, "use as directory")(std::io::Error::other(
            "exists and is not a directory (or is a symlink)",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io(dir, "create directory"))?;
            sync_parent(dir)
        }
        Err(e) => Err(io(dir, "stat")(e)),
    }
}

/// Creates `path`, which must not exist (not even as a symlink), mode 0600.
pub fn create_new_private(path: &Path) -> Result<File, FsError> {
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io(path, "create"))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(path, "chmod 0600"))?;
    Ok(f)
}

/// Opens an existing regular file for reading and writing, refusing a symlink.
pub fn open_existing_nofollow(path: &Path, write: bool) -> Result<File, FsError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io(path, "open"))
}

/// Replaces `path` with `bytes` atomically and durably: a new private temporary file
/// beside it, fsync, rename over `path` (which replaces a symlink there, never its
/// target), fsync of the directory.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix)
        .map_err(|e| io(path, "random name")(std::io::Error::other(e.to_string())))?;
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(suffix)));
    let result = (|| {
        let mut f = create_new_private(&tmp)?;
        f.write_all(bytes).map_err(io(&tmp, "write"))?;
        f.sync_all().map_err(io(&tmp, "fsync"))?;
        std::fs::rename(&tmp, path).map_err(io(path, "rename into place"))?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// fsyncs the directory holding `path`, so a file created or renamed there survives a
/// machine crash.
pub fn sync_parent(path: &Path) -> Result<(), FsError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_refuse_symlinks_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_new_private(&link).is_err());
        assert!(create_new_private(&target).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        // Atomic replacement replaces the link itself, never what it points at.
        write_private_atomic(&link, b"secret").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    #[test]
    fn private_dir_is_created_0700_and_unsafe_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_private_dir(&d, false).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&d, false).unwrap_err().to_string();
        assert!(
            e.contains("writable by group or others") && e.contains("a/b"),
            "{e}"
        );
        ensure_private_dir(&d, true).unwrap();
    }
}
