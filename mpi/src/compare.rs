//! Comparing two identities field by field: each field lands in one agreement level (exact,
//! close, different), or is missing on a side and says nothing. The levels are Fellegi–Sunter's
//! comparison vector; `model` gives each level its weight.

use serde::{Deserialize, Serialize};

use crate::nicknames;

/// The fields compared, in the comparison vector's order.
pub const FIELDS: [&str; 7] = [
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "address",
    "phone",
    "ssn",
];
pub const GIVEN: usize = 0;
pub const FAMILY: usize = 1;
pub const BIRTH: usize = 2;
pub const SEX: usize = 3;
pub const ADDRESS: usize = 4;
pub const PHONE: usize = 5;
pub const SSN: usize = 6;

/// The levels of each field, most alike first; the last is "different".
pub const LEVELS: [&[&str]; 7] = [
    &["exact", "nickname", "similar", "different"],
    &["exact", "similar", "different"],
    &[
        "exact",
        "day_month_swapped",
        "one_part_differs",
        "different",
    ],
    &["same", "different"],
    &[
        "same_street",
        "similar_street",
        "same_postal_code",
        "different",
    ],
    &["same", "different"],
    &["same", "one_digit_off", "different"],
];
pub const MAX_LEVELS: usize = 4;

/// A level per field; `None` where a side is missing the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Comparison(pub [Option<u8>; 7]);

impl Comparison {
    /// One number per pattern, for counting patterns in EM (4 bits a field, 15 = missing).
    pub fn code(&self) -> u32 {
        self.0.iter().enumerate().fold(0, |acc, (i, l)| {
            acc | (u32::from(l.unwrap_or(15)) << (4 * i))
        })
    }

    pub fn from_code(code: u32) -> Comparison {
        let mut levels = [None; 7];
        for (i, l) in levels.iter_mut().enumerate() {
            let v = ((code >> (4 * i)) & 15) as u8;
            *l = (v != 15).then_some(v);
        }
        Comparison(levels)
    }

    /// `field=level` pairs, for events and the steward's evidence.
    pub fn named(&self) -> Vec<(&'static str, &'static str)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    FIELDS[i],
                    l.map(|l| LEVELS[i][l as usize]).unwrap_or("missing"),
                )
            })
            .collect()
    }

    /// Clearly different given names at the same birth date: twins (or triplets) far more often
    /// than one person, however much else agrees (family, address, phone are the household's).
    /// The same Social Security number says otherwise (twins have two): then the given names
    /// are a nickname or a middle name the table does not know.
    pub fn twins(&self) -> bool {
        self.0[GIVEN] == Some(3)
            && matches!(self.0[BIRTH], Some(0) | Some(1))
            && self.0[SSN] != Some(0)
    }
}

/// What a comparison needs of one side: folded strings and parsed numbers, all optional.
pub trait Side {
    fn given(&self) -> Option<&str>;
    fn family(&self) -> Option<&str>;
    fn former_family(&self) -> Option<&str>;
    fn birth(&self) -> Option<(u16, u8, u8)>;
    fn sex(&self) -> Option<u8>;
    fn street(&self) -> Option<&str>;
    fn postal_code(&self) -> Option<u32>;
    fn phone(&self) -> Option<u64>;
    fn ssn(&self) -> Option<u32>;
}

const SIMILAR: f64 = 0.88;

fn similar(a: &str, b: &str) -> bool {
    strsim::jaro_winkler(a, b) >= SIMILAR
}

pub fn compare(a: &impl Side, b: &impl Side) -> Comparison {
    let mut c = [None; 7];
    c[GIVEN] = both(a.given(), b.given()).map(|(x, y)| {
        if x == y {
            0
        } else if nicknames::related(x, y) {
            1
        } else if similar(x, y)
            || strsim::osa_distance(x, y) <= 1
            || initial_of(x, y)
            || shortened(x, y)
        {
            // One typo (an edit or two letters swapped) even in a short name; a name cut short.
            2
        } else {
            3
        }
    });
    c[FAMILY] = both(a.family(), b.family()).map(|(x, y)| {
        let former = |f: Option<&str>, other: &str| f == Some(other);
        if x == y
            || former(a.former_family(), y)
            || former(b.former_family(), x)
            || (a.former_family().is_some() && a.former_family() == b.former_family())
        {
            0
        } else if similar(x, y) {
            1
        } else {
            2
        }
    });
    c[BIRTH] = both(a.birth(), b.birth()).map(|((y1, m1, d1), (y2, m2, d2))| {
        let same = [y1 == y2, m1 == m2, d1 == d2];
        if same == [true, true, true] {
            0
        } else if y1 == y2 && m1 == d2 && d1 == m2 {
            1
        } else if same.iter().filter(|s| **s).count() == 2 {
            2
        } else {
            3
        }
    });
    c[SEX] = both(a.sex(), b.sex()).map(|(x, y)| u8::from(x != y));
    c[ADDRESS] = match (a.street(), b.street()) {
        (Some(x), Some(y)) if x == y => Some(0),
        (Some(x), Some(y)) if similar(x, y) => Some(1),
        _ => match both(a.postal_code(), b.postal_code()) {
            Some((x, y)) if x == y => Some(2),
            Some(_) => Some(3),
            None if a.street().is_some() && b.street().is_some() => Some(3),
            None => None,
        },
    };
    c[PHONE] = both(a.phone(), b.phone()).map(|(x, y)| u8::from(x != y));
    c[SSN] = both(a.ssn(), b.ssn()).map(|(x, y)| {
        if x == y {
            0
        } else if one_digit_off(x, y) {
            1
        } else {
            2
        }
    });
    Comparison(c)
}

fn both<T>(a: Option<T>, b: Option<T>) -> Option<(T, T)> {
    Some((a?, b?))
}

/// A name of three letters or more that another begins (chri, christopher).
fn shortened(x: &str, y: &str) -> bool {
    let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
    short.len() >= 3 && long.starts_with(short)
}

/// A lone initial against a name it begins.
fn initial_of(x: &str, y: &str) -> bool {
    (x.len() == 1 && y.starts_with(x)) || (y.len() == 1 && x.starts_with(y))
}

/// One digit replaced, or two adjacent digits swapped.
fn one_digit_off(x: u32, y: u32) -> bool {
    let (a, b) = (format!("{x:09}"), format!("{y:09}"));
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let diffs: Vec<usize> = (0..9).filter(|&i| a[i] != b[i]).collect();
    match diffs.as_slice() {
        [_] => true,
        [i, j] => *j == i + 1 && a[*i] == b[*j] && a[*j] == b[*i],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        let c = Comparison([Some(0), None, Some(3), Some(1), None, Some(0), Some(2)]);
        assert_eq!(Comparison::from_code(c.code()), c);
    }

    #[test]
    fn ssn_typos() {
        assert!(one_digit_off(123456789, 123456780));
        assert!(one_digit_off(123456789, 123457689));
        assert!(!one_digit_off(123456789, 987654321));
        assert!(!one_digit_off(123456789, 123456700));
    }
}
