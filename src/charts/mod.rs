//! The charts mnist-cnn draws: [`curves`] (training's loss and accuracy) and [`errors`] (the
//! misread test digits), on a small raster [`Canvas`]: filled rectangles, lines, MNIST digits
//! and 8x8 bitmap text, saved as PNG atomically.

pub mod curves;
pub mod errors;

use std::path::Path;

use font8x8::{BASIC_FONTS, UnicodeFonts};
use image::{ImageEncoder, Rgb, RgbImage};

use crate::error::{Error, Result};

/// Height and width of one character at scale 1.
pub const GLYPH: u32 = 8;

/// `→`, which font8x8 lacks; rows top to bottom, bit 0 the leftmost pixel as in font8x8.
const ARROW: [u8; 8] = [0x00, 0x10, 0x20, 0x7F, 0x20, 0x10, 0x00, 0x00];

fn glyph(c: char) -> [u8; 8] {
    match c {
        '→' => ARROW,
        _ => BASIC_FONTS
            .get(c)
            .or(BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]),
    }
}

/// An RGB picture with drawing operations that clip at its edges.
pub struct Canvas {
    pub image: RgbImage,
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Rgb<u8>) -> Canvas {
        Canvas {
            image: RgbImage::from_pixel(width, height, background),
        }
    }

    fn put(&mut self, x: i64, y: i64, colour: Rgb<u8>) {
        if x >= 0 && y >= 0 && (x as u32) < self.image.width() && (y as u32) < self.image.height() {
            self.image.put_pixel(x as u32, y as u32, colour);
        }
    }

    pub fn rect(&mut self, x: i64, y: i64, width: u32, height: u32, colour: Rgb<u8>) {
        for dy in 0..i64::from(height) {
            for dx in 0..i64::from(width) {
                self.put(x + dx, y + dy, colour);
            }
        }
    }

    /// A line `thickness` pixels wide (a square pen moved along the line).
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), thickness: u32, colour: Rgb<u8>) {
        let steps = (to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil() as i64;
        let half = i64::from(thickness / 2);
        for i in 0..=steps.max(1) {
            let t = i as f64 / steps.max(1) as f64;
            let x = (from.0 + t * (to.0 - from.0)).round() as i64;
            let y = (from.1 + t * (to.1 - from.1)).round() as i64;
            self.rect(x - half, y - half, thickness, thickness, colour);
        }
    }

    /// `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
        let size = i64::from(scale);
        for (i, c) in text.chars().enumerate() {
            let left = x + i as i64 * i64::from(GLYPH) * size;
            for (row, bits) in glyph(c).into_iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let (px, py) = (left + col * size, y + row as i64 * size);
                        self.rect(px, py, scale, scale, colour);
                    }
                }
            }
        }
    }

    /// A grey-level image (row-major, `width` wide), each pixel drawn `scale` times larger.
    pub fn grey(&mut self, x: i64, y: i64, pixels: &[u8], width: usize, scale: u32) {
        let size = i64::from(scale);
        for (i, &v) in pixels.iter().enumerate() {
            let (col, row) = ((i % width) as i64, (i / width) as i64);
            self.rect(x + col * size, y + row * size, scale, scale, Rgb([v, v, v]));
        }
    }

    /// Writes the picture as PNG, replacing `path` only once it is complete.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        save_png(path, &self.image, image::ExtendedColorType::Rgb8)
    }
}

/// Pixel width of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Encodes any 8-bit image buffer as PNG and writes it atomically.
pub fn save_png<P, C>(
    path: &Path,
    image: &image::ImageBuffer<P, C>,
    colour: image::ExtendedColorType,
) -> Result<()>
where
    P: image::Pixel<Subpixel = u8>,
    C: std::ops::Deref<Target = [u8]>,
{
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(image.as_raw(), image.width(), image.height(), colour)
        .map_err(|e| Error::io("cannot encode", path, std::io::Error::other(e)))?;
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
    const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

    fn lit(canvas: &Canvas) -> Vec<(u32, u32)> {
        canvas
            .image
            .enumerate_pixels()
            .filter(|(_, _, p)| **p == WHITE)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    #[test]
    fn text_follows_the_font_at_every_scale() {
        for scale in [1, 3] {
            let mut canvas = Canvas::new(40, 40, BLACK);
            canvas.text(2, 3, "1", scale, WHITE);
            let want: Vec<(u32, u32)> = (0..8u32 * scale)
                .flat_map(|y| (0..8u32 * scale).map(move |x| (x, y)))
                .filter(|&(x, y)| glyph('1')[(y / scale) as usize] & (1 << (x / scale)) != 0)
                .map(|(x, y)| (x + 2, y + 3))
                .collect();
            let mut got = lit(&canvas);
            got.sort_by_key(|&(x, y)| (y, x));
            assert!(!want.is_empty());
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_arrow_points_right() {
        let mut canvas = Canvas::new(8, 8, BLACK);
        canvas.text(0, 0, "→", 1, WHITE);
        // The shaft spans row 3; the head's tips sit left of its point at column 6.
        assert!((0..7).all(|x| canvas.image.get_pixel(x, 3) == &WHITE));
        assert_eq!(canvas.image.get_pixel(5, 2), &WHITE);
        assert_eq!(canvas.image.get_pixel(5, 4), &WHITE);
        assert_eq!(canvas.image.get_pixel(7, 3), &BLACK);
        assert_eq!(text_width("7→2", 2), 48);
    }

    #[test]
    fn lines_reach_both_ends_and_drawing_clips() {
        let mut canvas = Canvas::new(10, 10, BLACK);
        canvas.line((1.0, 1.0), (8.0, 5.0), 1, WHITE);
        assert_eq!(canvas.image.get_pixel(1, 1), &WHITE);
        assert_eq!(canvas.image.get_pixel(8, 5), &WHITE);
        // Every column between the ends is touched once: a connected line.
        let columns: std::collections::BTreeSet<u32> = lit(&canvas).iter().map(|p| p.0).collect();
        assert_eq!(columns, (1..=8).collect());
        canvas.rect(-5, -5, 100, 2, WHITE); // off the edges: no panic
        canvas.text(8, 8, "88", 4, WHITE);
        assert_eq!(canvas.image.get_pixel(0, 0), &BLACK);
    }

    #[test]
    fn grey_images_scale_up() {
        let mut canvas = Canvas::new(4, 2, BLACK);
        canvas.grey(0, 0, &[10, 200], 2, 2);
        assert_eq!(canvas.image.get_pixel(1, 1), &Rgb([10, 10, 10]));
        assert_eq!(canvas.image.get_pixel(2, 0), &Rgb([200, 200, 200]));
        assert_eq!(canvas.image.get_pixel(3, 1), &Rgb([200, 200, 200]));
    }
}
