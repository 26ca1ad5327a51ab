//! A scanner for Linux kernel C source that finds function definitions, file-scope data and includes.
//!
//! `kgraftc from-diff` copies the fixed source of the changed functions into a live patch and declares the
//! file's static data as references; this module tells it where those functions and variables are in a
//! `.c` file's text (not preprocessed) and what they use. It is a scanner, not a C parser: it splits the
//! text into tokens (comments, string and character literals, preprocessor lines with their backslash
//! continuations, identifiers, numbers and punctuation) and reasons about brace and parenthesis nesting.
//!
//! Preprocessor lines are tokens of their own, so braces in a `#define` are never counted. Conditionals
//! are followed only so far as to keep the nesting right when their branches are unbalanced (each
//! `#else` and `#elif` branch starts at the nesting its `#if` had, and `#endif` keeps the nesting the first
//! branch reached). The module is pure (no file system, no processes) and never panics, whatever the text.

use std::collections::HashSet;
use std::ops::Range;

/// The kernel C text of one translation unit, split into tokens, with its definitions found.
pub(crate) struct Source<'a> {
    /// The whole text.
    text: &'a str,
    /// Every token in text order; whitespace is not a token.
    toks: Vec<Tok>,
    /// The byte offset at which each line starts (the first is 0).
    line_starts: Vec<usize>,
    /// The function definitions at file scope, in text order.
    functions: Vec<Function>,
    /// The variables declared at file scope, in text order.
    variables: Vec<Variable>,
}

/// A function definition found at file scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Function {
    /// The function's name (for a macro-written definition, the name the macro gives it, e.g. `sys_read`).
    pub(crate) name: String,
    /// The byte range of the whole definition, from its first declaration specifier through its closing `}`.
    pub(crate) range: Range<usize>,
    /// The start of the comment block directly above the definition (no blank line between), else `range.start`.
    pub(crate) doc_start: usize,
    /// The byte range of the body between its braces, exclusive of both.
    pub(crate) body: Range<usize>,
    /// The 1-based line of `range.start`.
    pub(crate) first_line: usize,
    /// The 1-based line of the closing brace.
    pub(crate) last_line: usize,
    /// The text from `range.start` to the opening brace, trimmed, e.g. `static int show(struct seq_file *m, void *v)`.
    pub(crate) declaration: String,
    /// Whether `static` is among the declaration specifiers.
    pub(crate) is_static: bool,
    /// Whether `inline` (or `__inline`, `__inline__`, `__always_inline`) is among the declaration specifiers.
    pub(crate) is_inline: bool,
    /// The return type as written, without storage class, `inline` or markers, e.g. `struct foo *`.
    ///
    /// A `SYSCALL_DEFINEn` or `COMPAT_SYSCALL_DEFINEn` definition returns `long`; other macro-written
    /// definitions have an empty return type, since only the macro knows it.
    pub(crate) return_type: String,
    /// The parameters as (type as written with the name removed, name), e.g. `("const char __user *", "buf")`.
    ///
    /// `(void)` gives none, `...` gives `("...", "")` and an unnamed parameter an empty name. For a
    /// macro-written definition whose arguments after the name come in pairs, each pair is (type, name).
    pub(crate) params: Vec<(String, String)>,
    /// The attributes and markers of the declaration, as written, e.g. `__init`, `notrace`, `__printf(1, 2)`.
    ///
    /// These are the words starting with `__` that are not part of a type (`__user`, `__u32` and the like
    /// are kept in the type), `noinline`, `notrace`, `noinstr` and `asmlinkage`, with the parenthesized
    /// arguments of those written as calls (`__attribute__((cold))`), and the lock annotations written
    /// after the parameters (`__acquires(x)`).
    pub(crate) markers: Vec<String>,
    /// The macro and its first argument when the definition is written through a macro, e.g.
    /// `("SYSCALL_DEFINE3", "read")`; `None` for a plain definition.
    pub(crate) macro_form: Option<(String, String)>,
}

/// A variable defined or declared by a declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Variable {
    /// The variable's name.
    pub(crate) name: String,
    /// The byte range of the whole declaration through its `;` (shared by all names of `int a, b;`).
    pub(crate) range: Range<usize>,
    /// The 1-based line of `range.start`.
    pub(crate) line: usize,
    /// Whether the declaration says `static`.
    pub(crate) is_static: bool,
    /// Whether the declaration says `extern`.
    pub(crate) is_extern: bool,
    /// Whether this name has an initializer (`= ...`).
    pub(crate) has_initializer: bool,
    /// The declaration of this one name without `static`, `extern`, the initializer and the attributes after
    /// the name, e.g. `int foo` or `struct bar *baz[4]`.
    pub(crate) declarator: String,
}

/// An `#include` line at file scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Include {
    /// The line as written, without its newline.
    pub(crate) line: String,
    /// The enclosing conditionals, outermost first, each without comments, e.g. `#ifdef CONFIG_CMA`.
    ///
    /// In an `#else` or `#elif` branch, the `#if...` line is followed by the `#else` or `#elif` lines
    /// that lead to the branch.
    pub(crate) conditions: Vec<String>,
}

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An identifier or keyword (bytes outside ASCII count as identifier bytes).
    Ident,
    /// A preprocessing number.
    Number,
    /// A string literal.
    Str,
    /// A character literal.
    Char,
    /// An operator or other punctuation.
    Punct,
    /// A block or line comment.
    Comment,
    /// A whole preprocessor line with its continuations.
    Preproc,
    /// A brace-enclosed block, from `{` through `}`; made only in statement lists, never by the tokenizer.
    Block,
}

/// A token: its kind, byte range and the brace nesting before it.
#[derive(Clone, Copy, Debug)]
struct Tok {
    /// What the token is.
    kind: Kind,
    /// The first byte.
    start: usize,
    /// The byte after the last one.
    end: usize,
    /// The brace depth before the token.
    depth: u32,
}

/// How a declarator was found in a list of tokens.
#[derive(Clone, Copy, Debug)]
struct Declarator {
    /// The index of the name token.
    name: usize,
    /// The index at which the declarator starts, after the declaration specifiers (e.g. at the first `*`).
    start: usize,
    /// The index after the declarator, before any attributes written after it.
    end: usize,
}

/// What the declaration specifiers of a function say.
#[derive(Debug, Default)]
struct Specifiers {
    /// Whether `static` was there.
    is_static: bool,
    /// Whether an `inline` word was there.
    is_inline: bool,
    /// The attributes and markers, as written.
    markers: Vec<String>,
    /// The return type, as written.
    return_type: String,
}

/// The C keywords, with the GNU spellings, which `identifiers_in` leaves out.
const KEYWORDS: &str = "auto break case char const continue default do double else enum extern float for goto if inline int \
    long register restrict return short signed sizeof static struct switch typedef union unsigned void \
    volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert \
    _Thread_local asm __asm __asm__ __attribute __attribute__ __inline __inline__ __volatile \
    __volatile__ __const __const__ __signed __signed__ __restrict __restrict__ typeof __typeof \
    __typeof__ __extension__ __alignof __alignof__ __label__ __auto_type __int128";

/// The keywords that name or introduce a type.
const TYPE_KEYWORDS: &str = "void char short int long float double signed unsigned _Bool _Complex struct union enum typeof \
    __typeof __typeof__ __signed __signed__ __int128 __auto_type";

/// The words starting with `__` that belong to a type rather than being attributes.
const TYPE_WORDS: &str = "__user __kernel __iomem __percpu __rcu __force __bitwise __private __nocast __safe __data_racy \
    __signed __signed__ __const __const__ __volatile __volatile__ __restrict __restrict__ __typeof \
    __typeof__ __int128 __auto_type __builtin_va_list __wsum __sum16";

/// The qualifiers that may follow a `*` in a declarator (`char * const p`).
const QUALIFIERS: &str = "const volatile restrict _Atomic __const __const__ __volatile __volatile__ __restrict __restrict__ \
    __user __kernel __iomem __percpu __rcu __force __private __data_racy";

/// Whether `word` is one of the words of a list written as one whitespace-separated string.
fn listed(list: &str, word: &str) -> bool {
    list.split_ascii_whitespace().any(|w| w == word)
}

/// Whether `word` is a C keyword.
fn is_keyword(word: &str) -> bool {
    listed(KEYWORDS, word)
}

/// Whether a word starting with `__` belongs to a type (`__user`, `__u32`, `__le16`, `__poll_t`, ...).
fn is_type_word(word: &str) -> bool {
    if listed(TYPE_WORDS, word) || word.ends_with("_t") {
        return true;
    }
    if word.starts_with("__kernel_") || word.starts_with("__aligned_") {
        return true;
    }
    let Some(rest) = word.strip_prefix("__") else { return false };
    let bits = ["u", "s", "le", "be"].iter().find_map(|p| rest.strip_prefix(p));
    matches!(bits, Some("8" | "16" | "32" | "64" | "128"))
}

/// Whether `word` is an attribute or marker rather than part of a type or a name.
fn is_marker_word(word: &str) -> bool {
    (word.starts_with("__") && !is_type_word(word) && !matches!(word, "__inline" | "__inline__"))
        || matches!(word, "noinline" | "notrace" | "noinstr" | "asmlinkage")
}

/// Whether `word`, followed by parenthesized arguments, is an attribute that may follow a function's
/// parameters (`__attribute__((...))`, `__acquires(x)`, `__releases(x)`, `__must_hold(x)`, `asm("name")`).
fn is_trailing_attribute(word: &str) -> bool {
    matches!(word, "__attribute__" | "__attribute" | "asm" | "__asm" | "__asm__")
        || ["__acquire", "__release", "__must_hold", "__cond_acquire", "__cond_release"]
            .iter()
            .any(|p| word.starts_with(p))
}

/// Whether `word` is written all in capitals (with at least one letter), as macros are.
fn is_all_caps(word: &str) -> bool {
    word.bytes().any(|c| c.is_ascii_uppercase()) && !word.bytes().any(|c| c.is_ascii_lowercase())
}

/// The byte at `i`, or 0 past the end.
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Whether a byte may be part of an identifier (bytes outside ASCII are, so tokens end on char boundaries).
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The index after the `*/` that closes a block comment whose text starts at `from`, or the end.
fn block_comment_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() {
        if b[i] == b'*' && at(b, i + 1) == b'/' {
            return i + 2;
        }
        i += 1;
    }
    b.len()
}

/// The index of the next newline at or after `from` (minus a carriage return before it), or the end.
fn line_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    if i > from && at(b, i - 1) == b'\r' { i - 1 } else { i }
}

/// The index after the closing `quote` of a literal whose text starts at `from`.
///
/// An unterminated literal ends before the end of its line (or at the end of the text); a backslash
/// escapes the next byte, and a backslash before the newline continues the literal.
fn quoted_end(b: &[u8], from: usize, quote: u8) -> usize {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' if at(b, i + 1) == b'\r' && at(b, i + 2) == b'\n' => i += 3,
            b'\\' => i += 2,
            b'\n' => return if i > from && at(b, i - 1) == b'\r' { i - 1 } else { i },
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// The end of a preprocessor line starting at `from`: before the first newline that is not escaped by a
/// backslash and not inside a block comment.
fn preproc_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\n' => {
                let mut j = i;
                if j > from && at(b, j - 1) == b'\r' {
                    j -= 1;
                }
                if j > from && at(b, j - 1) == b'\\' {
                    i += 1;
                    continue;
                }
                return j;
            }
            b'/' if at(b, i + 1) == b'*' => i = block_comment_end(b, i + 2),
            b'/' if at(b, i + 1) == b'/' => {
                // The comment runs to the newline, which the loop then looks at for a continuation.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => i = quoted_end(b, i + 1, q),
            _ => i += 1,
        }
    }
    b.len()
}

/// The operators of three and two bytes that the scanner keeps whole.
const LONG_PUNCTS: &[&[u8]] = &[
    b"...", b"<<=", b">>=", b"->", b"++", b"--", b"<<", b">>", b"<=", b">=", b"==", b"!=", b"&&", b"||", b"+=", b"-=",
    b"*=", b"/=", b"%=", b"&=", b"|=", b"^=", b"##",
];

/// Splits C text into tokens (with depth 0; see `set_depths`).
fn tokenize(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let kind = if c == b'/' && at(b, i + 1) == b'*' {
            i = block_comment_end(b, i + 2);
            Kind::Comment
        } else if c == b'/' && at(b, i + 1) == b'/' {
            i = line_end(b, i).max(i + 2);
            Kind::Comment
        } else if c == b'#' && line_start {
            i = preproc_end(b, i).max(i + 1);
            Kind::Preproc
        } else if c == b'"' || c == b'\'' {
            i = quoted_end(b, i + 1, c);
            if c == b'"' { Kind::Str } else { Kind::Char }
        } else if c.is_ascii_digit() || (c == b'.' && at(b, i + 1).is_ascii_digit()) {
            i += 1;
            while i < b.len() {
                let d = b[i];
                let exponent_sign = matches!(d, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E' | b'p' | b'P');
                if !(is_ident_byte(d) || d == b'.' || exponent_sign) {
                    break;
                }
                i += 1;
            }
            Kind::Number
        } else if is_ident_byte(c) {
            while i < b.len() && is_ident_byte(b[i]) {
                i += 1;
            }
            Kind::Ident
        } else {
            let rest = b.get(i..).unwrap_or_default();
            let len = LONG_PUNCTS.iter().find(|p| rest.starts_with(p)).map_or(1, |p| p.len());
            i += len;
            Kind::Punct
        };
        let end = i.min(b.len());
        if kind != Kind::Comment {
            line_start = false;
        }
        toks.push(Tok { kind, start, end, depth: 0 });
        i = end;
    }
    toks
}

/// The directive name of a preprocessor line (`if`, `ifdef`, `include`, ...), or "" if it has none.
fn directive(line: &str) -> &str {
    let rest = line.strip_prefix('#').unwrap_or(line);
    let rest = rest.trim_start_matches([' ', '\t']);
    let len = rest.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
    rest.get(..len).unwrap_or("")
}

/// The text of a directive after its name (`CONFIG_X` in `#ifdef CONFIG_X`).
fn directive_operands(line: &str) -> &str {
    let name = directive(line);
    match line.find(name) {
        Some(at) if !name.is_empty() => line.get(at + name.len()..).unwrap_or(""),
        _ => "",
    }
}

/// A preprocessor line without its comments and continuations, with its whitespace collapsed.
fn clean_directive(line: &str) -> String {
    let b = line.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut space = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && at(b, i + 1) == b'*' {
            i = block_comment_end(b, i + 2);
            space = true;
            continue;
        }
        if c == b'/' && at(b, i + 1) == b'/' {
            break;
        }
        if c.is_ascii_whitespace() || (c == b'\\' && matches!(at(b, i + 1), b'\n' | b'\r')) {
            space = true;
            i += 1;
            continue;
        }
        if space && !out.is_empty() {
            out.push(b' ');
        }
        space = false;
        if c == b'"' || c == b'\'' {
            let end = quoted_end(b, i + 1, c);
            out.extend_from_slice(b.get(i..end).unwrap_or_default());
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Gives each token the brace depth before it, keeping the depth right across unbalanced conditionals.
fn set_depths(text: &str, toks: &mut [Tok]) {
    // For each open conditional: the depth at its `#if` and the depth its first branch ended at.
    let mut frames: Vec<(u32, Option<u32>)> = Vec::new();
    let mut depth: u32 = 0;
    for tok in toks {
        tok.depth = depth;
        let t = text.get(tok.start..tok.end).unwrap_or("");
        match tok.kind {
            Kind::Punct if t == "{" => depth = depth.saturating_add(1),
            Kind::Punct if t == "}" => depth = depth.saturating_sub(1),
            Kind::Preproc => match directive(t) {
                "if" | "ifdef" | "ifndef" => frames.push((depth, None)),
                "elif" | "else" | "elifdef" | "elifndef" => {
                    if let Some(frame) = frames.last_mut() {
                        frame.1.get_or_insert(depth);
                        depth = frame.0;
                    }
                }
                "endif" => {
                    if let Some((_, Some(first))) = frames.pop() {
                        depth = first;
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

impl<'a> Source<'a> {
    /// Scans `text`, finding its tokens, functions and variables.
    pub(crate) fn new(text: &'a str) -> Source<'a> {
        let mut toks = tokenize(text);
        set_depths(text, &mut toks);
        let line_starts = std::iter::once(0)
            .chain(text.bytes().enumerate().filter(|(_, c)| *c == b'\n').map(|(i, _)| i + 1))
            .collect();
        let mut source = Source { text, toks, line_starts, functions: Vec::new(), variables: Vec::new() };
        source.scan_file_scope();
        source
    }

    /// Every function definition at file scope (brace depth 0), in file order.
    pub(crate) fn functions(&self) -> Vec<Function> {
        self.functions.clone()
    }

    /// The definition named `name`, if there is exactly one.
    #[cfg_attr(not(test), expect(dead_code, reason = "a lookup for `kgraftc diff`, not written yet"))]
    pub(crate) fn function(&self, name: &str) -> Option<Function> {
        let mut found = self.functions.iter().filter(|f| f.name == name);
        match (found.next(), found.next()) {
            (Some(f), None) => Some(f.clone()),
            _ => None,
        }
    }

    /// Every variable defined or declared at file scope, in file order.
    ///
    /// Macro invocations (`DEFINE_MUTEX(m);`, `static DEFINE_SPINLOCK(l);`, `EXPORT_SYMBOL(f);`), prototypes,
    /// typedefs and struct, union and enum declarations without a declarator are not variables.
    pub(crate) fn variables(&self) -> Vec<Variable> {
        self.variables.clone()
    }

    /// The `#include` lines at file scope, verbatim, each with the conditionals enclosing it.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the include list is for `kgraftc check --ksrc`, not written yet")
    )]
    pub(crate) fn includes(&self) -> Vec<Include> {
        let mut frames: Vec<Vec<String>> = Vec::new();
        let mut includes = Vec::new();
        for &tok in self.toks.iter().filter(|t| t.kind == Kind::Preproc) {
            let line = self.tok_text(tok);
            match directive(line) {
                "if" | "ifdef" | "ifndef" => frames.push(vec![clean_directive(line)]),
                "elif" | "else" | "elifdef" | "elifndef" => {
                    if let Some(frame) = frames.last_mut() {
                        frame.push(clean_directive(line));
                    }
                }
                "endif" => {
                    frames.pop();
                }
                "include" | "include_next" if tok.depth == 0 => includes.push(Include {
                    line: line.trim_end().to_string(),
                    conditions: frames.iter().flatten().cloned().collect(),
                }),
                _ => {}
            }
        }
        includes
    }

    /// Identifiers that occur as tokens in the byte range, deduplicated, in first-occurrence order.
    ///
    /// Comments, literals, keywords and member names (after `.` or `->`, designators included) are left
    /// out. Of preprocessor lines, only conditionals (`#if`, `#ifdef`, `#elif`, ...) count, without
    /// `defined`.
    pub(crate) fn identifiers_in(&self, range: Range<usize>) -> Vec<String> {
        let first = self.toks.partition_point(|t| t.start < range.start);
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        let mut prev =
            self.toks.get(..first).unwrap_or_default().iter().rev().find(|t| t.kind != Kind::Comment).copied();
        for (idx, &tok) in self.toks.iter().enumerate().skip(first) {
            if tok.end > range.end {
                break;
            }
            match tok.kind {
                Kind::Comment => continue,
                Kind::Preproc => {
                    let line = self.tok_text(tok);
                    if matches!(directive(line), "if" | "ifdef" | "ifndef" | "elif" | "elifdef" | "elifndef") {
                        let operands = directive_operands(line);
                        for sub in tokenize(operands).into_iter().filter(|t| t.kind == Kind::Ident) {
                            let word = operands.get(sub.start..sub.end).unwrap_or("");
                            if word != "defined" && !is_keyword(word) && seen.insert(word) {
                                out.push(word.to_string());
                            }
                        }
                    }
                }
                Kind::Ident => {
                    let word = self.tok_text(tok);
                    let member = prev.is_some_and(|p| self.is_punct(p, ".") || self.is_punct(p, "->"));
                    let prefix = matches!(word, "L" | "u" | "U" | "u8")
                        && self
                            .toks
                            .get(idx + 1)
                            .is_some_and(|n| matches!(n.kind, Kind::Str | Kind::Char) && n.start == tok.end);
                    if !member && !prefix && !is_keyword(word) && seen.insert(word) {
                        out.push(word.to_string());
                    }
                }
                _ => {}
            }
            prev = Some(tok);
        }
        out
    }

    /// The `static` variables declared at block scope anywhere in the function's body, in text order.
    ///
    /// Only plain declarations count; `static DEFINE_RATELIMIT_STATE(rs, HZ, 10);` and other macro
    /// invocations do not.
    pub(crate) fn static_locals(&self, f: &Function) -> Vec<Variable> {
        let first = self.toks.partition_point(|t| t.start < f.body.start);
        let mut out = Vec::new();
        let mut idx = first;
        while let Some(&tok) = self.toks.get(idx) {
            if tok.end > f.body.end {
                break;
            }
            idx += 1;
            if !self.is_word(tok, "static") {
                continue;
            }
            let prev = self.toks.get(..idx - 1).unwrap_or_default().iter().rev().find(|t| t.kind != Kind::Comment);
            let starts = prev
                .is_none_or(|&p| p.kind == Kind::Preproc || [";", "{", "}", ":"].iter().any(|s| self.is_punct(p, s)));
            if !starts {
                continue;
            }
            if let Some((stmt, semi, next)) = self.collect_statement(idx - 1)
                && semi.end <= f.body.end
            {
                out.extend(self.declarations(&stmt, tok.start..semi.end));
                idx = next;
            }
        }
        out
    }

    /// The text of a token.
    fn tok_text(&self, t: Tok) -> &'a str {
        self.text.get(t.start..t.end).unwrap_or("")
    }

    /// Whether a token is the punctuation `s`.
    fn is_punct(&self, t: Tok, s: &str) -> bool {
        t.kind == Kind::Punct && self.tok_text(t) == s
    }

    /// The identifier (or keyword) a token is, if it is one.
    fn ident(&self, t: Tok) -> Option<&'a str> {
        (t.kind == Kind::Ident).then(|| self.tok_text(t))
    }

    /// Whether a token is the identifier or keyword `s`.
    fn is_word(&self, t: Tok, s: &str) -> bool {
        self.ident(t) == Some(s)
    }

    /// The 1-based line of a byte offset.
    fn line_of(&self, pos: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= pos)
    }

    /// Whether a token names or introduces a type (a type keyword, a type name, a struct body).
    fn is_type_ish(&self, t: Tok) -> bool {
        match t.kind {
            Kind::Block => true,
            Kind::Ident => {
                let w = self.tok_text(t);
                if is_keyword(w) { listed(TYPE_KEYWORDS, w) } else { !is_marker_word(w) }
            }
            _ => false,
        }
    }

    /// The index of the `(` or `[` that the `)` or `]` at `close` closes.
    fn match_open(&self, d: &[Tok], close: usize) -> Option<usize> {
        let mut level = 0usize;
        for i in (0..=close.min(d.len().checked_sub(1)?)).rev() {
            let t = d[i];
            if self.is_punct(t, ")") || self.is_punct(t, "]") {
                level += 1;
            } else if self.is_punct(t, "(") || self.is_punct(t, "[") {
                level = level.checked_sub(1)?;
                if level == 0 {
                    return Some(i);
                }
            }
        }
        None
    }

    /// The index of the `)` or `]` that closes the `(` or `[` at `open`.
    fn match_close(&self, d: &[Tok], open: usize) -> Option<usize> {
        let mut level = 0usize;
        for (i, &t) in d.iter().enumerate().skip(open) {
            if self.is_punct(t, "(") || self.is_punct(t, "[") {
                level += 1;
            } else if self.is_punct(t, ")") || self.is_punct(t, "]") {
                level = level.checked_sub(1)?;
                if level == 0 {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Splits tokens at the commas outside parentheses and brackets; no tokens give no parts.
    fn split_commas<'t>(&self, d: &'t [Tok]) -> Vec<&'t [Tok]> {
        if d.is_empty() {
            return Vec::new();
        }
        let mut parts = Vec::new();
        let mut level = 0usize;
        let mut from = 0;
        for (i, &t) in d.iter().enumerate() {
            if self.is_punct(t, "(") || self.is_punct(t, "[") {
                level += 1;
            } else if self.is_punct(t, ")") || self.is_punct(t, "]") {
                level = level.saturating_sub(1);
            } else if level == 0 && self.is_punct(t, ",") {
                parts.push(&d[from..i]);
                from = i + 1;
            }
        }
        parts.push(&d[from..]);
        parts
    }

    /// The index of the first `=` outside parentheses and brackets.
    fn find_assign(&self, d: &[Tok]) -> Option<usize> {
        let mut level = 0usize;
        for (i, &t) in d.iter().enumerate() {
            if self.is_punct(t, "(") || self.is_punct(t, "[") {
                level += 1;
            } else if self.is_punct(t, ")") || self.is_punct(t, "]") {
                level = level.saturating_sub(1);
            } else if level == 0 && self.is_punct(t, "=") {
                return Some(i);
            }
        }
        None
    }

    /// The tokens' text with each run of whitespace and comments between two of them made one space.
    ///
    /// Tokens left out of the list do not count as a gap themselves: `int (*fn)(int)` without `fn` gives
    /// `int (*)(int)`.
    fn join(&self, toks: &[Tok]) -> String {
        let mut out = String::new();
        let mut prev: Option<Tok> = None;
        for &t in toks {
            if let Some(p) = prev {
                let gap = self.text.get(p.end..t.start).unwrap_or(" ");
                if gap.bytes().any(|c| c.is_ascii_whitespace() || c == b'/') {
                    out.push(' ');
                }
            }
            out.push_str(self.tok_text(t));
            prev = Some(t);
        }
        out
    }

    /// The index of the `}` closing the `{` at token index `open`, or, if the block never closes, the index
    /// at which scanning should resume.
    fn find_close(&self, open: usize) -> Result<usize, usize> {
        let depth = self.toks.get(open).map_or(0, |t| t.depth);
        for (j, &t) in self.toks.iter().enumerate().skip(open + 1) {
            if t.depth == depth.saturating_add(1) && self.is_punct(t, "}") {
                return Ok(j);
            }
            if t.depth <= depth && !matches!(t.kind, Kind::Comment | Kind::Preproc) {
                return Err(j);
            }
        }
        Err(self.toks.len())
    }

    /// A block token spanning from the `{` at `open` through the `}` at `close`.
    fn block(&self, open: usize, close: usize) -> Option<Tok> {
        let (o, c) = (self.toks.get(open)?, self.toks.get(close)?);
        Some(Tok { kind: Kind::Block, start: o.start, end: c.end, depth: o.depth })
    }

    /// The significant tokens of the statement starting at token index `from`, through its `;`.
    ///
    /// Nested braces become one block token. Gives the tokens, the `;` and the index after it, or `None`
    /// if the enclosing block ends first.
    fn collect_statement(&self, from: usize) -> Option<(Vec<Tok>, Tok, usize)> {
        let depth = self.toks.get(from)?.depth;
        let mut out = Vec::new();
        let mut j = from;
        while let Some(&t) = self.toks.get(j) {
            if matches!(t.kind, Kind::Comment | Kind::Preproc) {
                j += 1;
                continue;
            }
            if t.depth != depth || self.is_punct(t, "}") {
                return None;
            }
            if self.is_punct(t, ";") {
                return Some((out, t, j + 1));
            }
            if self.is_punct(t, "{") {
                let close = self.find_close(j).ok()?;
                out.push(self.block(j, close)?);
                j = close + 1;
                continue;
            }
            out.push(t);
            j += 1;
        }
        None
    }

    /// Walks the file scope, collecting the function definitions and the variables.
    fn scan_file_scope(&mut self) {
        let mut functions = Vec::new();
        let mut variables = Vec::new();
        let mut stmt: Vec<Tok> = Vec::new();
        let mut paren = 0usize;
        let mut i = 0;
        while let Some(&t) = self.toks.get(i) {
            i += 1;
            match t.kind {
                Kind::Comment => continue,
                // A preprocessor line between statements ends one that lacks its `;` (`MODULE_LICENSE("GPL")`).
                Kind::Preproc => {
                    if t.depth == 0 && paren == 0 {
                        stmt.clear();
                    }
                    continue;
                }
                _ if t.depth > 0 => continue,
                _ => {}
            }
            let text = self.tok_text(t);
            match (t.kind, text) {
                (Kind::Punct, "(" | "[") => paren += 1,
                (Kind::Punct, ")" | "]") => paren = paren.saturating_sub(1),
                (Kind::Punct, ";") => {
                    if let Some(first) = stmt.first() {
                        variables.extend(self.declarations(&stmt, first.start..t.end));
                    }
                    stmt.clear();
                    paren = 0;
                    continue;
                }
                (Kind::Punct, "}") => {
                    stmt.clear();
                    paren = 0;
                    continue;
                }
                (Kind::Punct, "{") => {
                    let open = i - 1;
                    let function_like = paren == 0 && self.is_function_like(&stmt);
                    match self.find_close(open) {
                        // An initializer, a struct body or a statement expression: the statement goes on.
                        Ok(close) if !function_like => {
                            // A block with nothing before it belongs to no declaration.
                            if !stmt.is_empty() {
                                stmt.extend(self.block(open, close));
                            }
                            i = close + 1;
                            continue;
                        }
                        Ok(close) => {
                            let close_tok = self.toks.get(close).copied();
                            functions.extend(close_tok.and_then(|c| self.function_at(&stmt, t, c)));
                            i = close + 1;
                        }
                        Err(resume) => i = resume,
                    }
                    stmt.clear();
                    paren = 0;
                    continue;
                }
                // A storage class after a `)` starts a new declaration: the macro before it lacked its `;`.
                (Kind::Ident, "static" | "extern" | "typedef")
                    if paren == 0 && stmt.last().is_some_and(|&p| self.is_punct(p, ")")) =>
                {
                    stmt.clear();
                }
                // So does a word after a whole macro invocation, `EXPORT_SYMBOL(f)` without its `;`.
                (Kind::Ident, word) if paren == 0 && !is_marker_word(word) && self.is_invocation(&stmt) => {
                    stmt.clear();
                }
                _ => {}
            }
            stmt.push(t);
        }
        self.functions = functions;
        self.variables = variables;
    }

    /// Whether the tokens are exactly one call-like invocation, `NAME(...)` (not `typeof(...)`).
    fn is_invocation(&self, d: &[Tok]) -> bool {
        d.len() >= 3
            && self.ident(d[0]).is_some_and(|w| !is_keyword(w))
            && self.is_punct(d[1], "(")
            && self.match_close(d, 1) == Some(d.len() - 1)
    }

    /// The number of tokens at the end of a function's declaration before any attributes written after
    /// its parameters (`__acquires(x)`, `__attribute__((...))`, `__cold`), with those attributes' text.
    fn strip_trailing_attributes(&self, d: &[Tok]) -> (usize, Vec<String>) {
        let mut end = d.len();
        let mut markers = Vec::new();
        while let Some(last) = end.checked_sub(1) {
            let attr_start = if self.is_punct(d[last], ")") {
                match self.match_open(&d[..end], last) {
                    Some(o) if o >= 2 && self.ident(d[o - 1]).is_some_and(is_trailing_attribute) => o - 1,
                    _ => break,
                }
            } else if self.ident(d[last]).is_some_and(is_marker_word) {
                last
            } else {
                break;
            };
            if attr_start == 0 || !self.is_punct(d[attr_start - 1], ")") {
                break;
            }
            markers.insert(0, self.join(&d[attr_start..end]));
            end = attr_start;
        }
        (end, markers)
    }

    /// Whether a statement followed by `{` opens a function body: it ends (before attributes) with `)` and
    /// has no `=` outside parentheses.
    fn is_function_like(&self, stmt: &[Tok]) -> bool {
        let (end, _) = self.strip_trailing_attributes(stmt);
        end > 0 && self.is_punct(stmt[end - 1], ")") && self.find_assign(stmt).is_none()
    }

    /// The function whose declaration is `stmt`, whose body opens at `open` and closes at `close`.
    fn function_at(&self, stmt: &[Tok], open: Tok, close: Tok) -> Option<Function> {
        let (end, trailing) = self.strip_trailing_attributes(stmt);
        let d = &stmt[..end];
        let last = end.checked_sub(1)?;
        let o = self.match_open(d, last)?;
        let name_idx = o.checked_sub(1)?;
        let written = self.ident(d[name_idx]).filter(|w| !is_keyword(w))?;
        let specs = &d[..name_idx];
        let inner = &d[o + 1..last];
        let mut spec = self.specifiers(specs);
        spec.markers.extend(trailing);
        let (name, params, macro_form) = if is_all_caps(written) && !specs.iter().any(|&t| self.is_type_ish(t)) {
            let args = self.split_commas(inner);
            let arg0 = match args.first() {
                Some([only]) => self.ident(*only).filter(|w| !is_keyword(w))?,
                _ => return None,
            };
            let name = if written.starts_with("COMPAT_SYSCALL_DEFINE") {
                spec.return_type = "long".to_string();
                format!("compat_sys_{arg0}")
            } else if written.starts_with("SYSCALL_DEFINE") {
                spec.return_type = "long".to_string();
                format!("sys_{arg0}")
            } else {
                arg0.to_string()
            };
            let rest = args.get(1..).unwrap_or_default();
            let params = if rest.len() % 2 == 0 {
                rest.chunks_exact(2).map(|pair| (self.join(pair[0]), self.join(pair[1]))).collect()
            } else {
                Vec::new()
            };
            (name, params, Some((written.to_string(), arg0.to_string())))
        } else {
            (written.to_string(), self.params(inner), None)
        };
        let start = stmt.first()?.start;
        Some(Function {
            name,
            range: start..close.end,
            doc_start: self.doc_start(start),
            body: open.end..close.start,
            first_line: self.line_of(start),
            last_line: self.line_of(close.start),
            declaration: self.text.get(start..open.start).unwrap_or("").trim().to_string(),
            is_static: spec.is_static,
            is_inline: spec.is_inline,
            return_type: spec.return_type,
            params,
            markers: spec.markers,
            macro_form,
        })
    }

    /// The start of the comment block directly above the token starting at `start`, or `start` itself.
    fn doc_start(&self, start: usize) -> usize {
        let mut idx = self.toks.partition_point(|t| t.start < start);
        let mut doc = start;
        while let Some(t) = idx.checked_sub(1).and_then(|i| self.toks.get(i)) {
            if t.kind != Kind::Comment {
                break;
            }
            let gap = self.text.get(t.end..doc).unwrap_or("x");
            let own_line =
                self.line_starts.get(self.line_of(t.start).saturating_sub(1)).and_then(|&s| self.text.get(s..t.start));
            if !gap.trim().is_empty() || gap.matches('\n').count() > 1 || !own_line.is_some_and(|s| s.trim().is_empty())
            {
                break;
            }
            doc = t.start;
            idx -= 1;
        }
        doc
    }

    /// Sorts a function's declaration specifiers into storage class, `inline`, markers and return type.
    fn specifiers(&self, d: &[Tok]) -> Specifiers {
        let mut spec = Specifiers::default();
        let mut kept: Vec<Tok> = Vec::new();
        // The last bare marker word: where it would go back among the kept tokens and its marker index.
        let mut last_bare: Option<(usize, usize, Tok)> = None;
        let mut i = 0;
        while let Some(&t) = d.get(i) {
            match self.ident(t) {
                Some("static") => spec.is_static = true,
                Some("extern" | "register" | "auto") => {}
                Some("inline" | "__inline" | "__inline__") => spec.is_inline = true,
                Some(w) if is_marker_word(w) => {
                    spec.is_inline |= w == "__always_inline";
                    let mut end = i + 1;
                    if d.get(end).is_some_and(|&n| self.is_punct(n, "(")) {
                        end = self.match_close(d, end).map_or(d.len(), |c| c + 1);
                    } else {
                        last_bare = Some((kept.len(), spec.markers.len(), t));
                    }
                    spec.markers.push(self.join(d.get(i..end).unwrap_or_default()));
                    i = end;
                    continue;
                }
                _ => kept.push(t),
            }
            i += 1;
        }
        // `static __foo_type *f(void)`: when nothing else names a type, the last bare `__` word does.
        if !kept.iter().any(|&t| self.is_type_ish(t))
            && let Some((at, marker, t)) = last_bare
        {
            kept.insert(at, t);
            spec.markers.remove(marker);
        }
        spec.return_type = self.join(&kept);
        spec
    }

    /// A function's parameters from the tokens between its parentheses.
    fn params(&self, inner: &[Tok]) -> Vec<(String, String)> {
        let parts = self.split_commas(inner);
        if let [[only]] = parts.as_slice()
            && self.is_word(*only, "void")
        {
            return Vec::new();
        }
        let mut params = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            if let [only] = part
                && self.is_punct(*only, "...")
            {
                params.push(("...".to_string(), String::new()));
                continue;
            }
            match self.declarator(part) {
                Some(decl) => {
                    let ty: Vec<Tok> =
                        part.iter().enumerate().filter(|&(i, _)| i != decl.name).map(|(_, &t)| t).collect();
                    params.push((self.join(&ty), self.tok_text(part[decl.name]).to_string()));
                }
                None => params.push((self.join(part), String::new())),
            }
        }
        params
    }

    /// Whether the token at `k` can be the name being declared: an identifier, not a keyword, not a
    /// struct tag, not an attribute after a struct body, with something naming a type before it.
    fn valid_name(&self, d: &[Tok], k: usize) -> bool {
        let Some(&t) = d.get(k) else { return false };
        let Some(w) = self.ident(t) else { return false };
        let prev = k.checked_sub(1).map(|p| d[p]);
        let tag = prev.is_some_and(|p| ["struct", "union", "enum"].iter().any(|s| self.is_word(p, s)));
        // `struct foo { ... } __randomize_layout;` declares no variable.
        let body_attribute = prev.is_some_and(|p| p.kind == Kind::Block) && is_marker_word(w);
        !is_keyword(w) && !tag && !body_attribute && d[..k].iter().any(|&p| self.is_type_ish(p))
    }

    /// Finds the declarator of a declaration without its initializer: `int x`, `struct a *b[4] __aligned(8)`,
    /// `void (*fn)(int)`; `None` for prototypes, macro invocations and declarations without a name.
    fn declarator(&self, d: &[Tok]) -> Option<Declarator> {
        // Attributes after the declarator: `__initdata`, `__aligned(8)`, `__attribute__((unused))`.
        let mut end = d.len();
        loop {
            let last = end.checked_sub(1)?;
            let attr_start = if self.is_punct(d[last], ")") {
                match self.match_open(&d[..end], last) {
                    Some(o) if o >= 2 && self.ident(d[o - 1]).is_some_and(is_marker_word) => o - 1,
                    _ => break,
                }
            } else if self.ident(d[last]).is_some_and(is_marker_word) {
                last
            } else {
                break;
            };
            let before = attr_start.checked_sub(1)?;
            let closes = self.is_punct(d[before], ")") || self.is_punct(d[before], "]");
            if !closes && !self.valid_name(d, before) {
                break;
            }
            end = attr_start;
        }
        let mut e = end;
        while e > 0 && self.is_punct(d[e - 1], "]") {
            e = self.match_open(&d[..e], e - 1)?;
        }
        let last = e.checked_sub(1)?;
        let (name, group) = if self.is_punct(d[last], ")") {
            // A function pointer, `(*name)(args)`; a `)` before `(args)` that is not a group is a prototype.
            let o = self.match_open(&d[..e], last)?;
            let close = o.checked_sub(1).filter(|&c| self.is_punct(d[c], ")"))?;
            let g = self.match_open(&d[..=close], close)?;
            let mut level = 0usize;
            let mut name = None;
            for (k, &t) in d.iter().enumerate().take(close).skip(g + 1) {
                if self.is_punct(t, "(") || self.is_punct(t, "[") {
                    level += 1;
                } else if self.is_punct(t, ")") || self.is_punct(t, "]") {
                    level = level.saturating_sub(1);
                } else if level == 0 && self.ident(t).is_some_and(|w| !is_keyword(w) && !is_marker_word(w)) {
                    name = Some(k);
                }
            }
            // `int (*handler(int n))(int)` declares a function returning a function pointer.
            let name = name.filter(|&k| !d.get(k + 1).is_some_and(|&n| self.is_punct(n, "(")))?;
            (name, g)
        } else if self.valid_name(d, last) {
            (last, last)
        } else {
            return None;
        };
        // The declarator starts at the first `*` of the pointer run before the name (or its group).
        let mut start = group;
        while start > 0
            && (self.is_punct(d[start - 1], "*") || self.ident(d[start - 1]).is_some_and(|w| listed(QUALIFIERS, w)))
        {
            start -= 1;
        }
        while start < group && !self.is_punct(d[start], "*") {
            start += 1;
        }
        Some(Declarator { name, start, end })
    }

    /// The variables a declaration statement (without its `;`) declares; `range` is the whole statement.
    fn declarations(&self, stmt: &[Tok], range: Range<usize>) -> Vec<Variable> {
        let mut out = Vec::new();
        if stmt.iter().any(|&t| self.is_word(t, "typedef")) {
            return out;
        }
        let parts = self.split_commas(stmt);
        let Some(first) = parts.first() else { return out };
        let d0 = &first[..self.find_assign(first).unwrap_or(first.len())];
        let Some(decl0) = self.declarator(d0) else { return out };
        let spec = &d0[..decl0.start];
        let is_static = spec.iter().any(|&t| self.is_word(t, "static"));
        let is_extern = spec.iter().any(|&t| self.is_word(t, "extern"));
        for (k, part) in parts.iter().enumerate() {
            let assign = self.find_assign(part);
            let toks: Vec<Tok> = if k == 0 {
                d0.to_vec()
            } else {
                spec.iter().chain(&part[..assign.unwrap_or(part.len())]).copied().collect()
            };
            let Some(decl) = (if k == 0 { Some(decl0) } else { self.declarator(&toks) }) else { continue };
            let shown: Vec<Tok> = toks[..decl.end]
                .iter()
                .copied()
                .filter(|&t| !self.is_word(t, "static") && !self.is_word(t, "extern"))
                .collect();
            out.push(Variable {
                name: self.tok_text(toks[decl.name]).to_string(),
                range: range.clone(),
                line: self.line_of(range.start),
                is_static,
                is_extern,
                has_initializer: assign.is_some(),
                declarator: self.join(&shown),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of a byte range.
    fn slice(text: &str, range: Range<usize>) -> &str {
        &text[range]
    }

    /// The one function named `name`, which the test expects to exist.
    fn func(src: &Source, name: &str) -> Function {
        src.function(name).unwrap_or_else(|| panic!("no single function {name}"))
    }

    /// The names of all functions.
    fn names(src: &Source) -> Vec<String> {
        src.functions().into_iter().map(|f| f.name).collect()
    }

    /// The names of all file-scope variables.
    fn var_names(src: &Source) -> Vec<String> {
        src.variables().into_iter().map(|v| v.name).collect()
    }

    const HELPER: &str = "\
// SPDX-License-Identifier: GPL-2.0
#include <linux/fs.h>

/* Not the doc: a blank line follows. */

/*
 * show_val_kb - print a value in kB.
 */
static void show_val_kb(struct seq_file *m, const char *s, unsigned long num)
{
\tseq_put_decimal_ull_width(m, s, num << (PAGE_SHIFT - 10), 8);
}

static int __init proc_meminfo_init(void)
{
\treturn 0;
}
fs_initcall(proc_meminfo_init);
";

    #[test]
    fn static_helper_with_its_doc_comment() {
        let src = Source::new(HELPER);
        assert_eq!(names(&src), ["show_val_kb", "proc_meminfo_init"]);
        let f = func(&src, "show_val_kb");
        assert!(slice(HELPER, f.range.clone()).starts_with("static void show_val_kb("));
        assert!(slice(HELPER, f.range.clone()).ends_with("8);\n}"));
        assert!(slice(HELPER, f.doc_start..f.range.end).starts_with("/*\n * show_val_kb"));
        assert_eq!(
            slice(HELPER, f.body.clone()),
            "\n\tseq_put_decimal_ull_width(m, s, num << (PAGE_SHIFT - 10), 8);\n"
        );
        assert_eq!((f.first_line, f.last_line), (9, 12));
        assert_eq!(f.declaration, "static void show_val_kb(struct seq_file *m, const char *s, unsigned long num)");
        assert!(f.is_static && !f.is_inline);
        assert_eq!(f.return_type, "void");
        let params: Vec<(&str, &str)> = f.params.iter().map(|(t, n)| (t.as_str(), n.as_str())).collect();
        assert_eq!(params, [("struct seq_file *", "m"), ("const char *", "s"), ("unsigned long", "num")]);
        assert!(f.markers.is_empty());
        assert_eq!(f.macro_form, None);
        assert!(src.variables().is_empty(), "fs_initcall(...) is no variable: {:?}", src.variables());
    }

    #[test]
    fn init_function_markers_and_no_doc() {
        let src = Source::new(HELPER);
        let f = func(&src, "proc_meminfo_init");
        assert_eq!(f.doc_start, f.range.start);
        assert_eq!(f.return_type, "int");
        assert!(f.params.is_empty());
        assert_eq!(f.markers, ["__init"]);
        assert!(f.is_static);
    }

    #[test]
    fn markers_inline_and_attributes() {
        let text = "static __always_inline notrace unsigned long __must_check f1(int a) { return a; }\n\
                    static inline __printf(2, 3) void f2(int lvl, const char *fmt, ...) { }\n\
                    void __attribute__((weak)) arch_report(struct seq_file *m)\n{\n}\n\
                    void lock_it(spinlock_t *l) __acquires(l) __releases(other)\n{\n}\n\
                    static void __u32_helper(int x) __cold\n{\n}\n\
                    static __le32 __iomem *f3(void) { return NULL; }\n";
        let src = Source::new(text);
        assert_eq!(names(&src), ["f1", "f2", "arch_report", "lock_it", "__u32_helper", "f3"]);
        let f1 = func(&src, "f1");
        assert!(f1.is_static && f1.is_inline);
        assert_eq!(f1.return_type, "unsigned long");
        assert_eq!(f1.markers, ["__always_inline", "notrace", "__must_check"]);
        let f2 = func(&src, "f2");
        assert!(f2.is_inline);
        assert_eq!(f2.return_type, "void");
        assert_eq!(f2.markers, ["__printf(2, 3)"]);
        assert_eq!(f2.params.last(), Some(&("...".to_string(), String::new())));
        let weak = func(&src, "arch_report");
        assert_eq!(weak.markers, ["__attribute__((weak))"]);
        assert!(!weak.is_static);
        let lock = func(&src, "lock_it");
        assert_eq!(lock.markers, ["__acquires(l)", "__releases(other)"]);
        assert_eq!(lock.declaration, "void lock_it(spinlock_t *l) __acquires(l) __releases(other)");
        assert_eq!(func(&src, "__u32_helper").markers, ["__cold"]);
        assert_eq!(func(&src, "f3").return_type, "__le32 __iomem *");
    }

    const BODY: &str = "\
#define EMPTY_BODY { }
#define OPEN {
static int tricky(struct foo *f)
{
\tconst char *s = \"}}} not a brace {\";
\tchar c = '}';
\t/* } a comment with a brace { */
\t// } another one
#ifdef CONFIG_X
\tif (f->x) {
\t\tf->y = 1;
#else
\tif (f->z) {
#endif
\t\tf->w = 2;
\t}
#if defined(CONFIG_A) && \\
    defined(CONFIG_B) /* { */
\treturn f->a;
#endif
\treturn 0;
}

static int after(void)
{
\treturn 1;
}
";

    #[test]
    fn body_with_conditionals_strings_and_comments_is_one_body() {
        let src = Source::new(BODY);
        assert_eq!(names(&src), ["tricky", "after"]);
        let f = func(&src, "tricky");
        assert!(slice(BODY, f.body.clone()).trim_end().ends_with("return 0;"));
        assert_eq!((f.first_line, f.last_line), (3, 22));
        assert!(src.static_locals(&f).is_empty());
        let after = func(&src, "after");
        assert_eq!(after.first_line, 24);
        assert_eq!(after.doc_start, after.range.start);
    }

    #[test]
    fn prototypes_structs_and_macros_are_not_definitions() {
        let text = "\
struct foo;
static int helper(int a);
extern void __init setup(void) __attribute__((cold));
int (*get_handler(int n))(int);
struct foo {
\tint a;
\tint (*op)(int);
};
struct bar {
\tlong b;
} __randomize_layout;
enum state { IDLE, BUSY };
typedef struct { int x; } pair_t;
typedef int (*cb_t)(void *);
EXPORT_SYMBOL(helper);
EXPORT_SYMBOL_GPL(setup);
module_init(setup);
late_initcall(setup);
fs_initcall(setup);
DEFINE_MUTEX(lock_a);
static DEFINE_SPINLOCK(lock_b);
static DEFINE_PER_CPU(int, counter);
MODULE_LICENSE(\"GPL\");
static_assert(sizeof(struct foo) == 16);
asm(\".pushsection .text\");
";
        let src = Source::new(text);
        assert!(src.functions().is_empty(), "{:?}", names(&src));
        assert!(src.variables().is_empty(), "{:?}", var_names(&src));
    }

    #[test]
    fn struct_definition_with_a_variable() {
        let text = "struct point { int x, y; } origin = { 0, 0 }, *cursor;\nstatic union { int i; float f; } u;\n";
        let src = Source::new(text);
        let vars = src.variables();
        assert_eq!(var_names(&src), ["origin", "cursor", "u"]);
        assert!(vars[0].has_initializer && !vars[1].has_initializer);
        assert_eq!(vars[0].declarator, "struct point { int x, y; } origin");
        assert_eq!(vars[1].declarator, "struct point { int x, y; } *cursor");
        assert!(vars[2].is_static);
        assert!(src.functions().is_empty());
    }

    #[test]
    fn syscall_and_other_macro_definitions() {
        let text = "\
/**
 * sys_read - read from a file.
 */
SYSCALL_DEFINE3(read, unsigned int, fd, char __user *, buf, size_t, count)
{
\treturn ksys_read(fd, buf, count);
}

SYSCALL_DEFINE0(getpid)
{
\treturn task_tgid_vnr(current);
}

COMPAT_SYSCALL_DEFINE2(settimeofday, struct old_timeval32 __user *, tv, struct timezone __user *, tz)
{
\treturn 0;
}

BPF_CALL_2(bpf_map_lookup_elem, struct bpf_map *, map, void *, key)
{
\treturn 0;
}
";
        let src = Source::new(text);
        assert_eq!(names(&src), ["sys_read", "sys_getpid", "compat_sys_settimeofday", "bpf_map_lookup_elem"]);
        let read = func(&src, "sys_read");
        assert_eq!(read.macro_form, Some(("SYSCALL_DEFINE3".to_string(), "read".to_string())));
        assert_eq!(read.return_type, "long");
        assert!(!read.is_static);
        let params: Vec<(&str, &str)> = read.params.iter().map(|(t, n)| (t.as_str(), n.as_str())).collect();
        assert_eq!(params, [("unsigned int", "fd"), ("char __user *", "buf"), ("size_t", "count")]);
        assert_eq!(read.doc_start, 0);
        assert_eq!(read.first_line, 4);
        assert!(func(&src, "sys_getpid").params.is_empty());
        let compat = func(&src, "compat_sys_settimeofday");
        assert_eq!(compat.macro_form, Some(("COMPAT_SYSCALL_DEFINE2".to_string(), "settimeofday".to_string())));
        assert_eq!(compat.params[0], ("struct old_timeval32 __user *".to_string(), "tv".to_string()));
        let bpf = func(&src, "bpf_map_lookup_elem");
        assert_eq!(bpf.macro_form, Some(("BPF_CALL_2".to_string(), "bpf_map_lookup_elem".to_string())));
        assert_eq!(bpf.return_type, "");
        assert_eq!(bpf.params.len(), 2);
    }

    #[test]
    fn function_returning_a_pointer() {
        let text =
            "static struct foo *get(void)\n{\n\treturn NULL;\n}\nconst char * const *names_of(int n) { return 0; }\n";
        let src = Source::new(text);
        let get = func(&src, "get");
        assert_eq!(get.return_type, "struct foo *");
        assert!(get.params.is_empty());
        assert_eq!(func(&src, "names_of").return_type, "const char * const *");
    }

    #[test]
    fn function_pointer_variadic_array_and_unnamed_parameters() {
        let text = "int run(int (*fn)(int, void *), void (*done)(void), char **argv, int vals[4], u32, \
                    const char __user *buf, struct foo, ...)\n{\n\treturn 0;\n}\n";
        let src = Source::new(text);
        let f = func(&src, "run");
        let params: Vec<(&str, &str)> = f.params.iter().map(|(t, n)| (t.as_str(), n.as_str())).collect();
        assert_eq!(
            params,
            [
                ("int (*)(int, void *)", "fn"),
                ("void (*)(void)", "done"),
                ("char **", "argv"),
                ("int [4]", "vals"),
                ("u32", ""),
                ("const char __user *", "buf"),
                ("struct foo", ""),
                ("...", ""),
            ]
        );
    }

    #[test]
    fn static_locals_in_a_body() {
        let text = "\
static void warn_once(struct device *dev)
{
\tstatic bool warned;
\tstatic const char *const names[] = { \"a\", \"b\" };
\tstatic DEFINE_RATELIMIT_STATE(rs, HZ, 10);
\tint local = 0;
\tif (dev) {
\t\tstatic unsigned long last __read_mostly = 3, count;
\t\tlocal++;
\t}
\tprintk(\"static int fake;\");
}
";
        let src = Source::new(text);
        let f = func(&src, "warn_once");
        let locals = src.static_locals(&f);
        let names: Vec<&str> = locals.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["warned", "names", "last", "count"]);
        assert_eq!(slice(text, locals[0].range.clone()), "static bool warned;");
        assert_eq!(locals[0].line, 3);
        assert_eq!(locals[1].declarator, "const char *const names[]");
        assert!(locals[1].has_initializer && locals.iter().all(|v| v.is_static));
        assert_eq!(locals[2].declarator, "unsigned long last");
        assert_eq!(locals[3].declarator, "unsigned long count");
        assert!(!locals[3].has_initializer);
    }

    #[test]
    fn includes_with_their_conditions() {
        let text = "\
#include <linux/fs.h>
#ifdef CONFIG_CMA
#include <linux/cma.h>
#else /* !CONFIG_CMA */
# include \"nocma.h\"
#endif
#if IS_ENABLED(CONFIG_X)
#ifndef CONFIG_Y
#include <x.h>   /* why */
#endif
#elif defined(CONFIG_Z)
#include <z.h>
#endif
#include <asm/page.h>
static struct x table[] = {
#include \"table.h\"
};
";
        let src = Source::new(text);
        let includes = src.includes();
        let got: Vec<(&str, Vec<&str>)> =
            includes.iter().map(|i| (i.line.as_str(), i.conditions.iter().map(String::as_str).collect())).collect();
        let want: Vec<(&str, Vec<&str>)> = vec![
            ("#include <linux/fs.h>", vec![]),
            ("#include <linux/cma.h>", vec!["#ifdef CONFIG_CMA"]),
            ("# include \"nocma.h\"", vec!["#ifdef CONFIG_CMA", "#else"]),
            ("#include <x.h>   /* why */", vec!["#if IS_ENABLED(CONFIG_X)", "#ifndef CONFIG_Y"]),
            ("#include <z.h>", vec!["#if IS_ENABLED(CONFIG_X)", "#elif defined(CONFIG_Z)"]),
            ("#include <asm/page.h>", vec![]),
        ];
        assert_eq!(got, want);
        assert_eq!(var_names(&src), ["table"]);
    }

    #[test]
    fn file_scope_variables() {
        let text = "\
static int count;
static struct foo bar = {
\t.a = 1,
\t.ops = { .open = foo_open },
};
int y = 3;
extern int z;
extern struct page *mem_map;
static unsigned long a, *b = NULL, c[4];
static struct bar *baz[4] __initdata;
static int (*handler)(int) = default_handler;
unsigned long totalcma_pages __read_mostly;
static u32 __hidden_count;
const char * const names[] = { \"x\" };
static int helper(void) { return count; }
";
        let src = Source::new(text);
        let vars = src.variables();
        let got: Vec<(&str, bool, bool, bool, &str)> = vars
            .iter()
            .map(|v| (v.name.as_str(), v.is_static, v.is_extern, v.has_initializer, v.declarator.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("count", true, false, false, "int count"),
                ("bar", true, false, true, "struct foo bar"),
                ("y", false, false, true, "int y"),
                ("z", false, true, false, "int z"),
                ("mem_map", false, true, false, "struct page *mem_map"),
                ("a", true, false, false, "unsigned long a"),
                ("b", true, false, true, "unsigned long *b"),
                ("c", true, false, false, "unsigned long c[4]"),
                ("baz", true, false, false, "struct bar *baz[4]"),
                ("handler", true, false, true, "int (*handler)(int)"),
                ("totalcma_pages", false, false, false, "unsigned long totalcma_pages"),
                ("__hidden_count", true, false, false, "u32 __hidden_count"),
                ("names", false, false, true, "const char * const names[]"),
            ]
        );
        assert_eq!(
            slice(text, vars[1].range.clone()),
            "static struct foo bar = {\n\t.a = 1,\n\t.ops = { .open = foo_open },\n};"
        );
        assert_eq!((vars[0].line, vars[1].line, vars[2].line), (1, 2, 6));
        assert_eq!(vars[5].range, vars[7].range);
        assert_eq!(names(&src), ["helper"]);
    }

    #[test]
    fn identifiers_skip_members_literals_comments_and_keywords() {
        let text = "\
static int sum(struct foo *f)
{
\tstruct bar b = { .count = LIMIT };
\t/* helper_in_comment */
\tint n = f->count + b.count + sizeof(struct foo);
#ifdef CONFIG_DEBUG
\tpr_info(\"helper %d\\n\", n);
#endif
#if defined(CONFIG_A) || IS_ENABLED(CONFIG_B)
\tn += L'x';
#endif
\treturn helper(n) + helper(total_count);
}
";
        let src = Source::new(text);
        let f = func(&src, "sum");
        let ids = src.identifiers_in(f.body.clone());
        assert_eq!(
            ids,
            [
                "bar",
                "b",
                "LIMIT",
                "n",
                "f",
                "foo",
                "CONFIG_DEBUG",
                "pr_info",
                "CONFIG_A",
                "IS_ENABLED",
                "CONFIG_B",
                "helper",
                "total_count"
            ]
        );
        assert_eq!(src.identifiers_in(f.range.clone())[..3], ["sum", "foo", "f"]);
        assert!(src.identifiers_in(Range { start: 500, end: 10 }).is_empty());
    }

    #[test]
    fn duplicate_definitions_under_conditionals() {
        let text = "\
#ifdef CONFIG_X
static int pick(void)
{
\treturn 1;
}
#else
static inline int pick(void) { return 0; }
#endif
";
        let src = Source::new(text);
        assert_eq!(names(&src), ["pick", "pick"]);
        assert_eq!(src.function("pick"), None);
        assert_eq!(src.function("nothing"), None);
    }

    #[test]
    fn unbalanced_braces_in_conditional_branches() {
        let text = "\
static void f(int a)
{
#ifdef CONFIG_X
\tif (a) {
#else
\tif (!a) {
#endif
\t\tg();
\t}
}

static void h(void) { }
";
        let src = Source::new(text);
        assert_eq!(names(&src), ["f", "h"]);
        assert_eq!(func(&src, "f").last_line, 10);
    }

    #[test]
    fn missing_semicolon_after_a_macro() {
        let text = "MODULE_PARM_DESC(debug, \"x\")\nstatic int next(void)\n{\n\treturn 0;\n}\n\
                    FOO(a)\n#include <linux/x.h>\nint after;\nEXPORT_SYMBOL(after)\nint plain(void) { return 1; }\n\
                    module_init(next)\nint more = 1;\n__typeof__(more) copy;\n";
        let src = Source::new(text);
        let f = func(&src, "next");
        assert_eq!(f.declaration, "static int next(void)");
        assert_eq!(f.first_line, 2);
        assert_eq!(var_names(&src), ["after", "more", "copy"]);
        assert_eq!(func(&src, "plain").declaration, "int plain(void)");
        assert_eq!(src.variables()[1].declarator, "int more");
        assert_eq!(src.variables()[2].declarator, "__typeof__(more) copy");
    }

    #[test]
    fn crlf_text() {
        let text =
            "/* doc */\r\nstatic int a;\r\n\r\nstatic long f(int x)\r\n{\r\n\treturn x;\r\n}\r\n#include <y.h>\r\n";
        let src = Source::new(text);
        let f = func(&src, "f");
        assert_eq!((f.first_line, f.last_line), (4, 7));
        assert_eq!(f.declaration, "static long f(int x)");
        assert_eq!(f.return_type, "long");
        let vars = src.variables();
        assert_eq!((vars[0].name.as_str(), vars[0].line), ("a", 2));
        assert_eq!(src.includes()[0].line, "#include <y.h>");
        let g = Source::new("/* doc */\r\nstatic int g(void)\r\n{\r\n}\r\n");
        assert_eq!(func(&g, "g").doc_start, 0);
    }

    #[test]
    fn garbage_never_panics() {
        let pieces =
            [HELPER, BODY, "static int ünïcödé(void) { /* ✓ { */ return '✓'; } \"ß", "}}}{{{ ( ) ] [ ;;; , = *"];
        for piece in pieces {
            for end in (0..=piece.len()).filter(|&i| piece.is_char_boundary(i)) {
                for text in [&piece[..end], &piece[end..]] {
                    let src = Source::new(text);
                    for f in src.functions() {
                        let _ = src.static_locals(&f);
                        let _ = src.identifiers_in(f.range.clone());
                        assert!(f.range.start <= f.body.start && f.body.end < f.range.end && f.range.end <= text.len());
                    }
                    let _ = src.variables();
                    let _ = src.includes();
                    let _ = src.identifiers_in(0..text.len());
                }
            }
        }
        let odd = [
            "#",
            "#define X \\",
            "/*",
            "//",
            "\"",
            "'",
            "'\\",
            "x(",
            "x)",
            "static int (*",
            "int a[",
            "f(void) {",
            "#if\n#else\n#else\n#endif\n#endif\n}",
            "SYSCALL_DEFINE1(",
            "SYSCALL_DEFINE1() {}",
            "A(1) {}",
            "int f(void) __attribute__((",
            "struct { } __x;",
            "\u{feff}int x;\r",
            ".5e+3 0x1p-2 ...",
        ];
        for text in odd {
            let src = Source::new(text);
            let _ = (src.functions(), src.variables(), src.includes(), src.identifiers_in(0..usize::MAX));
        }
        let other = Source::new(BODY);
        let f = func(&other, "tricky");
        let short = Source::new("int x;");
        assert!(short.static_locals(&f).is_empty());
        assert!(short.identifiers_in(f.body.clone()).is_empty());
    }
}
