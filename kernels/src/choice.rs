//! Which of two paths runs where both give what the caller needs and only their speed
//! differs: decided by timing both, a few milliseconds the first time the question comes up
//! in a process, never by the processor's name. An environment variable settles a question
//! without timing (tests, benchmarks, a user who knows better), and [`pin`] does the same
//! from code (the bench's A/B).
//!
//! The questions:
//! - [`Question::Dense1`]: the first dense layer's forward product in evaluation, as a walk
//!   over the nonzero features (`sparse::forward`) or a GEMM. Same bytes either way
//!   (`the_products_are_the_gemms_bytes`). In training, with dropout leaving ~30% of the
//!   features, the walk runs on every x86-64 processor measured (`sparse::pays`).
//! - [`Question::Bf16`]: the bf16 evaluation's products on AMX's tiles or with AVX512_BF16,
//!   where a processor has both. Both round the same bf16 inputs; their f32 sums may differ in
//!   the last bit (`amx_products_match_avx512s`), as `cpu-bf16` is not the f32 path's bytes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use super::winograd::bf16::Unit;
use super::{FEATURES, forward, matmul, reuse, spare, sparse};
use crate::network::{HIDDEN, PIXELS, Params};
use crate::rng::splitmix64;

/// A question this module answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Question {
    /// The first dense layer's forward product in evaluation. Environment:
    /// `MNIST_CNN_DENSE1=walk|gemm`.
    Dense1,
    /// The unit the bf16 evaluation multiplies on. Environment: `MNIST_CNN_BF16=amx|avx512`.
    Bf16,
}

/// A path one of the questions can pick.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    /// A walk over the nonzero features.
    Walk,
    /// A GEMM over every feature.
    Gemm,
    /// AMX's bf16 tiles.
    Amx,
    /// AVX-512's `vdpbf16ps`.
    Avx512Bf16,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Walk => "walk",
            Path::Gemm => "gemm",
            Path::Amx => "amx",
            Path::Avx512Bf16 => "avx512",
        }
    }
}

/// How a question was settled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum By {
    /// Both paths timed; the faster picked.
    Timing,
    /// The environment variable named.
    Environment,
    /// [`pin`], from code.
    Pinned,
    /// This processor runs only one of the paths.
    OnlyOne,
}

/// A settled question: the path, how, and, when timed, each path's best time in ms.
#[derive(Clone, Debug)]
pub struct Decision {
    pub question: Question,
    pub picked: Path,
    pub by: By,
    pub timings: Vec<(Path, f64)>,
}

impl Question {
    fn paths(self) -> [Path; 2] {
        match self {
            Question::Dense1 => [Path::Walk, Path::Gemm],
            Question::Bf16 => [Path::Amx, Path::Avx512Bf16],
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Question::Dense1 => "MNIST_CNN_DENSE1",
            Question::Bf16 => "MNIST_CNN_BF16",
        }
    }

    /// The paths this processor runs, best guess first.
    pub fn runnable(self) -> Vec<Path> {
        match self {
            Question::Dense1 if sparse::pays() => vec![Path::Walk, Path::Gemm],
            Question::Dense1 => vec![Path::Gemm],
            Question::Bf16 => [(Path::Amx, Unit::Amx), (Path::Avx512Bf16, Unit::Avx512)]
                .into_iter()
                .filter(|(_, unit)| unit.available())
                .map(|(path, _)| path)
                .collect(),
        }
    }

    fn pins(self) -> &'static AtomicU8 {
        static DENSE1: AtomicU8 = AtomicU8::new(0);
        static BF16: AtomicU8 = AtomicU8::new(0);
        match self {
            Question::Dense1 => &DENSE1,
            Question::Bf16 => &BF16,
        }
    }
}

/// Settles `question` as `path` from now on, or (`None`) goes back to the decision: for
/// benchmarks that time both paths in one process. A path this processor cannot run is ignored.
pub fn pin(question: Question, path: Option<Path>) {
    let index = path
        .filter(|p| question.runnable().contains(p))
        .and_then(|p| question.paths().iter().position(|&q| q == p))
        .map_or(0, |i| i as u8 + 1);
    question.pins().store(index, Ordering::Relaxed);
}

/// The path [`pin`] set, if any (always one this processor runs).
fn pinned(question: Question) -> Option<Path> {
    let index = usize::from(question.pins().load(Ordering::Relaxed));
    question.paths().get(index.wrapping_sub(1)).copied()
}

/// The decision this process settled on for `question`, the first call timing its paths.
fn settled(question: Question) -> &'static Option<Decision> {
    static DENSE1: OnceLock<Option<Decision>> = OnceLock::new();
    static BF16: OnceLock<Option<Decision>> = OnceLock::new();
    let once = match question {
        Question::Dense1 => &DENSE1,
        Question::Bf16 => &BF16,
    };
    once.get_or_init(|| settle(question, &question.runnable()))
}

/// How `question` is settled in this process (timing both paths the first time), or `None`
/// where this processor runs neither path (bf16 without AVX512_BF16).
pub fn decision(question: Question) -> Option<Decision> {
    match pinned(question) {
        Some(path) => Some(Decision {
            question,
            picked: path,
            by: By::Pinned,
            timings: Vec::new(),
        }),
        None => settled(question).clone(),
    }
}

/// The path `question` takes: [`decision`]'s pick, without copying it (asked every pass).
pub(super) fn path(question: Question) -> Option<Path> {
    pinned(question).or_else(|| settled(question).as_ref().map(|d| d.picked))
}

fn settle(question: Question, runnable: &[Path]) -> Option<Decision> {
    let decided = |picked, by, timings| Decision {
        question,
        picked,
        by,
        timings,
    };
    match runnable {
        [] => return None,
        [only] => return Some(decided(*only, By::OnlyOne, Vec::new())),
        _ => {}
    }
    let named = std::env::var(question.variable()).ok();
    if let Some(path) = runnable.iter().find(|p| named.as_deref() == Some(p.name())) {
        return Some(decided(*path, By::Environment, Vec::new()));
    }
    let timings = match question {
        Question::Dense1 => dense1_timings(runnable),
        Question::Bf16 => time(runnable, bf16_trial()),
    };
    let fastest = timings
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|t| t.0);
    Some(decided(fastest.unwrap_or(runnable[0]), By::Timing, timings))
}

/// Each path's best of three runs of `trial` in ms, the paths taking turns after a first
/// run each (which faults in their buffers and warms their code).
fn time(paths: &[Path], mut trial: impl FnMut(Path)) -> Vec<(Path, f64)> {
    paths.iter().for_each(|&p| trial(p));
    let mut best = vec![f64::INFINITY; paths.len()];
    for _ in 0..3 {
        for (best, &path) in best.iter_mut().zip(paths) {
            let start = Instant::now();
            trial(path);
            *best = best.min(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    paths.iter().copied().zip(best).collect()
}

/// Images in a timing trial: a batch of evaluation's size order, ~2 ms a path on two cores.
const TRIAL_IMAGES: usize = 128;

/// Fills `values` with numbers in [0, 1) from a hash of their index, zero with probability
/// `zeros` (as ReLU and the max-pool leave about half the features at zero).
fn synthetic(values: &mut [f32], zeros: f64) {
    for (i, v) in values.iter_mut().enumerate() {
        let z = splitmix64(i as u64);
        let unit = (z >> 40) as f64 / (1u64 << 24) as f64;
        *v = if unit < zeros {
            0.0
        } else {
            (z & 0xFFFF) as f32 / 65536.0
        };
    }
}

/// The first dense layer's product timed on each path, over a batch with evaluation's share
/// of zero features. Its buffers come from the pass's spares and go back there: after a
/// training step they are the same sizes, and the trial then adds nothing to peak memory.
fn dense1_timings(paths: &[Path]) -> Vec<(Path, f64)> {
    let mut features = reuse(TRIAL_IMAGES * FEATURES);
    synthetic(&mut features, 0.55);
    let mut weights = reuse(FEATURES * HIDDEN);
    synthetic(&mut weights, 0.0);
    let mut out = reuse(TRIAL_IMAGES * HIDDEN);
    out.fill(0.0);
    let threads = rayon::current_num_threads();
    let timings = time(paths, |path| match path {
        Path::Walk => sparse::forward(&features, &weights, &mut out),
        _ => {
            let dims = (TRIAL_IMAGES, FEATURES, HIDDEN);
            matmul(&mut out, &features, &weights, dims, false, threads);
        }
    });
    [features, weights, out].into_iter().for_each(spare);
    timings
}

/// The bf16 evaluation's whole forward pass on each unit, on fresh parameters.
fn bf16_trial() -> impl FnMut(Path) {
    let params = Params::glorot(1);
    let mut pixels = vec![0.0; TRIAL_IMAGES / 2 * PIXELS];
    synthetic(&mut pixels, 0.8);
    let weights = |unit| forward::Bf16Weights::on(&params, unit);
    let (amx, avx512) = (weights(Unit::Amx), weights(Unit::Avx512));
    move |path| {
        let weights = if path == Path::Amx { &amx } else { &avx512 };
        if let Some(weights) = weights {
            std::hint::black_box(forward::Net::bf16(&params, weights).logits(&pixels));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;

    /// A decision picks a path this processor runs, the faster of the timed ones, and pins
    /// and the environment's names override it.
    #[test]
    fn decisions_pick_the_faster_runnable_path() {
        let dense1 = decision(Question::Dense1).expect("every processor runs a GEMM");
        assert!(Question::Dense1.runnable().contains(&dense1.picked));
        if dense1.by == By::Timing {
            let best = dense1
                .timings
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            assert_eq!(best.0, dense1.picked, "{dense1:?}");
            assert!(
                dense1
                    .timings
                    .iter()
                    .all(|(_, ms)| ms.is_finite() && *ms > 0.0)
            );
        }
        for path in [Path::Gemm, Path::Walk] {
            pin(Question::Dense1, Some(path));
            let pinned = decision(Question::Dense1).unwrap();
            if Question::Dense1.runnable().contains(&path) {
                assert_eq!((pinned.picked, pinned.by), (path, By::Pinned));
            }
        }
        pin(Question::Dense1, None);
        assert_eq!(decision(Question::Dense1).unwrap().picked, dense1.picked);
        match decision(Question::Bf16) {
            None => assert!(!isa::avx512_bf16()),
            Some(bf16) => assert!(Question::Bf16.runnable().contains(&bf16.picked)),
        }
    }

    /// The trials' data looks like what evaluation multiplies: about 55% zero features.
    #[test]
    fn synthetic_features_are_about_half_zero() {
        let mut v = vec![1.0; 100_000];
        synthetic(&mut v, 0.55);
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        assert!((54_000..56_000).contains(&zeros), "{zeros}");
        assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
