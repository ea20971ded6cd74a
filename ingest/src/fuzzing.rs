//! Entry points for fuzzing (`fuzz/`, cargo-fuzz) and for the seeded replay in the tests: each
//! takes arbitrary bytes, runs one input path the way ingest does, and panics only when an
//! invariant breaks (a panic is a bug: a sender must not be able to cause one).

use std::collections::HashMap;

use crate::dropfolder::lines::{Line, Lines};
use crate::fhir::{self, control, SourceContext};
use crate::hl7::{self, AckCode, Header, Message};
use crate::mllp::frame::{self, Frame, HEAD_BYTES};

/// One fuzz target: its name (the fuzz crate's binary, the seed directories) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 6] = [
    ("hl7", hl7),
    ("mllp", mllp),
    ("fhir_bundle", fhir_bundle),
    ("ndjson", ndjson),
    ("avro", avro),
    ("control", control_characters),
];

fn ctx(source_id: &str) -> SourceContext {
    SourceContext {
        source_id: source_id.to_string(),
        assigning_authority: "urn:oid:1.2.3".into(),
    }
}

/// An MLLP message's path: decode, parse, MSH, map (every message type), the ACK.
pub fn hl7(data: &[u8]) {
    let text = crate::mllp::decode(data);
    let Ok(msg) = Message::parse(&text) else {
        let _ = hl7::ack(None, AckCode::Reject, Some(("100", "unreadable")));
        return;
    };
    assert!(msg.segments.len() <= hl7::parse::MAX_SEGMENTS);
    let header = Header::read(&msg);
    let ack = match &header {
        Ok(header) => {
            let mapped = hl7::map(&msg, header, &ctx(&header.source_id));
            if let Ok(mapped) = &mapped {
                for r in &mapped.records {
                    assert_eq!(
                        control::find(&r.resource),
                        None,
                        "a control character got through"
                    );
                }
            }
            let _ = hl7::to_records(&msg, header, &ctx("F"));
            match mapped {
                Ok(_) => hl7::ack(Some(&msg), AckCode::Accept, None),
                Err(e) => hl7::ack(
                    Some(&msg),
                    e.ack_code(),
                    Some((e.hl7_code(), &e.to_string())),
                ),
            }
        }
        Err(e) => hl7::ack(
            Some(&msg),
            AckCode::Reject,
            Some((e.hl7_code(), &e.to_string())),
        ),
    };
    // The ACK is itself one well-formed frame's content.
    assert!(!ack.bytes().any(|b| b == frame::START || b == frame::END[0]));
    assert!(Message::parse(&ack).is_ok(), "the ACK does not parse");
}

/// MLLP framing over arbitrary bytes with a small limit: every frame within bounds, and the
/// frames of well-formed input read back as written.
pub fn mllp(data: &[u8]) {
    let max = 1 + data.first().copied().unwrap_or(0) as usize * 8;
    futures::executor::block_on(async {
        let mut reader = tokio::io::BufReader::with_capacity(7, data);
        let mut frames = 0;
        while let Ok(Some(f)) = frame::read(&mut reader, max).await {
            frames += 1;
            assert!(frames <= data.len(), "more frames than bytes");
            match f {
                Frame::Message(m) => assert!(m.len() <= max),
                Frame::TooLarge { head } => assert!(head.len() <= HEAD_BYTES),
            }
        }
        // Round trip: content without the end marker's first byte frames to itself.
        let content: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| *b != frame::END[0])
            .collect();
        let wrapped = frame::wrap(&content);
        let mut reader = tokio::io::BufReader::with_capacity(5, &wrapped[..]);
        let read = frame::read(&mut reader, content.len().max(1)).await;
        assert_eq!(read.ok().flatten(), Some(Frame::Message(content)));
    });
}

/// A Bundle body's path: parse, normalize; nothing accepted holds a control character.
pub fn fhir_bundle(data: &[u8]) {
    if let Ok(parsed) = fhir::parse_bundle(data) {
        let n = fhir::normalize(parsed.entries, &ctx("src"));
        check_records(&n.records);
    }
}

/// An NDJSON body's path: whole (`parse_ndjson`), and streamed line by line in chunks the
/// way HTTP and the drop folder read it.
pub fn ndjson(data: &[u8]) {
    if let Ok(parsed) = fhir::parse_ndjson(data) {
        let n = fhir::normalize(parsed.entries, &ctx("src"));
        check_records(&n.records);
    }
    futures::executor::block_on(async {
        let mut lines = Lines::new(tokio::io::BufReader::with_capacity(5, data), false, 64);
        let mut patients = HashMap::new();
        let mut entries = Vec::new();
        while let Ok(Some(line)) = lines.next().await {
            if let Line::Text(bytes) = line {
                assert!(bytes.len() <= 64);
                assert!(!bytes.contains(&b'\n'));
                if let Ok(text) = String::from_utf8(bytes) {
                    entries.push(fhir::ndjson_entry(lines.number, &text));
                }
            }
            if entries.len() >= 3 {
                let n =
                    fhir::normalize_with(std::mem::take(&mut entries), &ctx("src"), &mut patients);
                check_records(&n.records);
            }
        }
        let n = fhir::normalize_with(entries, &ctx("src"), &mut patients);
        check_records(&n.records);
    });
}

fn check_records(records: &[fhir::Record]) {
    for r in records {
        assert_eq!(
            control::find(&r.resource),
            None,
            "a control character got through"
        );
        assert!(r.resource.get("id").is_some());
    }
}

/// The event decoder (`schemas::decode`) of every event type. The first byte picks the type
/// and whether the input gets that type's real header, so the body decoder is reached.
pub fn avro(data: &[u8]) {
    use schemas::*;
    fn one<E: Event>(data: &[u8], with_header: bool) {
        if with_header {
            let set = E::schemas();
            for schema in std::iter::once(&set.current).chain(&set.released) {
                let mut bytes = vec![0xC3, 0x01];
                bytes.extend_from_slice(&schema.fingerprint.to_le_bytes());
                bytes.extend_from_slice(data);
                let _ = decode::<E>(&bytes);
            }
        } else {
            let _ = decode::<E>(data);
        }
    }
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let header = pick & 0x80 != 0;
    match pick & 0x0f {
        0 => one::<RecordReceived>(rest, header),
        1 => one::<PatientMerged>(rest, header),
        2 => one::<ConsentRecorded>(rest, header),
        3 => one::<SourceRegistered>(rest, header),
        4 => one::<RecordRejected>(rest, header),
        5 => one::<DeadLetterResubmitted>(rest, header),
        6 => one::<AccessRecorded>(rest, header),
        7 => one::<BreakGlassRecorded>(rest, header),
        8 => one::<AccountRecorded>(rest, header),
        9 => one::<QuarantineReapplyRequested>(rest, header),
        _ => {}
    }
}

/// The control-character check itself against a direct scan: a JSON document holds a
/// forbidden character in a string or member name exactly when `find` says so.
pub fn control_characters(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    fn any(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.chars().any(control::forbidden),
            serde_json::Value::Array(a) => a.iter().any(any),
            serde_json::Value::Object(o) => o
                .iter()
                .any(|(k, v)| k.chars().any(control::forbidden) || any(v)),
            _ => false,
        }
    }
    assert_eq!(control::find(&value).is_some(), any(&value));
}
