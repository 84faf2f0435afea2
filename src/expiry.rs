//! The expiry rules, in one place, so that every backend (and the Python layer, through
//! `Store.expired` and `StoreConfig.touch_interval`) decides from the same inputs the same
//! way. All times are epoch seconds on the *injected* clock: the `now` the caller passes to
//! every operation (tests fake it), never the system clock.
//!
//! * A session is expired when it has been idle for longer than the idle timeout, or has
//!   lived longer than the absolute lifetime. A clock that stepped backwards gives a negative
//!   age, which never expires anything.
//! * Its last access is the later of its last save and its last touch (`last_access`).
//! * A read-only request refreshes the last access (a "touch") at most once per touch
//!   interval: a tenth of the idle timeout, at most a minute, so the idle timeout is honoured
//!   to within 10% while read-only traffic costs at most one write per interval.
//! * Redis keys live for the idle timeout, capped by what remains of the absolute lifetime
//!   (`ttl_ms`), so Redis drops a session no later than the check on read would.

/// The longest touch interval, in seconds.
pub const MAX_TOUCH_INTERVAL: f64 = 60.0;

/// The idle timeout and absolute lifetime of a store, in seconds (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Expiry {
    /// Sliding idle timeout: the session expires this long after its last access.
    pub idle: Option<f64>,
    /// Absolute lifetime from creation, whatever the activity.
    pub absolute: Option<f64>,
}

/// The last access of a session: the later of its last save and its last touch.
pub fn last_access(saved_at: f64, touched: Option<f64>) -> f64 {
    touched.map_or(saved_at, |t| saved_at.max(t))
}

/// The time a save records as the session's last access: `now`, but never earlier than the
/// last access it replaces. A clock that steps backwards (NTP, a VM restored from a
/// snapshot, a test clock) would otherwise make a session saved during the step look idle
/// for the length of the step once the clock returns, and expire it.
pub fn save_time(previous: Option<f64>, now: f64) -> f64 {
    previous.map_or(now, |p| p.max(now))
}

impl Expiry {
    /// Whether a session created at `created` and last used at `last_access` is past its
    /// idle timeout or absolute lifetime at `now` (unknown times never expire anything).
    pub fn is_expired(&self, now: f64, created: Option<f64>, last_access: Option<f64>) -> bool {
        let past = |limit: Option<f64>, since: Option<f64>| matches!((limit, since), (Some(limit), Some(at)) if now - at > limit);
        past(self.idle, last_access) || past(self.absolute, created)
    }

    /// How often a read-only request refreshes the last access; `None` without an idle
    /// timeout (nothing to refresh, a touch never writes).
    pub fn touch_interval(&self) -> Option<f64> {
        self.idle
            .filter(|idle| *idle > 0.0)
            .map(|idle| (idle / 10.0).min(MAX_TOUCH_INTERVAL))
    }

    /// Whether a session last accessed at `last_access` should be touched at `now`.
    pub fn touch_due(&self, last_access: Option<f64>, now: f64) -> bool {
        match (self.touch_interval(), last_access) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(interval), Some(last)) => now - last >= interval,
        }
    }

    /// Time to live in milliseconds of a session created at `created` and accessed at `now`
    /// (0: no expiry). Never 0 when a limit exists: at least 1 ms.
    pub fn ttl_ms(&self, created: f64, now: f64) -> u64 {
        let rest = self.absolute.map(|a| a - (now - created));
        let secs = match (self.idle, rest) {
            (Some(i), Some(r)) => i.min(r),
            (Some(i), None) => i,
            (None, Some(r)) => r,
            (None, None) => return 0,
        };
        (secs.max(0.001) * 1000.0).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Expiry = Expiry {
        idle: Some(3600.0),
        absolute: None,
    };

    #[test]
    fn saves_never_move_the_last_access_backwards() {
        assert_eq!(save_time(None, 5.0), 5.0);
        assert_eq!(save_time(Some(3.0), 5.0), 5.0);
        assert_eq!(save_time(Some(7205.0), 5.0), 7205.0);
    }

    #[test]
    fn idle_and_absolute_limits() {
        assert!(!IDLE.is_expired(4600.0, Some(0.0), Some(1000.0)));
        assert!(IDLE.is_expired(4600.1, Some(0.0), Some(1000.0)));
        let both = Expiry {
            idle: Some(3600.0),
            absolute: Some(7200.0),
        };
        assert!(!both.is_expired(7200.0, Some(0.0), Some(7000.0)));
        assert!(both.is_expired(7200.5, Some(0.0), Some(7200.0)));
        let none = Expiry::default();
        assert!(!none.is_expired(1e12, Some(0.0), Some(0.0)));
    }

    #[test]
    fn unknown_times_and_backward_clocks_never_expire() {
        let both = Expiry {
            idle: Some(10.0),
            absolute: Some(10.0),
        };
        assert!(!both.is_expired(1e9, None, None));
        assert!(!both.is_expired(0.0, Some(1e9), Some(1e9)));
        assert!(both.is_expired(1e9, Some(0.0), None));
    }

    #[test]
    fn last_access_is_the_later_of_save_and_touch() {
        assert_eq!(last_access(10.0, None), 10.0);
        assert_eq!(last_access(10.0, Some(20.0)), 20.0);
        assert_eq!(last_access(30.0, Some(20.0)), 30.0);
    }

    #[test]
    fn touch_interval_is_a_tenth_of_the_idle_timeout_at_most_a_minute() {
        assert_eq!(IDLE.touch_interval(), Some(60.0));
        let short = Expiry {
            idle: Some(100.0),
            absolute: None,
        };
        assert_eq!(short.touch_interval(), Some(10.0));
        assert_eq!(Expiry::default().touch_interval(), None);
        let absolute_only = Expiry {
            idle: None,
            absolute: Some(100.0),
        };
        assert_eq!(absolute_only.touch_interval(), None);
        let zero = Expiry {
            idle: Some(0.0),
            absolute: None,
        };
        assert_eq!(zero.touch_interval(), None);
    }

    #[test]
    fn touch_is_due_once_per_interval() {
        assert!(!IDLE.touch_due(Some(100.0), 159.9));
        assert!(IDLE.touch_due(Some(100.0), 160.0));
        assert!(IDLE.touch_due(None, 0.0));
        assert!(!Expiry::default().touch_due(None, 1e9));
        assert!(!Expiry::default().touch_due(Some(0.0), 1e9));
    }

    #[test]
    fn ttl_is_the_idle_timeout_capped_by_the_remaining_lifetime() {
        assert_eq!(Expiry::default().ttl_ms(0.0, 0.0), 0);
        assert_eq!(IDLE.ttl_ms(0.0, 5.0), 3_600_000);
        let both = Expiry {
            idle: Some(3600.0),
            absolute: Some(5000.0),
        };
        assert_eq!(both.ttl_ms(0.0, 0.0), 3_600_000);
        assert_eq!(both.ttl_ms(0.0, 4000.0), 1_000_000);
        // Past the lifetime: 1 ms, never 0 (which would mean "no expiry").
        assert_eq!(both.ttl_ms(0.0, 9000.0), 1);
        let absolute_only = Expiry {
            idle: None,
            absolute: Some(10.0),
        };
        assert_eq!(absolute_only.ttl_ms(0.0, 2.5), 7500);
    }
}
