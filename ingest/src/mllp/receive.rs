//! One HL7 v2 message in, its ACK out: find the source (MSH-4), map to records, publish, answer.

use schemas::{now_micros, topics, SourceRegistered};

use crate::fhir::SourceContext;
use crate::hl7::{self, AckCode, Header, Message};
use crate::intake::{self, Provenance};
use crate::publish::Publisher;
use crate::sources::Registry;

pub const CHANNEL: &str = "hl7v2_mllp";

pub struct Receiver {
    pub publisher: Publisher,
    pub registry: Registry,
    pub limits: crate::limits::Limits,
}

impl Receiver {
    /// The ACK for `bytes`. Anything not accepted is on the dead-letter topic before the ACK
    /// goes out, except when the broker itself is unavailable (then the sender must resend).
    pub async fn receive(&self, bytes: &[u8], peer: &Peer) -> String {
        let received_at = now_micros();
        let text = decode(bytes);
        let msg = match Message::parse(&text) {
            Ok(msg) => msg,
            Err(e) => {
                let reason = format!("unreadable HL7 v2 message: {e}");
                return self
                    .reject(
                        None,
                        None,
                        "",
                        AckCode::Reject,
                        "100",
                        &reason,
                        bytes,
                        received_at,
                    )
                    .await;
            }
        };
        let header = match Header::read(&msg) {
            Ok(h) => h,
            Err(e) => {
                return self
                    .reject(
                        Some(&msg),
                        None,
                        "",
                        AckCode::Reject,
                        e.hl7_code(),
                        &e.to_string(),
                        bytes,
                        received_at,
                    )
                    .await
            }
        };
        if !self.registry.is_caught_up() {
            return hl7::ack(
                Some(&msg),
                AckCode::Reject,
                Some(("207", "the source registry is still loading; resend later")),
            );
        }
        let Some(source) = self.registry.get(&header.source_id) else {
            let reason = "the sending facility (MSH-4) is not a registered source";
            return self
                .reject(
                    Some(&msg),
                    None,
                    &header.control_id,
                    AckCode::Reject,
                    "204",
                    reason,
                    bytes,
                    received_at,
                )
                .await;
        };
        if let Err(reason) = peer.admits(&source) {
            tracing::warn!(source = %source.source_id, "MLLP message refused: its connection is not the source's");
            return self
                .reject(
                    Some(&msg),
                    Some(&source.source_id),
                    &header.control_id,
                    AckCode::Reject,
                    "204",
                    reason,
                    bytes,
                    received_at,
                )
                .await;
        }
        let ctx = SourceContext {
            source_id: source.source_id.clone(),
            assigning_authority: source.assigning_authority.clone(),
        };
        let mapped = match hl7::map(&msg, &header, &ctx) {
            Ok(mapped) => mapped,
            Err(e) => {
                return self
                    .reject(
                        Some(&msg),
                        Some(&source.source_id),
                        &header.control_id,
                        e.ack_code(),
                        e.hl7_code(),
                        &e.to_string(),
                        bytes,
                        received_at,
                    )
                    .await
            }
        };
        let from = Provenance {
            source: &source,
            channel: CHANNEL,
            message_id: &header.control_id,
            received_at,
        };
        let published = if let Err(e) = self.publisher.admit() {
            Err(e)
        } else if mapped.merges.is_empty() {
            intake::publish(&self.publisher, &from, mapped.records, &[]).await
        } else {
            intake::publish_merges(&self.publisher, &from, mapped.records, mapped.merges).await
        };
        match published {
            Ok(_) => hl7::ack(Some(&msg), AckCode::Accept, None),
            Err(e @ crate::publish::PublishError::Overloaded { .. }) => {
                tracing::warn!(source = %source.source_id, error = %e, "HL7 message refused for now");
                hl7::ack(
                    Some(&msg),
                    AckCode::Reject,
                    Some(("207", "the views are behind the log; resend later")),
                )
            }
            Err(e) => {
                tracing::error!(source = %source.source_id, error = %e, "HL7 message not published");
                hl7::ack(
                    Some(&msg),
                    AckCode::Reject,
                    Some(("207", "the event log is unavailable; resend later")),
                )
            }
        }
    }

    /// The `AR` for a frame over `INGEST_MLLP_MAX_FRAME_BYTES`, addressed from its first bytes
    /// when they hold a readable MSH; dead-lettered without its content (like an HTTP 413).
    pub async fn refuse_oversized(&self, head: &[u8]) -> String {
        let received_at = now_micros();
        let text = decode(head);
        // Only whole segments: the last one may be cut.
        let whole = text.rfind(['\r', '\n']).map_or("", |end| &text[..end]);
        let msg = Message::parse(whole).ok();
        let header = msg.as_ref().and_then(|m| Header::read(m).ok());
        let source = header
            .as_ref()
            .filter(|_| self.registry.is_caught_up())
            .and_then(|h| self.registry.get(&h.source_id));
        let reason = format!(
            "the MLLP frame exceeds the limit of {} bytes (INGEST_MLLP_MAX_FRAME_BYTES)",
            self.limits.mllp_max_frame_bytes
        );
        self.reject(
            msg.as_ref(),
            source.as_ref().map(|s| s.source_id.as_str()),
            header.as_ref().map_or("", |h| h.control_id.as_str()),
            AckCode::Reject,
            "100",
            &reason,
            b"",
            received_at,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn reject(
        &self,
        msg: Option<&Message<'_>>,
        source_id: Option<&str>,
        control_id: &str,
        code: AckCode,
        hl7_code: &str,
        reason: &str,
        raw: &[u8],
        at: i64,
    ) -> String {
        let letter = intake::dead_letter(source_id, CHANNEL, control_id, None, reason, raw, at);
        let published = self
            .publisher
            .publish(topics::DEAD_LETTERS.name, &letter.key(), &letter)
            .await;
        crate::metrics::rejected(source_id.unwrap_or("unknown"), CHANNEL, 1);
        tracing::info!(
            source = source_id.unwrap_or("unknown"),
            hl7_code,
            "HL7 message rejected"
        );
        match published {
            Ok(_) => hl7::ack(msg, code, Some((hl7_code, reason))),
            Err(e) => {
                tracing::error!(error = %e, "dead letter not published");
                hl7::ack(
                    msg,
                    AckCode::Reject,
                    Some(("207", "the event log is unavailable; resend later")),
                )
            }
        }
    }
}

/// UTF-8 when it is; otherwise each byte as its Latin-1 character (the usual 8-bit HL7 charset).
pub fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|b| *b as char).collect(),
    }
}

/// How an MLLP connection's sender is known: over TLS, by the client certificate it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Plain TCP: only on loopback (`platform::tls::require_beyond_loopback`).
    Plain,
    Tls {
        certificate_sha256: Option<String>,
    },
}

impl Peer {
    /// A source with a pinned certificate is taken only over TLS with that certificate; over TLS,
    /// a source without a pin is refused (anyone can present some certificate and name any MSH-4).
    pub fn admits(&self, source: &SourceRegistered) -> Result<(), &'static str> {
        let pin = source.mllp_client_certificate_sha256.as_deref();
        match (self, pin) {
            (Peer::Plain, None) => Ok(()),
            (Peer::Plain, Some(_)) => {
                Err("this source's messages are taken only over TLS with its registered client certificate")
            }
            (Peer::Tls { .. }, None) => {
                Err("no client certificate is registered for this source: MLLP over TLS needs one")
            }
            (
                Peer::Tls {
                    certificate_sha256: Some(presented),
                },
                Some(pin),
            ) if presented == pin => Ok(()),
            (Peer::Tls { .. }, Some(_)) => {
                Err("the connection's client certificate is not the one registered for this source")
            }
        }
    }
}
