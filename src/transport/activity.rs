//! A tower layer following each call from its start until its response body
//! is done: the connection counts as busy meanwhile, so that the idle
//! deadline of `incoming` spares calls in flight, streaming ones included;
//! and the calls anyone may hold open (health watches, reflection streams),
//! which never end by themselves, end when the server starts draining.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::incoming::ConnInfo;

/// A tower layer marking a connection busy from a request's start until its
/// response body is done, and ending open streams when `draining` is
/// cancelled (else they would hold the drain until its grace period ran
/// out): each ends with UNAVAILABLE after what it had to send (a watch's
/// NOT_SERVING first).
#[derive(Clone, Debug)]
pub struct ActivityLayer {
    draining: CancellationToken,
}

impl ActivityLayer {
    /// Follows calls; open streams end once `draining` is cancelled.
    pub fn new(draining: CancellationToken) -> Self {
        Self { draining }
    }
}

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity(inner, self.draining.clone())
    }
}

/// The service of [`ActivityLayer`].
#[derive(Clone, Debug)]
pub struct Activity<S>(S, CancellationToken);

/// Whether `path` is a call anyone may hold open (a health watch, a
/// reflection stream): one that never ends by itself.
fn open_stream(path: &str) -> bool {
    path == "/grpc.health.v1.Health/Watch" || path.starts_with("/grpc.reflection.")
}

impl<S, B, RB> tower::Service<http::Request<B>> for Activity<S>
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
        use http_body_util::BodyExt;
        let guard = request
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.state.enter());
        let drained =
            open_stream(request.uri().path()).then(|| Box::pin(self.1.clone().cancelled_owned()));
        let future = self.0.call(request);
        Box::pin(async move {
            let response = future.await?;
            // The closure owns the guard: it lives as long as the body.
            Ok(response.map(|body| {
                let body = UntilDrain {
                    body,
                    drained,
                    ended: false,
                };
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        })
    }
}

/// A response body, ended by the drain if `drained` is set.
struct UntilDrain<B> {
    body: B,
    drained: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
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
        let drained = match self.drained.as_mut() {
            Some(drained) => drained.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if !drained {
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

    // A body already at its end has nothing left for the drain to end: a
    // trailers-only answer (an error, a watch of an unknown service) must
    // keep its END_STREAM on the headers.
    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
