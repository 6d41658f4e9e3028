//! How errors become gRPC statuses, and how a client reads them back.
//!
//! Every rejection says what the agent should do next. The code is chosen so that
//! "retry the same envelope later" is decidable from the code alone ([`is_retryable`]);
//! the metadata adds machine-readable detail.
//!
//! | Cause | Code | Metadata | Retry? |
//! |---|---|---|---|
//! | protobuf that does not decode, bad envelope fields, unsupported envelope version | `INVALID_ARGUMENT` | reason `MALFORMED` / `UNSUPPORTED_VERSION` | no |
//! | message over tonic's decoding limit, payload over the size cap | `OUT_OF_RANGE` | reason `TOO_LARGE` (size cap only) | no: split the batch |
//! | unknown agent, unknown key, key outside its validity, bad tag | `UNAUTHENTICATED`, one message for all | reason `UNAUTHENTICATED` | no |
//! | mTLS client certificate not issued for the envelope's agent id | `PERMISSION_DENIED` | reason `UNAUTHENTICATED` | no |
//! | envelope signed too far from the server's clock | `FAILED_PRECONDITION` | reason `CLOCK_SKEW`, `sentra-server-time-ms` | after re-signing with a corrected clock |
//! | per-agent rate limit | `RESOURCE_EXHAUSTED` | reason `RATE_LIMITED`, `sentra-retry-after-ms` | yes, after the hint |
//! | the client's address or connection used up its budget of failed authentications | `RESOURCE_EXHAUSTED` | reason `RATE_LIMITED`, `sentra-retry-after-ms` | yes, after the hint |
//! | global concurrency limit (load shed), tonic's per-connection shed | `RESOURCE_EXHAUSTED` | `sentra-retry-after-ms` | yes, with backoff |
//! | request timeout (this crate's layer) | `DEADLINE_EXCEEDED` | — | yes |
//! | tonic's whole-request backstop timeout (slow bodies) | `CANCELLED` | — | yes |
//! | inner service error (storage or bus down), unknown errors | `UNAVAILABLE`, generic message | — | yes |
//! | a `tonic::Status` returned by an inner service or layer | unchanged | unchanged | by code |
//! | `FetchDesiredState` without a desired-state service | `UNIMPLEMENTED` | — | no |
//!
//! Messages never carry key material, tags or the string-to-sign, and all authentication
//! failures share one status and message, so a client cannot enumerate agents or keys.
//! Rejections the inner service decides itself (replay, seq conflict, invalid batch) are not
//! errors: they come back as an `Ack` with status `REJECTED` and a reason.
//!
//! An inner service that wants a specific status for an error returns a `tonic::Status` or a
//! `sentra_core::Error` (directly, or anywhere in the error's `source()` chain); everything
//! else is treated as a backend failure (`UNAVAILABLE`, retryable).

use std::time::Duration;

use sentra_core::{UnixMillis, proto::RejectReason};
use tonic::{Code, Status, metadata::MetadataValue};

use crate::{BoxError, timeout};
#[cfg(feature = "server")]
use crate::{auth, concurrency, rate_limit, size_limit};

/// Metadata key holding the machine-readable [`RejectReason`], e.g. `REJECT_REASON_CLOCK_SKEW`.
pub const REJECT_REASON_KEY: &str = "sentra-reject-reason";
/// Metadata key holding the server's wall clock (Unix ms) on clock-skew rejections.
pub const SERVER_TIME_KEY: &str = "sentra-server-time-ms";
/// Metadata key holding how long to wait before retrying, in milliseconds.
pub const RETRY_AFTER_KEY: &str = "sentra-retry-after-ms";

/// Retry hint sent with load-shedding rejections.
pub const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Whether a call that failed with `code` may be sent again unchanged.
///
/// Yes for `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `ABORTED`,
/// `CANCELLED` and `UNKNOWN` (h2 resets and broken connections surface as the last two);
/// pushes are idempotent because the server de-duplicates by `(agent_id, seq)`. No for
/// everything that a resend cannot fix.
#[must_use]
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

/// Reads `sentra-reject-reason`; falls back to `TOO_LARGE` for a bare `OUT_OF_RANGE`
/// (tonic's own decoding limit cannot attach metadata).
#[must_use]
pub fn reject_reason(status: &Status) -> Option<RejectReason> {
    let from_meta = status
        .metadata()
        .get(REJECT_REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(RejectReason::from_str_name);
    from_meta.or_else(|| (status.code() == Code::OutOfRange).then_some(RejectReason::TooLarge))
}

/// Reads `sentra-server-time-ms`.
#[must_use]
pub fn server_time(status: &Status) -> Option<UnixMillis> {
    status
        .metadata()
        .get(SERVER_TIME_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .map(UnixMillis::from_millis)
}

/// Reads `sentra-retry-after-ms`.
#[must_use]
pub fn retry_after(status: &Status) -> Option<Duration> {
    status
        .metadata()
        .get(RETRY_AFTER_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Attaches `sentra-reject-reason`.
#[must_use]
pub fn with_reason(mut status: Status, reason: RejectReason) -> Status {
    status.metadata_mut().insert(
        REJECT_REASON_KEY,
        MetadataValue::from_static(reason.as_str_name()),
    );
    status
}

fn with_number(mut status: Status, key: &'static str, n: i128) -> Status {
    if let Ok(v) = n.to_string().parse() {
        status.metadata_mut().insert(key, v);
    }
    status
}

#[cfg(feature = "server")]
fn with_retry_after(status: Status, after: Duration) -> Status {
    with_number(status, RETRY_AFTER_KEY, after.as_millis().max(1) as i128)
}

/// Maps an error of the server stack (or of an inner service) to the status sent to the
/// agent, following the table in the [module docs](self). Unknown errors become
/// `UNAVAILABLE` with a generic message; their text is logged, never sent.
#[must_use]
pub fn to_status(err: BoxError) -> Status {
    match try_to_status(err) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "inner service failed; answering UNAVAILABLE");
            Status::unavailable("ingest backend unavailable, retry later")
        }
    }
}

/// Like [`to_status`] but hands back errors it does not know.
///
/// # Errors
///
/// The original error if neither it nor its source chain holds a known error type.
pub fn try_to_status(err: BoxError) -> Result<Status, BoxError> {
    if let Some(s) = known(&*err) {
        return Ok(s);
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(s) = known(e) {
            return Ok(s);
        }
        source = e.source();
    }
    Err(err)
}

/// The code [`to_status`] would give `err`, without consuming it.
#[must_use]
pub fn code_of(err: &(dyn std::error::Error + 'static)) -> Code {
    try_view(err).map_or(Code::Unavailable, |s| s.code())
}

/// The status a known error (or one in its source chain) maps to.
pub(crate) fn try_view(err: &(dyn std::error::Error + 'static)) -> Option<Status> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(s) = known(e) {
            return Some(s);
        }
        cur = e.source();
    }
    None
}

/// `snake_case` name of a code, for metric labels.
#[must_use]
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

fn known(err: &(dyn std::error::Error + 'static)) -> Option<Status> {
    if let Some(s) = err.downcast_ref::<Status>() {
        return Some(s.clone());
    }
    #[cfg(feature = "server")]
    if let Some(s) = known_server(err) {
        return Some(s);
    }
    if err.is::<timeout::Elapsed>() {
        return Some(Status::deadline_exceeded("request timed out"));
    }
    if err.is::<tonic::TimeoutExpired>() {
        return Some(Status::cancelled("request timed out"));
    }
    if let Some(e) = err.downcast_ref::<sentra_core::Error>() {
        return Some(core_status(e, None));
    }
    None
}

/// The server layers' errors.
#[cfg(feature = "server")]
fn known_server(err: &(dyn std::error::Error + 'static)) -> Option<Status> {
    if let Some(e) = err.downcast_ref::<auth::AuthError>() {
        return Some(auth_status(e));
    }
    if let Some(e) = err.downcast_ref::<rate_limit::RateLimited>() {
        let s = Status::resource_exhausted("rate limit exceeded for this agent, retry later");
        return Some(with_retry_after(
            with_reason(s, RejectReason::RateLimited),
            e.retry_after(),
        ));
    }
    if let Some(e) = err.downcast_ref::<rate_limit::SourceLimited>() {
        let s = Status::resource_exhausted(
            "too many failed authentications from this address, retry later",
        );
        return Some(with_retry_after(
            with_reason(s, RejectReason::RateLimited),
            e.retry_after(),
        ));
    }
    if err.is::<concurrency::Overloaded>() {
        let s = Status::resource_exhausted("server overloaded, retry later");
        return Some(with_retry_after(s, SHED_RETRY_AFTER));
    }
    if let Some(e) = err.downcast_ref::<size_limit::PayloadTooLarge>() {
        return Some(with_reason(
            Status::out_of_range(e.to_string()),
            RejectReason::TooLarge,
        ));
    }
    None
}

#[cfg(feature = "server")]
fn auth_status(e: &auth::AuthError) -> Status {
    if e.is_identity_mismatch() {
        return with_reason(
            Status::permission_denied("client certificate does not match the agent"),
            RejectReason::Unauthenticated,
        );
    }
    core_status(e.core(), Some(e.server_time()))
}

/// Status for a `sentra-core` verification or decoding error.
fn core_status(e: &sentra_core::Error, now: Option<UnixMillis>) -> Status {
    let reason = e.reject_reason();
    let status = match reason {
        RejectReason::Unauthenticated => Status::unauthenticated("unauthenticated"),
        RejectReason::ClockSkew => {
            let s = Status::failed_precondition(
                "envelope signing time outside the allowed clock skew; see sentra-server-time-ms",
            );
            let now = now.unwrap_or_else(UnixMillis::now);
            with_number(s, SERVER_TIME_KEY, i128::from(now.as_millis()))
        }
        RejectReason::TooLarge => Status::out_of_range(e.to_string()),
        RejectReason::UnsupportedVersion => Status::invalid_argument(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    };
    with_reason(status, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_errors_are_unavailable_and_generic() {
        let s = to_status("disk on fire at /var/lib/secret".into());
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!s.message().contains("secret"));
        assert!(is_retryable(s.code()));
    }

    #[test]
    fn statuses_pass_through_even_nested() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrap(#[source] Status);
        let s = to_status(Box::new(Wrap(Status::not_found("x"))));
        assert_eq!(s.code(), Code::NotFound);
    }

    #[test]
    #[cfg(feature = "server")]
    fn rate_limit_carries_hint_and_reason() {
        let s = to_status(Box::new(rate_limit::RateLimited::new(
            Duration::from_millis(250),
        )));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(retry_after(&s), Some(Duration::from_millis(250)));
        assert_eq!(reject_reason(&s), Some(RejectReason::RateLimited));
    }

    #[test]
    #[cfg(feature = "server")]
    fn too_large_and_timeouts() {
        let s = to_status(Box::new(size_limit::PayloadTooLarge::new(10, 5)));
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(reject_reason(&s), Some(RejectReason::TooLarge));
        assert!(!is_retryable(s.code()));
        assert_eq!(
            reject_reason(&Status::out_of_range("x")),
            Some(RejectReason::TooLarge)
        );
        let s = to_status(Box::new(timeout::Elapsed::new()));
        assert_eq!(s.code(), Code::DeadlineExceeded);
        let s = to_status(Box::new(concurrency::Overloaded::new()));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(retry_after(&s).is_some());
    }

    #[test]
    fn core_errors_map_by_reason() {
        let s = to_status(Box::new(sentra_core::Error::BadTag));
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), "unauthenticated");
        let s = to_status(Box::new(sentra_core::Error::ClockSkew {
            skew_ms: 1,
            limit_ms: 0,
        }));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(server_time(&s).is_some());
        assert_eq!(reject_reason(&s), Some(RejectReason::ClockSkew));
    }
}
