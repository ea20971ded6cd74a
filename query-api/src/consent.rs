//! Which consent decision applies to an organization's users, from the recorded rows. Pure, so
//! every rule is unit-tested here.

use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Grant,
    Deny,
    DenyExceptEmergency,
    /// A consent event for the patient was set aside by the projector (it could not be applied):
    /// what the patient decided is unknown, so nothing is shown until it is resolved.
    Unresolved,
}

impl Decision {
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "grant" => Some(Decision::Grant),
            "deny" => Some(Decision::Deny),
            "deny_except_emergency" => Some(Decision::DenyExceptEmergency),
            _ => None, // "revoke": back to no decision
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Grant => "grant",
            Decision::Deny => "deny",
            Decision::DenyExceptEmergency => "deny_except_emergency",
            Decision::Unresolved => "unresolved",
        }
    }
}

/// One row of the consents view.
#[derive(Debug, Clone)]
pub struct ConsentRow {
    /// The enterprise patient the decision was recorded for: the patient itself, or a patient
    /// merged into it (ADT^A40). Every linked patient has at least one row; one with an empty
    /// organization stands for "no decision recorded".
    pub member: uuid::Uuid,
    pub organization_id: String,
    pub decision: String,
    pub effective_at: Option<SystemTime>,
    pub expires_at: Option<SystemTime>,
    pub part2: bool,
    /// A consent event for this member is in the projector's quarantine (fail closed).
    pub withheld: bool,
    /// The decision's place in its patient's log (one patient's consents share a partition):
    /// later decisions have larger numbers.
    pub seq: i64,
    /// When the decision was recorded (`None` for the "no decision" marker row).
    pub recorded_at: Option<SystemTime>,
    /// When `member` joined the enterprise patient (a link or a merge); `None` for its root.
    pub linked_at: Option<SystemTime>,
}

/// The decision in force for `org`, or `None` (no decision recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    pub decision: Decision,
    pub covers_part2: bool,
}

impl ConsentRow {
    fn effective(&self, now: SystemTime) -> bool {
        self.effective_at.is_none_or(|t| t <= now)
    }

    fn in_force(&self, now: SystemTime) -> Option<InForce> {
        let decision = Decision::parse(&self.decision)?;
        if !self.effective(now) || self.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        Some(InForce {
            decision,
            covers_part2: self.part2,
        })
    }
}

/// The decision that governs `member`'s data for `org` (or `*`) at `now`: of the decisions
/// already effective, the latest recorded. So a decision effective next week leaves today's in
/// force until then, and one recorded later (a revocation) replaces it once effective.
pub fn governing<'a>(
    rows: &'a [ConsentRow],
    member: uuid::Uuid,
    org: &str,
    now: SystemTime,
) -> Option<&'a ConsentRow> {
    rows.iter()
        .filter(|r| r.member == member && r.organization_id == org && r.effective(now))
        .max_by_key(|r| r.seq)
}

/// An organization-specific decision beats an all-participants (`*`) one; a specific row that
/// is revoked, expired or not yet effective leaves the `*` decision to apply. Consent follows the
/// person: an enterprise patient's rows come from each linked identity (API.md, "Patient
/// identity"). A decision recorded after the identities were linked is the person's; where
/// decisions from before conflict, the stricter wins (deny, then deny except in an emergency,
/// then no decision, then grant; Part 2 only when every grant covers it), so a link or a merge
/// never makes data more visible than either identity's own consent did.
pub fn decision_for(rows: &[ConsentRow], org: &str, now: SystemTime) -> Option<InForce> {
    if rows.iter().any(|r| r.withheld) {
        return Some(InForce {
            decision: Decision::Unresolved,
            covers_part2: false,
        });
    }
    let mut members: Vec<uuid::Uuid> = rows.iter().map(|r| r.member).collect();
    members.sort();
    members.dedup();
    // Each identity's own decision in force, with the row it comes from.
    let each: Vec<(Option<&ConsentRow>, Option<InForce>)> = members
        .iter()
        .map(|m| {
            let pick =
                |o: &str| governing(rows, *m, o, now).and_then(|r| r.in_force(now).map(|f| (r, f)));
            match pick(org).or_else(|| pick("*")) {
                Some((r, f)) => (Some(r), Some(f)),
                None => (None, None),
            }
        })
        .collect();
    let linked = rows.iter().filter_map(|r| r.linked_at).max();
    let newest = each
        .iter()
        .filter_map(|(r, f)| Some(((*r)?.recorded_at?, *f)))
        .max_by_key(|(at, _)| *at);
    if let (Some(linked), Some((at, f))) = (linked, newest) {
        if at > linked {
            return f;
        }
    }
    let mut stricter: Option<Option<InForce>> = None;
    for (_, d) in each {
        stricter = Some(match stricter {
            None => d,
            Some(current) => strictest(current, d),
        });
    }
    stricter.flatten()
}

fn strictest(a: Option<InForce>, b: Option<InForce>) -> Option<InForce> {
    let rank = |d: &Option<InForce>| match d.map(|f| f.decision) {
        Some(Decision::Unresolved) => 4,
        Some(Decision::Deny) => 3,
        Some(Decision::DenyExceptEmergency) => 2,
        None => 1,
        Some(Decision::Grant) => 0,
    };
    match (a, b) {
        (Some(x), Some(y)) if x.decision == Decision::Grant && y.decision == Decision::Grant => {
            Some(InForce {
                decision: Decision::Grant,
                covers_part2: x.covers_part2 && y.covers_part2,
            })
        }
        (a, b) if rank(&a) >= rank(&b) => a,
        (_, b) => b,
    }
}

/// Break-the-Glass is possible without a decision and under `deny_except_emergency`; never
/// under `deny` or when consent already grants access.
pub fn break_glass_possible(in_force: Option<InForce>) -> bool {
    matches!(
        in_force.map(|f| f.decision),
        None | Some(Decision::DenyExceptEmergency)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(org: &str, decision: &str) -> ConsentRow {
        ConsentRow {
            member: uuid::Uuid::nil(),
            organization_id: org.into(),
            decision: decision.into(),
            effective_at: None,
            expires_at: None,
            part2: false,
            withheld: false,
            seq: 0,
            recorded_at: None,
            linked_at: None,
        }
    }

    #[test]
    fn history_a_future_decision_leaves_todays_in_force_until_it_starts() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let grant = ConsentRow {
            seq: 1,
            ..row("org-a", "grant")
        };
        let deny_next_week = ConsentRow {
            seq: 2,
            effective_at: Some(now + 7 * day),
            ..row("org-a", "deny")
        };
        let rows = vec![grant.clone(), deny_next_week.clone()];
        let at = |t| decision_for(&rows, "org-a", t).map(|f| f.decision);
        assert_eq!(at(now), Some(Decision::Grant));
        assert_eq!(at(now + 8 * day), Some(Decision::Deny));
        // A revocation recorded later ends the grant at once; the future deny still comes.
        let revoke = ConsentRow {
            seq: 3,
            ..row("org-a", "revoke")
        };
        let rows = vec![grant, deny_next_week, revoke];
        assert_eq!(decision_for(&rows, "org-a", now), None);
        // The order is the log's, not the rows' order in the answer.
        let mut reversed = rows.clone();
        reversed.reverse();
        assert_eq!(decision_for(&reversed, "org-a", now), None);
    }

    #[test]
    fn an_unresolved_consent_withholds_whatever_else_was_decided() {
        let now = SystemTime::now();
        let mut rows = vec![row("org-a", "grant")];
        rows[0].withheld = true;
        let f = decision_for(&rows, "org-a", now).unwrap();
        assert_eq!(f.decision, Decision::Unresolved);
        assert!(!break_glass_possible(Some(f)));
    }

    #[test]
    fn specific_beats_all_participants() {
        let now = SystemTime::now();
        let rows = vec![row("*", "grant"), row("org-a", "deny")];
        assert_eq!(
            decision_for(&rows, "org-a", now).unwrap().decision,
            Decision::Deny
        );
        assert_eq!(
            decision_for(&rows, "org-b", now).unwrap().decision,
            Decision::Grant
        );
    }

    #[test]
    fn revoked_expired_and_future_fall_back() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let mut expired = row("org-a", "grant");
        expired.expires_at = Some(now - hour);
        let mut future = row("org-b", "grant");
        future.effective_at = Some(now + hour);
        let rows = vec![
            expired,
            future,
            row("org-c", "revoke"),
            row("*", "deny_except_emergency"),
        ];
        for org in ["org-a", "org-b", "org-c"] {
            assert_eq!(
                decision_for(&rows, org, now).unwrap().decision,
                Decision::DenyExceptEmergency,
                "{org}"
            );
        }
        assert_eq!(decision_for(&[row("org-c", "revoke")], "org-c", now), None);
    }

    fn of(member: u128, org: &str, decision: &str, part2: bool) -> ConsentRow {
        ConsentRow {
            member: uuid::Uuid::from_u128(member),
            part2,
            ..row(org, decision)
        }
    }

    #[test]
    fn a_merged_patient_gets_the_stricter_of_the_linked_decisions() {
        let now = SystemTime::now();
        let decide = |rows: &[ConsentRow]| decision_for(rows, "org-a", now);
        // Survivor grants, prior denies: deny.
        let rows = [of(1, "org-a", "grant", true), of(2, "*", "deny", false)];
        assert_eq!(decide(&rows).unwrap().decision, Decision::Deny);
        // Survivor grants, prior never decided (its marker row): no decision, BTG possible.
        let rows = [of(1, "*", "grant", true), of(2, "", "", false)];
        assert_eq!(decide(&rows), None);
        // Prior denies except in an emergency, survivor undecided: deny except in an emergency.
        let rows = [
            of(1, "", "", false),
            of(2, "org-a", "deny_except_emergency", false),
        ];
        assert_eq!(
            decide(&rows).unwrap().decision,
            Decision::DenyExceptEmergency
        );
        // Both grant: Part 2 only if both grants cover it.
        let rows = [of(1, "org-a", "grant", true), of(2, "*", "grant", false)];
        assert_eq!(
            decide(&rows),
            Some(InForce {
                decision: Decision::Grant,
                covers_part2: false
            })
        );
        let rows = [of(1, "org-a", "grant", true), of(2, "*", "grant", true)];
        assert!(decide(&rows).unwrap().covers_part2);
        // One patient alone: as before.
        assert_eq!(decide(&[of(1, "", "", false)]), None);
        assert_eq!(decide(&[]), None);
    }

    #[test]
    fn a_decision_recorded_after_the_link_is_the_persons() {
        let now = SystemTime::now();
        let t = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let decide = |rows: &[ConsentRow]| decision_for(rows, "org-a", now);
        let linked = ConsentRow {
            linked_at: t(100),
            ..of(2, "", "", false)
        };
        // Before the link identity 1 granted, identity 2 never decided: the stricter (none).
        let early_grant = ConsentRow {
            recorded_at: t(50),
            ..of(1, "org-a", "grant", false)
        };
        assert_eq!(decide(&[early_grant.clone(), linked.clone()]), None);
        // A grant recorded under either identity after the link is the person's.
        let later_grant = ConsentRow {
            recorded_at: t(150),
            seq: 1,
            ..of(2, "org-a", "grant", false)
        };
        assert_eq!(
            decide(&[early_grant.clone(), linked.clone(), later_grant.clone()])
                .unwrap()
                .decision,
            Decision::Grant
        );
        // And a deny recorded later still under identity 1 beats that grant.
        let later_deny = ConsentRow {
            recorded_at: t(200),
            seq: 2,
            ..of(1, "org-a", "deny", false)
        };
        assert_eq!(
            decide(&[early_grant, linked, later_grant, later_deny])
                .unwrap()
                .decision,
            Decision::Deny
        );
    }

    #[test]
    fn break_glass_never_under_deny() {
        let f = |d| {
            Some(InForce {
                decision: d,
                covers_part2: false,
            })
        };
        assert!(break_glass_possible(None));
        assert!(break_glass_possible(f(Decision::DenyExceptEmergency)));
        assert!(!break_glass_possible(f(Decision::Deny)));
        assert!(!break_glass_possible(f(Decision::Grant)));
    }
}
