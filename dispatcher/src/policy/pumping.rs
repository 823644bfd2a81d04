//! SMS-pumping defence. A pumping attack requests codes for numbers the attacker
//! is paid for (premium or international ranges) and never types them: sends rise,
//! successful checks do not. So, per country and per number prefix, otpd counts sends
//! and successful checks over a sliding window and judges a scope whose conversion
//! (checks ÷ sends) stays below a threshold with enough volume.
//!
//! Sends from the last `grace` are not counted yet — people need time to type — so a
//! legitimate burst is not mistaken for an attack. Counts live in a ring of buckets
//! per scope (sharded maps, bounded in size); judging is pure arithmetic on them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::limits::{Destination, parse_destination};
use crate::config::{PumpingConfig, PumpingMode};
use crate::domain::clock::UnixMillis;
use crate::numbers::e164::E164;
use crate::numbers::prefix_map::{PrefixMap, leading};
use crate::numbers::reader::Region;

/// Buckets per window.
const BUCKETS: usize = 12;
const SHARDS: usize = 16;

/// What is counted: a country, or the first digits of numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Country(Region),
    Prefix { digits: u64, len: u8 },
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Country(_) => "country",
            Scope::Prefix { .. } => "prefix",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Country(r) => write!(f, "{r}"),
            Scope::Prefix { digits, .. } => write!(f, "+{digits}"),
        }
    }
}

/// The configuration, ready to use.
#[derive(Debug, Clone)]
pub struct PumpingRules {
    pub mode: PumpingMode,
    bucket_ms: u64,
    grace_ms: u64,
    pub min_sends: u32,
    pub min_conversion: f64,
    prefix_digits: u8,
    max_tracked: usize,
    allow: Lists,
    deny: Lists,
}

#[derive(Debug, Clone, Default)]
struct Lists {
    countries: HashSet<Region>,
    prefixes: PrefixMap<()>,
}

impl Lists {
    fn new(entries: &[String]) -> Lists {
        let mut countries = HashSet::new();
        let mut prefixes = Vec::new();
        for e in entries {
            match parse_destination(e) {
                Some(Destination::Country(c)) => {
                    countries.insert(c);
                }
                Some(Destination::Prefix { digits, len }) => prefixes.push(((digits, len), ())),
                None => {}
            }
        }
        Lists {
            countries,
            prefixes: PrefixMap::new(prefixes),
        }
    }

    /// The entry matching the number, as written in the list.
    fn find(&self, number: E164, country: Option<Region>) -> Option<String> {
        if let Some((p, _)) = self.prefixes.lookup(number) {
            return Some(format!("+{}", p.0));
        }
        country
            .filter(|c| self.countries.contains(c))
            .map(|c| c.to_string())
    }
}

impl PumpingRules {
    /// From validated configuration.
    pub fn new(c: &PumpingConfig) -> PumpingRules {
        let window_ms = c.window.as_millis() as u64;
        PumpingRules {
            mode: c.mode,
            bucket_ms: (window_ms / BUCKETS as u64).max(1),
            grace_ms: c.grace.as_millis() as u64,
            min_sends: c.min_sends,
            min_conversion: c.min_conversion,
            prefix_digits: c.prefix_digits,
            max_tracked: c.max_tracked,
            allow: Lists::new(&c.allow),
            deny: Lists::new(&c.deny),
        }
    }

    /// The tracked prefix of a number.
    pub fn prefix_of(&self, number: E164) -> Scope {
        let (digits, len) = leading(number, self.prefix_digits);
        Scope::Prefix { digits, len }
    }

    /// How long a refusal lasts at least: one bucket, after which the counts move.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.bucket_ms)
    }
}

/// Milliseconds since the epoch (times before it count as the epoch).
fn ms(now: UnixMillis) -> u64 {
    now.0.max(0) as u64
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    sends: u32,
    refused: u32,
    conversions: u32,
}

/// What is being counted.
#[derive(Debug, Clone, Copy)]
enum Event {
    Sent,
    /// A request refused because its scope was suspect: still demand that does not
    /// convert, so a throttled attack keeps its scope suspect for as long as it
    /// goes on, instead of clearing it as soon as its sends leave the window.
    Refused,
    Converted,
}

/// One scope's counts.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    buckets: [Bucket; BUCKETS],
    /// Judged suspect last time (to log changes once).
    suspect: bool,
}

/// Counts of one scope, as judged now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Sends in the window, past the grace.
    pub sends: u32,
    /// Requests refused as suspect pumping in the window, past the grace.
    pub refused: u32,
    /// Successful checks in the window.
    pub conversions: u32,
    /// Sends and refusals too recent to judge.
    pub recent: u32,
}

impl Tally {
    /// Requests judged: sends and refusals.
    pub fn demand(&self) -> u32 {
        self.sends.saturating_add(self.refused)
    }

    pub fn conversion(&self) -> Option<f64> {
        (self.demand() > 0).then(|| f64::from(self.conversions) / f64::from(self.demand()))
    }

    pub fn suspect(&self, rules: &PumpingRules) -> bool {
        self.demand() >= rules.min_sends
            && self.conversion().is_some_and(|c| c < rules.min_conversion)
    }
}

impl Window {
    fn add(&mut self, rules: &PumpingRules, now: UnixMillis, event: Event) {
        let epoch = ms(now) / rules.bucket_ms;
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        let count = match event {
            Event::Sent => &mut b.sends,
            Event::Refused => &mut b.refused,
            Event::Converted => &mut b.conversions,
        };
        *count = count.saturating_add(1);
    }

    fn tally(&self, rules: &PumpingRules, now: UnixMillis) -> Tally {
        let epoch = ms(now) / rules.bucket_ms;
        let judged_before = ms(now).saturating_sub(rules.grace_ms);
        let mut t = Tally::default();
        for b in &self.buckets {
            if b.epoch + (BUCKETS as u64) <= epoch || b.epoch > epoch {
                continue;
            }
            t.conversions += b.conversions;
            if (b.epoch + 1) * rules.bucket_ms <= judged_before {
                t.sends += b.sends;
                t.refused += b.refused;
            } else {
                t.recent += b.sends + b.refused;
            }
        }
        t
    }

    fn idle(&self, rules: &PumpingRules, now: UnixMillis) -> bool {
        let epoch = ms(now) / rules.bucket_ms;
        self.buckets.iter().all(|b| {
            b.epoch + (BUCKETS as u64) <= epoch
                || (b.sends == 0 && b.refused == 0 && b.conversions == 0)
        })
    }
}

/// What the defence says of a number.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Judgement {
    /// Nothing against it.
    Clear,
    /// On the allow list (by this entry): never judged.
    AllowListed { entry: String },
    /// On the deny list (by this entry): always refused.
    Denied { entry: String },
    /// Conversion too low in this scope; the mode says what happens.
    Suspect {
        #[serde(skip)]
        scope: Scope,
        #[serde(rename = "scope")]
        scope_text: String,
        mode: PumpingMode,
    },
}

/// A scope's standing, for the admin view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScopeView {
    pub scope: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub tally: Tally,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<f64>,
    pub suspect: bool,
}

/// The counts of every tracked scope.
pub struct PumpingTracker {
    shards: Box<[Mutex<HashMap<Scope, Window>>]>,
}

impl Default for PumpingTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl PumpingTracker {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, scope: &Scope) -> &Mutex<HashMap<Scope, Window>> {
        let h = match scope {
            Scope::Country(r) => {
                let b = r.as_str().as_bytes();
                u64::from(b[0]) * 31 + u64::from(b[1])
            }
            Scope::Prefix { digits, len } => {
                digits.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(*len)
            }
        };
        &self.shards[(h >> 7) as usize % SHARDS]
    }

    fn scopes(rules: &PumpingRules, number: E164, country: Option<Region>) -> [Option<Scope>; 2] {
        [Some(rules.prefix_of(number)), country.map(Scope::Country)]
    }

    /// Forget the counts of `number`'s scopes (its prefix, its country when
    /// `country` is given): an operator's unblock once the traffic is known to be
    /// real. They start again from nothing, through the grace before they are
    /// judged. The scopes that had counts.
    pub fn forget(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
    ) -> Vec<Scope> {
        Self::scopes(rules, number, country)
            .into_iter()
            .flatten()
            .filter(|scope| self.shard(scope).lock().remove(scope).is_some())
            .collect()
    }

    /// Judge a request to `number`. Deny list first, then allow list, then the counts
    /// of its prefix and of its country (the prefix, narrower, answers first).
    pub fn judge(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
        now: UnixMillis,
    ) -> Judgement {
        if let Some(entry) = rules.deny.find(number, country) {
            return Judgement::Denied { entry };
        }
        if let Some(entry) = rules.allow.find(number, country) {
            return Judgement::AllowListed { entry };
        }
        let mut verdict = Judgement::Clear;
        for scope in Self::scopes(rules, number, country).into_iter().flatten() {
            let mut map = self.shard(&scope).lock();
            let Some(window) = map.get_mut(&scope) else {
                continue;
            };
            let suspect = window.tally(rules, now).suspect(rules);
            if suspect != window.suspect {
                window.suspect = suspect;
                if suspect {
                    tracing::warn!(%scope, kind = scope.kind(), mode = rules.mode.as_str(),
                        "conversion fell below the threshold: possible SMS pumping");
                } else {
                    tracing::info!(%scope, kind = scope.kind(), "conversion back to normal");
                }
            }
            if suspect && verdict == Judgement::Clear {
                verdict = Judgement::Suspect {
                    scope,
                    scope_text: scope.to_string(),
                    mode: rules.mode,
                };
            }
        }
        verdict
    }

    /// A code was sent to `number`.
    pub fn sent(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
        now: UnixMillis,
    ) {
        self.add(rules, number, country, now, Event::Sent);
    }

    /// A request to `number` was refused because its scope is suspect.
    pub fn refused(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
        now: UnixMillis,
    ) {
        self.add(rules, number, country, now, Event::Refused);
    }

    /// A code sent to `number` was typed right.
    pub fn converted(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
        now: UnixMillis,
    ) {
        self.add(rules, number, country, now, Event::Converted);
    }

    fn add(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
        now: UnixMillis,
        event: Event,
    ) {
        let cap = rules.max_tracked.div_ceil(SHARDS).max(1);
        for scope in Self::scopes(rules, number, country).into_iter().flatten() {
            let mut map = self.shard(&scope).lock();
            if !map.contains_key(&scope) && map.len() >= cap {
                map.retain(|_, w| !w.idle(rules, now));
                if map.len() >= cap {
                    metrics::counter!("otpd_pumping_untracked_total").increment(1);
                    continue;
                }
            }
            map.entry(scope).or_default().add(rules, now, event);
        }
    }

    /// The counts behind a judgement, for `GET /v1/admin/limits`.
    pub fn explain(
        &self,
        rules: &PumpingRules,
        number: E164,
        country: Option<Region>,
        now: UnixMillis,
    ) -> Vec<ScopeView> {
        Self::scopes(rules, number, country)
            .into_iter()
            .flatten()
            .map(|scope| {
                let tally = self
                    .shard(&scope)
                    .lock()
                    .get(&scope)
                    .map(|w| w.tally(rules, now))
                    .unwrap_or_default();
                ScopeView {
                    scope: scope.to_string(),
                    kind: scope.kind(),
                    conversion: tally.conversion(),
                    suspect: tally.suspect(rules),
                    tally,
                }
            })
            .collect()
    }

    /// The scopes judged suspect now, the most demanded first, at most `limit` of
    /// them: for the operator console.
    pub fn suspects(&self, rules: &PumpingRules, now: UnixMillis, limit: usize) -> Vec<ScopeView> {
        let mut found: Vec<ScopeView> = Vec::new();
        for shard in self.shards.iter() {
            for (scope, window) in shard.lock().iter() {
                let tally = window.tally(rules, now);
                if tally.suspect(rules) {
                    found.push(ScopeView {
                        scope: scope.to_string(),
                        kind: scope.kind(),
                        conversion: tally.conversion(),
                        suspect: true,
                        tally,
                    });
                }
            }
        }
        found.sort_by_key(|v| std::cmp::Reverse(v.tally.demand()));
        found.truncate(limit);
        found
    }

    /// Forget scopes with nothing in their window. Returns how many are left.
    pub fn reclaim(&self, rules: &PumpingRules, now: UnixMillis) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut map = s.lock();
                map.retain(|_, w| !w.idle(rules, now));
                map.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn rules(mode: PumpingMode) -> PumpingRules {
        PumpingRules::new(&PumpingConfig {
            mode,
            window: Duration::from_secs(3600),
            grace: Duration::from_secs(120),
            min_sends: 20,
            min_conversion: 0.2,
            prefix_digits: 5,
            allow: vec!["+3460".into(), "PT".into()],
            deny: vec!["+8821".into(), "KP".into()],
            ..PumpingConfig::default()
        })
    }

    fn es(n: u64) -> (E164, Option<Region>) {
        (
            E164::from_digits_unchecked(34_700_000_000 + n),
            Region::parse("ES"),
        )
    }

    fn gb(n: u64) -> (E164, Option<Region>) {
        (
            E164::from_digits_unchecked(447_700_000_000 + n),
            Region::parse("GB"),
        )
    }

    fn secs(s: u64) -> UnixMillis {
        T0.plus(Duration::from_secs(s))
    }

    #[test]
    fn lists_come_before_counts() {
        let r = rules(PumpingMode::Block);
        let t = PumpingTracker::new();
        let sat = E164::from_digits_unchecked(882_130_000_001);
        assert_eq!(
            t.judge(&r, sat, None, T0),
            Judgement::Denied {
                entry: "+8821".into()
            }
        );
        let pt = E164::from_digits_unchecked(351_912_345_678);
        assert_eq!(
            t.judge(&r, pt, Region::parse("PT"), T0),
            Judgement::AllowListed { entry: "PT".into() }
        );
        let (n, c) = es(1);
        assert_eq!(t.judge(&r, n, c, T0), Judgement::Clear);
    }

    #[test]
    fn unconverted_sends_make_a_prefix_suspect_once_past_the_grace() {
        let r = rules(PumpingMode::Throttle);
        let t = PumpingTracker::new();
        for i in 0..30 {
            let (n, c) = gb(i);
            t.sent(&r, n, c, T0);
        }
        let (n, c) = gb(99);
        // Too recent to judge: people are still typing.
        assert_eq!(t.judge(&r, n, c, secs(60)), Judgement::Clear);
        let later = t.judge(&r, n, c, secs(700));
        assert!(
            matches!(
                later,
                Judgement::Suspect {
                    scope: Scope::Prefix { digits: 44770, .. },
                    ..
                }
            ),
            "{later:?}"
        );
        let views = t.explain(&r, n, c, secs(700));
        assert_eq!(views[0].tally.sends, 30);
        assert!(views[0].suspect && views[1].suspect, "{views:?}");
        // Out of the window: forgotten, and clear again.
        assert_eq!(t.judge(&r, n, c, secs(3600 + 700)), Judgement::Clear);
        assert_eq!(t.reclaim(&r, secs(3600 + 700)), 0);
    }

    #[test]
    fn a_refused_attack_keeps_its_scope_suspect_while_it_lasts() {
        let r = rules(PumpingMode::Block);
        let t = PumpingTracker::new();
        for i in 0..30 {
            let (n, c) = gb(i);
            t.sent(&r, n, c, T0);
        }
        // The attack goes on, refused, well past the window of its sends.
        for minute in 1..=90 {
            let (n, c) = gb(1000 + minute);
            let now = secs(minute * 60);
            if minute > 10 {
                assert!(
                    matches!(t.judge(&r, n, c, now), Judgement::Suspect { .. }),
                    "minute {minute}"
                );
            }
            t.refused(&r, n, c, now);
        }
        // Once it stops, the scope clears with the window.
        let (n, c) = gb(5000);
        assert_eq!(t.judge(&r, n, c, secs(90 * 60 + 3700)), Judgement::Clear);
    }

    #[test]
    fn converted_traffic_stays_clear() {
        let r = rules(PumpingMode::Block);
        let t = PumpingTracker::new();
        for i in 0..100 {
            let (n, c) = gb(i);
            t.sent(&r, n, c, T0);
            if i % 2 == 0 {
                t.converted(&r, n, c, secs(30));
            }
        }
        let (n, c) = gb(1);
        assert_eq!(t.judge(&r, n, c, secs(700)), Judgement::Clear);
        let views = t.explain(&r, n, c, secs(700));
        assert_eq!(views[0].conversion, Some(0.5));
    }

    #[test]
    fn tracking_is_bounded() {
        let mut c = PumpingConfig {
            max_tracked: 32,
            prefix_digits: 12,
            ..PumpingConfig::default()
        };
        c.allow.clear();
        let r = PumpingRules::new(&c);
        let t = PumpingTracker::new();
        for i in 0..10_000 {
            t.sent(
                &r,
                E164::from_digits_unchecked(447_700_000_000 + i),
                None,
                T0,
            );
        }
        let held: usize = t.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= 32 + SHARDS, "{held}");
    }
}
