//! Before the data dir's disk is full (see [`crate::disk::DiskReserve`]),
//! requests that would write (deploys, new releases, apps, backups) are
//! refused with the reason — 507 — while reading and deleting (which frees
//! room) keep working.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiFailure;
use super::state::ApiState;

/// Refuses a writing request (any method but GET, HEAD and DELETE) while
/// the disk is short of the reserve.
pub(super) async fn refuse_writes_when_full(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let reads_or_frees = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    );
    if !reads_or_frees {
        state
            .disk
            .check()
            .map_err(ApiFailure::InsufficientStorage)?;
    }
    Ok(next.run(request).await)
}
