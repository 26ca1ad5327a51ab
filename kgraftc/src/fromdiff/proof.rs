//! The proof that a generated patch is the fix: each C body, compiled as the patch module's C
//! file is, has the same code as the fixed translation unit's function.

use std::path::Path;

use super::objdiff::{self, Unit};

/// The verdict for one replacement.
pub(crate) struct Verdict {
    /// The unit it comes from.
    pub(crate) unit: String,
    /// The replaced function.
    pub(crate) name: String,
    /// `None` when the code is the same; else how it differs.
    pub(crate) difference: Option<String>,
    /// Whether, the code differing, the two make the same references (calls, data, strings),
    /// as many times each: gcc compiled the same source differently in a smaller unit.
    pub(crate) same_references: bool,
}

impl Verdict {
    /// Whether the patch's function is accepted as the fix's: the same code, or the same
    /// references where gcc's optimisation of the smaller unit differs.
    pub(crate) fn holds(&self) -> bool {
        self.difference.is_none() || self.same_references
    }

    /// The verdict in words, as printed and as written in the `.kgp`.
    pub(crate) fn describe(&self) -> String {
        match &self.difference {
            None => format!("same code as the fixed {}", self.unit),
            Some(d) if self.same_references => format!(
                "same calls and data as the fixed {}, other instructions ({d}): gcc optimises the patch's smaller \
                 unit differently",
                self.unit
            ),
            Some(d) => format!("DIFFERS from the fixed {}: {d}", self.unit),
        }
    }
}

/// Lowers `kgp` (generated from `inputs`, one per unit, named `file_name`), compiles each of its
/// C units through kbuild as a module's (with `-I ksrc`) in `work`, and compares the C body of
/// each replaced function (the patch's names taken as the kernel's) with that function in its
/// fixed unit.
pub(crate) fn prove(
    kgp: &str,
    file_name: &str,
    inputs: &[super::generate::Input<'_>],
    kdir: &Path,
    ksrc: &Path,
    work: &Path,
) -> Result<Vec<Verdict>, String> {
    let checked = kgraft_lang::check(file_name, kgp).map_err(|d| {
        let first = d.list.first().map_or(String::new(), |d| format!("{}: {}", d.code, d.message));
        format!("the generated patch does not pass the language's checks ({first}); this is a bug of from-diff")
    })?;
    let lowered = kgraft_lang::lower(&checked).map_err(|_| "the generated patch does not lower".to_string())?;
    std::fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let kbuild = format!(
        "obj-m := kgraft_proof.o\nccflags-y := -I{} -ffunction-sections -fdata-sections\n",
        crate::linux::kbuild::make_path(ksrc).map_err(|e| e.to_string())?
    );
    let auto_conf = std::fs::read_to_string(kdir.join("include/config/auto.conf")).unwrap_or_default();
    let mut verdicts = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let (after, rel) = (input.after, input.unit.rel.as_str());
        let prefix = input.unit.c_body_prefix();
        let c = lowered
            .c_units
            .iter()
            .find(|u| u.name.as_deref() == Some(rel))
            .ok_or_else(|| format!("the generated patch has no C unit \"{rel}\""))?;
        // A system call's body is proved through its entries: the proof's file defines the call
        // again with `SYSCALL_DEFINE` around the patch's C body, as the kernel's file does, and
        // its entries (and `__do_sys_NAME`, where gcc kept it out of line) are compared.
        let mut text = c.text.clone();
        let mut syscall_parts = Vec::new();
        let src = super::csource::Source::new(input.text);
        let functions = src.functions();
        for body in checked.c_bodies().iter().filter(|b| b.syscall && b.unit.as_deref() == Some(rel)) {
            let Some(f) = functions.iter().find(|f| f.name == format!("sys_{}", body.name) && f.macro_form.is_some())
            else {
                return Err(format!("{rel} defines no system call `{}`", body.name));
            };
            text.push_str(&format!("\n{}\n{}\n", f.declaration, body.body));
            let inner = format!("__do_sys_{}", body.name);
            if after.functions.contains_key(&inner) {
                syscall_parts.push(inner);
            }
        }
        let stem = format!("kgraft_proof_c{index}");
        // The unit's flags, as `kgraftc build --ksrc` gives them.
        let flags = super::tu::unit_cflags(ksrc, &auto_conf, rel);
        std::fs::write(work.join("Kbuild"), format!("{kbuild}CFLAGS_{stem}.o := {}\n", flags.join(" ")))
            .map_err(|e| e.to_string())?;
        std::fs::write(work.join(format!("{stem}.c")), &text).map_err(|e| e.to_string())?;
        super::tu::make_object(kdir, work, &format!("{stem}.o"))
            .map_err(|e| format!("the generated patch's C unit \"{rel}\" does not compile:\n{e}"))?;
        let data = std::fs::read(work.join(format!("{stem}.o"))).map_err(|e| e.to_string())?;
        let mut patch = Unit::read(&data)?;
        patch.strip_prefix(&prefix);
        // The patch's messages name the `.kgp` where the kernel's name the unit.
        patch.without_line_numbers(&[file_name, rel]);
        for name in input.analysis.replaced.keys().chain(&syscall_parts) {
            let (difference, same_references) = match (patch.functions.get(name), after.functions.get(name)) {
                (Some(p), Some(a)) => (objdiff::compare(a, p).map(|d| d.to_string()), objdiff::same_references(a, p)),
                (None, _) => (Some(format!("the patch has no function `{prefix}{name}`")), false),
                (_, None) => (Some("the fixed unit has no such function".into()), false),
            };
            verdicts.push(Verdict { unit: rel.to_owned(), name: name.clone(), difference, same_references });
        }
    }
    Ok(verdicts)
}
