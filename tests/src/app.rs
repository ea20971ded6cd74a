use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::{Broker, TestDb};

/// HS256 needs at least 32 bytes (`platform::auth::MIN_HS256_SECRET_BYTES`).
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The HIE operator's organization (`HIE_OPERATOR_ORG`): its admins manage every organization.
pub const OPERATOR_ORG: &str = "hie";
/// The user id the query API honours as an admin without an account (`HIE_BOOTSTRAP_ADMIN`).
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

/// Which services a test wants, and how.
#[derive(Debug, Clone)]
pub struct Services {
    /// Run the projector in this process; a test that kills it runs it as a process instead.
    pub projector_in_process: bool,
    pub max_body_bytes: usize,
    /// Ingest's limits on what senders control (MLLP frames, connections, idle time, HTTP).
    pub ingest_limits: ingest::config::Limits,
    /// Serve ingest (HTTP and MLLP) and the query API over TLS with these files.
    pub tls: Option<platform::tls::TlsFiles>,
    /// The portal's settings (idle timeout, e-mail outbox); the outbox is a fresh folder per app.
    pub portal: query_api::portal::PortalConfig,
    /// Ingest's admission limit (`INGEST_MAX_VIEWS_LAG`): events the views may be behind.
    pub max_views_lag: i64,
    /// Resources larger than this travel as claim checks (`INGEST_CLAIM_CHECK_BYTES`).
    pub claim_check_bytes: usize,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            projector_in_process: true,
            max_body_bytes: 64 * 1024 * 1024,
            ingest_limits: ingest::config::Limits::default(),
            tls: None,
            portal: query_api::portal::PortalConfig {
                outbox: std::env::temp_dir().join(format!("hie-outbox-{}", uuid::Uuid::new_v4())),
                ..Default::default()
            },
            max_views_lag: 20_000,
            claim_check_bytes: 256 * 1024,
        }
    }
}

pub struct TestApp {
    pub ingest: String,
    /// Ingest's HL7 v2 over MLLP listener.
    pub mllp: std::net::SocketAddr,
    /// Ingest's drop folder, a fresh directory per app.
    pub drop_dir: std::path::PathBuf,
    pub query: String,
    /// The in-process projector's `/healthz` and `/metrics` base URL.
    pub projector: Option<String>,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub broker: Broker,
    stops: Vec<oneshot::Sender<()>>,
    /// Accounts created so far, as `sub|org|roles`.
    accounts: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Services::default()).await
    }

    pub async fn spawn_with(services: Services) -> TestApp {
        let broker = Broker::start();
        let db = TestDb::create().await;
        let mut stops = Vec::new();

        let (listener, ingest) = listen().await;
        let mllp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mllp = mllp_listener.local_addr().unwrap();
        let drop_dir = std::env::temp_dir().join(format!("hie-drop-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&drop_dir).unwrap();
        let config = ingest::Config {
            http_addr: listener.local_addr().unwrap(),
            kafka_brokers: broker.address(),
            jwt: platform::auth::JwtKey::Hs256(platform::Secret::new(SECRET.into())),
            max_body_bytes: services.max_body_bytes,
            delivery_timeout: Duration::from_secs(3),
            bootstrap_admin: Some(BOOTSTRAP_ADMIN.into()),
            operator_org: OPERATOR_ORG.into(),
            tls: services.tls.clone(),
            mllp_addr: Some(mllp),
            drop_dir: Some(drop_dir.clone()),
            limits: services.ingest_limits.clone(),
            max_views_lag: services.max_views_lag,
            views_group: "hie-projector".into(),
            // The blob store is the test's database, as in the local stack.
            blob_store: platform::blobs::BlobLocation::Postgres(db.url()),
            claim_check_bytes: services.claim_check_bytes,
        };
        stops.push(spawn(|stop| async move {
            ingest::run_with(config, listener, Some(mllp_listener), stop)
                .await
                .map_err(|e| e.to_string())
        }));

        let mut projector = None;
        if services.projector_in_process {
            let (listener, url) = listen().await;
            projector = Some(url);
            let config = projector_config(&broker, &db, listener.local_addr().unwrap());
            stops.push(spawn(|stop| async move {
                projector::run(config, listener, stop)
                    .await
                    .map_err(|e| e.to_string())
            }));
        } else {
            // The query API needs the views; migrations run when the projector starts.
            let pool = projector::pool(&db.url()).unwrap();
            projector::store::migrate(&pool).await.unwrap();
        }

        let (listener, query) = listen().await;
        let config = query_api::Config {
            http_addr: listener.local_addr().unwrap(),
            database_url: db.url(),
            jwt: query_api::config::JwtKey::Hs256(platform::Secret::new(SECRET.into())),
            min_position_timeout: Duration::from_secs(5),
            kafka_brokers: broker.address(),
            audit_timeout: Duration::from_secs(3),
            break_glass_ttl: Duration::from_secs(24 * 3600),
            bootstrap_admin: Some(BOOTSTRAP_ADMIN.into()),
            operator_org: OPERATOR_ORG.into(),
            tls: services.tls.clone(),
            portal: query_api::portal::PortalConfig {
                public_url: format!("{query}/portal/"),
                ..services.portal.clone()
            },
        };
        stops.push(spawn(|stop| async move {
            query_api::run(config, listener, stop)
                .await
                .map_err(|e| e.to_string())
        }));

        let app = TestApp {
            ingest,
            mllp,
            drop_dir,
            query,
            projector,
            http: reqwest::Client::new(),
            db,
            broker,
            stops,
            accounts: Default::default(),
        };
        // Over TLS the test speaks HTTPS itself (`tests/pipeline/tls.rs`) and waits there.
        if services.tls.is_none() {
            app.wait_healthy(&app.ingest).await;
            app.wait_healthy(&app.query).await;
        }
        app
    }

    async fn wait_healthy(&self, base: &str) {
        for _ in 0..300 {
            if let Ok(r) = self.http.get(format!("{base}/healthz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{base} did not become healthy");
    }

    /// The projector as a real process (so a test can SIGKILL it), logging to `log`.
    pub fn spawn_projector_process(&self) -> Child {
        let port = crate::free_port();
        Command::new(crate::workspace_binary("projector"))
            .env("KAFKA_BROKERS", self.broker.address())
            .env("DATABASE_URL", self.db.url())
            .env("PROJECTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start projector binary")
    }

    pub fn token(&self, org: &str, roles: &[&str]) -> String {
        self.user_token(&format!("user-{org}-{}", roles.join("-")), org, roles)
    }

    /// A token for user `sub` of `org` with `roles`, whose account is created first (through the
    /// admin API) unless it exists already: the query API honours tokens of accounts only.
    pub fn user_token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        if sub != BOOTSTRAP_ADMIN {
            self.ensure_account(sub, org, roles);
        }
        self.sign(sub, org, roles)
    }

    /// A token whose account is NOT created: for tests of what happens to strangers.
    pub fn unregistered_token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        self.sign(sub, org, roles)
    }

    /// Create or update the account `sub` (active) through `PUT /v1/users/{sub}`.
    pub fn ensure_account(&self, sub: &str, org: &str, roles: &[&str]) {
        let key = format!("{sub}|{org}|{}", roles.join(","));
        if !self.accounts.lock().unwrap().insert(key) {
            return;
        }
        let body = json!({"email": format!("{sub}@{org}.example"), "organization_id": org, "roles": roles});
        let status = self.put_user_blocking(sub, &body);
        assert!(status.is_success(), "creating account {sub}: {status}");
    }

    /// `PUT /v1/users/{sub}` as the bootstrap admin. Blocking, so `user_token` can stay a plain
    /// function: it runs on its own thread and runtime while the services keep this one's.
    pub fn put_user_blocking(&self, sub: &str, body: &Value) -> StatusCode {
        let url = format!("{}/v1/users/{sub}", self.query);
        let admin = self.admin();
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    reqwest::Client::new()
                        .put(&url)
                        .bearer_auth(&admin)
                        .json(body)
                        .send()
                        .await
                        .unwrap()
                        .status()
                })
            })
            .join()
            .unwrap()
        })
    }

    fn sign(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        crate::sign_token(SECRET, sub, org, roles)
    }

    /// The bootstrap administrator's token (honoured without an account).
    pub fn admin(&self) -> String {
        self.sign(BOOTSTRAP_ADMIN, "org-hie", &["admin"])
    }

    /// Register a source; returns its API key.
    pub async fn register_source(&self, id: &str, org: &str, assigning_authority: &str) -> String {
        self.register_source_with(id, org, assigning_authority, false)
            .await
    }

    /// Register a source, a 42 CFR Part 2 program when `part2`; returns its API key.
    pub async fn register_source_with(
        &self,
        id: &str,
        org: &str,
        assigning_authority: &str,
        part2: bool,
    ) -> String {
        let r = self
            .http
            .put(format!("{}/v1/sources/{id}", self.ingest))
            .bearer_auth(self.admin())
            .json(&json!({
                "name": format!("Source {id}"), "organization_id": org, "feed": "realtime",
                "assigning_authority": assigning_authority, "data_elements": ["Observation"], "part2": part2
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["api_key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn post_fhir(
        &self,
        source: &str,
        key: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.http
            .post(format!("{}/v1/sources/{source}/fhir", self.ingest))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// POST a Bundle that must be fully accepted; returns its position token.
    pub async fn post_bundle_ok(&self, source: &str, key: &str, bundle: &Value) -> String {
        let r = self
            .post_fhir(source, key, "application/fhir+json", bundle.to_string())
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["rejected"], json!([]), "{body}");
        body["position"].as_str().unwrap().to_string()
    }

    /// Record a consent decision as the admin; returns its position token.
    pub async fn consent(
        &self,
        assigning_authority: &str,
        mrn: &str,
        org: &str,
        decision: &str,
    ) -> String {
        self.consent_with(json!({
            "patient": {"assigning_authority": assigning_authority, "mrn": mrn},
            "organization_id": org, "decision": decision, "method": "written", "part2": false
        }))
        .await
    }

    pub async fn consent_with(&self, body: Value) -> String {
        let r = self
            .http
            .post(format!("{}/v1/consents", self.ingest))
            .bearer_auth(self.admin())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        r.json::<Value>().await.unwrap()["position"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// POST JSON to the query API as `token`.
    pub async fn post_query(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}{path}", self.query))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GET from the query API as `token`, waiting for `position` when given.
    pub async fn get(&self, path: &str, token: &str, position: Option<&str>) -> Response {
        let mut req = self
            .http
            .get(format!("{}{path}", self.query))
            .bearer_auth(token);
        if let Some(p) = position {
            req = req.header("x-min-position", p);
        }
        req.send().await.unwrap()
    }

    /// The enterprise id of the patient known by `system|value`.
    pub async fn patient_id(&self, system: &str, value: &str, position: Option<&str>) -> String {
        let token = self.token("org-any", &["front_desk"]);
        let path = format!(
            "/v1/patients?identifier={}",
            urlencode(&format!("{system}|{value}"))
        );
        let body: Value = self
            .get(&path, &token, position)
            .await
            .json()
            .await
            .unwrap();
        body["patients"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no patient {system}|{value}: {body}"))
            .to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.drop_dir);
    }
}

pub use platform::url_component as urlencode;

async fn listen() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

fn projector_config(broker: &Broker, db: &TestDb, addr: std::net::SocketAddr) -> projector::Config {
    projector::Config {
        http_addr: addr,
        kafka_brokers: broker.address(),
        database_url: db.url(),
        group_id: "hie-projector".into(),
        instance: (0, 1),
        batch_max: 500,
        batch_wait: Duration::from_millis(5),
        fetch_wait: Duration::from_millis(10),
        // Short, so a test can see /healthz turn 503 while the views are held up.
        stall: Duration::from_secs(5),
        matcher: true,
        blob_store: platform::blobs::BlobLocation::Postgres(db.url()),
    }
}

fn spawn<F, Fut>(f: F) -> oneshot::Sender<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let fut = f(Box::pin(async move {
        let _ = rx.await;
    }));
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            eprintln!("service stopped with an error: {e}");
        }
    });
    tx
}
