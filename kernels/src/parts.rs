//! Where a training step's time goes: wall time of its parts, kept only once [`enable`] has
//! been called (the `train_step` bench does, with `BENCH_PARTS=1`); otherwise each lap is one
//! relaxed load. The parts are timed on the thread that runs the step, around whole parallel
//! loops, so they add up to the step.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LAPS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

/// Starts keeping the parts' times.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The parts timed since the last call, in order: (name, ms).
pub fn take() -> Vec<(&'static str, f64)> {
    std::mem::take(&mut *LAPS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A stopwatch over consecutive parts.
pub struct Laps(Option<Instant>);

impl Laps {
    pub fn start() -> Laps {
        Laps(ENABLED.load(Ordering::Relaxed).then(Instant::now))
    }

    /// Records the time since the start or the last lap as `part`.
    pub fn lap(&mut self, part: &'static str) {
        if let Some(start) = &mut self.0 {
            let now = Instant::now();
            let ms = (now - *start).as_secs_f64() * 1e3;
            LAPS.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((part, ms));
            *start = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Laps are kept in order once enabled, and taken once.
    #[test]
    fn laps_are_kept_in_order_and_taken_once() {
        enable();
        take();
        let mut laps = Laps::start();
        laps.lap("first");
        laps.lap("second");
        // Other tests' training steps, on other threads, may lap in between.
        let ours = |laps: Vec<(&'static str, f64)>| -> Vec<&str> {
            let names = laps.into_iter().map(|(name, _)| name);
            names.filter(|&n| n == "first" || n == "second").collect()
        };
        assert_eq!(ours(take()), ["first", "second"]);
        assert!(ours(take()).is_empty());
    }
}
