//! Every domain error of the service, and the one place that maps them to gRPC status codes.

use tonic::{Code, Status};

use crate::{
    event::MalformedEventId,
    session::{InvalidTicket, RefreshError, SessionNotFound},
    store::StoreError,
    token::TokenError,
};

/// What a call can fail with; the services return these and convert at the edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token was refused (`UNAUTHENTICATED`).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The session ticket was refused (`UNAUTHENTICATED`).
    #[error(transparent)]
    Ticket(#[from] InvalidTicket),
    /// An event id that does not parse (`INVALID_ARGUMENT`).
    #[error(transparent)]
    EventId(#[from] MalformedEventId),
    /// The request is malformed or over a limit (`INVALID_ARGUMENT`); says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// `path[0]` is not in the token's `rpc` (`PERMISSION_DENIED`).
    #[error("Method \"{0}\" is not allowed.")]
    MethodNotAllowed(String),
    #[error("channel {channel:?} has no method {}", path.join("."))]
    /// The channel's object has no method at this path (`NOT_FOUND`).
    MethodNotFound {
        /// The channel called.
        channel: String,
        /// The path called.
        path: Vec<String>,
    },
    /// A channel object's method failed with a code of its choosing.
    #[error(transparent)]
    Method(#[from] MethodError),
    /// A refresh that cannot apply in place (`FAILED_PRECONDITION`): reconnect instead.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// The server has no API key, so the admin service refuses every call (`PERMISSION_DENIED`).
    #[error("the admin API is disabled: the server has no API key configured (--api-key)")]
    AdminDisabled,
    /// The admin call did not present the API key (`UNAUTHENTICATED`).
    #[error("missing or wrong API key (send `authorization: Bearer <key>`)")]
    AdminUnauthenticated,
    /// The store failed (`UNAVAILABLE`) or found corrupt data (`DATA_LOSS`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The subscriber's queue overflowed (`RESOURCE_EXHAUSTED`): resume from the last id.
    #[error("slow consumer, resume from last id")]
    SlowConsumer,
    /// The session subscribed again on another stream (`ABORTED`).
    #[error("session resumed on another stream")]
    Superseded,
    /// The server API disconnected the session (`PERMISSION_DENIED`): clients do not
    /// reconnect.
    #[error("disconnected by the server")]
    Disconnected,
    /// The session's ticket was revoked by the server API (`PERMISSION_DENIED`).
    #[error("disconnected by the server: the session was revoked")]
    Revoked,
    /// The server API named a session that is not live on the channel (`NOT_FOUND`).
    #[error(transparent)]
    SessionNotFound(#[from] SessionNotFound),
    /// A history position that does not belong to the channel's current history
    /// (`FAILED_PRECONDITION`); says where to start again.
    #[error("{0}")]
    HistoryPosition(String),
    /// The answer of the node holding the session, to a call forwarded to it: its status as
    /// it gave it.
    #[error("{}", .0.message())]
    Forwarded(Status),
    /// The server is shutting down (`UNAVAILABLE`): reconnect and resume.
    #[error("server shutting down, reconnect and resume from last id")]
    ShuttingDown,
}

impl Error {
    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Token(_) | Error::Ticket(_) | Error::AdminUnauthenticated => {
                Code::Unauthenticated
            }
            Error::EventId(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::MethodNotAllowed(_)
            | Error::AdminDisabled
            | Error::Disconnected
            | Error::Revoked => Code::PermissionDenied,
            Error::MethodNotFound { .. } | Error::SessionNotFound(_) => Code::NotFound,
            Error::Method(error) => error.code,
            Error::Refresh(_) | Error::HistoryPosition(_) => Code::FailedPrecondition,
            Error::Store(StoreError::Unavailable(_)) | Error::ShuttingDown => Code::Unavailable,
            Error::Store(StoreError::Corrupt(_)) => Code::DataLoss,
            Error::SlowConsumer => Code::ResourceExhausted,
            Error::Superseded => Code::Aborted,
            Error::Forwarded(status) => status.code(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

/// A method's failure, with the gRPC status code the caller receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MethodError {
    /// The status code the caller receives.
    pub code: tonic::Code,
    /// The message the caller receives.
    pub message: String,
}

impl MethodError {
    /// A failure with `code` and a message for the caller.
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The caller's input is wrong (`INVALID_ARGUMENT`).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::InvalidArgument, message)
    }

    /// The caller may not do this (`PERMISSION_DENIED`).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::PermissionDenied, message)
    }

    /// The object's state does not allow this now (`FAILED_PRECONDITION`).
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::FailedPrecondition, message)
    }

    /// Something the caller can retry later (`UNAVAILABLE`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unavailable, message)
    }

    /// A bug or failure on the object's side (`INTERNAL`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Internal, message)
    }
}

impl From<Error> for MethodError {
    fn from(error: Error) -> Self {
        Self::new(error.code(), error.to_string())
    }
}
