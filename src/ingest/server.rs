//! The accept loop: HTTP/1.1 and h2c on one port, or both over TLS when the web config has
//! `tls_server_config` (HTTP/2 chosen by ALPN), with what keeps a flood of connections or
//! slow senders from locking real senders out. Connections beyond `server.max_connections`
//! are answered 503 and closed; the TLS handshake must finish within
//! `server.header_read_timeout`, then a connection must show its protocol (hyper-util's
//! HTTP/1-vs-2 detection has no timer of its own) and, for HTTP/1, its headers within it
//! again; HTTP/2 has a stream cap and keep-alive pings, over TLS as without. Graceful
//! shutdown lives here too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use super::config::ServerConfig;
use super::state::State;

/// Accept connections until `shutdown` resolves, then stop accepting and give in-flight
/// requests up to the configured grace period to finish.
pub async fn serve(state: Arc<State>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let m = state.metrics.server.clone();
    // Bound at start, like the listener (a reload that changes it is refused).
    let slots = Arc::new(Semaphore::new(state.config().server.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    state.set_ready(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                m.connections_accepted.inc();
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    m.connections_rejected.inc();
                    refuse(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // Per connection, so that a reload's timeouts and HTTP/2 settings apply to
                // the connections opened after it.
                let config = state.config();
                let builder = builder(&config.server);
                // The web config of the moment, for this connection's lifetime.
                let tls = state.web.current().and_then(|w| w.tls.clone());
                let s = state.clone();
                let svc = service_fn(move |req| super::dispatch(s.clone(), req));
                let watcher = graceful.watcher();
                let m = m.clone();
                let handshake_failures = state.web.metrics.tls_handshake_failures.clone();
                m.connections.inc();
                tokio::spawn(async move {
                    let timeout = config.server.header_read_timeout;
                    let served = match tls {
                        None => {
                            let io = Detect::new(stream, timeout, detect_timeouts(&m));
                            let conn = builder.serve_connection(TokioIo::new(io), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                        Some(acceptor) => {
                            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    let io = Detect::new(tls, timeout, detect_timeouts(&m));
                                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                                    watcher.watch(conn.into_owned()).await
                                }
                                Ok(Err(e)) => {
                                    handshake_failures.inc();
                                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                                    Ok(())
                                }
                                Err(_) => {
                                    m.connection_timeouts.with_label_values(&["tls"]).inc();
                                    Ok(())
                                }
                            }
                        }
                    };
                    if let Err(e) = served {
                        let header_timeout = e
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if header_timeout {
                            m.connection_timeouts.with_label_values(&["header"]).inc();
                        }
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    m.connections.dec();
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    state.set_ready(false);
    drop(listener);
    let grace = state.config().server.shutdown_grace;
    tracing::info!("shutting down; waiting up to {grace:?} for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {grace:?}; closing anyway");
    }
}

fn detect_timeouts(m: &super::metrics::ServerMetrics) -> IntCounter {
    m.connection_timeouts.with_label_values(&["detect"])
}

fn builder(c: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(c.header_read_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(c.http2_max_concurrent_streams)
        .keep_alive_interval(c.http2_keep_alive_interval)
        .keep_alive_timeout(c.http2_keep_alive_timeout);
    b
}

/// What a connection beyond the cap gets before it is closed: an HTTP/1 sender reads a 503 it
/// retries (an HTTP/2 one sees the connection close, and retries too).
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 21\r\n\r\ntoo many connections\n";

fn refuse(stream: TcpStream) {
    // Written straight to the (non-blocking) socket, without waiting for tokio to learn its
    // readiness: a fresh socket's send buffer is empty, and a short write only loses the
    // courtesy.
    if let Ok(mut s) = stream.into_std() {
        let _ = std::io::Write::write(&mut s, REFUSED);
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), what hyper-util's detection compares the
/// first bytes with.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's socket with a deadline on learning its protocol: until its first bytes
/// have either left the HTTP/2 preface (HTTP/1, whose headers hyper then times) or completed
/// it (HTTP/2), reads fail once `header_read_timeout` has passed since accepting it. After
/// that it is the socket itself.
struct Detect<IO> {
    io: IO,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes of the preface matched so far.
    matched: usize,
    expired: bool,
    timeouts: IntCounter,
}

impl<IO> Detect<IO> {
    fn new(io: IO, timeout: Duration, timeouts: IntCounter) -> Self {
        Detect {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            matched: 0,
            expired: false,
            timeouts,
        }
    }

    /// Follow the preface through newly read bytes; disarm once the protocol is known.
    fn saw(&mut self, new: &[u8]) {
        for &b in new {
            if b != PREFACE[self.matched] {
                self.deadline = None;
                return;
            }
            self.matched += 1;
            if self.matched == PREFACE.len() {
                self.deadline = None;
                return;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Detect<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        if let Some(d) = &mut this.deadline {
            if d.as_mut().poll(cx).is_ready() {
                this.expired = true;
                this.deadline = None;
                this.timeouts.inc();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "protocol not known within server.header_read_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.deadline.is_some() && matches!(r, Poll::Ready(Ok(()))) {
            let filled = buf.filled();
            // A read of nothing is the end of the stream: nothing to match, hyper closes.
            this.saw(&filled[before..]);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Detect<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(timeout: Duration) -> (Detect<TcpStream>, TcpStream, IntCounter) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let c = IntCounter::new("t", "t").unwrap();
        (Detect::new(server, timeout, c.clone()), client, c)
    }

    #[tokio::test]
    async fn a_partial_preface_times_out() {
        let (mut d, mut client, c) = pair(Duration::from_millis(100)).await;
        client.write_all(&PREFACE[..10]).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(d.read(&mut buf).await.unwrap(), 10);
        let e = d.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(c.get(), 1);
        // And stays failed.
        assert!(d.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn a_known_protocol_disarms_the_deadline() {
        for first in [&b"POST /api/v1/write HTTP/1.1\r\n"[..], &PREFACE[..]] {
            let (mut d, mut client, c) = pair(Duration::from_millis(50)).await;
            client.write_all(first).await.unwrap();
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < first.len() {
                got += d.read(&mut buf).await.unwrap();
            }
            assert!(d.deadline.is_none());
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"more").await.unwrap();
            assert_eq!(d.read(&mut buf).await.unwrap(), 4);
            assert_eq!(c.get(), 0);
        }
    }
}
