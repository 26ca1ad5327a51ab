//! Fixes written for kpatch-build, read as what they mean.
//!
//! kpatch's test patches and many distributors' fixes include kpatch's own headers
//! (`kpatch-macros.h`, `kpatch-syscall.h`), which are not in the kernel's source, and use their
//! macros. Those that only steer kpatch-build's object comparison have a plain meaning here:
//! `KPATCH_SYSCALL_DEFINEn` defines a system call (kgraft replaces its entries; kpatch's variant
//! exists only to give the inner function a new name), `KPATCH_PRINTK` prints, and the
//! ignore-section marker marks nothing kgraft compares. `KPATCH_IGNORE_FUNCTION(f)` keeps `f`
//! out of the patch. The rest (callbacks taking kpatch's `patch_object`, forcing a function past
//! the consistency model) has no equivalent in a C file, and is refused with what to write.
//!
//! The translation is made on the fixed text, line for line: an include becomes an empty line,
//! so that every line keeps its number (messages quote `__LINE__`).

/// The fixed text with kpatch's macros translated, and what the translation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Translated {
    /// The text to compile.
    pub(crate) text: String,
    /// What was translated, one line each, for the user.
    pub(crate) notes: Vec<String>,
    /// Functions the fix asks to leave out (`KPATCH_IGNORE_FUNCTION`).
    pub(crate) ignored: Vec<String>,
}

/// kpatch's own headers.
const HEADERS: &[&str] = &["kpatch-macros.h", "kpatch-syscall.h", "kpatch.h", "kpatch-patch.h"];

/// Macros with no meaning in a C file of a live patch, and what to write instead.
const REFUSED: &[(&str, &str)] = &[
    (
        "KPATCH_PRE_PATCH_CALLBACK",
        "write the callback as `on pre_patch(obj) { ... }` in the .kgp (after from-diff) and take the macro out of the fix",
    ),
    (
        "KPATCH_POST_PATCH_CALLBACK",
        "write the callback as `on post_patch(obj) { ... }` in the .kgp (after from-diff) and take the macro out of the fix",
    ),
    (
        "KPATCH_PRE_UNPATCH_CALLBACK",
        "write the callback as `on pre_unpatch(obj) { ... }` in the .kgp (after from-diff) and take the macro out of the fix",
    ),
    (
        "KPATCH_POST_UNPATCH_CALLBACK",
        "write the callback as `on post_unpatch(obj) { ... }` in the .kgp (after from-diff) and take the macro out of \
         the fix",
    ),
    (
        "KPATCH_FORCE_UNSAFE",
        "kgraft has no per-function exemption from the consistency model; a transition that cannot finish is \
         completed with `kgraftc kernel force NAME`, by an operator who has judged it safe",
    ),
    ("KPATCH_PRINTK_DEFERRED", "call printk_deferred() itself"),
    ("patch_object", "kpatch's callback argument; kgraft callbacks are `on KIND(obj) { ... }` items of the .kgp"),
];

/// Translates kpatch's macros in `text`, a file of the fix (`rel`); an error names the line and
/// what to do.
pub(crate) fn translate(rel: &str, text: &str) -> Result<Translated, String> {
    if !text.contains("KPATCH_") && !text.contains("kpatch-") && !text.contains("patch_object") {
        return Ok(Translated { text: text.to_string(), ..Translated::default() });
    }
    let mut out = Translated::default();
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let at = format!("{rel}:{}", number + 1);
        if let Some(header) = included(line).filter(|h| HEADERS.contains(&h.rsplit('/').next().unwrap_or(h))) {
            out.notes.push(format!("{at}: #include \"{header}\" dropped (kpatch's own header)"));
            out.text.push_str(if line.ends_with('\n') { "\n" } else { "" });
            continue;
        }
        if let Some((name, help)) = REFUSED.iter().find(|(name, _)| has_word(line, name)) {
            return Err(format!("{at} uses kpatch's `{name}`, which has no meaning in a kgraft patch: {help}"));
        }
        let mut line = line.to_string();
        for n in 1..=6 {
            let (from, to) = (format!("KPATCH_SYSCALL_DEFINE{n}"), format!("SYSCALL_DEFINE{n}"));
            if has_word(&line, &from) {
                line = replace_word(&line, &from, &to);
                out.notes.push(format!("{at}: {from} read as {to} (kgraft replaces the call's entries)"));
            }
        }
        if has_word(&line, "KPATCH_PRINTK") {
            line = replace_word(&line, "KPATCH_PRINTK", "printk");
            out.notes.push(format!("{at}: KPATCH_PRINTK read as printk"));
        }
        let trimmed = line.trim();
        if let Some(arg) = statement_arg(trimmed, "KPATCH_IGNORE_SECTION") {
            out.notes.push(format!("{at}: KPATCH_IGNORE_SECTION({arg}) dropped (kgraft compares functions only)"));
            line = blank(&line);
        } else if let Some(arg) = statement_arg(trimmed, "KPATCH_IGNORE_FUNCTION") {
            out.notes.push(format!("{at}: KPATCH_IGNORE_FUNCTION({arg}): {arg} is left out of the patch"));
            out.ignored.push(arg.to_string());
            line = blank(&line);
        }
        if let Some(name) = kpatch_word(&line) {
            return Err(format!("{at} uses kpatch's `{name}`, which kgraft does not know"));
        }
        out.text.push_str(&line);
    }
    Ok(out)
}

/// The first identifier of `line` that starts with `KPATCH_`.
fn kpatch_word(line: &str) -> Option<&str> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let start =
        line.match_indices("KPATCH_").map(|(i, _)| i).find(|&i| !line[..i].chars().next_back().is_some_and(ident))?;
    let len = line[start..].find(|c: char| !ident(c)).unwrap_or(line.len() - start);
    Some(&line[start..start + len])
}

/// The header an `#include` line names.
fn included(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("include")?.trim_start();
    let (open, close) = match rest.chars().next()? {
        '"' => ('"', '"'),
        '<' => ('<', '>'),
        _ => return None,
    };
    let rest = rest.strip_prefix(open)?;
    Some(&rest[..rest.find(close)?])
}

/// Whether `word` occurs in `line` as a whole identifier.
fn has_word(line: &str, word: &str) -> bool {
    word_at(line, word).is_some()
}

/// The first offset of `word` in `line` as a whole identifier.
fn word_at(line: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).map(|(i, _)| i).find(|&i| {
        !line[..i].chars().next_back().is_some_and(ident) && !line[i + word.len()..].chars().next().is_some_and(ident)
    })
}

/// `line` with every whole `word` replaced by `with`.
fn replace_word(line: &str, word: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = word_at(rest, word) {
        out.push_str(&rest[..i]);
        out.push_str(with);
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The argument of a statement `MACRO(arg);` that fills the line.
fn statement_arg<'a>(trimmed: &'a str, name: &str) -> Option<&'a str> {
    let inner = trimmed.strip_prefix(name)?.trim_start().strip_prefix('(')?;
    let inner = inner.trim_end().strip_suffix(';').unwrap_or(inner).trim_end().strip_suffix(')')?;
    Some(inner.trim())
}

/// An empty line in place of `line`, keeping its end.
fn blank(line: &str) -> String {
    if line.ends_with('\n') { "\n".to_string() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_file_is_left_as_it_is() {
        let text = "static int x;\n#include \"internal.h\"\n";
        assert_eq!(translate("a.c", text).unwrap(), Translated { text: text.into(), ..Translated::default() });
    }

    #[test]
    fn syscall_and_printk_read_as_the_kernels_keeping_line_numbers() {
        let text = "int a;\n#include \"kpatch-syscall.h\"\nKPATCH_SYSCALL_DEFINE1(newuname, struct new_utsname __user *, \
                    name)\n{\n\tKPATCH_PRINTK(\"x %d\\n\", 1);\n}\n";
        let t = translate("kernel/sys.c", text).unwrap();
        assert_eq!(
            t.text,
            "int a;\n\nSYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)\n{\n\tprintk(\"x %d\\n\", 1);\n}\n"
        );
        assert_eq!(t.text.lines().count(), text.lines().count());
        assert!(t.notes[0].starts_with("kernel/sys.c:2: #include \"kpatch-syscall.h\" dropped"), "{:?}", t.notes);
        assert!(t.notes[1].contains("KPATCH_SYSCALL_DEFINE1 read as SYSCALL_DEFINE1"), "{:?}", t.notes);
    }

    #[test]
    fn ignored_functions_are_named_and_their_marker_dropped() {
        let text = "void f(void) {}\nKPATCH_IGNORE_FUNCTION(f);\nKPATCH_IGNORE_SECTION(\"__ex\");\n";
        let t = translate("a.c", text).unwrap();
        assert_eq!(t.text, "void f(void) {}\n\n\n");
        assert_eq!(t.ignored, vec!["f".to_string()]);
    }

    #[test]
    fn callbacks_and_forcing_are_refused_with_what_to_write() {
        let text = "static int pre(patch_object *obj) { return 0; }\n";
        let e = translate("d/j.c", text).unwrap_err();
        assert!(e.starts_with("d/j.c:1 uses kpatch's `patch_object`"), "{e}");
        let e = translate("d/j.c", "int x;\nKPATCH_PRE_PATCH_CALLBACK(pre);\n").unwrap_err();
        assert!(e.contains("d/j.c:2") && e.contains("on pre_patch(obj)"), "{e}");
        let e = translate("a.c", "KPATCH_FORCE_UNSAFE(f);\n").unwrap_err();
        assert!(e.contains("kgraftc kernel force"), "{e}");
        let e = translate("a.c", "KPATCH_NEW_THING(f);\n").unwrap_err();
        assert!(e.contains("`KPATCH_NEW_THING`, which kgraft does not know"), "{e}");
    }

    #[test]
    fn a_longer_name_is_not_taken_for_the_macro() {
        assert!(!has_word("KPATCH_PRINTK_DEFERRED(x)", "KPATCH_PRINTK"));
        assert_eq!(replace_word("MY_KPATCH_PRINTK(KPATCH_PRINTK)", "KPATCH_PRINTK", "p"), "MY_KPATCH_PRINTK(p)");
        assert_eq!(translate("a.c", "MY_KPATCH_X(1);\n").unwrap().text, "MY_KPATCH_X(1);\n");
    }
}
