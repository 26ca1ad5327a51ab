//! The panic handler of a patch module.
//!
//! A panic in a replacement is a bug in the patch. It is reported like the kernel's own `BUG()`:
//! a message, then an invalid-opcode trap, which makes the kernel print an oops and kill the
//! current task without stopping the machine (unless it is configured to panic on oops).

use core::fmt::Write;

/// Formats the panic message into a fixed buffer, cutting what does not fit.
struct Buf {
    bytes: [u8; 256],
    len: usize,
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Keep one byte for the terminating NUL.
        let room = self.bytes.len() - 1 - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut buf = Buf { bytes: [0; 256], len: 0 };
    let _ = write!(buf, "panic in a live patch: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = write!(buf, " at {}:{}", loc.file(), loc.line());
    }
    // Interior NULs would end the message early, which is harmless.
    let end = buf.len;
    buf.bytes[end] = 0;
    if let Ok(msg) = core::ffi::CStr::from_bytes_until_nul(&buf.bytes) {
        // SAFETY: both strings are NUL-terminated; "%s" consumes the one argument.
        unsafe { super::klp::_printk(c"\x013kgraft: %s\n".as_ptr(), msg.as_ptr()) };
    }
    loop {
        // SAFETY: `ud2` raises an invalid-opcode exception, the kernel's `BUG()`; it touches no
        // memory and the kernel's handler never returns here.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
}
