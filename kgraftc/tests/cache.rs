//! The cache holds what kgraftc trusts (kernel descriptions, builds, sources): a cache directory
//! that is a symbolic link, or another user's, is refused and nothing is read from or written
//! to it; one of this user's that others could write is made private.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cache-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    dir
}

/// `kgraftc check` of the fixture kernel, which caches its description, with `cache` as the
/// cache; returns the exit status and standard error.
fn check_with_cache(cache: &Path) -> (Option<i32>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
        .args(["check", "--no-probe", "--vmlinux"])
        .arg(root.join("tests/fixtures/kernel/vmlinux"))
        .arg(root.join("tests/ui/kernel_type_module_own.kgp"))
        .arg("--module")
        .arg(root.join("tests/fixtures/kernel/fixture_mod.ko"))
        .env("KGRAFT_CACHE_DIR", cache)
        .output()
        .expect("kgraftc runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn entries(dir: &Path) -> usize {
    walk(dir)
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
        .sum()
}

#[test]
fn a_symlinked_cache_is_refused_and_left_alone() {
    let dir = scratch("symlink");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("a directory");
    let link = dir.join("cache");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("a symlink");
    let (code, err) = check_with_cache(&link);
    assert_eq!(code, Some(0), "the check itself goes on without a cache: {err}");
    assert!(err.contains("is a symbolic link: kgraftc trusts what its cache holds"), "{err}");
    assert_eq!(entries(&elsewhere), 0, "nothing written through the link");
}

#[test]
fn a_cache_others_can_write_is_made_private_and_used() {
    let dir = scratch("mode");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).expect("a directory");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, err) = check_with_cache(&cache);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning: the cache directory"), "{err}");
    let mode = std::fs::metadata(&cache).expect("the cache").mode() & 0o777;
    assert_eq!(mode & 0o022, 0, "still writable by others: {mode:o}");
    assert!(entries(&cache) > 0, "the description was cached");
}

#[test]
fn another_users_cache_is_refused() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let dir = scratch("owner");
    let cache = dir.join("cache");
    std::fs::create_dir_all(cache.join("kernels")).expect("a directory");
    // A description planted by `nobody`, as a shared XDG_CACHE_HOME would let it.
    std::fs::write(cache.join("kernels/planted.kernel"), b"planted").expect("a file");
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).expect("chown");
    let (code, err) = check_with_cache(&cache);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("belongs to user 65534, not to this one (0)"), "{err}");
    assert_eq!(entries(&cache), 1, "nothing added to another user's cache");
}

/// An image rewritten with its size and modification time put back (`touch -r`) is read
/// again: the cached description is keyed by what no one can put back (change time, inode).
#[test]
fn an_image_rewritten_with_the_same_size_and_time_is_read_again() {
    let dir = scratch("stale");
    let image = dir.join("vmlinux");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel/vmlinux"), &image).expect("a copy");
    let kgp = dir.join("p.kgp");
    std::fs::write(
        &kgp,
        "patch p { description: \"d\" }\nreplace fn cmdline_proc_show(m: *mut seq_file, v: *mut c_void) -> c_int { 0 }\n",
    )
    .expect("a patch");
    let expand = || {
        let out = Command::new(env!("CARGO_BIN_EXE_kgraftc"))
            .args(["expand", "--no-probe", "--vmlinux"])
            .arg(&image)
            .arg(&kgp)
            .env("KGRAFT_CACHE_DIR", dir.join("cache"))
            .output()
            .expect("kgraftc runs");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(expand().contains("pub index: loff_t"));
    // A member renamed in the BTF's strings, the file's size and times put back.
    let before = std::fs::metadata(&image).expect("the image");
    let bytes = std::fs::read(&image).expect("the image");
    let at = bytes.windows(7).position(|w| w == b"\0index\0").expect("the member's name");
    let mut changed = bytes.clone();
    changed[at + 5] = b'y';
    std::fs::write(&image, &changed).expect("rewritten");
    let times = std::fs::FileTimes::new()
        .set_accessed(before.accessed().expect("atime"))
        .set_modified(before.modified().expect("mtime"));
    std::fs::File::options().write(true).open(&image).expect("the image").set_times(times).expect("times put back");
    let after = std::fs::metadata(&image).expect("the image");
    assert_eq!((after.len(), after.modified().ok()), (before.len(), before.modified().ok()));
    let text = expand();
    assert!(text.contains("pub indey: loff_t"), "the stale description was used:\n{text}");
}
