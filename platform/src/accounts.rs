//! User accounts as a service sees them: every `AccountRecorded` event, replayed at start and
//! followed after (`follow`). A token is honoured only for an active account whose organization,
//! roles and email match it, so disabling an account stops its tokens at once. Who manages whom
//! (`manages`): an admin their own organization, the HIE operator's admins every organization.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use schemas::{topics, AccountRecorded};

use crate::auth::{Role, User};

#[derive(Clone, Default)]
pub struct Accounts {
    by_id: Arc<RwLock<Registry>>,
    /// The HIE operator's organization (`HIE_OPERATOR_ORG`): its admins manage every organization.
    operator_org: String,
    caught_up: Arc<AtomicBool>,
    /// The next offset of the (single-partition) accounts topic this registry has not applied.
    applied_up_to: Arc<AtomicI64>,
    /// A client kept for reading the topic's end offset, made by `follow`.
    watermarks: Arc<std::sync::OnceLock<BaseConsumer>>,
    /// The topic's end offset, asked of the broker once for a crowd of concurrent requests.
    end_query: Arc<Coalesced<Option<i64>>>,
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
    /// `bootstrap_admin`: `HIE_BOOTSTRAP_ADMIN`; `operator_org`: `HIE_OPERATOR_ORG`.
    pub fn new(bootstrap_admin: Option<String>, operator_org: String) -> Self {
        Accounts {
            bootstrap_admin,
            operator_org,
            ..Default::default()
        }
    }

    /// Replay and follow `hie.accounts` into this registry; runs until the process stops. A
    /// replay (at start, or after the follower reconnects) is built aside and swapped in whole.
    pub async fn follow(self, brokers: String) {
        match crate::kafka::client_config(&brokers).create::<BaseConsumer>() {
            Ok(client) => {
                let _ = self.watermarks.set(client);
            }
            Err(e) => tracing::warn!(error = %e, "no client for the accounts topic's end offset"),
        }
        crate::kafka::follow(brokers, &topics::ACCOUNTS, self).await
    }

    /// `admit`, once this registry has applied everything the topic held at the time of asking
    /// (waiting at most `patience`): an account created or disabled a moment ago through another
    /// service or instance counts at once. A registry that does not get there in time refuses
    /// (`Loading`) rather than answer from what may be an account's state before it was
    /// disabled. If the broker cannot say where the topic ends, what the registry holds decides.
    pub async fn admit_current(&self, user: &User, patience: Duration) -> Result<(), AccountError> {
        if self.is_bootstrap(user) || !self.is_caught_up() {
            return self.admit(user);
        }
        let end = self.end_of_topic().await;
        let deadline = tokio::time::Instant::now() + patience;
        while end.is_some_and(|end| self.applied_up_to.load(Ordering::Acquire) < end) {
            if tokio::time::Instant::now() >= deadline {
                return Err(AccountError::Loading);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.admit(user)
    }

    /// Whether `user` acts for the HIE operator: an admin of `HIE_OPERATOR_ORG`, or the bootstrap
    /// admin whatever organization its token names. Only they register sources and manage other
    /// organizations.
    pub fn is_operator(&self, user: &User) -> bool {
        self.is_bootstrap(user)
            || (user.has(Role::Admin)
                && !self.operator_org.is_empty()
                && user.org == self.operator_org)
    }

    /// Whether `user` administers `organization`: their own, or any for the operator's admins.
    pub fn manages(&self, user: &User, organization: &str) -> bool {
        user.has(Role::Admin) && (user.org == organization || self.is_operator(user))
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Apply an event in log order (first email wins, see `record`).
    pub fn apply(&self, event: AccountRecorded) {
        self.by_id.write().expect("accounts lock").record(event);
    }

    /// The user id holding `email`, if any.
    pub fn email_holder(&self, email: &str) -> Option<String> {
        self.by_id.read().expect("accounts lock").holder(email)
    }

    pub fn get(&self, user_id: &str) -> Option<AccountRecorded> {
        self.by_id
            .read()
            .expect("accounts lock")
            .by_id
            .get(user_id)
            .cloned()
    }

    pub fn list(&self, organization: Option<&str>) -> Vec<AccountRecorded> {
        let registry = self.by_id.read().expect("accounts lock");
        let mut out: Vec<_> = registry
            .by_id
            .values()
            .filter(|a| organization.is_none_or(|o| a.organization_id == o))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        out
    }

    /// The accounts topic's end offset, from a query that started after this call.
    async fn end_of_topic(&self) -> Option<i64> {
        self.end_query.get(|| self.query_end_of_topic()).await
    }

    /// Each account event is produced alone, so even a broker that reports a partition's end as
    /// its last batch's first offset + 1 (Tansu 0.6) reports it exactly.
    async fn query_end_of_topic(&self) -> Option<i64> {
        let watermarks = self.watermarks.clone();
        tokio::task::spawn_blocking(move || {
            let (_, high) = watermarks
                .get()?
                .fetch_watermarks(topics::ACCOUNTS.name, 0, Duration::from_secs(2))
                .ok()?;
            Some(high)
        })
        .await
        .ok()
        .flatten()
    }

    fn is_bootstrap(&self, user: &User) -> bool {
        self.bootstrap_admin.as_deref() == Some(user.id.as_str()) && user.roles == [Role::Admin]
    }

    /// Whether a verified token is honoured.
    pub fn admit(&self, user: &User) -> Result<(), AccountError> {
        if self.is_bootstrap(user) {
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
        // The email too: a token minted for an address the account no longer has is not its own.
        if account.active
            && account.organization_id == user.org
            && roles_held
            && account.email.eq_ignore_ascii_case(user.email.trim())
        {
            Ok(())
        } else {
            Err(AccountError::NotHonoured)
        }
    }
}

/// The registry's state as replayed from the log: built aside on a replay, then swapped in.
#[derive(Default)]
pub struct Replayed {
    registry: Registry,
    /// The next offset not applied.
    next_offset: i64,
}

impl crate::kafka::Replica for Accounts {
    type Event = AccountRecorded;
    type State = Replayed;

    fn apply_to(state: &mut Replayed, event: AccountRecorded, offset: i64) {
        state.registry.record(event);
        state.next_offset = state.next_offset.max(offset + 1);
    }

    fn install(&self, state: Replayed) {
        *self.by_id.write().expect("accounts lock") = state.registry;
        self.applied_up_to
            .store(state.next_offset, Ordering::Release);
        self.caught_up.store(true, Ordering::Release);
    }

    fn apply(&self, event: AccountRecorded, offset: i64) {
        Accounts::apply(self, event);
        self.applied_up_to.fetch_max(offset + 1, Ordering::AcqRel);
    }
}

/// Accounts by id, and who holds each email (ASCII case folded): a replay of n events costs
/// O(n), not a scan of every account per event.
#[derive(Default)]
struct Registry {
    by_id: HashMap<String, AccountRecorded>,
    by_email: HashMap<String, String>,
}

impl Registry {
    /// Apply an event in log order. An email already held by another account (compared
    /// case-insensitively) is refused here too, so every reader of the log agrees on the winner.
    fn record(&mut self, event: AccountRecorded) {
        let email = event.email.to_ascii_lowercase();
        if self
            .by_email
            .get(&email)
            .is_some_and(|id| *id != event.user_id)
        {
            tracing::warn!(user = %event.user_id, "account event refused: email already in use");
            return;
        }
        if let Some(previous) = self.by_id.get(&event.user_id) {
            // The address it leaves is free for others.
            self.by_email.remove(&previous.email.to_ascii_lowercase());
        }
        self.by_email.insert(email, event.user_id.clone());
        self.by_id.insert(event.user_id.clone(), event);
    }

    fn holder(&self, email: &str) -> Option<String> {
        self.by_email.get(&email.to_ascii_lowercase()).cloned()
    }
}

/// A query answered fresh for every caller, run once for a crowd: callers queue (fairly) for one
/// run at a time, and a caller shares the answer of a run that started after it arrived instead
/// of starting another. 32 concurrent callers cost about two runs, and no caller ever gets an
/// answer older than its own arrival.
#[derive(Default)]
struct Coalesced<T> {
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Coalesced<T> {
    async fn get<F: std::future::Future<Output = T>>(&self, run: impl FnOnce() -> F) -> T {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, answer)) = &*last {
            if *started > arrived {
                return answer.clone();
            }
        }
        let started = Instant::now();
        let answer = run().await;
        *last = Some((started, answer.clone()));
        answer
    }
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
            email: "dr.who@example.org".into(),
            org: org.into(),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn a_token_is_honoured_only_with_the_accounts_email() {
        let a = Accounts::new(None, "hie".into());
        a.caught_up.store(true, Ordering::Release);
        a.apply(account(
            "u1",
            "Dr.Who@Example.org",
            "org-1",
            &["nurse"],
            true,
        ));
        let mut u = user("u1", "org-1", &[Role::Nurse]);
        assert_eq!(a.admit(&u), Ok(()));
        u.email = "someone.else@example.org".into();
        assert_eq!(a.admit(&u), Err(AccountError::NotHonoured));
    }

    #[test]
    fn an_admin_manages_their_own_organization_and_the_operators_every_one() {
        let a = Accounts::new(Some("boot".into()), "hie".into());
        let org_admin = user("a1", "org-1", &[Role::Admin]);
        assert!(a.manages(&org_admin, "org-1"));
        assert!(!a.manages(&org_admin, "org-2"));
        assert!(!a.manages(&org_admin, "hie"));
        assert!(!a.is_operator(&org_admin));
        let nurse = user("n1", "org-1", &[Role::Nurse]);
        assert!(!a.manages(&nurse, "org-1"));
        let hie_admin = user("h1", "hie", &[Role::Admin]);
        assert!(a.is_operator(&hie_admin) && a.manages(&hie_admin, "org-2"));
        let hie_nurse = user("h2", "hie", &[Role::Nurse]);
        assert!(!a.is_operator(&hie_nurse) && !a.manages(&hie_nurse, "org-2"));
        // The bootstrap admin acts for the operator whatever organization its token names.
        let boot = user("boot", "org-9", &[Role::Admin]);
        assert!(a.is_operator(&boot) && a.manages(&boot, "org-2"));
        // No operator organization configured: no organization's admins manage others.
        let none = Accounts::new(None, String::new());
        assert!(!none.is_operator(&user("x", "", &[Role::Admin])));
    }

    #[test]
    fn a_replay_is_built_aside_so_a_disabled_account_never_comes_back() {
        use crate::kafka::Replica;
        let a = Accounts::new(None, "hie".into());
        let log = [
            account("u1", "dr.who@example.org", "org-1", &["nurse"], true),
            account("u1", "dr.who@example.org", "org-1", &["nurse"], false),
        ];
        let mut first = Replayed::default();
        for (offset, e) in log.iter().enumerate() {
            Accounts::apply_to(&mut first, e.clone(), offset as i64);
        }
        a.install(first);
        let u1 = user("u1", "org-1", &[Role::Nurse]);
        assert_eq!(a.admit(&u1), Err(AccountError::NotHonoured));
        // The follower reconnects and replays: half-way, the served registry is unchanged.
        let mut again = Replayed::default();
        Accounts::apply_to(&mut again, log[0].clone(), 0);
        assert_eq!(a.admit(&u1), Err(AccountError::NotHonoured));
        Accounts::apply_to(&mut again, log[1].clone(), 1);
        a.install(again);
        assert_eq!(a.admit(&u1), Err(AccountError::NotHonoured));
        assert_eq!(a.applied_up_to.load(Ordering::Acquire), 2);
    }

    #[test]
    fn tokens_are_honoured_only_for_matching_active_accounts() {
        let a = Accounts::new(Some("boot".into()), "hie".into());
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
        // An address an account leaves is free; the one it takes is no longer.
        a.apply(account("u1", "new@example.org", "o", &["nurse"], true));
        assert_eq!(a.email_holder("same@example.org"), None);
        a.apply(account("u2", "Same@example.org", "o", &["nurse"], true));
        assert_eq!(a.email_holder("SAME@EXAMPLE.ORG").as_deref(), Some("u2"));
        a.apply(account("u2", "New@Example.org", "o", &["nurse"], true));
        assert_eq!(a.get("u2").unwrap().email, "Same@example.org");
        assert_eq!(a.email_holder("new@example.org").as_deref(), Some("u1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crowd_shares_a_run_that_started_after_it_arrived() {
        let runs = Arc::new(AtomicI64::new(0));
        let shared = Arc::new(Coalesced::<i64>::default());
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let (runs, shared) = (runs.clone(), shared.clone());
                tokio::spawn(async move {
                    shared
                        .get(|| async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            runs.fetch_add(1, Ordering::SeqCst) + 1
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&runs),
            "32 concurrent callers made {runs} runs"
        );
    }

    #[tokio::test]
    async fn a_caller_never_gets_an_answer_from_before_it_arrived() {
        let shared = Coalesced::<u32>::default();
        let mut answers = Vec::new();
        for i in 0..5 {
            answers.push(shared.get(|| async move { i }).await);
        }
        assert_eq!(answers, vec![0, 1, 2, 3, 4]);
    }
}
