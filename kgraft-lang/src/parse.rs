//! The parser: source text to syntax tree plus syntax errors, never a panic.
//!
//! The grammar (`grammar.pest`) is driven one item at a time. After a syntax error the parser
//! skips to the next line that starts an item at its first column and goes on, so one run
//! reports the syntax errors of independent items.

use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

use crate::ast::*;
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, Span};

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct Grammar;

/// The largest source accepted, in bytes.
pub(crate) const MAX_SOURCE_LEN: usize = 8 << 20;
/// The deepest bracket nesting accepted.
pub(crate) const MAX_NESTING: usize = 128;
/// After this many syntax errors the parser stops.
const MAX_SYNTAX_ERRORS: usize = 32;

/// Parses a whole source; the tree holds every item that parsed.
pub(crate) fn parse(src: &str, diags: &mut Diagnostics) -> File {
    let mut file = File::default();
    if src.len() > MAX_SOURCE_LEN {
        diags.push(
            Diagnostic::error(codes::E0027, format!("the source is {} bytes long", src.len()))
                .primary(Span::new(0, 0), "this file is too large")
                .note(format!("a patch source may be at most {MAX_SOURCE_LEN} bytes")),
        );
        return file;
    }
    if let Some(at) = too_deep(src) {
        diags.push(
            Diagnostic::error(codes::E0028, "brackets nest too deep")
                .primary(Span::new(at, at + 1), format!("this bracket is nested more than {MAX_NESTING} levels deep"))
                .help("flatten the code; no reviewable patch nests this deep"),
        );
        return file;
    }

    let mut pos = 0;
    set_budget(src.len());
    match Grammar::parse(Rule::file_head, src) {
        Ok(mut pairs) => {
            if let Some(head) = pairs.next() {
                pos = head.as_span().end();
                file.docs =
                    head.into_inner().filter(|p| p.as_rule() == Rule::inner_doc).map(|p| doc(p, 0, 3)).collect();
            }
        }
        Err(_) => return file,
    }

    let mut errors = 0;
    while pos <= src.len() {
        // The longest run of items that parse from here.
        let rest = &src[pos..];
        set_budget(rest.len());
        let run = match Grammar::parse(Rule::items, rest) {
            Ok(mut pairs) => pairs.next(),
            Err(err) => {
                diags.push(syntax_error(src, pos, &err.variant));
                break;
            }
        };
        if let Some(run) = run {
            let end = run.as_span().end();
            for item in run.into_inner().filter(|p| p.as_rule() == Rule::item) {
                if let Some(it) = item.into_inner().next() {
                    file.items.push(self::item(it, pos));
                }
            }
            pos += end;
        }
        // Where the run stopped: the end of the file, or a syntax error.
        let rest = &src[pos..];
        set_budget(rest.len());
        match Grammar::parse(Rule::next_item, rest) {
            Ok(mut pairs) => {
                let Some(next) = pairs.next() else { break };
                let end = next.as_span().end();
                match next.into_inner().next() {
                    Some(item) if item.as_rule() == Rule::item => {
                        if let Some(it) = item.into_inner().next() {
                            file.items.push(self::item(it, pos));
                        }
                    }
                    _ => break,
                }
                if end == 0 {
                    break;
                }
                pos += end;
            }
            Err(err) => {
                let at = pos
                    + match err.location {
                        InputLocation::Pos(p) => p,
                        InputLocation::Span((s, _)) => s,
                    };
                let limited = is_call_limit(&err.variant);
                diags.push(syntax_error(src, at, &err.variant));
                errors += 1;
                if limited || errors >= MAX_SYNTAX_ERRORS {
                    break;
                }
                match resync(src, at.max(pos)) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    file
}

/// Bounds the parser's work on the next `len` bytes, linearly.
///
/// The grammar never backtracks exponentially, but unclosed comments or strings can make it
/// rescan the rest of the file once per opener; the budget turns such input into a diagnostic.
/// pest's limit is process-wide and read when a parse starts, so concurrent checks only ever
/// see one another's (equally linear) budgets.
fn set_budget(len: usize) {
    let budget = len.saturating_mul(400).saturating_add(1_000_000);
    pest::set_call_limit(std::num::NonZeroUsize::new(budget));
}

/// Returns the offset of the first bracket nested deeper than [`MAX_NESTING`], if any.
///
/// The scan skips string literals and comments, so a bracket inside them does not count, and
/// counts `<` only right after a name or `::`, where it opens generic arguments.
fn too_deep(src: &str) -> Option<usize> {
    let bytes = src.as_bytes();
    let mut depth = 0usize;
    let mut angle = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut level = 0usize;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        level += 1;
                        i += 2;
                        if level > MAX_NESTING {
                            return Some(i - 2);
                        }
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        level -= 1;
                        i += 2;
                        if level == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth + angle > MAX_NESTING {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if bytes[i] != b')' {
                    angle = 0;
                }
            }
            b';' => angle = 0,
            b'<' if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b':' | b'<')) => {
                angle += 1;
                if depth + angle > MAX_NESTING {
                    return Some(i);
                }
            }
            b'>' if i > 0 && !matches!(bytes[i - 1], b'-' | b'=') => angle = angle.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Returns the start of the first line after `at` that begins an item in its first column.
fn resync(src: &str, at: usize) -> Option<usize> {
    const STARTS: &[&str] =
        &["patch", "extern", "shadow", "replace", "module", "on", "static", "#[", "///", "c {", "fn"];
    let mut line = src[at..].find('\n').map(|i| at + i + 1)?;
    loop {
        let rest = &src[line..];
        let starts_item = STARTS.iter().any(|s| {
            rest.starts_with(s) && !rest[s.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        });
        if starts_item {
            return Some(line);
        }
        line = rest.find('\n').map(|i| line + i + 1)?;
    }
}

/// Whether pest stopped at the call limit this parser sets: the grammar raises no custom error
/// of its own, so a custom error can only be that limit (its wording is pest's, not a contract).
fn is_call_limit(variant: &ErrorVariant<Rule>) -> bool {
    matches!(variant, ErrorVariant::CustomError { .. })
}

fn syntax_error(src: &str, at: usize, variant: &ErrorVariant<Rule>) -> Diagnostic {
    if let (true, ErrorVariant::CustomError { message }) = (is_call_limit(variant), variant) {
        return Diagnostic::error(codes::E0028, "this source is too complex to parse")
            .primary(Span::new(at, at), "the parser gave up here")
            .note(format!("the parser's {message}"))
            .help("close the brackets, strings and comments around here");
    }
    let found = match src[at..].chars().next() {
        None => "the end of the file".to_owned(),
        Some(c) if c.is_control() || c == '\u{FFFD}' => format!("the character U+{:04X}", c as u32),
        Some(_) => {
            let word: String = src[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').take(24).collect();
            if word.is_empty() { format!("`{}`", src[at..].chars().next().unwrap_or(' ')) } else { format!("`{word}`") }
        }
    };
    let len = src[at..].chars().next().map(char::len_utf8).unwrap_or(0);
    let mut expected: Vec<&'static str> = match variant {
        ErrorVariant::ParsingError { positives, .. } => positives.iter().filter_map(|r| describe(*r)).collect(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    expected.sort_unstable();
    expected.dedup();
    let unclosed =
        matches!(expected.as_slice(), ["a `{ ... }` body"] | ["a `{ ... }` C body"]) && src[at..].starts_with('{');
    if unclosed {
        return Diagnostic::error(codes::E0001, "unclosed body")
            .primary(Span::new(at, at + 1), "this `{` is never closed")
            .help("add the matching `}`");
    }
    let message = match expected.as_slice() {
        [] => format!("syntax error: unexpected {found}"),
        [one] => format!("expected {one}, found {found}"),
        [init @ .., last] => format!("expected {} or {last}, found {found}", init.join(", ")),
    };
    let label = match expected.as_slice() {
        [] => "unexpected here".to_owned(),
        [one] => format!("expected {one}"),
        _ => "unexpected here".to_owned(),
    };
    Diagnostic::error(codes::E0001, message).primary(Span::new(at, at + len), label)
}

/// Names a rule the way an error message should; `None` for rules never worth naming.
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "the end of the file",
        Rule::item => {
            "an item (`patch`, `extern`, `shadow`, `replace fn`, `replace syscall`, `module`, `on`, `static`, `fn`, `c`, `state` or `param`)"
        }
        Rule::header | Rule::kw_patch => "`patch`",
        Rule::extern_block | Rule::kw_extern => "`extern`",
        Rule::shadow_block | Rule::kw_shadow => "`shadow`",
        Rule::replace_fn | Rule::kw_replace => "`replace`",
        Rule::module_block | Rule::kw_module => "`module`",
        Rule::callback | Rule::kw_on => "`on`",
        Rule::cb_param => "`(name)`",
        Rule::global => "`static`",
        Rule::init => "an expression",
        Rule::kw_fn => "`fn`",
        Rule::kw_static => "`static`",
        Rule::kw_mut => "`mut`",
        Rule::extern_fn => "`fn`",
        Rule::extern_static => "`static`",
        Rule::entry => "a `key: value` entry",
        Rule::value => "a value (a string, `true`, `false` or a number)",
        Rule::string => "a string in double quotes",
        Rule::ident => "a name",
        Rule::field => "a shadow field (`name: Type = value`)",
        Rule::shadow_opts => "shadow options (`(id = N, keep, drop = f)`)",
        Rule::shadow_opt => "a shadow option (`id = N`, `keep` or `drop = f`)",
        Rule::attribute => "an attribute",
        Rule::param => "a parameter (`name: Type`)",
        Rule::variadic => "`...`",
        Rule::ret => "`->`",
        Rule::block => "a `{ ... }` body",
        Rule::c_block => "a `{ ... }` C body",
        Rule::in_c => "`in C`",
        Rule::kw_c | Rule::c_item => "`c`",
        Rule::helper_fn => "`fn`",
        Rule::replace_sys | Rule::kw_syscall => "`syscall`",
        Rule::state_item | Rule::kw_state => "`state`",
        Rule::mod_param | Rule::kw_param => "`param`",
        Rule::static_mut => "`static`",
        Rule::ty => "a type",
        Rule::expr => "an expression",
        Rule::inner_doc | Rule::outer_doc => "a doc comment",
        _ => return None,
    })
}

fn span(pair: &Pair<'_, Rule>, base: usize) -> Span {
    let s = pair.as_span();
    Span::new(base + s.start(), base + s.end())
}

fn ident(pair: Pair<'_, Rule>, base: usize) -> Ident {
    Ident { name: pair.as_str().to_owned(), span: span(&pair, base) }
}

fn fragment(pair: Pair<'_, Rule>, base: usize) -> Fragment {
    let text = pair.as_str();
    let trimmed = text.trim_end();
    let s = span(&pair, base);
    Fragment { text: trimmed.to_owned(), span: Span::new(s.start, s.start + trimmed.len()) }
}

fn doc(pair: Pair<'_, Rule>, base: usize, marker: usize) -> Doc {
    Doc { text: pair.as_str()[marker..].trim_end().to_owned(), span: span(&pair, base) }
}

fn item(pair: Pair<'_, Rule>, base: usize) -> Item {
    match pair.as_rule() {
        Rule::header => Item::Header(header(pair, base)),
        Rule::extern_block => Item::Extern(extern_block(pair, base)),
        Rule::shadow_block => Item::Shadow(shadow_block(pair, base)),
        Rule::module_block => Item::Module(module_block(pair, base)),
        Rule::callback => Item::Callback(callback(pair, base)),
        Rule::global => Item::Global(global(pair, base)),
        Rule::static_mut => Item::StaticMut(global(pair, base)),
        Rule::c_item => Item::C(c_item(pair, base)),
        Rule::helper_fn => Item::Helper(helper_fn(pair, base)),
        Rule::replace_sys => Item::Syscall(replace_sys(pair, base)),
        Rule::state_item => Item::State(state_item(pair, base)),
        Rule::mod_param => Item::Param(mod_param(pair, base)),
        _ => Item::Replace(replace_fn(pair, base)),
    }
}

fn header(pair: Pair<'_, Rule>, base: usize) -> Header {
    let mut h = Header {
        docs: Vec::new(),
        keyword: Span::default(),
        name: Ident { name: String::new(), span: Span::default() },
        entries: Vec::new(),
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => h.docs.push(doc(p, base, 3)),
            Rule::kw_patch => h.keyword = span(&p, base),
            Rule::ident => h.name = ident(p, base),
            Rule::entry => {
                let mut inner = p.into_inner();
                let (Some(key), Some(value)) = (inner.next(), inner.next()) else { continue };
                let key = ident(key, base);
                let Some(v) = value.into_inner().next() else { continue };
                let value = match v.as_rule() {
                    Rule::string => {
                        let s = span(&v, base);
                        let raw = v.into_inner().next().map(|t| t.as_str().to_owned()).unwrap_or_default();
                        Value::Str { raw, span: s }
                    }
                    Rule::boolean => Value::Bool(v.as_str() == "true", span(&v, base)),
                    Rule::integer => Value::Int(span(&v, base)),
                    _ => Value::Ident(ident(v, base)),
                };
                h.entries.push(Entry { key, value });
            }
            _ => {}
        }
    }
    h
}

fn params(pair: Pair<'_, Rule>, base: usize) -> Vec<Param> {
    pair.into_inner()
        .map(|p| match p.as_rule() {
            Rule::variadic => Param::Variadic(span(&p, base)),
            _ => {
                let mut mutable = false;
                let mut name = None;
                let mut ty = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::kw_mut => mutable = true,
                        Rule::ident => name = Some(ident(q, base)),
                        _ => ty = Some(fragment(q, base)),
                    }
                }
                Param::Named {
                    mutable,
                    name: name.unwrap_or(Ident { name: String::new(), span: Span::default() }),
                    ty: ty.unwrap_or(Fragment { text: String::new(), span: Span::default() }),
                }
            }
        })
        .collect()
}

fn signature(pairs: &mut Vec<Pair<'_, Rule>>, docs: Vec<Doc>, base: usize) -> Signature {
    let mut sig =
        Signature { docs, name: Ident { name: String::new(), span: Span::default() }, params: Vec::new(), ret: None };
    for p in pairs.drain(..) {
        match p.as_rule() {
            Rule::ident => sig.name = ident(p, base),
            Rule::params => sig.params = params(p, base),
            Rule::ret => sig.ret = p.into_inner().next().map(|t| fragment(t, base)),
            _ => {}
        }
    }
    sig
}

fn extern_block(pair: Pair<'_, Rule>, base: usize) -> ExternBlock {
    let mut block = ExternBlock { docs: Vec::new(), items: Vec::new() };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => block.docs.push(doc(p, base, 3)),
            Rule::extern_fn => {
                let mut docs = Vec::new();
                let mut rest = Vec::new();
                for q in p.into_inner() {
                    if q.as_rule() == Rule::outer_doc {
                        docs.push(doc(q, base, 3));
                    } else {
                        rest.push(q);
                    }
                }
                block.items.push(ExternItem::Fn(signature(&mut rest, docs, base)));
            }
            Rule::extern_static => {
                let mut s = Static {
                    docs: Vec::new(),
                    mutable: false,
                    name: Ident { name: String::new(), span: Span::default() },
                    ty: Fragment { text: String::new(), span: Span::default() },
                };
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::outer_doc => s.docs.push(doc(q, base, 3)),
                        Rule::kw_mut => s.mutable = true,
                        Rule::ident => s.name = ident(q, base),
                        Rule::ty => s.ty = fragment(q, base),
                        _ => {}
                    }
                }
                block.items.push(ExternItem::Static(s));
            }
            _ => {}
        }
    }
    block
}

fn shadow_block(pair: Pair<'_, Rule>, base: usize) -> ShadowBlock {
    let mut block = ShadowBlock {
        docs: Vec::new(),
        ty: Ident { name: String::new(), span: Span::default() },
        options: Vec::new(),
        fields: Vec::new(),
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => block.docs.push(doc(p, base, 3)),
            Rule::ident => block.ty = ident(p, base),
            Rule::shadow_opts => block.options = options(p, base),
            Rule::field => {
                let mut docs = Vec::new();
                let mut name = None;
                let mut ty = None;
                let mut init = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::outer_doc => docs.push(doc(q, base, 3)),
                        Rule::ident => name = Some(ident(q, base)),
                        Rule::ty => ty = Some(fragment(q, base)),
                        _ => init = Some(fragment(q, base)),
                    }
                }
                if let (Some(name), Some(ty), Some(init)) = (name, ty, init) {
                    block.fields.push(Field { docs, name, ty, init });
                }
            }
            _ => {}
        }
    }
    block
}

fn replace_fn(pair: Pair<'_, Rule>, base: usize) -> Replace {
    let whole = span(&pair, base);
    let mut docs = Vec::new();
    let mut attrs = Vec::new();
    let mut rest = Vec::new();
    let mut body = Fragment { text: String::new(), span: Span::default() };
    let mut head_start = whole.start;
    let mut in_c = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => docs.push(doc(p, base, 3)),
            Rule::attribute => {
                let s = span(&p, base);
                let mut inner = p.into_inner();
                let Some(name) = inner.next() else { continue };
                let name = ident(name, base);
                let arg = inner.next().map(|a| fragment(a, base));
                attrs.push(Attribute { name, arg, span: s });
            }
            Rule::kw_replace => head_start = span(&p, base).start,
            Rule::block | Rule::c_block => body = fragment(p, base),
            Rule::in_c => in_c = Some(span(&p, base)),
            _ => rest.push(p),
        }
    }
    let sig = signature(&mut rest, docs, base);
    let head_end = sig.ret.as_ref().map(|r| r.span.end).unwrap_or(body.span.start).max(head_start);
    Replace { attrs, sig, head: Span::new(head_start, head_end), body, in_c }
}

fn module_block(pair: Pair<'_, Rule>, base: usize) -> ModuleBlock {
    let mut block = ModuleBlock {
        docs: Vec::new(),
        name: String::new(),
        name_span: Span::default(),
        fns: Vec::new(),
        callbacks: Vec::new(),
        externs: Vec::new(),
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => block.docs.push(doc(p, base, 3)),
            Rule::string => {
                block.name_span = span(&p, base);
                block.name = p.into_inner().next().map(|t| t.as_str().to_owned()).unwrap_or_default();
            }
            Rule::replace_fn => block.fns.push(replace_fn(p, base)),
            Rule::callback => block.callbacks.push(callback(p, base)),
            Rule::extern_block => block.externs.push(extern_block(p, base)),
            _ => {}
        }
    }
    block
}

fn callback(pair: Pair<'_, Rule>, base: usize) -> Callback {
    let mut cb = Callback {
        docs: Vec::new(),
        kind: Ident { name: String::new(), span: Span::default() },
        param: None,
        body: Fragment { text: String::new(), span: Span::default() },
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => cb.docs.push(doc(p, base, 3)),
            Rule::ident => cb.kind = ident(p, base),
            Rule::cb_param => cb.param = p.into_inner().next().map(|i| ident(i, base)),
            Rule::block => cb.body = fragment(p, base),
            _ => {}
        }
    }
    cb
}

fn global(pair: Pair<'_, Rule>, base: usize) -> Global {
    let mut g = Global {
        docs: Vec::new(),
        name: Ident { name: String::new(), span: Span::default() },
        ty: Fragment { text: String::new(), span: Span::default() },
        init: Fragment { text: String::new(), span: Span::default() },
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => g.docs.push(doc(p, base, 3)),
            Rule::ident => g.name = ident(p, base),
            Rule::ty => g.ty = fragment(p, base),
            Rule::init => g.init = fragment(p, base),
            _ => {}
        }
    }
    g
}

fn c_item(pair: Pair<'_, Rule>, base: usize) -> CItem {
    let mut c = CItem {
        docs: Vec::new(),
        keyword: Span::default(),
        unit: None,
        body: Fragment { text: String::new(), span: Span::default() },
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => c.docs.push(doc(p, base, 3)),
            Rule::kw_c => c.keyword = span(&p, base),
            Rule::string => {
                let at = span(&p, base);
                c.unit = Some((p.into_inner().next().map(|t| t.as_str().to_owned()).unwrap_or_default(), at));
            }
            Rule::c_block => c.body = fragment(p, base),
            _ => {}
        }
    }
    c
}

fn helper_fn(pair: Pair<'_, Rule>, base: usize) -> Helper {
    let mut docs = Vec::new();
    let mut rest = Vec::new();
    let mut body = Fragment { text: String::new(), span: Span::default() };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => docs.push(doc(p, base, 3)),
            Rule::block => body = fragment(p, base),
            _ => rest.push(p),
        }
    }
    Helper { sig: signature(&mut rest, docs, base), body }
}

fn replace_sys(pair: Pair<'_, Rule>, base: usize) -> Syscall {
    let whole = span(&pair, base);
    let mut docs = Vec::new();
    let mut rest = Vec::new();
    let mut body = Fragment { text: String::new(), span: Span::default() };
    let mut head_start = whole.start;
    let mut in_c = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => docs.push(doc(p, base, 3)),
            Rule::kw_replace => head_start = span(&p, base).start,
            Rule::kw_syscall => {}
            Rule::block | Rule::c_block => body = fragment(p, base),
            Rule::in_c => in_c = Some(span(&p, base)),
            _ => rest.push(p),
        }
    }
    let sig = signature(&mut rest, docs, base);
    let head_end = sig.ret.as_ref().map(|r| r.span.end).unwrap_or(body.span.start).max(head_start);
    Syscall { sig, body, in_c, head: Span::new(head_start, head_end) }
}

/// The `(key = value, key)` options of a shadow block or a state.
fn options(pair: Pair<'_, Rule>, base: usize) -> Vec<ShadowOption> {
    let mut out = Vec::new();
    for opt in pair.into_inner() {
        let whole = span(&opt, base);
        let mut inner = opt.into_inner();
        let Some(key) = inner.next() else { continue };
        let key = ident(key, base);
        let value = inner.next().map(|v| ident(v, base));
        out.push(ShadowOption { key, value, span: whole });
    }
    out
}

fn state_item(pair: Pair<'_, Rule>, base: usize) -> State {
    let mut st = State {
        docs: Vec::new(),
        name: Ident { name: String::new(), span: Span::default() },
        options: Vec::new(),
        span: span(&pair, base),
    };
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::outer_doc => st.docs.push(doc(p, base, 3)),
            Rule::ident => st.name = ident(p, base),
            Rule::shadow_opts => st.options = options(p, base),
            _ => {}
        }
    }
    st
}

/// A `param` item has the parts of a `static` item: docs, name, type and a value (its default).
fn mod_param(pair: Pair<'_, Rule>, base: usize) -> ModParam {
    let Global { docs, name, ty, init } = global(pair, base);
    ModParam { docs, name, ty, default: init }
}
