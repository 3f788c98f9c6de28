//! The one error type of `POST /callback` and its mapping to HTTP.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use callbridge_types::event::ValidationError;
use callbridge_types::signature::SignatureError;
use serde::Serialize;

use crate::publisher::PublishError;

/// Why a callback was not accepted. Each variant is one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The body (or its announced `Content-Length`) is over the limit.
    #[error("Payload too large")]
    TooLarge,
    /// Signature missing, wrong, or (Standard Webhooks) outside the time window.
    #[error(transparent)]
    Unauthorized(#[from] SignatureError),
    /// Not JSON, not an object, or a field missing, mistyped or too long.
    #[error("Invalid callback data")]
    Invalid(#[from] ValidationError),
    /// The body could not be read from the connection.
    #[error("Could not read the request body")]
    BodyUnreadable(#[source] actix_web::error::PayloadError),
    /// The body did not arrive within the body timeout (stalled or dripping).
    #[error("Request body not received in time")]
    BodyTimeout,
    /// The broker did not confirm the message; the sender should retry.
    #[error("Temporarily unavailable")]
    Unavailable {
        #[source]
        cause: PublishError,
        retry_after_secs: u32,
    },
}

impl CallbackError {
    /// The `outcome` label of the callbacks counter.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallbackError::TooLarge => "too_large",
            CallbackError::Unauthorized(_) => "unauthorized",
            CallbackError::Invalid(_) | CallbackError::BodyUnreadable(_) => "invalid",
            CallbackError::BodyTimeout => "timeout",
            CallbackError::Unavailable { .. } => "unavailable",
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            CallbackError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CallbackError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CallbackError::Invalid(_) | CallbackError::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            CallbackError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            CallbackError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let (error, detail) = match self {
            CallbackError::Invalid(validation) => {
                ("Invalid callback data", Some(validation.to_string()))
            }
            CallbackError::BodyUnreadable(_) => (
                "Invalid callback data",
                Some("body: could not be read".to_owned()),
            ),
            CallbackError::Unavailable {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
                ("Temporarily unavailable", None)
            }
            CallbackError::TooLarge => ("Payload too large", None),
            CallbackError::BodyTimeout => {
                // The rest of the body may still be on its way: the connection cannot be
                // reused for another request.
                response.force_close();
                ("Request body not received in time", None)
            }
            CallbackError::Unauthorized(signature) => {
                return response.json(ErrorBody {
                    error: &signature.to_string(),
                    detail: None,
                });
            }
        };
        response.json(ErrorBody { error, detail })
    }
}
