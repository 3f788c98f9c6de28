//! Who is signed in, and what they may do.
//!
//! Two tokens sign in: the operator's (may act) and the viewer's (reads only). Signing in
//! sets a session cookie (HttpOnly, SameSite=Strict) that carries the role, its expiry and
//! a random nonce, signed with a key derived from both tokens: it holds no secret, needs no
//! server-side store (any replica reads it), and rotating either token ends every session.
//!
//! Every state-changing request carries a CSRF token bound to the session (a MAC of its
//! nonce), in a hidden form field. The order of refusals: no valid session → 401 (a page
//! → a redirect to the sign-in page); a missing or wrong CSRF token → 403; a viewer → 403.

use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest};
use callbridge_ops::Actor;
use callbridge_runtime::config::Secret;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ConsoleError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "callbridge_console_session";
/// The form field every state-changing request carries.
pub const CSRF_FIELD: &str = "csrf";

type HmacSha256 = Hmac<Sha256>;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    fn parse(raw: &str) -> Option<Role> {
        match raw {
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The tokens and the key sessions are signed with.
#[derive(Clone)]
pub struct Authenticator {
    operator_digest: [u8; 32],
    viewer_digest: Option<[u8; 32]>,
    key: [u8; 32],
    ttl: Duration,
    secure_cookie: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl Authenticator {
    pub fn new(
        operator_token: &Secret,
        viewer_token: Option<&Secret>,
        ttl: Duration,
        secure_cookie: bool,
    ) -> Authenticator {
        let mut key = Sha256::new();
        key.update(b"callbridge-console-session\0");
        key.update(operator_token.expose().trim().as_bytes());
        key.update(b"\0");
        if let Some(viewer) = viewer_token {
            key.update(viewer.expose().trim().as_bytes());
        }
        Authenticator {
            operator_digest: digest(operator_token.expose()),
            viewer_digest: viewer_token.map(|token| digest(token.expose())),
            key: key.finalize().into(),
            ttl,
            secure_cookie,
        }
    }

    /// The role `presented` signs in as. Both tokens are compared, each in constant time
    /// over their SHA-256 digests (so neither a token's length nor the first differing
    /// byte shows in the time taken).
    pub fn role_for(&self, presented: &str) -> Option<Role> {
        let presented = digest(presented);
        let operator = bool::from(presented.ct_eq(&self.operator_digest));
        let viewer = self
            .viewer_digest
            .is_some_and(|viewer| bool::from(presented.ct_eq(&viewer)));
        match (operator, viewer) {
            (true, _) => Some(Role::Operator),
            (false, true) => Some(Role::Viewer),
            (false, false) => None,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any size");
        for part in parts {
            mac.update(part);
            mac.update(b"\0");
        }
        mac
    }

    /// A new session for `role` from `now`, and its cookie.
    pub fn open(&self, role: Role, now: DateTime<Utc>) -> (Session, Cookie<'static>) {
        let nonce: [u8; 16] = rand::rng().random();
        let session = Session {
            role,
            expires: now.timestamp() + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            nonce: hex::encode(nonce),
            csrf: String::new(),
        };
        let session = self.with_csrf(session);
        let payload = session.payload();
        let tag = hex::encode(
            self.mac(&[b"session", payload.as_bytes()])
                .finalize()
                .into_bytes(),
        );
        let cookie = Cookie::build(SESSION_COOKIE, format!("{payload}.{tag}"))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure_cookie)
            .max_age(time::Duration::seconds(
                i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            ))
            .finish();
        (session, cookie)
    }

    /// A cookie that removes the session cookie.
    pub fn closing_cookie(&self) -> Cookie<'static> {
        let mut cookie = Cookie::build(SESSION_COOKIE, "")
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure_cookie)
            .finish();
        cookie.make_removal();
        cookie
    }

    fn with_csrf(&self, mut session: Session) -> Session {
        session.csrf = hex::encode(
            self.mac(&[b"csrf", session.nonce.as_bytes()])
                .finalize()
                .into_bytes(),
        );
        session
    }

    /// The session a cookie value stands for, if its signature holds and it has not
    /// expired at `now`.
    pub fn read(&self, value: &str, now: DateTime<Utc>) -> Option<Session> {
        let (payload, tag) = value.rsplit_once('.')?;
        let tag = hex::decode(tag).ok()?;
        self.mac(&[b"session", payload.as_bytes()])
            .verify_slice(&tag)
            .ok()?;
        let mut parts = payload.split('.');
        let role = Role::parse(parts.next()?)?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_owned();
        if parts.next().is_some() || expires <= now.timestamp() {
            return None;
        }
        Some(self.with_csrf(Session {
            role,
            expires,
            nonce,
            csrf: String::new(),
        }))
    }

    /// Whether `presented` is the session's CSRF token (constant time).
    fn csrf_holds(&self, session: &Session, presented: &str) -> bool {
        let Ok(presented) = hex::decode(presented.trim()) else {
            return false;
        };
        self.mac(&[b"csrf", session.nonce.as_bytes()])
            .verify_slice(&presented)
            .is_ok()
    }
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub role: Role,
    /// Unix seconds.
    expires: i64,
    nonce: String,
    /// The token its forms carry.
    csrf: String,
}

impl Session {
    fn payload(&self) -> String {
        format!("{}.{}.{}", self.role.as_str(), self.expires, self.nonce)
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn may_act(&self) -> bool {
        self.role == Role::Operator
    }

    /// Who the audit names: the console, this session's role, and the start of its nonce
    /// (which tells two sessions apart without being enough to forge one).
    pub fn actor(&self) -> Actor {
        Actor::console(
            format!(
                "console {} session {}",
                self.role.as_str(),
                &self.nonce[..8]
            ),
            self.role.as_str(),
        )
    }

    /// Checks a request's CSRF token: 403 when it is missing or not this session's.
    pub fn check_csrf(
        &self,
        auth: &Authenticator,
        presented: Option<&str>,
    ) -> Result<(), ConsoleError> {
        match presented {
            Some(token) if auth.csrf_holds(self, token) => Ok(()),
            Some(_) => Err(ConsoleError::Forbidden(
                "the form's CSRF token is wrong: reload the page and try again",
            )),
            None => Err(ConsoleError::Forbidden("the request carries no CSRF token")),
        }
    }

    /// Checks a state-changing request's CSRF token, then the role: 403 when either
    /// fails.
    pub fn authorize_action(
        &self,
        auth: &Authenticator,
        presented: Option<&str>,
    ) -> Result<(), ConsoleError> {
        self.check_csrf(auth, presented)?;
        if !self.may_act() {
            return Err(ConsoleError::Forbidden(
                "a viewer reads only: sign in with the operator's token to act",
            ));
        }
        Ok(())
    }
}

/// A request's session. Without a valid one a page redirects to the sign-in page and any
/// other request (a form's POST) is answered 401.
impl FromRequest for Session {
    type Error = ConsoleError;
    type Future = Ready<Result<Session, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req
            .app_data::<actix_web::web::Data<Authenticator>>()
            .zip(req.cookie(SESSION_COOKIE))
            .and_then(|(auth, cookie)| auth.read(cookie.value(), Utc::now()));
        ready(session.ok_or_else(|| {
            if matches!(*req.method(), Method::GET | Method::HEAD) {
                ConsoleError::SignInFirst
            } else {
                ConsoleError::Unauthenticated
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(
            &Secret::from("operator-token-0123456789"),
            Some(&Secret::from("viewer-token-0123456789")),
            Duration::from_secs(3600),
            true,
        )
    }

    #[test]
    fn each_token_signs_in_as_its_role_and_nothing_else_does() {
        let auth = auth();
        assert_eq!(
            auth.role_for("operator-token-0123456789"),
            Some(Role::Operator)
        );
        assert_eq!(
            auth.role_for(" viewer-token-0123456789\n"),
            Some(Role::Viewer)
        );
        assert_eq!(auth.role_for("operator-token-012345678"), None);
        assert_eq!(auth.role_for(""), None);
        let no_viewer = Authenticator::new(
            &Secret::from("operator-token-0123456789"),
            None,
            Duration::from_secs(60),
            true,
        );
        assert_eq!(no_viewer.role_for(""), None);
    }

    #[test]
    fn a_session_reads_back_until_it_expires_and_a_forged_one_never() {
        let auth = auth();
        let now = Utc::now();
        let (session, cookie) = auth.open(Role::Viewer, now);
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(auth.read(cookie.value(), now), Some(session.clone()));
        let later = now + chrono::TimeDelta::seconds(3601);
        assert_eq!(auth.read(cookie.value(), later), None);

        // A viewer who rewrites the role breaks the signature.
        let forged = cookie.value().replacen("viewer", "operator", 1);
        assert_eq!(auth.read(&forged, now), None);
        // A session signed under other tokens is not one of ours.
        let other = Authenticator::new(
            &Secret::from("another-operator-token-0"),
            None,
            Duration::from_secs(3600),
            true,
        );
        assert_eq!(other.read(cookie.value(), now), None);
    }

    #[test]
    fn the_csrf_token_is_the_sessions_own_and_a_viewer_may_not_act() {
        let auth = auth();
        let now = Utc::now();
        let (operator, _) = auth.open(Role::Operator, now);
        let (other, _) = auth.open(Role::Operator, now);
        assert!(
            operator
                .authorize_action(&auth, Some(operator.csrf()))
                .is_ok()
        );
        assert!(matches!(
            operator.authorize_action(&auth, Some(other.csrf())),
            Err(ConsoleError::Forbidden(_))
        ));
        assert!(matches!(
            operator.authorize_action(&auth, None),
            Err(ConsoleError::Forbidden(_))
        ));
        let (viewer, _) = auth.open(Role::Viewer, now);
        assert!(matches!(
            viewer.authorize_action(&auth, Some(viewer.csrf())),
            Err(ConsoleError::Forbidden(_))
        ));
    }
}
