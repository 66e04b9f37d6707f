//! The misclassified test digits on one sheet, each labelled `true→predicted` (`eval
//! --errors`).

use super::{Canvas, text_width};
use crate::data::Split;
use crate::network::SIDE;

/// Misclassified digits per row of the error sheet.
const SHEET_COLUMNS: usize = 16;
/// More would make a sheet nobody can look through; an untrained model errs 9,000 times.
const SHEET_MAX: usize = 1000;
/// Each digit is drawn at twice its size, with its `true→predicted` label below.
const DIGIT_SCALE: u32 = 2;
const CELL_WIDTH: u32 = 64;
const CELL_HEIGHT: u32 = 86;
const SHEET_HEADER: u32 = 40;

/// A grid of the misclassified digits of `split`, each labelled `true→predicted`.
pub fn error_sheet(split: &Split, predictions: &[u8]) -> Canvas {
    let wrong: Vec<usize> = (0..split.len())
        .filter(|&i| predictions[i] != split.labels[i])
        .collect();
    let shown = &wrong[..wrong.len().min(SHEET_MAX)];
    let rows = shown.len().div_ceil(SHEET_COLUMNS) as u32;
    let width = SHEET_COLUMNS as u32 * CELL_WIDTH;
    let mut sheet = Canvas::new(width, SHEET_HEADER + rows * CELL_HEIGHT, GREY);
    let mut title = format!(
        "{} of {} misclassified (true→predicted)",
        wrong.len(),
        split.len()
    );
    if shown.len() < wrong.len() {
        title.push_str(&format!(", first {}", shown.len()));
    }
    sheet.text(12, 12, &title, 2, LIGHT);
    let digit = SIDE as u32 * DIGIT_SCALE;
    for (n, &i) in shown.iter().enumerate() {
        let x = (n % SHEET_COLUMNS) as u32 * CELL_WIDTH;
        let y = SHEET_HEADER + (n / SHEET_COLUMNS) as u32 * CELL_HEIGHT;
        let left = (x + (CELL_WIDTH - digit) / 2) as i64;
        sheet.grey(left, i64::from(y + 4), split.image(i), SIDE, DIGIT_SCALE);
        let label = format!("{}→{}", split.labels[i], predictions[i]);
        let label_x = x + (CELL_WIDTH - text_width(&label, 2)) / 2;
        sheet.text(label_x as i64, i64::from(y + digit + 8), &label, 2, LIGHT);
    }
    sheet
}

const GREY: image::Rgb<u8> = image::Rgb([48, 48, 48]);
const LIGHT: image::Rgb<u8> = image::Rgb([235, 235, 235]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_sheet_shows_each_wrong_digit_once() {
        // Three images of constant grey levels 10, 20, 30; the first and last are wrong.
        let split = Split {
            images: [10u8, 20, 30]
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, 784))
                .collect(),
            labels: vec![7, 1, 4],
        };
        let sheet = error_sheet(&split, &[2, 1, 9]).image;
        assert_eq!(sheet.width(), SHEET_COLUMNS as u32 * CELL_WIDTH);
        assert_eq!(sheet.height(), SHEET_HEADER + CELL_HEIGHT);
        let at = |cell: u32| sheet.get_pixel(cell * CELL_WIDTH + 32, SHEET_HEADER + 30).0[0];
        assert_eq!([at(0), at(1), at(2)], [10, 30, GREY.0[0]]);
        // The label sits below each digit, lit in the label colour.
        let label_lit = |cell: u32| {
            (0..CELL_WIDTH).any(|dx| {
                (SHEET_HEADER + 64..SHEET_HEADER + CELL_HEIGHT)
                    .any(|y| sheet.get_pixel(cell * CELL_WIDTH + dx, y) == &LIGHT)
            })
        };
        assert!(label_lit(0) && label_lit(1) && !label_lit(2));

        let none_wrong = error_sheet(&split, &[7, 1, 4]).image;
        assert_eq!(none_wrong.height(), SHEET_HEADER);
    }
}
