//! Reading people's own digits, for `predict` and `serve` alike: a picture decoded, prepared
//! as MNIST's digits were, and classified.
//!
//! MNIST digits are white ink on black, the ink's bounding box scaled to fit 20x20 with
//! anti-aliasing, placed in a 28x28 field so that the centre of mass sits in the middle. A
//! photo of a digit on paper must go through the same steps, or the model sees something it
//! was never trained on.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Luma};

use crate::data::idx::Kind;
use crate::engine::Forward;
use crate::escape::escaped;
use crate::evaluate::EVAL_BATCH;
use crate::metrics;
use crate::network::{NUM_CLASSES, PIXELS, SIDE};

/// Why a picture gives no digit. Each renders as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// Not a file this program can read (a PNG, JPEG, PGM/PBM or IDX image file).
    #[error("{0}")]
    Format(String),
    #[error("the image is empty")]
    Empty,
    #[error("no digit found: the image is blank or has no contrast")]
    Blank,
    #[error("no digit found: the ink vanished when scaled")]
    Vanished,
    #[error("an IDX file of {0} images: choose one with --index N")]
    NoIndex(usize),
    #[error("--index {index} is past its {count} images")]
    IndexPast { index: usize, count: usize },
    /// The picture declares more pixels than [`MAX_PIXELS`]: refused before decoding.
    #[error(
        "the picture is {width}x{height} ({:.1} megapixels), over the limit of {} megapixels",
        *width as f64 * *height as f64 / 1e6,
        MAX_PIXELS / 1_000_000
    )]
    TooLarge { width: u32, height: u32 },
    #[error("{0}")]
    Io(String),
}

impl Unreadable {
    /// The picture itself was read, but shows no digit (rather than not being a picture).
    pub fn is_blank(&self) -> bool {
        matches!(
            self,
            Unreadable::Empty | Unreadable::Blank | Unreadable::Vanished
        )
    }
}

/// Pictures that declare more pixels than this are refused from their header, before any pixel
/// is decoded: 50 megapixels is above any phone camera's photo, and a few kilobytes of PNG can
/// declare gigabytes of zeros.
pub const MAX_PIXELS: u64 = 50_000_000;
/// What reading a picture's header may allocate. The header is all that is decoded before the
/// pixels, and its only variable parts are a PNG's ancillary chunks: an ICC profile (which the
/// decoder inflates, and a 1 MB chunk can inflate to a gigabyte), text and EXIF. Past this,
/// a profile is dropped (it is never used) and text is an error.
pub const HEADER_ALLOC: u64 = 8 << 20;
/// A picture file `predict` reads at most: a 50-megapixel picture in any of the formats, or an
/// IDX file of MNIST's 60,000 training images (47 MB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The longer side of the ink's box, as in MNIST.
const BOX: u32 = 20;
/// Larger pictures are shrunk to this before anything else.
const WORKING_SIZE: u32 = 512;

/// Turns a grey image of one digit (any size, any polarity) into MNIST's 28x28 layout:
/// 784 bytes, white (255) ink on black (0).
pub fn prepare(grey: &GrayImage) -> Result<Vec<u8>, Unreadable> {
    if grey.width() == 0 || grey.height() == 0 {
        return Err(Unreadable::Empty);
    }
    let grey = shrink(grey);
    let (w, h) = grey.dimensions();
    let ink = ink_levels(&grey)?;
    let cropped = crop_to_ink(&ink, w, h);
    let boxed = fit_box(&cropped);
    centre_by_mass(&boxed)
}

/// The result is 20 px across: a photo's millions of pixels add only time.
fn shrink(grey: &GrayImage) -> GrayImage {
    let longest = grey.width().max(grey.height());
    if longest <= WORKING_SIZE {
        return grey.clone();
    }
    let scale = WORKING_SIZE as f32 / longest as f32;
    let (w, h) = (grey.width() as f32 * scale, grey.height() as f32 * scale);
    let (w, h) = ((w as u32).max(1), (h as u32).max(1));
    image::imageops::resize(grey, w, h, FilterType::Triangle)
}

/// Ink per pixel in [0, 1] (1 = full ink), light or dark page alike, with the paper's own
/// uneven brightness taken out and faint speckle dropped; an error when there is no ink.
fn ink_levels(grey: &GrayImage) -> Result<Vec<f32>, Unreadable> {
    let (w, h) = grey.dimensions();
    let values: Vec<f32> = grey.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();

    // Polarity from the border, which is paper far more often than ink.
    let mut border: Vec<f32> = (0..w)
        .flat_map(|x| [values[x as usize], values[((h - 1) * w + x) as usize]])
        .chain((0..h).flat_map(|y| [values[(y * w) as usize], values[(y * w + w - 1) as usize]]))
        .collect();
    border.sort_by(f32::total_cmp);
    let light_page = border[border.len() / 2] > 0.5;
    let ink: Vec<f32> = if light_page {
        values.iter().map(|v| 1.0 - v).collect()
    } else {
        values
    };

    // Uneven light: the paper's own level, found by a minimum filter wider than a pen
    // stroke and then smoothed, is taken out, so a shadow is not ink. On a lit page light
    // multiplies, so ink is measured relative to the local paper brightness.
    let radius = (w.max(h) / 16).max(1) as usize;
    let paper = min_filter(&ink, w as usize, h as usize, radius);
    let paper = box_blur(&paper, w as usize, h as usize, radius);
    let mut ink: Vec<f32> = ink
        .iter()
        .zip(&paper)
        .map(|(v, floor)| {
            let above = (v - floor).max(0.0);
            if light_page {
                above / (1.0 - floor).max(0.05)
            } else {
                above
            }
        })
        .collect();
    let peak = ink.iter().copied().fold(0.0f32, f32::max);
    if peak < 0.1 {
        return Err(Unreadable::Blank);
    }
    for v in &mut ink {
        // Keep anti-aliased edges, drop the faint speckle of paper and sensor noise.
        *v = if *v < 0.2 * peak {
            0.0
        } else {
            (*v / peak).min(1.0)
        };
    }
    Ok(ink)
}

/// The ink's bounding box, as a grey image.
fn crop_to_ink(ink: &[f32], w: u32, h: u32) -> GrayImage {
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if ink[(y * w + x) as usize] > 0.0 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    GrayImage::from_fn(bw, bh, |x, y| {
        Luma([(ink[((y + y0) * w + x + x0) as usize] * 255.0).round() as u8])
    })
}

/// The longer side to 20 px, keeping the aspect ratio; the filter widens when shrinking, so
/// this is anti-aliased.
fn fit_box(cropped: &GrayImage) -> GrayImage {
    let (bw, bh) = cropped.dimensions();
    let scale = BOX as f32 / bw.max(bh) as f32;
    let (nw, nh) = (
        ((bw as f32 * scale).round() as u32).clamp(1, BOX),
        ((bh as f32 * scale).round() as u32).clamp(1, BOX),
    );
    let mut small = image::imageops::resize(cropped, nw, nh, FilterType::Triangle);
    // Thin strokes come out faint from a large shrink; MNIST's strokes reach full white.
    let top = small.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    if top > 0 && top < 255 {
        for p in small.pixels_mut() {
            p.0[0] = (u32::from(p.0[0]) * 255 / u32::from(top)) as u8;
        }
    }
    small
}

/// The boxed digit placed in 28x28 with its centre of mass in the middle.
fn centre_by_mass(small: &GrayImage) -> Result<Vec<u8>, Unreadable> {
    let (mut mass, mut cx, mut cy) = (0f32, 0f32, 0f32);
    for (x, y, p) in small.enumerate_pixels() {
        let m = f32::from(p.0[0]);
        mass += m;
        cx += m * x as f32;
        cy += m * y as f32;
    }
    if mass == 0.0 {
        return Err(Unreadable::Vanished);
    }
    // MNIST's own centres of mass sit at about (14, 14), not the geometric 13.5.
    let centre = (SIDE / 2) as f32;
    let dx = (centre - cx / mass).round() as i64;
    let dy = (centre - cy / mass).round() as i64;
    let mut out = vec![0u8; PIXELS];
    for (x, y, p) in small.enumerate_pixels() {
        let (tx, ty) = (x as i64 + dx, y as i64 + dy);
        if (0..SIDE as i64).contains(&tx) && (0..SIDE as i64).contains(&ty) {
            out[ty as usize * SIDE + tx as usize] = p.0[0];
        }
    }
    Ok(out)
}

/// Minimum over a (2r+1)² window, clipped at the edges (rows, then columns).
fn min_filter(values: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut rows = vec![0f32; w * h];
    for y in 0..h {
        let row = &values[y * w..(y + 1) * w];
        for x in 0..w {
            let window = &row[x.saturating_sub(r)..(x + r + 1).min(w)];
            rows[y * w + x] = window.iter().copied().fold(f32::INFINITY, f32::min);
        }
    }
    let mut out = vec![0f32; w * h];
    for x in 0..w {
        for y in 0..h {
            out[y * w + x] = (y.saturating_sub(r)..(y + r + 1).min(h))
                .map(|yy| rows[yy * w + x])
                .fold(f32::INFINITY, f32::min);
        }
    }
    out
}

/// Mean over a (2r+1)² window, clipped at the edges, via a summed-area table.
fn box_blur(values: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut sums = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for x in 0..w {
            row += f64::from(values[y * w + x]);
            sums[(y + 1) * (w + 1) + x + 1] = sums[y * (w + 1) + x + 1] + row;
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let (ya, yb) = (y.saturating_sub(r), (y + r + 1).min(h));
        for x in 0..w {
            let (xa, xb) = (x.saturating_sub(r), (x + r + 1).min(w));
            let s = sums[yb * (w + 1) + xb] - sums[ya * (w + 1) + xb] - sums[yb * (w + 1) + xa]
                + sums[ya * (w + 1) + xa];
            out[y * w + x] = (s / ((yb - ya) * (xb - xa)) as f64) as f32;
        }
    }
    out
}

/// How many pixels a picture's header declares, read without decoding one; an error when it
/// is no picture or declares more than [`MAX_PIXELS`]. What it may allocate is
/// [`HEADER_ALLOC`], whatever the header holds.
pub fn declared_pixels(bytes: &[u8]) -> Result<u64, Unreadable> {
    Ok(header(bytes, None)?.0)
}

/// The declared pixel count and the decoded picture's size in bytes, from the header alone,
/// within [`HEADER_ALLOC`].
fn header(bytes: &[u8], hint: Option<ImageFormat>) -> Result<(u64, u64), Unreadable> {
    let decoder = limited(bytes, hint, HEADER_ALLOC)?
        .into_decoder()
        .map_err(not_a_picture)?;
    Ok((within_limit(decoder.dimensions())?, decoder.total_bytes()))
}

/// Width × height, if it is within [`MAX_PIXELS`].
fn within_limit((width, height): (u32, u32)) -> Result<u64, Unreadable> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(Unreadable::TooLarge { width, height });
    }
    Ok(pixels)
}

/// The grey levels of a picture in memory (PNG, JPEG, PGM/PBM), within [`MAX_PIXELS`].
pub fn decode(bytes: &[u8]) -> Result<GrayImage, Unreadable> {
    decode_as(bytes, None)
}

/// [`decode`], taking the format as `hint` says where the bytes do not tell. The header is
/// read first within [`HEADER_ALLOC`]; the decoder may then allocate what the declared picture
/// needs and [`HEADER_ALLOC`] more, so a small picture's ancillary chunks cost megabytes at
/// most, not what they inflate to. The colour picture is dropped as soon as its grey levels
/// exist.
fn decode_as(bytes: &[u8], hint: Option<ImageFormat>) -> Result<GrayImage, Unreadable> {
    let (_, picture_bytes) = header(bytes, hint)?;
    let decoder = limited(bytes, hint, picture_bytes.saturating_add(HEADER_ALLOC))?
        .into_decoder()
        .map_err(not_a_picture)?;
    let picture = DynamicImage::from_decoder(decoder).map_err(not_a_picture)?;
    Ok(match picture {
        DynamicImage::ImageLuma8(grey) => grey,
        other => other.to_luma8(),
    })
}

/// The picture's 28x28, as [`prepare`] makes it, from its bytes: what `serve` reads.
pub fn read(bytes: &[u8]) -> Result<Vec<u8>, Unreadable> {
    prepare(&decode(bytes)?)
}

/// A reader of `bytes` in the format they show (else `hint`'s), whose decoder may allocate at
/// most `max_alloc` bytes; an error when it is no picture.
fn limited(
    bytes: &[u8],
    hint: Option<ImageFormat>,
    max_alloc: u64,
) -> Result<ImageReader<Cursor<&[u8]>>, Unreadable> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Some(format) = format_of(bytes).or(hint) {
        reader.set_format(format);
    } else {
        return Err(Unreadable::Format(
            "not a PNG, JPEG or PGM/PBM picture".into(),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    Ok(reader)
}

/// The picture format `bytes` start as, if any.
fn format_of(bytes: &[u8]) -> Option<ImageFormat> {
    image::guess_format(bytes).ok()
}

fn not_a_picture(e: image::ImageError) -> Unreadable {
    // The decoder's words can quote the file's own bytes (a chunk's name).
    Unreadable::Format(format!(
        "not a PNG, JPEG or PGM/PBM picture (cannot decode: {})",
        escaped(&e.to_string())
    ))
}

/// One input's 28x28, read from a picture (preprocessed) or an IDX file (taken as is). Only a
/// regular file of at most [`MAX_FILE_BYTES`] is read; its extension names its format where
/// its bytes do not.
pub fn load(path: &Path, index: Option<usize>) -> Result<Vec<u8>, Unreadable> {
    let bytes = crate::fsutil::read_regular(path, MAX_FILE_BYTES, "a picture")
        .map_err(|e| Unreadable::Io(e.to_string()))?;
    let hint = ImageFormat::from_path(path).ok();
    if format_of(&bytes).or(hint).is_some() {
        return prepare(&decode_as(&bytes, hint)?);
    }
    // Not a picture format: an IDX image file, already in MNIST's layout.
    let decoded = crate::data::idx::decode(Kind::Images, &bytes[..]).map_err(|fault| {
        Unreadable::Format(format!(
            "not a PNG, JPEG, PGM/PBM or IDX image file ({fault})"
        ))
    })?;
    let Some(index) = index else {
        return Err(Unreadable::NoIndex(decoded.count));
    };
    if index >= decoded.count {
        return Err(Unreadable::IndexPast {
            index,
            count: decoded.count,
        });
    }
    Ok(decoded.data[index * PIXELS..(index + 1) * PIXELS].to_vec())
}

/// The two most likely digits with their probabilities, and every digit's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guess {
    pub digit: usize,
    pub probability: f32,
    pub runner_up: usize,
    pub runner_up_probability: f32,
    pub probabilities: [f32; NUM_CLASSES],
}

/// Classifies 28x28 images (784 bytes each, MNIST layout) through `net`, in batches of
/// [`EVAL_BATCH`] as evaluation runs them: what `predict` and `serve` answer.
pub fn classify(net: &dyn Forward, images: &[Vec<u8>]) -> Vec<Guess> {
    let mut guesses = Vec::with_capacity(images.len());
    let mut probs = [0f64; NUM_CLASSES];
    for batch in images.chunks(EVAL_BATCH) {
        let pixels: Vec<f32> = batch
            .iter()
            .flat_map(|img| crate::data::batch::scale(img))
            .collect();
        for row in net.logits(&pixels).chunks(NUM_CLASSES) {
            metrics::softmax(row, &mut probs);
            let best = metrics::top_k(&probs, 2);
            guesses.push(Guess {
                digit: best[0],
                probability: probs[best[0]] as f32,
                runner_up: best[1],
                runner_up_probability: probs[best[1]] as f32,
                probabilities: probs.map(|p| p as f32),
            });
        }
    }
    guesses
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of `w`x`h` at grey `paper`, with a "7" of stroke `t` drawn in `ink` in the box
    /// (x, y, size).
    fn seven(
        w: u32,
        h: u32,
        paper: u8,
        ink: u8,
        (bx, by, size): (u32, u32, u32),
        t: u32,
    ) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as i64 - bx as i64, y as i64 - by as i64);
            let s = size as i64;
            let top = (0..t as i64).contains(&v) && (0..s).contains(&u);
            // The diagonal from the top right to the bottom middle.
            let diag_u = s - 1 - v / 2;
            let diag = (0..s).contains(&v) && (u - diag_u).abs() < t as i64;
            Luma([if top || diag { ink } else { paper }])
        })
    }

    fn bbox(img: &[u8]) -> (usize, usize, usize, usize) {
        let (mut x0, mut y0, mut x1, mut y1) = (28, 28, 0, 0);
        for (i, &p) in img.iter().enumerate() {
            if p > 0 {
                let (x, y) = (i % 28, i / 28);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
        (x0, y0, x1, y1)
    }

    fn centre_of_mass(img: &[u8]) -> (f32, f32) {
        let (mut m, mut cx, mut cy) = (0f32, 0f32, 0f32);
        for (i, &p) in img.iter().enumerate() {
            m += f32::from(p);
            cx += f32::from(p) * (i % 28) as f32;
            cy += f32::from(p) * (i / 28) as f32;
        }
        (cx / m, cy / m)
    }

    fn correlation(a: &[u8], b: &[u8]) -> f64 {
        let mean = |v: &[u8]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let (ma, mb) = (mean(a), mean(b));
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
            sab += dx * dy;
            saa += dx * dx;
            sbb += dy * dy;
        }
        sab / (saa * sbb).sqrt()
    }

    #[test]
    fn dark_on_light_and_light_on_dark_agree() {
        let dark_ink = prepare(&seven(120, 100, 235, 20, (30, 20, 60), 6)).unwrap();
        let light_ink = prepare(&seven(120, 100, 20, 235, (30, 20, 60), 6)).unwrap();
        assert_eq!(dark_ink, light_ink);
        // White ink on black, as MNIST: the corners are background.
        assert_eq!(dark_ink[0], 0);
        assert!(dark_ink.iter().any(|&p| p > 200));
    }

    #[test]
    fn a_large_off_centre_digit_is_boxed_to_20_and_centred() {
        let out = prepare(&seven(900, 700, 240, 30, (600, 40, 250), 20)).unwrap();
        let (x0, y0, x1, y1) = bbox(&out);
        let longest = (x1 - x0 + 1).max(y1 - y0 + 1);
        assert!((19..=21).contains(&longest), "box {x0},{y0}..{x1},{y1}");
        let (cx, cy) = centre_of_mass(&out);
        assert!(
            (cx - 13.5).abs() <= 1.0 && (cy - 13.5).abs() <= 1.0,
            "{cx},{cy}"
        );
    }

    #[test]
    fn thin_strokes_survive() {
        let out = prepare(&seven(300, 300, 250, 0, (50, 50, 200), 1)).unwrap();
        let inked = out.iter().filter(|&&p| p > 50).count();
        assert!(inked >= 20, "{inked} inked pixels");
    }

    #[test]
    fn a_blank_page_is_an_error() {
        let blank = GrayImage::from_pixel(200, 150, Luma([245]));
        assert_eq!(prepare(&blank).unwrap_err(), Unreadable::Blank);
        // Paper grain of a few grey levels is still blank.
        let grain = GrayImage::from_fn(200, 150, |x, y| Luma([240 + ((x * 7 + y * 13) % 5) as u8]));
        assert!(prepare(&grain).is_err());
    }

    #[test]
    fn uneven_light_is_not_ink() {
        let even = prepare(&seven(400, 300, 230, 30, (150, 60, 150), 12)).unwrap();
        // The same digit under light falling off from 250 to 110 across the page.
        let mut shaded = seven(400, 300, 230, 30, (150, 60, 150), 12);
        for (x, _, p) in shaded.enumerate_pixels_mut() {
            let light = 250.0 - 140.0 * x as f32 / 400.0;
            p.0[0] = (f32::from(p.0[0]) * light / 230.0).min(255.0) as u8;
        }
        let shaded = prepare(&shaded).unwrap();
        assert!(
            correlation(&even, &shaded) > 0.9,
            "{}",
            correlation(&even, &shaded)
        );
    }

    #[test]
    fn an_mnist_digit_drawn_on_paper_comes_back() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/mnist-subset/t10k-images-idx3-ubyte.gz");
        let test = crate::data::mnist::read_file(&path, Kind::Images).unwrap();
        for k in 0..5 {
            let digit = &test.data[k * PIXELS..(k + 1) * PIXELS];
            // Scaled 7x, dark ink on a light page, off centre.
            let page = GrayImage::from_fn(400, 300, |x, y| {
                let (u, v) = (x as i64 - 150, y as i64 - 40);
                let ink = if (0..196).contains(&u) && (0..196).contains(&v) {
                    digit[(v / 7) as usize * 28 + (u / 7) as usize]
                } else {
                    0
                };
                Luma([235 - (f32::from(ink) * 0.85) as u8])
            });
            let back = prepare(&page).unwrap();
            let r = correlation(digit, &back);
            eprintln!("digit {k}: correlation {r:.3}");
            assert!(r > 0.8, "digit {k}: correlation {r}");
        }
    }
}
