//! Admission: whether a request may go on, before anything is made or sent. It
//! asks the pumping defence about the number, then the [`Limiter`] about every
//! layered limit at once, and keeps the counts those decisions need afterwards
//! (sends, successful checks, wrong codes).
//!
//! The rules (limits, clients, pumping thresholds) are swapped whole on a reload
//! without a lock: a request reads them with one atomic load.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, PumpingMode};
use crate::domain::clock::UnixMillis;
use crate::numbers::e164::E164;
use crate::numbers::reader::Region;
use crate::policy::clients::Clients;
use crate::policy::limiter::{Denial, Limiter, MemoryLimiter, Refusal, Unavailable};
use crate::policy::limits::{Checks, IssueFacts, IssueKeys, LimitPolicy, Pool, ip_key, name};
use crate::policy::pumping::{Judgement, PumpingTracker, Scope, ScopeView};

/// Everything a reload can change.
pub struct Rules {
    pub policy: LimitPolicy,
    pub clients: Clients,
}

impl Rules {
    pub fn new(config: &Config) -> Rules {
        let clients = Clients::new(&config.clients);
        Rules {
            policy: LimitPolicy::new(&config.limits, &clients),
            clients,
        }
    }
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// A limit (or the pumping throttle): come back later.
    Limited(Refusal),
    /// The number is on the deny list (by this entry).
    Denied { entry: String },
    /// The limits cannot be read (their shared store is down): nothing is admitted.
    Unavailable(Unavailable),
}

impl From<Denial> for Refused {
    fn from(d: Denial) -> Self {
        match d {
            Denial::Refused(r) => Refused::Limited(r),
            Denial::Unavailable(u) => Refused::Unavailable(u),
        }
    }
}

/// The limits a request to send a code is decided by (see
/// [`Admission::plan_issue`]): what gates it without being charged, what it is
/// charged, and the shared pool to fall back on when the client's reserved share
/// refuses.
pub struct IssuePlan {
    throttled: bool,
    pool: Pool,
    fallback: bool,
    keys: IssueKeys,
    scope_key: [u8; 9],
    /// The limiter's time for this request.
    pub now: u64,
}

impl IssuePlan {
    /// Limits that gate the request and are charged by something else: the
    /// subject's wrong codes.
    pub fn gate<'a>(&'a self, rules: &'a Rules, f: &IssueFacts<'a>) -> Checks<'a> {
        let mut out = Checks::new();
        if let Some(subject) = f.subject
            && let Some(c) = rules.policy.check_subject(subject)
        {
            out.push(c);
        }
        out
    }

    /// What the request is charged when it draws on `pool`.
    pub fn charge<'a>(&'a self, rules: &'a Rules, f: &IssueFacts<'a>, pool: Pool) -> Checks<'a> {
        charges(
            &rules.policy,
            f,
            &self.keys,
            &self.scope_key,
            pool,
            self.throttled,
        )
    }

    /// The pool tried first.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// Whether a refusal by the reserved share falls back on the shared pool.
    pub fn falls_back(&self) -> bool {
        self.fallback
    }
}

/// Every limit a request drawing on `pool` is charged, the pumping throttle too when
/// its prefix is throttled.
fn charges<'a>(
    p: &'a LimitPolicy,
    f: &IssueFacts<'a>,
    keys: &'a IssueKeys,
    scope_key: &'a [u8; 9],
    pool: Pool,
    throttled: bool,
) -> Checks<'a> {
    let mut checks = p.issue_checks(f, keys, pool);
    if throttled && let Some(c) = p.pumping_check(scope_key) {
        checks.push(c);
    }
    checks
}

/// Nanoseconds for the limiter, on the wall clock otpd's clock gives (a step back is
/// harmless: GCRA never lets a TAT move backwards).
pub fn nanos(now: UnixMillis) -> u64 {
    (now.0.max(0) as u64).saturating_mul(1_000_000)
}

/// A limiter's refusal as admission's, counted by the limit that refused.
fn counted(d: Denial) -> Refused {
    let r = Refused::from(d);
    if let Refused::Limited(r) = &r {
        refused(r.limit);
    }
    r
}

fn refused(limit: &'static str) {
    metrics::counter!("otpd_limit_refusals_total", "limit" => limit).increment(1);
}

fn pumping(decision: &'static str, scope: &'static str) {
    metrics::counter!("otpd_pumping_decisions_total", "decision" => decision, "scope" => scope)
        .increment(1);
}

pub struct Admission {
    limiter: Arc<dyn Limiter>,
    /// This node's own limits: what bounds the work a flood of calls anyone may make
    /// causes here, decided without a round trip to a shared store.
    local: MemoryLimiter,
    rules: ArcSwap<Rules>,
    pumping: PumpingTracker,
}

/// One limit as the admin view explains it.
#[derive(Debug, serde::Serialize)]
pub struct LimitView {
    pub limit: &'static str,
    pub quota: String,
    pub remaining: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Everything that would decide a request, for `GET /v1/admin/limits`.
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    /// What would happen now: `allowed`, or the refusing limit.
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    pub limits: Vec<LimitView>,
    pub pumping: PumpingView,
}

#[derive(Debug, serde::Serialize)]
pub struct PumpingView {
    pub mode: &'static str,
    pub min_sends: u32,
    pub min_conversion: f64,
    pub judgement: Judgement,
    pub scopes: Vec<ScopeView>,
}

impl Admission {
    pub fn new(limiter: Arc<dyn Limiter>, rules: Rules) -> Admission {
        Admission {
            limiter,
            local: MemoryLimiter::new(),
            rules: ArcSwap::from_pointee(rules),
            pumping: PumpingTracker::new(),
        }
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Take new rules; counts and limit states carry over.
    pub fn install(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
    }

    /// The pumping defence's word on a request to send a code, and the limits it is
    /// to be decided by — before anything is charged. A denied number, or a suspect
    /// scope in `block` mode, is refused here.
    pub fn plan_issue(
        &self,
        rules: &Rules,
        f: &IssueFacts<'_>,
        now: UnixMillis,
    ) -> Result<IssuePlan, Refused> {
        let p = &rules.policy;
        let throttled = match self.pumping.judge(&p.pumping, f.to, f.country, now) {
            Judgement::Clear | Judgement::AllowListed { .. } => false,
            Judgement::Denied { entry } => {
                pumping("denied", "list");
                refused("deny_list");
                return Err(Refused::Denied { entry });
            }
            Judgement::Suspect { scope, mode, .. } => match mode {
                PumpingMode::Monitor => {
                    pumping("would_refuse", scope.kind());
                    tracing::info!(%scope, "monitor mode: would have refused a send to a suspect scope");
                    false
                }
                PumpingMode::Block => {
                    pumping("blocked", scope.kind());
                    self.pumping.refused(&p.pumping, f.to, f.country, now);
                    refused(name::PUMPING);
                    return Err(Refused::Limited(Refusal {
                        limit: name::PUMPING,
                        retry_after: p.pumping.retry_after(),
                    }));
                }
                PumpingMode::Throttle => true,
            },
        };
        let reserved = p.has_reserved(f.purpose, f.client);
        Ok(IssuePlan {
            throttled,
            pool: if reserved {
                Pool::Reserved
            } else {
                Pool::Shared
            },
            fallback: reserved && p.has_shared(f.purpose),
            keys: p.keys(f),
            scope_key: self.scope_key(p, f.to),
            now: nanos(now),
        })
    }

    /// A planned request went through its limits.
    pub fn admitted(&self, plan: &IssuePlan) {
        if plan.throttled {
            pumping("throttled_through", "prefix");
        }
    }

    /// A planned request was refused by a limit, or the limits could not be read:
    /// counted, and told to the pumping defence when it was its throttle.
    pub fn denied(&self, rules: &Rules, f: &IssueFacts<'_>, d: Denial, now: UnixMillis) -> Refused {
        match d {
            Denial::Refused(mut r) => {
                if r.limit == name::PUMPING {
                    pumping("throttled", "prefix");
                    self.pumping
                        .refused(&rules.policy.pumping, f.to, f.country, now);
                }
                if r.limit == name::RESERVED {
                    // The client's share is used up and there is no shared pool:
                    // the purpose's capacity is.
                    r.limit = name::PURPOSE;
                }
                refused(r.limit);
                Refused::Limited(r)
            }
            Denial::Unavailable(u) => Refused::Unavailable(u),
        }
    }

    fn scope_key(&self, p: &LimitPolicy, to: E164) -> [u8; 9] {
        let mut key = [0u8; 9];
        if let Scope::Prefix { digits, len } = p.pumping.prefix_of(to) {
            key[..8].copy_from_slice(&digits.to_be_bytes());
            key[8] = len;
        }
        key
    }

    /// An operator lifts the pumping defence's judgement on `to`'s scopes (its
    /// prefix and its country): their counts start again, and the prefix's throttle
    /// is back at its full burst. The scopes that were being counted, as text.
    pub async fn unblock(
        &self,
        rules: &Rules,
        to: E164,
        country: Option<Region>,
    ) -> Result<Vec<String>, Unavailable> {
        let p = &rules.policy;
        let key = self.scope_key(p, to);
        if let Some(check) = p.pumping_check(&key) {
            self.limiter.forget(&check).await?;
        }
        Ok(self
            .pumping
            .forget(&p.pumping, to, country)
            .into_iter()
            .map(|s| s.to_string())
            .collect())
    }

    /// The pumping scopes judged suspect now (at most `limit`).
    pub fn pumping_suspects(&self, rules: &Rules, now: UnixMillis, limit: usize) -> Vec<ScopeView> {
        self.pumping.suspects(&rules.policy.pumping, now, limit)
    }

    /// A code went out to `to`.
    pub fn sent(&self, rules: &Rules, to: E164, country: Option<Region>, now: UnixMillis) {
        self.pumping.sent(&rules.policy.pumping, to, country, now);
    }

    /// A check refused by a limit the store decided (see
    /// [`crate::store::Store::check`]): counted.
    pub fn check_refused(&self, r: Refusal) -> Refused {
        refused(r.limit);
        Refused::Limited(r)
    }

    /// May a secret about `subject` be tried (from `ip`, when known)? A contrast
    /// value, sent by an authenticated client. Charges nothing: only a failed attempt
    /// is charged ([`Admission::guess_failed`]), to the same limits as wrong codes —
    /// the subject's and the address's — since both are guesses at a secret about the
    /// subject. (Answers from the app are not: see [`Admission::answer_allowed`].)
    pub async fn guess_allowed(
        &self,
        rules: &Rules,
        subject: &str,
        ip: Option<IpAddr>,
        now: UnixMillis,
    ) -> Result<(), Refused> {
        let key = ip.map(ip_key);
        let checks = guess_checks(rules, subject, key.as_ref());
        if checks.is_empty() {
            return Ok(());
        }
        self.limiter
            .peek(&checks, nanos(now))
            .await
            .map_err(counted)
    }

    /// An operator gives `subject` its wrong-code budget back (the limit that locks
    /// it out after too many wrong codes or contrast values). Whether there was a
    /// limit to reset.
    pub async fn unlock(&self, rules: &Rules, subject: &str) -> Result<bool, Unavailable> {
        let Some(check) = rules.policy.check_subject(subject) else {
            return Ok(false);
        };
        self.limiter.forget(&check).await?;
        Ok(true)
    }

    /// A contrast value tried for `subject` (from `ip`) was wrong: charged to the
    /// subject's and the address's guess limits.
    pub async fn guess_failed(
        &self,
        rules: &Rules,
        subject: &str,
        ip: Option<IpAddr>,
        now: UnixMillis,
    ) {
        let key = ip.map(ip_key);
        let checks = guess_checks(rules, subject, key.as_ref());
        if checks.is_empty() {
            return;
        }
        // A refusal here changes nothing: the attempt failed anyway, and the next
        // one is refused by `guess_allowed`.
        if let Err(Denial::Unavailable(e)) = self.limiter.check(&checks, nanos(now)).await {
            tracing::warn!(error = %e, "could not count a failed guess");
        }
    }

    /// May `caller` call a route that anyone may call (an app's answer or
    /// acknowledgement, health, metrics)? Charged on this node, per caller network.
    pub async fn admit_public(
        &self,
        rules: &Rules,
        caller: IpAddr,
        now: UnixMillis,
    ) -> Result<(), Refused> {
        let key = crate::policy::peer::limit_key(caller);
        let Some(c) = rules.policy.public_ip(&key) else {
            return Ok(());
        };
        self.local.check(&[c], nanos(now)).await.map_err(counted)
    }

    /// May an answer or acknowledgement from `caller` be judged? Past the network's
    /// budget of refused ones, no: refused before its signature or token is looked
    /// at. Charges nothing (see [`Admission::answer_refused`]).
    pub async fn answer_allowed(
        &self,
        rules: &Rules,
        caller: IpAddr,
        now: UnixMillis,
    ) -> Result<(), Refused> {
        let key = crate::policy::peer::limit_key(caller);
        let Some(c) = rules.policy.answer_ip(&key) else {
            return Ok(());
        };
        self.limiter.peek(&[c], nanos(now)).await.map_err(counted)
    }

    /// An answer or acknowledgement from `caller` was refused (no valid signature of
    /// an enrolled key, a wrong token): charged to the caller's network — never to
    /// the subject, so that nobody can spend a citizen's budget by failing on
    /// purpose.
    pub async fn answer_refused(&self, rules: &Rules, caller: IpAddr, now: UnixMillis) {
        let key = crate::policy::peer::limit_key(caller);
        let Some(c) = rules.policy.answer_ip(&key) else {
            return;
        };
        if let Err(Denial::Unavailable(e)) = self.limiter.check(&[c], nanos(now)).await {
            tracing::warn!(error = %e, "could not count a refused answer");
        }
    }

    /// A code sent to `to` was typed right.
    pub fn converted(&self, rules: &Rules, to: E164, country: Option<Region>, now: UnixMillis) {
        self.pumping
            .converted(&rules.policy.pumping, to, country, now);
    }

    /// Forget what is back to normal: limit keys at a full burst, idle scopes.
    pub fn reclaim(&self, now: UnixMillis) {
        let keys = self.limiter.reclaim(nanos(now)) + self.local.reclaim(nanos(now));
        let scopes = self.pumping.reclaim(&self.rules().policy.pumping, now);
        metrics::gauge!("otpd_limit_keys").set(keys as f64);
        metrics::gauge!("otpd_pumping_scopes").set(scopes as f64);
    }

    /// What would decide a request with these facts now, charging nothing.
    pub async fn explain(
        &self,
        rules: &Rules,
        f: &IssueFacts<'_>,
        now: UnixMillis,
    ) -> Result<Explanation, Unavailable> {
        let p = &rules.policy;
        let ns = nanos(now);
        let judgement = self.pumping.judge(&p.pumping, f.to, f.country, now);
        let keys = p.keys(f);
        let scope_key = self.scope_key(p, f.to);
        let pool = if p.has_reserved(f.purpose, f.client) {
            Pool::Reserved
        } else {
            Pool::Shared
        };
        let mut checks = p.issue_checks(f, &keys, pool);
        if pool == Pool::Reserved && p.has_shared(f.purpose) {
            checks.extend(
                p.issue_checks(f, &keys, Pool::Shared)
                    .into_iter()
                    .filter(|c| c.limit == name::PURPOSE),
            );
        }
        if matches!(
            judgement,
            Judgement::Suspect {
                mode: PumpingMode::Throttle,
                ..
            }
        ) && let Some(c) = p.pumping_check(&scope_key)
        {
            checks.push(c);
        }
        if let Some(subject) = f.subject
            && let Some(c) = p.check_subject(subject)
        {
            checks.push(c);
        }
        let mut limits: Vec<LimitView> = Vec::with_capacity(checks.len());
        for c in &checks {
            let s = self.limiter.standing(c, ns).await?;
            limits.push(LimitView {
                limit: c.limit,
                quota: c.quota.to_string(),
                remaining: s.remaining,
                retry_after_ms: s.retry_after.map(|d| d.as_millis() as u64),
            });
        }
        let mut decision = ("allowed".to_string(), None::<Duration>);
        match &judgement {
            Judgement::Denied { entry } => decision = (format!("denied by {entry}"), None),
            Judgement::Suspect {
                mode: PumpingMode::Block,
                ..
            } => decision = (name::PUMPING.into(), Some(p.pumping.retry_after())),
            _ => {
                // The reserved share refusing alone is not a refusal while the
                // shared pool has room.
                let shared_ok = limits
                    .iter()
                    .any(|l| l.limit == name::PURPOSE && l.remaining > 0);
                if let Some(worst) = limits
                    .iter()
                    .filter(|l| l.remaining == 0)
                    .filter(|l| !(l.limit == name::RESERVED && shared_ok))
                    .max_by_key(|l| l.retry_after_ms)
                {
                    decision = (
                        worst.limit.to_string(),
                        worst.retry_after_ms.map(Duration::from_millis),
                    );
                }
            }
        }
        Ok(Explanation {
            decision: decision.0,
            retry_after_ms: decision.1.map(|d| d.as_millis() as u64),
            limits,
            pumping: PumpingView {
                mode: p.pumping.mode.as_str(),
                min_sends: p.pumping.min_sends,
                min_conversion: p.pumping.min_conversion,
                scopes: self.pumping.explain(&p.pumping, f.to, f.country, now),
                judgement,
            },
        })
    }
}

/// The limits a guess at a contrast value is counted against: the
/// subject's wrong guesses and, when the address is known, its checks.
fn guess_checks<'a>(
    rules: &'a Rules,
    subject: &'a str,
    ip: Option<&'a [u8; 16]>,
) -> arrayvec::ArrayVec<crate::policy::limiter::Check<'a>, 2> {
    let mut checks = arrayvec::ArrayVec::new();
    checks.extend(rules.policy.check_subject(subject));
    if let Some(ip) = ip {
        checks.extend(rules.policy.check_ip(ip));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, Rate};
    use crate::policy::clients::hash_key;
    use crate::policy::limiter::{Charged, IssueLimits, MemoryLimiter, charge_issue, refund_issue};
    use std::collections::BTreeMap;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn config() -> Config {
        let mut c = Config::default();
        c.limits.purposes = BTreeMap::from([("login".into(), Rate::per(10, 60))]);
        c.limits.pumping.min_sends = 5;
        c.limits.pumping.grace = Duration::from_secs(60);
        c.limits.pumping.mode = PumpingMode::Throttle;
        c.limits.pumping.throttle = Rate::per(1, 600);
        c.limits.pumping.deny = vec!["+8821".into()];
        let client = |name: &str, reserved: f64| ClientConfig {
            name: name.into(),
            key_sha256: hash_key(name),
            rate: Rate::Off,
            purposes: vec![],
            countries: vec![],
            reserved,
            admin: false,
            display_name: None,
            require_contrast: false,
            registry: Default::default(),
            override_to: false,
            webhook_url: None,
            webhook_secret: None,
            keep_events: false,
        };
        c.clients = vec![client("sede", 0.5), client("bank", 0.0)];
        c
    }

    fn admission(c: &Config) -> Admission {
        Admission::new(Arc::new(MemoryLimiter::new()), Rules::new(c))
    }

    /// Admit a request to send a code the way a store whose limits live in the
    /// limiter does ([`charge_issue`]), with the limits the engine hands it; and,
    /// with `then_refund`, give the charge back as it does for a request that sent
    /// nothing.
    async fn admit(
        a: &Admission,
        rules: &Rules,
        f: &IssueFacts<'_>,
        now: UnixMillis,
        then_refund: bool,
    ) -> Result<Charged, Refused> {
        let plan = a.plan_issue(rules, f, now)?;
        let gate = plan.gate(rules, f);
        let charge = plan.charge(rules, f, plan.pool());
        let fallback = plan
            .falls_back()
            .then(|| plan.charge(rules, f, Pool::Shared));
        let limits = IssueLimits {
            gate: &gate,
            charge: &charge,
            fallback: fallback.as_deref(),
            now: plan.now,
        };
        let charged = charge_issue(&*a.limiter, &limits)
            .await
            .map_err(|d| a.denied(rules, f, d, now))?;
        a.admitted(&plan);
        if then_refund {
            refund_issue(&*a.limiter, &limits, charged).await;
        }
        Ok(charged)
    }

    async fn admit_issue(
        a: &Admission,
        rules: &Rules,
        f: &IssueFacts<'_>,
        now: UnixMillis,
    ) -> Result<Charged, Refused> {
        admit(a, rules, f, now, false).await
    }

    async fn wrong_code(a: &Admission, rules: &Rules, subject: &str) -> Result<(), Refused> {
        let c = rules.policy.check_subject(subject).unwrap();
        a.limiter.check(&[c], nanos(T0)).await.map_err(counted)
    }

    fn facts<'a>(client: &'a crate::policy::clients::Client, n: u64) -> IssueFacts<'a> {
        IssueFacts {
            to: E164::from_digits_unchecked(447_700_000_000 + n),
            country: Region::parse("GB"),
            subject: None,
            ip: None,
            client,
            purpose: "login",
        }
    }

    #[tokio::test]
    async fn a_surge_of_one_client_leaves_the_others_their_share() {
        let a = admission(&config());
        let rules = a.rules();
        let bank = rules.clients.authenticate(Some(b"Bearer bank")).unwrap();
        let sede = rules.clients.authenticate(Some(b"Bearer sede")).unwrap();
        // The bank (no reservation) takes all it can: the shared half.
        let mut bank_ok = 0;
        for n in 0..100 {
            if admit_issue(&a, &rules, &facts(&bank, n), T0).await.is_ok() {
                bank_ok += 1;
            }
        }
        assert_eq!(bank_ok, 5);
        let refusal = admit_issue(&a, &rules, &facts(&bank, 500), T0)
            .await
            .unwrap_err();
        assert!(
            matches!(
                refusal,
                Refused::Limited(Refusal {
                    limit: "purpose",
                    ..
                })
            ),
            "{refusal:?}"
        );
        // Sede still has its reserved half.
        for n in 0..5 {
            admit_issue(&a, &rules, &facts(&sede, 1000 + n), T0)
                .await
                .unwrap();
        }
        let last = admit_issue(&a, &rules, &facts(&sede, 2000), T0)
            .await
            .unwrap_err();
        assert!(matches!(
            last,
            Refused::Limited(Refusal {
                limit: "purpose",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_refund_gives_the_destination_back() {
        let a = admission(&config());
        let rules = a.rules();
        let bank = rules.clients.authenticate(Some(b"Bearer bank")).unwrap();
        let f = facts(&bank, 1);
        for _ in 0..20 {
            admit(&a, &rules, &f, T0, true).await.unwrap();
        }
        let e = a.explain(&rules, &f, T0).await.unwrap();
        assert_eq!(e.decision, "allowed");
        let dest = e.limits.iter().find(|l| l.limit == "destination").unwrap();
        assert_eq!(dest.remaining, 5);
    }

    #[tokio::test]
    async fn deny_list_and_pumping_throttle() {
        let a = admission(&config());
        let rules = a.rules();
        let bank = rules.clients.authenticate(Some(b"Bearer bank")).unwrap();
        let sat = IssueFacts {
            to: E164::from_digits_unchecked(882_130_000_001),
            country: None,
            ..facts(&bank, 0)
        };
        assert_eq!(
            admit_issue(&a, &rules, &sat, T0).await.unwrap_err(),
            Refused::Denied {
                entry: "+8821".into()
            }
        );
        // Five unconverted sends to one prefix, judged after the grace.
        for n in 0..5 {
            a.sent(&rules, facts(&bank, n).to, Region::parse("GB"), T0);
        }
        let later = T0.plus(Duration::from_secs(900));
        let e = a.explain(&rules, &facts(&bank, 9), later).await.unwrap();
        assert!(
            matches!(e.pumping.judgement, Judgement::Suspect { .. }),
            "{e:?}"
        );
        // Throttled: one through, then refused by `pumping`.
        admit_issue(&a, &rules, &facts(&bank, 10), later)
            .await
            .unwrap();
        let r = admit_issue(&a, &rules, &facts(&bank, 11), later)
            .await
            .unwrap_err();
        assert!(
            matches!(
                r,
                Refused::Limited(Refusal {
                    limit: "pumping",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn wrong_codes_for_a_subject_gate_new_codes() {
        let mut c = config();
        c.limits.check_subject = Rate::per(3, 3600);
        let a = admission(&c);
        let rules = a.rules();
        let bank = rules.clients.authenticate(Some(b"Bearer bank")).unwrap();
        let f = IssueFacts {
            subject: Some("12345678Z"),
            ..facts(&bank, 1)
        };
        for _ in 0..3 {
            wrong_code(&a, &rules, "12345678Z").await.unwrap();
        }
        assert!(matches!(
            wrong_code(&a, &rules, "12345678Z").await.unwrap_err(),
            Refused::Limited(Refusal {
                limit: "check_subject",
                ..
            })
        ));
        let r = admit_issue(&a, &rules, &f, T0).await.unwrap_err();
        assert!(matches!(
            r,
            Refused::Limited(Refusal {
                limit: "check_subject",
                ..
            })
        ));
        // Another subject is not concerned.
        let other = IssueFacts {
            subject: Some("87654321X"),
            ..f
        };
        admit_issue(&a, &rules, &other, T0).await.unwrap();
    }
}
