//! Every failure of a console request, and the one place it becomes an HTTP answer.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError};
use callbridge_ops::OpsError;

use crate::view;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A page asked for without a session: go and sign in.
    #[error("sign in first")]
    SignInFirst,
    /// Any other request without a session.
    #[error("no session: sign in first")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// A form that makes no sense (an unknown action, no rows chosen).
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignInFirst => StatusCode::SEE_OTHER,
            ConsoleError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) | ConsoleError::Ops(OpsError::UnknownCampaign(_)) => {
                StatusCode::NOT_FOUND
            }
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Ops(
                OpsError::Cancelled { .. } | OpsError::Refused(_) | OpsError::Rule(_),
            ) => StatusCode::CONFLICT,
            // RabbitMQ down or the topology missing: the operator can act on the reason.
            ConsoleError::Ops(OpsError::Broker(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Ops(OpsError::Database(_)) | ConsoleError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ConsoleError::SignInFirst = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish();
        }
        // The cause chain goes to the log; the page says only what the operator can act on.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %error_chain(self), "console request failed");
            "Something went wrong on the server; the console's log has the cause.".to_owned()
        } else if let ConsoleError::Ops(OpsError::Broker(error)) = self {
            // The whole chain: its last link says what RabbitMQ answered (URLs in it are
            // redacted by the connection code).
            format!("RabbitMQ: {error:#}")
        } else {
            self.to_string()
        };
        let mut response = HttpResponse::build(status);
        view::security_headers(&mut response);
        response
            .insert_header(ContentType::html())
            .body(view::error_page(status, &message).into_string())
    }
}

fn error_chain(error: &ConsoleError) -> String {
    match error {
        ConsoleError::Ops(OpsError::Database(error)) | ConsoleError::Internal(error) => {
            format!("{error:#}")
        }
        other => other.to_string(),
    }
}
