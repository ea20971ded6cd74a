//! What operators see: every process's `/metrics` passes `promtool check metrics` and carries the
//! families the dashboards use, and one W3C trace id follows a record from its ingest through its
//! projection to the read that waits for it, in the logs and in the spans exported over OTLP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hie_tests::{urlencode, Stack, SERVICES};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bundle;

const AA: &str = "urn:oid:2.16.840.1.113883.3.7001";

/// A source registered and a clinician account created; returns (source key, clinician token).
async fn setup(stack: &Stack) -> (String, String) {
    let key = stack.register_source("obs-src", "org-src", AA).await;
    let clinician = stack.user_token("dr-obs", "org-src", &["physician"]).await;
    (key, clinician)
}

async fn post(
    stack: &Stack,
    key: &str,
    body: &Value,
    traceparent: Option<&str>,
) -> (Value, String) {
    let mut request = stack
        .http
        .post(format!("{}/v1/sources/obs-src/fhir", stack.ingest))
        .bearer_auth(key)
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answered = r
        .headers()
        .get("traceparent")
        .expect("ingest answers with its traceparent")
        .to_str()
        .unwrap()
        .to_string();
    (r.json().await.unwrap(), answered)
}

async fn scrape(stack: &Stack, base: &str) -> String {
    let r = stack
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

fn promtool_check(service: &str, exposition: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; tests/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics on {service}'s /metrics: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metrics_endpoint_passes_promtool_and_has_the_dashboard_families() {
    let stack = Stack::start(&[]).await;
    let (key, clinician) = setup(&stack).await;
    let mut body = bundle(
        AA,
        "MRN-OBS-1",
        "p1",
        &[("o1", "2026-01-01T00:00:00Z", 1.0)],
    );
    // One entry that is rejected, so the dead-letter counters have a sample.
    body["entry"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource": {"resourceType": "Observation", "id": "orphan"}}));
    post(&stack, &key, &body, None).await;
    let r = stack
        .http
        .post(format!("{}/v1/consents", stack.ingest))
        .bearer_auth(&key)
        .json(
            &json!({"patient": {"assigning_authority": AA, "mrn": "MRN-OBS-1"},
            "organization_id": "*", "decision": "grant", "method": "written"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let consented: Value = r.json().await.unwrap();
    let position = consented["position"].as_str().unwrap();
    let found: Value = stack
        .http
        .get(format!(
            "{}/v1/patients?identifier={}",
            stack.query,
            urlencode(&format!("{AA}|MRN-OBS-1"))
        ))
        .bearer_auth(&clinician)
        .header("x-min-position", position)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let patient = found["patients"][0]["id"].as_str().unwrap().to_string();
    let r = stack
        .http
        .get(format!("{}/v1/patients/{patient}/records", stack.query))
        .bearer_auth(&clinician)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = stack
        .http
        .get(format!("{}/no/such/route", stack.query))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let expected: [(&str, &str, &[&str]); 3] = [
        (
            "ingest",
            &stack.ingest,
            &[
                r#"hie_http_requests_total{method="POST",route="/v1/sources/{source_id}/fhir",status="202"} 1"#,
                r#"hie_http_request_duration_seconds_bucket{method="PUT",route="/v1/sources/{source_id}""#,
                r#"hie_ingest_records_published_total{channel="fhir_bundle",source="obs-src"} 2"#,
                r#"hie_ingest_records_rejected_total{channel="fhir_bundle",source="obs-src"} 1"#,
                r#"hie_kafka_delivery_seconds_bucket{topic="hie.records""#,
                r#"hie_kafka_delivery_seconds_count{topic="hie.deadletter"} 1"#,
                "hie_kafka_producer_queue_messages ",
            ],
        ),
        (
            "projector",
            &stack.projector,
            &[
                r#"hie_projector_consumer_lag_messages{partition=""#,
                "hie_projector_freshness_seconds_bucket",
                "hie_projector_batch_size_bucket",
                "hie_projector_events_applied_total",
                r#"hie_http_requests_total{method="GET",route="/healthz",status="200"}"#,
            ],
        ),
        (
            "query-api",
            &stack.query,
            &[
                r#"hie_http_requests_total{method="GET",route="/v1/patients/{id}/records",status="200"} 1"#,
                r#"hie_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
                r#"hie_query_access_events_total{basis="consent","#,
                r#"hie_kafka_delivery_seconds_count{topic="hie.access"}"#,
            ],
        ),
    ];
    // The projector applies the events after the read above; lag and freshness need one batch.
    assert!(
        stack
            .wait_for_log("projector", "batch applied", Duration::from_secs(10))
            .await
    );
    for (service, base, families) in expected {
        let text = scrape(&stack, base).await;
        promtool_check(service, &text);
        for family in families {
            assert!(
                text.contains(family),
                "{service}'s /metrics lacks `{family}`:\n{text}"
            );
        }
        assert!(
            !text.contains(&patient) && !text.contains("MRN-OBS-1"),
            "{service}'s metrics carry a patient id or MRN"
        );
    }
}

/// A tiny OTLP/HTTP receiver: keeps every request body, answers 200 with an empty message.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[end + 4..end + 4 + length].to_vec();
                    buf.drain(..end + 4 + length);
                    kept.lock().unwrap().push(body);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, bodies)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_covers_ingest_projection_and_the_read_that_waits() {
    let (endpoint, exported) = otlp_receiver().await;
    let stack = Stack::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ])
    .await;
    let (key, clinician) = setup(&stack).await;

    // The caller's trace is continued: ingest, the projector and the query API all log its id.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let body = bundle(
        AA,
        "MRN-OBS-2",
        "p2",
        &[("o2", "2026-01-01T00:00:00Z", 2.0)],
    );
    let (answer, answered) = post(&stack, &key, &body, Some(&traceparent)).await;
    assert!(
        answered.contains(&trace_id),
        "ingest answered with another trace: {answered}"
    );
    let r = stack
        .http
        .get(format!(
            "{}/v1/patients?identifier={}",
            stack.query,
            urlencode(&format!("{AA}|MRN-OBS-2"))
        ))
        .bearer_auth(&clinician)
        .header("x-min-position", answer["position"].as_str().unwrap())
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for service in SERVICES {
        assert!(
            stack
                .wait_for_log(service, &trace_id, Duration::from_secs(10))
                .await,
            "{service} never logged trace {trace_id}:\n{}",
            stack.log(service)
        );
    }

    // Without a caller's trace, ingest starts one and the projector continues it.
    let body = bundle(
        AA,
        "MRN-OBS-3",
        "p3",
        &[("o3", "2026-01-01T00:00:00Z", 3.0)],
    );
    let (_, answered) = post(&stack, &key, &body, None).await;
    let started = platform::telemetry::trace_id_of(&answered).expect("a valid traceparent");
    assert_ne!(started, trace_id);
    assert!(
        stack
            .wait_for_log("projector", &started, Duration::from_secs(10))
            .await,
        "the projector never logged ingest's trace {started}"
    );

    // The same trace's spans reach the OTLP endpoint from all three processes.
    let id = hex_bytes(&trace_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut missing: Vec<&str> = SERVICES.to_vec();
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bodies = exported.lock().unwrap();
        missing.retain(|service| {
            !bodies
                .iter()
                .any(|b| contains(b, service.as_bytes()) && contains(b, &id))
        });
    }
    assert!(
        missing.is_empty(),
        "no span of trace {trace_id} exported over OTLP by {missing:?}"
    );
}
