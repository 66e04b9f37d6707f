//! Loss and accuracy per epoch, training and validation, as two panels of curves (`train
//! --plot`).

use image::Rgb;

use super::{Canvas, text_width};
use crate::history::EpochRecord;

pub const TRAIN_COLOUR: Rgb<u8> = Rgb([31, 119, 180]);
pub const VAL_COLOUR: Rgb<u8> = Rgb([230, 110, 0]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

const PANEL_WIDTH: u32 = 480;
const HEIGHT: u32 = 400;
/// The plotting area inside each panel: left, top, right, bottom.
const AREA: (f64, f64, f64, f64) = (72.0, 48.0, 460.0, 340.0);

/// Round tick values covering `lo..=hi`: (first, last, step), about five steps apart.
pub fn nice_ticks(lo: f64, hi: f64) -> (f64, f64, f64) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let rough = span / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    let mut last = (hi / step).ceil() * step;
    if last <= first {
        last = first + step;
    }
    (first, last, step)
}

/// One panel's mapping from (epoch, value) to pixels.
#[derive(Debug, Clone, Copy)]
pub struct Axes {
    left: f64,
    epochs: usize,
    lo: f64,
    hi: f64,
}

impl Axes {
    pub fn new(panel: usize, epochs: usize, lo: f64, hi: f64) -> Axes {
        Axes {
            left: (panel as u32 * PANEL_WIDTH) as f64,
            epochs,
            lo,
            hi,
        }
    }

    pub fn point(&self, epoch: usize, value: f64) -> (f64, f64) {
        let (x0, y0, x1, y1) = AREA;
        // One epoch still gets a visible axis from 1 to 2.
        let along = (epoch as f64 - 1.0) / (self.epochs.max(2) - 1) as f64;
        let up = (value - self.lo) / (self.hi - self.lo);
        (self.left + x0 + along * (x1 - x0), y1 - up * (y1 - y0))
    }
}

/// What each panel shows: its title and the (training, validation) pair of a record.
type Panel = (&'static str, fn(&EpochRecord) -> (f64, f64));
const PANELS: [Panel; 2] = [
    ("loss", |r| (r.loss, r.val.loss)),
    ("accuracy", |r| (r.acc, r.val.accuracy)),
];

/// The axes of panel `panel` and its ticks (first, last, step).
fn axes_for(records: &[EpochRecord], panel: usize) -> (Axes, (f64, f64, f64)) {
    let values = PANELS[panel].1;
    let all = records
        .iter()
        .map(values)
        .flat_map(|(t, v)| [t, v])
        .filter(|v| v.is_finite());
    let (min, max) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    // Loss is drawn from zero; accuracy from its lowest value up to at most 1.
    let (lo, hi) = match (panel, min.is_finite()) {
        (_, false) => (0.0, 1.0),
        (0, true) => (0.0, max),
        (_, true) => (min, max.min(1.0)),
    };
    let (lo, hi, step) = nice_ticks(lo, hi);
    (Axes::new(panel, records.len(), lo, hi), (lo, hi, step))
}

/// Loss (left) and accuracy (right) per epoch, training and validation.
pub fn plot(records: &[EpochRecord]) -> Canvas {
    let mut canvas = Canvas::new(2 * PANEL_WIDTH, HEIGHT, WHITE);
    for (panel, (title, values)) in PANELS.into_iter().enumerate() {
        let pairs: Vec<(f64, f64)> = records.iter().map(values).collect();
        let (axes, (lo, hi, step)) = axes_for(records, panel);
        draw_frame(&mut canvas, &axes, title, records.len(), (lo, hi, step));
        for (series, colour) in [(0, TRAIN_COLOUR), (1, VAL_COLOUR)] {
            let points: Vec<(f64, f64)> = records
                .iter()
                .zip(&pairs)
                .map(|(r, p)| axes.point(r.epoch, if series == 0 { p.0 } else { p.1 }))
                .collect();
            for pair in points.windows(2) {
                canvas.line(pair[0], pair[1], 2, colour);
            }
            for &(x, y) in &points {
                canvas.rect(x as i64 - 3, y as i64 - 3, 7, 7, colour);
            }
        }
        // Loss falls and accuracy rises to the right: the legend takes the corner they leave.
        let legend_x = axes.left as i64 + AREA.2 as i64 - 104;
        let legend_y = if panel == 0 {
            AREA.1 + 8.0
        } else {
            AREA.3 - 36.0
        };
        for (row, (name, colour)) in [("train", TRAIN_COLOUR), ("validation", VAL_COLOUR)]
            .into_iter()
            .enumerate()
        {
            let y = legend_y as i64 + 14 * row as i64;
            canvas.rect(legend_x, y + 2, 12, 4, colour);
            canvas.text(legend_x + 16, y, name, 1, INK);
        }
    }
    canvas
}

fn draw_frame(
    canvas: &mut Canvas,
    axes: &Axes,
    title: &str,
    epochs: usize,
    (lo, hi, step): (f64, f64, f64),
) {
    let (x0, y0, x1, y1) = AREA;
    let left = axes.left;
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let ticks = ((hi - lo) / step).round() as usize;
    for i in 0..=ticks {
        let value = lo + i as f64 * step;
        let (_, y) = axes.point(1, value);
        canvas.line((left + x0, y), (left + x1, y), 1, GRID);
        let label = format!("{value:.decimals$}");
        let x = left + x0 - 6.0 - f64::from(text_width(&label, 1));
        canvas.text(x as i64, y as i64 - 4, &label, 1, INK);
    }
    let every = epochs.div_ceil(10).max(1);
    for epoch in (1..=epochs).filter(|e| (e - 1) % every == 0) {
        let (x, _) = axes.point(epoch, lo);
        canvas.line((x, y1), (x, y1 + 4.0), 1, INK);
        let label = epoch.to_string();
        let half = f64::from(text_width(&label, 1)) / 2.0;
        canvas.text((x - half) as i64, y1 as i64 + 8, &label, 1, INK);
    }
    canvas.line((left + x0, y0), (left + x0, y1), 1, INK);
    canvas.line((left + x0, y1), (left + x1, y1), 1, INK);
    let centre = left + (x0 + x1) / 2.0;
    let title_half = f64::from(text_width(title, 2)) / 2.0;
    canvas.text((centre - title_half) as i64, 14, title, 2, INK);
    canvas.text(centre as i64 - 20, y1 as i64 + 24, "epoch", 1, INK);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::three;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let close = |(a, b, c): (f64, f64, f64), (x, y, z): (f64, f64, f64)| {
            assert!(
                (a - x).abs() < 1e-12 && (b - y).abs() < 1e-12 && (c - z).abs() < 1e-12,
                "{:?}",
                (a, b, c)
            )
        };
        close(nice_ticks(0.0, 0.2691), (0.0, 0.3, 0.1));
        close(nice_ticks(0.9168, 0.9883), (0.9, 1.0, 0.02));
        close(nice_ticks(0.981, 0.9883), (0.98, 0.99, 0.002));
        // A flat series still gets an axis around it.
        let (first, last, _) = nice_ticks(0.5, 0.5);
        assert!(first <= 0.5 && last > 0.5);
    }

    #[test]
    fn the_curves_pass_through_their_points() {
        let records = three();
        let image = plot(&records).image;
        assert_eq!((image.width(), image.height()), (2 * PANEL_WIDTH, HEIGHT));
        let (loss, loss_ticks) = axes_for(&records, 0);
        let (accuracy, _) = axes_for(&records, 1);
        // Loss from zero up past the largest value (1/3), in round steps.
        assert_eq!((loss.lo, loss_ticks.2), (0.0, 0.1));
        assert!((loss.hi - 0.4).abs() < 1e-12);
        let at = |(x, y): (f64, f64)| *image.get_pixel(x.round() as u32, y.round() as u32);
        assert_eq!(at(loss.point(1, 0.2691)), TRAIN_COLOUR);
        assert_eq!(at(loss.point(3, 1.0 / 3.0)), VAL_COLOUR);
        assert_eq!(at(accuracy.point(2, 0.9721)), TRAIN_COLOUR);
        assert_eq!(at(accuracy.point(3, 0.9883)), VAL_COLOUR);
        // Epochs run left to right, higher values sit higher.
        assert!(loss.point(2, 0.1).0 > loss.point(1, 0.1).0);
        assert!(loss.point(1, 0.3).1 < loss.point(1, 0.1).1);
        // A single epoch still draws.
        let one = plot(&records[..1]).image;
        let (x, y) = Axes::new(0, 1, 0.0, 0.3).point(1, 0.2691);
        assert_eq!(*one.get_pixel(x as u32, y.round() as u32), TRAIN_COLOUR);
        assert_eq!(one.width(), 2 * PANEL_WIDTH);
    }
}
