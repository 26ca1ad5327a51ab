//! The proof that a generated patch is the fix: each C body, compiled as the patch module's C
//! file is, has the same code as the fixed translation unit's function.

use std::path::Path;

use super::objdiff::{self, Unit};

/// The verdict for one replacement.
pub(crate) struct Verdict {
    /// The replaced function.
    pub(crate) name: String,
    /// `None` when the code is the same; else how it differs.
    pub(crate) difference: Option<String>,
}

/// Lowers `kgp` (generated from `input`, named `file_name`), compiles its C file through kbuild
/// as a module's (with `-I ksrc`) in `work`, and compares the C body of each replaced function
/// (the patch's names taken as the kernel's) with that function in the fixed unit.
pub(crate) fn prove(
    kgp: &str,
    file_name: &str,
    input: &super::generate::Input<'_>,
    kdir: &Path,
    ksrc: &Path,
    work: &Path,
) -> Result<Vec<Verdict>, String> {
    let (after, rel) = (input.after, input.unit.rel.as_str());
    let prefix = input.unit.c_body_prefix();
    let checked = kgraft_lang::check(file_name, kgp).map_err(|d| {
        let first = d.list.first().map_or(String::new(), |d| format!("{}: {}", d.code, d.message));
        format!("the generated patch does not pass the language's checks ({first}); this is a bug of from-diff")
    })?;
    let lowered = kgraft_lang::lower(&checked).map_err(|_| "the generated patch does not lower".to_string())?;
    let c = lowered.c_source.ok_or("the generated patch has no C file")?;
    std::fs::create_dir_all(work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let kbuild = format!(
        "obj-m := kgraft_proof.o\nkgraft_proof-y := kgraft_proof_c.o\nccflags-y := -I{} -ffunction-sections -fdata-sections\n",
        ksrc.display()
    );
    std::fs::write(work.join("Kbuild"), kbuild).map_err(|e| e.to_string())?;
    std::fs::write(work.join("kgraft_proof_c.c"), &c).map_err(|e| e.to_string())?;
    super::tu::make_object(kdir, work, "kgraft_proof_c.o")
        .map_err(|e| format!("the generated patch's C does not compile:\n{e}"))?;
    let data = std::fs::read(work.join("kgraft_proof_c.o")).map_err(|e| e.to_string())?;
    let mut patch = Unit::read(&data)?;
    patch.strip_prefix(&prefix);
    // The patch's messages name the `.kgp` where the kernel's name the unit.
    patch.without_line_numbers(&[file_name, rel]);
    let mut verdicts = Vec::new();
    for name in input.analysis.replaced.keys() {
        let difference = match (patch.functions.get(name), after.functions.get(name)) {
            (Some(p), Some(a)) => objdiff::compare(a, p).map(|d| d.to_string()),
            (None, _) => Some(format!("the patch has no function `{prefix}{name}`")),
            (_, None) => Some("the fixed unit has no such function".into()),
        };
        verdicts.push(Verdict { name: name.clone(), difference });
    }
    Ok(verdicts)
}
