//! The running inputs: started from a plan, swapped on reload, stopped at shutdown.

use crate::input::{self, Input, InputContext, RunningInput};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The running inputs, by key.
pub(super) struct Inputs {
    running: Vec<(String, Box<dyn RunningInput>)>,
    ctx: InputContext,
    /// Inputs stopped for a restart whose end is still to be reported: that end is expected.
    restarted: HashMap<String, usize>,
}

impl Inputs {
    /// Makes the running inputs match a new plan: an input with a key already running is
    /// offered to it first and restarted only if it cannot take it in place; inputs no longer
    /// planned stop; new ones start.
    pub(super) fn apply(&mut self, planned: Vec<Box<dyn Input>>) -> Result<(), input::InputError> {
        let mut old = std::mem::take(&mut self.running);
        for wanted in planned {
            let key = wanted.key();
            let mut wanted = Some(wanted);
            if let Some(pos) = old.iter().position(|(k, _)| *k == key) {
                let (key, mut running) = old.remove(pos);
                wanted = wanted.and_then(|w| running.reconfigure(w));
                if wanted.is_none() {
                    self.running.push((key, running));
                    continue;
                }
                running.stop();
                running.join();
                *self.restarted.entry(key.clone()).or_default() += 1;
            }
            let Some(wanted) = wanted else { continue };
            let running = wanted.start(self.ctx.clone())?;
            self.running.push((key, running));
        }
        for (key, mut running) in old {
            tracing::info!(input = %key, "input no longer in the config: stopping it");
            running.stop();
            running.join();
            *self.restarted.entry(key).or_default() += 1;
        }
        Ok(())
    }

    /// An input ended: true when it was the last one still reading by itself.
    pub(super) fn ended(&mut self, key: &str) -> bool {
        if let Some(n) = self.restarted.get_mut(key).filter(|n| **n > 0) {
            *n -= 1;
            return false;
        }
        self.running.retain(|(k, _)| k != key);
        self.running.is_empty()
    }

    pub(super) fn stop(&mut self) {
        for (_, running) in &mut self.running {
            running.stop();
        }
    }

    pub(super) fn join(self) {
        for (_, running) in self.running {
            running.join();
        }
    }
}

impl Inputs {
    pub(super) fn new(ctx: InputContext) -> Inputs {
        Inputs {
            running: Vec::new(),
            ctx,
            restarted: HashMap::new(),
        }
    }
}

/// The `started` callback of the inputs: once `inputs` of them said they read, the agent is
/// ready (`/ready` answers 200, and systemd hears READY=1 under `Type=notify`).
pub(super) fn readiness(inputs: usize, ready: Arc<AtomicBool>) -> Arc<dyn Fn(&str) + Send + Sync> {
    if inputs == 0 {
        ready.store(true, Ordering::Release);
    }
    let starting = AtomicUsize::new(inputs);
    Arc::new(move |_key: &str| {
        let left = starting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map_or(0, |before| before - 1);
        if left == 0 && !ready.swap(true, Ordering::AcqRel) {
            tracing::info!("every input started");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
    })
}
