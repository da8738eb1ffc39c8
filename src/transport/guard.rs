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
    peers: Arc<Vec<String>>,
    log: Arc<RateLimited>,
}

impl RequireCertLayer {
    /// Guards `services`; an empty list lets every call through. With
    /// `peers` the certificate must name one of them (a DNS name or an IP
    /// address): the client CA signs every server's certificate, and one
    /// depot's must not let it call another.
    pub fn new(services: &[&str], peers: &[String]) -> Self {
        Self {
            services: Arc::new(services.iter().map(|s| format!("/{s}/")).collect()),
            peers: Arc::new(peers.to_vec()),
            log: Arc::new(RateLimited::default()),
        }
    }

    /// Why a call to a guarded service is refused, if it is.
    fn refusal(&self, cert: Option<&rustls_pki_types::CertificateDer<'static>>) -> Option<String> {
        let Some(cert) = cert else {
            return Some("a client certificate from the client CA is required (mTLS)".into());
        };
        let named = self.peers.is_empty()
            || self
                .peers
                .iter()
                .any(|peer| super::tls::cert_names(cert, peer));
        // The names stay out of the answer: the caller need not learn them.
        (!named)
            .then(|| "the client certificate names none of the callers this server takes".into())
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
        let refusal = guarded
            .then(|| self.layer.refusal(info.and_then(ConnInfo::peer_cert)))
            .flatten();
        if let Some(why) = refusal {
            if let Some(held) = self.layer.log.allow() {
                let peer = info.and_then(|i| i.remote_addr);
                warn!(?peer, path, held_back = held, %why, "call refused");
            }
            let status =
                crate::status::Problem::new(crate::status::Reason::Unauthenticated, why.as_str())
                    .into_status();
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(self.inner.call(request))
    }
}
