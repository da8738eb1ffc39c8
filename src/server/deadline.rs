//! The server-side deadline of a call, until its response starts: the
//! request timeout, but longer for an inventory import, whose handler reads
//! the whole upload (up to 256 MiB) and writes it before it answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

/// The shortest deadline of an `ImportInventory`: a 150 MB dump over a
/// 20 Mbit/s link takes a minute to arrive, the request timeout's default
/// (it was cancelled then, nothing imported, or committed after the caller
/// was told it failed).
const IMPORT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The calls given [`IMPORT_DEADLINE`] at least.
const LONG_CALLS: [&str; 1] = ["/pxeconf.v1.Admin/ImportInventory"];

/// Ends a call whose response has not started within its deadline with
/// CANCELLED, as tonic's own server timeout does.
#[derive(Clone, Copy)]
pub(super) struct DeadlineLayer {
    /// The deadline of every other call.
    pub(super) timeout: Duration,
}

impl DeadlineLayer {
    /// The deadline of a call to `path`.
    fn deadline(self, path: &str) -> Duration {
        match LONG_CALLS.contains(&path) {
            true => self.timeout.max(IMPORT_DEADLINE),
            false => self.timeout,
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            layer: *self,
        }
    }
}

#[derive(Clone)]
pub(super) struct Deadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S, B, RB> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let ours = self.layer.deadline(request.uri().path());
        // The caller's own, if shorter, as tonic's timeout took it: the
        // handler need not run on once the caller has given up.
        let deadline = caller_deadline(request.headers()).map_or(ours, |theirs| theirs.min(ours));
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(deadline, future).await {
                Ok(result) => result,
                // Dropping the handler ends it, as tonic's timeout does.
                Err(_) => Ok(tonic::Status::cancelled("Timeout expired").into_http()),
            }
        })
    }
}

/// A call's `grpc-timeout` (gRPC over HTTP/2: up to 8 digits and a unit).
fn caller_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_has_the_longer_deadline_and_every_other_call_the_timeout() {
        let layer = DeadlineLayer {
            timeout: Duration::from_secs(60),
        };
        assert_eq!(layer.deadline(LONG_CALLS[0]), IMPORT_DEADLINE);
        assert_eq!(
            layer.deadline("/pxeconf.v1.Admin/SetActionRequests"),
            Duration::from_secs(60)
        );
        let long = DeadlineLayer {
            timeout: Duration::from_secs(7200),
        };
        assert_eq!(long.deadline(LONG_CALLS[0]), Duration::from_secs(7200));
    }

    /// A handler that answers after 10 minutes (paused time): a call past
    /// the timeout ends CANCELLED, an import waits for it.
    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_cancelled_and_an_import_is_not() {
        use tower::ServiceExt;
        let slow = tower::service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
        });
        let layer = DeadlineLayer {
            timeout: Duration::from_secs(60),
        };
        let call = |path: &str| {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            layer.layer(slow).oneshot(request)
        };
        let cut = call("/pxeconf.v1.Admin/SetActionRequests").await.unwrap();
        assert_eq!(cut.headers()["grpc-status"], "1", "CANCELLED");
        let import = call(LONG_CALLS[0]).await.unwrap();
        assert!(import.headers().get("grpc-status").is_none());
        assert_eq!(import.body(), "done");
        // The caller's shorter deadline counts, the import's too.
        let started = tokio::time::Instant::now();
        let request = http::Request::builder()
            .uri(LONG_CALLS[0])
            .header("grpc-timeout", "2S")
            .body(())
            .unwrap();
        let cut = layer.layer(slow).oneshot(request).await.unwrap();
        assert_eq!(cut.headers()["grpc-status"], "1");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn a_callers_grpc_timeout_is_read_as_grpc_writes_it() {
        let read = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            caller_deadline(&headers)
        };
        assert_eq!(read("2S"), Some(Duration::from_secs(2)));
        assert_eq!(read("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(read("3H"), Some(Duration::from_secs(10_800)));
        assert_eq!(read("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["S", "123456789S", "+5S", "5s", "5", "five"] {
            assert_eq!(read(bad), None, "{bad}");
        }
        assert_eq!(caller_deadline(&http::HeaderMap::new()), None);
    }
}
