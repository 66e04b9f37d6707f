//! Engines: what computes the training steps and the forward pass, chosen in the open.
//!
//! Two implementations of [`Trainer`]:
//! - [`cpu::CpuTrainer`] (`--backend cpu`, the default): our own kernels ([`crate::kernels`])
//!   and Adadelta over plain slices;
//! - `autodiff::BurnTrainer` (`--backend flex`, `--backend wgpu`; the `flex` feature, and the
//!   unit tests, which hold our kernels and the reference to it): burn's
//!   modules, autodiff and optimizer, on burn's own CPU backend or a GPU. Every GPU run takes
//!   this path, so `--backend flex` is how it is run and tested on a machine without one.
//!
//! Both keep their state as the same named [`TrainerState`] (parameters and Adadelta's two
//! accumulators), so a checkpoint written by one engine resumes on the other.

#[cfg(any(test, feature = "flex"))]
pub mod autodiff;
pub mod cpu;
#[cfg(test)]
mod held_to_burn;
#[cfg(any(test, feature = "flex"))]
pub mod modules;

use crate::checkpoint::TrainerState;
use crate::error::{Error, Result};
use crate::network::Params;

/// Where and how the network is computed; `--backend` takes it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Our own CPU kernels.
    Cpu,
    /// Our own CPU kernels with conv2's products in bfloat16: evaluation only, on processors
    /// with AVX512_BF16.
    CpuBf16,
    /// burn's `flex` CPU backend, through burn's autodiff.
    Flex,
    /// A GPU through burn's wgpu backend (a build with `--features wgpu`).
    Wgpu,
}

impl Backend {
    /// The name `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::CpuBf16 => "cpu-bf16",
            Backend::Flex => "flex",
            Backend::Wgpu => "wgpu",
        }
    }

    /// Whether this backend can train: all but `cpu-bf16`, which only evaluates.
    pub fn trains(self) -> Result<()> {
        match self {
            Backend::CpuBf16 => Err(Error::Usage(
                "--backend cpu-bf16 only evaluates (eval, predict, serve); train with --backend cpu"
                    .into(),
            )),
            Backend::Cpu | Backend::Flex | Backend::Wgpu => Ok(()),
        }
    }

    /// Whether this build and this machine can compute with this backend: a clear error,
    /// naming the cargo feature, where the build lacks burn's engine or a GPU.
    pub fn available(self) -> Result<()> {
        match self {
            Backend::Cpu | Backend::CpuBf16 => Ok(()),
            #[cfg(any(test, feature = "flex"))]
            Backend::Flex | Backend::Wgpu => self.device().map(drop),
            #[cfg(not(any(test, feature = "flex")))]
            Backend::Flex | Backend::Wgpu => Err(without_burn(self)),
        }
    }

    /// burn's (non-autodiff) device for this backend, or a clear error when this machine
    /// cannot provide it.
    #[cfg(any(test, feature = "flex"))]
    pub fn device(self) -> Result<burn::tensor::Device> {
        match self {
            Backend::Cpu | Backend::CpuBf16 | Backend::Flex => Ok(burn::tensor::Device::flex()),
            Backend::Wgpu => wgpu_device(),
        }
    }
}

/// `--backend flex` or `wgpu` in a build without burn's engine: how to get it.
#[cfg(not(any(test, feature = "flex")))]
fn without_burn(backend: Backend) -> Error {
    let what = match backend {
        Backend::Wgpu => "GPU support",
        _ => "burn's CPU engine",
    };
    Error::Usage(format!(
        "--backend {0}: this build lacks {what}; rebuild with `cargo install mnist-cnn --features {0}`",
        backend.name()
    ))
}

/// The forward pass without dropout: rows of logits ([n × 10]) for images scaled to [0, 1],
/// 784 values each. What validation, `eval` and `predict` read.
pub trait Forward: Send + Sync {
    fn logits(&self, pixels: &[f32]) -> Vec<f32>;
}

/// What one training step measured, before its update (as Keras counts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The batch's mean cross-entropy.
    pub loss: f64,
    /// How many of the batch the network classified right.
    pub correct: usize,
}

/// A network being trained, with its optimizer.
pub trait Trainer: Forward {
    /// One Adadelta step on a batch (`pixels` scaled to [0, 1], 784 per image), with dropout
    /// masks drawn from `dropout_seed`. A non-finite loss leaves the parameters as they were.
    fn step(&mut self, pixels: &[f32], labels: &[u8], dropout_seed: u64, lr: f64) -> StepOutcome;

    /// The parameters and the optimizer's state, to save or to hand to another engine.
    fn state(&self) -> Result<TrainerState>;

    /// Which backend computes the steps.
    fn backend(&self) -> Backend;
}

/// The trainer of `backend`, starting from `state`.
pub fn trainer(backend: Backend, state: TrainerState) -> Result<Box<dyn Trainer>> {
    backend.trains()?;
    Ok(match backend {
        Backend::Cpu => Box::new(cpu::CpuTrainer::new(state)),
        Backend::CpuBf16 => unreachable!("`trains` refused it"),
        #[cfg(any(test, feature = "flex"))]
        Backend::Flex | Backend::Wgpu => Box::new(autodiff::BurnTrainer::new(backend, state)?),
        #[cfg(not(any(test, feature = "flex")))]
        Backend::Flex | Backend::Wgpu => return Err(without_burn(backend)),
    })
}

/// The forward pass of `backend` over trained `params`, for `eval` and `predict`.
pub fn forward(backend: Backend, params: Params) -> Result<Box<dyn Forward>> {
    Ok(match backend {
        Backend::Cpu => Box::new(cpu::CpuForward(params)),
        Backend::CpuBf16 => Box::new(cpu::CpuBf16Forward::new(params).ok_or(Error::NoBf16)?),
        #[cfg(any(test, feature = "flex"))]
        Backend::Flex | Backend::Wgpu => Box::new(autodiff::BurnForward::new(backend, &params)?),
        #[cfg(not(any(test, feature = "flex")))]
        Backend::Flex | Backend::Wgpu => return Err(without_burn(backend)),
    })
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<burn::tensor::Device> {
    use burn::tensor::{Device, DeviceType};
    // Enumerating opens the adapters; an empty list means no usable GPU driver.
    Device::enumerate(DeviceType::Wgpu)
        .into_iter()
        .next()
        .ok_or(Error::NoGpu)
}

/// Mesa's Vulkan drivers probe for a Wayland display when wgpu opens them and, where
/// `XDG_RUNTIME_DIR` is unset or not absolute (cron, CI, `sudo`), print `error: XDG_RUNTIME_DIR
/// is invalid or not set in the environment.`, which reads like one of our own errors. Pointing
/// it at the temporary directory (no display socket there) keeps the probe quiet and changes
/// nothing else.
///
/// # Safety
/// It sets an environment variable: no other thread may exist, as one could be reading the
/// environment meanwhile (call it first thing in `main`).
#[cfg(feature = "wgpu")]
pub unsafe fn quiet_mesa_display_probe() {
    let set = std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|dir| std::path::Path::new(&dir).is_absolute());
    if !set {
        // SAFETY: the caller guarantees that the process has one thread.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

#[cfg(all(any(test, feature = "flex"), not(feature = "wgpu")))]
fn wgpu_device() -> Result<burn::tensor::Device> {
    Err(Error::Usage(
        "--backend wgpu: this build has no GPU support; rebuild with `cargo install mnist-cnn --features wgpu`"
            .into(),
    ))
}
