//! What this processor can run: the one place the kernels ask. Every kernel that picks an
//! instruction set asks here, never `is_x86_feature_detected!` or CPUID of its own, so that a
//! test can pin one set on a thread (`on_every_instruction_set`) and every kernel on that
//! thread, the transposes and bf16 paths included, runs that set's code.
//!
//! Three levels of vector code ([`Level`]): plain x86-64 (SSE2; `Scalar` elsewhere), AVX2 +
//! FMA, AVX-512. Two extras that only the opt-in bf16 evaluation uses: AVX512_BF16, and AMX's
//! bf16 tiles. Which of two equal-bytes paths is *faster* is not answered here but by
//! measurement ([`super::choice`]).

#[cfg(test)]
use std::cell::Cell;

/// Defines a function whose body is compiled once per instruction set pulp dispatches to
/// (AVX-512, AVX2 + FMA, plain x86-64) and run in the best this processor has, so that one
/// portable binary still vectorises our loops. The body is inlined into pulp's
/// `#[target_feature]` functions; closures in it are compiled on their own, for plain x86-64,
/// so loops belong in the body or in `#[inline(always)]` helpers such as [`axpy`].
macro_rules! simd_fn {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            struct Op<A>(A);
            impl pulp::WithSimd for Op<($($ty,)*)> {
                type Output = $crate::isa::simd_fn!(@output $($ret)?);
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
                    let ($($arg,)*) = self.0;
                    $body
                }
            }
            $crate::isa::arch().dispatch(Op(($($arg,)*)))
        }
    };
    (@output) => { () };
    (@output $ret:ty) => { $ret };
}
pub(crate) use simd_fn;

/// f32 values in an AVX2 register.
pub const AVX2_F32S: usize = 8;
/// f32 values in an AVX-512 register.
pub const AVX512_F32S: usize = 16;

/// The vector instruction sets our loops are compiled for, in order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    /// Plain x86-64 (SSE2), or no vectors we compile for on other architectures.
    Scalar,
    /// AVX2 + FMA (pulp's x86-v3).
    Avx2,
    /// AVX-512 F/BW/CD/DQ/VL (pulp's x86-v4).
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "AVX2 + FMA",
            Level::Avx512 => "AVX-512",
        }
    }
}

/// The instruction set [`simd_fn!`] bodies run in: the best this processor has, unless a
/// test has pinned one on this thread.
pub(crate) fn arch() -> pulp::Arch {
    #[cfg(test)]
    if let Some(arch) = PINNED.get() {
        return arch;
    }
    pulp::Arch::new()
}

/// The [`Level`] of `arch()`: what a kernel with hand-written intrinsics may use here.
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        match arch() {
            pulp::Arch::V4(_) => Level::Avx512,
            pulp::Arch::V3(_) => Level::Avx2,
            _ => Level::Scalar,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Level::Scalar
    }
}

/// Whether a [`simd_fn!`] body instantiated for `S` holds 16 floats a register (AVX-512)
/// rather than 8 (AVX2) or fewer: the bodies pick their register blocking by this.
#[inline(always)]
pub(crate) fn wide<S: pulp::Simd>() -> bool {
    S::F32_LANES >= 16
}

/// Whether a [`simd_fn!`] body instantiated for `S` has 256-bit registers or wider (AVX2 or
/// AVX-512), where a few hand-written intrinsics paths exist.
#[inline(always)]
pub(crate) fn vectors<S: pulp::Simd>() -> bool {
    S::F32_LANES >= 8
}

/// AVX-512 with AVX512_BF16, which both bf16 paths (and the rounding to bf16 they share)
/// run on.
pub fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level() == Level::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the processor has AMX-BF16 and the operating system lets this process use it
/// (with AVX512_BF16, which every AMX processor has and the bf16 paths round with). Linux
/// gives a process AMX's 8 KB of tile state only once it asks
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which this does, once.
pub fn amx_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // CPUID traps to the hypervisor in a virtual machine, and the grant is a system call:
        // both asked once. Leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let amx = *AMX.get_or_init(|| {
            let leaf = std::arch::x86_64::__cpuid_count(7, 0);
            leaf.edx >> 22 & 1 == 1 && leaf.edx >> 24 & 1 == 1 && granted()
        });
        amx && avx512_bf16()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn granted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with two integer arguments; it changes only which register
    // state this process may use.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

/// Elsewhere we do not know how to ask, so the tiles stay unused.
#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn granted() -> bool {
    false
}

/// The `N` values of `s` from `at` on, as an array: fixed sizes let the kernels keep rows of
/// weights and sums in registers.
#[inline(always)]
pub(crate) fn array<const N: usize>(s: &[f32], at: usize) -> &[f32; N] {
    s[at..at + N].try_into().expect("N values")
}

/// [`array`], to write.
#[inline(always)]
pub(crate) fn array_mut<const N: usize>(s: &mut [f32], at: usize) -> &mut [f32; N] {
    (&mut s[at..at + N]).try_into().expect("N values")
}

/// `y += a x`, fused multiply-adds where the processor has them.
#[inline(always)]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = a.mul_add(*x, *y);
    }
}

#[cfg(test)]
thread_local! {
    /// Lets a test run every instruction set's version of the loops on one machine.
    static PINNED: Cell<Option<pulp::Arch>> = const { Cell::new(None) };
}

/// `work` run once per instruction set this processor can run [`simd_fn!`] bodies in
/// (scalar first), each on a two-thread pool whose threads are pinned to it, with the set's
/// name. Says on stderr which were compared.
#[cfg(test)]
pub(crate) fn on_every_instruction_set<R: Send>(
    work: impl Fn() -> R + Sync,
) -> Vec<(&'static str, R)> {
    #[allow(unused_mut)]
    let mut arches = vec![(Level::Scalar, pulp::Arch::Scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = pulp::x86::V3::try_new().map(pulp::Arch::V3);
        arches.extend(v3.map(|a| (Level::Avx2, a)));
        let v4 = pulp::x86::V4::try_new().map(pulp::Arch::V4);
        arches.extend(v4.map(|a| (Level::Avx512, a)));
    }
    let names: Vec<&str> = arches.iter().map(|(level, _)| level.name()).collect();
    if arches.len() == 1 {
        eprintln!("only the scalar loops run on this processor: no instruction sets compared");
    } else {
        eprintln!("instruction sets compared: {}", names.join(", "));
    }
    arches
        .into_iter()
        .map(|(level, arch)| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .start_handler(move |_| PINNED.set(Some(arch)))
                .build()
                .unwrap();
            (level.name(), pool.install(&work))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pinned thread reports the pinned level to every kernel that asks, so the
    /// intrinsics paths (transposes, bf16) follow the pin too.
    #[test]
    fn the_pin_sets_the_level_every_kernel_sees() {
        let levels = on_every_instruction_set(level);
        assert_eq!(levels[0], ("scalar", Level::Scalar));
        for (name, level) in &levels {
            assert_eq!(*name, level.name());
        }
        let mut seen: Vec<Level> = levels.iter().map(|(_, l)| *l).collect();
        seen.dedup();
        assert_eq!(
            seen.len(),
            levels.len(),
            "each set once, in order: {levels:?}"
        );
        assert!(seen.is_sorted());
        // Below AVX-512 neither bf16 path is offered.
        let bf16 = on_every_instruction_set(|| (level(), avx512_bf16(), amx_bf16()));
        for (_, (level, avx512_bf16, amx)) in bf16 {
            if level < Level::Avx512 {
                assert!(!avx512_bf16 && !amx);
            }
            assert!(avx512_bf16 || !amx);
        }
    }
}
