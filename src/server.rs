//! What every gRPC server of pxeconf shares: reflection (v1 and v1alpha, so
//! old and new grpcurl both work), the standard health service, a latency
//! histogram per RPC (and a count of refused callers), serving an already
//! bound listener until shutdown over the transport (TLS, limits) of
//! `crate::transport`, and the supervision of the background tasks a service
//! needs ([`Supervisor`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tower::{Layer, Service};
use tracing::{info, warn};

use crate::metrics::{Metrics, RpcLatencyLabels};
use crate::transport::limits::MAX_HEADER_LIST;
use crate::transport::{ActivityLayer, RequireCertLayer, Transport};

/// Adds reflection and health for `services` (full gRPC names) to `routes`
/// and returns the finished route table.
pub async fn with_standard_services(routes: RoutesBuilder, services: &[&str]) -> Routes {
    standard_services(routes, services).await.0
}

/// Like [`with_standard_services`], also returning the health of the
/// services (to turn them NOT_SERVING when a critical task fails).
pub async fn standard_services(mut routes: RoutesBuilder, services: &[&str]) -> (Routes, Health) {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in services {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let handle = Health {
        reporter,
        services: services.iter().map(|s| s.to_string()).collect(),
    };
    // Advertise only what this server serves: the descriptor set holds every
    // pxeconf service, and a depot listing Admin would mislead grpcurl users.
    // Each reflection builder adds only its own version's descriptors, but
    // both versions are advertised, so both are registered in both: else a
    // bare `grpcurl describe` fails on the other version's symbol.
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        let mut b = b
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The google.rpc error details (ErrorInfo, BadRequest, …), so that
            // grpcurl -format-error decodes them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for name in services {
            b = b.with_service_name(*name);
        }
        b
    };
    let v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");
    routes
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    (routes.routes(), handle)
}

/// The health of a server's services.
#[derive(Clone)]
pub struct Health {
    reporter: tonic_health::server::HealthReporter,
    services: Vec<String>,
}

impl Health {
    /// Every service, and the server as a whole, NOT_SERVING.
    pub async fn not_serving(&self) {
        use tonic_health::ServingStatus::NotServing;
        for name in self.services.iter().map(String::as_str).chain([""]) {
            self.reporter.set_service_status(name, NotServing).await;
        }
    }
}

/// How long a server that lost a critical task keeps answering (health
/// NOT_SERVING, calls in flight) before it exits.
pub const FAILED_DRAIN: Duration = Duration::from_secs(3);

/// Why serving ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// A task the service needs ended or panicked.
    #[error("{0}")]
    TaskFailed(TaskFailure),
    /// The server task itself panicked.
    #[error("the server panicked: {0}")]
    Panicked(String),
}

/// Serves `routes` until `shutdown`, or until a task of `supervisor` fails:
/// then health goes NOT_SERVING, calls in flight get [`FAILED_DRAIN`], and
/// the failure is returned (the process exits ≠ 0).
pub async fn serve_supervised(
    routes: Routes,
    health: Health,
    listener: TcpListener,
    options: ServeOptions,
    supervisor: &Supervisor,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            _ = supervisor.failed() => health.not_serving().await,
        }
    };
    let serving = serve_routes(routes, listener, options, stop);
    tokio::pin!(serving);
    // After a failure the drain is bounded: a watch stream never ends.
    let result = tokio::select! {
        result = &mut serving => result,
        () = async {
            supervisor.failed().await;
            tokio::time::sleep(FAILED_DRAIN).await;
        } => Ok(()),
    };
    supervisor.shutdown();
    if let Some(failure) = supervisor.failure() {
        return Err(ServeError::TaskFailed(failure));
    }
    Ok(result?)
}

/// How a server is served: its role (for logs and metrics labels), its
/// transport (TLS, limits) and the metrics registry.
#[derive(Clone)]
pub struct ServeOptions {
    /// `depot` or `configserver`.
    pub server: &'static str,
    /// TLS and connection limits.
    pub transport: Transport,
    /// Where latency, connection and auth-failure series go.
    pub metrics: Arc<Metrics>,
    /// Services (full gRPC names) whose calls need a verified client
    /// certificate when the transport's `client_auth` asks for one.
    pub guarded: &'static [&'static str],
}

/// Serves `routes` on `listener` until `shutdown` completes, then lets calls
/// in flight finish. TLS when the transport has a server certificate
/// (reloaded on SIGHUP or file change meanwhile), else plaintext, which the
/// log says at start.
pub async fn serve_routes(
    routes: Routes,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let ServeOptions {
        server,
        transport,
        metrics,
        guarded,
    } = options;
    let guarded = if transport.client_auth.needs_cert() {
        guarded
    } else {
        &[]
    };
    let limits = transport.limits;
    log_transport(server, listener.local_addr().ok(), &transport);
    let reloading = CancellationToken::new();
    if let Some(tls) = &transport.tls {
        tls.spawn_reloader(reloading.clone());
    }
    let _stop_reloading = reloading.drop_guard();
    let incoming = crate::transport::incoming(
        server,
        listener,
        transport.tls.clone(),
        limits,
        metrics.clone(),
    );
    let mut builder = tonic::transport::Server::builder();
    // Only with export on: a span per call (parented on the caller's
    // traceparent) costs nothing when nobody collects it.
    if crate::telemetry::exporting() {
        builder = builder.trace_fn(crate::telemetry::server_span);
    }
    builder
        .timeout(limits.request_timeout)
        .max_concurrent_streams(limits.max_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(ActivityLayer)
        .layer(LatencyLayer { metrics })
        .layer(RequireCertLayer::new(guarded))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Says at start whether the hop is encrypted, and the limits in force.
fn log_transport(server: &str, addr: Option<std::net::SocketAddr>, transport: &Transport) {
    let limits = transport.limits;
    if transport.serves_tls() {
        let client_ca = transport.tls.as_ref().is_some_and(|t| t.verifies_clients());
        info!(server, ?addr, client_certificates = client_ca, client_auth = %transport.client_auth, "gRPC over TLS");
    } else {
        warn!(
            server,
            ?addr,
            "plaintext gRPC: this hop is unencrypted (set tls_cert and tls_key)"
        );
    }
    info!(
        server,
        max_connections = limits.effective_connections(),
        handshake_timeout_secs = limits.handshake_timeout.as_secs_f64(),
        idle_timeout_secs = limits.idle_timeout.as_secs_f64(),
        max_streams = limits.max_streams,
        request_timeout_secs = limits.request_timeout.as_secs_f64(),
        "connection limits"
    );
}

/// Runs `serve` (which stops taking calls when its shutdown future fires)
/// until `signal` completes, then gives calls in flight `grace` to finish.
/// A server that panics or fails is an error (the process exits ≠ 0).
pub async fn run_with_grace<F, E>(
    name: &str,
    serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    signal: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<ServeError> + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(Box::pin(async move {
        let _ = stop_rx.await;
    })));
    let joined = |result: Result<Result<(), E>, tokio::task::JoinError>| match result {
        Ok(result) => result.map_err(Into::into),
        Err(join) => Err(ServeError::Panicked(join.to_string())),
    };
    tokio::select! {
        result = &mut server => return joined(result),
        () = signal => {}
    }
    info!(
        server = name,
        grace_secs = grace.as_secs_f64(),
        "shutting down, draining calls in flight"
    );
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => joined(result),
        Err(_) => {
            warn!(
                server = name,
                "grace period ran out; dropping the calls still in flight"
            );
            server.abort();
            Ok(())
        }
    }
}

/// A server serving in the background until `stop` (demo, load test, tests).
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Spawns `serve`, handing it the future that completes on `stop`.
    pub fn spawn<F, E>(
        name: &'static str,
        serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = serve(Box::pin(async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move {
            if let Err(error) = serving.await {
                warn!(server = name, %error, "server failed");
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving (calls in flight finish) and waits until it is down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered now, not on the first poll: a SIGTERM that arrives while
    // the server is still starting must start the drain, not kill the
    // process with the default action.
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                warn!(%error, "cannot listen for SIGTERM/SIGINT; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A task that ended when it should not have, and why.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The task's name.
    pub task: String,
    /// Why it ended: its error, "ended", or its panic message.
    pub cause: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} failed: {}", self.task, self.cause)
    }
}

/// The background tasks a service needs (writer, watcher, reporter,
/// dispatcher workers, ack writers). A task that panics, returns an error,
/// or — if critical — ends before [`Supervisor::shutdown`] is a failure: it
/// is logged, and the server serving with [`serve_supervised`] goes
/// NOT_SERVING and exits ≠ 0, so that systemd restarts it. Transient
/// trouble (a busy database, a peer away) is retried inside the tasks.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<SupervisorState>,
}

#[derive(Default)]
struct SupervisorState {
    failed: tokio_util::sync::CancellationToken,
    first: std::sync::Mutex<Option<TaskFailure>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl Supervisor {
    /// A supervisor with no task yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a task that must run until shutdown: its end before then is a
    /// failure, as are its error and its panic.
    pub fn spawn_critical<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.spawn(name.into(), task, true);
    }

    /// Spawns a task that may end on its own; its error or panic is a
    /// failure.
    pub fn spawn_worker<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.spawn(name.into(), task, false);
    }

    fn spawn<F>(&self, name: String, task: F, critical: bool)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        use futures::FutureExt;
        let supervisor = self.clone();
        tokio::spawn(async move {
            let ended = std::panic::AssertUnwindSafe(task).catch_unwind().await;
            let cause = match ended {
                Ok(Ok(())) if !critical => return,
                Ok(Ok(())) => "ended".to_owned(),
                Ok(Err(error)) => error,
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
            };
            supervisor.fail(TaskFailure { task: name, cause });
        });
    }

    /// Records a failure (unless shutting down); the first one counts.
    pub fn fail(&self, failure: TaskFailure) {
        if self.is_shutting_down() {
            return;
        }
        tracing::error!(task = %failure.task, cause = %failure.cause, "a task the service needs failed; health goes NOT_SERVING and the process exits");
        let mut first = self.inner.first.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(failure);
        self.inner.failed.cancel();
    }

    /// The service is stopping: tasks ending from now on are no failure.
    pub fn shutdown(&self) {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the service is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes when a task has failed.
    pub async fn failed(&self) {
        self.inner.failed.cancelled().await;
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.inner
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A panic's message, if it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Records the latency of every served call.
#[derive(Clone)]
struct LatencyLayer {
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for LatencyLayer {
    type Service = Latency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Latency {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
struct Latency<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<http::Request<B>> for Latency<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Only the RPCs pxeconf serves get their own series: a caller
        // cannot blow up the label set with made-up paths.
        let path = crate::metrics::rpc_label(request.uri().path()).to_owned();
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let status = match &result {
                Ok(response) => Some(
                    response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                ),
                Err(_) => None,
            };
            let code = status.map_or("transport_error".to_owned(), |c| format!("{c:?}"));
            let refused = match status {
                Some(tonic::Code::Unauthenticated) => Some("unauthenticated"),
                Some(tonic::Code::PermissionDenied) => Some("permission_denied"),
                _ => None,
            };
            if let Some(reason) = refused {
                metrics.auth_failure(crate::metrics::service_label(&path), reason);
            }
            metrics
                .rpc_latency
                .get_or_create(&RpcLatencyLabels { path, code })
                .observe(start.elapsed().as_secs_f64());
            result
        })
    }
}
