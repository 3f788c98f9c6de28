//! Signing in with a token, and out.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, web};
use callbridge_types::clock::{Clock, SystemClock};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::auth::{Authenticator, Session};
use crate::error::ConsoleError;
use crate::view;

fn login_page(problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · callbridge console" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                main class="narrow" {
                    h1 { "callbridge console" }
                    @if let Some(problem) = problem {
                        p class="error" id="login-error" { (problem) }
                    }
                    form method="post" action="/login" id="login" {
                        label for="token" { "Access token" }
                        input type="password" id="token" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                    p class="hint" {
                        "The operator's token (CALLBRIDGE_CONSOLE_TOKEN) may pause, resume and cancel; "
                        "the viewer's (CALLBRIDGE_CONSOLE_VIEWER_TOKEN) only reads."
                    }
                }
            }
        }
    }
}

pub async fn form() -> HttpResponse {
    view::html_page(login_page(None))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub token: String,
}

/// `POST /login`: a known token opens a session (cookie) and goes to the campaigns; an
/// unknown one is answered 401 with the form again.
pub async fn sign_in(auth: web::Data<Authenticator>, form: web::Form<LoginForm>) -> HttpResponse {
    match auth.role_for(&form.token) {
        Some(role) => {
            let (_, cookie) = auth.open(role, SystemClock.now());
            tracing::info!(role = role.as_str(), "console session opened");
            HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header((header::LOCATION, "/campaigns"))
                .finish()
        }
        None => {
            tracing::warn!("console sign-in refused: unknown token");
            let mut response = HttpResponse::build(StatusCode::UNAUTHORIZED);
            view::security_headers(&mut response);
            response
                .insert_header(ContentType::html())
                .body(login_page(Some("That token is not one of the console's.")).into_string())
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    pub csrf: Option<String>,
}

/// `POST /logout`: a viewer may sign out too, so only the CSRF token is checked.
pub async fn sign_out(
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.check_csrf(&auth, form.csrf.as_deref())?;
    Ok(HttpResponse::SeeOther()
        .cookie(auth.closing_cookie())
        .insert_header((header::LOCATION, "/login"))
        .finish())
}
