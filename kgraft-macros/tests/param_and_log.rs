//! A patch whose `replace_all` is a module parameter, and whose body logs with `pr_info!`.

use std::ffi::{CStr, c_char, c_int};
use std::sync::Mutex;

use kgraft_rt::prelude::*;

/// The module parameter `replace`, as the patch's C file defines it for a kernel.
#[unsafe(no_mangle)]
static mut replace: c_int = 0;

/// Logs its argument.
///
/// # Safety
///
/// Calls the kernel's `_printk` (here, the test's).
#[kgraft_macros::replace(name = "report", object = "vmlinux")]
pub unsafe extern "C" fn report(n: c_int) -> c_int {
    // SAFETY: `_printk` is the test's, which reads the format and the name.
    unsafe { pr_info!("report: %d\n", n) }
}

kgraft_macros::patch! {
    name: "param_and_log",
    description: "replace_all from a parameter, and a log line",
    replace_all: replace,
    functions: [report],
}

/// The format and the first argument of each `_printk` call.
static LOGGED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Stands in for the kernel's `_printk`, which `pr_info!` calls as a variadic function: the
/// x86-64 calling convention passes the first two arguments the same way either side.
///
/// # Safety
///
/// `fmt` and `name` are C strings.
#[unsafe(no_mangle)]
unsafe extern "C" fn _printk(fmt: *const c_char, name: *const c_char) -> c_int {
    // SAFETY: the caller's contract.
    let (fmt, name) = unsafe { (CStr::from_ptr(fmt), CStr::from_ptr(name)) };
    LOGGED.lock().expect("not poisoned").push((fmt.to_string_lossy().into(), name.to_string_lossy().into()));
    0
}

#[test]
fn the_parameter_decides_replace_all_when_read() {
    assert!(!__KGRAFT_PATCH.replace_all, "not fixed in the descriptor");
    assert!(!__KGRAFT_PATCH.replaces_all(), "the parameter is 0");
    // SAFETY: the only test that writes the parameter; the kernel writes it when the module
    // loads, before the patch is applied.
    unsafe { replace = 1 };
    assert!(__KGRAFT_PATCH.replaces_all(), "the parameter is 1");
    // SAFETY: as above.
    unsafe { replace = 0 };
}

#[cfg(target_arch = "x86_64")]
#[test]
fn pr_info_logs_after_the_patch_name() {
    // SAFETY: `report` calls the test's `_printk`.
    unsafe { report(7) };
    let logged = LOGGED.lock().expect("not poisoned").clone();
    assert_eq!(logged, [("\x016%s: report: %d\n".to_owned(), "param_and_log".to_owned())]);
}
