//! Which consent decision applies to an organization's users, from the recorded rows. Pure, so
//! every rule is unit-tested here.

use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Grant,
    Deny,
    DenyExceptEmergency,
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
        }
    }
}

/// One row of the consents view.
#[derive(Debug, Clone)]
pub struct ConsentRow {
    pub organization_id: String,
    pub decision: String,
    pub effective_at: Option<SystemTime>,
    pub expires_at: Option<SystemTime>,
    pub part2: bool,
}

/// The decision in force for `org`, or `None` (no decision recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    pub decision: Decision,
    pub covers_part2: bool,
}

impl ConsentRow {
    fn in_force(&self, now: SystemTime) -> Option<InForce> {
        let decision = Decision::parse(&self.decision)?;
        if self.effective_at.is_some_and(|t| t > now) || self.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        Some(InForce {
            decision,
            covers_part2: self.part2,
        })
    }
}

/// An organization-specific decision beats an all-participants (`*`) one; a specific row that
/// is revoked, expired or not yet effective leaves the `*` decision to apply.
pub fn decision_for(rows: &[ConsentRow], org: &str, now: SystemTime) -> Option<InForce> {
    let pick = |o: &str| {
        rows.iter()
            .find(|r| r.organization_id == o)
            .and_then(|r| r.in_force(now))
    };
    pick(org).or_else(|| pick("*"))
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
            organization_id: org.into(),
            decision: decision.into(),
            effective_at: None,
            expires_at: None,
            part2: false,
        }
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
