//! Runs a command and reports its peak resident memory, as the kernel counted it for that
//! process (its VmHWM, handed to `wait4` as `ru_maxrss`), like `/usr/bin/time -f %M`:
//!
//! ```sh
//! cargo run --release --example peak_rss -- peak.txt target/release/mnist-cnn eval model.bin
//! ```
//!
//! writes the peak in KiB to `peak.txt` and exits with the command's own status. The command
//! must be started from a process as small as this one: a process inherits, at `exec`, the
//! high-water mark of the one that started it, so a command started straight from a test
//! harness or a Python script that holds a gigabyte reports at least that gigabyte.

#[cfg(target_os = "linux")]
fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(report), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: peak_rss REPORT_FILE COMMAND [ARGS...]");
        std::process::exit(2);
    };
    let child = match std::process::Command::new(&program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("peak_rss: cannot run {}: {e}", program.to_string_lossy());
            std::process::exit(127);
        }
    };
    let mut status = 0;
    // SAFETY: `rusage` is plain data that zeroes make valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else reaps, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if pid != child.id() as i32 {
        eprintln!("peak_rss: wait4: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if let Err(e) = std::fs::write(&report, format!("{}\n", usage.ru_maxrss)) {
        eprintln!("peak_rss: cannot write {}: {e}", report.to_string_lossy());
        std::process::exit(1);
    }
    std::process::exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    });
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("peak_rss reads Linux's accounting only");
    std::process::exit(2);
}
