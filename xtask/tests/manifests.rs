//! `deploy/check-manifests` (`cargo xtask check-manifests`) as a test, so `tests/run` (cargo
//! nextest) covers the deploy manifests.

use std::path::Path;

#[test]
fn deploy_manifests_name_only_what_the_project_has() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = xtask::manifests::check(&root);
    assert!(
        problems.is_empty(),
        "deploy manifests:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_reads_the_project_from_its_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = xtask::manifests::Project::read(&root).unwrap();
    for b in ["ingest", "projector", "query-api"] {
        assert!(p.binaries.contains_key(b), "{b}: {:?}", p.binaries.keys());
    }
    assert_eq!(p.http_port("ingest").map(|p| p.1), Some(8081));
    assert_eq!(p.http_port("projector").map(|p| p.1), Some(9102));
    assert_eq!(p.http_port("query-api").map(|p| p.1), Some(8080));
    assert!(p.env["projector"].contains("PROJECTOR_INSTANCE"));
    assert!(p.metrics.contains("hie_projector_freshness_seconds"));
}

#[test]
fn the_check_finds_what_the_project_does_not_have() {
    // A copy of the manifests with mistakes planted in it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = std::env::temp_dir().join(format!("hie-manifests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy(&root, &tmp, &["Cargo.toml"]);
    for m in xtask::manifests::workspace_members(&root).unwrap() {
        copy_dir(&root.join(&m), &tmp.join(&m), &["src", "Cargo.toml"]);
    }
    copy_dir(
        &root.join("deploy/compose"),
        &tmp.join("deploy/compose"),
        &[],
    );
    copy_dir(&root.join("deploy/k8s"), &tmp.join("deploy/k8s"), &[]);
    let edit = |rel: &str, from: &str, to: &str| {
        let p = tmp.join(rel);
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(from), "{rel} has no {from:?}");
        std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
    };
    edit(
        "deploy/compose/docker-compose.yml",
        "INGEST_HTTP_ADDR: 0.0.0.0:8081",
        "INGEST_HTTP_ADDR: 0.0.0.0:8082\n      INGEST_TURBO: \"1\"",
    );
    edit(
        "deploy/compose/docker-compose.yml",
        "image: postgres:17",
        "image: mysql:8",
    );
    edit(
        "deploy/compose/docker-compose.yml",
        "\"2575:2575\"",
        "\"2576:2576\"",
    );
    edit(
        "deploy/k8s/projector.yaml",
        "value: $(POD_INDEX)/3",
        "value: $(POD_INDEX)/4",
    );
    edit(
        "deploy/k8s/query-api.yaml",
        "command: [\"query-api\"]",
        "command: [\"query-server\"]",
    );
    edit(
        "deploy/compose/grafana/dashboards/hie.json",
        "hie_projector_batch_seconds_bucket",
        "hie_projector_batch_millis_bucket",
    );
    edit(
        "deploy/compose/prometheus/prometheus.yml",
        "query-api:8080",
        "query-api:9090",
    );
    let problems = xtask::manifests::check(&tmp).join("\n");
    let _ = std::fs::remove_dir_all(&tmp);
    for expected in [
        "INGEST_HTTP_ADDR=0.0.0.0:8082 is not ingest's port 8081",
        "INGEST_TURBO is not read by any service",
        "image mysql:8",
        "publishes port 2576, where it does not listen",
        "PROJECTOR_INSTANCE's count must equal replicas",
        "\"query-server\", which is not a binary",
        "metric hie_projector_batch_millis_bucket",
        "target query-api:9090",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
}

fn copy(from: &Path, to: &Path, files: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path, only: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !only.is_empty() && !only.contains(&name.as_str()) {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(&name), &[]);
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}
