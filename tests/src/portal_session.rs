//! A clinician portal session over plain HTTP (no browser): the session cookie kept by hand, the
//! CSRF token read from each form. For tests that read a page's content whole (a document pop-up).

use reqwest::StatusCode;
use serde_json::{json, Value};

pub struct PortalSession {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl PortalSession {
    /// Creates account `user` of `org` with `roles` through the query API at `query` (as
    /// `admin_token`'s admin), signs in with its temporary password and sets a new one.
    pub async fn sign_in(
        query: &str,
        admin_token: &str,
        user: &str,
        org: &str,
        roles: &[&str],
    ) -> PortalSession {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http
            .put(format!("{query}/v1/users/{user}"))
            .bearer_auth(admin_token)
            .json(&json!({"email": format!("{user}@{org}.example"), "organization_id": org, "roles": roles}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let r = http
            .post(format!("{query}/v1/users/{user}/temporary-password"))
            .bearer_auth(admin_token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        let temporary = body["temporary_password"].as_str().unwrap().to_string();
        let mut portal = PortalSession {
            http,
            base: query.to_string(),
            cookie: String::new(),
        };
        let csrf = portal.csrf("/portal/sign-in").await;
        portal
            .post(
                "/portal/sign-in",
                &[
                    ("csrf", &csrf),
                    ("username", user),
                    ("password", &temporary),
                ],
            )
            .await;
        let csrf = portal.csrf("/portal/set-password").await;
        let new = "a long new portal password 42";
        portal
            .post(
                "/portal/set-password",
                &[
                    ("csrf", &csrf),
                    ("new_password", new),
                    ("confirm_password", new),
                ],
            )
            .await;
        portal
    }

    fn keep_cookie(&mut self, r: &reqwest::Response) {
        for value in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let value = value.to_str().unwrap();
            if let Some(pair) = value.split(';').next() {
                if pair.starts_with("hie_portal=") {
                    self.cookie = pair.to_string();
                }
            }
        }
    }

    async fn csrf(&mut self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        self.keep_cookie(&r);
        let page = r.text().await.unwrap();
        let (_, rest) = page
            .split_once("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF token on {path}"));
        rest.split('"').next().unwrap().to_string()
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", platform::url_component(v)))
            .collect();
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.join("&"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        self.keep_cookie(&r);
    }

    /// A page of the signed-in session (200 expected), as text.
    pub async fn get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.text().await.unwrap()
    }

    /// The text a document pop-up shows (`<pre class="document">`), whole.
    pub async fn document(&self, patient: &str, id: &str) -> String {
        // The pop-up's opaque key: the first 12 bytes of SHA-256("DocumentReference/<id>"), hex.
        let key = &platform::blobs::address(format!("DocumentReference/{id}").as_bytes())[..24];
        let page = self
            .get(&format!(
                "/portal/patients/{patient}/records/DocumentReference/{key}"
            ))
            .await;
        page.split_once("<pre class=\"document\">")
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(inner, _)| inner.to_string())
            .unwrap_or_else(|| panic!("no document in the pop-up ({} bytes)", page.len()))
    }
}

/// `len` letters and digits, different in every position (xorshift from `seed`), so a truncation
/// or a mix-up cannot go unseen; nothing in them needs escaping in JSON, HTML or HL7.
pub fn document_text(len: usize, seed: u64) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % 62) as usize] as char
        })
        .collect()
}
