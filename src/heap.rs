//! How glibc's allocator keeps memory, set once at start.
//!
//! logferry's memory is mostly data in flight: reads of up to 128 KiB handed from the tailer's
//! thread to the outputs and freed there, batches and their compressed bodies. With glibc's
//! defaults that costs half as much resident memory again as the data itself (measured on 1,000
//! busy files: 16 MB of anonymous memory at the peak against 10.6 MB of peak heap), for two
//! reasons:
//! - every thread that frees or allocates may get an arena of its own, and each arena keeps
//!   what was freed into it; two arenas are enough for a tailer, a few runtime threads and a
//!   writer;
//! - after the first large block is freed, glibc raises its mmap threshold on its own, and the
//!   trim threshold with it (to twice that), so freed memory up to 64 MiB may stay in the heap.
//!   Fixed thresholds keep reads (at most 128 KiB) in the heap, where their memory is reused
//!   without new page faults, and give free memory at the top of the heap back once more than
//!   1 MiB of it gathers. A lower trim threshold (256 KiB) was measured too: no less memory
//!   within the noise, and twice the page faults (freed reads given back, then faulted in
//!   again); higher ones, no fewer faults.
//!
//! A `MALLOC_*` variable in the environment wins over these settings, so that an operator can
//! still tune the allocator the usual way. Other C libraries (musl in the container image) have
//! no such knobs and keep freed memory less anyway.

/// Sets the allocator's options, unless the environment sets them.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const OPTIONS: [(&str, libc::c_int, libc::c_int); 3] = [
            ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
            ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 1 << 20),
            ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1 << 20),
        ];
        for (variable, option, value) in OPTIONS {
            if std::env::var_os(variable).is_none() {
                // SAFETY: mallopt only changes allocator parameters; it is called before any
                // other thread exists, and a refused value leaves the default in place.
                unsafe {
                    libc::mallopt(option, value);
                }
            }
        }
    }
}
