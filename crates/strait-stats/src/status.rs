//! Response-code counters created on first use (`<prefix>upstream_rq_2xx`,
//! `<prefix>upstream_rq_503`), as Envoy creates them: a code that never happened has no stat.

use std::sync::OnceLock;

use crate::{Counter, Store};

#[derive(Debug)]
pub struct StatusCounters {
    store: Store,
    /// Ends with `upstream_rq_`.
    prefix: String,
    class: [OnceLock<Counter>; 5],
    code: Box<[OnceLock<Counter>]>,
}

impl StatusCounters {
    /// Counters named `<prefix>upstream_rq_<class>xx` and `<prefix>upstream_rq_<code>`;
    /// `prefix` ends with a dot (or is empty).
    pub fn new(store: &Store, prefix: &str) -> Self {
        StatusCounters {
            store: store.clone(),
            prefix: format!("{prefix}upstream_rq_"),
            class: Default::default(),
            code: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts `status` in its class and code counters (codes outside 100..600 are ignored).
    pub fn record(&self, status: u16) {
        let Some(i) = status.checked_sub(100).map(usize::from) else {
            return;
        };
        let (Some(class), Some(code)) = (self.class.get(i / 100), self.code.get(i)) else {
            return;
        };
        class
            .get_or_init(|| {
                self.store
                    .counter(&format!("{}{}xx", self.prefix, i / 100 + 1))
            })
            .inc();
        code.get_or_init(|| self.store.counter(&format!("{}{status}", self.prefix)))
            .inc();
    }
}
