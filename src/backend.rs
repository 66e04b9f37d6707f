//! Choosing where tensors live: burn's flex CPU backend, or a GPU through wgpu.

use burn::tensor::Device;

use crate::cli::BackendChoice;
use crate::error::{Error, Result};

/// The (non-autodiff) device for `choice`, or a clear error when this build or this machine
/// cannot provide it.
pub fn device(choice: BackendChoice) -> Result<Device> {
    match choice {
        BackendChoice::Cpu => Ok(Device::flex()),
        BackendChoice::Wgpu => wgpu_device(),
    }
}

/// Whether `device` is the CPU, where our own kernels (`crate::kernels`) replace burn's
/// generic ops for training and evaluation.
pub fn runs_our_kernels(device: &Device) -> bool {
    *device == Device::flex()
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    use burn::tensor::DeviceType;
    // Enumerating opens the adapters; an empty list means no usable GPU driver.
    Device::enumerate(DeviceType::Wgpu)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Backend(
                "--backend wgpu: no GPU adapter found (is a Vulkan, Metal or DX12 driver installed?)"
                    .into(),
            )
        })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device> {
    Err(Error::Usage(
        "--backend wgpu: this build has no GPU support; rebuild with `cargo install mnist-cnn --features wgpu`"
            .into(),
    ))
}
