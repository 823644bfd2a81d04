//! The live routing state: the carriers otpd runs (each with its circuit breaker and
//! throughput cap) and the [`Plan`] in force — prefix routes, templates, thresholds —
//! which a reload swaps whole.
//!
//! A reload builds a new plan from the new configuration and checks it against the
//! running carriers before swapping it in; a plan that does not build, or names a
//! carrier that is not running, is refused and the old one stays. Sends already under
//! way keep the plan they started with (they hold an `Arc` to it), so nothing in
//! flight is dropped. Carriers themselves (their connections) are not restarted by a
//! reload: their caps and queue sizes are updated, their breakers keep their history.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use otpd_adapters::Channel;
use parking_lot::{Mutex, RwLock};

use crate::config::{ChannelRef, Config, ConfigError, RouteCarrier};
use crate::delivery::breaker::{Breaker, BreakerConfig};
use crate::delivery::routes::{CarrierChoice, Matched, RouteTable, Target};
use crate::delivery::template::{Entry, TemplateSpec, Templates};
use crate::delivery::throttle::Throttle;
use crate::domain::clock::UnixMillis;
use crate::domain::locale::Locale;
use crate::domain::name::Name;
use crate::numbers::e164::E164;
use crate::numbers::reader::Region;

/// Throughput settings of one carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarrierLimits {
    pub tps: Option<NonZeroU32>,
    pub queue_capacity: usize,
}

/// Everything a reload can change, built and checked as one.
pub struct Plan {
    table: RouteTable,
    templates: Templates,
    min_validity_left: Duration,
    breaker: BreakerConfig,
    limits: HashMap<String, CarrierLimits>,
    country_locales: HashMap<Region, Locale>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("table", &self.table)
            .field("min_validity_left", &self.min_validity_left)
            .finish_non_exhaustive()
    }
}

/// The carrier a route entry names: `file`, `NAME` or `smpp.NAME`.
fn carrier_name(reference: &str) -> &str {
    reference.strip_prefix("smpp.").unwrap_or(reference)
}

fn invalid(key: String, value: impl std::fmt::Debug, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

fn choices(key: &str, carriers: &[RouteCarrier]) -> Result<Vec<CarrierChoice>, ConfigError> {
    let mut seen = BTreeSet::new();
    carriers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = carrier_name(c.name());
            if name.is_empty() {
                return Err(invalid(format!("{key}[{i}]"), c.name(), "names no carrier"));
            }
            if !seen.insert(name.to_string()) {
                return Err(invalid(
                    format!("{key}[{i}]"),
                    c.name(),
                    "the carrier is listed twice in this route",
                ));
            }
            let (priority, weight) = match c {
                RouteCarrier::Name(_) => (i as u32, 1),
                RouteCarrier::Weighted {
                    priority, weight, ..
                } => (priority.unwrap_or(i as u32), weight.unwrap_or(1)),
            };
            if weight > 1_000_000 {
                return Err(invalid(
                    format!("{key}[{i}].weight"),
                    weight,
                    "must be at most 1000000",
                ));
            }
            Ok(CarrierChoice {
                carrier: Name::new(name),
                priority,
                weight,
            })
        })
        .collect()
}

impl Plan {
    /// Build from `[routing]`, `[messages]`, the purposes and the carriers' caps.
    /// Whether the carriers it names exist is for [`Plan::check_carriers`] (against
    /// a configuration) or the [`Router`] (against the running ones).
    pub fn build(config: &Config) -> Result<Plan, ConfigError> {
        let table = route_table(config)?;
        let r = &config.routing;
        check_routing(config)?;
        let (templates, country_locales) = messages(config)?;
        let limits = config
            .channels
            .smpp
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    CarrierLimits {
                        tps: c.tps.and_then(NonZeroU32::new),
                        queue_capacity: c.queue_capacity,
                    },
                )
            })
            .collect();
        Ok(Plan {
            table,
            templates,
            min_validity_left: r.min_validity_left,
            breaker: BreakerConfig::from(&r.breaker),
            limits,
            country_locales,
        })
    }

    /// Every carrier the plan names must be configured: the outbox (`file`) or a
    /// `[channels.smpp.NAME]`.
    pub fn check_carriers(&self, config: &Config) -> Result<(), ConfigError> {
        let table = &self.table;
        let known: BTreeSet<&str> = std::iter::once("file")
            .chain(config.channels.smpp.keys().map(String::as_str))
            .collect();
        for (prefix, target) in table.targets() {
            if let Target::Carriers(cs) = target {
                for c in cs {
                    if !known.contains(&*c.carrier) {
                        return Err(invalid(
                            "routing".into(),
                            &*c.carrier,
                            format!(
                                "route {prefix} names carrier `{}`, which is not configured (carriers: {})",
                                c.carrier,
                                known.iter().copied().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
        }

        Ok(())
    }

    /// The route of `number`: the longest matching prefix, else the default.
    pub fn route(&self, number: E164) -> Matched<'_> {
        self.table
            .lookup(number)
            .expect("the plan always has a default route")
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    pub fn min_validity_left(&self) -> Duration {
        self.min_validity_left
    }

    /// The language for numbers of `country`, if configured.
    pub fn country_locale(&self, country: Option<Region>) -> Option<Locale> {
        self.country_locales.get(&country?).copied()
    }

    fn limits(&self, carrier: &str) -> CarrierLimits {
        self.limits.get(carrier).copied().unwrap_or(CarrierLimits {
            tps: None,
            queue_capacity: usize::MAX,
        })
    }

    /// Every route (and the default, as `default`) with its target, in
    /// configuration order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.table.targets()
    }

    /// Every carrier some route names.
    pub fn carriers(&self) -> BTreeSet<Name> {
        self.table
            .targets()
            .map(|(_, t)| t)
            .filter_map(|t| match t {
                Target::Carriers(cs) => Some(cs.iter().map(|c| c.carrier)),
                Target::Blocked => None,
            })
            .flatten()
            .collect()
    }
}

/// Why a suspended carrier is passed over, as the delivery history says it.
pub const SUSPENDED: &str = "suspended by an operator";

/// One running carrier: its channel, breaker and throughput cap.
pub struct CarrierSlot {
    pub name: Name,
    pub channel: Arc<dyn Channel>,
    breaker: Mutex<Breaker>,
    throttle: RwLock<Arc<Throttle>>,
    /// Suspended by an operator: passed over like a carrier with no live bind, and
    /// what waits in its line under the cap moves on to the route's next carrier.
    suspended: tokio::sync::watch::Sender<bool>,
    /// Taken once: a labelled counter looked up per send costs an allocation.
    pub counters: SlotCounters,
}

/// `otpd_sms_carrier_total` by outcome, and `otpd_sms_failovers_total`, of one carrier.
pub struct SlotCounters {
    pub sent: metrics::Counter,
    pub temporary: metrics::Counter,
    pub refused: metrics::Counter,
    pub rejected: metrics::Counter,
    pub closed: metrics::Counter,
    pub failovers: metrics::Counter,
}

impl SlotCounters {
    fn new(carrier: Name) -> Self {
        let outcome = |o: &'static str| metrics::counter!("otpd_sms_carrier_total", "carrier" => carrier.as_str(), "outcome" => o);
        Self {
            sent: outcome("sent"),
            temporary: outcome("temporary"),
            refused: outcome("refused"),
            rejected: outcome("rejected"),
            closed: outcome("closed"),
            failovers: metrics::counter!("otpd_sms_failovers_total", "from" => carrier.as_str()),
        }
    }
}

impl CarrierSlot {
    /// Whether a send may go to this carrier now, and if not why. Taking the
    /// half-open probe happens here.
    pub fn admit(&self, now: UnixMillis) -> Result<(), &'static str> {
        if self.is_suspended() {
            return Err(SUSPENDED);
        }
        if !self.channel.healthy() {
            return Err("no live bind");
        }
        if !self.breaker.lock().allow(now) {
            return Err("circuit breaker open");
        }
        Ok(())
    }

    pub fn is_suspended(&self) -> bool {
        *self.suspended.borrow()
    }

    /// Suspend (`true`) or resume the carrier; whether that changed anything.
    pub fn suspend(&self, suspended: bool) -> bool {
        let changed = self.suspended.send_if_modified(|s| {
            let changed = *s != suspended;
            *s = suspended;
            changed
        });
        if changed {
            tracing::warn!(carrier = %self.name, suspended, "carrier suspended or resumed by an operator");
        }
        changed
    }

    /// Resolves once the carrier is suspended (at once if it is).
    pub async fn suspension(&self) {
        let mut rx = self.suspended.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Count a send's answer for the breaker.
    pub fn record(&self, ok: bool, now: UnixMillis) {
        let mut b = self.breaker.lock();
        let before = b.state();
        b.record(ok, now);
        let after = b.state();
        if before.as_str() != after.as_str() {
            tracing::warn!(carrier = %self.name, from = before.as_str(), to = after.as_str(), "carrier circuit breaker changed state");
            metrics::counter!("otpd_carrier_breaker_transitions_total", "carrier" => self.name.to_string(), "to" => after.as_str()).increment(1);
        }
    }

    pub fn throttle(&self) -> Arc<Throttle> {
        self.throttle.read().clone()
    }

    /// Health as the admin view shows it.
    pub fn health(&self, now: UnixMillis) -> CarrierHealth {
        let b = self.breaker.lock();
        let throttle = self.throttle();
        let suspended = self.is_suspended();
        CarrierHealth {
            live: self.channel.healthy(),
            suspended,
            breaker: b.state().as_str(),
            available: !suspended && self.channel.healthy() && b.is_available(now),
            error_rate: b.error_rate(now),
            tps: throttle.tps().map(NonZeroU32::get),
            waiting: throttle.waiting(),
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CarrierHealth {
    /// The channel can take messages (an SMPP carrier: a live bind).
    pub live: bool,
    /// An operator suspended it.
    pub suspended: bool,
    pub breaker: &'static str,
    /// Live, not suspended, and the breaker lets sends through.
    pub available: bool,
    pub error_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tps: Option<u32>,
    pub waiting: usize,
}

/// A plan names a carrier otpd does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "carrier `{0}` is named by a route but is not running (carriers are started with otpd: restart to add one)"
)]
pub struct NotRunning(pub String);

pub struct Router {
    slots: HashMap<Name, Arc<CarrierSlot>>,
    plan: RwLock<Arc<Plan>>,
}

impl Router {
    /// Carriers are the channels, by [`Channel::name`].
    pub fn new(channels: &[Arc<dyn Channel>], plan: Plan) -> Result<Router, NotRunning> {
        let slots = channels
            .iter()
            .map(|channel| {
                let name = Name::new(channel.name());
                let limits = plan.limits(&name);
                let slot = CarrierSlot {
                    counters: SlotCounters::new(name),
                    name,
                    channel: channel.clone(),
                    breaker: Mutex::new(Breaker::new(plan.breaker)),
                    throttle: RwLock::new(Arc::new(Throttle::new(
                        &name,
                        limits.tps,
                        limits.queue_capacity,
                    ))),
                    suspended: tokio::sync::watch::Sender::new(false),
                };
                (name, Arc::new(slot))
            })
            .collect();
        let router = Router {
            slots,
            plan: RwLock::new(Arc::new(plan)),
        };
        router.check(&router.plan())?;
        Ok(router)
    }

    fn check(&self, plan: &Plan) -> Result<(), NotRunning> {
        match plan
            .carriers()
            .into_iter()
            .find(|c| !self.slots.contains_key(c))
        {
            Some(missing) => Err(NotRunning(missing.to_string())),
            None => Ok(()),
        }
    }

    pub fn plan(&self) -> Arc<Plan> {
        self.plan.read().clone()
    }

    /// Swap in a new plan, if every carrier it names is running. Throughput caps
    /// that changed get a fresh limiter (messages already waiting finish under the
    /// old one); breakers take the new thresholds and keep their counts.
    pub fn install(&self, plan: Plan) -> Result<(), NotRunning> {
        self.check(&plan)?;
        for slot in self.slots.values() {
            let limits = plan.limits(&slot.name);
            let current = slot.throttle();
            if current.tps() != limits.tps || current.capacity() != limits.queue_capacity {
                *slot.throttle.write() =
                    Arc::new(Throttle::new(&slot.name, limits.tps, limits.queue_capacity));
            }
            slot.breaker.lock().reconfigure(plan.breaker);
        }
        *self.plan.write() = Arc::new(plan);
        Ok(())
    }

    pub fn slot(&self, name: &str) -> Option<&Arc<CarrierSlot>> {
        self.slots.get(name)
    }

    /// Every running carrier, by name.
    pub fn slots(&self) -> impl Iterator<Item = &Arc<CarrierSlot>> {
        let mut slots: Vec<_> = self.slots.values().collect();
        slots.sort_by_key(|a| a.name);
        slots.into_iter()
    }

    pub fn channels(&self) -> impl Iterator<Item = &Arc<dyn Channel>> {
        self.slots.values().map(|s| &s.channel)
    }
}

/// `[routing]`'s default and prefix routes as a table.
fn route_table(config: &Config) -> Result<RouteTable, ConfigError> {
    let r = &config.routing;
    let default = if r.default.is_empty() {
        let name = match ChannelRef::parse(&config.delivery.sms) {
            Some(ChannelRef::File) => "file".to_string(),
            Some(ChannelRef::Smpp(name)) => name,
            None => {
                return Err(invalid(
                    "delivery.sms".into(),
                    &config.delivery.sms,
                    "expected `file` or `smpp.NAME`",
                ));
            }
        };
        vec![CarrierChoice {
            carrier: Name::new(name.as_str()),
            priority: 0,
            weight: 1,
        }]
    } else {
        choices("routing.default", &r.default)?
    };
    let mut routes = Vec::with_capacity(r.routes.len());
    for (i, route) in r.routes.iter().enumerate() {
        let key = format!("routing.routes[{i}]");
        let target = match (route.blocked, route.carriers.is_empty()) {
            (true, true) => Target::Blocked,
            (true, false) => {
                return Err(invalid(
                    format!("{key}.carriers"),
                    &route.prefix,
                    "a blocked prefix has no carriers",
                ));
            }
            (false, true) => {
                return Err(invalid(
                    format!("{key}.carriers"),
                    &route.prefix,
                    "give the route's carriers, or `blocked = true`",
                ));
            }
            (false, false) => {
                Target::Carriers(choices(&format!("{key}.carriers"), &route.carriers)?)
            }
        };
        routes.push((route.prefix.trim_start_matches('+').to_string(), target));
    }
    RouteTable::new(routes, Some(Target::Carriers(default)))
        .map_err(|e| invalid("routing.routes".into(), "", e.to_string()))
}

/// `routing.min_validity_left` against the purposes, and the breaker's thresholds.
fn check_routing(config: &Config) -> Result<(), ConfigError> {
    let r = &config.routing;
    if let Some((name, p)) = config
        .purposes
        .iter()
        .find(|(_, p)| r.min_validity_left >= p.ttl)
    {
        return Err(invalid(
            "routing.min_validity_left".into(),
            humantime::format_duration(r.min_validity_left).to_string(),
            format!(
                "must be shorter than every purpose's ttl (purpose {name}: {})",
                humantime::format_duration(p.ttl)
            ),
        ));
    }
    let b = &r.breaker;
    if !(0.0..=1.0).contains(&b.error_rate) || b.error_rate.is_nan() {
        return Err(invalid(
            "routing.breaker.error_rate".into(),
            b.error_rate,
            "must be between 0 and 1",
        ));
    }
    if b.window < Duration::from_millis(100) || b.cool_down < Duration::from_millis(10) {
        return Err(invalid(
            "routing.breaker".into(),
            humantime::format_duration(b.window).to_string(),
            "window must be at least 100ms and cool_down at least 10ms",
        ));
    }
    if b.min_sends == 0 {
        return Err(invalid(
            "routing.breaker.min_sends".into(),
            0,
            "must be at least 1",
        ));
    }
    Ok(())
}

/// `[messages]`: the templates, and the languages of countries.
fn messages(config: &Config) -> Result<(Templates, HashMap<Region, Locale>), ConfigError> {
    let m = &config.messages;
    if !(1..=10).contains(&m.max_segments) {
        return Err(invalid(
            "messages.max_segments".into(),
            m.max_segments,
            "must be between 1 and 10",
        ));
    }
    if m.app.chars().count() > 40 || m.app.chars().any(char::is_control) {
        return Err(invalid(
            "messages.app".into(),
            &m.app,
            "at most 40 characters, none of them control characters",
        ));
    }
    let mut country_locales = HashMap::new();
    for (country, tag) in &m.country_locales {
        let key = format!("messages.country_locales.{country}");
        let region = Region::parse(country)
            .ok_or_else(|| invalid(key.clone(), country, "not a two-letter country code"))?;
        let locale = Locale::parse(tag).ok_or_else(|| {
            invalid(
                key,
                tag,
                format!(
                    "unsupported language; supported: {}",
                    crate::domain::locale::SUPPORTED
                ),
            )
        })?;
        country_locales.insert(region, locale);
    }
    let mut entries = Vec::with_capacity(m.templates.len());
    for (i, t) in m.templates.iter().enumerate() {
        let key = format!("messages.templates[{i}]");
        if t.purpose != "*" && !config.purposes.contains_key(&t.purpose) {
            return Err(invalid(
                format!("{key}.purpose"),
                &t.purpose,
                "no such purpose (use `*` for every purpose)",
            ));
        }
        let locale = Locale::parse(&t.locale).ok_or_else(|| {
            invalid(
                format!("{key}.locale"),
                &t.locale,
                format!(
                    "unsupported language; supported: {}",
                    crate::domain::locale::SUPPORTED
                ),
            )
        })?;
        entries.push(Entry {
            purpose: t.purpose.clone(),
            locale,
            spec: TemplateSpec {
                text: t.text.clone(),
                android_app_hash: t.android_app_hash.clone(),
                domain: t.domain.clone(),
            },
        });
    }
    let purposes: Vec<(String, usize, u64)> = config
        .purposes
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                usize::from(p.code_length),
                p.ttl.as_secs().div_ceil(60).max(1),
            )
        })
        .collect();
    let templates = Templates::new(&m.app, m.max_segments, entries, &purposes)
        .map_err(|e| invalid("messages.templates".into(), &e.what, e.error.to_string()))?;
    Ok((templates, country_locales))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, SmppCarrierConfig};
    use otpd_adapters::fake::FakeChannel;

    fn config(tps: u32) -> Config {
        let mut c = Config::default();
        for name in ["a", "b"] {
            c.channels.smpp.insert(
                name.into(),
                SmppCarrierConfig {
                    system_id: "x".into(),
                    tps: Some(tps),
                    ..SmppCarrierConfig::default()
                },
            );
        }
        c.routing.default = vec![RouteCarrier::Name("smpp.a".into())];
        c.routing.routes = vec![RouteConfig {
            prefix: "+44".into(),
            carriers: vec![RouteCarrier::Name("b".into())],
            blocked: false,
        }];
        c
    }

    fn router() -> Router {
        let channels: Vec<Arc<dyn Channel>> = vec![
            Arc::new(FakeChannel::new("a")),
            Arc::new(FakeChannel::new("b")),
        ];
        Router::new(&channels, Plan::build(&config(10)).unwrap()).unwrap()
    }

    #[test]
    fn a_plan_routes_by_prefix_and_names_its_carriers() {
        let r = router();
        let plan = r.plan();
        let uk = plan.route(E164::from_digits_unchecked(447_400_123_456));
        assert_eq!(uk.prefix, "44", "a leading + is allowed in the prefix");
        let es = plan.route(E164::from_digits_unchecked(34_600_123_456));
        assert_eq!(es.prefix, "");
        assert!(matches!(es.target, Target::Carriers(c) if &*c[0].carrier == "a"));
        assert_eq!(r.slot("a").unwrap().throttle().tps(), NonZeroU32::new(10));
    }

    #[test]
    fn install_updates_caps_and_refuses_carriers_that_do_not_run() {
        let r = router();
        let before = r.slot("b").unwrap().throttle();
        r.install(Plan::build(&config(25)).unwrap()).unwrap();
        let after = r.slot("b").unwrap().throttle();
        assert_eq!(after.tps(), NonZeroU32::new(25));
        assert!(!Arc::ptr_eq(&before, &after));
        // Unchanged caps keep their limiter (and its place in time).
        r.install(Plan::build(&config(25)).unwrap()).unwrap();
        assert!(Arc::ptr_eq(&after, &r.slot("b").unwrap().throttle()));

        let mut ghost = config(25);
        ghost.routing.default = vec![RouteCarrier::Name("file".into())];
        let e = r.install(Plan::build(&ghost).unwrap()).unwrap_err();
        assert_eq!(e, NotRunning("file".into()));
        assert_eq!(
            r.plan()
                .route(E164::from_digits_unchecked(34_600_123_456))
                .prefix,
            "",
            "the plan in force stays"
        );
        assert!(matches!(
            r.plan().route(E164::from_digits_unchecked(34_600_123_456)).target,
            Target::Carriers(c) if &*c[0].carrier == "a"
        ));
    }

    #[test]
    fn min_validity_left_must_leave_room_in_every_purpose() {
        let mut c = config(1);
        c.routing.min_validity_left = std::time::Duration::from_secs(600);
        let e = Plan::build(&c).unwrap_err().to_string();
        assert!(e.contains("routing.min_validity_left"), "{e}");
    }
}
