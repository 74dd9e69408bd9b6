//! The TCP accept loop: a cap on open connections, TLS handshakes off the loop with
//! a deadline, a deadline on connections that send nothing, and, when the process
//! runs out of file descriptors, a logged back-off instead of a spinning loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::tls::Tls;
use crate::api::auth::ConnInfo;
use crate::config::net::Limits;

/// The longest pause after the process ran out of file descriptors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this long for the same trouble.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A bound listener of either kind.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    async fn accept(&self) -> io::Result<(Io, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                // No Nagle: a response larger than one segment would otherwise wait
                // for the client's delayed ACK (about 40 ms on Linux).
                let _ = s.set_nodelay(true);
                Ok((Io::Plain(s), Some(a)))
            }
            Listener::Unix(l) => Ok((Io::Unix(l.accept().await?.0), None)),
        }
    }
}

/// Accepts on `listener` until the returned stream is dropped. `tls` applies to TCP
/// connections only.
pub fn incoming(
    listener: Listener,
    limits: Limits,
    tls: Option<Arc<Tls>>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(accept_loop(listener, limits, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: Listener,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(10);
    let mut fd_warned = RateLimited::default();
    let mut full_warned = RateLimited::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tx.closed() => return,
        };
        let (io, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) if out_of_descriptors(&e) => {
                // The pending connection stays in the kernel's queue; accepting again
                // at once would fail again at once (a 100% CPU loop).
                if let Some(n) = fd_warned.tick() {
                    warn!(error = %e, times = n, pause = ?backoff,
                        "out of file descriptors: not accepting connections for a moment \
                         (raise the limit, e.g. LimitNOFILE, or lower limits.max_connections)");
                }
                crate::metrics::accept_backoff();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(e) => {
                // A connection reset before it was accepted, and the like.
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(n) = full_warned.tick() {
                warn!(
                    limit = limits.max_connections,
                    times = n,
                    "connection limit reached: closing new connections at once"
                );
            }
            crate::metrics::connection_refused();
            drop(io);
            continue;
        };
        let info = ConnInfo {
            remote,
            client_cert: None,
        };
        match (io, &tls) {
            (Io::Plain(tcp), Some(tls)) => {
                // Handshakes run beside the loop: a client that stalls in one holds
                // only its own slot, and only until the deadline.
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                let deadline = limits.handshake_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let mut info = info;
                            info.client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Arc::from(super::tls::identity(c)));
                            let conn = Conn::new(Io::Tls(Box::new(stream)), info, slot, &limits);
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Ok(Err(e)) => debug!(?remote, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(?remote, "TLS handshake did not finish in time"),
                    }
                });
            }
            (io, _) => {
                let conn = Conn::new(io, info, slot, &limits);
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
            || code == rustix::io::Errno::NOBUFS.raw_os_error()
            || code == rustix::io::Errno::NOMEM.raw_os_error()
    )
}

/// Counts occurrences and says when one may be logged.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    since: u64,
}

impl RateLimited {
    /// `Some(occurrences since the last log)` when this one should be logged.
    fn tick(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// `$body` with `$s` bound to whichever stream `$io` holds, pinned.
macro_rules! each_io {
    ($io:expr, $s:ident => $body:expr) => {
        match $io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $body
            }
            Io::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $body
            }
            Io::Unix($s) => {
                let $s = Pin::new($s);
                $body
            }
        }
    };
}

/// One accepted connection: closed with an error once it has sent nothing for its
/// deadline (the handshake timeout until its first bytes, then the idle timeout).
pub struct Conn {
    io: Io,
    info: ConnInfo,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Bytes arrived since the deadline was last moved.
    active: bool,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    fn new(io: Io, info: ConnInfo, slot: OwnedSemaphorePermit, limits: &Limits) -> Conn {
        Conn {
            io,
            info,
            idle: limits.idle_timeout,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            active: false,
            _slot: slot,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = each_io!(&mut this.io, s => s.poll_read(cx, buf));
        if let Poll::Ready(Ok(())) = &r {
            if buf.filled().len() > before {
                this.active = true;
            }
            return r;
        }
        if r.is_ready() {
            return r;
        }
        // Nothing to read: has the connection been silent for too long? Moving the
        // timer only when it fires keeps reads cheap.
        while this.deadline.as_mut().poll(cx).is_ready() {
            if !std::mem::take(&mut this.active) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection sent nothing within its deadline",
                )));
            }
            let next = tokio::time::Instant::now() + this.idle;
            this.deadline.as_mut().reset(next);
        }
        Poll::Pending
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_io!(&mut self.io, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_io!(&mut self.io, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(&mut self.io, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(&mut self.io, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            handshake_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_an_active_one_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut inc = incoming(Listener::Tcp(l), limits(), None);
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = inc.next().await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        // One that sends at once gets the idle deadline after it: it is closed too,
        // but never before that deadline (a lower bound, which load cannot break).
        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut conn = inc.next().await.unwrap().unwrap();
        let start = Instant::now();
        talker.write_all(b"x").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() >= limits().idle_timeout,
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn beyond_the_connection_cap_a_new_connection_is_closed_at_once() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut inc = incoming(Listener::Tcp(l), limits(), None);
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let ca = inc.next().await.unwrap().unwrap();
        let _cb = inc.next().await.unwrap().unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // Closed by the server: EOF (or a reset).
        assert!(matches!(c.read(&mut buf).await, Ok(0) | Err(_)));
        // A slot given back is usable again.
        drop(ca);
        let _d = TcpStream::connect(addr).await.unwrap();
        let _cd = inc.next().await.unwrap().unwrap();
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_skipped() {
        let mut r = RateLimited::default();
        assert_eq!(r.tick(), Some(1));
        assert_eq!(r.tick(), None);
        assert_eq!(r.tick(), None);
        r.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(r.tick(), Some(3));
    }
}
