//! What every gRPC server of pxeconf shares: reflection (v1 and v1alpha, so
//! old and new grpcurl both work), the standard health service, a latency
//! histogram per RPC, and serving an already bound listener until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tower::{Layer, Service};
use tracing::{info, warn};

use crate::metrics::{Metrics, RpcLatencyLabels};

/// Adds reflection and health for `services` (full gRPC names) to `routes`
/// and returns the finished route table.
pub async fn with_standard_services(mut routes: RoutesBuilder, services: &[&str]) -> Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in services {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    // Advertise only what this server serves: the descriptor set holds every
    // pxeconf service, and a depot listing Admin would mislead grpcurl users.
    // Each reflection builder adds only its own version's descriptors, but
    // both versions are advertised, so both are registered in both: else a
    // bare `grpcurl describe` fails on the other version's symbol.
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        let mut b = b
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
    routes.routes()
}

/// Serves `routes` on `listener` until `shutdown` completes, then lets calls
/// in flight finish.
pub async fn serve_routes(
    routes: Routes,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(LatencyLayer { metrics })
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Runs `serve` (which stops taking calls when its shutdown future fires)
/// until `signal` completes, then gives calls in flight `grace` to finish.
pub async fn run_with_grace<F>(
    name: &str,
    serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    signal: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(Box::pin(async move {
        let _ = stop_rx.await;
    })));
    tokio::select! {
        result = &mut server => return result.unwrap_or(Ok(())),
        () = signal => {}
    }
    info!(
        server = name,
        grace_secs = grace.as_secs_f64(),
        "shutting down, draining calls in flight"
    );
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.unwrap_or(Ok(())),
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
    pub fn spawn<F>(
        name: &'static str,
        serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
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
        let path = request.uri().path();
        // Only known services get their own series: a client cannot blow up
        // the label cardinality with made-up paths.
        let path = if path.starts_with("/pxeconf.v1.") || path.starts_with("/grpc.") {
            path.to_owned()
        } else {
            "other".to_owned()
        };
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("Ok".to_owned(), |c| {
                        format!("{:?}", tonic::Code::from_i32(c))
                    }),
                Err(_) => "transport_error".to_owned(),
            };
            metrics
                .rpc_latency
                .get_or_create(&RpcLatencyLabels { path, code })
                .observe(start.elapsed().as_secs_f64());
            result
        })
    }
}
