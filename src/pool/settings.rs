//! Pool settings: defaults, validation, environment variables, and their live (atomic) form.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Connections overall. LiteLLM's own async default (aiohttp, `AIOHTTP_CONNECTOR_LIMIT`) is 1000;
/// matching it means replacing that transport never adds a bottleneck.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Connections per endpoint. LLM calls are long (seconds, minutes when streaming) and go to few
/// hosts, so concurrency to one host is high: LiteLLM's `AIOHTTP_CONNECTOR_LIMIT_PER_HOST` is 500.
pub const DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT: usize = 500;
/// LiteLLM's `AIOHTTP_KEEPALIVE_TIMEOUT`: shorter than common server keep-alives (nginx 75 s,
/// cloud load balancers 60 s), so we close first and rarely race a server's close.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Long enough that handshakes are rare, short enough to follow DNS and load-balancer changes
/// (LiteLLM caches DNS for 300 s).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(300);
/// How often the background reaper closes expired idle connections.
pub const DEFAULT_REAPER_INTERVAL: Duration = Duration::from_secs(5);

/// The settings a pool is created with; every field can be changed later with `configure`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    pub max_connections: usize,
    pub max_connections_per_endpoint: usize,
    /// `None`: idle connections never expire.
    pub idle_timeout: Option<Duration>,
    /// `None`: connections have no maximum age.
    pub max_lifetime: Option<Duration>,
    /// `None`: no background reaper; call `cleanup` yourself.
    pub reaper_interval: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            reaper_interval: Some(DEFAULT_REAPER_INTERVAL),
        }
    }
}

/// A setting with a value it cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for SettingsError {}

fn invalid(setting: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError { setting: setting.to_owned(), problem: problem.into() }
}

/// Longest duration accepted (a year): beyond it `Instant` arithmetic is not meaningful.
const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds as a float (Python's convention) to a duration; `None` stays `None`.
pub fn seconds(setting: &str, value: Option<f64>) -> Result<Option<Duration>, SettingsError> {
    match value {
        None => Ok(None),
        Some(s) if s.is_nan() || s <= 0.0 => {
            Err(invalid(setting, "must be a positive number of seconds, or None for no limit"))
        }
        Some(s) if s > MAX_DURATION_SECS => Err(invalid(setting, "must be at most a year")),
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.max_connections_per_endpoint == 0 {
            return Err(invalid("max_connections_per_endpoint", "must be at least 1"));
        }
        Ok(())
    }

    /// The default pool's settings: defaults overridden by `FAST_LITELLM_*` variables.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        if let Some(v) = var("FAST_LITELLM_MAX_CONNECTIONS") {
            s.max_connections = env_count("FAST_LITELLM_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = var("FAST_LITELLM_MAX_CONNECTIONS_PER_ENDPOINT") {
            s.max_connections_per_endpoint =
                env_count("FAST_LITELLM_MAX_CONNECTIONS_PER_ENDPOINT", &v)?;
        }
        if let Some(v) = var("FAST_LITELLM_IDLE_TIMEOUT") {
            s.idle_timeout = env_seconds("FAST_LITELLM_IDLE_TIMEOUT", &v)?;
        }
        if let Some(v) = var("FAST_LITELLM_MAX_LIFETIME") {
            s.max_lifetime = env_seconds("FAST_LITELLM_MAX_LIFETIME", &v)?;
        }
        if let Some(v) = var("FAST_LITELLM_REAPER_INTERVAL") {
            s.reaper_interval = env_seconds("FAST_LITELLM_REAPER_INTERVAL", &v)?;
        }
        s.validate()?;
        Ok(s)
    }
}

fn env_count(name: &str, value: &str) -> Result<usize, SettingsError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(name, "must be a whole number of at least 1")),
    }
}

fn env_seconds(name: &str, value: &str) -> Result<Option<Duration>, SettingsError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let secs = v.parse::<f64>().map_err(|_| {
        invalid(name, "must be a number of seconds, or 'none' for no limit")
    })?;
    seconds(name, Some(secs))
}

const NO_DURATION: u64 = u64::MAX;

fn encode(d: Option<Duration>) -> u64 {
    d.map_or(NO_DURATION, |d| d.as_nanos().min(u128::from(NO_DURATION - 1)) as u64)
}

fn decode(n: u64) -> Option<Duration> {
    (n != NO_DURATION).then(|| Duration::from_nanos(n))
}

/// Settings read on every checkout without a lock, and changed in place by `configure`.
#[derive(Debug)]
pub(crate) struct LiveSettings {
    max_connections: AtomicUsize,
    max_connections_per_endpoint: AtomicUsize,
    idle_timeout: AtomicU64,
    max_lifetime: AtomicU64,
    reaper_interval: AtomicU64,
}

impl LiveSettings {
    pub fn new(s: &Settings) -> LiveSettings {
        let live = LiveSettings {
            max_connections: AtomicUsize::new(0),
            max_connections_per_endpoint: AtomicUsize::new(0),
            idle_timeout: AtomicU64::new(0),
            max_lifetime: AtomicU64::new(0),
            reaper_interval: AtomicU64::new(0),
        };
        live.store(s);
        live
    }

    pub fn store(&self, s: &Settings) {
        self.max_connections.store(s.max_connections, Relaxed);
        self.max_connections_per_endpoint.store(s.max_connections_per_endpoint, Relaxed);
        self.idle_timeout.store(encode(s.idle_timeout), Relaxed);
        self.max_lifetime.store(encode(s.max_lifetime), Relaxed);
        self.reaper_interval.store(encode(s.reaper_interval), Relaxed);
    }

    pub fn load(&self) -> Settings {
        Settings {
            max_connections: self.max_connections(),
            max_connections_per_endpoint: self.max_connections_per_endpoint(),
            idle_timeout: self.idle_timeout(),
            max_lifetime: self.max_lifetime(),
            reaper_interval: decode(self.reaper_interval.load(Relaxed)),
        }
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Relaxed)
    }
    pub fn max_connections_per_endpoint(&self) -> usize {
        self.max_connections_per_endpoint.load(Relaxed)
    }
    /// `u64::MAX` (never reached) when there is no limit.
    pub fn idle_timeout_nanos(&self) -> u64 {
        self.idle_timeout.load(Relaxed)
    }
    pub fn max_lifetime_nanos(&self) -> u64 {
        self.max_lifetime.load(Relaxed)
    }
    pub fn idle_timeout(&self) -> Option<Duration> {
        decode(self.idle_timeout.load(Relaxed))
    }
    pub fn max_lifetime(&self) -> Option<Duration> {
        decode(self.max_lifetime.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = Settings::from_env(env(&[
            ("FAST_LITELLM_MAX_CONNECTIONS", "64"),
            ("FAST_LITELLM_MAX_CONNECTIONS_PER_ENDPOINT", " 8 "),
            ("FAST_LITELLM_IDLE_TIMEOUT", "2.5"),
            ("FAST_LITELLM_MAX_LIFETIME", "none"),
            ("FAST_LITELLM_REAPER_INTERVAL", "off"),
        ]))
        .unwrap();
        assert_eq!(s.max_connections, 64);
        assert_eq!(s.max_connections_per_endpoint, 8);
        assert_eq!(s.idle_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(s.max_lifetime, None);
        assert_eq!(s.reaper_interval, None);
        assert_eq!(Settings::from_env(env(&[])).unwrap(), Settings::default());
    }

    #[test]
    fn bad_environment_names_the_variable() {
        for (k, v) in [
            ("FAST_LITELLM_MAX_CONNECTIONS", "0"),
            ("FAST_LITELLM_MAX_CONNECTIONS", "lots"),
            ("FAST_LITELLM_IDLE_TIMEOUT", "-1"),
            ("FAST_LITELLM_MAX_LIFETIME", "soon"),
        ] {
            let err = Settings::from_env(env(&[(k, v)])).unwrap_err();
            assert_eq!(err.setting, k);
        }
    }

    #[test]
    fn live_settings_round_trip() {
        let s = Settings { idle_timeout: None, ..Settings::default() };
        assert_eq!(LiveSettings::new(&s).load(), s);
    }
}
