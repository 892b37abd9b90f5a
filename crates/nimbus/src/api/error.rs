//! The one place where errors become HTTP responses, in the AWS shape: `x-amzn-ErrorType`
//! header and a JSON body with `Type` and the message member the model declares for that
//! exception (`message` or `Message`). Client faults are 4xx; our own faults are 500 with a
//! generic message, the detail going to the server log only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use crate::auth::AuthError;
use crate::invoke::InvokeError;
use crate::model::InvalidParameter;
use crate::store::StoreError;
use crate::store::code::CodeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    InvalidRequestContent(String),
    /// CloudWatch Logs' name for a bad parameter (e.g. a `nextToken` it never issued).
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceConflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    ProvisionedConcurrencyConfigNotFound(String),
    #[error("{0}")]
    RequestTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Rate Exceeded.")]
    TooManyRequests { reason: &'static str },
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidParameter> for ApiError {
    fn from(e: InvalidParameter) -> Self {
        ApiError::InvalidParameterValue(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::ResourceNotFound(e.to_string()),
            StoreError::AlreadyExists(_) => ApiError::ResourceConflict(e.to_string()),
            StoreError::RevisionMismatch => ApiError::PreconditionFailed(e.to_string()),
            StoreError::Precondition(_) => ApiError::InvalidParameterValue(e.to_string()),
            StoreError::Missing(_) => ApiError::ResourceNotFound(e.to_string()),
            StoreError::Conflict(_) => ApiError::ResourceConflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CodeError> for ApiError {
    fn from(e: CodeError) -> Self {
        match e {
            CodeError::Io(_) => ApiError::Internal(e.to_string()),
            other => ApiError::InvalidParameterValue(other.to_string()),
        }
    }
}

impl From<crate::queue::QueueError> for ApiError {
    /// Every queue failure is ours (storage, a dead writer thread), never the caller's.
    fn from(e: crate::queue::QueueError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::Throttled { reason } => ApiError::TooManyRequests { reason },
            InvokeError::ScalingThrottled => ApiError::TooManyRequests {
                reason: "FunctionInvocationRateLimitExceeded",
            },
            InvokeError::UnknownRuntime(_) => ApiError::InvalidParameterValue(e.to_string()),
            InvokeError::Sandbox(_) | InvokeError::Internal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// (status, exception name, message member name).
    fn shape(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidParameterValue(_) => (
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "message",
            ),
            ApiError::InvalidRequestContent(_) => (
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                "message",
            ),
            ApiError::InvalidParameter(_) => (
                StatusCode::BAD_REQUEST,
                "InvalidParameterException",
                "message",
            ),
            ApiError::ResourceNotFound(_) => (
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "Message",
            ),
            ApiError::ResourceConflict(_) => {
                (StatusCode::CONFLICT, "ResourceConflictException", "message")
            }
            ApiError::ProvisionedConcurrencyConfigNotFound(_) => (
                StatusCode::NOT_FOUND,
                "ProvisionedConcurrencyConfigNotFoundException",
                "message",
            ),
            ApiError::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                "message",
            ),
            ApiError::RequestTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                "message",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaTypeException",
                "message",
            ),
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "message",
            ),
            ApiError::Auth(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN),
                e.code(),
                "message",
            ),
            ApiError::AccessDenied(_) => {
                (StatusCode::FORBIDDEN, "AccessDeniedException", "Message")
            }
            ApiError::UnknownOperation(_) => (
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "message",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "Message",
            ),
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let (status, code, member) = self.shape();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(request_id, "internal error: {detail}");
                "An internal error occurred. The request id names it in the server's log."
                    .to_string()
            }
            other => other.to_string(),
        };
        let kind = if status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let mut body = serde_json::Map::new();
        // JSON-1.1 protocols (CloudWatch Logs, SQS) are parsed from `__type`; rest-json ones
        // (Lambda) from the header. Both are always sent.
        body.insert("__type".into(), code.into());
        body.insert("Type".into(), kind.into());
        body.insert(member.into(), message.into());
        let mut retry_after = None;
        if let ApiError::TooManyRequests { reason } = &self {
            body.insert("Reason".into(), (*reason).into());
            retry_after = Some("1");
        }
        let mut r = Response::new(Full::new(Bytes::from(
            serde_json::Value::Object(body).to_string(),
        )));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert("x-amzn-errortype", HeaderValue::from_static(code));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(ra) = retry_after {
            h.insert("retry-after", HeaderValue::from_static(ra));
        }
        r
    }
}
