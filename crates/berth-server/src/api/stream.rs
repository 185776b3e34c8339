//! Streamed answers: one JSON document a line (NDJSON), for progress the
//! CLI shows as it happens.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;

pub(super) fn ndjson<T: Serialize + Send + 'static>(
    receiver: mpsc::UnboundedReceiver<T>,
) -> Response {
    ndjson_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ))
}

/// The items of `items` as NDJSON, each made only when the client has
/// read the one before: a slow reader holds nothing but the stream.
pub(super) fn ndjson_stream<T: Serialize + Send + 'static>(
    items: impl futures_util::Stream<Item = T> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let stream = items.map(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}
