//! The process's memory allocator: jemalloc, with large zeroed allocations made writable at once.
//!
//! Zeroed memory fresh from the system is a range of untouched pages. Code that reads such a page
//! before it writes it (DataFusion's perfect hash join: `if data[key] != 0` before
//! `data[key] = row`, over an array as wide as the key range in every partition) pays two faults
//! per page: the read maps the shared zero page, and the write copies it and flushes the other
//! cores' TLBs (an interrupt to each). Asking the kernel for the whole range writable in one call
//! (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14) replaces those per-page faults. At 10M orders it
//! took program_roi from 3.89 s to 3.39 s and recovery_cases from 3.54 s to 3.10 s (system time
//! -35%; docs/BENCHMARKS.md). Only zeroed allocations of at least [`PREFAULT_MIN_BYTES`] are
//! populated: they are written whole, where other allocations often keep spare capacity that
//! populated pages would turn into resident memory. Elsewhere, or on an older kernel (the call
//! fails and is ignored), it is plain jemalloc.
//!
//! This module is the crate's one exception to `unsafe_code = "deny"`: a global allocator is an
//! unsafe trait, and each call only forwards to jemalloc, then advises the kernel about memory the
//! allocation owns.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

/// Zeroed allocations from this size on are populated writable when allocated.
pub const PREFAULT_MIN_BYTES: usize = 1 << 20;

/// jemalloc (tikv-jemallocator), with large zeroed allocations populated writable.
pub struct Allocator;

static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// SAFETY: every method forwards to jemalloc with the same arguments and returns what it returned;
// `populate` only advises the kernel about whole pages inside the block just allocated.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { JEMALLOC.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { JEMALLOC.alloc_zeroed(layout) };
        if !block.is_null() && layout.size() >= PREFAULT_MIN_BYTES {
            populate(block, layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { JEMALLOC.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { JEMALLOC.realloc(block, layout, new_size) }
    }
}

/// Ask the kernel to make the whole pages of `len` bytes from `block` present and writable. The
/// pages keep their contents (zeros here); a failure (an older kernel) changes nothing.
#[cfg(target_os = "linux")]
fn populate(block: *mut u8, len: usize) {
    const PAGE: usize = 4096;
    let start = (block as usize).next_multiple_of(PAGE);
    let end = (block as usize + len) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the block jemalloc just returned to us.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_block: *mut u8, _len: usize) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// How many of the whole pages of `len` bytes from `block` are present (mincore).
    fn present_pages(block: *mut u8, len: usize) -> usize {
        let pages = len / 4096;
        let mut present = vec![0u8; pages];
        let status = unsafe { libc::mincore(block.cast(), pages * 4096, present.as_mut_ptr()) };
        assert_eq!(status, 0, "{}", std::io::Error::last_os_error());
        present.iter().filter(|&&p| p & 1 == 1).count()
    }

    /// Allocate 64 MiB, page-aligned (more than jemalloc keeps spare, so fresh pages from the
    /// system), zeroed or not; returns how many of its pages are present, and whether it reads as
    /// zeros, before freeing it.
    fn fresh_block(zeroed: bool) -> (usize, bool) {
        let len = 64 << 20;
        let layout = Layout::from_size_align(len, 4096).unwrap();
        let block = unsafe {
            match zeroed {
                true => Allocator.alloc_zeroed(layout),
                false => Allocator.alloc(layout),
            }
        };
        assert!(!block.is_null());
        let present = present_pages(block, len);
        let zeros = unsafe { std::slice::from_raw_parts(block, len) }
            .iter()
            .all(|&b| b == 0);
        unsafe { Allocator.dealloc(block, layout) };
        (present, zeros)
    }

    #[test]
    fn a_large_zeroed_allocation_is_present_and_zero_before_it_is_touched() {
        // Plain jemalloc leaves fresh zeroed pages untouched (0 present); populated, all are.
        assert_eq!(fresh_block(true), (16384, true));
    }

    #[test]
    fn a_large_allocation_that_need_not_be_zeroed_is_left_to_fault_in() {
        let (present, _) = fresh_block(false);
        assert!(present < 16384 / 2, "{present} pages present");
    }
}
