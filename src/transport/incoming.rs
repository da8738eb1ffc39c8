//! The connections a server accepts: at most a cap of them (a silent one
//! makes room for a new one), TLS handshakes in their own tasks under a
//! deadline, the first call due within that deadline, idle ones closed, and
//! who the peer is (address, verified client certificate) on every request.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::limits::{Limits, RateLimited};
use super::tls::Tls;
use crate::metrics::{ConnLabels, Metrics, ServerLabel};

/// After a failed accept (out of descriptors, say), wait this long before
/// the next: retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a new connection waits for the slot of the silent one it evicted.
const EVICT_WAIT: Duration = Duration::from_secs(2);
/// TCP keep-alive on accepted sockets (a vanished peer frees its slot).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// What a request knows of its connection; handlers and interceptors get
/// it with [`ConnInfo::of`].
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate chain the peer presented, leaf first, already
    /// verified against the client CA; `None` without one (or without TLS).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    pub(super) state: Arc<ConnState>,
}

impl ConnInfo {
    /// The connection info of `request`; `None` when it did not come through
    /// [`incoming`] (a handler called directly in a test).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&ConnInfo> {
        request.extensions().get::<ConnInfo>()
    }

    /// The verified client certificate, if the peer presented one.
    pub fn peer_cert(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certs.as_ref()?.first()
    }

    /// A call on this connection passed authentication: a full server no
    /// longer closes it to make room. (Health and reflection need none, so
    /// their calls, streaming ones included, never protect a connection.)
    pub fn authenticated(&self) {
        self.state.trusted.store(true, Ordering::Release);
    }
}

/// The state of one connection, shared by its IO and its requests.
#[derive(Debug)]
pub(super) struct ConnState {
    accepted: Instant,
    /// Calls in flight.
    active: AtomicUsize,
    /// Whether a call was ever made on it.
    used: AtomicBool,
    /// Whether a call on it passed authentication (see
    /// [`ConnInfo::authenticated`]).
    trusted: AtomicBool,
    /// When the last call ended, in ms since `accepted`.
    idle_since_ms: AtomicU64,
    /// Cancelled to make room for a new connection.
    evict: CancellationToken,
}

impl ConnState {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            active: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            trusted: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            evict: CancellationToken::new(),
        }
    }

    pub(super) fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.used.store(true, Ordering::Release);
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    /// When the connection is due to close if nothing changes; `None` while
    /// a call is in flight.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.used.load(Ordering::Acquire) {
            return Some(self.accepted + limits.handshake_timeout);
        }
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.accepted + idle_since + limits.idle_timeout)
    }
}

/// A call in flight on a connection; dropped when the call is over.
pub(super) struct ActiveGuard(Arc<ConnState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let ms = self.0.accepted.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection was closed by the server, the `reason` label.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Limit,
    Evicted,
    HandshakeTimeout,
    Tls,
    Silent,
    Idle,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::Limit => "limit",
            Closed::Evicted => "evicted",
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::Tls => "tls_error",
            Closed::Silent => "silent",
            Closed::Idle => "idle",
        }
    }
}

/// What the accept loop and every connection of one server share.
struct Shared {
    server: &'static str,
    limits: Limits,
    slots: Arc<Semaphore>,
    cap: usize,
    /// New connections waiting for an evicted one's slot: bounded too, as
    /// each holds a descriptor.
    waiting: Arc<Semaphore>,
    /// Admitted connections, oldest first, to find a silent one to evict.
    admitted: Mutex<VecDeque<Weak<ConnState>>>,
    metrics: Arc<Metrics>,
    limit_log: RateLimited,
    tls_log: RateLimited,
    accept_log: RateLimited,
}

impl Shared {
    fn closed(&self, why: Closed) {
        self.metrics
            .connections_closed
            .get_or_create(&ConnLabels {
                server: self.server.to_owned(),
                reason: why.label().to_owned(),
            })
            .inc();
    }

    fn admit(self: &Arc<Self>, state: &Arc<ConnState>, permit: OwnedSemaphorePermit) -> Slot {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if admitted.len() > 2 * self.cap {
            admitted.retain(|w| w.strong_count() > 0);
        }
        admitted.push_back(Arc::downgrade(state));
        drop(admitted);
        self.open(1);
        Slot {
            shared: self.clone(),
            _permit: permit,
        }
    }

    /// Moves the open-connections gauge by `delta`.
    fn open(&self, delta: i64) {
        self.metrics
            .connections
            .get_or_create(&ServerLabel {
                server: self.server.to_owned(),
            })
            .inc_by(delta);
    }

    /// Marks the oldest connection that never made an authenticated call
    /// for closing (a silent one, or one with only health or reflection
    /// calls, which anyone may keep open); whether there was one.
    fn evict_silent(&self) -> bool {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        admitted.retain(|w| w.strong_count() > 0);
        for state in admitted.iter().filter_map(Weak::upgrade) {
            if !state.trusted.load(Ordering::Acquire) && !state.evict.is_cancelled() {
                state.evict.cancel();
                return true;
            }
        }
        false
    }

    /// A slot for a new connection: a free one, else the one a silent
    /// connection gives up; `None` when every connection is in use.
    async fn slot(self: &Arc<Self>, state: &Arc<ConnState>, peer: SocketAddr) -> Option<Slot> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(self.admit(state, permit));
        }
        if let Ok(_waiting) = self.waiting.clone().try_acquire_owned()
            && self.evict_silent()
        {
            self.closed(Closed::Evicted);
            if let Some(held) = self.limit_log.allow() {
                warn!(server = self.server, %peer, max_connections = self.cap, held_back = held,
                    "connection limit reached; closing the oldest connection that has made no authenticated call");
            }
            if let Ok(Ok(permit)) =
                tokio::time::timeout(EVICT_WAIT, self.slots.clone().acquire_owned()).await
            {
                return Some(self.admit(state, permit));
            }
        }
        self.closed(Closed::Limit);
        if let Some(held) = self.limit_log.allow() {
            warn!(server = self.server, %peer, max_connections = self.cap, held_back = held,
                "connection limit reached and every connection is in use; closing the new one");
        }
        None
    }
}

/// A connection's place under the cap, given back when it closes.
struct Slot {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.open(-1);
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection as tonic serves it.
pub struct ConnIo {
    stream: Stream,
    info: ConnInfo,
    sleep: Pin<Box<Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    slot: Slot,
}

impl ConnIo {
    fn new(stream: Stream, state: Arc<ConnState>, slot: Slot) -> Self {
        let (tcp, peer_certs) = match &stream {
            Stream::Plain(tcp) => (tcp, None),
            Stream::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let certs = session.peer_certificates().map(|c| Arc::new(c.to_vec()));
                (tcp, certs)
            }
        };
        let first = state.accepted + slot.shared.limits.handshake_timeout;
        Self {
            info: ConnInfo {
                remote_addr: tcp.peer_addr().ok(),
                peer_certs,
                state: state.clone(),
            },
            stream,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            evicted: Box::pin(state.evict.clone().cancelled_owned()),
            slot,
        }
    }

    /// While the read side waits: closes the connection when it was evicted
    /// or its deadline passed.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let shared = &self.slot.shared;
        if self.evicted.as_mut().poll(cx).is_ready() {
            debug!(server = shared.server, peer = ?self.info.remote_addr, "silent connection evicted for a new one");
            return Poll::Ready(io::Error::new(io::ErrorKind::ConnectionAborted, "evicted"));
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let state = &self.info.state;
            let Some(deadline) = state.deadline(&shared.limits) else {
                // A call is in flight: look again an idle period later.
                let next = Instant::now() + shared.limits.idle_timeout;
                self.sleep.as_mut().reset(next);
                continue;
            };
            if deadline <= Instant::now() {
                let why = if state.used.load(Ordering::Acquire) {
                    Closed::Idle
                } else {
                    Closed::Silent
                };
                shared.closed(why);
                debug!(server = shared.server, peer = ?self.info.remote_addr, reason = why.label(), "closing connection");
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, why.label()));
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl Connected for ConnIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match read {
            Poll::Pending => this.poll_limits(cx).map(Err),
            ready => ready,
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connections of one server, for `serve_with_incoming`: TLS when `tls`
/// holds a server certificate, else plaintext. The accept loop ends when
/// the server drops the stream.
pub fn incoming(
    server: &'static str,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> ReceiverStream<Result<ConnIo, io::Error>> {
    let cap = limits.effective_connections();
    let shared = Arc::new(Shared {
        server,
        limits,
        slots: Arc::new(Semaphore::new(cap)),
        cap,
        waiting: Arc::new(Semaphore::new((cap / 16).max(1))),
        admitted: Mutex::new(VecDeque::new()),
        metrics,
        limit_log: RateLimited::default(),
        tls_log: RateLimited::default(),
        accept_log: RateLimited::default(),
    });
    // The gauge at zero before the first connection: "none open" is worth
    // seeing on a server nobody reaches.
    shared.open(0);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(error) => {
                    if let Some(held) = shared.accept_log.allow() {
                        warn!(server, %error, held_back = held, "accepting a connection failed; backing off");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let config = tls.as_ref().and_then(|t| t.server());
            tokio::spawn(accept_one(shared.clone(), tcp, peer, config, tx.clone()));
        }
    });
    ReceiverStream::new(rx)
}

/// Takes one connection through its slot and TLS handshake to the server.
async fn accept_one(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    config: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    tx: mpsc::Sender<Result<ConnIo, io::Error>>,
) {
    let state = Arc::new(ConnState::new());
    let Some(slot) = shared.slot(&state, peer).await else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(TCP_KEEPALIVE / 4);
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    let stream = match config {
        None => Stream::Plain(tcp),
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(tcp);
            let outcome = tokio::select! {
                r = tokio::time::timeout(shared.limits.handshake_timeout, handshake) => r,
                () = state.evict.cancelled() => return,
            };
            match outcome {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                Ok(Err(error)) => {
                    shared.closed(Closed::Tls);
                    shared.metrics.auth_failure("tls", "handshake");
                    if let Some(held) = shared.tls_log.allow() {
                        warn!(server = shared.server, %peer, %error, held_back = held, "TLS handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    shared.closed(Closed::HandshakeTimeout);
                    debug!(server = shared.server, %peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let _ = tx.send(Ok(ConnIo::new(stream, state, slot))).await;
}
