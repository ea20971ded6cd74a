//! HL7 v2 message structure: segments, fields, repetitions, components, subcomponents, with the
//! separators each message declares in MSH-1/MSH-2, and escape sequences decoded on access.
//!
//! Values are borrowed from the message text; only decoding an escaped value allocates.

use std::borrow::Cow;

/// Caps on what a message may hold, so a hostile message costs bounded memory and time: a
/// segment is a slice of the text (fields are split on access), so only segments are stored.
/// Generous for real feeds (an ORU with a document split over thousands of OBX lines).
pub const MAX_SEGMENTS: usize = 100_000;
/// Fields in one segment (PV1, the widest standard segment, has 52).
pub const MAX_FIELDS: usize = 1_000;
/// Repetitions of one field (PID-3 identifier lists are the longest seen, tens).
pub const MAX_REPETITIONS: usize = 1_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 do not declare distinct separator characters")]
    Separators,
    #[error("message has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("segment {0} has more than {MAX_FIELDS} fields")]
    TooManyFields(usize),
    #[error("segment {0}, field {1} has more than {MAX_REPETITIONS} repetitions")]
    TooManyRepetitions(usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: char,
}

impl Default for Separators {
    fn default() -> Self {
        Separators {
            field: '|',
            component: '^',
            repetition: '~',
            escape: Some('\\'),
            subcomponent: '&',
        }
    }
}

/// A parsed message: its separators and segments in order.
#[derive(Debug)]
pub struct Message<'a> {
    pub separators: Separators,
    pub segments: Vec<Segment<'a>>,
}

#[derive(Debug)]
pub struct Segment<'a> {
    pub name: &'a str,
    /// The segment's text, name included; fields are numbered as in the standard: field 0 is
    /// the name, and for MSH (FHS, BHS) field 1 is the field separator itself.
    line: &'a str,
    /// The field separator.
    field: char,
    /// MSH, FHS, BHS: field 1 is the separator, not split off the text.
    header: bool,
}

impl<'a> Message<'a> {
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        let text = text.trim_start_matches(['\r', '\n', '\u{feff}']);
        if !text.starts_with("MSH") {
            return Err(ParseError::NoMsh);
        }
        let mut chars = text[3..].chars();
        let field = chars.next().ok_or(ParseError::Separators)?;
        let encoding: Vec<char> = chars.take_while(|c| *c != field).collect();
        if encoding.len() < 2 || field.is_alphanumeric() || field == '\r' || field == '\n' {
            return Err(ParseError::Separators);
        }
        let separators = Separators {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding.get(2).copied(),
            subcomponent: encoding.get(3).copied().unwrap_or('&'),
        };
        let mut all = vec![
            field,
            separators.component,
            separators.repetition,
            separators.subcomponent,
        ];
        all.extend(separators.escape);
        all.sort_unstable();
        all.dedup();
        if all.len() != 4 + usize::from(separators.escape.is_some())
            || all
                .iter()
                .any(|c| c.is_alphanumeric() || *c == '\r' || *c == '\n')
        {
            return Err(ParseError::Separators);
        }

        let mut segments = Vec::new();
        for line in text.split(['\r', '\n']).filter(|s| !s.trim().is_empty()) {
            if segments.len() == MAX_SEGMENTS {
                return Err(ParseError::TooManySegments);
            }
            let name = line.split(field).next().unwrap_or("");
            let number = segments.len() + 1;
            let mut fields = 0;
            for raw in line.split(field) {
                fields += 1;
                if fields > MAX_FIELDS + 1 {
                    return Err(ParseError::TooManyFields(number));
                }
                if raw
                    .matches(separators.repetition)
                    .nth(MAX_REPETITIONS - 1)
                    .is_some()
                {
                    return Err(ParseError::TooManyRepetitions(number, fields - 1));
                }
            }
            segments.push(Segment {
                name,
                line,
                field,
                header: name == "MSH" || name == "FHS" || name == "BHS",
            });
        }
        Ok(Message {
            separators,
            segments,
        })
    }

    /// Where the first control character a value may not hold is (HL7 v2 and FHIR forbid NUL
    /// and the other C0 controls but tab; CR and LF end segments): `(segment, field)`, 1-based.
    pub fn control_character(&self) -> Option<(usize, usize)> {
        use crate::fhir::control::forbidden;
        self.segments.iter().enumerate().find_map(|(i, seg)| {
            if !seg.line.chars().any(forbidden) {
                return None;
            }
            let n = seg
                .line
                .split(seg.field)
                .position(|f| f.chars().any(forbidden))
                .unwrap_or(0);
            Some((i + 1, if seg.header && n > 0 { n + 1 } else { n }))
        })
    }

    pub fn segment(&self, name: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// MSH-9 components: message code and trigger event, e.g. (`ADT`, `A04`).
    pub fn message_type(&self) -> (String, String) {
        let Some(msh) = self.segment("MSH") else {
            return (String::new(), String::new());
        };
        let f = msh.field(9);
        (
            self.value(f.component(1, &self.separators)).into_owned(),
            self.value(f.component(2, &self.separators)).into_owned(),
        )
    }

    /// A raw value with escape sequences decoded.
    pub fn value<'v>(&self, raw: Raw<'v>) -> Cow<'v, str> {
        unescape(raw.0, &self.separators)
    }
}

impl<'a> Segment<'a> {
    /// Field `n` (1-based, as in the standard), all repetitions; empty when absent.
    pub fn field(&self, n: usize) -> Field<'a> {
        let raw = match (self.header, n) {
            // MSH-1 is the separator itself; what follows the name is MSH-2.
            (true, 1) => self.line.get(3..3 + self.field.len_utf8()).unwrap_or(""),
            (true, 0) => self.name,
            (true, n) => self.line.split(self.field).nth(n - 1).unwrap_or(""),
            (false, n) => self.line.split(self.field).nth(n).unwrap_or(""),
        };
        Field { raw }
    }
}

/// One field, possibly repeated.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
}

/// An undecoded value: call `Message::value` to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(pub &'a str);

impl<'a> Raw<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty() || self.0 == "\"\""
    }
}

/// One repetition of a field: components and subcomponents.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a str,
}

impl<'a> Field<'a> {
    pub fn raw(&self) -> Raw<'a> {
        Raw(self.raw)
    }

    pub fn repetitions(&self, sep: &Separators) -> Vec<Repetition<'a>> {
        if self.raw.is_empty() {
            return Vec::new();
        }
        self.raw
            .split(sep.repetition)
            .map(|raw| Repetition { raw })
            .collect()
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize, sep: &Separators) -> Raw<'a> {
        let first = self.raw.split(sep.repetition).next().unwrap_or("");
        Repetition { raw: first }.component(n, sep)
    }
}

impl<'a> Repetition<'a> {
    pub fn raw(&self) -> Raw<'a> {
        Raw(self.raw)
    }

    /// Component `n` (1-based), all its subcomponents.
    pub fn component(&self, n: usize, sep: &Separators) -> Raw<'a> {
        Raw(self.raw.split(sep.component).nth(n - 1).unwrap_or(""))
    }

    /// Subcomponent `s` of component `n` (both 1-based).
    pub fn subcomponent(&self, n: usize, s: usize, sep: &Separators) -> Raw<'a> {
        let c = self.component(n, sep).0;
        Raw(c.split(sep.subcomponent).nth(s - 1).unwrap_or(""))
    }
}

/// Decode `\F\ \S\ \T\ \R\ \E\` and `\Xhh..\`; `\.br\` becomes a line break; other sequences
/// (highlighting, character sets) are dropped. An unterminated escape is kept as written.
pub fn unescape<'v>(raw: &'v str, sep: &Separators) -> Cow<'v, str> {
    let Some(esc) = sep.escape else {
        return Cow::Borrowed(raw);
    };
    if !raw.contains(esc) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let seq = &after[..end];
        match seq {
            "F" => out.push(sep.field),
            "S" => out.push(sep.component),
            "T" => out.push(sep.subcomponent),
            "R" => out.push(sep.repetition),
            "E" => out.push(esc),
            ".br" => out.push('\n'),
            _ if seq.starts_with('X') => {
                let hex = &seq[1..];
                if let Ok(bytes) = hex::decode(hex) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            _ => {}
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Escape a value for a message using `sep` (for the ACK's echoed fields and error texts).
pub fn escape(value: &str, sep: &Separators) -> String {
    let esc = sep.escape.unwrap_or('\\');
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            c if c == esc => out.extend([esc, 'E', esc]),
            c if c == sep.field => out.extend([esc, 'F', esc]),
            c if c == sep.component => out.extend([esc, 'S', esc]),
            c if c == sep.subcomponent => out.extend([esc, 'T', esc]),
            c if c == sep.repetition => out.extend([esc, 'R', esc]),
            // CR/LF would end the segment, 0x1C the MLLP frame; no control goes back out.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_separators_and_numbering() {
        let m = Message::parse(
            "MSH|^~\\&|APP|FAC^1.2.3^ISO|HIE|HIE|20240301101500||ADT^A04^ADT_A01|MSG1|P|2.5.1\rPID|1||123^^^FAC^MR~456^^^SSA^SS||Doe^Jane\r",
        )
        .unwrap();
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.field(1).raw().0, "|");
        assert_eq!(msh.field(2).raw().0, "^~\\&");
        assert_eq!(m.value(msh.field(4).component(1, &m.separators)), "FAC");
        assert_eq!(msh.field(10).raw().0, "MSG1");
        assert_eq!(m.message_type(), ("ADT".into(), "A04".into()));
        let pid = m.segment("PID").unwrap();
        let ids = pid.field(3).repetitions(&m.separators);
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[1].component(4, &m.separators).0, "SSA");
        assert_eq!(ids[0].component(5, &m.separators).0, "MR");
        assert!(pid.field(30).raw().is_empty());
    }

    #[test]
    fn custom_separators_and_escapes() {
        let m = Message::parse("MSH#$*!%#A#FAC\nNTE#1##a!F!b!S!c!T!d!R!e!E!f!X41!\r\n").unwrap();
        assert_eq!(m.separators.field, '#');
        assert_eq!(m.separators.component, '$');
        assert_eq!(m.separators.repetition, '*');
        assert_eq!(m.separators.escape, Some('!'));
        assert_eq!(m.separators.subcomponent, '%');
        let nte = m.segment("NTE").unwrap();
        assert_eq!(m.value(nte.field(3).raw()), "a#b$c%d*e!fA");
    }

    #[test]
    fn escape_round_trips() {
        let sep = Separators::default();
        let text = "a|b^c&d~e\\f";
        assert_eq!(unescape(&escape(text, &sep), &sep), text);
        assert_eq!(unescape("x\\H\\y\\N\\z\\.br\\w", &sep), "xyz\nw");
        assert_eq!(unescape("broken\\F", &sep), "broken\\F");
    }

    #[test]
    fn bad_headers() {
        assert_eq!(Message::parse("PID|1").unwrap_err(), ParseError::NoMsh);
        assert_eq!(
            Message::parse("MSH|^^\\&|").unwrap_err(),
            ParseError::Separators
        );
        assert_eq!(Message::parse("MSH").unwrap_err(), ParseError::Separators);
        assert_eq!(
            Message::parse("MSHA^~\\&").unwrap_err(),
            ParseError::Separators
        );
    }

    #[test]
    fn caps_and_control_characters() {
        let many = format!("MSH|^~\\&|A\r{}", "NTE|1\r".repeat(MAX_SEGMENTS));
        assert_eq!(
            Message::parse(&many).unwrap_err(),
            ParseError::TooManySegments
        );
        let wide = format!("MSH|^~\\&|A\rPID{}", "|".repeat(MAX_FIELDS + 1));
        assert_eq!(
            Message::parse(&wide).unwrap_err(),
            ParseError::TooManyFields(2)
        );
        let ok = format!("MSH|^~\\&|A\rPID{}", "|".repeat(MAX_FIELDS));
        assert!(Message::parse(&ok).is_ok());
        let reps = format!("MSH|^~\\&|A\rPID|1|{}", "~".repeat(MAX_REPETITIONS));
        assert_eq!(
            Message::parse(&reps).unwrap_err(),
            ParseError::TooManyRepetitions(2, 2)
        );

        let m = Message::parse("MSH|^~\\&|A|B\tC\rOBX|1|ST|x||va\0lue\r").unwrap();
        assert_eq!(m.control_character(), Some((2, 5)));
        let m = Message::parse("MSH|^~\\&|A|B\u{1}\rOBX|1\r").unwrap();
        assert_eq!(m.control_character(), Some((1, 4)));
        let m = Message::parse("MSH|^~\\&|A|B\tC\rOBX|1\r").unwrap();
        assert_eq!(m.control_character(), None);
        assert_eq!(escape("a\0b\u{1c}\r", &Separators::default()), "a b  ");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for fuzzing: every prefix and odd slicing of a tricky message.
        let text = "MSH|^~\\&|A|B\rPID|1||\\X4\\~^^^&&~\rMSH\rMSHé|x\rOBX|1|SN|^~\\";
        for end in 0..=text.len() {
            let Some(prefix) = text.get(..end) else {
                continue;
            };
            if let Ok(m) = Message::parse(prefix) {
                for s in &m.segments {
                    for n in 0..8 {
                        for r in s.field(n).repetitions(&m.separators) {
                            let _ = m.value(r.subcomponent(2, 3, &m.separators));
                        }
                    }
                }
            }
        }
    }
}
