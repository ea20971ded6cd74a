//! The master patient index's test corpus (issue #14) and its quality metric.
//!
//! [`generate`] makes people, each known to 2–4 of [`SOURCES`] sources, and one FHIR R4 Patient per
//! (person, source) shaped like real feeds send it (Synthea-like FHIR sources, and legacy HL7 v2
//! feeds mapped to FHIR: upper case, ASCII only). Each record is derived from the person's true
//! values with independent corruptions; [`CorpusRecord::person`] is the truth. [`pair_quality`]
//! scores a clustering against it. Deterministic from the seed (ChaCha8), no I/O.
//!
//! Rates (per source record unless said otherwise; the unit test `rates_come_out_as_documented`
//! measures them from the output against the truth on 10,000 people):
//!
//! | corruption | rate |
//! |---|---|
//! | typo in the given or the family name (one edit: keyboard-neighbour substitution, deletion, doubled letter, transposition) | 6 % |
//! | nickname instead of the given name (Bill/William, Peggy/Margaret…; 95 formal names, 160 pairs) | 9 % of the records of people whose name has one (≈ 5 % of all records) |
//! | upper case and ASCII only (JOSE, ZOE, OBRIEN, MUNOZ) | every record of the 3 legacy HL7 sources (1, 4, 7: ≈ 35 % of records) |
//! | diacritics and apostrophes dropped (José → Jose, O'Brien → OBrien) | 5 % of the other sources' records |
//! | middle name | 55 % of people; each source sends it in full, as an initial or not at all (its own mix) |
//! | day and month swapped | 2 % of records whose day and month are both ≤ 12 and differ |
//! | SSN absent | by source: 5, 10, 100, 20, 40, 100, 15, 30 % (two sources never ask): ≈ 39 % |
//! | SSN mistyped (one digit, or two adjacent digits transposed) | 3 % of the SSNs sent |
//! | moved | 15 % of people (not twins): one of their sources has another address (half of them in the same city), and half of those also another phone |
//! | married name | 5 % of women born before 2003 (not twins): each source has the married name with chance 0.6, at least one has it and one keeps the maiden name; 30 % of the records with the married name also carry the maiden one (`use` `maiden` or `old`) |
//! | street type and unit abbreviated (Street/St/St., Avenue/Ave., Apartment/Apt/#) | by source, 20–90 % |
//! | phone format (`555-259-9533`, `(555) 259-9533`, `5552599533`, `+1 555 259 9533`) | one per source, another one in 15 % |
//! | ZIP+4 instead of ZIP | 30 % |
//! | phone missing | 20 % |
//! | address missing | 5 % |
//! | gender missing | 1 % |
//!
//! Hard cases on purpose:
//! - twins, 1 % of people: same family name, birth date, address and phone, a given name that is
//!   neither the other's nor a nickname of it nor one edit from it, and another SSN (half of them the
//!   next serial number, as the SSA often assigned twins);
//! - common names: 55 % of family names drawn from the most frequent US surnames weighted by their
//!   census counts (Smith, Johnson, Garcia, Nguyen…), the rest from about 30,000 rarer ones; given
//!   names weighted by frequency (Michael, James, Mary, Maria…); birth years normal around 1978
//!   (sd 16, 1925–2024), so many people share a name and a birth year;
//! - 0.2 % of people have the name, gender and birth date of another person who is no twin (other
//!   address, phone and SSN).
//!
//! Sources know people unequally (a large hospital beside small clinics); a source knows each
//! person once, under one MRN (its own format). Records arrive in a seeded random order.
//!
//! Measured (release build, this 2-core machine shared with other builds, load 5): 100,000
//! people (300,478 records) by [`generate`] in 4–5 s wall, 2.9 s CPU (1.2 s with jemalloc: glibc's
//! malloc is most of it). serde_json keeps every JSON object as a B-tree node of ~640 bytes, so
//! held at once 1.2 M records (400,000 people) take 8.9 GB; [`records`] streams them instead
//! (peak 0.27 GB, 17 s) and is what a benchmark at that size should use. [`pair_quality`] scores
//! 1.2 M records in 0.13 s.

use std::collections::{HashMap, HashSet};

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Sources, numbered `0..SOURCES`.
pub const SOURCES: u8 = 8;
/// The system of an SSN identifier.
pub const SSN_SYSTEM: &str = "http://hl7.org/fhir/sid/us-ssn";
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

const NAME_TYPO: f64 = 0.06;
const NICKNAME: f64 = 0.09;
const ASCII_FOLDED: f64 = 0.05;
const MIDDLE_NAME: f64 = 0.55;
const DAY_MONTH_SWAPPED: f64 = 0.02;
const SSN_MISTYPED: f64 = 0.03;
const MOVED: f64 = 0.15;
const MOVED_IN_TOWN: f64 = 0.5;
const MOVED_PHONE: f64 = 0.5;
const MARRIED: f64 = 0.05;
const MARRIED_BORN_BEFORE: i32 = 2003;
const MARRIED_AT_SOURCE: f64 = 0.6;
const MAIDEN_ALSO: f64 = 0.3;
const OTHER_PHONE_FORMAT: f64 = 0.15;
const ZIP_PLUS_4: f64 = 0.3;
const PHONE_MISSING: f64 = 0.20;
const ADDRESS_MISSING: f64 = 0.05;
const GENDER_MISSING: f64 = 0.01;
/// Chance that a new person starts a pair of twins: pairs make 2 × 0.005 / 1.005 ≈ 1 % of people.
const TWIN_PAIR: f64 = 0.005;
const TWIN_NEXT_SERIAL: f64 = 0.5;
const SAME_NAME_AND_BIRTH: f64 = 0.002;
const FAMILY_FROM_COMMON: f64 = 0.55;
const UNIT: f64 = 0.25;
const BIRTH_YEAR_MEAN: f64 = 1978.0;
const BIRTH_YEAR_SD: f64 = 16.0;

pub struct CorpusConfig {
    pub people: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRecord {
    /// The truth: same person ⇔ same number.
    pub person: u32,
    /// `0..SOURCES`.
    pub source: u8,
    pub assigning_authority: String,
    /// Unique per (source, person): a source knows each person once.
    pub mrn: String,
    /// A FHIR R4 Patient as the source sends it.
    pub patient: Value,
}

/// The assigning authority of a source's MRNs.
pub fn assigning_authority(source: u8) -> String {
    format!("urn:oid:2.16.840.1.113883.3.1.{source}")
}

/// Every record, in a seeded random arrival order (people interleaved, as feeds arrive).
/// All of them at once: 1.2 M records take several GB (see the module's note), stream those
/// with [`records`].
pub fn generate(cfg: &CorpusConfig) -> Vec<CorpusRecord> {
    records(cfg).collect()
}

/// Pairwise quality of a clustering against the truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairQuality {
    /// Pairs of records of one person.
    pub true_pairs: u64,
    /// Pairs of records placed in one cluster.
    pub predicted_pairs: u64,
    /// Pairs of records of one person placed in one cluster.
    pub correct_pairs: u64,
    /// `correct / predicted`; 1 when nothing is merged (no pair is wrongly merged).
    pub precision: f64,
    /// `correct / true`; 1 when no person has two records.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
}

/// Pairwise quality of a clustering (`predicted[i]`, any cluster label) against the truth
/// (`truth[i]`, the person) of record `i`. From the sizes of the clusters, the persons and their
/// intersections (n·(n−1)/2 pairs each), by sorting: O(n log n), no pair enumerated.
///
/// # Panics
/// When the two slices differ in length.
pub fn pair_quality(truth: &[u32], predicted: &[u64]) -> PairQuality {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "pair_quality: one predicted cluster per record"
    );
    fn pairs_of_runs<T: Ord + Copy>(mut keys: Vec<T>) -> u64 {
        keys.sort_unstable();
        keys.chunk_by(|a, b| a == b)
            .map(|run| {
                let n = run.len() as u64;
                n * (n - 1) / 2
            })
            .sum()
    }
    let true_pairs = pairs_of_runs(truth.to_vec());
    let predicted_pairs = pairs_of_runs(predicted.to_vec());
    let correct_pairs = pairs_of_runs(
        predicted
            .iter()
            .copied()
            .zip(truth.iter().copied())
            .collect(),
    );
    let precision = if predicted_pairs == 0 {
        1.0
    } else {
        correct_pairs as f64 / predicted_pairs as f64
    };
    let recall = if true_pairs == 0 {
        1.0
    } else {
        correct_pairs as f64 / true_pairs as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    PairQuality {
        true_pairs,
        predicted_pairs,
        correct_pairs,
        precision,
        recall,
        f1,
    }
}

// ---------------------------------------------------------------------------------------------
// Sources

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PhoneFormat {
    Dashed,
    Parens,
    Digits,
    International,
}

const PHONE_FORMATS: [PhoneFormat; 4] = [
    PhoneFormat::Dashed,
    PhoneFormat::Parens,
    PhoneFormat::Digits,
    PhoneFormat::International,
];

/// How one source writes what it knows.
struct Source {
    /// Relative share of people the source knows.
    size: f64,
    /// Chance a record carries the SSN: some registrars never ask.
    ssn: f64,
    ssn_dashes: bool,
    /// A legacy HL7 v2 feed: upper case, ASCII only, identifiers as the v2 mapping writes them.
    legacy: bool,
    phone: PhoneFormat,
    state_abbreviated: bool,
    /// Chance a street type, direction or unit designator is abbreviated.
    abbreviate: f64,
    mrn_prefix: &'static str,
    mrn_digits: usize,
    /// Chance the middle name is sent in full, or as an initial (else not at all).
    middle_full: f64,
    middle_initial: f64,
}

const SOURCE_STYLES: [Source; SOURCES as usize] = [
    Source {
        size: 1.6,
        ssn: 0.95,
        ssn_dashes: true,
        legacy: false,
        phone: PhoneFormat::Dashed,
        state_abbreviated: false,
        abbreviate: 0.2,
        mrn_prefix: "",
        mrn_digits: 8,
        middle_full: 0.6,
        middle_initial: 0.1,
    },
    Source {
        size: 1.4,
        ssn: 0.9,
        ssn_dashes: false,
        legacy: true,
        phone: PhoneFormat::Digits,
        state_abbreviated: true,
        abbreviate: 0.9,
        mrn_prefix: "M",
        mrn_digits: 7,
        middle_full: 0.2,
        middle_initial: 0.6,
    },
    Source {
        size: 1.2,
        ssn: 0.0,
        ssn_dashes: true,
        legacy: false,
        phone: PhoneFormat::Parens,
        state_abbreviated: true,
        abbreviate: 0.6,
        mrn_prefix: "E",
        mrn_digits: 7,
        middle_full: 0.3,
        middle_initial: 0.3,
    },
    Source {
        size: 1.0,
        ssn: 0.8,
        ssn_dashes: false,
        legacy: false,
        phone: PhoneFormat::International,
        state_abbreviated: false,
        abbreviate: 0.5,
        mrn_prefix: "",
        mrn_digits: 10,
        middle_full: 0.5,
        middle_initial: 0.2,
    },
    Source {
        size: 1.0,
        ssn: 0.6,
        ssn_dashes: true,
        legacy: true,
        phone: PhoneFormat::Dashed,
        state_abbreviated: true,
        abbreviate: 0.8,
        mrn_prefix: "MRN",
        mrn_digits: 6,
        middle_full: 0.0,
        middle_initial: 0.5,
    },
    Source {
        size: 0.8,
        ssn: 0.0,
        ssn_dashes: true,
        legacy: false,
        phone: PhoneFormat::Parens,
        state_abbreviated: true,
        abbreviate: 0.7,
        mrn_prefix: "C",
        mrn_digits: 6,
        middle_full: 0.4,
        middle_initial: 0.2,
    },
    Source {
        size: 0.6,
        ssn: 0.85,
        ssn_dashes: false,
        legacy: false,
        phone: PhoneFormat::Digits,
        state_abbreviated: true,
        abbreviate: 0.4,
        mrn_prefix: "",
        mrn_digits: 9,
        middle_full: 0.5,
        middle_initial: 0.3,
    },
    Source {
        size: 0.4,
        ssn: 0.7,
        ssn_dashes: true,
        legacy: true,
        phone: PhoneFormat::Dashed,
        state_abbreviated: true,
        abbreviate: 0.9,
        mrn_prefix: "H",
        mrn_digits: 8,
        middle_full: 0.1,
        middle_initial: 0.4,
    },
];

// ---------------------------------------------------------------------------------------------
// The truth

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Gender {
    Male,
    Female,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Date {
    year: i32,
    month: u32,
    day: u32,
}

impl Date {
    fn fhir(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
struct Address {
    number: u32,
    direction: Option<usize>,
    street: &'static str,
    street_type: usize,
    unit: Option<String>,
    city: usize,
    zip: &'static str,
    plus4: u16,
}

#[derive(Clone, Debug)]
struct Moved {
    /// The one source that knows the new address.
    source: u8,
    address: Address,
    phone: Option<String>,
}

#[derive(Clone, Debug)]
struct Person {
    gender: Gender,
    given: &'static str,
    middle: Option<&'static str>,
    /// The family name at birth (the maiden name of a married woman).
    family: String,
    married: Option<Married>,
    birth: Date,
    /// Nine digits.
    ssn: String,
    home: Address,
    /// Ten digits.
    phone: String,
    moved: Option<Moved>,
    twin_of: Option<u32>,
    same_name_and_birth_as: Option<u32>,
    /// Distinct, ascending.
    sources: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Married {
    family: String,
    /// Bit `s` set: source `s` knows the married name.
    sources: u8,
}

/// Frequency-weighted draws from the name, street and city lists.
struct Tables {
    family: WeightedIndex<u32>,
    male: WeightedIndex<u32>,
    female: WeightedIndex<u32>,
    cities: WeightedIndex<u32>,
    nicknames: HashMap<&'static str, &'static [&'static str]>,
}

impl Tables {
    fn new() -> Tables {
        let weights = |list: &[(&str, u32)]| {
            WeightedIndex::new(list.iter().map(|(_, w)| *w)).expect("positive weights")
        };
        Tables {
            family: weights(FAMILY_NAMES),
            male: weights(MALE_NAMES),
            female: weights(FEMALE_NAMES),
            cities: WeightedIndex::new(CITIES.iter().map(|c| c.1)).expect("positive weights"),
            nicknames: NICKNAMES.iter().copied().collect(),
        }
    }

    fn nicknames(&self, given: &str) -> &'static [&'static str] {
        self.nicknames.get(given).copied().unwrap_or(&[])
    }

    fn given(&self, rng: &mut ChaCha8Rng, gender: Gender) -> &'static str {
        match gender {
            Gender::Male => MALE_NAMES[self.male.sample(rng)].0,
            Gender::Female => FEMALE_NAMES[self.female.sample(rng)].0,
        }
    }

    fn family(&self, rng: &mut ChaCha8Rng) -> String {
        if rng.random_bool(FAMILY_FROM_COMMON) {
            FAMILY_NAMES[self.family.sample(rng)].0.to_string()
        } else {
            let start = RARE_FAMILY_START.choose(rng).expect("non-empty");
            let middle = RARE_FAMILY_MIDDLE.choose(rng).expect("non-empty");
            let end = RARE_FAMILY_END.choose(rng).expect("non-empty");
            format!("{start}{middle}{end}")
        }
    }

    /// Two given names a clerk could not take for one: not equal, not nicknames of one another,
    /// not one edit apart (Sara/Sarah).
    fn related(&self, a: &str, b: &str) -> bool {
        let (fa, fb) = (fold(a), fold(b));
        let nicks_a: Vec<String> = self.nicknames(a).iter().map(|n| fold(n)).collect();
        let nicks_b: Vec<String> = self.nicknames(b).iter().map(|n| fold(n)).collect();
        strsim::damerau_levenshtein(&fa, &fb) <= 1
            || nicks_a.contains(&fb)
            || nicks_b.contains(&fa)
            || nicks_a.iter().any(|n| nicks_b.contains(n))
    }

    fn address(&self, rng: &mut ChaCha8Rng, city: Option<usize>) -> Address {
        let city = city.unwrap_or_else(|| self.cities.sample(rng));
        // House numbers: mostly small, as on real streets.
        let number = if rng.random_bool(0.7) {
            rng.random_range(1..=400)
        } else {
            rng.random_range(1..=9999)
        };
        Address {
            number,
            direction: rng
                .random_bool(0.08)
                .then(|| rng.random_range(0..DIRECTIONS.len())),
            street: STREETS.choose(rng).expect("non-empty"),
            street_type: WeightedIndex::new(STREET_TYPES.iter().map(|t| t.2))
                .expect("positive weights")
                .sample(rng),
            unit: rng.random_bool(UNIT).then(|| {
                let floor = rng.random_range(1..=12);
                if rng.random_bool(0.5) {
                    format!("{floor}")
                } else {
                    format!(
                        "{floor}{}",
                        ['A', 'B', 'C', 'D'].choose(rng).expect("non-empty")
                    )
                }
            }),
            city,
            zip: CITIES[city].2.choose(rng).expect("non-empty"),
            plus4: rng.random_range(1..=9999),
        }
    }
}

/// Unique SSNs and phone numbers: two people sharing one would be an error in the truth.
#[derive(Default)]
struct Issued {
    ssns: HashSet<String>,
    phones: HashSet<String>,
}

impl Issued {
    fn ssn(&mut self, rng: &mut ChaCha8Rng) -> String {
        loop {
            let area = loop {
                let a = rng.random_range(1..=899);
                if a != 666 {
                    break a;
                }
            };
            let ssn = format!(
                "{area:03}{:02}{:04}",
                rng.random_range(1..=99),
                rng.random_range(1..=9999)
            );
            if self.ssns.insert(ssn.clone()) {
                return ssn;
            }
        }
    }

    /// The next serial number after `ssn`, if it is free.
    fn next_serial(&mut self, ssn: &str) -> Option<String> {
        let serial: u32 = ssn[5..].parse().ok()?;
        if serial >= 9999 {
            return None;
        }
        let next = format!("{}{:04}", &ssn[..5], serial + 1);
        self.ssns.insert(next.clone()).then_some(next)
    }

    fn phone(&mut self, rng: &mut ChaCha8Rng) -> String {
        loop {
            let phone = format!(
                "{}{}{:04}",
                AREA_CODES.choose(rng).expect("non-empty"),
                rng.random_range(200..=999),
                rng.random_range(0..=9999)
            );
            if self.phones.insert(phone.clone()) {
                return phone;
            }
        }
    }
}

fn birth_date(rng: &mut ChaCha8Rng) -> Date {
    // Box–Muller: a normal birth year without another crate.
    let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
    let year = (BIRTH_YEAR_MEAN + BIRTH_YEAR_SD * z)
        .round()
        .clamp(1925.0, 2024.0) as i32;
    let month = rng.random_range(1..=12);
    let days = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    Date {
        year,
        month,
        day: rng.random_range(1..=days),
    }
}

/// 2, 3 or 4 distinct sources, each drawn in proportion to its size among those left.
fn pick_sources(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let count = rng.random_range(2..=4);
    let mut left: Vec<f64> = SOURCE_STYLES.iter().map(|s| s.size).collect();
    let mut chosen = Vec::with_capacity(count);
    for _ in 0..count {
        let mut r = rng.random::<f64>() * left.iter().sum::<f64>();
        let mut pick = left.iter().rposition(|w| *w > 0.0).expect("a source left");
        for (i, w) in left.iter().enumerate() {
            if *w > 0.0 && r < *w {
                pick = i;
                break;
            }
            r -= w;
        }
        left[pick] = 0.0;
        chosen.push(pick as u8);
    }
    chosen.sort_unstable();
    chosen
}

fn new_person(rng: &mut ChaCha8Rng, tables: &Tables, issued: &mut Issued) -> Person {
    let gender = if rng.random_bool(0.5) {
        Gender::Male
    } else {
        Gender::Female
    };
    let given = tables.given(rng, gender);
    Person {
        gender,
        given,
        middle: middle_name(rng, tables, gender, given),
        family: tables.family(rng),
        married: None,
        birth: birth_date(rng),
        ssn: issued.ssn(rng),
        home: tables.address(rng, None),
        phone: issued.phone(rng),
        moved: None,
        twin_of: None,
        same_name_and_birth_as: None,
        sources: pick_sources(rng),
    }
}

fn middle_name(
    rng: &mut ChaCha8Rng,
    tables: &Tables,
    gender: Gender,
    given: &str,
) -> Option<&'static str> {
    if !rng.random_bool(MIDDLE_NAME) {
        return None;
    }
    let middle = tables.given(rng, gender);
    (middle != given).then_some(middle)
}

fn people(rng: &mut ChaCha8Rng, tables: &Tables, count: usize) -> Vec<Person> {
    let mut issued = Issued::default();
    let mut people: Vec<Person> = Vec::with_capacity(count);
    while people.len() < count {
        let id = people.len() as u32;
        let mut person = new_person(rng, tables, &mut issued);
        if people.len() + 2 <= count && rng.random_bool(TWIN_PAIR) {
            let mut twin = new_person(rng, tables, &mut issued);
            twin.family = person.family.clone();
            twin.birth = person.birth;
            twin.home = person.home.clone();
            twin.phone = person.phone.clone();
            while tables.related(twin.given, person.given) {
                twin.given = tables.given(rng, twin.gender);
            }
            twin.middle = middle_name(rng, tables, twin.gender, twin.given);
            if rng.random_bool(TWIN_NEXT_SERIAL) {
                if let Some(next) = issued.next_serial(&person.ssn) {
                    twin.ssn = next;
                }
            }
            person.twin_of = Some(id + 1);
            twin.twin_of = Some(id);
            people.push(person);
            people.push(twin);
            continue;
        }
        if !people.is_empty() && rng.random_bool(SAME_NAME_AND_BIRTH) {
            let other = rng.random_range(0..people.len());
            let o = &people[other];
            person.gender = o.gender;
            person.given = o.given;
            person.middle = middle_name(rng, tables, o.gender, o.given);
            person.family = o.family.clone();
            person.birth = o.birth;
            person.same_name_and_birth_as = Some(other as u32);
        }
        if person.gender == Gender::Female
            && person.birth.year < MARRIED_BORN_BEFORE
            && rng.random_bool(MARRIED)
        {
            let family = loop {
                let f = tables.family(rng);
                if f != person.family {
                    break f;
                }
            };
            let mut mask = 0u8;
            for s in &person.sources {
                if rng.random_bool(MARRIED_AT_SOURCE) {
                    mask |= 1 << s;
                }
            }
            let all = person.sources.iter().fold(0u8, |m, s| m | 1 << s);
            let flip = 1u8 << person.sources.choose(rng).expect("2+ sources");
            if mask == all || mask == 0 {
                mask ^= flip;
            }
            person.married = Some(Married {
                family,
                sources: mask,
            });
        }
        if rng.random_bool(MOVED) {
            let city = rng.random_bool(MOVED_IN_TOWN).then_some(person.home.city);
            let address = loop {
                let a = tables.address(rng, city);
                if (a.number, a.street) != (person.home.number, person.home.street) {
                    break a;
                }
            };
            person.moved = Some(Moved {
                source: *person.sources.choose(rng).expect("2+ sources"),
                address,
                phone: rng.random_bool(MOVED_PHONE).then(|| issued.phone(rng)),
            });
        }
        people.push(person);
    }
    people
}

// ---------------------------------------------------------------------------------------------
// A source's record

/// The records of a corpus one at a time, in arrival order: only the truth (about 300 bytes a
/// person) is held, not the records. Yields exactly what [`generate`] returns, in its order.
pub struct Records {
    rng: ChaCha8Rng,
    tables: Tables,
    people: Vec<Person>,
    arrivals: std::vec::IntoIter<(u32, u8)>,
    /// MRNs are issued in arrival order, from a different start at each source.
    next_mrn: Vec<u64>,
}

/// The corpus as a stream: for a benchmark that turns each record into its own input as it
/// arrives instead of holding 1.2 M JSON trees.
pub fn records(cfg: &CorpusConfig) -> Records {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let tables = Tables::new();
    let people = people(&mut rng, &tables, cfg.people);
    let mut arrivals: Vec<(u32, u8)> = people
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.sources.iter().map(move |s| (i as u32, *s)))
        .collect();
    arrivals.shuffle(&mut rng);
    let next_mrn = (0..SOURCES)
        .map(|_| rng.random_range(1_000..100_000))
        .collect();
    Records {
        rng,
        tables,
        people,
        arrivals: arrivals.into_iter(),
        next_mrn,
    }
}

impl Iterator for Records {
    type Item = CorpusRecord;

    fn next(&mut self) -> Option<CorpusRecord> {
        let (person, source) = self.arrivals.next()?;
        let style = &SOURCE_STYLES[source as usize];
        let next = &mut self.next_mrn[source as usize];
        *next += self.rng.random_range(1..=3);
        let mrn = format!(
            "{}{:0width$}",
            style.mrn_prefix,
            next,
            width = style.mrn_digits
        );
        let assigning_authority = assigning_authority(source);
        let patient = patient(
            &mut self.rng,
            &self.tables,
            &self.people[person as usize],
            source,
            &assigning_authority,
            &mrn,
        );
        Some(CorpusRecord {
            person,
            source,
            assigning_authority,
            mrn,
            patient,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.arrivals.size_hint()
    }
}

impl ExactSizeIterator for Records {}

/// A JSON object from owned values: `json!` would copy each interpolated value through
/// `to_value`, which doubled the allocations of a record.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn identifier_type(code: &str, display: Option<&str>) -> Value {
    match display {
        Some(display) => json!({
            "coding": [{"system": IDENTIFIER_TYPE, "code": code, "display": display}],
            "text": display,
        }),
        None => json!({"coding": [{"system": IDENTIFIER_TYPE, "code": code}]}),
    }
}

fn patient(
    rng: &mut ChaCha8Rng,
    tables: &Tables,
    p: &Person,
    source: u8,
    assigning_authority: &str,
    mrn: &str,
) -> Value {
    let style = &SOURCE_STYLES[source as usize];
    let mut identifiers = Vec::with_capacity(2);
    identifiers.push(if style.legacy {
        // As the HL7 v2 mapping writes PID-3.
        object([
            ("use", "usual".into()),
            ("type", identifier_type("MR", None)),
            ("system", assigning_authority.into()),
            ("value", mrn.into()),
        ])
    } else {
        object([
            ("type", identifier_type("MR", Some("Medical Record Number"))),
            ("system", assigning_authority.into()),
            ("value", mrn.into()),
        ])
    });
    if rng.random_bool(style.ssn) {
        let mut ssn = p.ssn.clone();
        if rng.random_bool(SSN_MISTYPED) {
            ssn = mistype_digits(rng, &ssn);
        }
        if style.ssn_dashes {
            ssn = format!("{}-{}-{}", &ssn[..3], &ssn[3..5], &ssn[5..]);
        }
        // A v2 feed's SSN is PID-19, mapped with its system only.
        identifiers.push(if style.legacy {
            object([("system", SSN_SYSTEM.into()), ("value", ssn.into())])
        } else {
            object([
                ("type", identifier_type("SS", None)),
                ("system", SSN_SYSTEM.into()),
                ("value", ssn.into()),
            ])
        });
    }

    // One decision per record: a clerk who drops accents drops them everywhere.
    let folded = !style.legacy && rng.random_bool(ASCII_FOLDED);
    let text = |s: &str| -> String {
        if style.legacy {
            fold_name(s).to_uppercase()
        } else if folded {
            fold_name(s)
        } else {
            s.to_string()
        }
    };
    let mut given = p.given.to_string();
    let nicknames = tables.nicknames(p.given);
    if !nicknames.is_empty() && rng.random_bool(NICKNAME) {
        given = nicknames.choose(rng).expect("non-empty").to_string();
    }
    let married = p
        .married
        .as_ref()
        .filter(|m| m.sources & (1 << source) != 0);
    let mut family = married.map_or_else(|| p.family.clone(), |m| m.family.clone());
    if rng.random_bool(NAME_TYPO) {
        if rng.random_bool(0.5) {
            given = typo(rng, &given);
        } else {
            family = typo(rng, &family);
        }
    }
    let given = text(&given);
    let mut givens = vec![Value::from(given.clone())];
    if let Some(middle) = p.middle {
        let r: f64 = rng.random();
        if r < style.middle_full {
            givens.push(text(middle).into());
        } else if r < style.middle_full + style.middle_initial {
            let initial: String = fold_name(middle).chars().take(1).collect();
            let initial = initial.to_uppercase();
            givens.push(if style.legacy || rng.random_bool(0.5) {
                initial.into()
            } else {
                format!("{initial}.").into()
            });
        }
    }
    let mut names = vec![object([
        ("use", "official".into()),
        ("family", text(&family).into()),
        ("given", givens.into()),
    ])];
    if married.is_some() && rng.random_bool(MAIDEN_ALSO) {
        let use_ = if rng.random_bool(0.5) {
            "maiden"
        } else {
            "old"
        };
        names.push(object([
            ("use", use_.into()),
            ("family", text(&p.family).into()),
            ("given", vec![Value::from(given)].into()),
        ]));
    }

    let mut birth = p.birth;
    if birth.day <= 12
        && birth.month <= 12
        && birth.day != birth.month
        && rng.random_bool(DAY_MONTH_SWAPPED)
    {
        (birth.day, birth.month) = (birth.month, birth.day);
    }

    let mut patient = serde_json::Map::new();
    patient.insert("resourceType".into(), "Patient".into());
    patient.insert("identifier".into(), identifiers.into());
    patient.insert("name".into(), names.into());
    patient.insert("birthDate".into(), birth.fhir().into());
    if !rng.random_bool(GENDER_MISSING) {
        let gender = match p.gender {
            Gender::Male => "male",
            Gender::Female => "female",
        };
        patient.insert("gender".into(), gender.into());
    }
    let moved = p.moved.as_ref().filter(|m| m.source == source);
    if !rng.random_bool(ADDRESS_MISSING) {
        let address = moved.map_or(&p.home, |m| &m.address);
        let address = render_address(rng, style, address);
        patient.insert("address".into(), vec![address].into());
    }
    if !rng.random_bool(PHONE_MISSING) {
        let phone = moved.and_then(|m| m.phone.as_ref()).unwrap_or(&p.phone);
        let format = if rng.random_bool(OTHER_PHONE_FORMAT) {
            *PHONE_FORMATS.choose(rng).expect("non-empty")
        } else {
            style.phone
        };
        let telecom = object([
            ("system", "phone".into()),
            ("value", format_phone(phone, format).into()),
            ("use", "home".into()),
        ]);
        patient.insert("telecom".into(), vec![telecom].into());
    }
    Value::Object(patient)
}

fn render_address(rng: &mut ChaCha8Rng, style: &Source, a: &Address) -> Value {
    let mut abbreviate = |full: &str, short: &str| -> String {
        if !rng.random_bool(style.abbreviate) {
            full.to_string()
        } else if rng.random_bool(0.3) {
            format!("{short}.")
        } else {
            short.to_string()
        }
    };
    let (full, short, _) = STREET_TYPES[a.street_type];
    let street_type = abbreviate(full, short);
    let mut line = match a.direction {
        Some(d) => format!(
            "{} {} {} {street_type}",
            a.number,
            abbreviate(DIRECTIONS[d].0, DIRECTIONS[d].1),
            a.street
        ),
        None => format!("{} {} {street_type}", a.number, a.street),
    };
    let mut lines = Vec::with_capacity(2);
    if let Some(unit) = &a.unit {
        let unit = match abbreviate("Apartment", "Apt") {
            d if d == "Apt" && rng.random_bool(0.3) => format!("#{unit}"),
            d => format!("{d} {unit}"),
        };
        if rng.random_bool(0.5) {
            line = format!("{line} {unit}");
            lines.push(line);
        } else {
            lines.push(line);
            lines.push(unit);
        }
    } else {
        lines.push(line);
    }
    let state = if style.state_abbreviated {
        "MA"
    } else {
        "Massachusetts"
    };
    let postal_code = if rng.random_bool(ZIP_PLUS_4) {
        format!("{}-{:04}", a.zip, a.plus4)
    } else {
        a.zip.to_string()
    };
    let case = |s: String| -> Value {
        if style.legacy {
            s.to_uppercase().into()
        } else {
            s.into()
        }
    };
    object([
        ("use", "home".into()),
        (
            "line",
            lines.into_iter().map(case).collect::<Vec<_>>().into(),
        ),
        ("city", case(CITIES[a.city].0.to_string())),
        ("state", case(state.to_string())),
        ("postalCode", postal_code.into()),
    ])
}

fn format_phone(digits: &str, format: PhoneFormat) -> String {
    let (area, exchange, line) = (&digits[..3], &digits[3..6], &digits[6..]);
    match format {
        PhoneFormat::Dashed => format!("{area}-{exchange}-{line}"),
        PhoneFormat::Parens => format!("({area}) {exchange}-{line}"),
        PhoneFormat::Digits => digits.to_string(),
        PhoneFormat::International => format!("+1 {area} {exchange} {line}"),
    }
}

/// One digit replaced, or two adjacent different digits transposed.
fn mistype_digits(rng: &mut ChaCha8Rng, digits: &str) -> String {
    let mut d: Vec<u8> = digits.bytes().collect();
    loop {
        let i = rng.random_range(0..d.len());
        if rng.random_bool(0.6) {
            let was = d[i];
            while d[i] == was {
                d[i] = b'0' + rng.random_range(0..10u8);
            }
            break;
        }
        if i + 1 < d.len() && d[i] != d[i + 1] {
            d.swap(i, i + 1);
            break;
        }
    }
    String::from_utf8(d).expect("ASCII digits")
}

/// One edit a typist makes: a neighbouring key, a letter dropped, a letter doubled, two letters
/// swapped. Never the first letter (rarely wrong in practice) and never a non-letter, so the
/// name always changes as a matcher sees it.
fn typo(rng: &mut ChaCha8Rng, name: &str) -> String {
    let mut c: Vec<char> = name.chars().collect();
    let letters: Vec<usize> = (1..c.len()).filter(|&i| c[i].is_alphabetic()).collect();
    if letters.len() < 2 {
        return name.to_string();
    }
    let i = *letters.choose(rng).expect("non-empty");
    match rng.random_range(0..4) {
        0 => {
            let base = fold(&c[i].to_string()).chars().next().unwrap_or('e');
            let near = KEYBOARD
                .iter()
                .find(|(k, _)| *k == base)
                .map_or("aeiou", |(_, n)| n);
            let sub = near
                .chars()
                .nth(rng.random_range(0..near.chars().count()))
                .expect("in range");
            c[i] = if c[i].is_uppercase() {
                sub.to_ascii_uppercase()
            } else {
                sub
            };
        }
        1 => {
            c.remove(i);
        }
        2 => c.insert(i, c[i]),
        _ => {
            let j = letters
                .iter()
                .copied()
                .find(|&j| j + 1 < c.len() && j >= i && fold_char(c[j]) != fold_char(c[j + 1]));
            match j {
                Some(j) => c.swap(j, j + 1),
                None => {
                    c.remove(i);
                }
            }
        }
    }
    c.into_iter().collect()
}

fn fold_char(c: char) -> String {
    fold(&c.to_string())
}

/// What a legacy feed keeps of a name: ASCII letters, spaces and hyphens (José → Jose,
/// O'Brien → OBrien).
fn fold_name(s: &str) -> String {
    s.nfd()
        .filter(|c| !is_combining_mark(*c) && *c != '\'')
        .collect()
}

/// A name as a comparison sees it: letters only, ASCII, lower case.
fn fold(s: &str) -> String {
    s.nfd()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Lists

const KEYBOARD: &[(char, &str)] = &[
    ('q', "wa"),
    ('w', "qes"),
    ('e', "wrd"),
    ('r', "etf"),
    ('t', "ryg"),
    ('y', "tuh"),
    ('u', "yij"),
    ('i', "uok"),
    ('o', "ipl"),
    ('p', "ol"),
    ('a', "qsz"),
    ('s', "adwx"),
    ('d', "sfec"),
    ('f', "dgrv"),
    ('g', "fhtb"),
    ('h', "gjyn"),
    ('j', "hkum"),
    ('k', "jli"),
    ('l', "ko"),
    ('z', "ax"),
    ('x', "zcs"),
    ('c', "xvd"),
    ('v', "cbf"),
    ('b', "vng"),
    ('n', "bmh"),
    ('m', "nj"),
];

/// Formal given names and what people are called instead.
const NICKNAMES: &[(&str, &[&str])] = &[
    ("William", &["Bill", "Will", "Billy", "Liam"]),
    ("Robert", &["Bob", "Rob", "Bobby", "Robbie"]),
    ("Richard", &["Rick", "Dick", "Rich"]),
    ("James", &["Jim", "Jimmy", "Jamie"]),
    ("John", &["Jack", "Johnny"]),
    ("Jonathan", &["Jon", "Jonny"]),
    ("Michael", &["Mike", "Mikey"]),
    ("Thomas", &["Tom", "Tommy"]),
    ("Joseph", &["Joe", "Joey"]),
    ("Charles", &["Charlie", "Chuck"]),
    ("Christopher", &["Chris"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Matthew", &["Matt"]),
    ("Anthony", &["Tony"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Joshua", &["Josh"]),
    ("Steven", &["Steve"]),
    ("Stephen", &["Steve"]),
    ("Edward", &["Ed", "Eddie", "Ted"]),
    ("Kenneth", &["Ken", "Kenny"]),
    ("Timothy", &["Tim"]),
    ("Ronald", &["Ron", "Ronnie"]),
    ("Donald", &["Don", "Donnie"]),
    ("Gregory", &["Greg"]),
    ("Benjamin", &["Ben", "Benny"]),
    ("Samuel", &["Sam", "Sammy"]),
    ("Alexander", &["Alex", "Xander"]),
    ("Nicholas", &["Nick"]),
    ("Patrick", &["Pat"]),
    ("Raymond", &["Ray"]),
    ("Lawrence", &["Larry"]),
    ("Gerald", &["Jerry"]),
    ("Jeffrey", &["Jeff"]),
    ("Douglas", &["Doug"]),
    ("Peter", &["Pete"]),
    ("Frederick", &["Fred"]),
    ("Harold", &["Hal", "Harry"]),
    ("Henry", &["Hank", "Harry"]),
    ("Walter", &["Walt"]),
    ("Francis", &["Frank"]),
    ("Zachary", &["Zach"]),
    ("Nathaniel", &["Nate"]),
    ("Jacob", &["Jake"]),
    ("Eugene", &["Gene"]),
    ("Albert", &["Al", "Bert"]),
    ("Theodore", &["Ted", "Teddy", "Theo"]),
    ("Leonard", &["Len", "Leo"]),
    ("Vincent", &["Vince", "Vinny"]),
    ("Philip", &["Phil"]),
    ("José", &["Pepe"]),
    ("Francisco", &["Paco", "Pancho"]),
    ("Jesús", &["Chuy"]),
    ("Eduardo", &["Lalo"]),
    ("Manuel", &["Manny"]),
    ("Elizabeth", &["Liz", "Beth", "Betty", "Lizzie"]),
    ("Margaret", &["Peggy", "Maggie", "Meg", "Marge"]),
    ("Katherine", &["Kate", "Katie", "Kathy"]),
    ("Catherine", &["Cathy", "Kate", "Cate"]),
    ("Kathleen", &["Kathy", "Kate"]),
    ("Jennifer", &["Jen", "Jenny"]),
    ("Jessica", &["Jess", "Jessie"]),
    ("Rebecca", &["Becky", "Becca"]),
    ("Patricia", &["Pat", "Patty", "Trish"]),
    ("Susan", &["Sue", "Susie"]),
    ("Deborah", &["Deb", "Debbie"]),
    ("Barbara", &["Barb", "Barbie"]),
    ("Christina", &["Chris", "Tina"]),
    ("Christine", &["Chris", "Chrissy"]),
    ("Victoria", &["Vicky", "Tori"]),
    ("Samantha", &["Sam", "Sammy"]),
    ("Alexandra", &["Alex", "Lexi"]),
    ("Abigail", &["Abby"]),
    ("Kimberly", &["Kim"]),
    ("Pamela", &["Pam"]),
    ("Cynthia", &["Cindy"]),
    ("Dorothy", &["Dot", "Dottie"]),
    ("Judith", &["Judy"]),
    ("Theresa", &["Terry", "Tess"]),
    ("Melissa", &["Missy", "Mel"]),
    ("Jacqueline", &["Jackie"]),
    ("Madison", &["Maddie"]),
    ("Allison", &["Ally"]),
    ("Amanda", &["Mandy"]),
    ("Stephanie", &["Steph"]),
    ("Natalie", &["Nat"]),
    ("Josephine", &["Josie", "Jo"]),
    ("Eleanor", &["Ellie", "Nell"]),
    ("Isabella", &["Bella", "Izzy"]),
    ("Olivia", &["Liv"]),
    ("Sophia", &["Sophie"]),
    ("Emily", &["Em", "Emmy"]),
    ("Virginia", &["Ginny"]),
    ("Frances", &["Fran"]),
    ("Dolores", &["Lola"]),
    ("Guadalupe", &["Lupe"]),
];

/// Given names by approximate US frequency across the birth years drawn (relative weights).
const MALE_NAMES: &[(&str, u32)] = &[
    ("Michael", 400),
    ("James", 380),
    ("John", 360),
    ("Robert", 350),
    ("David", 330),
    ("William", 300),
    ("Richard", 200),
    ("Joseph", 200),
    ("Thomas", 180),
    ("Christopher", 170),
    ("Charles", 150),
    ("Daniel", 150),
    ("Matthew", 140),
    ("Anthony", 120),
    ("Mark", 110),
    ("Donald", 100),
    ("Steven", 100),
    ("Paul", 90),
    ("Andrew", 90),
    ("Joshua", 90),
    ("Kenneth", 80),
    ("Kevin", 80),
    ("Brian", 80),
    ("George", 80),
    ("Timothy", 70),
    ("Ronald", 70),
    ("Jason", 70),
    ("Edward", 60),
    ("Jeffrey", 60),
    ("Ryan", 60),
    ("Jacob", 60),
    ("Nicholas", 60),
    ("Gary", 50),
    ("Eric", 50),
    ("Jonathan", 50),
    ("Stephen", 50),
    ("José", 40),
    ("Larry", 40),
    ("Justin", 40),
    ("Scott", 40),
    ("Brandon", 40),
    ("Benjamin", 40),
    ("Samuel", 40),
    ("Gregory", 40),
    ("Alexander", 40),
    ("Patrick", 30),
    ("Raymond", 30),
    ("Dennis", 30),
    ("Tyler", 30),
    ("Aaron", 30),
    ("Adam", 30),
    ("Nathan", 30),
    ("Juan", 25),
    ("Luis", 25),
    ("Carlos", 25),
    ("Henry", 20),
    ("Douglas", 20),
    ("Zachary", 20),
    ("Peter", 20),
    ("Kyle", 20),
    ("Ethan", 20),
    ("Walter", 20),
    ("Noah", 20),
    ("Jeremy", 20),
    ("Christian", 20),
    ("Keith", 20),
    ("Roger", 20),
    ("Gerald", 20),
    ("Harold", 20),
    ("Sean", 20),
    ("Austin", 20),
    ("Carl", 20),
    ("Arthur", 20),
    ("Lawrence", 20),
    ("Dylan", 20),
    ("Jesús", 15),
    ("Jordan", 20),
    ("Bryan", 20),
    ("Bruce", 10),
    ("Gabriel", 10),
    ("Logan", 10),
    ("Albert", 10),
    ("Alan", 10),
    ("Wayne", 10),
    ("Elijah", 10),
    ("Randy", 10),
    ("Roy", 10),
    ("Vincent", 10),
    ("Ralph", 10),
    ("Eugene", 10),
    ("Russell", 10),
    ("Mason", 10),
    ("Philip", 10),
    ("Louis", 10),
    ("Miguel", 10),
    ("Francisco", 10),
    ("Alejandro", 10),
    ("Eduardo", 10),
    ("Manuel", 10),
    ("André", 8),
    ("Minh", 8),
    ("Duc", 6),
    ("Wei", 6),
    ("Rajesh", 5),
    ("Theodore", 8),
    ("Leonard", 8),
    ("Frederick", 8),
    ("Nathaniel", 8),
    ("Francis", 8),
    ("Francesco", 4),
    ("Joël", 3),
    ("Séamus", 3),
    ("Malik", 6),
    ("Darnell", 6),
    ("Tremaine", 3),
    ("Omar", 5),
    ("Ahmed", 5),
    ("Hiroshi", 3),
    ("Marcus", 10),
    ("Derek", 8),
    ("Travis", 8),
    ("Shawn", 8),
    ("Curtis", 6),
    ("Craig", 6),
    ("Todd", 6),
    ("Glenn", 5),
    ("Howard", 5),
    ("Victor", 6),
    ("Ramón", 5),
    ("Rafael", 5),
    ("Ángel", 5),
    ("Diego", 6),
    ("Mateo", 5),
    ("Lucas", 6),
    ("Owen", 6),
    ("Caleb", 6),
    ("Isaac", 6),
    ("Hunter", 5),
];

const FEMALE_NAMES: &[(&str, u32)] = &[
    ("Mary", 300),
    ("Patricia", 180),
    ("Jennifer", 200),
    ("Linda", 180),
    ("Elizabeth", 180),
    ("Barbara", 140),
    ("Susan", 140),
    ("Jessica", 140),
    ("Sarah", 130),
    ("Karen", 120),
    ("Lisa", 110),
    ("Nancy", 100),
    ("Margaret", 100),
    ("Ashley", 100),
    ("Betty", 80),
    ("Sandra", 90),
    ("Kimberly", 90),
    ("Emily", 90),
    ("Maria", 80),
    ("Donna", 80),
    ("Michelle", 80),
    ("Amanda", 80),
    ("Carol", 70),
    ("Melissa", 70),
    ("Deborah", 70),
    ("Dorothy", 60),
    ("Stephanie", 60),
    ("Rebecca", 60),
    ("Sharon", 60),
    ("Laura", 60),
    ("Cynthia", 50),
    ("Kathleen", 50),
    ("Amy", 50),
    ("Angela", 50),
    ("Anna", 50),
    ("Emma", 50),
    ("Nicole", 50),
    ("Katherine", 50),
    ("Shirley", 40),
    ("Brenda", 40),
    ("Pamela", 40),
    ("Helen", 40),
    ("Samantha", 40),
    ("Christine", 40),
    ("Rachel", 40),
    ("Catherine", 40),
    ("Olivia", 40),
    ("Carolyn", 30),
    ("Janet", 30),
    ("Heather", 30),
    ("Diane", 30),
    ("Ruth", 30),
    ("Julie", 30),
    ("Joyce", 30),
    ("Virginia", 30),
    ("Victoria", 30),
    ("Kelly", 30),
    ("Lauren", 30),
    ("Christina", 30),
    ("Joan", 30),
    ("Evelyn", 30),
    ("Judith", 30),
    ("Megan", 30),
    ("Andrea", 30),
    ("Hannah", 30),
    ("Sophia", 30),
    ("Isabella", 30),
    ("Cheryl", 20),
    ("Jacqueline", 20),
    ("Martha", 20),
    ("Gloria", 20),
    ("Teresa", 20),
    ("Madison", 20),
    ("Frances", 20),
    ("Janice", 20),
    ("Jean", 20),
    ("Abigail", 20),
    ("Alice", 20),
    ("Grace", 20),
    ("Denise", 20),
    ("Amber", 20),
    ("Doris", 20),
    ("Marilyn", 20),
    ("Danielle", 20),
    ("Beverly", 20),
    ("Theresa", 20),
    ("Diana", 20),
    ("Natalie", 20),
    ("Brittany", 20),
    ("Charlotte", 20),
    ("Carmen", 20),
    ("Ana", 20),
    ("Rosa", 15),
    ("Guadalupe", 10),
    ("Sofía", 10),
    ("Lucía", 10),
    ("María", 10),
    ("Zoë", 10),
    ("Chloé", 8),
    ("Renée", 10),
    ("Inés", 5),
    ("Noémie", 3),
    ("Linh", 8),
    ("Mai", 6),
    ("Thuy", 6),
    ("Mei", 6),
    ("Priya", 5),
    ("Eleanor", 10),
    ("Josephine", 10),
    ("Alexandra", 10),
    ("Gabriela", 10),
    ("Valentina", 8),
    ("Dolores", 10),
    ("Allison", 10),
    ("Yolanda", 8),
    ("Tamika", 5),
    ("Keisha", 5),
    ("Latoya", 5),
    ("Aaliyah", 5),
    ("Fatima", 5),
    ("Siobhan", 3),
    ("Bridget", 6),
    ("Colleen", 6),
    ("Erin", 10),
    ("Tiffany", 10),
    ("Crystal", 10),
    ("Vanessa", 10),
    ("Monica", 10),
    ("Wendy", 8),
    ("Paula", 8),
    ("Ava", 10),
    ("Mia", 10),
    ("Harper", 6),
    ("Chloe", 8),
    ("Zoe", 6),
];

/// The most frequent US surnames with their 2010 census counts (thousands), and a few
/// spelled with diacritics or apostrophes.
const FAMILY_NAMES: &[(&str, u32)] = &[
    ("Smith", 2442),
    ("Johnson", 1932),
    ("Williams", 1625),
    ("Brown", 1437),
    ("Jones", 1425),
    ("Garcia", 1166),
    ("Miller", 1161),
    ("Davis", 1116),
    ("Rodriguez", 1094),
    ("Martinez", 1060),
    ("Hernandez", 1043),
    ("Lopez", 874),
    ("Gonzalez", 841),
    ("Wilson", 801),
    ("Anderson", 784),
    ("Thomas", 756),
    ("Taylor", 751),
    ("Moore", 724),
    ("Jackson", 708),
    ("Martin", 702),
    ("Lee", 693),
    ("Perez", 681),
    ("Thompson", 664),
    ("White", 660),
    ("Harris", 624),
    ("Sanchez", 612),
    ("Clark", 562),
    ("Ramirez", 557),
    ("Lewis", 531),
    ("Robinson", 529),
    ("Walker", 523),
    ("Young", 484),
    ("Allen", 482),
    ("King", 465),
    ("Wright", 458),
    ("Scott", 439),
    ("Torres", 437),
    ("Nguyen", 437),
    ("Hill", 434),
    ("Flores", 433),
    ("Green", 430),
    ("Adams", 427),
    ("Nelson", 424),
    ("Baker", 419),
    ("Hall", 407),
    ("Rivera", 404),
    ("Campbell", 371),
    ("Mitchell", 367),
    ("Carter", 362),
    ("Roberts", 362),
    ("Gomez", 343),
    ("Phillips", 336),
    ("Evans", 334),
    ("Turner", 330),
    ("Diaz", 327),
    ("Parker", 306),
    ("Cruz", 304),
    ("Edwards", 303),
    ("Collins", 300),
    ("Reyes", 299),
    ("Stewart", 293),
    ("Morris", 290),
    ("Morales", 285),
    ("Murphy", 281),
    ("Cook", 280),
    ("Rogers", 277),
    ("Gutierrez", 268),
    ("Ortiz", 260),
    ("Morgan", 259),
    ("Cooper", 256),
    ("Peterson", 254),
    ("Bailey", 254),
    ("Reed", 251),
    ("Kelly", 249),
    ("Howard", 245),
    ("Ramos", 243),
    ("Kim", 242),
    ("Cox", 241),
    ("Ward", 240),
    ("Richardson", 238),
    ("Watson", 234),
    ("Brooks", 233),
    ("Chavez", 233),
    ("Wood", 231),
    ("James", 230),
    ("Bennett", 227),
    ("Gray", 227),
    ("Mendoza", 224),
    ("Ruiz", 220),
    ("Hughes", 220),
    ("Price", 219),
    ("Alvarez", 218),
    ("Castillo", 215),
    ("Sanders", 215),
    ("Patel", 214),
    ("Myers", 213),
    ("Long", 212),
    ("Ross", 212),
    ("Foster", 210),
    ("Jimenez", 209),
    ("Powell", 208),
    ("Jenkins", 205),
    ("Perry", 204),
    ("Russell", 202),
    ("Sullivan", 200),
    ("Bell", 199),
    ("Coleman", 197),
    ("Butler", 195),
    ("Henderson", 193),
    ("Barnes", 193),
    ("Gonzales", 191),
    ("Fisher", 189),
    ("Vasquez", 188),
    ("Simmons", 186),
    ("Romero", 183),
    ("Jordan", 181),
    ("Patterson", 180),
    ("Alexander", 179),
    ("Hamilton", 176),
    ("Graham", 175),
    ("Reynolds", 174),
    ("Griffin", 173),
    ("Wallace", 172),
    ("Moreno", 171),
    ("West", 171),
    ("Cole", 169),
    ("Hayes", 168),
    ("Bryant", 167),
    ("Herrera", 167),
    ("Gibson", 166),
    ("Ellis", 165),
    ("Tran", 164),
    ("Medina", 164),
    ("Aguilar", 163),
    ("Stevens", 163),
    ("Murray", 162),
    ("Ford", 161),
    ("Castro", 160),
    ("Marshall", 160),
    ("Owens", 159),
    ("Harrison", 158),
    ("Fernandez", 157),
    ("McDonald", 157),
    ("Woods", 157),
    ("Washington", 153),
    ("Kennedy", 152),
    ("Wells", 151),
    ("Vargas", 150),
    ("Henry", 150),
    ("Chen", 149),
    ("Freeman", 149),
    ("Webb", 148),
    ("Tucker", 147),
    ("Guzman", 146),
    ("Burns", 145),
    ("Crawford", 145),
    ("Olson", 144),
    ("Simpson", 144),
    ("Porter", 143),
    ("Hunter", 142),
    ("Gordon", 142),
    ("Mendez", 141),
    ("Silva", 141),
    ("Shaw", 140),
    ("Snyder", 139),
    ("Mason", 139),
    ("Dixon", 139),
    ("Muñoz", 138),
    ("Hunt", 137),
    ("Hicks", 136),
    ("Holmes", 136),
    ("Palmer", 136),
    ("Wagner", 135),
    ("Black", 135),
    ("Robertson", 134),
    ("Boyd", 134),
    ("Rose", 134),
    ("Stone", 133),
    ("Salazar", 133),
    ("Fox", 132),
    ("Warren", 132),
    ("Mills", 131),
    ("Meyer", 131),
    ("Rice", 129),
    ("Schmidt", 129),
    ("Garza", 128),
    ("Daniels", 128),
    ("Ferguson", 127),
    ("Nichols", 126),
    ("Stephens", 126),
    ("Soto", 126),
    ("Weaver", 125),
    ("Ryan", 125),
    ("Gardner", 124),
    ("Payne", 124),
    ("Grant", 124),
    ("Dunn", 123),
    ("Kelley", 122),
    ("Spencer", 122),
    ("Hawkins", 122),
    ("Arnold", 121),
    ("Pierce", 121),
    ("Vazquez", 121),
    ("Hansen", 120),
    ("Peters", 120),
    ("Santos", 120),
    ("Hart", 120),
    ("Bradley", 119),
    ("Knight", 119),
    ("Elliott", 119),
    ("Cunningham", 118),
    ("Duncan", 117),
    ("Armstrong", 117),
    ("Hudson", 117),
    ("Carroll", 117),
    ("Lane", 116),
    ("Riley", 116),
    ("Andrews", 115),
    ("Alvarado", 115),
    ("Ray", 115),
    ("Delgado", 114),
    ("Berry", 114),
    ("Perkins", 114),
    ("Hoffman", 113),
    ("Johnston", 113),
    ("Matthews", 113),
    ("Peña", 112),
    ("Richards", 112),
    ("Contreras", 111),
    ("Willis", 111),
    ("Carpenter", 110),
    ("Lawrence", 110),
    ("Sandoval", 110),
    ("Le", 100),
    ("Wang", 100),
    ("O'Brien", 100),
    ("Pham", 90),
    ("Li", 90),
    ("Singh", 90),
    ("O'Connor", 90),
    ("Zhang", 80),
    ("Cohen", 80),
    ("O'Neill", 80),
    ("Liu", 70),
    ("Yang", 60),
    ("Huynh", 60),
    ("Nuñez", 60),
    ("Huang", 50),
    ("Vu", 50),
    ("Shah", 50),
    ("Schwartz", 50),
    ("Dang", 40),
    ("D'Angelo", 30),
    ("Ibáñez", 20),
    ("Müller", 10),
    ("Lefèvre", 5),
];

/// Rarer family names are made from these parts (about 30,000 of them).
const RARE_FAMILY_START: &[&str] = &[
    "Ab", "Ad", "Al", "Am", "An", "Ar", "Ash", "Bal", "Bar", "Bel", "Ben", "Ber", "Bran", "Brom",
    "Bur", "Cal", "Car", "Cas", "Chan", "Clay", "Cor", "Crag", "Dal", "Dar", "Del", "Dor", "Dun",
    "El", "Em", "Fal", "Far", "Fen", "Fitz", "Gal", "Gar", "Gil", "Gold", "Hal", "Har", "Hel",
    "Hol", "Hup", "Ing", "Jar", "Kal", "Kel", "Kin", "Lam", "Lan", "Lar", "Lind", "Lock", "Mal",
    "Mar", "Mel", "Mor", "Nor", "Oak", "Pen", "Pol", "Rad", "Ran", "Red", "Ros", "Sal", "Sel",
    "Shel", "Stan", "Tal", "Thor", "Ul", "Van", "Wal", "War", "Wes", "Wil", "Win", "Yar", "Zel",
];
const RARE_FAMILY_MIDDLE: &[&str] = &["", "", "a", "e", "i", "o", "en", "er", "in", "el"];
const RARE_FAMILY_END: &[&str] = &[
    "berg", "bridge", "by", "dale", "den", "ford", "ham", "hart", "ington", "ley", "man", "mont",
    "more", "ner", "ock", "quist", "rick", "sen", "ski", "son", "stein", "ton", "ville", "wick",
    "worth", "well", "ens", "ett", "ino", "elli", "ova", "ard", "ing", "ery", "ich", "ow", "ridge",
    "field", "stead", "land",
];

const STREETS: &[&str] = &[
    "Main",
    "Oak",
    "Maple",
    "Elm",
    "Washington",
    "Park",
    "Pine",
    "Cedar",
    "Lake",
    "Hill",
    "Church",
    "High",
    "Pleasant",
    "School",
    "Spring",
    "Center",
    "Union",
    "Prospect",
    "Highland",
    "Summer",
    "Water",
    "Chestnut",
    "Walnut",
    "Franklin",
    "Lincoln",
    "Adams",
    "Jefferson",
    "Madison",
    "Forest",
    "River",
    "Mill",
    "Bridge",
    "Broadway",
    "Central",
    "Cottage",
    "Winter",
    "Grove",
    "Green",
    "Liberty",
    "Mount Vernon",
    "Beacon",
    "Commonwealth",
    "Tremont",
    "Boylston",
    "Massachusetts",
    "Harvard",
    "Belmont",
    "Auburn",
    "Granite",
    "Essex",
    "Salem",
    "Lowell",
    "Dorchester",
    "Columbia",
    "Blue Hill",
    "Hancock",
    "Warren",
    "Prospect Hill",
    "Sunset",
    "Birch",
    "Willow",
    "Hawthorne",
    "Laurel",
    "Dogwood",
    "Meadow",
    "Orchard",
    "Valley",
    "Brook",
    "Pond",
    "Ridge",
    "Woodland",
    "Fairview",
    "Lakeview",
    "Riverside",
    "Hillside",
    "Academy",
    "Depot",
    "Railroad",
    "Canal",
    "Front",
    "North",
    "South",
    "East",
    "West",
    "Court",
    "Crescent",
    "Charles",
    "Elliot",
    "Atlantic",
    "Pearl",
    "Prince",
    "Hanover",
    "Fulton",
    "Federal",
    "Congress",
    "State",
    "Cambridge",
    "Concord",
    "Lexington",
    "Worcester",
    "Boston",
    "Quincy",
    "Revere",
    "Adams Farm",
    "Old Colony",
    "King",
    "Queen",
    "Russell",
    "Sherman",
    "Grant",
    "Putnam",
    "Wyman",
    "Bartlett",
    "Bradford",
    "Standish",
    "Winthrop",
];

/// Street types: full, abbreviation (USPS), relative frequency.
const STREET_TYPES: &[(&str, &str, u32)] = &[
    ("Street", "St", 40),
    ("Avenue", "Ave", 15),
    ("Road", "Rd", 15),
    ("Drive", "Dr", 8),
    ("Lane", "Ln", 5),
    ("Court", "Ct", 4),
    ("Place", "Pl", 3),
    ("Terrace", "Ter", 3),
    ("Boulevard", "Blvd", 2),
    ("Circle", "Cir", 2),
    ("Parkway", "Pkwy", 1),
    ("Highway", "Hwy", 1),
];

const DIRECTIONS: &[(&str, &str)] = &[("North", "N"), ("South", "S"), ("East", "E"), ("West", "W")];

/// Massachusetts cities and towns: name, relative population, ZIP codes.
const CITIES: &[(&str, u32, &[&str])] = &[
    (
        "Boston",
        675,
        &[
            "02108", "02113", "02115", "02116", "02118", "02119", "02120", "02121", "02122",
            "02124", "02125", "02127", "02128", "02130", "02131", "02132", "02135", "02136",
        ],
    ),
    (
        "Worcester",
        206,
        &[
            "01602", "01603", "01604", "01605", "01606", "01607", "01610",
        ],
    ),
    (
        "Springfield",
        155,
        &[
            "01103", "01104", "01105", "01107", "01108", "01109", "01118", "01119",
        ],
    ),
    (
        "Cambridge",
        118,
        &["02138", "02139", "02140", "02141", "02142"],
    ),
    ("Lowell", 115, &["01850", "01851", "01852", "01854"]),
    ("Brockton", 105, &["02301", "02302"]),
    ("Quincy", 101, &["02169", "02170", "02171"]),
    ("Lynn", 101, &["01902", "01904", "01905"]),
    ("New Bedford", 101, &["02740", "02744", "02745", "02746"]),
    ("Fall River", 94, &["02720", "02721", "02723", "02724"]),
    (
        "Newton",
        88,
        &[
            "02458", "02459", "02460", "02461", "02464", "02465", "02466",
        ],
    ),
    ("Lawrence", 89, &["01840", "01841", "01843"]),
    ("Somerville", 81, &["02143", "02144", "02145"]),
    ("Framingham", 72, &["01701", "01702"]),
    ("Haverhill", 67, &["01830", "01832", "01835"]),
    ("Waltham", 65, &["02451", "02452", "02453"]),
    ("Malden", 66, &["02148"]),
    ("Brookline", 63, &["02445", "02446"]),
    ("Plymouth", 61, &["02360"]),
    ("Medford", 59, &["02155"]),
    ("Taunton", 59, &["02780"]),
    ("Chicopee", 55, &["01013", "01020"]),
    ("Weymouth", 57, &["02188", "02189", "02190", "02191"]),
    ("Revere", 62, &["02151"]),
    ("Peabody", 54, &["01960"]),
    ("Methuen", 53, &["01844"]),
    ("Barnstable", 48, &["02630"]),
    ("Pittsfield", 43, &["01201"]),
    ("Attleboro", 46, &["02703"]),
    ("Arlington", 46, &["02474", "02476"]),
    ("Everett", 49, &["02149"]),
    ("Salem", 44, &["01970"]),
    ("Westfield", 40, &["01085"]),
    ("Leominster", 43, &["01453"]),
    ("Fitchburg", 41, &["01420"]),
    ("Beverly", 42, &["01915"]),
    ("Holyoke", 38, &["01040"]),
    ("Marlborough", 41, &["01752"]),
    ("Woburn", 40, &["01801"]),
    ("Chelsea", 40, &["02150"]),
    ("Westborough", 21, &["01581"]),
    ("Amherst", 39, &["01002"]),
    ("Shrewsbury", 38, &["01545"]),
    ("Dartmouth", 34, &["02747", "02748"]),
    ("Andover", 36, &["01810"]),
    ("Natick", 37, &["01760"]),
    ("Randolph", 34, &["02368"]),
    ("Watertown", 35, &["02472"]),
    ("Franklin", 33, &["02038"]),
    ("Northampton", 29, &["01060"]),
];

const AREA_CODES: &[&str] = &[
    "617", "857", "508", "774", "781", "339", "978", "351", "413",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The truth beside the records.
    fn build(cfg: &CorpusConfig) -> (Vec<Person>, Vec<CorpusRecord>) {
        let records = records(cfg);
        (records.people.clone(), records.collect())
    }

    fn official(r: &CorpusRecord) -> &Value {
        &r.patient["name"][0]
    }

    fn ssn_of(r: &CorpusRecord) -> Option<String> {
        r.patient["identifier"]
            .as_array()
            .expect("identifiers")
            .iter()
            .find(|i| i["system"] == SSN_SYSTEM)
            .map(|i| i["value"].as_str().expect("text").replace('-', ""))
    }

    fn digits(s: &str) -> String {
        s.chars().filter(char::is_ascii_digit).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_corpus() {
        let a = generate(&CorpusConfig {
            people: 2_000,
            seed: 7,
        });
        let b = generate(&CorpusConfig {
            people: 2_000,
            seed: 7,
        });
        let c = generate(&CorpusConfig {
            people: 2_000,
            seed: 8,
        });
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_person_is_at_two_to_four_sources_once_each() {
        let people = 10_000;
        let records = generate(&CorpusConfig { people, seed: 1 });
        let mut sources: Vec<Vec<u8>> = vec![Vec::new(); people];
        let mut mrns = HashSet::new();
        for r in &records {
            assert!(r.source < SOURCES);
            assert_eq!(r.assigning_authority, assigning_authority(r.source));
            assert!(
                mrns.insert((r.source, r.mrn.clone())),
                "one MRN per person at a source"
            );
            sources[r.person as usize].push(r.source);
        }
        let mut count_of = [0usize; 5];
        for mut s in sources {
            let n = s.len();
            assert!((2..=4).contains(&n), "{n} sources");
            s.dedup();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), n, "a source knows a person once");
            count_of[n] += 1;
        }
        for n in 2..=4 {
            assert!(count_of[n] > people / 4, "{count_of:?}");
        }
        // Arrival interleaves people: the first records are not one person's.
        assert!(records[..10].iter().any(|r| r.person != records[0].person));
        assert!(
            records
                .windows(2)
                .filter(|w| w[0].person == w[1].person)
                .count()
                < 100
        );
    }

    #[test]
    fn records_are_fhir_patients_shaped_like_the_sources_send() {
        let records = generate(&CorpusConfig {
            people: 10_000,
            seed: 3,
        });
        let phone = regex_free_phone_formats();
        for r in &records {
            let p = &r.patient;
            assert_eq!(p["resourceType"], "Patient");
            let mr = &p["identifier"][0];
            assert_eq!(mr["system"], r.assigning_authority.as_str());
            assert_eq!(mr["value"], r.mrn.as_str());
            assert_eq!(mr["type"]["coding"][0]["code"], "MR");
            let name = official(r);
            assert_eq!(name["use"], "official");
            assert!(!name["family"].as_str().expect("family").is_empty());
            assert!(!name["given"][0].as_str().expect("given").is_empty());
            let birth = p["birthDate"].as_str().expect("birthDate");
            let parts: Vec<u32> = birth
                .split('-')
                .map(|x| x.parse().expect("digits"))
                .collect();
            assert_eq!(birth.len(), 10, "{birth}");
            assert!(
                (1..=12).contains(&parts[1]) && (1..=31).contains(&parts[2]),
                "{birth}"
            );
            if let Some(t) = p.get("telecom") {
                assert_eq!(t[0]["system"], "phone");
                let v = t[0]["value"].as_str().expect("value");
                assert!(phone.iter().any(|f| f(v)), "{v}");
            }
            if let Some(a) = p.get("address") {
                let zip = a[0]["postalCode"].as_str().expect("postalCode");
                assert!(zip.len() == 5 || zip.len() == 10, "{zip}");
                assert!(!a[0]["line"][0].as_str().expect("line").is_empty());
                assert!(a[0]["city"].is_string() && a[0]["state"].is_string());
            }
            if let Some(g) = p.get("gender") {
                assert!(g == "male" || g == "female");
            }
            if let Some(ssn) = ssn_of(r) {
                assert_eq!(ssn.len(), 9);
                assert!(ssn.chars().all(|c| c.is_ascii_digit()));
            }
        }
        // The variations a matcher must see through are all there.
        let text = serde_json::to_string(&records.iter().map(|r| &r.patient).collect::<Vec<_>>())
            .expect("json");
        for seen in [
            "José",
            "\"Jose\"",
            "\"JOSE\"",
            "O'Brien",
            "OBrien",
            "OBRIEN",
            "Apt",
            "Apartment",
            " St\"",
            "Street",
            "Ave.",
            "\"maiden\"",
            "\"old\"",
            "(",
            "+1 ",
        ] {
            assert!(text.contains(seen), "no {seen} in 10,000 people");
        }
    }

    fn regex_free_phone_formats() -> Vec<fn(&str) -> bool> {
        fn shape(v: &str, pattern: &str) -> bool {
            v.len() == pattern.len()
                && v.chars().zip(pattern.chars()).all(|(c, p)| match p {
                    '9' => c.is_ascii_digit(),
                    _ => c == p,
                })
        }
        vec![
            |v| shape(v, "999-999-9999"),
            |v| shape(v, "(999) 999-9999"),
            |v| shape(v, "9999999999"),
            |v| shape(v, "+1 999 999 9999"),
        ]
    }

    /// Measures each corruption in the output against the truth.
    #[test]
    fn rates_come_out_as_documented() {
        let (people, records) = build(&CorpusConfig {
            people: 10_000,
            seed: 11,
        });
        let tables = Tables::new();
        let n = records.len() as f64;
        let share = |count: usize, of: usize| count as f64 / of as f64;
        let mut typo = 0;
        let mut nick = (0, 0);
        let mut swapped = (0, 0);
        let mut ssn_absent = 0;
        let mut ssn_wrong = (0, 0);
        let mut missing = [0usize; 3];
        for r in &records {
            let p = &people[r.person as usize];
            let name = official(r);
            let given = fold(name["given"][0].as_str().expect("given"));
            let family = fold(name["family"].as_str().expect("family"));
            let nicknames: Vec<String> =
                tables.nicknames(p.given).iter().map(|n| fold(n)).collect();
            let families: Vec<String> = std::iter::once(fold(&p.family))
                .chain(p.married.as_ref().map(|m| fold(&m.family)))
                .collect();
            if !(given == fold(p.given) || nicknames.contains(&given))
                || !families.contains(&family)
            {
                typo += 1;
            }
            if !nicknames.is_empty() {
                nick.1 += 1;
                nick.0 += usize::from(nicknames.contains(&given));
            }
            let b = p.birth;
            if b.day <= 12 && b.day != b.month {
                swapped.1 += 1;
                let swap = Date {
                    year: b.year,
                    month: b.day,
                    day: b.month,
                };
                swapped.0 += usize::from(r.patient["birthDate"] == swap.fhir().as_str());
            }
            match ssn_of(r) {
                None => ssn_absent += 1,
                Some(ssn) => {
                    ssn_wrong.1 += 1;
                    ssn_wrong.0 += usize::from(ssn != p.ssn);
                }
            }
            for (i, field) in ["telecom", "address", "gender"].iter().enumerate() {
                missing[i] += usize::from(r.patient.get(*field).is_none());
            }
        }
        let rates = [
            ("name typo", share(typo, records.len()), 0.05, 0.07),
            ("nickname", share(nick.0, nick.1), 0.075, 0.105),
            (
                "nickname, of all records",
                share(nick.0, records.len()),
                0.03,
                0.07,
            ),
            (
                "legacy (upper case, ASCII)",
                share(
                    records
                        .iter()
                        .filter(|r| SOURCE_STYLES[r.source as usize].legacy)
                        .count(),
                    records.len(),
                ),
                0.2,
                0.4,
            ),
            (
                "day/month swapped",
                share(swapped.0, swapped.1),
                0.013,
                0.027,
            ),
            ("SSN absent", share(ssn_absent, records.len()), 0.36, 0.44),
            (
                "SSN mistyped",
                share(ssn_wrong.0, ssn_wrong.1),
                0.022,
                0.038,
            ),
            ("phone missing", missing[0] as f64 / n, 0.18, 0.22),
            ("address missing", missing[1] as f64 / n, 0.04, 0.06),
            ("gender missing", missing[2] as f64 / n, 0.006, 0.014),
        ];
        for (what, rate, low, high) in rates {
            println!("{what}: {:.2} %", rate * 100.0);
            assert!((low..=high).contains(&rate), "{what}: {rate:.4}");
        }

        // People: moves, married names, twins, same name and birth date.
        let moved: Vec<&Person> = people.iter().filter(|p| p.moved.is_some()).collect();
        assert!(
            (0.13..=0.17).contains(&share(moved.len(), people.len())),
            "moved {}",
            moved.len()
        );
        let women: Vec<&Person> = people
            .iter()
            .filter(|p| p.gender == Gender::Female && p.birth.year < MARRIED_BORN_BEFORE)
            .collect();
        let married = women.iter().filter(|p| p.married.is_some()).count();
        assert!(
            (0.04..=0.06).contains(&share(married, women.len())),
            "married {married}"
        );
        let twins = people.iter().filter(|p| p.twin_of.is_some()).count();
        assert!(
            (0.007..=0.013).contains(&share(twins, people.len())),
            "twins {twins}"
        );
        let same = people
            .iter()
            .filter(|p| p.same_name_and_birth_as.is_some())
            .count();
        assert!((5..=40).contains(&same), "same name and birth {same}");

        // What the sources show: the new address at the one source, married and maiden names.
        let mut moved_seen = 0;
        let mut married_both = HashMap::<u32, (bool, bool)>::new();
        for r in &records {
            let p = &people[r.person as usize];
            if let (Some(m), Some(a)) = (&p.moved, r.patient.get("address")) {
                let line = a[0]["line"][0].as_str().expect("line");
                let number = line.split(' ').next().expect("number");
                if m.source == r.source && number == m.address.number.to_string() {
                    moved_seen += 1;
                }
            }
            if let Some(m) = &p.married {
                let family = fold(official(r)["family"].as_str().expect("family"));
                let e = married_both.entry(r.person).or_default();
                e.0 |= family == fold(&m.family);
                e.1 |= family == fold(&p.family);
            }
        }
        assert!(
            share(moved_seen, moved.len()) > 0.9,
            "moved seen {moved_seen}"
        );
        let both = married_both.values().filter(|(a, b)| *a && *b).count();
        assert!(
            share(both, married) > 0.8,
            "married and maiden both seen {both}"
        );
    }

    #[test]
    fn hard_cases_are_there() {
        let (people, records) = build(&CorpusConfig {
            people: 10_000,
            seed: 5,
        });
        let tables = Tables::new();
        for (i, p) in people.iter().enumerate() {
            if let Some(t) = p.twin_of {
                let t = &people[t as usize];
                assert_eq!(t.twin_of, Some(i as u32));
                assert_eq!(
                    (&t.family, t.birth, &t.home, &t.phone),
                    (&p.family, p.birth, &p.home, &p.phone)
                );
                assert_ne!(t.ssn, p.ssn);
                assert!(
                    !tables.related(t.given, p.given),
                    "{} / {}",
                    t.given,
                    p.given
                );
            }
            if let Some(o) = p.same_name_and_birth_as {
                let o = &people[o as usize];
                assert_eq!((o.given, &o.family, o.birth), (p.given, &p.family, p.birth));
                assert_ne!(o.ssn, p.ssn);
                assert_ne!(o.phone, p.phone);
            }
        }
        // Common names: Smith leads, and many different people share a name and a birth year.
        let mut families = HashMap::<&str, usize>::new();
        let mut name_year = HashMap::<(String, String, i32), usize>::new();
        for p in &people {
            *families.entry(p.family.as_str()).or_default() += 1;
            *name_year
                .entry((fold(p.given), fold(&p.family), p.birth.year))
                .or_default() += 1;
        }
        let top = families.iter().max_by_key(|(_, n)| **n).expect("people");
        assert_eq!(*top.0, "Smith");
        let shared: usize = name_year.values().filter(|n| **n > 1).sum();
        assert!(shared > 80, "{shared} people share a name and birth year");
        // Some records of the 10,000 people spell names with a nickname, a typo or upper case.
        assert!(records.iter().any(|r| official(r)["given"][0] == "Bill"));
        assert!(records.iter().any(|r| official(r)["family"] == "SMITH"));
        // Phone numbers of one person are one number whatever their format.
        for r in records.iter().take(500) {
            if let Some(t) = r.patient.get("telecom") {
                let p = &people[r.person as usize];
                let v = digits(t[0]["value"].as_str().expect("value"));
                let v = v
                    .strip_prefix('1')
                    .filter(|v| v.len() == 10)
                    .unwrap_or(&v)
                    .to_string();
                let moved = p.moved.as_ref().and_then(|m| m.phone.clone());
                assert!(v == p.phone || Some(&v) == moved.as_ref(), "{v}");
            }
        }
    }

    #[test]
    fn the_nickname_table_is_wide_and_every_entry_is_used() {
        let pairs: usize = NICKNAMES.iter().map(|(_, n)| n.len()).sum();
        assert!(pairs >= 60, "{pairs}");
        for (formal, _) in NICKNAMES {
            assert!(
                MALE_NAMES
                    .iter()
                    .chain(FEMALE_NAMES)
                    .any(|(g, _)| g == formal),
                "{formal} is never drawn"
            );
        }
    }

    #[test]
    fn pair_quality_of_a_perfect_clustering() {
        let q = pair_quality(&[0, 0, 1, 1, 1, 2], &[9, 9, 4, 4, 4, 7]);
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.correct_pairs),
            (4, 4, 4)
        );
        assert_eq!((q.precision, q.recall, q.f1), (1.0, 1.0, 1.0));
    }

    #[test]
    fn pair_quality_of_all_singletons() {
        let q = pair_quality(&[0, 0, 1, 1, 1, 2], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.correct_pairs),
            (4, 0, 0)
        );
        assert_eq!((q.precision, q.recall, q.f1), (1.0, 0.0, 0.0));
    }

    #[test]
    fn pair_quality_of_one_wrong_merge() {
        // Persons 1 (two records) and 2 (one record) in one cluster: 3 predicted pairs, 1 right.
        let q = pair_quality(&[0, 0, 1, 1, 2], &[5, 5, 6, 6, 6]);
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.correct_pairs),
            (2, 4, 2)
        );
        assert_eq!((q.precision, q.recall), (0.5, 1.0));
        assert!((q.f1 - 2.0 / 3.0).abs() < 1e-12);
        // And one missed merge: person 1's three records in two clusters.
        let q = pair_quality(&[0, 0, 1, 1, 1], &[5, 5, 6, 6, 7]);
        assert_eq!(
            (q.true_pairs, q.predicted_pairs, q.correct_pairs),
            (4, 2, 2)
        );
        assert_eq!((q.precision, q.recall), (1.0, 0.5));
    }

    #[test]
    fn pair_quality_counts_from_sizes_on_a_corpus() {
        let records = generate(&CorpusConfig {
            people: 2_000,
            seed: 2,
        });
        let truth: Vec<u32> = records.iter().map(|r| r.person).collect();
        // Cluster by person except that every person with an even number is merged with the next.
        let predicted: Vec<u64> = truth.iter().map(|p| u64::from(p / 2)).collect();
        let q = pair_quality(&truth, &predicted);
        let mut brute = (0u64, 0u64, 0u64);
        for i in 0..truth.len() {
            for j in i + 1..truth.len() {
                let (t, p) = (truth[i] == truth[j], predicted[i] == predicted[j]);
                brute.0 += u64::from(t);
                brute.1 += u64::from(p);
                brute.2 += u64::from(t && p);
            }
        }
        assert_eq!((q.true_pairs, q.predicted_pairs, q.correct_pairs), brute);
        assert_eq!(q.recall, 1.0);
        assert!(q.precision < 0.6);
    }

    /// Figures for the report, not a test of speed:
    /// `cargo test --release -p bench --lib mpi_corpus -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn figures() {
        let peak = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
                    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                    Some(format!("{:.2} GB", kb as f64 / 1e6))
                })
                .unwrap_or_default()
        };
        // Streaming first: the peak resident size only grows.
        let started = std::time::Instant::now();
        let truth: Vec<u32> = records(&CorpusConfig {
            people: 400_000,
            seed: 14,
        })
        .map(|r| r.person)
        .collect();
        println!(
            "records(): 400,000 people, {} records streamed in {:.2?}, peak resident {}",
            truth.len(),
            started.elapsed(),
            peak()
        );
        let started = std::time::Instant::now();
        let q = pair_quality(
            &truth,
            &truth.iter().map(|t| u64::from(*t)).collect::<Vec<_>>(),
        );
        println!(
            "pair_quality on {} records: {:.2?}",
            truth.len(),
            started.elapsed()
        );
        assert_eq!(q.recall, 1.0);
        for people in [100_000, 400_000] {
            let started = std::time::Instant::now();
            let records = generate(&CorpusConfig { people, seed: 14 });
            println!(
                "generate(): {people} people, {} records in {:.2?}, peak resident {}",
                records.len(),
                started.elapsed(),
                peak()
            );
            assert!(records.len() > people * 2);
        }
        let (people, _) = build(&CorpusConfig {
            people: 100_000,
            seed: 14,
        });
        let mut name_year = HashMap::<(String, String, i32), usize>::new();
        let mut name_date = HashMap::<(String, String, Date), usize>::new();
        for p in people.iter().filter(|p| p.twin_of.is_none()) {
            let name = (fold(p.given), fold(&p.family));
            *name_year
                .entry((name.0.clone(), name.1.clone(), p.birth.year))
                .or_default() += 1;
            *name_date.entry((name.0, name.1, p.birth)).or_default() += 1;
        }
        fn shared<K>(m: &HashMap<K, usize>) -> usize {
            m.values().filter(|n| **n > 1).sum()
        }
        println!(
            "100,000 people: {} (not twins) share their name and birth year with another, {} their name and birth date",
            shared(&name_year),
            shared(&name_date)
        );
    }
}
