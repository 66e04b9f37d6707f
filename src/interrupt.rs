//! Ctrl-C: the first press asks training to stop after the current batch; a second press
//! exits at once (the last checkpoint is already complete on disk either way).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::EXIT_INTERRUPTED;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Routes SIGINT (and SIGTERM) to the flag [`flag`] returns. Call once, when there is
/// something to stop gracefully; before that the default handler ends the process.
pub fn install() {
    let result = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!("\nstopping after this batch (press Ctrl-C again to quit now)");
    });
    if let Err(e) = result {
        // Training still works; it just cannot stop gracefully.
        crate::notes::note(format_args!("cannot catch Ctrl-C ({e})"));
    }
}

/// Set once Ctrl-C has been pressed.
pub fn flag() -> &'static AtomicBool {
    &REQUESTED
}
