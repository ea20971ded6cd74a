//! The deploy manifest check (`deploy/check-manifests`, and `xtask/tests/manifests.rs` so that
//! `tests/run` covers it): every YAML and JSON file under `deploy/compose` and `deploy/k8s` parses,
//! and the manifests name only images, binaries, environment variables, ports and metrics the
//! project has. What the project has is read from its source, not listed here: the workspace's
//! binaries, the environment variable names and default listen ports in each service's code, and
//! the metric names it registers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;

/// The image built from `deploy/compose/Dockerfile`, in compose and in the k8s manifests.
pub const PROJECT_IMAGE: &str = "hie-pipeline";

/// Third-party images a manifest may use, with the prefixes of the settings (environment
/// variables) each one reads.
const THIRD_PARTY: &[(&str, &[&str])] = &[
    ("apache/kafka", &["KAFKA_", "CLUSTER_ID"]),
    ("postgres", &["POSTGRES_", "PGDATA"]),
    ("prom/prometheus", &[]),
    ("grafana/grafana", &["GF_"]),
    ("rust", &[]),
    ("debian", &[]),
];

/// What the project has, read from its source.
#[derive(Debug, Default)]
pub struct Project {
    /// Binary name → the crate directory it is built from.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Package names of the workspace.
    pub packages: BTreeSet<String>,
    /// Environment variables each binary may read (its crate and `platform`).
    pub env: BTreeMap<String, BTreeSet<String>>,
    /// Environment variables each binary certainly reads: named in its own crate, or read by a
    /// `platform` function it calls (`JwtKey::from_env` reads HIE_JWT_SECRET).
    pub reads: BTreeMap<String, BTreeSet<String>>,
    /// `*_ADDR` variable → its default port, from the services' code.
    pub addr_ports: BTreeMap<String, u16>,
    /// Metric names registered anywhere in the workspace.
    pub metrics: BTreeSet<String>,
}

impl Project {
    pub fn all_env(&self) -> BTreeSet<String> {
        self.env.values().flatten().cloned().collect()
    }

    /// The HTTP port a binary listens on by default (from its `*_HTTP_ADDR` default).
    pub fn http_port(&self, binary: &str) -> Option<(String, u16)> {
        let env = self.env.get(binary)?;
        self.addr_ports
            .iter()
            .find(|(var, _)| var.ends_with("_HTTP_ADDR") && env.contains(*var))
            .map(|(v, p)| (v.clone(), *p))
    }
}

fn is_field(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The fields of every `struct Env { .. }` in `src`, as the environment variables they stand for.
fn env_struct_fields(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in src.lines() {
        let line = line.trim();
        if line.starts_with("struct Env {") || line.starts_with("pub struct Env {") {
            inside = true;
        } else if inside && line.starts_with('}') {
            inside = false;
        } else if inside {
            if let Some((field, _)) = line.split_once(':') {
                if is_field(field) {
                    out.push(field.to_uppercase());
                }
            }
        }
    }
    out
}

fn string_literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

fn is_env_name(s: &str) -> bool {
    let mut parts = s.split('_');
    let first = parts.next().unwrap_or_default();
    s.contains('_')
        && first.starts_with(|c: char| c.is_ascii_uppercase())
        && s.split('_').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Non-test source: everything before a `#[cfg(test)]` module.
fn crate_source(dir: &Path) -> String {
    let mut files = Vec::new();
    rust_files(&dir.join("src"), &mut files);
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|s| match s.find("#[cfg(test)]") {
            Some(i) => s[..i].to_string(),
            None => s,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn toml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(key)?.trim_start();
    let rest = rest.strip_prefix('=')?.trim();
    rest.strip_prefix('"')?.split('"').next()
}

/// The workspace members listed in the root Cargo.toml.
pub fn workspace_members(root: &Path) -> Result<Vec<String>, String> {
    let workspace =
        std::fs::read_to_string(root.join("Cargo.toml")).map_err(|e| format!("Cargo.toml: {e}"))?;
    let members_at = workspace
        .find("members")
        .ok_or("Cargo.toml has no workspace members")?;
    let list = &workspace[members_at..];
    Ok(string_literals(
        &list[..list.find(']').unwrap_or(list.len())],
    ))
}

impl Project {
    pub fn read(root: &Path) -> Result<Project, String> {
        let members = workspace_members(root)?;
        let mut p = Project::default();
        let platform = crate_source(&root.join("platform"));
        for m in &members {
            let dir = root.join(m);
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
                .map_err(|e| format!("{m}/Cargo.toml: {e}"))?;
            let package = manifest
                .lines()
                .find_map(|l| toml_value(l, "name"))
                .ok_or(format!("{m}/Cargo.toml has no package name"))?
                .to_string();
            p.packages.insert(package.clone());
            let mut bins: Vec<String> = Vec::new();
            let mut in_bin = false;
            for line in manifest.lines() {
                let t = line.trim();
                if t.starts_with('[') {
                    in_bin = t == "[[bin]]";
                } else if in_bin {
                    if let Some(n) = toml_value(t, "name") {
                        bins.push(n.to_string());
                    }
                }
            }
            if bins.is_empty() && dir.join("src/main.rs").exists() {
                bins.push(package.clone());
            }
            let source = crate_source(&dir);
            for lit in string_literals(&source) {
                if lit.starts_with("hie_")
                    && lit.len() > 4
                    && lit
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    p.metrics.insert(lit);
                }
            }
            let mut env: BTreeSet<String> = string_literals(&source)
                .into_iter()
                .chain(string_literals(&platform))
                .filter(|l| is_env_name(l))
                .collect();
            let mut reads: BTreeSet<String> = string_literals(&source)
                .into_iter()
                .filter(|l| is_env_name(l))
                .collect();
            if source.contains("JwtKey::from_env") {
                reads.insert("HIE_JWT_SECRET".into());
            }
            // The variables a process reads through `platform::config`: the fields of its
            // `struct Env`, upper-cased (envy's mapping).
            for var in env_struct_fields(&source) {
                env.insert(var.clone());
                reads.insert(var);
            }
            // tracing-subscriber's EnvFilter reads RUST_LOG (platform::telemetry).
            if platform.contains("from_default_env") {
                env.insert("RUST_LOG".into());
            }
            for line in source.lines() {
                // An `Env` default: `ingest_http_addr: "127.0.0.1:8081".into(),`.
                if let Some((field, rest)) = line.trim().split_once(": \"") {
                    let port = rest.split('"').next().and_then(|a| a.rsplit(':').next());
                    if field.ends_with("_addr") && is_field(field) {
                        if let Some(port) = port.and_then(|p| p.parse().ok()) {
                            p.addr_ports.insert(field.to_uppercase(), port);
                        }
                    }
                }
                let lits = string_literals(line);
                if let (Some(var), Some(addr)) = (
                    lits.iter().find(|l| is_env_name(l) && l.ends_with("_ADDR")),
                    lits.iter().find(|l| l.contains(':') && !is_env_name(l)),
                ) {
                    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                        p.addr_ports.insert(var.clone(), port);
                    }
                }
            }
            for b in bins {
                p.binaries.insert(b.clone(), dir.clone());
                p.env.insert(b.clone(), env.clone());
                p.reads.insert(b, reads.clone());
            }
        }
        for m in string_literals(&platform) {
            if m.starts_with("hie_") {
                p.metrics.insert(m);
            }
        }
        Ok(p)
    }
}

/// `repo[:tag]` → (repo, tag).
fn split_image(image: &str) -> (&str, Option<&str>) {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rfind(':') {
        Some(i) => {
            let cut = image.len() - last.len() + i;
            (&image[..cut], Some(&image[cut + 1..]))
        }
        None => (image, None),
    }
}

struct Checker<'a> {
    project: &'a Project,
    root: &'a Path,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, file: &Path, msg: impl AsRef<str>) {
        let rel = file.strip_prefix(self.root).unwrap_or(file);
        self.problems
            .push(format!("{}: {}", rel.display(), msg.as_ref()));
    }

    /// An image that is the project's or an allowed third party's (with a pinned tag); returns
    /// the third party's setting prefixes, or None for the project's image.
    fn image(&mut self, file: &Path, image: &str) -> Option<&'static [&'static str]> {
        let (repo, tag) = split_image(image);
        if repo == PROJECT_IMAGE {
            return None;
        }
        match THIRD_PARTY.iter().find(|(r, _)| *r == repo) {
            Some((_, prefixes)) => {
                if matches!(tag, None | Some("latest")) {
                    self.problem(file, format!("image {image} must have a pinned tag"));
                }
                Some(prefixes)
            }
            None => {
                self.problem(
                    file,
                    format!(
                        "image {image} is neither {PROJECT_IMAGE} nor an allowed third-party image"
                    ),
                );
                Some(&[])
            }
        }
    }

    fn binary(&mut self, file: &Path, what: &str, command: Option<&Value>) -> Option<String> {
        let first = match command {
            Some(Value::Sequence(s)) => s.first().and_then(Value::as_str).map(str::to_string),
            Some(Value::String(s)) => s.split_whitespace().next().map(str::to_string),
            _ => None,
        };
        match first {
            Some(b) if self.project.binaries.contains_key(&b) => Some(b),
            Some(b) => {
                self.problem(
                    file,
                    format!("{what} runs {b:?}, which is not a binary of the workspace"),
                );
                None
            }
            None => {
                self.problem(
                    file,
                    format!("{what} uses {PROJECT_IMAGE} without a command naming the binary"),
                );
                None
            }
        }
    }

    /// The env of a project container: known names only; its HTTP address binds the binary's port.
    fn project_env(
        &mut self,
        file: &Path,
        what: &str,
        binary: &str,
        env: &BTreeMap<String, String>,
        helpers: &BTreeSet<String>,
    ) -> Option<Listens> {
        let known = self.project.all_env();
        for name in env.keys() {
            if !known.contains(name) && !helpers.contains(name) {
                self.problem(
                    file,
                    format!("{what}: environment variable {name} is not read by any service"),
                );
            }
        }
        let (http_var, http_port) = self.project.http_port(binary)?;
        let reads = self.project.env.get(binary).cloned().unwrap_or_default();
        let mut listens = BTreeSet::new();
        for (var, default_port) in self.project.addr_ports.clone() {
            if !reads.contains(&var) {
                continue;
            }
            match env.get(&var) {
                // Switched off (e.g. INGEST_MLLP_ADDR=off): listens nowhere.
                Some(addr) if !addr.contains(':') => {}
                Some(addr) => {
                    let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                    if port != Some(default_port) {
                        self.problem(
                            file,
                            format!("{what}: {var}={addr} is not {binary}'s port {default_port}"),
                        );
                    }
                    if !addr.starts_with("0.0.0.0:") && !addr.starts_with("[::]:") {
                        self.problem(
                            file,
                            format!("{what}: {var} must bind 0.0.0.0 in a container"),
                        );
                    }
                    listens.insert(default_port);
                }
                None if var == http_var => self.problem(
                    file,
                    format!("{what}: {var} is not set (the default binds 127.0.0.1 only)"),
                ),
                // Unset: the default binds 127.0.0.1, unreachable from outside the container.
                None => {}
            }
        }
        for required in ["KAFKA_BROKERS", "DATABASE_URL", "HIE_JWT_SECRET"] {
            let reads = self
                .project
                .reads
                .get(binary)
                .is_some_and(|e| e.contains(required));
            let alternative =
                required == "HIE_JWT_SECRET" && env.contains_key("HIE_JWT_PUBLIC_KEY_FILE");
            if reads && !env.contains_key(required) && !alternative {
                self.problem(
                    file,
                    format!("{what}: {binary} reads {required}, which is not set"),
                );
            }
        }
        Some(Listens {
            http: http_port,
            all: listens,
        })
    }
}

/// Where a project container listens: its HTTP port, and every port it binds reachably.
struct Listens {
    http: u16,
    all: BTreeSet<u16>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Check everything; returns the problems found, one line each.
pub fn check(root: &Path) -> Vec<String> {
    let project = match Project::read(root) {
        Ok(p) => p,
        Err(e) => return vec![format!("reading the project: {e}")],
    };
    let mut c = Checker {
        project: &project,
        root,
        problems: Vec::new(),
    };
    let compose_dir = root.join("deploy/compose");
    let k8s_dir = root.join("deploy/k8s");
    let mut files = Vec::new();
    files_under(&compose_dir, &mut files);
    files_under(&k8s_dir, &mut files);
    files.sort();
    if files.is_empty() {
        return vec!["no manifests under deploy/compose or deploy/k8s".into()];
    }
    let mut yaml: BTreeMap<PathBuf, Vec<Value>> = BTreeMap::new();
    let mut json: BTreeMap<PathBuf, serde_json::Value> = BTreeMap::new();
    for f in &files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
        let Ok(text) = std::fs::read_to_string(f) else {
            c.problem(f, "not readable as UTF-8");
            continue;
        };
        match ext {
            "yml" | "yaml" => {
                let mut docs = Vec::new();
                for doc in serde_norway::Deserializer::from_str(&text) {
                    match <Value as serde::Deserialize>::deserialize(doc) {
                        Ok(mut v) => {
                            if let Err(e) = v.apply_merge() {
                                c.problem(f, format!("YAML merge keys: {e}"));
                            }
                            if !v.is_null() {
                                docs.push(v);
                            }
                        }
                        Err(e) => c.problem(f, format!("does not parse as YAML: {e}")),
                    }
                }
                yaml.insert(f.clone(), docs);
            }
            "json" => match serde_json::from_str(&text) {
                Ok(v) => {
                    json.insert(f.clone(), v);
                }
                Err(e) => c.problem(f, format!("does not parse as JSON: {e}")),
            },
            _ => {}
        }
    }
    check_dockerfile(&mut c, &compose_dir.join("Dockerfile"));
    let compose_file = compose_dir.join("docker-compose.yml");
    let services = match yaml.get(&compose_file).and_then(|d| d.first()) {
        Some(doc) => check_compose(&mut c, &compose_file, doc),
        None => {
            c.problem(&compose_file, "missing");
            BTreeMap::new()
        }
    };
    let prometheus = compose_dir.join("prometheus/prometheus.yml");
    if let Some(doc) = yaml.get(&prometheus).and_then(|d| d.first()) {
        check_prometheus(&mut c, &prometheus, doc, &services);
    } else {
        c.problem(&prometheus, "missing");
    }
    let mut dashboards = 0;
    for (f, v) in &json {
        if f.starts_with(compose_dir.join("grafana")) {
            dashboards += 1;
            check_dashboard(&mut c, f, v);
        }
    }
    if dashboards == 0 {
        c.problem(&compose_dir, "no Grafana dashboard JSON under grafana/");
    }
    let k8s: Vec<(PathBuf, Value)> = yaml
        .iter()
        .filter(|(f, _)| f.starts_with(&k8s_dir))
        .flat_map(|(f, docs)| docs.iter().map(move |d| (f.clone(), d.clone())))
        .collect();
    check_k8s(&mut c, &k8s);
    c.problems
}

fn check_dockerfile(c: &mut Checker, file: &Path) {
    let Ok(text) = std::fs::read_to_string(file) else {
        c.problem(file, "missing");
        return;
    };
    let text = text.replace("\\\n", " ");
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("FROM") => {
                if let Some(image) = words.iter().skip(1).find(|w| !w.starts_with("--")) {
                    c.image(file, image);
                }
            }
            Some("EXPOSE") => {
                let ports: BTreeSet<u16> = c.project.addr_ports.values().copied().collect();
                for w in &words[1..] {
                    match w.split('/').next().and_then(|p| p.parse::<u16>().ok()) {
                        Some(p) if ports.contains(&p) => {}
                        _ => c.problem(file, format!("EXPOSE {w}: no service listens there")),
                    }
                }
            }
            Some("RUN") => {
                for command in line.split("&&").map(str::trim) {
                    let words: Vec<&str> = command.split_whitespace().collect();
                    if !words.contains(&"cargo") {
                        continue;
                    }
                    for pair in words.windows(2) {
                        if pair[0] == "-p" && !c.project.packages.contains(pair[1]) {
                            c.problem(
                                file,
                                format!("cargo -p {}: no such workspace package", pair[1]),
                            );
                        }
                    }
                }
                for w in &words {
                    if let Some(bin) = w.strip_prefix("target/release/") {
                        if !c.project.binaries.contains_key(bin) {
                            c.problem(file, format!("target/release/{bin}: no such binary"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Compose service name → (binary, HTTP port) for the project's services.
type ComposeServices = BTreeMap<String, (Option<String>, Option<u16>)>;

fn env_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                if let Some(k) = k.as_str() {
                    out.insert(k.to_string(), scalar(v).unwrap_or_default());
                }
            }
        }
        Some(Value::Sequence(s)) => {
            for item in s.iter().filter_map(Value::as_str) {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                out.insert(k.to_string(), v.to_string());
            }
        }
        _ => {}
    }
    out
}

fn container_ports(v: Option<&Value>) -> Vec<u16> {
    let Some(Value::Sequence(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| match i {
            Value::Mapping(_) => i.get("target").and_then(scalar),
            other => scalar(other),
        })
        .filter_map(|s| {
            let s = s.split('/').next().unwrap_or_default().to_string();
            s.rsplit(':').next().and_then(|p| p.parse().ok())
        })
        .collect()
}

fn check_compose(c: &mut Checker, file: &Path, doc: &Value) -> ComposeServices {
    let mut out = ComposeServices::new();
    let Some(Value::Mapping(services)) = doc.get("services") else {
        c.problem(file, "no services");
        return out;
    };
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    for (name, svc) in services {
        let name = name.as_str().unwrap_or_default().to_string();
        let what = format!("service {name}");
        let Some(image) = svc.get("image").and_then(Value::as_str) else {
            c.problem(file, format!("{what} has no image"));
            continue;
        };
        let env = env_map(svc.get("environment"));
        match c.image(file, image) {
            None => {
                match get(svc, &["build", "dockerfile"]).and_then(Value::as_str) {
                    Some(df) => {
                        let context = get(svc, &["build", "context"])
                            .and_then(Value::as_str)
                            .unwrap_or(".");
                        let path = file.parent().unwrap_or(file).join(context).join(df);
                        if !path.exists() {
                            c.problem(
                                file,
                                format!(
                                    "{what}: build.dockerfile {df} does not exist under {context}"
                                ),
                            );
                        }
                    }
                    None => c.problem(
                        file,
                        format!("{what}: {PROJECT_IMAGE} must be built here (build.dockerfile)"),
                    ),
                }
                let binary = c.binary(file, &what, svc.get("command"));
                let listens = binary
                    .as_deref()
                    .and_then(|b| c.project_env(file, &what, b, &env, &BTreeSet::new()));
                let port = listens.as_ref().map(|l| l.http);
                let mut ports = container_ports(svc.get("ports"));
                ports.extend(container_ports(svc.get("expose")));
                for p in &ports {
                    if !listens.as_ref().is_some_and(|l| l.all.contains(p)) {
                        c.problem(
                            file,
                            format!("{what} publishes port {p}, where it does not listen"),
                        );
                    }
                }
                if let Some(test) = get(svc, &["healthcheck", "test"]) {
                    let text = match test {
                        Value::Sequence(s) => {
                            s.iter().filter_map(scalar).collect::<Vec<_>>().join(" ")
                        }
                        other => scalar(other).unwrap_or_default(),
                    };
                    let ok = port.is_some_and(|p| text.contains(&format!(":{p}/healthz")));
                    if !ok {
                        c.problem(
                            file,
                            format!("{what}: the healthcheck must call /healthz on its port"),
                        );
                    }
                }
                out.insert(name.clone(), (binary, port));
            }
            Some(prefixes) => {
                for k in env.keys() {
                    if !prefixes.iter().any(|p| k.starts_with(p)) {
                        c.problem(file, format!("{what}: {k} is not a setting of {image}"));
                    }
                }
                out.insert(name.clone(), (None, None));
            }
        }
        if let Some(Value::Sequence(vols)) = svc.get("volumes") {
            for v in vols.iter().filter_map(Value::as_str) {
                if v.starts_with("./") || v.starts_with("../") {
                    let src = v.split(':').next().unwrap_or_default();
                    if !file.parent().unwrap_or(file).join(src).exists() {
                        c.problem(file, format!("{what}: volume source {src} does not exist"));
                    }
                }
            }
        }
        let deps: Vec<String> = match svc.get("depends_on") {
            Some(Value::Sequence(s)) => s
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            Some(Value::Mapping(m)) => m
                .keys()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        for d in deps {
            if !names.contains(&d) {
                c.problem(
                    file,
                    format!("{what} depends on {d}, which is not a service"),
                );
            }
        }
    }
    // Every service of the project runs somewhere.
    for b in ["ingest", "projector", "query-api"] {
        if c.project.binaries.contains_key(b)
            && !out.values().any(|(bin, _)| bin.as_deref() == Some(b))
        {
            c.problem(file, format!("no service runs {b}"));
        }
    }
    out
}

fn check_prometheus(c: &mut Checker, file: &Path, doc: &Value, services: &ComposeServices) {
    let Some(Value::Sequence(jobs)) = doc.get("scrape_configs") else {
        c.problem(file, "no scrape_configs");
        return;
    };
    let mut scraped = BTreeSet::new();
    for job in jobs {
        let path = job
            .get("metrics_path")
            .and_then(Value::as_str)
            .unwrap_or("/metrics");
        if path != "/metrics" {
            c.problem(
                file,
                format!("metrics_path {path}: the services serve /metrics"),
            );
        }
        let Some(Value::Sequence(statics)) = job.get("static_configs") else {
            continue;
        };
        for target in statics
            .iter()
            .filter_map(|s| s.get("targets"))
            .filter_map(Value::as_sequence)
            .flatten()
            .filter_map(Value::as_str)
        {
            let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
            match services.get(host) {
                Some((_, Some(p))) if p.to_string() == port => {
                    scraped.insert(host.to_string());
                }
                Some(_) => c.problem(
                    file,
                    format!("target {target}: {host} does not serve /metrics on {port}"),
                ),
                None => c.problem(
                    file,
                    format!("target {target}: {host} is not a compose service"),
                ),
            }
        }
    }
    for (name, (binary, _)) in services {
        if binary.is_some() && !scraped.contains(name) {
            c.problem(file, format!("service {name} is not scraped"));
        }
    }
}

fn check_dashboard(c: &mut Checker, file: &Path, v: &serde_json::Value) {
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(v, &mut exprs);
    if v.get("panels").is_some() && exprs.is_empty() {
        c.problem(file, "a dashboard without queries");
    }
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("hie_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| c.project.metrics.contains(*b))
                .unwrap_or(&name);
            if !c.project.metrics.contains(base) {
                c.problem(
                    file,
                    format!("metric {name} is not exported by any service"),
                );
            }
        }
    }
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    env_map(v)
}

/// (kind, name, pod labels, container ports as (name, number)).
type Workload = (String, String, BTreeMap<String, String>, Vec<(String, u16)>);

fn check_k8s(c: &mut Checker, docs: &[(PathBuf, Value)]) {
    if docs.is_empty() {
        c.problems.push("deploy/k8s: no manifests".into());
        return;
    }
    let kind = |v: &Value| {
        v.get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let name = |v: &Value| {
        get(v, &["metadata", "name"])
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // ConfigMap/Secret name → keys.
    let mut config: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (_, d) in docs {
        let k = kind(d);
        if k == "ConfigMap" || k == "Secret" {
            let mut keys = BTreeSet::new();
            for field in ["data", "stringData"] {
                if let Some(Value::Mapping(m)) = d.get(field) {
                    keys.extend(m.keys().filter_map(|k| k.as_str().map(str::to_string)));
                }
            }
            config.insert((k, name(d)), keys);
        }
    }
    let mounted_secrets: BTreeSet<String> = docs
        .iter()
        .filter_map(|(_, d)| get(d, &["spec", "template", "spec", "volumes"]))
        .filter_map(Value::as_sequence)
        .flatten()
        .filter_map(|v| get(v, &["secret", "secretName"]).and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let known = c.project.all_env();
    for ((k, n), keys) in &config {
        let file = docs
            .iter()
            .find(|(_, d)| kind(d) == *k && name(d) == *n)
            .map(|(f, _)| f.clone())
            .unwrap_or_default();
        if k == "Secret" && mounted_secrets.contains(n) {
            continue; // keys are file names
        }
        for key in keys {
            // A secret may hold a value mounted under another variable's name.
            let used_elsewhere = docs.iter().any(|(_, d)| {
                serde_norway::to_string(d).is_ok_and(|s| s.contains(&format!("key: {key}")))
            });
            let secret_value = k == "Secret" && used_elsewhere;
            if !known.contains(key) && !secret_value {
                c.problem(
                    &file,
                    format!("{k} {n}: {key} is not a setting any service reads"),
                );
            }
        }
    }
    // Workloads: pod labels and container ports (name and number), for Services and PDBs.
    let mut workloads: Vec<Workload> = Vec::new();
    for (file, d) in docs {
        let k = kind(d);
        if k != "Deployment" && k != "StatefulSet" {
            continue;
        }
        let what = format!("{k} {}", name(d));
        let pod_labels = labels(get(d, &["spec", "template", "metadata", "labels"]));
        let selector = labels(get(d, &["spec", "selector", "matchLabels"]));
        if selector.iter().any(|(k, v)| pod_labels.get(k) != Some(v)) {
            c.problem(
                file,
                format!("{what}: selector does not match its pod labels"),
            );
        }
        let mut ports = Vec::new();
        let containers = get(d, &["spec", "template", "spec", "containers"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for ct in &containers {
            let cname = ct.get("name").and_then(Value::as_str).unwrap_or_default();
            let what = format!("{what} container {cname}");
            let image = ct.get("image").and_then(Value::as_str).unwrap_or_default();
            if c.image(file, image).is_some() {
                c.problem(
                    file,
                    format!("{what}: only {PROJECT_IMAGE} runs in the project's workloads"),
                );
                continue;
            }
            let Some(binary) = c.binary(file, &what, ct.get("command")) else {
                continue;
            };
            let mut env = BTreeMap::new();
            let mut helpers = BTreeSet::new();
            let mut values = Vec::new();
            for e in ct
                .get("env")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let n = e
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let value = e.get("value").and_then(scalar).unwrap_or_default();
                values.push(value.clone());
                if let Some(r) = get(e, &["valueFrom", "secretKeyRef"])
                    .or(get(e, &["valueFrom", "configMapKeyRef"]))
                {
                    let kind_of = if get(e, &["valueFrom", "secretKeyRef"]).is_some() {
                        "Secret"
                    } else {
                        "ConfigMap"
                    };
                    let (rn, rk) = (
                        r.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        r.get("key")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    );
                    if !config
                        .get(&(kind_of.to_string(), rn.clone()))
                        .is_some_and(|keys| keys.contains(&rk))
                    {
                        c.problem(file, format!("{what}: {n} refers to {kind_of} {rn} key {rk}, which no manifest or template defines"));
                    }
                }
                env.insert(n, value);
            }
            for name in env.keys() {
                if values.iter().any(|v| v.contains(&format!("$({name})"))) {
                    helpers.insert(name.clone());
                }
            }
            for from in ct
                .get("envFrom")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                for (field, kind_of) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
                    if let Some(n) = get(from, &[field, "name"]).and_then(Value::as_str) {
                        match config.get(&(kind_of.to_string(), n.to_string())) {
                            Some(keys) => {
                                for k in keys {
                                    env.entry(k.clone()).or_default();
                                }
                            }
                            None => c.problem(
                                file,
                                format!("{what}: envFrom {kind_of} {n} is not defined"),
                            ),
                        }
                    }
                }
            }
            let listens = c.project_env(file, &what, &binary, &env, &helpers);
            let http = listens.as_ref().map(|l| l.http);
            for p in ct
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let number = p.get("containerPort").and_then(Value::as_u64).unwrap_or(0) as u16;
                let pname = p
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if !listens.as_ref().is_some_and(|l| l.all.contains(&number)) {
                    c.problem(
                        file,
                        format!("{what}: containerPort {number}, where it does not listen"),
                    );
                }
                ports.push((pname, number));
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                match get(ct, &[probe, "httpGet"]) {
                    Some(h) => {
                        let path = h.get("path").and_then(Value::as_str).unwrap_or_default();
                        let p = h.get("port").and_then(scalar).unwrap_or_default();
                        let matches = ports.iter().any(|(n, num)| {
                            Some(*num) == http && (*n == p || num.to_string() == p)
                        });
                        if path != "/healthz" || !matches {
                            c.problem(
                                file,
                                format!(
                                    "{what}: {probe} must GET /healthz on the container's port"
                                ),
                            );
                        }
                    }
                    None => c.problem(file, format!("{what}: no {probe} on /healthz")),
                }
            }
            if k == "StatefulSet" && binary == "projector" {
                let replicas = get(d, &["spec", "replicas"]).and_then(Value::as_u64);
                let n = env
                    .get("PROJECTOR_INSTANCE")
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if n.is_none() || n != replicas {
                    c.problem(
                        file,
                        format!(
                            "{what}: PROJECTOR_INSTANCE's count must equal replicas ({replicas:?})"
                        ),
                    );
                }
            }
        }
        workloads.push((k, name(d), pod_labels, ports));
    }
    let matches = |sel: &BTreeMap<String, String>, pod: &BTreeMap<String, String>| {
        !sel.is_empty() && sel.iter().all(|(k, v)| pod.get(k) == Some(v))
    };
    for (file, d) in docs {
        let what = format!("{} {}", kind(d), name(d));
        match kind(d).as_str() {
            "Service" => {
                let sel = labels(get(d, &["spec", "selector"]));
                let Some(w) = workloads.iter().find(|w| matches(&sel, &w.2)) else {
                    c.problem(file, format!("{what}: selects no workload"));
                    continue;
                };
                for p in get(d, &["spec", "ports"])
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    let target = p
                        .get("targetPort")
                        .or(p.get("port"))
                        .and_then(scalar)
                        .unwrap_or_default();
                    if !w
                        .3
                        .iter()
                        .any(|(n, num)| *n == target || num.to_string() == target)
                    {
                        c.problem(
                            file,
                            format!("{what}: targetPort {target} is not a port of {}", w.1),
                        );
                    }
                }
            }
            "PodDisruptionBudget" => {
                let sel = labels(get(d, &["spec", "selector", "matchLabels"]));
                if !workloads.iter().any(|w| matches(&sel, &w.2)) {
                    c.problem(file, format!("{what}: selects no workload"));
                }
            }
            "HorizontalPodAutoscaler" => {
                let target_kind = get(d, &["spec", "scaleTargetRef", "kind"])
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let target = get(d, &["spec", "scaleTargetRef", "name"])
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !workloads
                    .iter()
                    .any(|w| w.0 == target_kind && w.1 == target)
                {
                    c.problem(
                        file,
                        format!("{what}: scales {target_kind} {target}, which is not defined"),
                    );
                }
            }
            "StatefulSet" => {
                let svc = get(d, &["spec", "serviceName"])
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !docs
                    .iter()
                    .any(|(_, s)| kind(s) == "Service" && name(s) == svc)
                {
                    c.problem(file, format!("{what}: serviceName {svc} is not a Service"));
                }
            }
            _ => {}
        }
    }
    for b in ["ingest", "projector", "query-api"] {
        let runs = docs.iter().any(|(_, d)| {
            get(d, &["spec", "template", "spec", "containers"])
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .any(|ct| {
                    get(ct, &["command"])
                        .and_then(Value::as_sequence)
                        .and_then(|s| s.first())
                        .and_then(Value::as_str)
                        == Some(b)
                })
        });
        if !runs {
            c.problems.push(format!("deploy/k8s: no workload runs {b}"));
        }
    }
    // Kustomization resources exist.
    for (file, d) in docs {
        if kind(d) == "Kustomization" {
            for r in d
                .get("resources")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !file.parent().unwrap_or(file).join(r).exists() {
                    c.problem(file, format!("resource {r} does not exist"));
                }
            }
        }
    }
}
