//! The kernels' large buffers: aligned to a cache line, and reused from pass to pass on each
//! thread (poisoned with NaN in debug builds, so that a kernel reading one before writing it
//! fails the tests against the reference).

use std::cell::RefCell;

/// A buffer of floats that starts on a cache line: vector loads and stores that straddle two
/// lines cost about twice as much (see docs/performance.md). Its own alignment, whatever the
/// allocator; [`crate::allocator`] aligns large `Vec`s as well, for the parameters and their
/// gradients.
pub(crate) type Buffer = aligned_vec::AVec<f32>;

/// A [`Buffer`] of `len` zeros.
pub(crate) fn zeros(len: usize) -> Buffer {
    aligned_vec::avec![0.0; len]
}

thread_local! {
    /// Large buffers a pass has finished with, kept for the next pass on this thread (and each
    /// worker thread's scratch space, kept from group to group). Fresh allocations this size
    /// come from the operating system as zeroed pages, and faulting them in every pass cost
    /// a noticeable share of a step.
    static SPARE: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats: the smallest spare one that is big enough, else a new one. Its
/// contents are unspecified (NaN in debug builds): callers write all of it before reading.
pub(crate) fn reuse(len: usize) -> Buffer {
    let found = SPARE.with_borrow_mut(|spare| {
        let (i, _) = spare
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())?;
        Some(spare.swap_remove(i))
    });
    let mut v = found.unwrap_or_else(|| Buffer::new(0));
    v.resize(len, 0.0);
    // Debug builds (the tests) poison it, so that a kernel reading a value before writing it
    // gets NaN, which every test against the reference catches.
    #[cfg(debug_assertions)]
    v.fill(f32::NAN);
    v
}

/// Keeps `v` for a later [`reuse`] on this thread: four at most, the largest, so that
/// evaluation's larger batches between training steps find theirs too.
pub(crate) fn spare(v: Buffer) {
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < 4 {
            spare.push(v);
        } else if let Some(smallest) = spare.iter_mut().min_by_key(|s| s.capacity())
            && smallest.capacity() < v.capacity()
        {
            *smallest = v;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reads one before writing it fails the tests against the reference.
    #[test]
    #[cfg(debug_assertions)]
    fn reused_buffers_come_back_poisoned() {
        let mut v = reuse(1000);
        v.fill(1.0);
        spare(v);
        let again = reuse(800);
        assert!(again.iter().all(|x| x.is_nan()));
    }
}
