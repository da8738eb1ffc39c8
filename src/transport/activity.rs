//! A tower layer marking a connection busy from a request's start until its
//! response body is done, so that the idle deadline of `incoming` spares
//! calls in flight, streaming ones included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::incoming::ConnInfo;

/// A tower layer marking a connection busy from a request's start until its
/// response body is done, so that the idle deadline spares streaming calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityLayer;

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity(inner)
    }
}

/// The service of [`ActivityLayer`].
#[derive(Clone, Debug)]
pub struct Activity<S>(S);

impl<S, B, RB> tower::Service<http::Request<B>> for Activity<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use http_body_util::BodyExt;
        let guard = request
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.state.enter());
        let future = self.0.call(request);
        Box::pin(async move {
            let response = future.await?;
            // The closure owns the guard: it lives as long as the body.
            Ok(response.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        })
    }
}
