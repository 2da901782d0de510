//! When to restart: jittered exponential backoff reset after a stable run, and a restart
//! intensity limit that parks a crash-looping worker in `failed` for a cool-down. Pure, so it is
//! tested without processes or clocks.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use crate::defaults;

/// Restart timing.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub backoff_min: Duration,
    /// The delay doubles per consecutive failure up to this.
    pub backoff_max: Duration,
    /// A worker that stayed ready this long resets the backoff.
    pub stable_after: Duration,
    /// More than this many restarts within `window` puts the worker in `failed`.
    pub max_restarts: usize,
    pub window: Duration,
    /// How long `failed` lasts before the supervisor tries again.
    pub cooldown: Duration,
    /// How long `failed` lasts after exit code 78 (configuration error): long, since only the
    /// operator can fix it, but not forever, so a fixed config recovers without a gateway restart.
    pub config_error_cooldown: Duration,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            backoff_min: defaults::BACKOFF_MIN,
            backoff_max: defaults::BACKOFF_MAX,
            stable_after: defaults::STABLE_AFTER,
            max_restarts: defaults::MAX_RESTARTS,
            window: defaults::RESTART_WINDOW,
            cooldown: defaults::COOLDOWN,
            config_error_cooldown: defaults::CONFIG_ERROR_COOLDOWN,
        }
    }
}

impl RestartPolicy {
    /// Delay before restart number `attempt` (0-based count of consecutive failures), with
    /// `jitter` in [0, 1) spreading it by ±20% so restarts of many hosts do not align.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.backoff_min.saturating_mul(1u32 << attempt.min(20));
        let base = base.min(self.backoff_max);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.backoff_max)
    }
}

/// Restart timestamps inside the intensity window.
#[derive(Debug, Default)]
pub(crate) struct Intensity {
    recent: VecDeque<Instant>,
}

impl Intensity {
    /// Records a restart at `now`; true when the window now holds more than the policy allows.
    pub(crate) fn record(&mut self, policy: &RestartPolicy, now: Instant) -> bool {
        self.recent.push_back(now);
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            self.recent.pop_front();
        }
        self.recent.len() > policy.max_restarts
    }

    pub(crate) fn clear(&mut self) {
        self.recent.clear();
    }
}

/// A jitter value in [0, 1) from the OS's random source, so gateways restarted together (one
/// host reboot, a fleet rollout) spread their worker restarts instead of aligning them. Falls
/// back to the middle (no spread) if the random source fails, which changes nothing else.
pub(crate) fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RestartPolicy::default();
        assert_eq!(policy.delay(0, 0.5), Duration::from_millis(100));
        assert_eq!(policy.delay(1, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(4, 0.5), Duration::from_millis(1600));
        assert_eq!(policy.delay(30, 0.5), Duration::from_secs(30));
        assert_eq!(policy.delay(30, 0.99), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy = RestartPolicy::default();
        assert_eq!(policy.delay(2, 0.0), Duration::from_millis(320));
        assert_eq!(policy.delay(2, 1.0), Duration::from_millis(480));
    }

    #[test]
    fn random_jitter_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        // 64 equal draws from 2^32 values would mean the source is not random at all.
        assert!(draws.iter().any(|j| *j != draws[0]), "{draws:?}");
    }

    #[test]
    fn intensity_trips_only_inside_the_window() {
        let policy =
            RestartPolicy { max_restarts: 3, window: Duration::from_secs(10), ..RestartPolicy::default() };
        let start = Instant::now();
        let mut intensity = Intensity::default();
        // Spread out: never trips.
        for i in 0..10 {
            assert!(!intensity.record(&policy, start + Duration::from_secs(11 * i)));
        }
        intensity.clear();
        let t = start + Duration::from_secs(1000);
        assert!(!intensity.record(&policy, t));
        assert!(!intensity.record(&policy, t + Duration::from_secs(1)));
        assert!(!intensity.record(&policy, t + Duration::from_secs(2)));
        assert!(intensity.record(&policy, t + Duration::from_secs(3)));
    }
}
