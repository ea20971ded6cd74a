//! User accounts as the query API sees them: every `AccountRecorded` event, replayed at start and
//! followed after. A token is honoured only for an active account whose organization and roles
//! match it, so disabling an account stops its tokens at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use platform::auth::{Role, User};
use schemas::AccountRecorded;

#[derive(Clone, Default)]
pub struct Accounts {
    by_id: Arc<RwLock<HashMap<String, AccountRecorded>>>,
    caught_up: Arc<AtomicBool>,
    /// A user id honoured as an administrator without an account, to create the first ones.
    bootstrap_admin: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("no active account matches this token")]
    NotHonoured,
    #[error("the account registry is still loading")]
    Loading,
}

impl Accounts {
    pub fn new(bootstrap_admin: Option<String>) -> Self {
        Accounts {
            bootstrap_admin,
            ..Default::default()
        }
    }

    pub fn caught_up_flag(&self) -> Arc<AtomicBool> {
        self.caught_up.clone()
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Apply an event in log order. An email already held by another account (compared
    /// case-insensitively) is refused here too, so every reader of the log agrees on the winner.
    pub fn apply(&self, event: AccountRecorded) {
        let mut map = self.by_id.write().expect("accounts lock");
        if holder(&map, &event.email).is_some_and(|id| id != event.user_id) {
            tracing::warn!(user = %event.user_id, "account event refused: email already in use");
            return;
        }
        map.insert(event.user_id.clone(), event);
    }

    /// The user id holding `email`, if any.
    pub fn email_holder(&self, email: &str) -> Option<String> {
        holder(&self.by_id.read().expect("accounts lock"), email)
    }

    pub fn get(&self, user_id: &str) -> Option<AccountRecorded> {
        self.by_id
            .read()
            .expect("accounts lock")
            .get(user_id)
            .cloned()
    }

    pub fn list(&self, organization: Option<&str>) -> Vec<AccountRecorded> {
        let map = self.by_id.read().expect("accounts lock");
        let mut out: Vec<_> = map
            .values()
            .filter(|a| organization.is_none_or(|o| a.organization_id == o))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        out
    }

    /// Whether a verified token is honoured.
    pub fn admit(&self, user: &User) -> Result<(), AccountError> {
        if self.bootstrap_admin.as_deref() == Some(user.id.as_str()) && user.roles == [Role::Admin]
        {
            return Ok(());
        }
        if !self.is_caught_up() {
            return Err(AccountError::Loading);
        }
        let account = self.get(&user.id).ok_or(AccountError::NotHonoured)?;
        let roles_held = user
            .roles
            .iter()
            .all(|r| account.roles.iter().any(|a| a == r.as_str()));
        if account.active && account.organization_id == user.org && roles_held {
            Ok(())
        } else {
            Err(AccountError::NotHonoured)
        }
    }
}

fn holder(map: &HashMap<String, AccountRecorded>, email: &str) -> Option<String> {
    map.values()
        .find(|a| a.email.eq_ignore_ascii_case(email))
        .map(|a| a.user_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, email: &str, org: &str, roles: &[&str], active: bool) -> AccountRecorded {
        AccountRecorded {
            event_id: "e".into(),
            at: 0,
            user_id: id.into(),
            email: email.into(),
            organization_id: org.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            active,
            recorded_by: "admin".into(),
        }
    }

    fn user(id: &str, org: &str, roles: &[Role]) -> User {
        User {
            id: id.into(),
            email: "x".into(),
            org: org.into(),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn tokens_are_honoured_only_for_matching_active_accounts() {
        let a = Accounts::new(Some("boot".into()));
        a.caught_up.store(true, Ordering::Release);
        a.apply(account(
            "u1",
            "Dr.Who@Example.org",
            "org-1",
            &["physician", "nurse"],
            true,
        ));
        assert_eq!(a.admit(&user("u1", "org-1", &[Role::Physician])), Ok(()));
        assert_eq!(
            a.admit(&user("u1", "org-2", &[Role::Physician])),
            Err(AccountError::NotHonoured)
        );
        assert_eq!(
            a.admit(&user("u1", "org-1", &[Role::Admin])),
            Err(AccountError::NotHonoured)
        );
        assert_eq!(
            a.admit(&user("u2", "org-1", &[Role::Physician])),
            Err(AccountError::NotHonoured)
        );
        assert_eq!(a.admit(&user("boot", "any", &[Role::Admin])), Ok(()));
        assert_eq!(
            a.admit(&user("boot", "any", &[Role::Physician])),
            Err(AccountError::NotHonoured)
        );
        a.apply(account(
            "u1",
            "dr.who@example.org",
            "org-1",
            &["physician"],
            false,
        ));
        assert_eq!(
            a.admit(&user("u1", "org-1", &[Role::Physician])),
            Err(AccountError::NotHonoured)
        );
    }

    #[test]
    fn an_email_belongs_to_one_account_whatever_its_case() {
        let a = Accounts::default();
        a.apply(account("u1", "same@example.org", "o", &["nurse"], true));
        a.apply(account("u2", "SAME@example.org", "o", &["nurse"], true));
        assert!(a.get("u2").is_none());
        assert_eq!(a.email_holder("Same@Example.org").as_deref(), Some("u1"));
    }
}
