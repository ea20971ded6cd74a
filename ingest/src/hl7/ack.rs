//! The original-mode acknowledgement (ACK) to a received message.

use super::parse::{escape, Message, Separators};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA: made durable.
    Accept,
    /// AE: something in the content is wrong; resending the same message will not help.
    Error,
    /// AR: not taken for a reason other than its content (unknown sender, unsupported type,
    /// the event log unavailable).
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// The ACK to `original` (when it could be read at all): MSA-2 echoes its MSH-10; anything but AA
/// carries an ERR segment with an HL7 table 0357 code and a reason that names no PHI.
pub fn ack(original: Option<&Message>, code: AckCode, error: Option<(&str, &str)>) -> String {
    let sep = Separators::default();
    let echo = |field: usize| -> String {
        original
            .and_then(|m| Some((m, m.segment("MSH")?)))
            .map(|(m, msh)| escape(&m.value(msh.field(field).raw()), &sep))
            .unwrap_or_default()
    };
    let (_, trigger) = original.map(|m| m.message_type()).unwrap_or_default();
    let version = Some(echo(12))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "2.5.1".into());
    let processing = Some(echo(11))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "P".into());
    let now = time::OffsetDateTime::now_utc();
    let timestamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut out = format!(
        "MSH|^~\\&|HIE|HIE|{}|{}|{timestamp}||ACK^{}^ACK|{}|{processing}|{version}\r",
        echo(3),
        echo(4),
        escape(&trigger, &sep),
        uuid::Uuid::new_v4().simple(),
    );
    let control_id = echo(10);
    match error {
        None => out.push_str(&format!("MSA|{}|{control_id}\r", code.as_str())),
        Some((hl7_code, reason)) => {
            let reason = escape(reason, &sep);
            out.push_str(&format!("MSA|{}|{control_id}|{reason}\r", code.as_str()));
            out.push_str(&format!("ERR||MSH^1|{hl7_code}^^HL70357|E||||{reason}\r"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_control_id_and_escapes_reason() {
        let m = Message::parse("MSH#^~!&#APP#FAC##HIE#20240101##ADT^A04#ID|7#P#2.4\r").unwrap();
        let a = ack(Some(&m), AckCode::Error, Some(("101", "PID-3 a|b")));
        let ack = Message::parse(&a).unwrap();
        let msa = ack.segment("MSA").unwrap();
        assert_eq!(msa.field(1).raw().0, "AE");
        assert_eq!(ack.value(msa.field(2).raw()), "ID|7");
        assert_eq!(
            ack.value(ack.segment("ERR").unwrap().field(8).raw()),
            "PID-3 a|b"
        );
        assert_eq!(ack.value(ack.segment("MSH").unwrap().field(5).raw()), "APP");
        assert_eq!(ack.message_type(), ("ACK".into(), "A04".into()));
        let plain = ack_without_original();
        assert!(plain.contains("MSA|AR||unreadable\r"));
    }

    fn ack_without_original() -> String {
        ack(None, AckCode::Reject, Some(("100", "unreadable")))
    }
}
