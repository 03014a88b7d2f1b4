//! Every domain error of the service, and the one place that maps them to gRPC status codes.

use tonic::{Code, Status};

use crate::{
    channel::RefreshError, event::MalformedEventId, session::InvalidTicket, store::StoreError,
    token::TokenError,
};

/// What a call can fail with; the services return these and convert at the edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Ticket(#[from] InvalidTicket),
    #[error(transparent)]
    EventId(#[from] MalformedEventId),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("Method \"{0}\" is not allowed.")]
    MethodNotAllowed(String),
    #[error("channel {channel:?} has no method {}", path.join("."))]
    MethodNotFound { channel: String, path: Vec<String> },
    /// A channel object's method failed with a code of its choosing.
    #[error(transparent)]
    Method(#[from] crate::object::MethodError),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    #[error("the admin API is disabled: the server has no API key configured (--api-key)")]
    AdminDisabled,
    #[error("missing or wrong API key (send `authorization: Bearer <key>`)")]
    AdminUnauthenticated,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("slow consumer, resume from last id")]
    SlowConsumer,
    #[error("session resumed on another stream")]
    Superseded,
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
            Error::MethodNotAllowed(_) | Error::AdminDisabled => Code::PermissionDenied,
            Error::MethodNotFound { .. } => Code::NotFound,
            Error::Method(error) => error.code,
            Error::Refresh(_) => Code::FailedPrecondition,
            Error::Store(StoreError::Unavailable(_)) | Error::ShuttingDown => Code::Unavailable,
            Error::Store(StoreError::Corrupt(_)) => Code::DataLoss,
            Error::SlowConsumer => Code::ResourceExhausted,
            Error::Superseded => Code::Aborted,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(error.code(), error.to_string())
    }
}
