//! The checks: every rule of the language that the grammar does not express.
//!
//! Each check pushes its diagnostics and goes on, so one run reports every independent mistake.
//! Rust fragments are parsed with syn from their exact text; syn's error positions are moved back
//! into the `.kgp` file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use syn::visit::Visit;

use crate::ast::*;
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, Span};
use crate::sympos::Position;

pub(crate) use kgraft_rt::rules::MAX_NAME_LEN;

/// The callbacks a patch may have.
pub(crate) const CALLBACKS: &[&str] = &kgraft_rt::rules::CALLBACKS;

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self",
    "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become",
    "box", "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen", "union",
    "_",
];

/// Whether a name is a Rust keyword (strict, reserved or weak-but-refused).
pub(crate) fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name)
}

/// The header's values, resolved.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderInfo {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) kernel: Option<String>,
    pub(crate) replace_all: bool,
    /// `replace_all: NAME`: the module parameter that decides it when the module loads.
    pub(crate) replace_param: Option<Ident>,
    /// `engine: "kgraft"`: the patch is applied by kgraft's own engine, not the livepatch core
    /// (`None`: not said, the build's `--engine` decides).
    pub(crate) engine: Option<(String, Span)>,
    pub(crate) docs: Vec<Doc>,
}

/// Runs every check over a parsed file and returns the header's values.
pub(crate) fn check(file: &File, syntax_ok: bool, diags: &mut Diagnostics) -> HeaderInfo {
    let header = check_header(file, syntax_ok, diags);
    let mut externs = check_externs(file, diags);
    check_globals(file, &mut externs, diags);
    let shadows = check_shadows(file, diags);
    check_replacements(file, syntax_ok, &externs, &shadows, diags);
    check_callbacks(file, &shadows, diags);
    crate::helpers::check(file, &externs, &shadows, diags);
    crate::cbody::check(file, diags);
    crate::states::check(file, &externs, diags);
    crate::syscalls::check(file, &shadows, diags);
    crate::params::check(file, diags);
    crate::params::check_replace_all(file, &header, diags);
    relabel_too_complex(diags);
    header
}

pub(crate) fn keyword(ident: &Ident, what: &str, diags: &mut Diagnostics) -> bool {
    let reserved_prefix = ident.name.starts_with("__kgraft");
    if KEYWORDS.contains(&ident.name.as_str()) || reserved_prefix {
        let why = if reserved_prefix { "names starting with `__kgraft` are reserved" } else { "it is a Rust keyword" };
        diags.push(
            Diagnostic::error(codes::E0029, format!("`{}` cannot be used as {what}", ident.name))
                .primary(ident.span, "reserved name")
                .note(format!("names become Rust names in the generated crate, and {why}"))
                .help("choose another name"),
        );
        return true;
    }
    false
}

/// Resolves the escapes of a string literal's text, or reports the first bad one.
pub(crate) fn unescape(raw: &str, literal: Span, diags: &mut Diagnostics) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\0' {
            let at = literal.start + 1 + i;
            diags.push(
                Diagnostic::error(codes::E0032, "a string may not contain a NUL character")
                    .primary(Span::new(at, at + 1), "NUL character")
                    .note("header strings end up in C strings in the module"),
            );
            return None;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (j, e) = chars.next()?;
        out.push(match e {
            '\\' => '\\',
            '"' => '"',
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            _ => {
                let at = literal.start + 1 + i;
                diags.push(
                    Diagnostic::error(codes::E0032, format!("unknown escape `\\{e}`"))
                        .primary(Span::new(at, literal.start + 1 + j + e.len_utf8()), "not an escape")
                        .help("the escapes are `\\\\`, `\\\"`, `\\n`, `\\t` and `\\r`"),
                );
                return None;
            }
        });
    }
    Some(out)
}

fn check_header(file: &File, syntax_ok: bool, diags: &mut Diagnostics) -> HeaderInfo {
    let headers: Vec<&Header> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Header(h) => Some(h),
            _ => None,
        })
        .collect();
    let mut info = HeaderInfo::default();
    let Some(first) = headers.first() else {
        if syntax_ok {
            diags.push(
                Diagnostic::error(codes::E0002, "this patch has no `patch` header")
                    .primary(Span::new(0, 0), "expected `patch NAME { ... }` in this file")
                    .help("start the file with `patch my_fix { description: \"...\" }`"),
            );
        }
        return info;
    };
    for extra in &headers[1..] {
        diags.push(
            Diagnostic::error(codes::E0003, "more than one `patch` header")
                .primary(extra.keyword, "second header")
                .secondary(first.keyword, "first header here")
                .note("a source describes exactly one live patch")
                .help("merge the two headers, or split the source into two patches"),
        );
    }
    info.docs = first.docs.clone();
    info.name = first.name.name.clone();
    check_patch_name(&first.name, diags);
    check_header_entries(first, &mut info, diags);
    info
}

/// The patch name becomes the module's name: at most 55 bytes of `a-z`, `0-9` and `_`.
fn check_patch_name(name: &Ident, diags: &mut Diagnostics) {
    if name.name.len() > MAX_NAME_LEN {
        diags.push(
            Diagnostic::error(codes::E0008, format!("the patch name is {} bytes long", name.name.len()))
                .primary(name.span, format!("longer than {MAX_NAME_LEN} bytes"))
                .note(format!("the patch name becomes the kernel module's name, limited to {MAX_NAME_LEN} bytes"))
                .help("choose a shorter name"),
        );
    }
    if let Some(bad) = name.name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        diags.push(
            Diagnostic::error(codes::E0007, format!("the patch name `{}` holds `{bad}`", name.name))
                .primary(name.span, "not a valid module name")
                .note("the patch name becomes the kernel module's name: `a-z`, `0-9` and `_` only")
                .help(format!("try `{}`", name.name.to_ascii_lowercase())),
        );
    }
}

/// The header's `key: value` entries: each known key once, with a value of its kind.
fn check_header_entries(h: &Header, info: &mut HeaderInfo, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut description = None;
    for entry in &h.entries {
        let key = entry.key.name.as_str();
        if let Some(prev) = seen.insert(key, entry.key.span) {
            diags.push(
                Diagnostic::error(codes::E0005, format!("`{key}` is given twice"))
                    .primary(entry.key.span, "given again here")
                    .secondary(prev, "first given here")
                    .help("remove one of the two entries"),
            );
            continue;
        }
        match key {
            "description" => description = header_string(entry, "what the patch fixes", diags),
            "kernel" => {
                if let Some(glob) = header_string(entry, "6.1.0-*-amd64", diags) {
                    info.kernel = check_release_glob(glob, entry.value.span(), diags);
                }
            }
            "replace_all" => match &entry.value {
                Value::Bool(b, _) => info.replace_all = *b,
                // Checked against the `param` items with them (E0070).
                Value::Ident(param) => info.replace_param = Some(param.clone()),
                other => diags.push(
                    Diagnostic::error(codes::E0006, "`replace_all` takes `true`, `false` or a module parameter")
                        .primary(other.span(), "expected `true`, `false` or a parameter's name"),
                ),
            },
            "engine" => {
                if let Some(engine) = header_string(entry, "kgraft", diags) {
                    if ENGINES.contains(&engine.as_str()) {
                        info.engine = Some((engine, entry.value.span()));
                    } else {
                        diags.push(
                            Diagnostic::error(
                                codes::E0006,
                                format!("`engine` is \"klp\" or \"kgraft\", not {engine:?}"),
                            )
                            .primary(entry.value.span(), "not an engine")
                            .note("\"klp\" is the kernel's livepatch core, \"kgraft\" kgraft's own engine")
                            .help(suggest(&engine, ENGINES)),
                        );
                    }
                }
            }
            _ => diags.push(
                Diagnostic::error(codes::E0004, format!("unknown header key `{key}`"))
                    .primary(entry.key.span, "unknown key")
                    .note("the header keys are `description`, `kernel`, `replace_all` and `engine`")
                    .help(suggest(key, &["description", "kernel", "replace_all", "engine"])),
            ),
        }
    }
    match description {
        Some(d) => info.description = d,
        None if !seen.contains_key("description") => diags.push(
            Diagnostic::error(codes::E0009, "the header has no `description`")
                .primary(h.name.span, "this patch needs a description")
                .help("add `description: \"what the patch fixes\",` to the header"),
        ),
        None => {}
    }
}

/// The values of the header key `engine`.
const ENGINES: &[&str] = &["klp", "kgraft"];

/// The string value of a header entry, unescaped; `example` shows the right form otherwise.
fn header_string(entry: &Entry, example: &str, diags: &mut Diagnostics) -> Option<String> {
    let key = &entry.key.name;
    match &entry.value {
        Value::Str { raw, span } => unescape(raw, *span, diags),
        other => {
            diags.push(
                Diagnostic::error(codes::E0006, format!("`{key}` takes a string"))
                    .primary(other.span(), "expected a string in double quotes")
                    .help(format!("write `{key}: \"{example}\"`")),
            );
            None
        }
    }
}

/// A release glob holds letters, digits, `.-_+~` and the wildcards `*` and `?`.
fn check_release_glob(glob: String, span: Span, diags: &mut Diagnostics) -> Option<String> {
    let bad = glob.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-_+~*?".contains(*c)));
    if !glob.is_empty() && bad.is_none() {
        return Some(glob);
    }
    let what = match bad {
        Some(c) => format!("`{}` is not allowed in a release glob", c.escape_default()),
        None => "the release glob is empty".to_owned(),
    };
    diags.push(
        Diagnostic::error(codes::E0010, "bad kernel release glob")
            .primary(span, what)
            .note("a release glob holds letters, digits, `.-_+~` and the wildcards `*` and `?`")
            .help("for example `kernel: \"6.1.0-*-amd64\"`"),
    );
    None
}

fn suggest(word: &str, choices: &[&str]) -> String {
    let best = choices.iter().min_by_key(|c| distance(word, c)).copied().unwrap_or("");
    if distance(word, best) <= 3 {
        format!("did you mean `{best}`?")
    } else {
        format!("use one of {}", choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))
    }
}

pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().take(64).enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The label of a fragment refused by [`too_complex`]; [`check`] turns such diagnostics into
/// `E0028`.
const TOO_COMPLEX: &str = "the checker's recursion limit is reached here";

/// The longest run of tokens that a recursive-descent parser may have to nest, counted along
/// the path of brackets from the fragment's start, resetting at `;` and `,`.
///
/// syn descends once per prefix operator, pointer type or `else if`, so a run of thousands of
/// them would exhaust any stack; real code stays far below this.
pub(crate) const MAX_RUN: usize = 4000;

/// Returns where a fragment's token runs exceed [`MAX_RUN`], if they do.
fn too_complex(frag: &Fragment) -> Option<Span> {
    fn walk(stream: proc_macro2::TokenStream, base: usize, frag: &Fragment) -> Option<Span> {
        let mut run = 0;
        for tt in stream {
            match &tt {
                proc_macro2::TokenTree::Punct(p) if matches!(p.as_char(), ';' | ',') => run = 0,
                proc_macro2::TokenTree::Group(g) => {
                    run += 1;
                    if let Some(at) = walk(g.stream(), base + run, frag) {
                        return Some(at);
                    }
                }
                _ => run += 1,
            }
            if base + run > MAX_RUN {
                return Some(node_span(tt.span(), frag));
            }
        }
        None
    }
    let stream: proc_macro2::TokenStream = frag.text.parse().ok()?;
    walk(stream, 0, frag)
}

/// Parses a fragment with syn; on failure returns the error's span in the `.kgp` file.
pub(crate) fn parse_fragment<T: syn::parse::Parse>(frag: &Fragment) -> Result<T, (Span, String)> {
    if let Some(at) = too_complex(frag) {
        return Err((at, TOO_COMPLEX.to_owned()));
    }
    // Lexed first, so that text that is no Rust token is told apart by its error's type.
    let stream: proc_macro2::TokenStream = frag.text.parse().map_err(|e: proc_macro2::LexError| {
        let message = "not a Rust token: a stray character, or an unterminated literal or comment".to_owned();
        (span_in(e.span().byte_range(), frag), message)
    })?;
    syn::parse2::<T>(stream).map_err(|e| (error_span(&e, frag), e.to_string()))
}

/// Gives the diagnostics of fragments refused by [`too_complex`] their own code and words.
fn relabel_too_complex(diags: &mut Diagnostics) {
    for d in &mut diags.list {
        if d.labels.iter().any(|l| l.primary && l.message == TOO_COMPLEX) {
            d.code = codes::E0028.to_owned();
            d.message = "this code nests too deep to check".to_owned();
            d.notes = vec![format!(
                "a statement may hold at most {MAX_RUN} tokens between `;` or `,`, counting those of the brackets around it"
            )];
            d.help = Some("split the expression or type into several statements".to_owned());
        }
    }
}

/// Moves a syn error's span into the `.kgp` file.
pub(crate) fn error_span(e: &syn::Error, frag: &Fragment) -> Span {
    span_in(e.span().byte_range(), frag)
}

/// Moves a byte range of a fragment's text into the `.kgp` file. The empty range at 0 is where
/// syn puts what it found missing at the end of the input (the call site of its parse), so it
/// becomes the fragment's last character; any other empty range, the character there.
fn span_in(range: std::ops::Range<usize>, frag: &Fragment) -> Span {
    if range == (0..0) && !frag.text.is_empty() {
        let end = frag.span.end;
        let last = frag.text.chars().last().map(char::len_utf8).unwrap_or(0);
        return Span::new(end - last, end);
    }
    let within = |o: usize| o.min(frag.text.len());
    let (start, mut end) = (within(range.start), within(range.end));
    if start == end {
        // An empty span would underline nothing: take the character there.
        end += frag.text[start..].chars().next().map(char::len_utf8).unwrap_or(0);
    }
    Span::new(frag.span.start + start, frag.span.start + end)
}

/// Moves a span of a syn node parsed from `frag` into the `.kgp` file.
pub(crate) fn node_span(span: proc_macro2::Span, frag: &Fragment) -> Span {
    let range = span.byte_range();
    let within = |o: usize| o.min(frag.text.len());
    Span::new(frag.span.start + within(range.start), frag.span.start + within(range.end))
}

pub(crate) fn check_type(ty: &Fragment, diags: &mut Diagnostics) {
    if let Err((span, message)) = parse_fragment::<syn::Type>(ty) {
        let mut d = Diagnostic::error(codes::E0013, format!("`{}` is not a type", ty.text)).primary(span, message);
        if span != ty.span {
            d = d.secondary(ty.span, "in this type");
        }
        diags.push(
            d.note("parameter, return, static and field types are Rust types; kernel types are named as they are in C")
                .help("for example `*mut seq_file`, `c_int` or `u64`"),
        );
    }
}

fn check_signature(sig: &Signature, diags: &mut Diagnostics) {
    keyword(&sig.name, "a function name", diags);
    for p in &sig.params {
        if let Param::Named { name, ty, .. } = p {
            if name.name != "_" {
                keyword(name, "a parameter name", diags);
            }
            check_type(ty, diags);
        }
    }
    if let Some(ret) = &sig.ret {
        check_type(ret, diags);
    }
}

fn check_externs(file: &File, diags: &mut Diagnostics) -> BTreeMap<String, Span> {
    let mut names: BTreeMap<String, Span> = BTreeMap::new();
    // Top-level blocks and those of `module` blocks: symbol names are one namespace.
    let blocks = file.items.iter().flat_map(|item| match item {
        Item::Extern(block) => std::slice::from_ref(block),
        Item::Module(m) => m.externs.as_slice(),
        _ => &[],
    });
    for block in blocks {
        for ext in &block.items {
            let name = ext.name();
            if let Some(prev) = names.get(&name.name) {
                diags.push(
                    Diagnostic::error(codes::E0022, format!("`{}` is declared twice", name.name))
                        .primary(name.span, "declared again here")
                        .secondary(*prev, "first declared here")
                        .help("remove one of the two declarations"),
                );
            } else {
                names.insert(name.name.clone(), name.span);
            }
            match ext {
                ExternItem::Fn(sig) => {
                    check_signature(sig, diags);
                    let last = sig.params.len().saturating_sub(1);
                    for (i, p) in sig.params.iter().enumerate() {
                        if let Param::Variadic(span) = p
                            && i != last
                        {
                            diags.push(
                                Diagnostic::error(codes::E0025, "`...` must be the last parameter")
                                    .primary(*span, "not last")
                                    .help("move `...` to the end of the parameter list"),
                            );
                        }
                    }
                }
                ExternItem::Static(s) => {
                    keyword(&s.name, "a static's name", diags);
                    check_type(&s.ty, diags);
                }
            }
        }
    }
    names
}

fn check_globals(file: &File, names: &mut BTreeMap<String, Span>, diags: &mut Diagnostics) {
    for item in &file.items {
        let Item::Global(g) = item else { continue };
        keyword(&g.name, "a static's name", diags);
        if let Some(prev) = names.get(&g.name.name) {
            diags.push(
                Diagnostic::error(codes::E0022, format!("`{}` is declared twice", g.name.name))
                    .primary(g.name.span, "declared again here")
                    .secondary(*prev, "first declared here")
                    .help("rename one of the two"),
            );
        } else {
            names.insert(g.name.name.clone(), g.name.span);
        }
        check_type(&g.ty, diags);
        if let Err((span, message)) = parse_fragment::<syn::Expr>(&g.init) {
            diags.push(
                Diagnostic::error(
                    codes::E0014,
                    format!("the initial value of `{}` is not a Rust expression", g.name.name),
                )
                .primary(span, message)
                .help("write a constant expression, such as `AtomicBool::new(false)`"),
            );
        }
    }
}

/// The shadow declarations: kernel type to its field names.
pub(crate) type Shadows = BTreeMap<String, BTreeSet<String>>;

fn check_shadows(file: &File, diags: &mut Diagnostics) -> Shadows {
    let mut shadows = Shadows::new();
    // Field name to where it is declared, per kernel type, across the type's blocks.
    let mut fields_of: HashMap<String, HashMap<String, Span>> = HashMap::new();
    let mut ids: HashMap<u64, Span> = HashMap::new();
    for item in &file.items {
        let Item::Shadow(block) = item else { continue };
        keyword(&block.ty, "a type name", diags);
        let options = shadow_options(block, diags);
        if let Some((id, span)) = options.id
            && let Some(prev) = ids.insert(id, span)
        {
            diags.push(
                Diagnostic::error(codes::E0030, format!("two shadow blocks have the id {id:#x}"))
                    .primary(span, "used again here")
                    .secondary(prev, "first used here")
                    .note("each block is one klp shadow variable, allocated under its own id")
                    .help("give each block its own `id = N`, or merge the blocks"),
            );
        }
        if let Some(name) = &options.drop {
            check_shadow_drop(file, block, name, diags);
        }
        let fields = fields_of.entry(block.ty.name.clone()).or_default();
        for f in &block.fields {
            keyword(&f.name, "a field name", diags);
            if let Some(prev) = fields.insert(f.name.name.clone(), f.name.span) {
                diags.push(
                    Diagnostic::error(codes::E0015, format!("field `{}` is declared twice", f.name.name))
                        .primary(f.name.span, "declared again here")
                        .secondary(prev, "first declared here")
                        .note(
                            "the field's name says which block `shadow!(ptr.field)` reaches, so it is unique per type",
                        )
                        .help("rename or remove one of the two fields"),
                );
            }
            check_type(&f.ty, diags);
            if let Err((span, message)) = parse_fragment::<syn::Expr>(&f.init) {
                diags.push(
                    Diagnostic::error(
                        codes::E0014,
                        format!("the initial value of `{}` is not a Rust expression", f.name.name),
                    )
                    .primary(span, message)
                    .help("write a constant expression, such as `0` or `[0; 4]`"),
                );
            }
        }
        shadows.entry(block.ty.name.clone()).or_default().extend(block.fields.iter().map(|f| f.name.name.clone()));
    }
    shadows
}

/// The options of a shadow block, resolved.
#[derive(Default)]
pub(crate) struct ShadowOptions {
    /// The declared id, with where it is written.
    pub(crate) id: Option<(u64, Span)>,
    /// Whether another patch owns the data.
    pub(crate) keep: bool,
    /// The destructor helper.
    pub(crate) drop: Option<Ident>,
}

/// Reads a shadow block's options, reporting malformed ones (E0050).
pub(crate) fn shadow_options(block: &ShadowBlock, diags: &mut Diagnostics) -> ShadowOptions {
    let mut out = ShadowOptions::default();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for opt in &block.options {
        let key = opt.key.name.as_str();
        let bad = |message: String, label: &str| {
            Diagnostic::error(codes::E0050, message)
                .primary(opt.span, label.to_owned())
                .note("a shadow block takes `id = N`, `keep` and `drop = helper`, each at most once")
        };
        if let Some(prev) = seen.insert(key, opt.span) {
            diags.push(bad(format!("`{key}` is given twice"), "given again here").secondary(prev, "first given here"));
            continue;
        }
        match (key, &opt.value) {
            ("id", Some(v)) => match parse_u64(&v.name) {
                Some(id) => out.id = Some((id, v.span)),
                None => diags.push(
                    bad(format!("`{}` is not a shadow id", v.name), "expected an integer below 2^64")
                        .help("write `id = 1` or `id = 0x4b47`"),
                ),
            },
            ("keep", None) => out.keep = true,
            ("drop", Some(v)) if parse_u64(&v.name).is_none() => out.drop = Some(v.clone()),
            ("id" | "drop", _) => {
                diags.push(bad(format!("`{key}` needs a value"), "expected `= value`").help(if key == "id" {
                    "write `id = 1`"
                } else {
                    "write `drop = my_destructor`"
                }))
            }
            ("keep", Some(_)) => {
                diags.push(bad("`keep` takes no value".to_owned(), "remove `= ...`").help("write `keep`"))
            }
            _ => diags.push(
                bad(format!("unknown shadow option `{key}`"), "unknown option")
                    .help(suggest(key, &["id", "keep", "drop"])),
            ),
        }
    }
    out
}

/// Parses a decimal or `0x` hexadecimal integer.
fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Checks that a block's `drop = NAME` names a helper that takes the object and every field.
fn check_shadow_drop(file: &File, block: &ShadowBlock, name: &Ident, diags: &mut Diagnostics) {
    let helper = file.items.iter().find_map(|i| match i {
        Item::Helper(h) if h.sig.name.name == name.name => Some(h),
        _ => None,
    });
    let want = block.fields.len() + 1;
    match helper {
        None => diags.push(
            Diagnostic::error(codes::E0051, format!("the destructor `{}` is not a helper function", name.name))
                .primary(name.span, "no `fn` of this name")
                .note("a shadow block's destructor is a helper `fn` of the patch")
                .help(format!(
                    "declare `fn {}(obj: *mut {}, ...) {{ ... }}` taking the object, then each field",
                    name.name, block.ty.name
                )),
        ),
        Some(h) if h.sig.params.len() != want => diags.push(
            Diagnostic::error(
                codes::E0051,
                format!("the destructor `{}` takes {} parameters, not {want}", name.name, h.sig.params.len()),
            )
            .primary(name.span, "named as the destructor here")
            .secondary(h.sig.name.span, "declared here")
            .note("a destructor takes the object, then each field of the block in order, moved out of the data")
            .help(format!("give `{}` {want} parameters", name.name)),
        ),
        Some(_) => {}
    }
}

/// A replacement with the object it lives in.
pub(crate) struct Target<'a> {
    pub(crate) object: &'a str,
    pub(crate) func: &'a Replace,
}

/// Lists every replacement with its object, in source order.
pub(crate) fn targets(file: &File) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for item in &file.items {
        match item {
            Item::Replace(r) => out.push(Target { object: "vmlinux", func: r }),
            Item::Module(m) => out.extend(m.fns.iter().map(|r| Target { object: &m.name, func: r })),
            _ => {}
        }
    }
    out
}

/// Reads `#[sympos(N)]` or `#[sympos(near = "NAME")]`, reporting bad attributes; `None` when
/// absent.
pub(crate) fn position(func: &Replace, diags: &mut Diagnostics) -> Option<Position> {
    let mut pos = None;
    let mut seen = false;
    for attr in &func.attrs {
        if attr.name.name != "sympos" {
            diags.push(
                Diagnostic::error(codes::E0024, format!("unknown attribute `{}`", attr.name.name))
                    .primary(attr.span, "unknown attribute")
                    .note("a replacement accepts `#[sympos(N)]` only")
                    .help("remove the attribute"),
            );
            continue;
        }
        if seen {
            diags.push(
                Diagnostic::error(codes::E0024, "`#[sympos]` is given twice")
                    .primary(attr.span, "given again here")
                    .help("keep one `#[sympos(N)]`"),
            );
            continue;
        }
        seen = true;
        match attr.arg.as_ref().and_then(|a| crate::sympos::parse(&a.text)) {
            Some(p) => pos = Some(p),
            None => diags.push(
                Diagnostic::error(codes::E0024, "`#[sympos]` needs a positive integer or `near = \"NAME\"`")
                    .primary(attr.arg.as_ref().map(|a| a.span).unwrap_or(attr.span), "expected a number such as 1 or 2")
                    .note("the symbol position counts from 1 among the local symbols of the same name")
                    .help(
                        "write `#[sympos(1)]` for the first symbol of that name in /proc/kallsyms, or \
                         `#[sympos(near = \"NAME\")]` for the one nearest the unique symbol NAME",
                    ),
            ),
        }
    }
    pos
}

/// The position `#[sympos(N)]` gives; 0 when absent, and for a `near` one not yet bound to a
/// target (see [`crate::sympos::bind`]).
pub(crate) fn sympos(func: &Replace, diags: &mut Diagnostics) -> u32 {
    match position(func, diags) {
        Some(Position::Index(n)) => n,
        Some(Position::Near(_)) | None => 0,
    }
}

fn check_module_name(m: &ModuleBlock, diags: &mut Diagnostics) {
    let name = &m.name;
    let bad = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'));
    let problem = if name.is_empty() {
        Some("the module name is empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("the module name is {} bytes long, more than {MAX_NAME_LEN}", name.len()))
    } else {
        bad.map(|c| format!("`{}` is not allowed in a module name", c.escape_default()))
    };
    if let Some(problem) = problem {
        diags.push(
            Diagnostic::error(codes::E0023, format!("bad module name \"{}\"", name.escape_default()))
                .primary(m.name_span, problem)
                .note("a module name is 1 to 55 bytes of ASCII letters, digits, `_` and `-`")
                .help("use the name `lsmod` shows"),
        );
    } else if name == "vmlinux" {
        diags.push(
            Diagnostic::error(codes::E0023, "`vmlinux` is not a loadable module")
                .primary(m.name_span, "functions of vmlinux need no `module` block")
                .help("move these replacements out of the `module` block"),
        );
    }
}

fn check_replacements(
    file: &File,
    syntax_ok: bool,
    externs: &BTreeMap<String, Span>,
    shadows: &Shadows,
    diags: &mut Diagnostics,
) {
    for item in &file.items {
        if let Item::Module(m) = item {
            check_module_name(m, diags);
        }
    }
    let all = targets(file);
    // Callbacks, a registered module or `replace_all` (which takes earlier patches off; a
    // parameter may ask for it) are work enough for a patch without replacements.
    let does_something =
        file.items.iter().any(|i| matches!(i, Item::Callback(_) | Item::Module(_) | Item::Syscall(_) | Item::State(_)))
            || file.items.iter().any(|i| match i {
                Item::Header(h) => h
                    .entries
                    .iter()
                    .any(|e| e.key.name == "replace_all" && matches!(e.value, Value::Bool(true, _) | Value::Ident(_))),
                _ => false,
            });
    if all.is_empty() && syntax_ok && !does_something {
        let at = file
            .items
            .iter()
            .find_map(|i| match i {
                Item::Header(h) => Some(h.name.span),
                _ => None,
            })
            .unwrap_or_default();
        diags.push(
            Diagnostic::error(codes::E0020, "this patch does nothing")
                .primary(at, "nothing to patch")
                .note("a live patch replaces functions, runs callbacks, registers modules or replaces earlier patches")
                .help("add a `replace fn NAME(...) { ... }` item, a `replace syscall`, a callback, or `replace_all: true`"),
        );
    }
    let mut seen: HashMap<(String, String, Option<Position>), Span> = HashMap::new();
    for t in &all {
        let r = t.func;
        let pos = position(r, diags);
        check_signature(&r.sig, diags);
        let key = (t.object.replace('-', "_"), r.sig.name.name.clone(), pos);
        if let Some(prev) = seen.get(&key) {
            diags.push(
                Diagnostic::error(codes::E0011, format!("`{}` in {} is replaced twice", r.sig.name.name, t.object))
                    .primary(r.sig.name.span, "replaced again here")
                    .secondary(*prev, "first replaced here")
                    .note("one patch site can jump to one replacement")
                    .help("merge the two bodies, or add `#[sympos(N)]` if the name occurs more than once"),
            );
        } else {
            seen.insert(key, r.sig.name.span);
        }
        for p in &r.sig.params {
            if let Param::Variadic(span) = p {
                diags.push(
                    Diagnostic::error(codes::E0012, format!("the replacement of `{}` is variadic", r.sig.name.name))
                        .primary(*span, "a replacement cannot take `...`")
                        .note("Rust functions other than foreign declarations cannot take a C variable argument list")
                        .help("replace a non-variadic function on the same path instead"),
                );
            }
        }
        if let Some(ext) = externs.get(&r.sig.name.name) {
            diags.push(
                Diagnostic::error(
                    codes::E0021,
                    format!("`{}` is both replaced and declared `extern`", r.sig.name.name),
                )
                .primary(r.sig.name.span, "the replacement")
                .secondary(*ext, "the extern declaration")
                .note("both would have the same name in the generated crate")
                .help("remove the extern declaration; a replacement is not called through its own name"),
            );
        }
        let params: HashMap<&str, Option<&str>> = r
            .sig
            .params
            .iter()
            .filter_map(|p| match p {
                Param::Named { name, ty, .. } => Some((name.name.as_str(), pointee(&ty.text))),
                Param::Variadic(_) => None,
            })
            .collect();
        // C bodies are gcc's to parse (see `cbody.rs`).
        if r.in_c.is_none() {
            check_body(&r.body, &params, shadows, diags);
        }
    }
}

/// Returns `T` for a type written `*mut T` or `*const T` with `T` a plain name.
pub(crate) fn pointee(ty: &str) -> Option<&str> {
    let rest = ty.trim().strip_prefix('*')?.trim_start();
    let rest = rest.strip_prefix("mut").or_else(|| rest.strip_prefix("const"))?.trim();
    rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_').then_some(rest)
}

pub(crate) fn check_body(
    body: &Fragment,
    params: &HashMap<&str, Option<&str>>,
    shadows: &Shadows,
    diags: &mut Diagnostics,
) {
    let block = match parse_fragment::<syn::Block>(body) {
        Ok(block) => block,
        Err((span, message)) => {
            diags.push(
                Diagnostic::error(codes::E0014, "Rust syntax error in this body")
                    .primary(span, message)
                    .note("bodies are Rust blocks, parsed from the text of the source"),
            );
            return;
        }
    };
    let mut uses = ShadowUses { body, params, shadows, diags };
    uses.visit_block(&block);
}

struct ShadowUses<'a> {
    body: &'a Fragment,
    params: &'a HashMap<&'a str, Option<&'a str>>,
    shadows: &'a Shadows,
    diags: &'a mut Diagnostics,
}

/// The macros that reach shadow data through a pointer and a field.
pub(crate) const SHADOW_MACROS: &[&str] = &["shadow", "shadow_get", "shadow_alloc", "shadow_free"];

impl<'ast> Visit<'ast> for ShadowUses<'_> {
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let Some(name) = mac.path.get_ident().map(ToString::to_string) else { return };
        if name == "shadow_free_all" {
            return self.free_all(mac);
        }
        if !SHADOW_MACROS.contains(&name.as_str()) {
            return;
        }
        let whole = node_span(mac.delimiter.span().join(), self.body);
        let whole = Span::new(node_span(mac.path.segments[0].ident.span(), self.body).start, whole.end);
        let expr = match syn::parse2::<syn::Expr>(mac.tokens.clone()) {
            // `shadow_alloc!(ptr.field = value)` sets the field in the constructor.
            Ok(syn::Expr::Assign(a)) if name == "shadow_alloc" => *a.left,
            Ok(e) => e,
            Err(_) => return self.malformed(whole),
        };
        let (base, field) = match expr {
            syn::Expr::Field(f) => match (&f.member, &*f.base) {
                (syn::Member::Named(name), syn::Expr::Paren(_)) => (f.base, name.clone()),
                (syn::Member::Named(name), syn::Expr::Path(p)) if p.path.get_ident().is_some() => {
                    (f.base, name.clone())
                }
                _ => return self.malformed(whole),
            },
            _ => return self.malformed(whole),
        };
        let field_name = field.to_string();
        let field_span = node_span(field.span(), self.body);
        let ty = match &*base {
            syn::Expr::Path(p) => {
                p.path.get_ident().and_then(|i| self.params.get(i.to_string().as_str()).copied().flatten())
            }
            _ => None,
        };
        match ty {
            Some(ty) => {
                self.field_of(ty, &field_name, field_span, node_span(syn::spanned::Spanned::span(&*base), self.body))
            }
            None if self.shadows.is_empty() => self.diags.push(
                Diagnostic::error(codes::E0017, format!("`{name}!` is used but no shadow data is declared"))
                    .primary(whole, "no `shadow TYPE { ... }` block declares this field")
                    .help(format!("declare `shadow TYPE {{ {field_name}: u64 = 0 }}` for the pointer's type")),
            ),
            None if !self.shadows.values().any(|f| f.contains(&field_name)) => self.diags.push(
                Diagnostic::error(codes::E0016, format!("no shadow field is called `{field_name}`"))
                    .primary(field_span, "not declared")
                    .help(known_fields(&self.shadows.values().flatten().cloned().collect())),
            ),
            None => {}
        }
    }
}

impl ShadowUses<'_> {
    /// Checks that the kernel type `ty` has the shadow field `field`.
    fn field_of(&mut self, ty: &str, field: &str, field_span: Span, base_span: Span) {
        match self.shadows.get(ty) {
            None => self.diags.push(
                Diagnostic::error(codes::E0017, format!("`{ty}` has no shadow data"))
                    .primary(base_span, format!("this is a `{ty}`"))
                    .note("the shadow macros reach a field declared in a `shadow TYPE { ... }` block")
                    .help(format!("declare `shadow {ty} {{ {field}: u64 = 0 }}`, or fix the pointer")),
            ),
            Some(fields) if !fields.contains(field) => self.diags.push(
                Diagnostic::error(codes::E0016, format!("`{ty}` has no shadow field `{field}`"))
                    .primary(field_span, "not declared")
                    .help(known_fields(fields)),
            ),
            Some(_) => {}
        }
    }

    /// Checks `shadow_free_all!(TYPE.field)`.
    fn free_all(&mut self, mac: &syn::Macro) {
        let whole = node_span(mac.delimiter.span().join(), self.body);
        let whole = Span::new(node_span(mac.path.segments[0].ident.span(), self.body).start, whole.end);
        let Ok(syn::Expr::Field(f)) = syn::parse2::<syn::Expr>(mac.tokens.clone()) else {
            return self.malformed(whole);
        };
        let (syn::Member::Named(field), syn::Expr::Path(p)) = (&f.member, &*f.base) else {
            return self.malformed(whole);
        };
        let Some(ty) = p.path.get_ident() else { return self.malformed(whole) };
        let base_span = node_span(ty.span(), self.body);
        self.field_of(&ty.to_string(), &field.to_string(), node_span(field.span(), self.body), base_span);
    }

    fn malformed(&mut self, span: Span) {
        self.diags.push(
            Diagnostic::error(codes::E0031, "a shadow macro takes `pointer.field`")
                .primary(span, "expected `ptr.field` or `(expression).field`")
                .note("`shadow_alloc!` also takes `ptr.field = value`; `shadow_free_all!` takes `TYPE.field`")
                .help("for example `*shadow!(dev.reads) += 1`"),
        );
    }
}

fn known_fields(fields: &BTreeSet<String>) -> String {
    let list: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    format!("the declared fields are {}", list.join(", "))
}

fn check_callbacks(file: &File, shadows: &Shadows, diags: &mut Diagnostics) {
    // Per object (vmlinux is ""): the callbacks seen.
    let mut seen: HashMap<(String, &str), Span> = HashMap::new();
    let no_params = HashMap::new();
    let all = file.items.iter().flat_map(|item| match item {
        Item::Callback(cb) => vec![("", cb)],
        Item::Module(m) => m.callbacks.iter().map(|cb| (m.name.as_str(), cb)).collect(),
        _ => Vec::new(),
    });
    for (object, cb) in all {
        let kind = cb.kind.name.as_str();
        if let Some(p) = &cb.param {
            keyword(p, "a callback's object name", diags);
        }
        if !CALLBACKS.contains(&kind) {
            diags.push(
                Diagnostic::error(codes::E0018, format!("unknown callback `{kind}`"))
                    .primary(cb.kind.span, "not a callback")
                    .note("the callbacks are `pre_patch`, `post_patch`, `pre_unpatch` and `post_unpatch`")
                    .help(suggest(kind, CALLBACKS)),
            );
        } else if let Some(prev) = seen.insert((object.replace('-', "_"), kind), cb.kind.span) {
            let whose = if object.is_empty() { "vmlinux".to_owned() } else { format!("module `{object}`") };
            diags.push(
                Diagnostic::error(codes::E0019, format!("`on {kind}` is given twice for {whose}"))
                    .primary(cb.kind.span, "given again here")
                    .secondary(prev, "first given here")
                    .help("merge the two bodies"),
            );
        }
        check_body(&cb.body, &no_params, shadows, diags);
    }
}
