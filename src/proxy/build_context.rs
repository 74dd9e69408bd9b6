//! A build context read as it streams to the daemon. The context is a tar; it is
//! forwarded as it arrives, except the last byte of the archive's end marker (and all
//! after it), which is held back until the Dockerfile has passed: the daemon's tar
//! reader cannot finish the archive, so the daemon cannot start the build, before
//! then. A refused build's upstream body ends in an error, never cleanly, so what the
//! daemon received is never a whole archive.
//!
//! The reader follows Go's `archive/tar` (the daemon's) where it matters: header
//! checksums (unsigned or signed), USTAR prefixes, GNU long names, PAX `path` and
//! `size`, and the entry types that carry no data whatever their size field says.
//! What it does not read as Go does (sparse files, a bad header) is refused.

use std::collections::HashMap;

use super::refusal::Refusal;

const BLOCK: usize = 512;
/// The largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 1 << 20;
/// The largest PAX record or GNU long name read.
const MAX_META: usize = 1 << 20;

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// An entry's data (`left`), then its padding (`pad`).
    Data { left: u64, pad: u64, keep: Keep },
    /// Past the first zero block: the archive's end as Go reads it.
    End,
}

#[derive(Debug, Clone, PartialEq)]
enum Keep {
    Nothing,
    /// A Dockerfile candidate at this path.
    File(String),
    /// A GNU long name or a PAX record, applying to the next header.
    LongName,
    Pax,
}

/// The reader. Feed it every byte of the context in order.
#[derive(Debug)]
pub struct TarWatch {
    /// The Dockerfile's path, and the daemon's fallback (`dockerfile`) for the default.
    wanted: Vec<String>,
    state: State,
    header: Vec<u8>,
    meta: Vec<u8>,
    long_name: Option<String>,
    pax_path: Option<String>,
    pax_size: Option<u64>,
    current: Vec<u8>,
    /// The last entry at each wanted path: its text, or why it cannot be used.
    found: HashMap<String, Result<Vec<u8>, String>>,
    links: Vec<String>,
    paths: Vec<String>,
}

impl TarWatch {
    /// A reader looking for the Dockerfile at `dockerfile` (relative to the context).
    pub fn new(dockerfile: &str) -> TarWatch {
        let want = normalize(dockerfile);
        let mut wanted = vec![want.clone()];
        if want == "Dockerfile" {
            wanted.push("dockerfile".into());
        }
        TarWatch {
            wanted,
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            long_name: None,
            pax_path: None,
            pax_size: None,
            current: Vec::new(),
            found: HashMap::new(),
            links: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// Reads `bytes`; answers how many of them may be forwarded now: all of them,
    /// unless the archive's end marker completes in them (then all but what follows
    /// the marker's first 511 bytes), and none once it has.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, Refusal> {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.state {
                State::End => return Ok(0),
                State::Header => {
                    let take = (BLOCK - self.header.len()).min(bytes.len() - i);
                    self.header.extend_from_slice(&bytes[i..i + take]);
                    i += take;
                    if self.header.len() == BLOCK && self.header_done()? {
                        // The block's last byte is at i - 1: it and all after it wait.
                        return Ok(i - 1);
                    }
                }
                State::Data { left, pad, keep } => {
                    let avail = (bytes.len() - i) as u64;
                    if *left > 0 {
                        let n = (*left).min(avail) as usize;
                        let chunk = &bytes[i..i + n];
                        match keep {
                            Keep::Nothing => {}
                            Keep::File(_) => self.current.extend_from_slice(chunk),
                            Keep::LongName | Keep::Pax => {
                                if self.meta.len() + n > MAX_META {
                                    return Err(bad("a long name or PAX record over 1 MiB"));
                                }
                                self.meta.extend_from_slice(chunk);
                            }
                        }
                        *left -= n as u64;
                        i += n;
                    } else {
                        let n = (*pad).min(avail) as usize;
                        *pad -= n as u64;
                        i += n;
                    }
                    if let State::Data {
                        left: 0, pad: 0, ..
                    } = self.state
                    {
                        self.data_done()?;
                    }
                }
            }
        }
        Ok(bytes.len())
    }

    /// After the last byte: the Dockerfile's text, once the whole context has been
    /// read as the daemon will read it.
    pub fn finish(self) -> Result<String, Refusal> {
        match self.state {
            State::End => {}
            // Go's reader also ends cleanly at a header boundary without a marker.
            State::Header if self.header.is_empty() => {}
            _ => return Err(bad("the context ends inside an entry")),
        }
        if let Some(p) = self.paths.iter().find(|p| {
            self.links.iter().any(|l| {
                p.len() > l.len() && p.starts_with(l.as_str()) && p.as_bytes()[l.len()] == b'/'
            })
        }) {
            return Err(bad(&format!("{p} is under a symlink of the context")));
        }
        let found = self.wanted.iter().find_map(|w| self.found.get(w));
        match found {
            Some(Ok(text)) => {
                String::from_utf8(text.clone()).map_err(|_| bad("the Dockerfile is not UTF-8 text"))
            }
            Some(Err(why)) => Err(bad(why)),
            None => Err(bad(&format!("no {} in the context", self.wanted[0]))),
        }
    }

    /// A whole header: the entry it starts, or the end (`true`).
    fn header_done(&mut self) -> Result<bool, Refusal> {
        let h = std::mem::take(&mut self.header);
        if h.iter().all(|&b| b == 0) {
            self.state = State::End;
            return Ok(true);
        }
        check_checksum(&h)?;
        let kind = h[156];
        let size = parse_size(&h[124..136])?;
        match kind {
            b'L' => return self.enter(size, Keep::LongName).map(|_| false),
            b'x' => return self.enter(size, Keep::Pax).map(|_| false),
            // A global PAX header (the daemon ignores it), a GNU long link name.
            b'g' | b'K' => return self.enter(size, Keep::Nothing).map(|_| false),
            b'S' => return Err(bad("sparse files are not read in a build context")),
            _ => {}
        }
        let ustar = &h[257..263] == b"ustar\0" && &h[263..265] == b"00";
        let mut name = cstr(&h[0..100]);
        if ustar {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = self.long_name.take() {
            name = n;
        }
        if let Some(p) = self.pax_path.take() {
            name = p;
        }
        let size = self.pax_size.take().unwrap_or(size);
        let path = normalize(&name);
        // Go reads no data for these, whatever their size field says.
        let header_only = matches!(kind, b'1'..=b'6');
        let regular = matches!(kind, b'0' | 0 | b'7');
        if kind == b'2' {
            self.links.push(path.clone());
        }
        self.paths.push(path.clone());
        let data = if header_only { 0 } else { size };
        if self.wanted.contains(&path) {
            if !regular {
                self.found.insert(
                    path,
                    Err("the Dockerfile must be a regular file in the context".into()),
                );
            } else if size > MAX_DOCKERFILE {
                self.found
                    .insert(path, Err("the Dockerfile is larger than 1 MiB".into()));
            } else {
                self.current.clear();
                return self.enter(data, Keep::File(path)).map(|_| false);
            }
        }
        self.enter(data, Keep::Nothing).map(|_| false)
    }

    fn enter(&mut self, size: u64, keep: Keep) -> Result<(), Refusal> {
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.state = State::Data {
            left: size,
            pad,
            keep,
        };
        if size == 0 {
            self.data_done()?;
        }
        Ok(())
    }

    /// An entry's data (and padding) read whole.
    fn data_done(&mut self) -> Result<(), Refusal> {
        let keep = match std::mem::replace(&mut self.state, State::Header) {
            State::Data { keep, .. } => keep,
            other => {
                self.state = other;
                return Ok(());
            }
        };
        match keep {
            Keep::Nothing => {}
            Keep::File(path) => {
                let text = std::mem::take(&mut self.current);
                self.found.insert(path, Ok(text));
            }
            Keep::LongName => {
                let m = std::mem::take(&mut self.meta);
                self.long_name = Some(cstr(&m));
            }
            Keep::Pax => {
                let m = std::mem::take(&mut self.meta);
                self.pax(&m)?;
            }
        }
        Ok(())
    }

    /// PAX records: `<len> <key>=<value>\n`.
    fn pax(&mut self, mut m: &[u8]) -> Result<(), Refusal> {
        let malformed = || bad("a malformed PAX record");
        while !m.is_empty() {
            let sp = m.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
            let len: usize = std::str::from_utf8(&m[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|&l| l > sp + 1 && l <= m.len())
                .ok_or_else(malformed)?;
            let rec = m[sp + 1..len].strip_suffix(b"\n").ok_or_else(malformed)?;
            let eq = rec.iter().position(|&b| b == b'=').ok_or_else(malformed)?;
            let (k, v) = (&rec[..eq], &rec[eq + 1..]);
            match k {
                b"path" => self.pax_path = Some(String::from_utf8_lossy(v).into_owned()),
                b"size" => {
                    let size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                    self.pax_size = Some(size.ok_or_else(|| bad("a malformed PAX size"))?);
                }
                k if k.starts_with(b"GNU.sparse") => {
                    return Err(bad("sparse files are not read in a build context"))
                }
                _ => {}
            }
            m = &m[len..];
        }
        Ok(())
    }
}

fn bad(why: &str) -> Refusal {
    Refusal::new("build context", why)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Go accepts the unsigned or the signed sum of the header, its checksum field read
/// as spaces.
fn check_checksum(h: &[u8]) -> Result<(), Refusal> {
    let field = cstr(&h[148..156]);
    let want = u64::from_str_radix(field.trim_matches(|c| c == ' ' || c == '\0'), 8)
        .map_err(|_| bad("a tar header with a malformed checksum"))?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if want == unsigned || i64::try_from(want) == Ok(signed) {
        Ok(())
    } else {
        Err(bad("a tar header whose checksum does not match"))
    }
}

/// Octal, or base-256 when the first byte's high bit is set (as Go reads it).
fn parse_size(f: &[u8]) -> Result<u64, Refusal> {
    if f[0] & 0x80 != 0 {
        if f[0] & 0x40 != 0 {
            return Err(bad("a negative size in a tar header"));
        }
        let mut n = u64::from(f[0] & 0x3f);
        for &b in &f[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(b)))
                .ok_or_else(|| bad("a size too large in a tar header"))?;
        }
        return Ok(n);
    }
    let s = cstr(f);
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| bad("a malformed size in a tar header"))
}

/// `./a/../Dockerfile` → `Dockerfile`: the path relative to the context's root.
pub fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

/// A tar of `entries` (path, data, type, link), GNU or USTAR headers: for tests.
#[cfg(test)]
pub fn tar_of(entries: &[(&str, &[u8], tar::EntryType, Option<&str>)], gnu: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, kind, link) in entries {
        let mut h = if gnu {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType as T;

    /// Feeds `ctx` in chunks of `step`; the Dockerfile, and how much went before the
    /// end's last byte.
    fn stream(ctx: &[u8], name: &str, step: usize) -> (Result<String, Refusal>, usize) {
        let mut w = TarWatch::new(name);
        let mut sent = 0;
        for c in ctx.chunks(step) {
            match w.feed(c) {
                Ok(n) => sent += n,
                Err(e) => return (Err(e), sent),
            }
        }
        (w.finish(), sent)
    }

    #[test]
    fn the_streamed_reading_agrees_with_the_whole_one() {
        let long = format!("{}/Dockerfile", "d".repeat(150));
        let big = vec![7u8; 70_000];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                tar_of(
                    &[
                        ("a", &big, T::Regular, None),
                        ("Dockerfile", b"FROM a", T::Regular, None),
                    ],
                    false,
                ),
                "Dockerfile",
            ),
            (
                tar_of(
                    &[
                        ("Dockerfile", b"FROM a", T::Regular, None),
                        ("Dockerfile", b"FROM c", T::Regular, None),
                    ],
                    true,
                ),
                "Dockerfile",
            ),
            (
                tar_of(&[("dockerfile", b"FROM low", T::Regular, None)], false),
                "Dockerfile",
            ),
            (
                tar_of(&[("sub/x.df", b"FROM s", T::Regular, None)], false),
                "./sub/../sub/x.df",
            ),
            (
                tar_of(&[(long.as_str(), b"FROM long", T::Regular, None)], true),
                long.as_str(),
            ),
            (
                tar_of(&[(long.as_str(), b"FROM long", T::Regular, None)], false),
                long.as_str(),
            ),
            (
                tar_of(
                    &[("Dockerfile", b"", T::Symlink, Some("/etc/passwd"))],
                    false,
                ),
                "Dockerfile",
            ),
            (
                tar_of(
                    &[
                        ("d", b"", T::Symlink, Some(".")),
                        ("d/Dockerfile", b"FROM evil", T::Regular, None),
                        ("Dockerfile", b"FROM a", T::Regular, None),
                    ],
                    false,
                ),
                "Dockerfile",
            ),
            (
                tar_of(&[("other", b"FROM a", T::Regular, None)], false),
                "Dockerfile",
            ),
            (
                tar_of(
                    &[
                        ("dir", b"", T::Directory, None),
                        ("dir/Dockerfile", b"FROM d", T::Regular, None),
                    ],
                    false,
                ),
                "dir/Dockerfile",
            ),
        ];
        for (ctx, name) in &cases {
            let whole = super::super::images::dockerfile_in(ctx, name).map_err(|r| r.rule);
            for step in [1, 7, 512, 513, 4096, ctx.len()] {
                let (got, sent) = stream(ctx, name, step);
                assert_eq!(got.map_err(|r| r.rule), whole, "{name}, chunks of {step}");
                // The end marker's last byte is never forwarded before the check.
                let end = ctx.len() - 1024 + 511;
                assert!(
                    sent <= end,
                    "{name}, chunks of {step}: sent {sent} of {}",
                    ctx.len()
                );
                assert!(sent >= end - 511, "the rest streams: {sent}");
            }
        }
    }

    #[test]
    fn what_go_would_read_differently_is_refused() {
        let mut ctx = tar_of(&[("Dockerfile", b"FROM a", T::Regular, None)], false);
        ctx[150] ^= 1; // the checksum field
        assert!(stream(&ctx, "Dockerfile", 512).0.is_err());
        let ctx = tar_of(&[("Dockerfile", b"FROM a", T::Regular, None)], false);
        assert!(
            stream(&ctx[..700], "Dockerfile", 512).0.is_err(),
            "truncated"
        );
        // Sizes Go ignores: a symlink whose size field claims data.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(T::Symlink);
        h.set_link_name("x").unwrap();
        h.set_size(0);
        h.set_path("l").unwrap();
        h.as_old_mut().size.copy_from_slice(b"00000001000\0");
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("Dockerfile").unwrap();
        h.set_size(6);
        h.set_cksum();
        b.append(&h, &b"FROM z"[..]).unwrap();
        let ctx = b.into_inner().unwrap();
        assert_eq!(stream(&ctx, "Dockerfile", 100).0.unwrap(), "FROM z");
        // A PAX size that overrides the header's.
        let mut pax = tar::Builder::new(Vec::new());
        pax.append_pax_extensions([("size", &b"6"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("Dockerfile").unwrap();
        h.set_size(6);
        h.set_cksum();
        pax.append(&h, &b"FROM p"[..]).unwrap();
        let ctx = pax.into_inner().unwrap();
        assert_eq!(stream(&ctx, "Dockerfile", 3).0.unwrap(), "FROM p");
    }
}
