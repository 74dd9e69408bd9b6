//! `audit export` (JSON lines with the exact hashed bodies, to a file or stdout) and
//! its offline counterpart, `verify --file`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::client::CliError;
use super::output::{self, Out};
use super::Exit;
use crate::client::Clients;
use crate::pb;

/// Where an export goes: stdout, or a temporary file beside the target that becomes
/// the target only once it is whole (so an interrupted export leaves no short file
/// under the name an auditor would trust).
enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        w: BufWriter<File>,
        partial: PathBuf,
    },
}

impl Sink {
    fn open(path: &Path, force: bool) -> Result<Sink, CliError> {
        if path == Path::new("-") {
            return Ok(Sink::Stdout(BufWriter::new(std::io::stdout())));
        }
        if !force && path.symlink_metadata().is_ok() {
            return Err(CliError::Usage(format!(
                "{} exists; choose another file or add --force to replace it",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .ok_or_else(|| CliError::Usage(format!("{} is not a file name", path.display())))?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(format!(".partial-{}", std::process::id()));
        let partial = path.with_file_name(partial_name);
        let f = File::create(&partial)
            .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", partial.display())))?;
        Ok(Sink::File {
            w: BufWriter::new(f),
            partial,
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File { w, .. } => w,
        }
    }

    /// Makes the export durable and puts it in place.
    fn finish(self, path: &Path, force: bool) -> std::io::Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush(),
            Sink::File { w, partial } => {
                let done = (|| {
                    let f = w.into_inner().map_err(|e| e.into_error())?;
                    f.sync_all()?;
                    if force {
                        std::fs::rename(&partial, path)
                    } else {
                        // A link fails if the name appeared meanwhile: nothing is
                        // replaced that --force did not allow.
                        std::fs::hard_link(&partial, path)?;
                        std::fs::remove_file(&partial)
                    }
                })();
                if done.is_err() {
                    let _ = std::fs::remove_file(&partial);
                }
                done
            }
        }
    }

    fn abandon(self) {
        if let Sink::File { partial, .. } = self {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// `audit export`: every entry from `from` through the head as it was at the start.
pub(super) async fn export(
    c: &mut Clients,
    path: &Path,
    from: u64,
    force: bool,
    out: &Out,
) -> Result<Exit, CliError> {
    let head = c.audit.head(pb::HeadRequest {}).await?.into_inner();
    let total = head
        .seq
        .saturating_sub(from.max(1).max(head.earliest_seq) - 1);
    let mut sink = Sink::open(path, force)?;
    let to_stdout = matches!(sink, Sink::Stdout(_));
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} entries ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    let result = async {
        let mut s = c
            .audit
            .stream(pb::StreamRequest {
                from_seq: from,
                follow: false,
                kinds: vec![],
                subject: String::new(),
            })
            .await?
            .into_inner();
        let mut n = 0u64;
        while let Some(e) = s.message().await? {
            if e.seq > head.seq {
                break;
            }
            // Encoded first, so that a closed stdout reaches us as the io error it is.
            let mut line =
                serde_json::to_vec(&output::entry_json(&e)).map_err(std::io::Error::other)?;
            line.push(b'\n');
            sink.writer().write_all(&line)?;
            n += 1;
            if n % 1024 == 0 {
                bar.set_position(n);
            }
        }
        Ok::<u64, CliError>(n)
    }
    .await;
    bar.finish_and_clear();
    let n = match result {
        Ok(n) => n,
        // The reader stopped reading (`| head`): what it wanted, it got.
        Err(CliError::Io(e)) if e.kind() == ErrorKind::BrokenPipe && to_stdout => {
            return Ok(Exit::Ok)
        }
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    };
    match sink.finish(path, force) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe && to_stdout => return Ok(Exit::Ok),
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot write {}: {e}",
                path.display()
            )))
        }
    }
    let summary = if out.json {
        json!({"exported": n, "out": path, "head_seq": head.seq, "head_hash": hex::encode(&head.hash)})
            .to_string()
    } else {
        format!(
            "exported {n} entries to {} (through seq {}, hash {})",
            if to_stdout {
                "standard output".to_string()
            } else {
                path.display().to_string()
            },
            head.seq,
            hex::encode(&head.hash)
        )
    };
    // With the export on stdout, the summary must not join it.
    if to_stdout {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(Exit::Ok)
}

/// Entries written before the output is made durable and the cursor saved.
const FOLLOW_BATCH: u64 = 1024;
/// How long a quiet stream waits before what was written is made durable.
const FOLLOW_IDLE: std::time::Duration = std::time::Duration::from_millis(200);

/// The last seq a cursor file records (`None`: no file yet).
fn read_cursor(path: &Path) -> Result<Option<u64>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            CliError::Usage(format!(
                "the cursor file {} does not hold a seq ({:?})",
                path.display(),
                text.trim()
            ))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Usage(format!(
            "cannot read the cursor file {}: {e}",
            path.display()
        ))),
    }
}

/// Replaces the cursor file with `seq`, durably (a crash leaves the old or the new).
fn save_cursor(path: &Path, seq: u64) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp)?;
    writeln!(f, "{seq}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where a followed export goes.
pub(super) enum Shipped {
    /// A file (appended to with a cursor), or `-` for stdout.
    Path(PathBuf),
    /// A syslog datagram socket (`/dev/log`).
    Syslog(PathBuf),
}

/// The open destination of a followed export.
enum Shipping {
    Stream {
        w: Box<dyn Write>,
        /// The file, to sync (none for stdout).
        file: Option<File>,
    },
    Syslog {
        socket: std::os::unix::net::UnixDatagram,
        host: String,
    },
}

impl Shipping {
    fn open(to: &Shipped, force: bool, resume: bool) -> Result<Shipping, CliError> {
        let path = match to {
            Shipped::Syslog(sock) => {
                let socket = std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|s| s.connect(sock).map(|()| s))
                    .map_err(|e| {
                        CliError::Usage(format!("cannot reach syslog at {}: {e}", sock.display()))
                    })?;
                // RFC 5424 allows "-" when the host name is not known.
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
                    .unwrap_or_else(|| "-".into());
                return Ok(Shipping::Syslog { socket, host });
            }
            Shipped::Path(p) => p,
        };
        if path == Path::new("-") {
            return Ok(Shipping::Stream {
                w: Box::new(BufWriter::new(std::io::stdout())),
                file: None,
            });
        }
        let mut o = std::fs::OpenOptions::new();
        if resume {
            o.append(true).create(true);
        } else if force {
            o.write(true).create(true).truncate(true);
        } else {
            o.write(true).create_new(true);
        }
        let f = o.open(path).map_err(|e| {
            CliError::Usage(if e.kind() == ErrorKind::AlreadyExists {
                format!(
                    "{} exists; add --cursor FILE to resume appending to it, or --force to replace it",
                    path.display()
                )
            } else {
                format!("cannot open {}: {e}", path.display())
            })
        })?;
        let file = f.try_clone().map_err(CliError::Io)?;
        Ok(Shipping::Stream {
            w: Box::new(BufWriter::new(f)),
            file: Some(file),
        })
    }

    fn send(&mut self, e: &pb::Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&output::entry_json(e)).map_err(std::io::Error::other)?;
        match self {
            Shipping::Stream { w, .. } => {
                line.push(b'\n');
                w.write_all(&line)
            }
            Shipping::Syslog { socket, host } => {
                // RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID SD MSG, with
                // facility local0 (16) and severity informational (6).
                let time = crate::ledger::format_time(e.time_unix_nanos);
                let mut msg =
                    format!("<134>1 {time} {host} privledger - {} - ", e.kind).into_bytes();
                msg.extend_from_slice(&line);
                socket.send(&msg).map(drop)
            }
        }
    }

    /// Everything sent so far is durable (as far as the destination allows).
    fn durable(&mut self) -> std::io::Result<()> {
        match self {
            Shipping::Stream { w, file } => {
                w.flush()?;
                match file {
                    Some(f) => f.sync_data(),
                    None => Ok(()),
                }
            }
            // A datagram handed to the socket is syslog's.
            Shipping::Syslog { .. } => Ok(()),
        }
    }
}

/// `audit export --follow`: history, then every new entry, at least once. What is
/// sent is made durable before the cursor names it.
pub(super) async fn follow(
    c: &mut Clients,
    to: Shipped,
    from: u64,
    force: bool,
    cursor: Option<&Path>,
) -> Result<Exit, CliError> {
    let start = match cursor.map(read_cursor).transpose()?.flatten() {
        Some(last) => last + 1,
        None => from,
    };
    let mut out = Shipping::open(&to, force, cursor.is_some())?;
    let durable = |out: &mut Shipping, last: u64| -> std::io::Result<()> {
        out.durable()?;
        if let Some(c) = cursor {
            save_cursor(c, last)?;
        }
        Ok(())
    };
    let mut s = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: start,
            follow: true,
            kinds: vec![],
            subject: String::new(),
        })
        .await?
        .into_inner();
    let (mut last, mut pending) = (start.saturating_sub(1), 0u64);
    let result: Result<(), CliError> = async {
        loop {
            let next = if pending > 0 {
                match tokio::time::timeout(FOLLOW_IDLE, s.message()).await {
                    Ok(m) => m?,
                    Err(_) => {
                        durable(&mut out, last)?;
                        pending = 0;
                        continue;
                    }
                }
            } else {
                s.message().await?
            };
            let Some(e) = next else {
                return Ok(());
            };
            out.send(&e)?;
            last = e.seq;
            pending += 1;
            if pending >= FOLLOW_BATCH {
                durable(&mut out, last)?;
                pending = 0;
            }
        }
    }
    .await;
    let saved = if pending > 0 {
        durable(&mut out, last)
    } else {
        Ok(())
    };
    match (result, saved) {
        // The reader stopped reading: what it took is what it wanted.
        (Err(CliError::Io(e)), _) | (Ok(()), Err(e)) if e.kind() == ErrorKind::BrokenPipe => {
            Ok(Exit::Ok)
        }
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(CliError::Io(e)),
        (Ok(()), Ok(())) => Ok(Exit::Ok),
    }
}

/// `verify --file`: the export's chain, recomputed here.
pub(super) fn verify_file(path: &Path, out: &Out) -> Result<Exit, CliError> {
    let f = File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let r = crate::ledger::verify_export(BufReader::new(f).lines())?;
    let ok = r.first_bad.is_none();
    if out.json {
        println!(
            "{}",
            json!({
                "ok": ok, "file": path, "checked": r.checked,
                "first_bad_seq": r.first_bad.as_ref().map(|b| b.0),
                "problem": r.first_bad.as_ref().map(|b| b.1.clone()),
                "from_seq": r.from_seq, "to_seq": r.to_seq,
                "last_hash": hex::encode(r.last_hash),
            })
        );
    } else if let Some((seq, why)) = &r.first_bad {
        println!(
            "FAILED at seq {seq}: {} ({} entries verified before it)",
            crate::safe_text::escape(why),
            r.checked.saturating_sub(1)
        );
    } else if r.checked == 0 {
        println!("ok: {} holds no entries", path.display());
    } else {
        println!(
            "ok: {} entries verified (seq {}..={}), last hash {}",
            r.checked,
            r.from_seq,
            r.to_seq,
            hex::encode(r.last_hash)
        );
        if r.from_seq > 1 {
            println!(
                "note: the export starts at seq {}; its first prev_hash is taken on trust \
                 (compare it with `privledger verify --to {}` on the server)",
                r.from_seq,
                r.from_seq - 1
            );
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::Mismatch })
}
