//! The INT3 poke sequence: changing live 5-byte sites without stopping the other threads.
//!
//! A thread may execute a site at any moment, so a site never holds a mix of old and new bytes
//! that a CPU could decode. The sequence, for a whole batch of sites at once:
//!
//! 1. write INT3 over the first byte of every site, then sync all cores;
//! 2. write the four tail bytes of every site, then sync;
//! 3. write the new first byte of every site, then sync.
//!
//! A thread that hits an INT3 meanwhile traps; the platform's trap handler sends it where the
//! *old* bytes would have sent it (the list it needs is published by [`Text::begin`]). A batch
//! costs three syncs however many sites it holds. Every site is checked before anything is
//! written; when a write fails, the sites already touched are walked back in the same safe
//! order, so that the text ends byte for byte as it was.

use core::fmt;

use super::site::{INT3, SITE_LEN, SiteError, verify};

/// One site of a batch: the bytes it must hold now and the bytes it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poke {
    /// The address of the site.
    pub site: usize,
    /// The bytes the site must hold before the batch.
    pub old: [u8; SITE_LEN],
    /// The bytes the site holds after the batch.
    pub new: [u8; SITE_LEN],
}

/// Why a batch was not applied. In every case the text is as it was before the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PokeError {
    /// A site did not hold the expected bytes; nothing was written.
    Unexpected(SiteError),
    /// The platform failed to write the text at `addr` (an errno on Linux).
    Write {
        /// The address of the failed write.
        addr: usize,
        /// The platform's error code.
        code: i32,
    },
}

impl fmt::Display for PokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PokeError::Unexpected(e) => write!(f, "{e}; nothing was written"),
            PokeError::Write { addr, code } => {
                write!(f, "writing the text at {addr:#x} failed (error {code}); every site was restored")
            }
        }
    }
}

/// The machine code of a platform, as the poke sequence sees it.
pub trait Text {
    /// Reads the bytes at `addr` into `buf`.
    ///
    /// # Errors
    ///
    /// The platform's error code when the text cannot be read.
    fn read(&self, addr: usize, buf: &mut [u8]) -> Result<(), i32>;

    /// Writes `bytes` at `addr`.
    ///
    /// # Errors
    ///
    /// The platform's error code when the text cannot be written.
    fn write(&self, addr: usize, bytes: &[u8]) -> Result<(), i32>;

    /// Makes every core see the writes so far and discard what it prefetched.
    fn sync_cores(&self);

    /// Announces a batch: until [`Text::end`], a thread trapping on one of these sites must
    /// resume where the site's `old` bytes send it.
    fn begin(&self, _pokes: &[Poke]) {}

    /// Ends the batch announced by [`Text::begin`].
    fn end(&self) {}
}

/// Reads the bytes of the site at `site`.
///
/// # Errors
///
/// The platform's error code when the text cannot be read.
pub fn read_site<T: Text + ?Sized>(text: &T, site: usize) -> Result<[u8; SITE_LEN], i32> {
    let mut buf = [0u8; SITE_LEN];
    text.read(site, &mut buf)?;
    Ok(buf)
}

/// Applies a batch of site changes with one round of three core syncs.
///
/// Pokes whose old and new bytes are equal are only verified.
///
/// # Errors
///
/// [`PokeError::Unexpected`] when a site holds other bytes than its `old` (nothing written),
/// [`PokeError::Write`] when a write failed (everything restored).
pub fn apply<T: Text + ?Sized>(text: &T, pokes: &[Poke]) -> Result<(), PokeError> {
    for p in pokes {
        let found = read_site(text, p.site).map_err(|code| PokeError::Write { addr: p.site, code })?;
        verify(p.site, found, p.old).map_err(PokeError::Unexpected)?;
    }
    let changing = |p: &&Poke| p.old != p.new;
    if !pokes.iter().any(|p| changing(&p)) {
        return Ok(());
    }
    text.begin(pokes);
    let result = sequence(text, pokes.iter().filter(changing));
    text.end();
    result
}

/// Runs the three phases over the changing pokes, undoing a phase that failed part-way.
fn sequence<'a, T, I>(text: &T, pokes: I) -> Result<(), PokeError>
where
    T: Text + ?Sized,
    I: Iterator<Item = &'a Poke> + Clone,
{
    // Phase 1: a breakpoint on every site.
    for (done, p) in pokes.clone().enumerate() {
        if let Err(code) = text.write(p.site, &[INT3]) {
            for q in pokes.clone().take(done) {
                let _ = text.write(q.site, &p_first(q.old));
            }
            text.sync_cores();
            return Err(PokeError::Write { addr: p.site, code });
        }
    }
    text.sync_cores();

    // Phase 2: the tails, unreachable behind the breakpoints.
    for (done, p) in pokes.clone().enumerate() {
        if let Err(code) = text.write(p.site + 1, &p.new[1..]) {
            for q in pokes.clone().take(done) {
                let _ = text.write(q.site + 1, &q.old[1..]);
            }
            text.sync_cores();
            restore_first(text, pokes);
            return Err(PokeError::Write { addr: p.site + 1, code });
        }
    }
    text.sync_cores();

    // Phase 3: the new first bytes, which make each site whole again.
    for (done, p) in pokes.clone().enumerate() {
        if let Err(code) = text.write(p.site, &p_first(p.new)) {
            for q in pokes.clone().take(done) {
                let _ = text.write(q.site, &[INT3]);
            }
            text.sync_cores();
            for q in pokes.clone() {
                let _ = text.write(q.site + 1, &q.old[1..]);
            }
            text.sync_cores();
            restore_first(text, pokes);
            return Err(PokeError::Write { addr: p.site, code });
        }
    }
    text.sync_cores();
    Ok(())
}

/// Writes back the old first byte of every poke and syncs.
fn restore_first<'a, T, I>(text: &T, pokes: I)
where
    T: Text + ?Sized,
    I: Iterator<Item = &'a Poke>,
{
    for q in pokes {
        let _ = text.write(q.site, &p_first(q.old));
    }
    text.sync_cores();
}

/// Returns the first byte of a site's bytes as a one-byte slice source.
fn p_first(bytes: [u8; SITE_LEN]) -> [u8; 1] {
    [bytes[0]]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::site::{NOP5, encode_jmp};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};

    /// A fake text: a byte array at address 0x1000 that can be told to fail its n-th write.
    pub(crate) struct FakeText {
        pub(crate) bytes: RefCell<Vec<u8>>,
        pub(crate) syncs: Cell<usize>,
        pub(crate) writes: Cell<usize>,
        pub(crate) fail_at: Cell<Option<usize>>,
    }

    pub(crate) const BASE: usize = 0x1000;

    impl FakeText {
        pub(crate) fn with_sites(n: usize) -> FakeText {
            let mut bytes = Vec::new();
            for _ in 0..n {
                bytes.extend_from_slice(&NOP5);
                bytes.extend_from_slice(&[0x55, 0x48, 0x89, 0xe5, 0xc3, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90]);
            }
            FakeText { bytes: RefCell::new(bytes), syncs: Cell::new(0), writes: Cell::new(0), fail_at: Cell::new(None) }
        }

        pub(crate) fn site(i: usize) -> usize {
            BASE + 16 * i
        }
    }

    impl Text for FakeText {
        fn read(&self, addr: usize, buf: &mut [u8]) -> Result<(), i32> {
            let bytes = self.bytes.borrow();
            let at = addr.checked_sub(BASE).ok_or(14)?;
            let src = bytes.get(at..at + buf.len()).ok_or(14)?;
            buf.copy_from_slice(src);
            Ok(())
        }

        fn write(&self, addr: usize, src: &[u8]) -> Result<(), i32> {
            let n = self.writes.get();
            self.writes.set(n + 1);
            if self.fail_at.get() == Some(n) {
                return Err(5);
            }
            let mut bytes = self.bytes.borrow_mut();
            let at = addr - BASE;
            bytes[at..at + src.len()].copy_from_slice(src);
            Ok(())
        }

        fn sync_cores(&self) {
            self.syncs.set(self.syncs.get() + 1);
        }
    }

    fn jmp_pokes(n: usize) -> Vec<Poke> {
        (0..n)
            .map(|i| {
                let site = FakeText::site(i);
                Poke { site, old: NOP5, new: encode_jmp(site, 0x9000 + i).unwrap() }
            })
            .collect()
    }

    #[test]
    fn a_batch_of_many_sites_costs_three_syncs() {
        let text = FakeText::with_sites(100);
        let pokes = jmp_pokes(100);
        apply(&text, &pokes).unwrap();
        assert_eq!(text.syncs.get(), 3);
        for p in &pokes {
            assert_eq!(read_site(&text, p.site).unwrap(), p.new);
        }
    }

    #[test]
    fn unexpected_bytes_are_refused_before_any_write() {
        let text = FakeText::with_sites(3);
        text.write(FakeText::site(2) + 1, &[0xaa]).unwrap();
        text.writes.set(0);
        let before = text.bytes.borrow().clone();
        let err = apply(&text, &jmp_pokes(3)).unwrap_err();
        match err {
            PokeError::Unexpected(e) => {
                assert_eq!(e.site, FakeText::site(2));
                assert_eq!(e.found, [0x0f, 0xaa, 0x44, 0x00, 0x00]);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(text.writes.get(), 0);
        assert_eq!(*text.bytes.borrow(), before);
    }

    #[test]
    fn a_failed_write_in_any_phase_restores_the_text() {
        // 4 sites: writes 0..4 are phase 1, 4..8 phase 2, 8..12 phase 3.
        for fail in 0..12 {
            let text = FakeText::with_sites(4);
            let before = text.bytes.borrow().clone();
            text.fail_at.set(Some(fail));
            let err = apply(&text, &jmp_pokes(4)).unwrap_err();
            assert!(matches!(err, PokeError::Write { .. }), "{err:?}");
            assert_eq!(*text.bytes.borrow(), before, "failure at write {fail}");
        }
    }

    #[test]
    fn reverting_restores_the_nop() {
        let text = FakeText::with_sites(2);
        let pokes = jmp_pokes(2);
        apply(&text, &pokes).unwrap();
        let back: Vec<Poke> = pokes.iter().map(|p| Poke { site: p.site, old: p.new, new: p.old }).collect();
        apply(&text, &back).unwrap();
        assert_eq!(read_site(&text, FakeText::site(0)).unwrap(), NOP5);
        assert_eq!(read_site(&text, FakeText::site(1)).unwrap(), NOP5);
        let _ = vec![0u8];
    }
}
