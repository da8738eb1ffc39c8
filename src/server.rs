//! What every gRPC server of pxeconf shares: reflection (v1 and v1alpha, so
//! old and new grpcurl both work), the standard health service, a latency
//! histogram per RPC (and a count of refused callers), serving an already
//! bound listener until shutdown over the transport (TLS, limits) of
//! `crate::transport`, and the supervision of the background tasks a service
//! needs ([`Supervisor`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tracing::{info, warn};

use crate::metrics::{Metrics, ServerLabel};
use crate::transport::limits::MAX_HEADER_LIST;
use crate::transport::{ActivityLayer, RequireCertLayer, Transport};

mod deadline;
mod latency;
mod supervisor;

use deadline::DeadlineLayer;

use latency::LatencyLayer;
pub use supervisor::{Supervisor, TaskFailure, panic_message};

/// The largest request health and reflection take, in bytes. They need no
/// key or certificate, and tonic reserves a message's declared length as
/// soon as its header arrives: at gRPC's usual 4 MiB, one peer's 1,024
/// streams of a connection held 4 GiB until the request timeout. Their
/// requests name a service, symbol or file: well under this.
pub const OPEN_SERVICES_MESSAGE: usize = 16 * 1024;

/// Adds reflection and health for `services` (full gRPC names) to `routes`
/// and returns the finished route table.
pub async fn with_standard_services(routes: RoutesBuilder, services: &[&str]) -> Routes {
    standard_services(routes, services).await.0
}

/// Like [`with_standard_services`], also returning the health of the
/// services (to turn them NOT_SERVING when a critical task fails).
pub async fn standard_services(mut routes: RoutesBuilder, services: &[&str]) -> (Routes, Health) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let health = health.max_decoding_message_size(OPEN_SERVICES_MESSAGE);
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
        .expect("the embedded descriptor set is valid")
        .max_decoding_message_size(OPEN_SERVICES_MESSAGE);
    let v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .expect("the embedded descriptor set is valid")
        .max_decoding_message_size(OPEN_SERVICES_MESSAGE);
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
    // Health says NOT_SERVING first either way: whoever watches it (a load
    // balancer, a monitor) stops sending calls before the drain.
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            _ = supervisor.failed() => {}
        }
        health.not_serving().await;
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
    /// Names (DNS names or IP addresses) one of which that certificate must
    /// carry; empty: any the client CA signed.
    pub peers: Vec<String>,
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
        peers,
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
        let metrics = metrics.clone();
        let expiry = move || {
            metrics
                .tls_certificate_expiry
                .get_or_create(&ServerLabel {
                    server: server.to_owned(),
                })
                .clone()
        };
        tls.spawn_reloader(reloading.clone(), expiry);
    }
    let _stop_reloading = reloading.drop_guard();
    let incoming = crate::transport::incoming(
        server,
        listener,
        transport.tls.clone(),
        limits,
        metrics.clone(),
    );
    // Cancelled when the drain starts: health watches and reflection streams
    // end then instead of holding it for the whole grace period.
    let draining = CancellationToken::new();
    let shutdown = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
        }
    };
    let mut builder = tonic::transport::Server::builder();
    // Only with export on: a span per call (parented on the caller's
    // traceparent) costs nothing when nobody collects it.
    if crate::telemetry::exporting() {
        builder = builder.trace_fn(crate::telemetry::server_span);
    }
    builder
        .max_concurrent_streams(limits.max_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(ActivityLayer::new(draining))
        .layer(LatencyLayer { metrics })
        .layer(RequireCertLayer::new(guarded, &peers))
        // Ours, not tonic's `timeout`: an import needs longer (its
        // handler reads the whole upload before it answers).
        .layer(DeadlineLayer {
            timeout: limits.request_timeout,
        })
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Says at start whether the hop is encrypted, and the limits in force.
fn log_transport(server: &str, addr: Option<std::net::SocketAddr>, transport: &Transport) {
    let limits = transport.limits;
    let addr = addr.map(|a| a.to_string()).unwrap_or_default();
    if transport.serves_tls() {
        let client_ca = transport.tls.as_ref().is_some_and(|t| t.verifies_clients());
        info!(server, %addr, client_certificates = client_ca, client_auth = %transport.client_auth, "gRPC over TLS");
        if let Some(tls) = &transport.tls {
            tls.warn_if_expiring();
        }
    } else {
        warn!(
            server,
            %addr,
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

/// Makes SIGHUP (systemd's `reload`) harmless from now on: with TLS the
/// certificates are read again (`Tls::spawn_reloader`); without it there is
/// nothing to reload. Its default action ended the process — a plaintext
/// server at any time, any server still starting.
pub fn keep_running_on_hangup() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    info!(
                        "SIGHUP: TLS certificates, if configured, are read again; nothing else reloads"
                    );
                }
            });
        }
        Err(error) => warn!(%error, "cannot listen for SIGHUP; a reload would stop the server"),
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
