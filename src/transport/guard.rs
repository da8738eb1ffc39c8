//! A tower layer refusing calls to chosen services that do not come with a
//! verified client certificate (mTLS), before any handler runs. Health and
//! reflection are never chosen: they stay open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::warn;

use super::incoming::ConnInfo;
use super::limits::RateLimited;

/// Requires a client certificate for calls to `services` (full gRPC names).
#[derive(Clone)]
pub struct RequireCertLayer {
    services: Arc<Vec<String>>,
    log: Arc<RateLimited>,
}

impl RequireCertLayer {
    /// Guards `services`; an empty list lets every call through.
    pub fn new(services: &[&str]) -> Self {
        Self {
            services: Arc::new(services.iter().map(|s| format!("/{s}/")).collect()),
            log: Arc::new(RateLimited::default()),
        }
    }
}

impl<S> tower::Layer<S> for RequireCertLayer {
    type Service = RequireCert<S>;

    fn layer(&self, inner: S) -> RequireCert<S> {
        RequireCert {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequireCertLayer`].
#[derive(Clone)]
pub struct RequireCert<S> {
    inner: S,
    layer: RequireCertLayer,
}

impl<S, B> tower::Service<http::Request<B>> for RequireCert<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let guarded = self
            .layer
            .services
            .iter()
            .any(|s| path.starts_with(s.as_str()));
        let info = request.extensions().get::<ConnInfo>();
        if guarded && info.and_then(ConnInfo::peer_cert).is_none() {
            if let Some(held) = self.layer.log.allow() {
                let peer = info.and_then(|i| i.remote_addr);
                warn!(
                    ?peer,
                    path,
                    held_back = held,
                    "call without a client certificate refused"
                );
            }
            let status =
                crate::auth::refused("a client certificate from the client CA is required (mTLS)");
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(self.inner.call(request))
    }
}
