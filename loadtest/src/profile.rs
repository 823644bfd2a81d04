//! Rate profiles and the open-loop schedule they make. The schedule is fixed in
//! advance by the profile alone — never by how fast otpd answers — so a slow answer
//! cannot delay the next request (no coordinated omission), and every latency is
//! measured from the time a request was due, not from when it was sent.

use std::time::Duration;

use serde::Deserialize;

/// Arrivals per second over the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateProfile {
    /// The same rate throughout.
    Constant { rate: f64 },
    /// From `from` to `to` linearly over `over`, then `to`.
    Ramp {
        from: f64,
        to: f64,
        #[serde(with = "humantime_serde")]
        over: Duration,
    },
    /// `rates[0]` for `every`, then `rates[1]`…; the last one holds.
    Steps {
        rates: Vec<f64>,
        #[serde(with = "humantime_serde")]
        every: Duration,
    },
    /// A day compressed into the run: `hourly` (24 shares of `peak`, linearly
    /// interpolated; by default a weekday of a Spanish public service) spread over the
    /// duration, with an optional campaign spike on top.
    Day {
        peak: f64,
        #[serde(default = "weekday")]
        hourly: Vec<f64>,
        #[serde(default)]
        spike: Option<Spike>,
        /// The run's length, which the day is spread over (set from the scenario).
        #[serde(skip)]
        length: Duration,
    },
}

/// A window of the run at a fixed rate, whatever the profile says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spike {
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    #[serde(rename = "for", with = "humantime_serde")]
    pub lasts: Duration,
    pub rate: f64,
}

/// Hourly shares of the peak on a weekday: quiet nights, the morning peak at 10–13,
/// a smaller one after lunch.
fn weekday() -> Vec<f64> {
    vec![
        0.04, 0.02, 0.01, 0.01, 0.01, 0.02, 0.05, 0.15, 0.45, 0.8, 1.0, 0.95, 0.9, 0.75, 0.55, 0.6,
        0.7, 0.65, 0.5, 0.4, 0.3, 0.2, 0.12, 0.07,
    ]
}

/// The most a profile may ask for, per second.
pub const MAX_RATE: f64 = 10_000_000.0;

impl RateProfile {
    /// Arrivals per second `t` into the run.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            RateProfile::Constant { rate } => *rate,
            RateProfile::Ramp { from, to, over } => {
                if over.is_zero() || t >= *over {
                    *to
                } else {
                    from + (to - from) * (t.as_secs_f64() / over.as_secs_f64())
                }
            }
            RateProfile::Steps { rates, every } => {
                let i = (t.as_secs_f64() / every.as_secs_f64()) as usize;
                rates[i.min(rates.len() - 1)]
            }
            RateProfile::Day {
                peak,
                hourly,
                spike,
                length,
            } => {
                if let Some(s) = spike
                    && t >= s.at
                    && t < s.at + s.lasts
                {
                    return s.rate;
                }
                let hour = 24.0 * t.as_secs_f64() / length.as_secs_f64().max(1e-9);
                let h = (hour.floor() as usize).min(23);
                let next = (h + 1) % 24;
                let frac = (hour - h as f64).clamp(0.0, 1.0);
                peak * (hourly[h] + (hourly[next] - hourly[h]) * frac)
            }
        }
    }

    /// Fix what depends on the run's length.
    pub fn fit(&mut self, duration: Duration) {
        if let RateProfile::Day { length, .. } = self {
            *length = duration;
        }
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let rate = |key: &str, r: f64| {
            if r.is_finite() && (0.0..=MAX_RATE).contains(&r) {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("is {r}; a rate is between 0 and {MAX_RATE}"),
                ))
            }
        };
        match self {
            RateProfile::Constant { rate: r } => rate("rate", *r),
            RateProfile::Ramp { from, to, .. } => {
                rate("from", *from)?;
                rate("to", *to)
            }
            RateProfile::Steps { rates, every } => {
                if rates.is_empty() {
                    return Err(("rates".into(), "needs at least one rate".into()));
                }
                if every.is_zero() {
                    return Err(("every".into(), "must be more than 0".into()));
                }
                rates.iter().try_for_each(|r| rate("rates", *r))
            }
            RateProfile::Day {
                peak,
                hourly,
                spike,
                ..
            } => {
                rate("peak", *peak)?;
                if hourly.len() != 24 {
                    return Err((
                        "hourly".into(),
                        format!("has {} shares, not 24", hourly.len()),
                    ));
                }
                if hourly.iter().any(|h| !(0.0..=1.0).contains(h)) {
                    return Err(("hourly".into(), "shares are between 0 and 1".into()));
                }
                if let Some(s) = spike {
                    rate("spike.rate", s.rate)?;
                }
                Ok(())
            }
        }
    }
}

/// The arrival times of a profile over `duration`, at most `max` of them: the
/// offered count between two times is the rate's integral between them (one arrival
/// each time it grows by one), so a constant rate spaces arrivals exactly and a ramp
/// from zero starts gently rather than waiting on its first instant's rate.
pub struct Schedule<'a> {
    profile: &'a RateProfile,
    end: f64,
    left: u64,
    t: f64,
    /// What the integral must still grow by before the next arrival.
    need: f64,
}

impl<'a> Schedule<'a> {
    pub fn new(profile: &'a RateProfile, duration: Duration, max: u64) -> Self {
        Self {
            profile,
            end: duration.as_secs_f64(),
            left: max,
            t: 0.0,
            need: 0.0,
        }
    }
}

/// The integral is taken in steps of at most this (seconds).
const STEP: f64 = 0.001;
/// Float slack: 2000 steps of 1 ms end at 2 s, not just before.
const EPSILON: f64 = 1e-9;

impl Iterator for Schedule<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        while self.left > 0 && self.t < self.end - EPSILON {
            let rate = self.profile.rate_at(Duration::from_secs_f64(self.t));
            if rate <= 0.0 {
                self.t += STEP;
                continue;
            }
            if self.need <= EPSILON {
                self.need = 1.0;
                self.left -= 1;
                return Some(Duration::from_secs_f64(self.t));
            }
            let step = (self.need / rate).min(STEP);
            self.need -= rate * step;
            self.t += step;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(p: &RateProfile, secs: u64) -> usize {
        Schedule::new(p, Duration::from_secs(secs), u64::MAX).count()
    }

    #[test]
    fn a_constant_rate_spaces_arrivals_evenly() {
        let p = RateProfile::Constant { rate: 1000.0 };
        let times: Vec<_> = Schedule::new(&p, Duration::from_secs(2), u64::MAX).collect();
        assert_eq!(times.len(), 2000);
        assert_eq!(times[0], Duration::ZERO);
        let gap = times[1001] - times[1000];
        assert!((gap.as_secs_f64() - 0.001).abs() < 1e-9, "{gap:?}");
    }

    #[test]
    fn the_count_bounds_the_schedule() {
        let p = RateProfile::Constant { rate: 1000.0 };
        assert_eq!(Schedule::new(&p, Duration::from_secs(10), 7).count(), 7);
    }

    #[test]
    fn a_ramp_offers_its_integral() {
        // 0 → 2000/s over 10 s: 10 000 arrivals.
        let p = RateProfile::Ramp {
            from: 0.0,
            to: 2000.0,
            over: Duration::from_secs(10),
        };
        let n = count(&p, 10) as f64;
        assert!((n - 10_000.0).abs() < 100.0, "{n}");
        // Then it holds.
        assert_eq!(p.rate_at(Duration::from_secs(30)), 2000.0);
    }

    #[test]
    fn steps_hold_their_last_rate() {
        let p = RateProfile::Steps {
            rates: vec![100.0, 300.0],
            every: Duration::from_secs(1),
        };
        assert_eq!(count(&p, 3), 100 + 300 + 300);
    }

    #[test]
    fn a_day_follows_its_shape_and_its_spike() {
        let mut p: RateProfile = toml::from_str(
            "kind = \"day\"\npeak = 1000\nspike = { at = \"12s\", for = \"1s\", rate = 5000 }",
        )
        .unwrap();
        p.fit(Duration::from_secs(24));
        // One second of the run is one hour of the day.
        assert!((p.rate_at(Duration::from_secs(3)) - 10.0).abs() < 1e-9);
        assert!((p.rate_at(Duration::from_secs(10)) - 1000.0).abs() < 1e-9);
        assert!((p.rate_at(Duration::from_millis(10_500)) - 975.0).abs() < 1e-9);
        assert_eq!(p.rate_at(Duration::from_millis(12_500)), 5000.0);
        // Nights offer little but still something: the schedule moves on.
        let n = count(&p, 24);
        assert!(n > 10_000 && n < 20_000, "{n}");
    }

    #[test]
    fn a_silent_profile_ends() {
        let p = RateProfile::Constant { rate: 0.0 };
        assert_eq!(count(&p, 1), 0);
    }
}
