//! The processor's f32 multiply-add peak, as a table: independent fused multiply-adds on
//! whole vectors (AVX-512 where the processor has it, else AVX2), on one thread and on every
//! core. The ceiling the kernels' GMAC/s are measured against (docs/performance.md).
//!
//! `cargo bench --bench fma_peak`.

use std::time::Instant;

/// Rounds of multiply-adds (one on each accumulator) between looks at the accumulators.
const INNER: usize = 100;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::INNER;

    /// One function per instruction set: `rounds` × `INNER` × `$chains` vector multiply-adds,
    /// returning (lanes per vector, chains). `$chains` independent accumulators cover the
    /// FMA latency on two units and still fit the register file: more would spill, and every
    /// multiply-add would wait on a store.
    macro_rules! fma_loop {
        ($name:ident, $features:literal, $set1:ident, $fmadd:ident, $lanes:literal, $chains:literal) => {
            #[target_feature(enable = $features)]
            pub fn $name(rounds: usize) -> (usize, usize) {
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
                ($lanes, $chains)
            }
        };
    }

    // 24 of AVX-512's 32 registers; 12 of AVX2's 16.
    fma_loop!(avx512, "avx512f", _mm512_set1_ps, _mm512_fmadd_ps, 16, 24);
    fma_loop!(avx2, "avx2,fma", _mm256_set1_ps, _mm256_fmadd_ps, 8, 12);
}

/// Runs `rounds` on each of `threads` threads; returns ((lanes, chains), seconds), or `None` where
/// this processor has neither instruction set.
fn run(threads: usize, rounds: usize) -> Option<((usize, usize), f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = is_x86_feature_detected!("avx512f");
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if !avx512 && !avx2 {
            return None;
        }
        let t = Instant::now();
        let shapes: Vec<(usize, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(move || {
                        // SAFETY: the instruction set was detected above.
                        unsafe {
                            if avx512 {
                                x86::avx512(rounds)
                            } else {
                                x86::avx2(rounds)
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        Some((shapes[0], t.elapsed().as_secs_f64()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, rounds);
        None
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rounds = 200_000;
    println!("| threads | vector lanes | GMAC/s (median of 5) |");
    println!("|---|---|---|");
    for threads in [1, cores] {
        let mut rates = Vec::new();
        let mut lanes = 0;
        for _ in 0..5 {
            let Some(((l, chains), secs)) = run(threads, rounds) else {
                println!("no AVX-512 or AVX2+FMA on this processor");
                return;
            };
            lanes = l;
            let macs = (threads * rounds * INNER * chains * lanes) as f64;
            rates.push(macs / secs / 1e9);
        }
        rates.sort_by(f64::total_cmp);
        println!("| {threads} | {lanes} | {:.1} |", rates[2]);
    }
}
