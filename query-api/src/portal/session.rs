//! Portal sessions: an opaque random id in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over
//! TLS), the state in this process's memory. Every visitor gets a session on the first page, so
//! the sign-in form carries a CSRF token too; signing in replaces the session id (no fixation).
//! A session idle for `idle_timeout` (15 minutes, HIPAA automatic logoff) is gone.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use platform::auth::{Role, User};
use rand::RngCore;

use crate::http::AppState;

pub const COOKIE_NAME: &str = "hie_portal";
/// The header a page's own background requests carry.
pub const BACKGROUND: &str = "x-hie-background";
/// How long a session nobody signed in to lasts: it holds only a CSRF token, and a sign-in page
/// left open for a while must still work.
const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone)]
struct Session {
    csrf: String,
    user_id: Option<String>,
    /// Signed in with a temporary password: nothing but setting a new one until done.
    must_set_password: bool,
    last_seen: Instant,
}

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Constant-time comparison, for tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn fresh(&self, idle: Duration) -> (String, Session) {
        let session = Session {
            csrf: random_token(32),
            user_id: None,
            must_set_password: false,
            last_seen: Instant::now(),
        };
        let sid = random_token(32);
        let mut map = self.inner.lock().expect("sessions lock");
        // Forget long-idle sessions now and then: they can never be used again.
        if map.len().is_multiple_of(64) {
            map.retain(|_, s| s.last_seen.elapsed() < idle.max(ANONYMOUS_LIFETIME));
        }
        map.insert(sid.clone(), session.clone());
        (sid, session)
    }

    /// Sign `user_id` in: a new session id (the old one is dropped) with a new CSRF token.
    pub fn sign_in(
        &self,
        old_sid: &str,
        user_id: &str,
        must_set_password: bool,
    ) -> (String, String) {
        let mut map = self.inner.lock().expect("sessions lock");
        map.remove(old_sid);
        let sid = random_token(32);
        let csrf = random_token(32);
        map.insert(
            sid.clone(),
            Session {
                csrf: csrf.clone(),
                user_id: Some(user_id.to_string()),
                must_set_password,
                last_seen: Instant::now(),
            },
        );
        (sid, csrf)
    }

    pub fn password_set(&self, sid: &str) {
        if let Some(s) = self.inner.lock().expect("sessions lock").get_mut(sid) {
            s.must_set_password = false;
        }
    }

    pub fn end(&self, sid: &str) {
        self.inner.lock().expect("sessions lock").remove(sid);
    }

    /// Whether the session is still signed in as `user_id` (for long-lived streams, which do
    /// not count as activity).
    pub fn alive(&self, sid: &str, user_id: &str, idle: Duration) -> bool {
        self.inner
            .lock()
            .expect("sessions lock")
            .get(sid)
            .is_some_and(|s| s.user_id.as_deref() == Some(user_id) && s.last_seen.elapsed() < idle)
    }
}

pub fn cookie(sid: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={sid}; Path=/portal; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("a session id is a valid header value")
}

/// One request's view of its session.
pub struct Visit {
    pub sid: String,
    pub csrf: String,
    pub user: Option<User>,
    pub must_set_password: bool,
    /// The cookie named a session that ended for being idle too long.
    pub timed_out: bool,
    /// A new session was started: its cookie goes on the response.
    pub set_cookie: Option<HeaderValue>,
    /// The idle timeout, for the page's own automatic logoff and its wording.
    pub idle: Duration,
}

impl Visit {
    /// "15 minutes", in words.
    pub fn idle_words(&self) -> String {
        match self.idle.as_secs() {
            s if s >= 120 => format!("{} minutes", s / 60),
            s => format!("{s} seconds"),
        }
    }

    pub fn csrf_ok(&self, sent: &str) -> bool {
        same(&self.csrf, sent)
    }

    /// Attach the session cookie (when new) to a response.
    pub fn finish(&self, mut response: Response) -> Response {
        if let Some(c) = &self.set_cookie {
            response.headers_mut().append(SET_COOKIE, c.clone());
        }
        response
    }

    pub fn redirect(&self, to: &str) -> Response {
        self.finish(see_other(to))
    }
}

pub fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, HeaderValue::from_str(to).expect("a portal path"))],
    )
        .into_response()
}

fn sid_from(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_string())
}

/// The user an account stands for, while it is active.
fn user_of(state: &AppState, user_id: &str) -> Option<User> {
    let account = state.accounts.get(user_id)?;
    let roles: Vec<Role> = account
        .roles
        .iter()
        .filter_map(|r| Role::from_str(r).ok())
        .collect();
    if !account.active || roles.is_empty() {
        return None;
    }
    let user = User {
        id: account.user_id,
        email: account.email,
        org: account.organization_id,
        roles,
    };
    state.accounts.admit(&user).ok().map(|_| user)
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let portal = &state.portal;
        let idle = portal.config.idle_timeout;
        let secure = state.config.tls.is_some();
        let mut timed_out = false;
        // What a page fetches by itself (a live update) is not the user's activity.
        let background = parts.headers.contains_key(BACKGROUND);
        if let Some(sid) = sid_from(parts) {
            let found = {
                let mut map = portal.sessions.inner.lock().expect("sessions lock");
                match map.get_mut(&sid) {
                    Some(s)
                        if s.last_seen.elapsed()
                            < if s.user_id.is_some() {
                                idle
                            } else {
                                ANONYMOUS_LIFETIME
                            } =>
                    {
                        if !background {
                            s.last_seen = Instant::now();
                        }
                        Some(s.clone())
                    }
                    Some(s) => {
                        timed_out = s.user_id.is_some();
                        if let Some(user) = s.user_id.clone() {
                            portal.record_later(&user, "timed_out", &user, "idle");
                        }
                        map.remove(&sid);
                        None
                    }
                    None => None,
                }
            };
            if let Some(s) = found {
                let user = s.user_id.as_deref().and_then(|u| user_of(state, u));
                if s.user_id.is_some() && user.is_none() {
                    // The account was disabled or changed: the session ends with it.
                    portal.sessions.end(&sid);
                } else {
                    return Ok(Visit {
                        sid,
                        csrf: s.csrf,
                        user,
                        must_set_password: s.must_set_password,
                        timed_out: false,
                        set_cookie: None,
                        idle,
                    });
                }
            }
        }
        let (sid, s) = portal.sessions.fresh(idle);
        Ok(Visit {
            set_cookie: Some(cookie(&sid, secure)),
            sid,
            csrf: s.csrf,
            user: None,
            must_set_password: false,
            timed_out,
            idle,
        })
    }
}

/// A signed-in visit with a password of the user's own; anyone else is sent to sign in.
pub struct SignedIn {
    pub visit: Visit,
    pub user: User,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(visit) = Visit::from_request_parts(parts, state).await;
        let Some(user) = visit.user.clone() else {
            let to = if visit.timed_out {
                "/portal/sign-in?ended=idle"
            } else {
                "/portal/sign-in"
            };
            return Err(visit.redirect(to));
        };
        if visit.must_set_password {
            return Err(visit.redirect("/portal/set-password"));
        }
        Ok(SignedIn { visit, user })
    }
}
