//! What the client does when a `Subscribe` stream ends or cannot be opened: the one place that
//! reads status codes.

use tonic::Code;

/// The client's answer to a status that ended (or refused) a subscription stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: reconnect (after the backoff) and resume from the last event id.
    Reconnect,
    /// The token was refused (expired, most likely): ask the token provider for a new one,
    /// then reconnect. Retrying the stale token could never succeed.
    RenewToken,
    /// Retrying cannot help, or must not happen: surface the error and end the stream.
    Fail,
}

/// The disposition of a status code on `Subscribe`.
pub fn on_status(code: Code) -> Disposition {
    match code {
        // Shutdown, transport failures (tonic reports them as UNAVAILABLE, UNKNOWN or
        // INTERNAL), a slow consumer (the server asks us to resume from the store), deadlines,
        // and cancellations by a proxy on the way.
        Code::Ok
        | Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => Disposition::Reconnect,
        Code::Unauthenticated => Disposition::RenewToken,
        // ABORTED: the session was resumed on another stream; reconnecting would take it back
        // and two clients would fight over one session. The rest are the request's own fault
        // (bad id, bad channel, refused ticket) or a server that cannot serve it at all.
        Code::Aborted
        | Code::InvalidArgument
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss => Disposition::Fail,
    }
}

/// Whether a failed `Invoke` may be sent again (when the caller asked for retries): only when
/// the server did not get to run it, or says it is going away.
pub fn invoke_is_retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_table() {
        use Disposition::*;
        let table = [
            (Code::Ok, Reconnect),
            (Code::Unavailable, Reconnect),
            (Code::ResourceExhausted, Reconnect),
            (Code::DeadlineExceeded, Reconnect),
            (Code::Internal, Reconnect),
            (Code::Unknown, Reconnect),
            (Code::Cancelled, Reconnect),
            (Code::Unauthenticated, RenewToken),
            (Code::Aborted, Fail),
            (Code::InvalidArgument, Fail),
            (Code::PermissionDenied, Fail),
            (Code::FailedPrecondition, Fail),
            (Code::NotFound, Fail),
            (Code::AlreadyExists, Fail),
            (Code::OutOfRange, Fail),
            (Code::Unimplemented, Fail),
            (Code::DataLoss, Fail),
        ];
        for (code, disposition) in table {
            assert_eq!(on_status(code), disposition, "{code:?}");
        }
    }

    #[test]
    fn only_unavailable_invokes_are_retried() {
        assert!(invoke_is_retryable(Code::Unavailable));
        for code in [
            Code::Unknown,
            Code::Internal,
            Code::DeadlineExceeded,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
        ] {
            assert!(!invoke_is_retryable(code), "{code:?}");
        }
    }
}
