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

/// Whether `path` is a call anyone may hold open (a health watch, a
/// reflection stream): one that never ends by itself.
fn open_stream(path: &str) -> bool {
    path == "/grpc.health.v1.Health/Watch" || path.starts_with("/grpc.reflection.")
}

/// A tower layer ending the open streams (health watches, reflection) when
/// the server starts draining: they never end by themselves, and would hold
/// the drain until its grace period ran out. Each ends with UNAVAILABLE
/// after what it had to send (a watch's NOT_SERVING first).
#[derive(Clone, Debug)]
pub struct DrainLayer(tokio_util::sync::CancellationToken);

impl DrainLayer {
    /// Ends the open streams once `draining` is cancelled.
    pub fn new(draining: tokio_util::sync::CancellationToken) -> Self {
        Self(draining)
    }
}

impl<S> tower::Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Drain<S> {
        Drain(inner, self.0.clone())
    }
}

/// The service of [`DrainLayer`].
#[derive(Clone, Debug)]
pub struct Drain<S>(S, tokio_util::sync::CancellationToken);

impl<S, B, RB> tower::Service<http::Request<B>> for Drain<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let open = open_stream(request.uri().path());
        let draining = self.1.clone();
        let future = self.0.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| match open {
                true => tonic::body::Body::new(UntilDrain {
                    body,
                    drained: Box::pin(draining.cancelled_owned()),
                    ended: false,
                }),
                false => tonic::body::Body::new(body),
            }))
        })
    }
}

/// An open stream's body, ended by the drain.
struct UntilDrain<B> {
    body: B,
    drained: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl<B> http_body::Body for UntilDrain<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // What the stream has ready goes first (a watch's NOT_SERVING, set
        // before the drain starts).
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.drained.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        trailers.insert(
            "grpc-message",
            http::HeaderValue::from_static("the server is shutting down"),
        );
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }
}
