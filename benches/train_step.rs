//! Speed and memory of the hot paths, as a table: ms per training step, implied seconds per
//! epoch, evaluation images per second, and peak RSS.
//!
//! `cargo bench --bench train_step` (data from `MNIST_DATA_DIR`, else the committed subset;
//! `BENCH_STEPS` steps measured after 3 warm-up steps, default 20; `BENCH_BACKEND` picks the
//! engine as `--backend` does, default `cpu`; `BENCH_PARTS=1` adds a table of the step's parts
//! on our kernels, timed around each phase on the thread that runs the step). Medians, since
//! shared machines are noisy; compare only numbers taken together. On `cpu`, a last table
//! shows each speed choice the kernels settle by timing, with that timing, beside this
//! bench's own evaluation rate with each path pinned. `BENCH_FORMAT=json` prints
//! one JSON line instead, which `bench/compare.py` reads to set mnist-cnn beside Keras and
//! PyTorch.

use std::time::Instant;

use mnist_cnn::checkpoint::TrainerState;
use mnist_cnn::data::Split;
use mnist_cnn::data::batch;
use mnist_cnn::data::{DataSource, Fetcher, Part};
use mnist_cnn::engine::{self, Backend, Forward};
use mnist_cnn::evaluate::evaluate;
use mnist_cnn::kernels::choice::{self, Question};
use mnist_cnn::network::Params;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Evaluation images per second over `test`, median of 3 passes.
fn eval_rate_of(forward: &dyn Forward, test: &Split) -> f64 {
    let rates = (0..3).map(|_| {
        let t = Instant::now();
        evaluate(forward, test);
        test.len() as f64 / t.elapsed().as_secs_f64()
    });
    median(rates.collect())
}

/// The speed choices our kernels settle by timing (`kernels::choice`), each beside this
/// bench's own A/B of its paths: evaluation's rate with each path pinned in turn.
fn print_choices(params: &Params, test: &Split) {
    println!();
    println!("| choice | picked | by | trial ms per path | eval images/s per path (pinned) |");
    println!("|---|---|---|---|---|");
    for (question, backend) in [
        (Question::Dense1, Backend::Cpu),
        (Question::Bf16, Backend::CpuBf16),
    ] {
        let Some(decision) = choice::decision(question) else {
            println!("| {question:?} | n/a (this processor runs neither path) | | | |");
            continue;
        };
        let trials: Vec<String> = decision
            .timings
            .iter()
            .map(|(path, ms)| format!("{} {ms:.2}", path.name()))
            .collect();
        let rates: Vec<String> = question
            .runnable()
            .into_iter()
            .map(|path| {
                choice::pin(question, Some(path));
                let forward = engine::forward(backend, params.clone()).expect("a runnable path");
                let rate = eval_rate_of(forward.as_ref(), test);
                format!("{} {rate:.0}", path.name())
            })
            .collect();
        choice::pin(question, None);
        println!(
            "| {question:?} | {} | {:?} | {} | {} |",
            decision.picked.name(),
            decision.by,
            trials.join(", "),
            rates.join(", ")
        );
    }
}

/// Peak resident set size of this process, from the kernel's own counter.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    #[cfg(feature = "wgpu")]
    // SAFETY: the first thing the process does, while it has one thread.
    unsafe {
        engine::quiet_mesa_display_probe()
    };
    let dir = std::env::var("MNIST_DATA_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-subset").into());
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let source = DataSource {
        dir: dir.into(),
        fetcher: Fetcher {
            mirrors: Vec::new(),
            ..Fetcher::default()
        },
    };
    let train = source.load(Part::Train, None).expect("training data");
    let test = source.load(Part::Test, None).expect("test data");

    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("flex") => Backend::Flex,
        Ok("wgpu") => Backend::Wgpu,
        _ => Backend::Cpu,
    };
    let mut trainer =
        engine::trainer(backend, TrainerState::fresh(1)).expect("the backend is available");
    let batch = 128;
    // Where each step's time goes, by part, when asked (our kernels only).
    let parts = std::env::var("BENCH_PARTS").as_deref() == Ok("1");
    if parts {
        mnist_cnn::kernels::parts::enable();
    }
    let mut part_ms: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut step_ms = Vec::new();
    for step in 0..steps + 3 {
        let start = (step * batch) % (train.len() - batch);
        let indices: Vec<usize> = (start..start + batch).collect();
        let labels: Vec<u8> = indices.iter().map(|&i| train.labels[i]).collect();
        let t = Instant::now();
        // The step `train` runs: the batch scaled, then the engine's step and Adadelta.
        let pixels = batch::pixels(&train, &indices);
        trainer.step(&pixels, &labels, step as u64, 1.0);
        let laps = mnist_cnn::kernels::parts::take();
        if step >= 3 {
            step_ms.push(t.elapsed().as_secs_f64() * 1e3);
            for (name, ms) in laps {
                match part_ms.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, all)) => all.push(ms),
                    None => part_ms.push((name, vec![ms])),
                }
            }
        }
    }
    let mut eval_rate = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        evaluate(trainer.as_ref() as &dyn Forward, &test);
        eval_rate.push(test.len() as f64 / t.elapsed().as_secs_f64());
    }
    // Read before the bf16 evaluation below, whose copy of the state is not the f32 path's.
    let rss = peak_rss_mib();
    // The opt-in bf16 evaluation of the same parameters, where the processor has it.
    let bf16 = (backend == Backend::Cpu)
        .then(|| trainer.state().ok())
        .flatten()
        .and_then(|state| engine::forward(Backend::CpuBf16, state.params).ok());
    let bf16_rate = bf16.map(|forward| eval_rate_of(forward.as_ref(), &test));
    let ms = median(step_ms);
    let rate = median(eval_rate);
    let epoch = ms / 1e3 * (60000f64 / batch as f64).ceil() + 10000.0 / rate;
    if std::env::var("BENCH_FORMAT").as_deref() == Ok("json") {
        // One line for bench/compare.py, in the peers' keys.
        println!(
            "{}",
            serde_json::json!({
                "system": format!("mnist-cnn {} (--backend {})", env!("CARGO_PKG_VERSION"), backend.name()),
                "ms_per_step": ms,
                "seconds_per_epoch": epoch,
                "eval_images_per_s": rate,
                "bf16_eval_images_per_s": bf16_rate,
                "peak_rss_mib": rss,
            })
        );
        return;
    }
    println!("| measure (--backend {}) | value |", backend.name());
    println!("|---|---|");
    println!("| ms per training step (batch {batch}, median of {steps}) | {ms:.0} |");
    println!("| seconds per epoch, implied (469 steps + 10,000 validation images) | {epoch:.0} |");
    println!(
        "| eval images/s (median of 3 passes over {}) | {rate:.0} |",
        test.len()
    );
    match bf16_rate {
        Some(rate) => println!("| eval images/s, `--backend cpu-bf16` (median of 3) | {rate:.0} |"),
        None => println!("| eval images/s, `--backend cpu-bf16` | n/a (no AVX512_BF16) |"),
    }
    match rss {
        Some(mib) => println!("| peak RSS (MiB) | {mib:.0} |"),
        None => println!("| peak RSS | n/a |"),
    }
    if parts {
        println!();
        println!("| part of a step (BENCH_PARTS=1) | ms, median of {steps} |");
        println!("|---|---|");
        let mut total = 0.0;
        for (name, all) in part_ms {
            let ms = median(all);
            total += ms;
            println!("| {name} | {ms:.2} |");
        }
        println!("| the parts' medians added | {total:.2} |");
    }
    if let Some(state) = (backend == Backend::Cpu)
        .then(|| trainer.state().ok())
        .flatten()
    {
        print_choices(&state.params, &test);
    }
}
