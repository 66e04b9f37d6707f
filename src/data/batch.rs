//! Turning MNIST bytes into what the engines read.

use super::idx::PIXELS;
use super::mnist::Split;

/// Grey levels as the network reads them: pixels / 255, in [0, 1], as Keras's example.
pub fn scale(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.iter().map(|&p| f32::from(p) / 255.0)
}

/// The images of `split` at `indices`, in that order, scaled to [0, 1] (pixels / 255, as
/// Keras's example), 784 values each.
pub fn pixels(split: &Split, indices: &[usize]) -> Vec<f32> {
    let mut pixels = Vec::with_capacity(indices.len() * PIXELS);
    for &i in indices {
        pixels.extend(scale(split.image(i)));
    }
    pixels
}

/// Pixels already scaled to [0, 1], 784 per image, as a `[n, 1, 28, 28]` tensor (for burn's
/// engine, the `flex` feature).
#[cfg(any(test, feature = "flex"))]
pub fn images_tensor(pixels: Vec<f32>, device: &burn::tensor::Device) -> burn::tensor::Tensor<4> {
    use super::idx::{COLS, ROWS};
    let n = pixels.len() / PIXELS;
    let data = burn::tensor::TensorData::new(pixels, [n, 1, ROWS, COLS]);
    burn::tensor::Tensor::from_data(data, device)
}
