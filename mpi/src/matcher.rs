//! The online matcher: every identity it is shown is compared with the candidates its blocking
//! keys find, scored by the model, and linked to a person, put up for review, or made a new
//! person. It keeps what it knows in memory, compactly: names interned once (`lasso`), each
//! identity a fixed-size row, the blocking index a chained multimap of 8-byte slots.

use std::collections::HashMap;

use lasso::{Rodeo, Spur};
use rand::{Rng, SeedableRng};
use rphonetic::{Encoder, Nysiis};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::compare::{compare, Comparison, Side};
use crate::model::Model;
use crate::normalize::{self, Features};

/// Scores (log₂ odds) at which a pair is linked, or put up for review.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub link: f64,
    pub review: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        // Chosen on the generated corpus (bench/run, stage mpi): about the lowest link score
        // whose precision stays at or above 99.9 % (a wrong link mixes two people's records, a
        // missed one leaves a record apart); from 1 in 256 up, a steward decides.
        Thresholds {
            link: 10.0,
            review: -8.0,
        }
    }
}

/// The model is estimated again from the matcher's own identities when it holds this many, then
/// at every doubling (`learn`).
pub const FIRST_ESTIMATE: usize = 10_000;

/// The most a name's frequency moves a score, either way (bits).
const MAX_FREQUENCY_BITS: f64 = 6.0;

/// How much better (bits) the best person must score than the next one above the link
/// threshold to be linked without a steward.
const CONTESTED_MARGIN: f64 = 2.0;

/// Blocks larger than this are read only this far (their newest identities): a very common
/// name and birth year must not make one identity cost thousands of comparisons.
const MAX_BLOCK_READ: u32 = 100;

/// A candidate the matcher compared, with its score and comparison vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub identity: (String, String),
    pub score: f64,
    pub comparison: Comparison,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A known identity sent again with nothing new.
    Unchanged,
    /// A known identity whose demographics changed; its links stay as they are.
    Updated,
    /// A person of its own.
    NewPerson,
    /// One person with the candidate's.
    Link(Candidate),
    /// A person of its own, and possibly the same as these (best first): for a data steward.
    Review(Vec<Candidate>),
}

/// One identity as the matcher keeps it: 48 bytes, strings interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Row {
    authority: Option<Spur>,
    given: Option<Spur>,
    family: Option<Spur>,
    former_family: Option<Spur>,
    street: Option<Spur>,
    /// y << 9 | m << 5 | d; 0 = none.
    birth: u32,
    /// Five digits + 1; 0 = none.
    postal: u32,
    /// 0 = none.
    ssn: u32,
    phone: u64,
    /// 0 none, 1 male, 2 female, 3 other.
    sex: u8,
}

struct Entry<'a> {
    row: &'a Row,
    names: &'a Rodeo,
}

impl Side for Entry<'_> {
    fn given(&self) -> Option<&str> {
        self.row.given.map(|s| self.names.resolve(&s))
    }
    fn family(&self) -> Option<&str> {
        self.row.family.map(|s| self.names.resolve(&s))
    }
    fn former_family(&self) -> Option<&str> {
        self.row.former_family.map(|s| self.names.resolve(&s))
    }
    fn birth(&self) -> Option<(u16, u8, u8)> {
        let b = self.row.birth;
        (b != 0).then_some(((b >> 9) as u16, ((b >> 5) & 15) as u8, (b & 31) as u8))
    }
    fn sex(&self) -> Option<u8> {
        (self.row.sex != 0).then_some(self.row.sex)
    }
    fn street(&self) -> Option<&str> {
        self.row.street.map(|s| self.names.resolve(&s))
    }
    fn postal_code(&self) -> Option<u32> {
        (self.row.postal != 0).then_some(self.row.postal.wrapping_sub(1))
    }
    fn phone(&self) -> Option<u64> {
        (self.row.phone != 0).then_some(self.row.phone)
    }
    fn ssn(&self) -> Option<u32> {
        (self.row.ssn != 0).then_some(self.row.ssn)
    }
}

/// Blocking key → the identities that have it, newest first: `heads` holds each key's newest
/// slot, each slot the identity and the next (older) slot.
#[derive(Default)]
struct Index {
    heads: FxHashMap<u64, (u32, u32)>,
    slots: Vec<(u32, u32)>,
}

const END: u32 = u32::MAX;

impl Index {
    fn insert(&mut self, id: u32, key: u64) {
        let slot = self.slots.len() as u32;
        let head = self.heads.entry(key).or_insert((END, 0));
        self.slots.push((id, head.0));
        *head = (slot, head.1 + 1);
    }

    fn read(&self, key: u64, out: &mut Vec<u32>) {
        let Some(&(mut slot, _)) = self.heads.get(&key) else {
            return;
        };
        let mut n = 0;
        while slot != END && n < MAX_BLOCK_READ {
            let (id, next) = self.slots[slot as usize];
            out.push(id);
            slot = next;
            n += 1;
        }
    }
}

/// What the matcher knows: identities, the people they form, the steward's "not a match"s.
pub struct Matcher {
    model: Model,
    thresholds: Thresholds,
    /// `authority|mrn` → identity number (lasso keys are dense indices).
    ids: Rodeo,
    names: Rodeo,
    rows: Vec<Row>,
    /// Each identity's person: the number of one of its identities.
    person: Vec<u32>,
    /// The identities of every person with more than one.
    members: FxHashMap<u32, Vec<u32>>,
    apart: FxHashSet<(u32, u32)>,
    index: Index,
    phonetic: Nysiis,
    comparisons: u64,
    next_estimate: usize,
    /// How many identities carry each given name and each family name (interned), and the sums
    /// of their squares: term frequencies, for `frequency_adjustment`.
    given_counts: FxHashMap<Spur, u32>,
    family_counts: FxHashMap<Spur, u32>,
    given_squares: u64,
    family_squares: u64,
}

fn pair(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

fn identity_key(authority: &str, mrn: &str) -> String {
    format!("{authority}|{mrn}")
}

impl Matcher {
    pub fn new(model: Model, thresholds: Thresholds) -> Matcher {
        Matcher {
            model,
            thresholds,
            ids: Rodeo::new(),
            names: Rodeo::new(),
            rows: Vec::new(),
            person: Vec::new(),
            members: FxHashMap::default(),
            apart: FxHashSet::default(),
            index: Index::default(),
            phonetic: Nysiis::default(),
            comparisons: 0,
            next_estimate: FIRST_ESTIMATE,
            given_counts: FxHashMap::default(),
            family_counts: FxHashMap::default(),
            given_squares: 0,
            family_squares: 0,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn set_model(&mut self, model: Model) {
        self.model = model;
    }

    /// Estimates the model again from the identities held, when their number has doubled since
    /// the last estimate (from `FIRST_ESTIMATE` on); returns the new model's description.
    pub fn learn(&mut self) -> Option<&str> {
        if self.rows.len() < self.next_estimate {
            return None;
        }
        self.next_estimate = self.rows.len() * 2;
        let model = self.estimate(50_000, 1_000_000, self.rows.len() as u64);
        if !model.plausible() {
            return None;
        }
        self.model = model;
        Some(&self.model.trained_on)
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn identities(&self) -> usize {
        self.rows.len()
    }

    /// Pairs compared so far.
    pub fn comparisons(&self) -> u64 {
        self.comparisons
    }

    /// Bytes held, approximately: rows, people, index, interned strings.
    pub fn memory_bytes(&self) -> usize {
        let strings =
            |r: &Rodeo| r.strings().map(|s| s.len()).sum::<usize>() + r.len() * (8 + 4 + 16);
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.person.capacity() * 4
            + self
                .members
                .values()
                .map(|m| m.capacity() * 4 + 40)
                .sum::<usize>()
            + self.apart.capacity() * 9
            + self.index.heads.capacity() * 17
            + self.index.slots.capacity() * 8
            + strings(&self.ids)
            + strings(&self.names)
    }

    fn number(&self, authority: &str, mrn: &str) -> Option<u32> {
        self.ids
            .get(identity_key(authority, mrn))
            .map(|k| lasso::Key::into_usize(k) as u32)
    }

    fn identity(&self, id: u32) -> (String, String) {
        let key = self
            .ids
            .resolve(&lasso::Key::try_from_usize(id as usize).expect("known"));
        let authority = self.rows[id as usize]
            .authority
            .map(|a| self.names.resolve(&a).to_string())
            .unwrap_or_default();
        let mrn = key
            .get(authority.len() + 1..)
            .unwrap_or_default()
            .to_string();
        (authority, mrn)
    }

    fn row(&mut self, authority: &str, f: &Features) -> Row {
        let authority = Some(self.names.get_or_intern(authority));
        let mut intern = |s: &Option<String>| s.as_deref().map(|s| self.names.get_or_intern(s));
        Row {
            authority,
            given: intern(&f.given),
            family: intern(&f.family),
            former_family: intern(&f.former_family),
            street: intern(&f.street),
            birth: f
                .birth_date
                .as_deref()
                .and_then(normalize::birth_date)
                .map(|(y, m, d)| (u32::from(y) << 9) | (u32::from(m) << 5) | u32::from(d))
                .unwrap_or(0),
            postal: f
                .postal_code
                .as_deref()
                .and_then(|p| p.parse::<u32>().ok())
                .map(|p| p + 1)
                .unwrap_or(0),
            ssn: f.ssn.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
            phone: f.phone.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
            sex: match f.sex.as_deref() {
                Some("male") => 1,
                Some("female") => 2,
                Some("other") => 3,
                _ => 0,
            },
        }
    }

    /// The blocking keys of a row: family sound + birth year + given initial; birth date (day
    /// and month in either order) + given initial, and + family initial; SSN; phone; postal code
    /// + given name; the former family name's sound + birth year + given initial.
    fn keys(&self, row: &Row, features: &Features) -> Vec<u64> {
        use std::hash::{Hash, Hasher};
        let mut keys = Vec::with_capacity(7);
        let mut key = |parts: &dyn Fn(&mut rustc_hash::FxHasher)| {
            let mut h = rustc_hash::FxHasher::default();
            parts(&mut h);
            keys.push(h.finish());
        };
        let given_canonical = features.given_canonical();
        let given_initial = given_canonical.and_then(|g| g.chars().next());
        let year = row.birth >> 9;
        let (m, d) = ((row.birth >> 5) & 15, row.birth & 31);
        let date = (year, m.min(d), m.max(d));
        let sound = |name: &Option<String>| {
            name.as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| self.phonetic.encode(n))
        };
        if let (Some(s), Some(g)) = (sound(&features.family), given_initial) {
            key(&|h| (1u8, &s, year, g).hash(h));
        }
        if row.birth != 0 {
            if let Some(g) = given_initial {
                key(&|h| (2u8, date, g).hash(h));
            }
            if let Some(f) = features.family.as_deref().and_then(|f| f.chars().next()) {
                key(&|h| (3u8, date, f).hash(h));
            }
        }
        if row.ssn != 0 {
            key(&|h| (4u8, row.ssn).hash(h));
        }
        if row.phone != 0 {
            key(&|h| (5u8, row.phone).hash(h));
        }
        if let (true, Some(g)) = (row.postal != 0, given_canonical) {
            key(&|h| (6u8, row.postal, g).hash(h));
        }
        if let (Some(s), Some(g)) = (sound(&features.former_family), given_initial) {
            key(&|h| (1u8, &s, year, g).hash(h));
        }
        keys
    }

    fn person_of(&self, id: u32) -> u32 {
        self.person[id as usize]
    }

    fn members_of(&self, person: u32) -> &[u32] {
        match self.members.get(&person) {
            Some(m) => m,
            None => std::slice::from_ref(&self.person[person as usize]),
        }
    }

    /// Whether a steward said that `id` and someone of `person` are two people.
    fn kept_apart(&self, id: u32, person: u32) -> bool {
        !self.apart.is_empty()
            && self
                .members_of(person)
                .iter()
                .any(|m| self.apart.contains(&pair(id, *m)))
    }

    /// Learns an identity without deciding anything (replaying decisions already made).
    /// Returns whether it was new.
    pub fn remember(&mut self, authority: &str, mrn: &str, features: &Features) -> bool {
        self.upsert(authority, mrn, features).1
    }

    /// `(number, new, changed)`.
    fn upsert(&mut self, authority: &str, mrn: &str, features: &Features) -> (u32, bool, bool) {
        let key = identity_key(authority, mrn);
        let id = lasso::Key::into_usize(self.ids.get_or_intern(&key)) as u32;
        let row = self.row(authority, features);
        let new = id as usize == self.rows.len();
        if !new && self.rows[id as usize] == row {
            return (id, false, false);
        }
        let keys = self.keys(&row, features);
        for k in keys {
            self.index.insert(id, k);
        }
        if new {
            fn count(counts: &mut FxHashMap<Spur, u32>, squares: &mut u64, name: Option<Spur>) {
                if let Some(name) = name {
                    let c = counts.entry(name).or_default();
                    *squares += 2 * u64::from(*c) + 1;
                    *c += 1;
                }
            }
            count(&mut self.given_counts, &mut self.given_squares, row.given);
            count(
                &mut self.family_counts,
                &mut self.family_squares,
                row.family,
            );
            self.rows.push(row);
            self.person.push(id);
        } else {
            self.rows[id as usize] = row;
        }
        (id, new, true)
    }

    /// Decides who a source's identity is, from its demographics.
    pub fn observe(&mut self, authority: &str, mrn: &str, features: &Features) -> Decision {
        let (id, new, changed) = self.upsert(authority, mrn, features);
        if !changed {
            return Decision::Unchanged;
        }
        if !new && self.members.contains_key(&self.person_of(id)) {
            return Decision::Updated;
        }
        let candidates = self.candidates(id, features);
        let mut decision = self.decide(id, candidates);
        if let Decision::Link(c) = &decision {
            let other = self.number(&c.identity.0, &c.identity.1).expect("known");
            self.join(other, id);
        }
        if !new && decision == Decision::NewPerson {
            decision = Decision::Updated;
        }
        decision
    }

    /// The best-scoring identity of each other person the blocking keys find, best first.
    fn candidates(&mut self, id: u32, features: &Features) -> Vec<(u32, f64, Comparison)> {
        let row = self.rows[id as usize];
        let mut found = Vec::with_capacity(64);
        for k in self.keys(&row, features) {
            self.index.read(k, &mut found);
        }
        found.sort_unstable();
        found.dedup();
        let me = self.person_of(id);
        let mut best: FxHashMap<u32, (u32, f64, Comparison)> = FxHashMap::default();
        let this = Entry {
            row: &row,
            names: &self.names,
        };
        for other in found {
            if other == id || self.person_of(other) == me {
                continue;
            }
            let c = compare(
                &this,
                &Entry {
                    row: &self.rows[other as usize],
                    names: &self.names,
                },
            );
            self.comparisons += 1;
            if c.twins() {
                continue;
            }
            let score = self.model.score(&c) + self.frequency_adjustment(&row, &c);
            let person = self.person_of(other);
            let slot = best.entry(person).or_insert((other, f64::MIN, c));
            if score > slot.1 {
                *slot = (other, score, c);
            }
        }
        let mut ranked: Vec<(u32, f64, Comparison)> = best
            .into_iter()
            .filter(|(person, _)| !self.kept_apart(id, *person))
            .map(|(_, v)| v)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// Every identity the blocking keys find for these demographics, with its comparison and
    /// score, without deciding or remembering anything (for measuring where matching loses).
    pub fn explain(&mut self, authority: &str, features: &Features) -> Vec<Candidate> {
        let row = self.row(authority, features);
        let mut found = Vec::new();
        for k in self.keys(&row, features) {
            self.index.read(k, &mut found);
        }
        found.sort_unstable();
        found.dedup();
        let this = Entry {
            row: &row,
            names: &self.names,
        };
        found
            .into_iter()
            .map(|other| {
                let c = compare(
                    &this,
                    &Entry {
                        row: &self.rows[other as usize],
                        names: &self.names,
                    },
                );
                Candidate {
                    identity: self.identity(other),
                    score: self.model.score(&c) + self.frequency_adjustment(&row, &c),
                    comparison: c,
                }
            })
            .collect()
    }

    /// Agreeing on a rare name says more than agreeing on a common one (Splink's term-frequency
    /// adjustment): for an exact given or family name, log₂ of how much rarer this name is than
    /// the average agreement, `Σ f²`, bounded to ±`MAX_FREQUENCY_BITS`.
    fn frequency_adjustment(&self, row: &Row, c: &Comparison) -> f64 {
        let n = self.rows.len().max(1) as f64;
        let adjust = |counts: &FxHashMap<Spur, u32>, squares: u64, name: Option<Spur>| {
            let Some(count) = name.and_then(|s| counts.get(&s)) else {
                return 0.0;
            };
            let frequency = f64::from(*count) / n;
            let average = squares as f64 / (n * n);
            if frequency <= 0.0 || average <= 0.0 {
                return 0.0;
            }
            (average / frequency)
                .log2()
                .clamp(-MAX_FREQUENCY_BITS, MAX_FREQUENCY_BITS)
        };
        let mut bits = 0.0;
        if c.0[crate::compare::GIVEN] == Some(0) {
            bits += adjust(&self.given_counts, self.given_squares, row.given);
        }
        if c.0[crate::compare::FAMILY] == Some(0) {
            bits += adjust(&self.family_counts, self.family_squares, row.family);
        }
        bits
    }

    fn decide(&self, id: u32, ranked: Vec<(u32, f64, Comparison)>) -> Decision {
        let t = self.thresholds;
        let candidate = |(other, score, comparison): &(u32, f64, Comparison)| Candidate {
            identity: self.identity(*other),
            score: *score,
            comparison: *comparison,
        };
        let Some(best) = ranked.first() else {
            return Decision::NewPerson;
        };
        // Another person scoring almost as high: two people so alike are for a steward.
        let contested = ranked
            .get(1)
            .is_some_and(|second| second.1 >= t.link && best.1 - second.1 < CONTESTED_MARGIN);
        // A source knows a person once: two of its identities are two people unless it says
        // otherwise (ADT^A40), so the matcher does not link them on its own.
        let authority = self.rows[id as usize].authority;
        let same_source = self
            .members_of(self.person_of(best.0))
            .iter()
            .any(|m| self.rows[*m as usize].authority == authority);
        // Two different Social Security numbers (more than a typo apart) are two people as far
        // as the matcher goes: a steward may decide otherwise.
        let ssn_conflict = best.2 .0[crate::compare::SSN] == Some(2);
        if best.1 >= t.link && !contested && !same_source && !ssn_conflict {
            return Decision::Link(candidate(best));
        }
        let review: Vec<Candidate> = ranked
            .iter()
            .take_while(|c| c.1 >= t.review)
            .take(3)
            .map(candidate)
            .collect();
        if review.is_empty() {
            Decision::NewPerson
        } else {
            Decision::Review(review)
        }
    }

    /// Joins `b`'s person to `a`'s.
    fn join(&mut self, a: u32, b: u32) {
        let (pa, pb) = (self.person_of(a), self.person_of(b));
        if pa == pb {
            return;
        }
        let moved: Vec<u32> = self.members.remove(&pb).unwrap_or_else(|| vec![pb]);
        for m in &moved {
            self.person[*m as usize] = pa;
        }
        self.members
            .entry(pa)
            .or_insert_with(|| vec![pa])
            .extend(moved);
    }

    /// A link decided elsewhere (a steward, or replaying the matcher's own).
    pub fn link(&mut self, a: (&str, &str), b: (&str, &str)) {
        if let (Some(a), Some(b)) = (self.number(a.0, a.1), self.number(b.0, b.1)) {
            self.apart.remove(&pair(a, b));
            self.join(a, b);
        }
    }

    /// A steward's "not the same person": never linked by the matcher again.
    pub fn keep_apart(&mut self, a: (&str, &str), b: (&str, &str)) {
        if let (Some(a), Some(b)) = (self.number(a.0, a.1), self.number(b.0, b.1)) {
            self.apart.insert(pair(a, b));
        }
    }

    /// Takes an identity out of its person; it is kept apart from the others from then on.
    pub fn unlink(&mut self, identity: (&str, &str)) {
        let Some(id) = self.number(identity.0, identity.1) else {
            return;
        };
        let p = self.person_of(id);
        let Some(mut members) = self.members.remove(&p) else {
            return;
        };
        members.retain(|m| *m != id);
        for m in &members {
            self.apart.insert(pair(id, *m));
        }
        self.person[id as usize] = id;
        let root = members[0];
        for m in &members {
            self.person[*m as usize] = root;
        }
        if members.len() > 1 {
            self.members.insert(root, members);
        }
    }

    /// The identities that are one person with this one, itself included.
    pub fn person(&self, authority: &str, mrn: &str) -> Vec<(String, String)> {
        match self.number(authority, mrn) {
            Some(id) => self
                .members_of(self.person_of(id))
                .iter()
                .map(|m| self.identity(*m))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Each identity's person, as a number per identity in the order first seen (for measuring
    /// quality against a truth).
    pub fn people(&self) -> Vec<u32> {
        self.person.clone()
    }

    pub fn number_of(&self, authority: &str, mrn: &str) -> Option<u32> {
        self.number(authority, mrn)
    }

    /// Estimates the model from what the matcher holds: u from `random_pairs` random pairs, m
    /// and λ by EM over the candidate pairs of up to `sample` identities.
    pub fn estimate(&mut self, sample: usize, random_pairs: usize, seed: u64) -> Model {
        let n = self.rows.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut random: HashMap<u32, u64> = HashMap::new();
        if n >= 2 {
            for _ in 0..random_pairs {
                let a = rng.random_range(0..n);
                let b = rng.random_range(0..n);
                if a == b {
                    continue;
                }
                let c = compare(
                    &Entry {
                        row: &self.rows[a],
                        names: &self.names,
                    },
                    &Entry {
                        row: &self.rows[b],
                        names: &self.names,
                    },
                );
                *random.entry(c.code()).or_default() += 1;
            }
        }
        let mut candidates: HashMap<u32, u64> = HashMap::new();
        let mut seen: FxHashSet<(u32, u32)> = FxHashSet::default();
        let mut pairs = 0u64;
        let step = (n / sample.max(1)).max(1);
        let mut found = Vec::new();
        for id in (0..n).step_by(step) {
            found.clear();
            let row = self.rows[id];
            let features = self.features(id as u32);
            for k in self.keys(&row, &features) {
                self.index.read(k, &mut found);
            }
            for &other in &found {
                if other as usize == id || !seen.insert(pair(id as u32, other)) {
                    continue;
                }
                let c = compare(
                    &Entry {
                        row: &row,
                        names: &self.names,
                    },
                    &Entry {
                        row: &self.rows[other as usize],
                        names: &self.names,
                    },
                );
                *candidates.entry(c.code()).or_default() += 1;
                pairs += 1;
            }
        }
        let sampled = n.div_ceil(step).max(1);
        let with_ssn = self.rows.iter().filter(|r| r.ssn != 0).count() as f64 / n.max(1) as f64;
        // Pairs between two sampled identities are counted once: every pair when all are.
        let per_pair = if step == 1 { 2.0 } else { 1.0 };
        Model::estimate_in_sessions(
            &random,
            &candidates,
            crate::model::Population {
                identities: n,
                sampled: sampled as f64 / per_pair,
                with_ssn,
            },
            format!(
                "{n} identities, {pairs} candidate pairs, {} random pairs",
                random.values().sum::<u64>()
            ),
        )
    }

    /// An identity's features back from its row (for blocking keys).
    fn features(&self, id: u32) -> Features {
        let e = Entry {
            row: &self.rows[id as usize],
            names: &self.names,
        };
        Features {
            given: e.given().map(str::to_string),
            family: e.family().map(str::to_string),
            former_family: e.former_family().map(str::to_string),
            birth_date: e.birth().map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            sex: None,
            street: None,
            postal_code: None,
            phone: None,
            ssn: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(given: &str, family: &str, birth: &str, street: &str, phone: &str) -> Features {
        Features {
            given: normalize::name(given),
            family: normalize::name(family),
            birth_date: Some(birth.into()),
            sex: Some("female".into()),
            street: normalize::street(street),
            postal_code: Some("02139".into()),
            phone: normalize::phone(phone),
            ..Features::default()
        }
    }

    #[test]
    fn one_person_links_across_sources_and_twins_stay_apart() {
        let mut m = Matcher::new(Model::default(), Thresholds::default());
        let margaret = person(
            "Margaret",
            "Okafor",
            "1961-03-09",
            "40 Elm Avenue",
            "617-555-0199",
        );
        assert_eq!(m.observe("urn:a", "1", &margaret), Decision::NewPerson);
        // A nickname, the street abbreviated, day and month swapped, another phone format.
        let peggy = person(
            "PEGGY",
            "Okafor",
            "1961-09-03",
            "40 Elm Ave.",
            "(617) 555 0199",
        );
        match m.observe("urn:b", "9", &peggy) {
            Decision::Link(c) => assert_eq!(c.identity, ("urn:a".into(), "1".into())),
            other => panic!("not linked: {other:?}"),
        }
        assert_eq!(m.person("urn:a", "1").len(), 2);
        // Her twin: same household and birth date, another given name.
        let twin = person(
            "Chiamaka",
            "Okafor",
            "1961-03-09",
            "40 Elm Avenue",
            "617-555-0199",
        );
        assert_eq!(m.observe("urn:b", "10", &twin), Decision::NewPerson);
        // Sent again unchanged: nothing to decide.
        assert_eq!(m.observe("urn:b", "9", &peggy), Decision::Unchanged);
        // A steward's unlink keeps them apart from then on.
        m.unlink(("urn:b", "9"));
        assert_eq!(m.person("urn:a", "1").len(), 1);
        let changed = Features {
            phone: normalize::phone("617-555-0000"),
            ..peggy
        };
        assert!(!matches!(
            m.observe("urn:b", "9", &changed),
            Decision::Link(_)
        ));
    }

    #[test]
    fn a_source_knows_a_person_once() {
        let mut m = Matcher::new(Model::default(), Thresholds::default());
        let a = person(
            "Ada",
            "Lovelace",
            "1915-12-10",
            "1 Byron Road",
            "555-010-0001",
        );
        m.observe("urn:a", "1", &a);
        assert!(matches!(m.observe("urn:a", "2", &a), Decision::Review(_)));
    }
}
