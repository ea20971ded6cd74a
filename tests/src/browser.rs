//! A real browser for the portal's tests: Debian's `chromium` driven headless through
//! `chromedriver` (WebDriver, `fantoccini`). Controls are found as a person finds them, by their
//! label or button text (case-insensitive substrings, as API.md's "Portal" says), never by ids or
//! CSS. `axe` runs axe-core (npm, installed by `tests/prereqs.sh`) inside the page; `shot` keeps a
//! screenshot under `target/portal-screens/<test>/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub struct Browser {
    pub client: Client,
    pub base: String,
    driver: Child,
    shots: PathBuf,
    taken: std::sync::atomic::AtomicUsize,
    /// axe-core runs so far, and the violations they found.
    pub axe_runs: std::sync::atomic::AtomicUsize,
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";

fn lower(expr: &str) -> String {
    format!("translate(normalize-space({expr}), '{UPPER}', '{LOWER}')")
}

fn literal(s: &str) -> String {
    format!("'{}'", s.to_lowercase().replace('\'', ""))
}

impl Browser {
    /// Start chromedriver on a free port and a headless chromium session; `base` is the query
    /// API's URL, `test` names the screenshot folder.
    pub async fn start(base: &str, test: &str) -> Browser {
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/prereqs.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--lang=en-US"]}),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/portal-screens")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            base: base.to_string(),
            driver,
            shots,
            taken: Default::default(),
            axe_runs: Default::default(),
        }
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        url.path().to_string()
    }

    /// The whole URL, to check it holds no PHI.
    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The form control labelled `label` (a label that is it, else starts with it, else holds it).
    pub async fn field(&self, label: &str) -> Element {
        let l = literal(label);
        let t = lower(".");
        for test in [
            format!("{t} = {l}"),
            format!("starts-with({t}, {l})"),
            format!("contains({t}, {l})"),
        ] {
            let xpath = format!("//label[{test}]");
            if let Ok(found) = self.client.find(Locator::XPath(&xpath)).await {
                let id = found
                    .attr("for")
                    .await
                    .unwrap()
                    .expect("a label names its control");
                return self.client.find(Locator::Id(&id)).await.unwrap();
            }
        }
        panic!(
            "no field labelled {label:?} on {}: {}",
            self.path().await,
            self.text().await
        );
    }

    pub async fn fill(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// A button or link whose accessible name (text or aria-label) is `name`, else starts with
    /// it, else holds it.
    pub async fn control(&self, name: &str) -> Element {
        let l = literal(name);
        let (t, a) = (lower("."), lower("@aria-label"));
        for test in [
            format!("{t} = {l} or {a} = {l}"),
            format!("starts-with({t}, {l}) or starts-with({a}, {l})"),
            format!("contains({t}, {l}) or contains({a}, {l})"),
        ] {
            let xpath = format!("//button[{test}] | //a[{test}]");
            if let Ok(e) = self.client.find(Locator::XPath(&xpath)).await {
                return e;
            }
        }
        panic!(
            "no control named {name:?} on {}: {}",
            self.path().await,
            self.text().await
        )
    }

    /// Click a control that loads a new page, and wait until it has loaded.
    pub async fn click(&self, name: &str) {
        let control = self.control(name).await;
        self.client
            .execute("window.__oldPage = true; return true;", vec![])
            .await
            .unwrap();
        control.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__oldPage !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .unwrap_or(Value::Bool(false));
            if loaded == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {name:?} loaded no page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Click a control that stays on the page (a pop-up link).
    pub async fn click_in_place(&self, name: &str) {
        self.control(name).await.click().await.unwrap();
    }

    pub async fn has_control(&self, name: &str) -> bool {
        let l = literal(name);
        let xpath = format!(
            "//button[contains({t}, {l})] | //a[contains({t}, {l})]",
            t = lower(".")
        );
        self.client.find(Locator::XPath(&xpath)).await.is_ok()
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Wait until the page's text holds `needle` (case-insensitive), at most `patience`.
    pub async fn wait_text(&self, needle: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let text = self.text().await;
            if text.to_lowercase().contains(&needle.to_lowercase()) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{needle:?} never showed on {}: {text}", self.path().await);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The page (loaded) holds `needle`.
    pub async fn assert_text(&self, needle: &str) {
        self.wait_text(needle, Duration::from_secs(5)).await;
    }

    /// Run axe-core in the page; panics listing any violation.
    pub async fn axe(&self, screen: &str) {
        let path = std::env::var("HIE_AXE_JS").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/hie-tests/axe/node_modules/axe-core/axe.min.js")
        });
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("axe-core at {path} ({e}): tests/prereqs.sh installs it"));
        self.client
            .execute(&format!("{source}\nreturn true;"), vec![])
            .await
            .unwrap();
        let run = "var done = arguments[arguments.length - 1];
            axe.run(document).then(function (r) {
              done(r.violations.map(function (v) {
                return v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                  v.nodes.map(function (n) { return n.target.join(' '); }).join(' | ');
              }));
            }).catch(function (e) { done(['axe failed: ' + e]); });";
        let violations: Value = self.client.execute_async(run, vec![]).await.unwrap();
        self.axe_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(violations, json!([]), "axe-core on the {screen} screen");
    }

    /// Keep a screenshot of the current page as `<nn>-<name>.png`.
    pub async fn shot(&self, name: &str) {
        let n = self
            .taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{n:02}-{name}.png")), png).unwrap();
    }

    /// `axe` then `shot`: every screen gets both.
    pub async fn screen(&self, name: &str) {
        self.shot(name).await;
        self.axe(name).await;
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
