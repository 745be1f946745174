//! The one integration-test binary: the terminal model against tmux, repaint round trips,
//! and crterm's command line.

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod hostile;
mod image;
mod model;
mod model_props;
mod oracle;
mod recorded;

thread_local! {
    /// The largest single allocation this thread asked for since it was set to 0 (the
    /// fuzz's memory bound: a decompression bomb is one large allocation).
    pub static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct Watched;

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size)
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for Watched {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        note(new);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static WATCHED: Watched = Watched;
