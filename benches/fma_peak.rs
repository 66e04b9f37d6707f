//! The processor's f32 multiply-add ceilings, as a table, in each vector instruction set it has
//! (AVX-512, AVX2 + FMA), on one thread and on every core:
//! - independent fused multiply-adds into registers: the peak the kernels' GMAC/s are measured
//!   against (docs/performance.md);
//! - multiply-adds each loaded from and stored back to L1 (`y = a·x + y` over a 16 KB buffer, a
//!   vector at a time), as a walk that adds into memory rather than into registers runs: where
//!   the processor stores fewer vectors a cycle than it multiplies, the lower ceiling.
//!
//! `cargo bench --bench fma_peak`.

use std::time::Instant;

use mnist_cnn::kernels::isa::{self, Level};

/// Rounds of multiply-adds (one on each accumulator) between looks at the accumulators.
const INNER: usize = 100;

/// Floats the stored multiply-adds add into: 16 KB, inside every L1 data cache.
const STORED: usize = 4096;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::INNER;

    /// One function per instruction set: `rounds` × `INNER` × `$chains` vector multiply-adds.
    /// `$chains` independent accumulators cover the FMA latency on two units and still fit the
    /// register file: more would spill, and every multiply-add would wait on a store.
    macro_rules! fma_loop {
        ($name:ident, $features:literal, $set1:ident, $fmadd:ident, $chains:literal) => {
            #[target_feature(enable = $features)]
            pub fn $name(rounds: usize) -> usize {
                let mut acc = [$set1(1.0); $chains];
                let (x, y) = ($set1(0.999_999), $set1(1e-7));
                for _ in 0..rounds {
                    for _ in 0..INNER {
                        for a in acc.iter_mut() {
                            *a = $fmadd(*a, x, y);
                        }
                    }
                    // Keeps the compiler from folding the loop away.
                    acc = std::hint::black_box(acc);
                }
                rounds * INNER * $chains
            }
        };
    }

    /// One function per instruction set: `rounds` passes of `y = a·x + y` over `y`, each
    /// vector loaded, multiplied-added and stored back. Returns the vector multiply-adds.
    macro_rules! stored_loop {
        ($name:ident, $features:literal, $set1:ident, $fmadd:ident, $load:ident, $store:ident, $lanes:literal) => {
            #[target_feature(enable = $features)]
            pub fn $name(rounds: usize, y: &mut [f32]) -> usize {
                let (a, x) = ($set1(1e-7), $set1(0.5));
                for _ in 0..rounds {
                    for v in y.chunks_exact_mut($lanes) {
                        // SAFETY: a whole vector of `y`.
                        unsafe { $store(v.as_mut_ptr(), $fmadd(a, x, $load(v.as_ptr()))) };
                    }
                    std::hint::black_box(&mut *y);
                }
                rounds * (y.len() / $lanes)
            }
        };
    }

    // 24 of AVX-512's 32 registers; 12 of AVX2's 16.
    fma_loop!(avx512, "avx512f", _mm512_set1_ps, _mm512_fmadd_ps, 24);
    fma_loop!(avx2, "avx2,fma", _mm256_set1_ps, _mm256_fmadd_ps, 12);
    #[rustfmt::skip]
    stored_loop!(avx512_stored, "avx512f", _mm512_set1_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_storeu_ps, 16);
    #[rustfmt::skip]
    stored_loop!(avx2_stored, "avx2,fma", _mm256_set1_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps, 8);
}

/// A vector instruction set the runs use.
#[derive(Clone, Copy)]
enum Set {
    Avx512,
    Avx2,
}

impl Set {
    /// The ones this processor has, widest first, as the kernels see them.
    fn available() -> Vec<Set> {
        match isa::level() {
            Level::Avx512 => vec![Set::Avx512, Set::Avx2],
            Level::Avx2 => vec![Set::Avx2],
            Level::Scalar => Vec::new(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Set::Avx512 => Level::Avx512.name(),
            Set::Avx2 => Level::Avx2.name(),
        }
    }

    fn lanes(self) -> usize {
        match self {
            Set::Avx512 => isa::AVX512_F32S,
            Set::Avx2 => isa::AVX2_F32S,
        }
    }
}

/// What a run measures.
#[derive(Clone, Copy)]
enum Kind {
    /// Independent multiply-adds into registers.
    Registers,
    /// Multiply-adds loaded from and stored back to L1.
    Stored,
}

/// Runs `rounds` of `kind` in `set` on this thread; returns the vector multiply-adds done.
fn work(kind: Kind, set: Set, rounds: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut y = vec![0.0f32; STORED];
        // SAFETY: `Set::available` found the instruction set on this processor.
        unsafe {
            match (kind, set) {
                (Kind::Registers, Set::Avx512) => x86::avx512(rounds),
                (Kind::Registers, Set::Avx2) => x86::avx2(rounds),
                (Kind::Stored, Set::Avx512) => x86::avx512_stored(rounds, &mut y),
                (Kind::Stored, Set::Avx2) => x86::avx2_stored(rounds, &mut y),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kind, set, rounds);
        unreachable!("no instruction set is available off x86-64")
    }
}

/// GMAC/s of `kind` in `set` on `threads` threads at once.
fn rate(kind: Kind, set: Set, threads: usize, rounds: usize) -> f64 {
    let t = Instant::now();
    let vectors: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || work(kind, set, rounds)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (vectors * set.lanes()) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sets = Set::available();
    if sets.is_empty() {
        println!("no AVX-512 or AVX2 + FMA on this processor");
        return;
    }
    println!("| multiply-adds | instruction set | threads | GMAC/s (median of 5) |");
    println!("|---|---|---|---|");
    // Rounds that take 0.1-0.3 s on each thread: a stored pass is STORED floats' vectors.
    let kinds = [
        (Kind::Registers, "independent, in registers", 200_000),
        (Kind::Stored, "stored back to L1", 1_000_000),
    ];
    for (kind, name, rounds) in kinds {
        for &set in &sets {
            for threads in [1, cores] {
                let mut rates: Vec<f64> =
                    (0..5).map(|_| rate(kind, set, threads, rounds)).collect();
                rates.sort_by(f64::total_cmp);
                println!("| {name} | {} | {threads} | {:.1} |", set.name(), rates[2]);
            }
        }
    }
}
