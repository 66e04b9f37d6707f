//! The process's allocator: the system's, with every large block started on a cache line.
//!
//! The network's parameters, their gradients and Adadelta's accumulators are plain `Vec<f32>`s,
//! the first dense layer's 4.7 MB each, and glibc starts blocks that large 16 bytes past a
//! page. Every 64-byte vector load from them then straddles two cache lines, which the
//! kernels that stream them (the first dense layer's walks, Adadelta) pay for on every load.
//! Aligning them here serves every owner of such a vector without changing its type.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes start on a cache line; smaller ones keep the alignment
/// their type asks for, so that small allocations cost what they did.
const LARGE: usize = 4096;
/// A cache line, in bytes.
const LINE: usize = 64;

/// [`System`], with blocks of 4 KB or more aligned to a 64-byte cache line.
pub struct LineAligned;

/// The layout a block is allocated (and so freed) with: a function of the caller's layout
/// alone, so that every call for one block agrees.
fn effective(layout: Layout) -> Layout {
    if layout.size() >= LARGE {
        // Fails only for sizes near isize::MAX, which then keep their own alignment (at
        // allocation and at release alike).
        layout.align_to(LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: each call forwards to `System` with `effective(layout)`, the same layout for the
// same caller's layout, so every block is freed or resized with the layout it was allocated
// with; `realloc` across the threshold moves the block by `System`'s own rules.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `effective` keeps the size (nonzero, as the caller's) and only raises the
        // alignment to a power of two.
        unsafe { System.alloc(effective(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(effective(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator with `layout`, so by `System` with
        // `effective(layout)`.
        unsafe { System.dealloc(ptr, effective(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = effective(layout);
        // SAFETY: the caller guarantees that `new_size`, rounded up to `layout.align()`, does
        // not overflow isize, which is all `Layout` asks.
        let new = effective(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            // SAFETY: `ptr` came from `System` with `old`; `new_size` is the caller's.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // Across the threshold: a fresh block with the new alignment, and a copy.
        // SAFETY: `new` has a nonzero size.
        let fresh = unsafe { System.alloc(new) };
        if !fresh.is_null() {
            // SAFETY: both blocks hold at least the smaller size and do not overlap; the old
            // one came from `System` with `old`.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_vectors_start_on_a_cache_line_and_keep_their_values_when_they_grow() {
        // Whatever the allocator was asked before, each large block is aligned.
        for len in [LARGE / 4, 12_345, 1_179_648] {
            let v: Vec<f32> = (0..len).map(|i| i as f32).collect();
            assert_eq!(v.as_ptr() as usize % LINE, 0, "{len} floats");
        }
        // Grown from small (the system's alignment) across the threshold, then shrunk back.
        let mut v: Vec<u8> = (0..100).collect();
        v.reserve_exact(LARGE * 3);
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        assert!(v.iter().copied().eq(0..100));
        v.shrink_to_fit();
        assert!(v.iter().copied().eq(0..100));
        // Zeroed ones too.
        let z = vec![0.0f32; 1 << 20];
        assert_eq!(z.as_ptr() as usize % LINE, 0);
        assert!(z.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn each_block_is_freed_with_the_layout_it_was_allocated_with() {
        for size in [1, LARGE - 1, LARGE, LARGE + 1, 1 << 22] {
            let layout = Layout::from_size_align(size, 4).unwrap();
            let e = effective(layout);
            assert_eq!(e.size(), size);
            assert_eq!(e.align(), if size >= LARGE { LINE } else { 4 });
            assert_eq!(effective(layout), e, "a function of the layout alone");
        }
        // A type that asks for more than a line keeps its own alignment.
        let wide = Layout::from_size_align(1 << 16, 4096).unwrap();
        assert_eq!(effective(wide).align(), 4096);
    }
}
