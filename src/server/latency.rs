//! The latency histogram of every served call, labelled by RPC.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use crate::metrics::{Metrics, RpcLatencyLabels};

/// Records the latency of every served call.
#[derive(Clone)]
pub(super) struct LatencyLayer {
    pub(super) metrics: Arc<Metrics>,
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
pub(super) struct Latency<S> {
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
