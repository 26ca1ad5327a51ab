//! The kgraft patch language: parsing, checking and lowering `.kgp` sources to Rust.
//!
//! The library is pure: it reads no file and starts no process. `kgraftc` and the build
//! commands wrap it. The usual sequence is:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = r#"
//! patch demo { description: "A demonstration" }
//! replace fn cmdline_proc_show(m: *mut seq_file, v: *mut c_void) -> c_int { 0 }
//! "#;
//! let checked = kgraft_lang::check("demo.kgp", src).map_err(|d| format!("{:?}", d.list))?;
//! let lowered = kgraft_lang::lower(&checked).map_err(|d| format!("{:?}", d.list))?;
//! assert_eq!(lowered.name, "demo");
//! // `lowered.build_source` is the crate's `lib.rs`; map rustc's positions back with
//! // `lowered.map_position(line, column)`.
//! # Ok(())
//! # }
//! ```
//!
//! Both entry points use syn with `proc-macro2`'s span locations, and clear the span table of the
//! calling thread when they return, so they are not for use inside a procedural macro.

mod ast;
mod bindings;
mod cbody;
mod check;
mod codes;
mod diagnostic;
mod helpers;
pub mod kernel;
mod lower;
mod params;
mod parse;
mod prototype;
mod states;
pub mod sympos;
mod syscalls;

pub use codes::{CODES, CodeInfo, explain};

/// The codes of `kgraftc from-diff`'s refusals, which the command reports itself (it reads
/// objects and source trees, which this crate does not).
pub mod from_diff_codes {
    pub use crate::codes::{E0100, E0101, E0102, E0103, E0104, E0105, E0106, E0107, E0108};
}
pub use cbody::{CUnit, SYMPOS_SECTION};
pub use diagnostic::{Diagnostic, Diagnostics, Label, Severity, SourceFile, Span};
/// The codes of the checks `kgraftc build` makes on the linked module.
pub mod build_codes {
    pub use crate::codes::E0048;
}
pub use lower::{LineMap, Lowered};
pub use prototype::closest;

/// The largest source accepted, in bytes; a reader need not read more than one byte past it.
pub const MAX_SOURCE_LEN: usize = parse::MAX_SOURCE_LEN;

/// A source that passed every check, ready to lower.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The source it came from.
    pub source: SourceFile,
    file: ast::File,
    header: check::HeaderInfo,
}

impl Checked {
    /// This source for one target kernel: each `#[sympos(near = "NAME")]` written as the
    /// position it means there, with an error for each that means none.
    fn bound_to(&self, kernel: &kernel::Kernel) -> (Checked, Diagnostics) {
        let mut bound = self.clone();
        let mut diags = Diagnostics::default();
        sympos::bind(&mut bound.file, kernel, &mut diags);
        (bound, diags)
    }

    /// The patch name from the header (also the module's name).
    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// The description from the header.
    pub fn description(&self) -> &str {
        &self.header.description
    }

    /// The kernel release glob from the header, if any.
    pub fn kernel(&self) -> Option<&str> {
        self.header.kernel.as_deref()
    }

    /// Whether the header says `replace_all: true`: the patch atomically replaces the patches
    /// loaded before it. (With `replace_all: NAME`, a module parameter decides that at load.)
    pub fn replace_all(&self) -> bool {
        self.header.replace_all
    }

    /// Whether `replace_all` is left to a module parameter (`replace_all: NAME`).
    pub fn replace_all_from_param(&self) -> bool {
        self.header.replace_param.is_some()
    }

    /// The engine the header asks for (`engine: "klp"` or `"kgraft"`), if it says.
    pub fn engine(&self) -> Option<&str> {
        self.header.engine.as_ref().map(|(e, _)| e.as_str())
    }

    /// The kernel type names the patch's declarations use (signatures, statics, shadow blocks;
    /// bodies are not read), sorted: without a target kernel, each of them is opaque.
    pub fn kernel_types(&self) -> Vec<String> {
        bindings::Uses::of_declarations(&self.file).types.into_keys().collect()
    }

    /// The replacements with a C body (functions and system calls), in source order.
    pub fn c_bodies(&self) -> Vec<CBody> {
        cbody::c_bodies(&self.file)
    }

    /// The kernel functions replaced, as `(object, name, sympos)`, in source order.
    pub fn targets(&self) -> Vec<(String, String, u32)> {
        let mut ignored = Diagnostics::default();
        check::targets(&self.file)
            .iter()
            .map(|t| (t.object.to_owned(), t.func.sig.name.name.clone(), check::sympos(t.func, &mut ignored)))
            .collect()
    }
}

/// A replacement whose body is C (`replace fn NAME(...) in C { ... }`, or `replace syscall`).
#[derive(Clone, Debug)]
pub struct CBody {
    /// The object it replaces a function of (`vmlinux`, or a module's name as written).
    pub object: String,
    /// The function replaced.
    pub name: String,
    /// The body as written, braces included.
    pub body: String,
    /// Where the replacement starts in the source (the byte of `replace`).
    pub start: usize,
    /// The name of the C unit it is compiled in (its `c "NAME" { }` item), if any.
    pub unit: Option<String>,
    /// Whether it is the body of a system call (`replace syscall NAME ... in C`, `name` the
    /// call's, whose source is `SYSCALL_DEFINEn(NAME, ...)`).
    pub syscall: bool,
}

/// The stack given to the thread that runs the parsers: syn descends recursively, and the
/// nesting bound of the parser keeps the depth far below what this holds.
const STACK_SIZE: usize = 256 << 20;

/// Runs `f` on a thread with a large stack (or on this one, if no thread can be started).
fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let mut f = Some(f);
    let spawned = std::thread::scope(|scope| {
        let run = f.take().map(|f| {
            move || {
                let out = f();
                proc_macro2::extra::invalidate_current_thread_spans();
                out
            }
        });
        let handle = std::thread::Builder::new().stack_size(STACK_SIZE).spawn_scoped(scope, run?).ok()?;
        handle.join().ok()
    });
    match spawned {
        Some(out) => out,
        None => match f.take() {
            Some(f) => f(),
            // The thread started and panicked: that is a compiler bug, and it carries on here.
            None => std::panic::resume_unwind(Box::new("kgraft-lang: the checking thread panicked")),
        },
    }
}

/// Parses and checks a source, returning every diagnostic when there is any error.
///
/// `file_name` is only used in the diagnostics' rendering. Never panics, whatever `src` holds.
pub fn check(file_name: &str, src: &str) -> Result<Checked, Diagnostics> {
    let source = SourceFile::new(file_name, src);
    with_stack(move || {
        let mut diags = Diagnostics::default();
        let file = parse::parse(&source.text, &mut diags);
        let syntax_ok = !diags.has_errors();
        let stopped = diags.list.iter().any(|d| d.code == codes::E0027 || d.code == codes::E0028);
        let header = if stopped { check::HeaderInfo::default() } else { check::check(&file, syntax_ok, &mut diags) };
        if diags.has_errors() {
            diags.sort();
            return Err(diags);
        }
        Ok(Checked { source, file, header })
    })
}

/// Checks a source given as bytes: like [`check`], with a diagnostic when they are not UTF-8.
pub fn check_bytes(file_name: &str, bytes: &[u8]) -> Result<Checked, (SourceFile, Diagnostics)> {
    if bytes.len() > MAX_SOURCE_LEN {
        let mut diags = Diagnostics::default();
        diags.push(
            Diagnostic::error(codes::E0027, "the source is too large")
                .primary(Span::new(0, 0), "this file is too large")
                .note(format!("a patch source may be at most {MAX_SOURCE_LEN} bytes")),
        );
        return Err((SourceFile::new(file_name, ""), diags));
    }
    match std::str::from_utf8(bytes) {
        Ok(src) => check(file_name, src).map_err(|d| (SourceFile::new(file_name, src), d)),
        Err(e) => {
            let good = e.valid_up_to();
            let shown = String::from_utf8_lossy(bytes).into_owned();
            // The lossy text has the same bytes up to the first bad sequence.
            let source = SourceFile::new(file_name, shown);
            let mut diags = Diagnostics::default();
            diags.push(
                Diagnostic::error(codes::E0026, "the source is not valid UTF-8")
                    .primary(Span::new(good, good + 1), "invalid UTF-8 starts here")
                    .help("patch sources are UTF-8 text; is this the right file?"),
            );
            Err((source, diags))
        }
    }
}

/// Checks a checked source against the target kernel: every replaced function exists there
/// and can be patched, every signature agrees with the kernel's prototype, every module exists.
///
/// Returns the errors and warnings found (empty when the patch fits the kernel).
pub fn check_against(checked: &Checked, kernel: &kernel::Kernel) -> Diagnostics {
    with_stack(|| {
        let (bound, mut diags) = checked.bound_to(kernel);
        prototype::check(&bound.file, kernel, &mut diags);
        syscalls::check_against(&bound.file, kernel, &mut diags);
        bindings::check_types(&bound.file, kernel, &mut diags);
        diags.sort();
        diags
    })
}

/// Lowers a checked source to the Rust crate described in ARCHITECTURE.md.
///
/// Fails only on a compiler bug (code `E0000`), never on a checked source.
pub fn lower(checked: &Checked) -> Result<Lowered, Diagnostics> {
    with_stack(|| lower::lower(checked, None))
}

/// Lowers a checked source for a known kernel: the kernel types the patch names get `#[repr(C)]`
/// definitions generated from the kernel's BTF, the enumerators it uses become constants, and
/// kernel functions it calls without an `extern` declaration are declared from their prototypes.
pub fn lower_for(checked: &Checked, kernel: &kernel::Kernel) -> Result<Lowered, Diagnostics> {
    with_stack(|| {
        let (bound, diags) = checked.bound_to(kernel);
        if diags.has_errors() {
            return Err(diags);
        }
        lower::lower(&bound, Some(kernel))
    })
}
