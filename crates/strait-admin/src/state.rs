//! Server lifecycle state shared by the main thread, the admin endpoints and stats.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

impl State {
    /// As Envoy spells it in `/ready` and `/server_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Live => "LIVE",
            State::Draining => "DRAINING",
            State::PreInitializing => "PRE_INITIALIZING",
            State::Initializing => "INITIALIZING",
        }
    }
}

#[derive(Debug)]
pub struct ServerState {
    state: AtomicU8,
    healthcheck_failed: AtomicBool,
    pub started: Instant,
    /// Notified when `/quitquitquit` asks the server to exit.
    pub quit: Notify,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            state: AtomicU8::new(State::Initializing as u8),
            healthcheck_failed: AtomicBool::new(false),
            started: Instant::now(),
            quit: Notify::new(),
        }
    }
}

impl ServerState {
    /// The state `/ready` and `/server_info` report: `/healthcheck/fail` reads as DRAINING,
    /// as in Envoy.
    pub fn state(&self) -> State {
        if self.healthcheck_failed() {
            return State::Draining;
        }
        self.raw_state()
    }
    pub fn raw_state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Live,
            1 => State::Draining,
            2 => State::PreInitializing,
            _ => State::Initializing,
        }
    }
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
    pub fn healthcheck_failed(&self) -> bool {
        self.healthcheck_failed.load(Ordering::Acquire)
    }
    pub fn set_healthcheck_failed(&self, failed: bool) {
        self.healthcheck_failed.store(failed, Ordering::Release);
    }
}
