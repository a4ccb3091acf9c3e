//! Named pools: one pool per name per process, re-created empty in a forked child.

use crate::pool::{Pool, Settings, SettingsError};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::borrow::Cow;
use crate::http::HttpConn;
use std::collections::HashMap;

pub const DEFAULT_POOL: &str = "default";

/// Only touched while holding the GIL, so the thread that forks (holding the GIL) never finds
/// it locked by another thread.
static POOLS: Lazy<Mutex<HashMap<String, Pool<HttpConn>>>> = Lazy::new(Default::default);

/// Settings of the default pool: defaults, then `FAST_LITELLM_*` environment variables.
pub fn default_settings() -> Result<Settings, SettingsError> {
    Settings::from_env(|k| std::env::var(k).ok())
}

/// A pool name and the pool it named when this was made.
#[derive(Clone)]
pub struct NamedPool {
    pub name: String,
    pool: Pool<HttpConn>,
    /// The process generation it was made in: after a fork, the handle looks its pool up again.
    generation: usize,
}

impl NamedPool {
    /// The pool of that name, created with `make_settings()` if it does not exist yet.
    /// Also says whether it was created.
    pub fn open(
        name: &str,
        make_settings: impl FnOnce() -> Result<Settings, SettingsError>,
    ) -> Result<(NamedPool, bool), SettingsError> {
        let generation = crate::http::fork_generation();
        let mut pools = POOLS.lock();
        let (pool, created) = match pools.get(name) {
            Some(pool) => (pool.clone(), false),
            None => {
                let pool = Pool::new(make_settings()?)?;
                pools.insert(name.to_owned(), pool.clone());
                (pool, true)
            }
        };
        Ok((NamedPool { name: name.to_owned(), pool, generation }, created))
    }

    pub fn open_default() -> Result<NamedPool, SettingsError> {
        NamedPool::open(DEFAULT_POOL, default_settings).map(|(h, _)| h)
    }

    /// The pool; in a forked child, the child's own pool of the same name.
    pub fn pool(&self) -> Cow<'_, Pool<HttpConn>> {
        if self.generation == crate::http::fork_generation() {
            return Cow::Borrowed(&self.pool);
        }
        let (fresh, _) = NamedPool::open(&self.name, || Ok(self.pool.settings()))
            .expect("settings that made a pool make one again");
        Cow::Owned(fresh.pool)
    }
}

/// The names of the pools made so far in this process, in name order.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = POOLS.lock().keys().cloned().collect();
    names.sort();
    names
}

/// In a child after `os.fork()`: every pool starts empty, with fresh locks and a new reaper.
/// The parent's pools are leaked on purpose: another thread of the parent may have held one of
/// their locks at the moment of the fork, so here they can be neither used nor safely dropped.
pub fn reset_after_fork() {
    let mut pools = POOLS.lock();
    for pool in pools.values_mut() {
        if let Ok(fresh) = Pool::new(pool.settings()) {
            std::mem::forget(std::mem::replace(pool, fresh));
        }
    }
    // Also starts the child's generation, so handles from before the fork look up again.
    crate::http::reset_after_fork();
}
