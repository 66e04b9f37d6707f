//! Hand-written CPU kernels for paths where burn's generic `flex` ops leave most of the
//! machine idle. Each kernel is tested against burn's own ops on random inputs.
//!
//! The boundary: kernels take and return plain `f32` slices in row-major layouts stated at
//! each function; nothing here knows about burn tensors except the conversion in
//! [`inference::CpuNet::from_model`].

pub mod inference;

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, all row-major and contiguous. `threads` > 1 lets the
/// GEMM split the work over rayon's pool; inside a task that is already parallel, pass 1.
pub fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
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
    // SAFETY: the assertion above keeps every index the strides reach inside the slices:
    // row-major means column stride 1 and row strides n (dst), k (lhs), n (rhs); `dst` is
    // borrowed mutably and cannot alias the inputs.
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
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let want: Vec<f32> = (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|j| lhs[i / n * k + j] * rhs[j * n + i % n])
                    .sum()
            })
            .collect();
        for threads in [1, 2] {
            let mut dst = vec![f32::NAN; m * n];
            matmul(&mut dst, &lhs, &rhs, (m, k, n), false, threads);
            for (a, b) in dst.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            matmul(&mut dst, &lhs, &rhs, (m, k, n), true, threads);
            for (a, b) in dst.iter().zip(&want) {
                assert!((a - 2.0 * b).abs() < 1e-5);
            }
        }
    }
}
