//! The kernel build directory: its release, its exported symbols, the `kernel` glob check.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Error;

/// A kernel build directory and the release it builds modules for.
pub(crate) struct Kdir {
    /// The directory (`/lib/modules/RELEASE/build`).
    pub(crate) path: PathBuf,
    /// The release (`6.1.0-48-amd64`), as the module's vermagic will name it.
    pub(crate) release: String,
}

/// Finds the kernel build directory: `given`, or the single one under `/lib/modules`.
pub(crate) fn find(given: Option<&Path>) -> Result<Kdir, Error> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("build"))
                .filter(|p| p.join("Makefile").is_file())
                .collect();
            found.sort();
            match found.len() {
                1 => found.remove(0),
                0 => {
                    return Err(Error::new("no kernel headers found under /lib/modules").help(
                        "install the headers of the kernel to patch (Debian: apt-get install \
                         linux-headers-amd64), or name them with --kdir DIR",
                    ));
                }
                _ => {
                    let list: Vec<String> = found.iter().map(|p| format!("  {}", p.display())).collect();
                    return Err(Error::new("several kernel build directories under /lib/modules")
                        .detail(list.join("\n"))
                        .help("choose one with --kdir DIR"));
                }
            }
        }
    };
    let uts = path.join("include/generated/utsrelease.h");
    let text = std::fs::read_to_string(&uts).map_err(|e| {
        Error::new(format!("{} is not a configured kernel build directory", path.display()))
            .detail(format!("cannot read {}: {e}", uts.display()))
            .help("pass the `build` directory of installed kernel headers, e.g. /lib/modules/RELEASE/build")
    })?;
    let release = text
        .split('"')
        .nth(1)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::new(format!("no UTS_RELEASE in {}", uts.display())))?
        .to_string();
    Ok(Kdir { path, release })
}

/// Checks the patch's `kernel` glob against `release`.
pub(crate) fn check_glob(glob: Option<&str>, release: &str) -> Result<(), Error> {
    match glob {
        Some(glob) if !glob_match(glob.as_bytes(), release.as_bytes()) => Err(Error::new(format!(
            "the patch is for kernels \"{glob}\", but the kernel build directory is for {release}"
        ))
        .help("build against matching kernel headers with --kdir DIR, or widen the patch's `kernel` glob")),
        _ => Ok(()),
    }
}

/// Matches `text` against a glob where `*` is any run of characters and `?` one character.
///
/// Linear in practice and `O(glob × text)` at worst, whatever the number of `*`: on a mismatch
/// only the last `*` seen takes one more character, since any earlier `*` could only redo what
/// it already tried.
pub(crate) fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    // The position after the last `*` seen, and the text position it was matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                g += 1;
                star = Some((g, t));
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((after, upto)) => {
                    g = after;
                    t = upto + 1;
                    star = Some((after, upto + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

/// Where a release's image and modules are, for its build directory `kdir`: beside it when it
/// is unpacked as `scripts/setup.sh kernels` does (`DIR/RELEASE/{build,vmlinuz,kernel}`, the
/// layout of `/lib/modules/RELEASE` plus the image), else where Debian installs them
/// (`/boot/vmlinuz-RELEASE`, `/lib/modules/RELEASE`).
pub(crate) struct Home {
    /// The kernel image.
    pub(crate) image: PathBuf,
    /// The directory under which its modules are (searched recursively).
    pub(crate) modules: PathBuf,
}

/// The image and modules of `release`, whose build directory is `kdir` (if known).
pub(crate) fn home(kdir: Option<&Path>, release: &str) -> Home {
    let beside = kdir.and_then(Path::parent).filter(|p| p.join("vmlinuz").is_file());
    match beside {
        Some(dir) => Home { image: dir.join("vmlinuz"), modules: dir.to_path_buf() },
        None => Home {
            image: PathBuf::from(format!("/boot/vmlinuz-{release}")),
            modules: PathBuf::from(format!("/lib/modules/{release}")),
        },
    }
}

/// Returns the symbols that the kernel and its modules export (`Module.symvers`).
pub(crate) fn symvers(kdir: &Path) -> Result<HashSet<String>, Error> {
    let path = kdir.join("Module.symvers");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(format!("cannot read {}: {e}", path.display()))
            .help("the kernel build directory must hold the Module.symvers of its kernel")
    })?;
    Ok(text.lines().filter_map(|l| l.split('\t').nth(1)).map(str::to_string).collect())
}

/// Returns the symbols of the kernel's `System.map`, when the kernel image package left one.
pub(crate) fn system_map(release: &str) -> Option<HashSet<String>> {
    let text = std::fs::read_to_string(format!("/boot/System.map-{release}")).ok()?;
    let map: HashSet<String> = text.lines().filter_map(|l| l.split(' ').nth(2)).map(str::to_string).collect();
    // Debian ships a one-line placeholder pointing to its debug package.
    (map.len() > 1000).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"6.1.0-*-amd64", b"6.1.0-48-amd64"));
        assert!(!glob_match(b"6.1.0-*-amd64", b"6.1.0-48-arm64"));
        assert!(glob_match(b"6.?.*", b"6.1.0"));
        assert!(!glob_match(b"5.*", b"6.1.0-48-amd64"));
        assert!(check_glob(Some("5.10.*"), "6.1.0-48-amd64").is_err());
        assert!(check_glob(None, "6.1.0-48-amd64").is_ok());
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"6*", b"6"));
        assert!(!glob_match(b"6?", b"6"));
        assert!(glob_match(b"*-*-amd64", b"6.1.0-48-amd64"));
        assert!(glob_match(b"*a*b", b"xaxxab"));
        assert!(!glob_match(b"*a*b", b"xaxxa"));
        assert!(glob_match(b"a*", b"a"));
        assert!(!glob_match(b"", b"a"));
    }

    /// The definition, by backtracking: exponential, but right.
    fn reference(glob: &[u8], text: &[u8]) -> bool {
        match glob.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((b'?', rest)) => !text.is_empty() && reference(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    #[test]
    fn globs_agree_with_the_definition() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..20_000 {
            let glob: Vec<u8> = (0..next(8)).map(|_| b"ab*?"[next(4) as usize]).collect();
            let text: Vec<u8> = (0..next(8)).map(|_| b"ab"[next(2) as usize]).collect();
            assert_eq!(glob_match(&glob, &text), reference(&glob, &text), "{glob:?} {text:?}");
        }
        let many = [b"*".repeat(40), b"x".to_vec()].concat();
        assert!(!glob_match(&many, b"6.1.0-48-amd64"));
    }
}
