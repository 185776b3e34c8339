//! What each request to an app cost and answered: counted per app (status
//! classes, a latency histogram, bytes: [`crate::HttpStats`]) for `/metrics`,
//! and written as an access log line when the app keeps one. A request is measured from the
//! moment its app is known until the last byte of its answer has gone (or
//! the client left): its body is wrapped to count what it sends.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use hyper::body::{Body, Frame, SizeHint};

use crate::balance::ServedBy;
use crate::route::AppTraffic;
use crate::upstream::ProxyBody;

/// One request as an access log line has it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRecord {
    /// The app.
    pub app: String,
    /// The method.
    pub method: String,
    /// The path, without its query (which may hold tokens).
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// From the app being known to the answer's last byte.
    pub duration: Duration,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// The client's address (as the trusted proxy said, behind one).
    pub client: IpAddr,
    /// The instance that answered; `None` when the router did (a page of
    /// its own, a static file, a refusal).
    pub instance: Option<String>,
}

/// Where access log lines go (the server stores them with the app's logs).
pub type AccessLog = Arc<dyn Fn(AccessRecord) + Send + Sync>;

/// A request being measured; recorded once, when its answer has gone or
/// when it is dropped unanswered (the client left first: status 499, as
/// nginx logs it).
pub(crate) struct Measure {
    traffic: Arc<AppTraffic>,
    log: Option<(AccessLog, AccessRecord)>,
    started: Instant,
    pending: bool,
}

/// The status recorded for a request whose client left before its answer.
const CLIENT_LEFT: u16 = 499;

impl Measure {
    /// Starts measuring a request to `app`; `log` when it keeps access logs.
    pub(crate) fn start(
        traffic: Arc<AppTraffic>,
        log: Option<AccessLog>,
        app: &str,
        request: &http::Request<hyper::body::Incoming>,
        client: IpAddr,
    ) -> Measure {
        traffic.http.begin();
        Measure {
            traffic,
            log: log.map(|log| {
                let record = AccessRecord {
                    app: app.to_string(),
                    method: request.method().to_string(),
                    path: request.uri().path().to_string(),
                    status: 0,
                    duration: Duration::ZERO,
                    bytes_out: 0,
                    client,
                    instance: None,
                };
                (log, record)
            }),
            started: Instant::now(),
            pending: true,
        }
    }

    /// Records the request: its status and the body bytes sent.
    fn record(&mut self, status: u16, sent: u64) {
        if !std::mem::replace(&mut self.pending, false) {
            return;
        }
        let took = self.started.elapsed();
        self.traffic.http.end();
        self.traffic.http.record(status, took, sent);
        if let Some((log, mut record)) = self.log.take() {
            record.status = status;
            record.duration = took;
            record.bytes_out = sent;
            log(record);
        }
    }

    /// Wraps `response`'s body, so the request is recorded once it is sent.
    pub(crate) fn finish(mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let (parts, body) = response.into_parts();
        if parts
            .extensions
            .get::<crate::edge_rules::EdgeRefusal>()
            .is_some()
        {
            self.log = None;
        }
        if let Some((_, record)) = &mut self.log {
            record.status = parts.status.as_u16();
            record.instance = parts
                .extensions
                .get::<ServedBy>()
                .map(|served| served.0.clone());
        }
        let status = parts.status.as_u16();
        let body = MeasuredBody {
            inner: body,
            sent: 0,
            status,
            measure: Some(self),
        };
        Response::from_parts(parts, ProxyBody::Measured(Box::pin(body)))
    }
}

/// A response body that counts what it sends and records the request
/// when it ends or is dropped.
pub struct MeasuredBody {
    inner: ProxyBody,
    sent: u64,
    status: u16,
    measure: Option<Measure>,
}

impl MeasuredBody {
    fn done(&mut self) {
        if let Some(mut measure) = self.measure.take() {
            measure.record(self.status, self.sent);
        }
    }
}

impl Body for MeasuredBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeasuredBody {
    /// A body hyper never polled (HEAD, 204) or the client left: recorded
    /// with what was sent.
    fn drop(&mut self) {
        self.done();
    }
}

impl Drop for Measure {
    /// Unanswered: the client left while the request was held or the app
    /// was working on it.
    fn drop(&mut self) {
        self.record(CLIENT_LEFT, 0);
    }
}
