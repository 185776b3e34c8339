//! API failures and the one place their status codes are chosen.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_proto::ApiError;
use berth_store::StoreError;

/// An API failure; the status code is chosen here and nowhere else.
#[derive(Debug)]
pub enum ApiFailure {
    /// 400.
    BadRequest(String),
    /// 401.
    Unauthorized,
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 413.
    TooLarge(String),
    /// 507: the data dir's disk is short of berth's reserve.
    InsufficientStorage(String),
    /// 421: the request names another host (this one).
    MisdirectedHost(String),
    /// 500.
    Internal(String),
}

impl From<StoreError> for ApiFailure {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiFailure::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => ApiFailure::Conflict(message),
            other => {
                let source = std::error::Error::source(&other)
                    .map(|source| format!(": {source}"))
                    .unwrap_or_default();
                ApiFailure::Internal(format!("{other}{source}"))
            }
        }
    }
}

impl From<crate::jobs::JobError> for ApiFailure {
    fn from(err: crate::jobs::JobError) -> Self {
        match err {
            crate::jobs::JobError::NotFound(message) => ApiFailure::NotFound(message),
            crate::jobs::JobError::Invalid(message) => ApiFailure::BadRequest(message),
            crate::jobs::JobError::Store(err) => err.into(),
        }
    }
}

impl From<crate::services::ResourcesError> for ApiFailure {
    fn from(err: crate::services::ResourcesError) -> Self {
        use crate::services::ResourcesError;
        match err {
            ResourcesError::NotFound(message) => ApiFailure::NotFound(message),
            ResourcesError::Invalid(message) => ApiFailure::Conflict(message),
            ResourcesError::Store(err) => err.into(),
            other => ApiFailure::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiFailure::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message),
            ApiFailure::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong token; the CLI reads it from the server's data dir, or pass --token".into(),
            ),
            ApiFailure::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiFailure::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
            ApiFailure::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
            ApiFailure::InsufficientStorage(message) => {
                (StatusCode::INSUFFICIENT_STORAGE, "disk_full", message)
            }
            ApiFailure::MisdirectedHost(host) => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                format!("berth's API answers requests to this machine's addresses and localhost, not to `{host}`"),
            ),
            ApiFailure::Internal(message) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        };
        (
            status,
            Json(ApiError {
                code: code.into(),
                message,
            }),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiFailure>;
