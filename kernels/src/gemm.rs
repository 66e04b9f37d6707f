//! Matrix products through the `gemm` crate (the GEMM under burn's flex backend too), and the
//! dense layer built on them.

/// How a GEMM operand is stored: as the matrix itself or as its transpose, row-major either way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stored {
    AsIs,
    Transposed,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, all row-major and contiguous. `threads` > 1 lets the
/// GEMM split the work over rayon's pool; inside a task that is already parallel, pass 1.
pub fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    dims: (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    matmul_stored(
        dst,
        (lhs, Stored::AsIs),
        (rhs, Stored::AsIs),
        dims,
        accumulate,
        threads,
    );
}

/// [`matmul`] where either operand may be stored transposed (`lhs` as [k×m], `rhs` as [n×k]).
pub fn matmul_stored(
    dst: &mut [f32],
    (lhs, lhs_stored): (&[f32], Stored),
    (rhs, rhs_stored): (&[f32], Stored),
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    threads: usize,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // (column stride, row stride) of each operand.
    let (lhs_cs, lhs_rs) = match lhs_stored {
        Stored::AsIs => (1, k),
        Stored::Transposed => (m, 1),
    };
    let (rhs_cs, rhs_rs) = match rhs_stored {
        Stored::AsIs => (1, n),
        Stored::Transposed => (k, 1),
    };
    // SAFETY: the assertion above keeps every index the strides reach inside the slices (each
    // operand spans exactly rows × columns elements in either storage); `dst` is borrowed
    // mutably and cannot alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `rows · weights + bias`, then ReLU if asked: a dense layer over rows of `input`. The
/// reference: `reference::dense_forward`.
pub(crate) fn dense(
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    relu: bool,
    threads: usize,
) -> Vec<f32> {
    let (outputs, inputs) = (bias.len(), weights.len() / bias.len());
    let rows = input.len() / inputs;
    let mut out = vec![0.0f32; rows * outputs];
    matmul(
        &mut out,
        input,
        weights,
        (rows, inputs, outputs),
        false,
        threads,
    );
    bias_relu(&mut out, bias, relu);
    out
}

/// Adds `bias` to each row of a dense layer's outputs `out`, then ReLU if asked.
pub(crate) fn bias_relu(out: &mut [f32], bias: &[f32], relu: bool) {
    for row in out.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::reference::testing::{assert_close, random};

    #[test]
    fn dense_matches_its_reference_layers() {
        let (rows, inputs, outputs) = (7, 300, 20);
        let x = random(rows * inputs, (-1.0, 1.0), 4);
        let w = random(inputs * outputs, (-0.1, 0.1), 5);
        let b = random(outputs, (-0.5, 0.5), 6);
        let want = reference::dense_forward(&x, &w, &b);
        for threads in [1, 2] {
            assert_close(&dense(&x, &w, &b, false, threads), &want, 1e-6, "dense");
            let relu = reference::relu_forward(&want);
            assert_close(
                &dense(&x, &w, &b, true, threads),
                &relu,
                1e-6,
                "dense + ReLU",
            );
        }
    }

    /// In debug builds a reused buffer comes back as NaN whatever it held, so a kernel that
    fn naive(lhs: &[f32], rhs: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|j| lhs[i / n * k + j] * rhs[j * n + i % n])
                    .sum()
            })
            .collect()
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| a[(i % rows) * cols + i / rows])
            .collect()
    }

    #[test]
    fn matmul_matches_the_definition_in_every_storage() {
        let (m, k, n) = (5, 7, 3);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let want = naive(&lhs, &rhs, (m, k, n));
        let (lhs_t, rhs_t) = (transpose(&lhs, m, k), transpose(&rhs, k, n));
        for threads in [1, 2] {
            for (l, r) in [
                ((&lhs, Stored::AsIs), (&rhs, Stored::AsIs)),
                ((&lhs_t, Stored::Transposed), (&rhs, Stored::AsIs)),
                ((&lhs, Stored::AsIs), (&rhs_t, Stored::Transposed)),
                ((&lhs_t, Stored::Transposed), (&rhs_t, Stored::Transposed)),
            ] {
                let mut dst = vec![f32::NAN; m * n];
                let (l, r) = ((l.0.as_slice(), l.1), (r.0.as_slice(), r.1));
                matmul_stored(&mut dst, l, r, (m, k, n), false, threads);
                for (a, b) in dst.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
                matmul_stored(&mut dst, l, r, (m, k, n), true, threads);
                for (a, b) in dst.iter().zip(&want) {
                    assert!((a - 2.0 * b).abs() < 1e-5);
                }
            }
        }
    }
}
