//! Re-submitting a dead letter through ingest's public interfaces, so it is validated again like
//! new input: FHIR over HTTP with the source's API key, HL7 v2 over MLLP. What ingest answered is
//! recorded as a `DeadLetterResubmitted` event on `hie.deadletter` (events first); the projector
//! marks the letter `resubmitted`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::producer::FutureProducer;
use schemas::{now_micros, topics, DeadLetterResubmitted};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::store::Letter;

/// Where and how to re-submit.
pub struct Target {
    pub ingest: String,
    pub mllp: String,
    /// Source id → API key; `*` is the key for any source.
    pub api_keys: BTreeMap<String, String>,
    pub http: reqwest::Client,
    pub producer: FutureProducer,
    pub operator: String,
}

/// What ingest made of one re-submission.
#[derive(Debug)]
pub enum Outcome {
    Accepted {
        position: Option<String>,
    },
    /// Ingest refused it again (and dead-lettered it anew): `reason` is ingest's, without PHI.
    Rejected {
        reason: String,
    },
    /// It did not reach a verdict (no key, ingest or the broker unavailable): the letter stays
    /// open and nothing is recorded.
    Failed {
        error: String,
    },
}

/// How a payload goes back in.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Mllp,
    /// Body and content type for `POST /v1/sources/{id}/fhir`.
    Fhir(String, &'static str),
}

/// Decide by content, not only by channel: a drop-folder letter is an NDJSON line, a Bundle
/// entry or an HL7 message.
fn route(payload: &[u8]) -> Result<Route> {
    let trimmed = payload.trim_ascii_start();
    if trimmed.starts_with(b"MSH") {
        return Ok(Route::Mllp);
    }
    let value: Value = serde_json::from_slice(trimmed)
        .map_err(|_| anyhow!("the payload is neither an HL7 v2 message nor JSON"))?;
    if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        return Ok(Route::Fhir(value.to_string(), "application/fhir+json"));
    }
    if value.get("resource").is_some() {
        // A rejected Bundle entry: sent back alone, in a batch Bundle of its own.
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [value]});
        return Ok(Route::Fhir(bundle.to_string(), "application/fhir+json"));
    }
    if value.get("resourceType").is_some() {
        return Ok(Route::Fhir(value.to_string(), "application/fhir+ndjson"));
    }
    bail!("the payload is JSON but neither a FHIR resource, a Bundle nor a Bundle entry")
}

/// Which interface a payload would go through, for the dry run.
pub fn via(payload: &[u8]) -> &'static str {
    match route(payload) {
        Ok(Route::Mllp) => "hl7v2_mllp",
        Ok(Route::Fhir(..)) => "fhir_http",
        Err(_) => "unroutable",
    }
}

impl Target {
    /// Send `payload` (the letter's, or the operator's edit) and record the verdict.
    pub async fn resubmit(
        &self,
        mllp: &mut Option<Mllp>,
        letter: &Letter,
        payload: &[u8],
        edited: bool,
    ) -> Outcome {
        let route = match route(payload) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    error: e.to_string(),
                }
            }
        };
        let (via, outcome) = match route {
            Route::Mllp => ("hl7v2_mllp", self.send_mllp(mllp, payload).await),
            Route::Fhir(body, content_type) => (
                "fhir_http",
                self.send_fhir(letter, body, content_type).await,
            ),
        };
        let outcome = outcome.unwrap_or_else(|e| Outcome::Failed {
            error: format!("{e:#}"),
        });
        let (name, reason, position) = match &outcome {
            Outcome::Accepted { position } => ("accepted", None, position.clone()),
            Outcome::Rejected { reason } => ("rejected", Some(reason.clone()), None),
            Outcome::Failed { .. } => return outcome,
        };
        let event = DeadLetterResubmitted {
            event_id: uuid::Uuid::new_v4().to_string(),
            resubmitted_at: now_micros(),
            dead_letter_id: letter.id.clone(),
            via: via.to_string(),
            outcome: name.to_string(),
            reason,
            position,
            payload_edited: edited,
            resubmitted_by: self.operator.clone(),
        };
        let key = letter
            .source
            .clone()
            .unwrap_or_else(|| letter.channel.clone());
        match platform::kafka::publish(&self.producer, topics::DEAD_LETTERS.name, &key, &event)
            .await
        {
            Ok(_) => outcome,
            Err(e) => Outcome::Failed {
                error: format!(
                    "ingest answered {name}, but the re-submission could not be recorded ({e}); \
                     the letter stays open"
                ),
            },
        }
    }

    async fn send_fhir(
        &self,
        letter: &Letter,
        body: String,
        content_type: &str,
    ) -> Result<Outcome> {
        let source = letter
            .source
            .as_deref()
            .ok_or_else(|| anyhow!("the dead letter names no source"))?;
        let key = self
            .api_keys
            .get(source)
            .or_else(|| self.api_keys.get("*"))
            .ok_or_else(|| {
                anyhow!(
                    "no API key for source {source} (--api-key, HIE_SOURCE_API_KEY or --api-keys)"
                )
            })?;
        let resp = self
            .http
            .post(format!("{}/v1/sources/{source}/fhir", self.ingest))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .context("POST to ingest")?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let first_error = |body: &Value| {
            body["rejected"][0]["error"]
                .as_str()
                .unwrap_or("rejected")
                .to_string()
        };
        Ok(match status {
            202 => match body["rejected"].as_array() {
                Some(rejected) if !rejected.is_empty() => Outcome::Rejected {
                    reason: first_error(&body),
                },
                _ => Outcome::Accepted {
                    position: body["position"].as_str().map(str::to_string),
                },
            },
            // Transaction rejected: ingest dead-lettered the entries again.
            422 => Outcome::Rejected {
                reason: first_error(&body),
            },
            // Refused as a whole (malformed, too large, unknown type): ingest dead-lettered the
            // body again.
            400 | 413 | 415 => Outcome::Rejected {
                reason: body["message"].as_str().unwrap_or("refused").to_string(),
            },
            _ => Outcome::Failed {
                error: format!(
                    "ingest answered HTTP {status} {}: {}",
                    body["error"].as_str().unwrap_or(""),
                    body["message"].as_str().unwrap_or("")
                ),
            },
        })
    }

    async fn send_mllp(&self, conn: &mut Option<Mllp>, message: &[u8]) -> Result<Outcome> {
        if conn.is_none() {
            *conn = Some(Mllp::connect(&self.mllp).await?);
        }
        let ack = match conn.as_mut().expect("connected").exchange(message).await {
            Ok(ack) => ack,
            Err(e) => {
                // The connection is not reused after an error.
                *conn = None;
                return Err(e);
            }
        };
        let code = segment_field(&ack, "MSA", 1).unwrap_or_default();
        let err_code = segment_field(&ack, "ERR", 3).unwrap_or_default();
        let reason = segment_field(&ack, "ERR", 8).unwrap_or_else(|| "rejected".into());
        Ok(match code.as_str() {
            "AA" | "CA" => Outcome::Accepted { position: None },
            // 207: the log or the registry was unavailable, nothing was dead-lettered.
            _ if err_code.starts_with("207") => Outcome::Failed { error: reason },
            "AE" | "AR" | "CE" | "CR" => Outcome::Rejected { reason },
            other => Outcome::Failed {
                error: format!("unexpected ACK code {other:?}"),
            },
        })
    }
}

/// Field `n` of the first segment `name` of an ACK (our own ACKs use `|` and `^`).
fn segment_field(ack: &str, name: &str, n: usize) -> Option<String> {
    let seg = ack.split('\r').find(|s| s.starts_with(name))?;
    let v = seg.split('|').nth(n)?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// One MLLP connection to ingest, reused for every HL7 letter of a run.
pub struct Mllp {
    stream: BufReader<TcpStream>,
}

impl Mllp {
    async fn connect(addr: &str) -> Result<Mllp> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to MLLP {addr} timed out"))?
            .with_context(|| format!("connecting to MLLP {addr} (INGEST_MLLP_ADDR)"))?;
        Ok(Mllp {
            stream: BufReader::new(stream),
        })
    }

    /// Sends the message's bytes as they are (an HL7 message may be Latin-1), LF as CR.
    async fn exchange(&mut self, message: &[u8]) -> Result<String> {
        use platform::mllp::{self, Frame};
        let message: Vec<u8> = message
            .iter()
            .map(|b| if *b == b'\n' { b'\r' } else { *b })
            .collect();
        self.stream
            .get_mut()
            .write_all(&mllp::wrap(&message))
            .await?;
        let ack = tokio::time::timeout(
            Duration::from_secs(30),
            mllp::read(&mut self.stream, 1 << 20),
        )
        .await
        .map_err(|_| anyhow!("no ACK within 30 s"))??;
        match ack {
            Some(Frame::Message(ack)) => Ok(String::from_utf8_lossy(&ack).into_owned()),
            Some(Frame::TooLarge { .. }) => bail!("the ACK is over 1 MiB"),
            None => bail!("ingest closed the connection without an ACK"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_go_back_by_what_they_are() {
        assert_eq!(route(b"MSH|^~\\&|A|B\rPID|").unwrap(), Route::Mllp);
        match route(br#"{"resourceType":"Observation","id":"o"}"#).unwrap() {
            Route::Fhir(body, ct) => {
                assert_eq!(ct, "application/fhir+ndjson");
                assert!(body.contains("Observation"));
            }
            r => panic!("{r:?}"),
        }
        match route(br#"{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"}}"#).unwrap() {
            Route::Fhir(body, ct) => {
                assert_eq!(ct, "application/fhir+json");
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["type"], "batch");
                assert_eq!(v["entry"][0]["fullUrl"], "urn:uuid:1");
            }
            r => panic!("{r:?}"),
        }
        assert!(route(b"not json").is_err());
        assert!(route(b"[1,2]").is_err());
    }

    #[test]
    fn ack_fields() {
        let ack = "MSH|^~\\&|HIE|HIE|A|B|2024||ACK^A04|x|P|2.5.1\rMSA|AE|MG1\rERR||MSH^1|204^^HL70357|E||||the sending facility (MSH-4) is not a registered source\r";
        assert_eq!(segment_field(ack, "MSA", 1).as_deref(), Some("AE"));
        assert_eq!(
            segment_field(ack, "ERR", 3).as_deref(),
            Some("204^^HL70357")
        );
        assert!(segment_field(ack, "ERR", 8)
            .unwrap()
            .contains("not a registered"));
    }
}
