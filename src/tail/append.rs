//! Reading a file onto the end of a buffer without zeroing the room first.
//!
//! Why by hand: `Read::read` wants initialized memory, so each read buffer was zeroed and then
//! overwritten by the kernel's copy: every byte read written twice. On 10,000 small files the
//! zeroing (of buffers that, in flight to the outputs for a while, are out of the cache when
//! they are reused) was 6 % of the reading thread. The standard library's way to read into
//! spare capacity (`BorrowedBuf`) is not stable yet.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Reads at most `max` bytes of `file` from its current offset onto the end of `buf`, once
/// (retrying only when interrupted by a signal). Returns how many bytes came (0 at the end of
/// the file).
pub fn read_onto(file: &File, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    buf.reserve(max);
    let room = buf.spare_capacity_mut();
    let want = max.min(room.len());
    loop {
        // SAFETY: `room` is valid for writes of `want` bytes and read(2) writes at most that
        // many; the fd is open for as long as `file` is borrowed.
        let got = unsafe { libc::read(file.as_raw_fd(), room.as_mut_ptr().cast(), want) };
        if got >= 0 {
            let got = got as usize;
            // SAFETY: read(2) initialized the first `got` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + got) };
            return Ok(got);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn reads_append_after_what_the_buffer_holds_and_stop_at_the_end() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut buf = b"held:".to_vec();
        assert_eq!(read_onto(&file, &mut buf, 4).unwrap(), 4);
        assert_eq!(buf, b"held:0123");
        assert_eq!(read_onto(&file, &mut buf, 100).unwrap(), 6);
        assert_eq!(buf, b"held:0123456789");
        assert_eq!(read_onto(&file, &mut buf, 100).unwrap(), 0);
        assert_eq!(buf, b"held:0123456789");
    }

    #[test]
    fn a_read_error_leaves_the_buffer_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::open(dir.path()).unwrap();
        let mut buf = b"kept".to_vec();
        assert!(read_onto(&file, &mut buf, 10).is_err());
        assert_eq!(buf, b"kept");
    }
}
