//! The syntax tree of a `.kgp` source, every node with its span.
//!
//! Rust fragments (types, bodies, initial values) are kept as text with their span; the checks
//! parse them with syn.

use crate::diagnostic::Span;

/// A name with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// A piece of Rust source: a type, an expression or a block, exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The text.
    pub text: String,
    /// Where it is written.
    pub span: Span,
}

/// A `///` or `//!` doc comment line, without its marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    /// The text after `///` or `//!`.
    pub text: String,
    /// Where the comment is written.
    pub span: Span,
}

/// A whole source.
#[derive(Clone, Debug, Default)]
pub struct File {
    /// The `//!` comments at the top.
    pub docs: Vec<Doc>,
    /// The items in source order.
    pub items: Vec<Item>,
}

/// One top-level item.
#[derive(Clone, Debug)]
pub enum Item {
    /// `patch NAME { ... }`.
    Header(Header),
    /// `extern { ... }`.
    Extern(ExternBlock),
    /// `shadow TYPE { ... }`.
    Shadow(ShadowBlock),
    /// `replace fn ...` in vmlinux.
    Replace(Replace),
    /// `module "name" { ... }`.
    Module(ModuleBlock),
    /// `on KIND { ... }`.
    Callback(Callback),
    /// `static NAME: Type = value;`: data of the patch itself.
    Global(Global),
    /// `static mut NAME: Type = value;`: parsed to be refused with its reason.
    StaticMut(Global),
    /// `c { ... }`: C shared by the C bodies.
    C(CItem),
    /// `fn NAME(params) -> T { ... }`: a helper function of the patch.
    Helper(Helper),
    /// `replace syscall NAME(params) -> c_long { ... }`: every entry of a system call.
    Syscall(Syscall),
    /// `state NAME (id = N, version = V);`: a system state of the livepatch core.
    State(State),
    /// `param NAME: T = default;`: a module parameter.
    Param(ModParam),
}

/// The header.
#[derive(Clone, Debug)]
pub struct Header {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The `patch` keyword.
    pub keyword: Span,
    /// The patch name.
    pub name: Ident,
    /// The `key: value` entries.
    pub entries: Vec<Entry>,
}

/// A `key: value` entry of the header.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The key.
    pub key: Ident,
    /// The value.
    pub value: Value,
}

/// A header value.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string; `raw` is the text between the quotes, escapes not yet resolved.
    Str {
        /// The text between the quotes.
        raw: String,
        /// The whole literal.
        span: Span,
    },
    /// `true` or `false`.
    Bool(bool, Span),
    /// An integer.
    Int(Span),
    /// A bare name.
    Ident(Ident),
}

impl Value {
    /// Where the value is written.
    pub fn span(&self) -> Span {
        match self {
            Value::Str { span, .. } | Value::Bool(_, span) | Value::Int(span) => *span,
            Value::Ident(ident) => ident.span,
        }
    }
}

/// An `extern { ... }` block.
#[derive(Clone, Debug)]
pub struct ExternBlock {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// Its declarations.
    pub items: Vec<ExternItem>,
}

/// A declaration in an `extern` block.
#[derive(Clone, Debug)]
pub enum ExternItem {
    /// `fn NAME(params) -> Ret;`.
    Fn(Signature),
    /// `static [mut] NAME: Type;`.
    Static(Static),
}

impl ExternItem {
    /// The declared name.
    pub fn name(&self) -> &Ident {
        match self {
            ExternItem::Fn(sig) => &sig.name,
            ExternItem::Static(s) => &s.name,
        }
    }
}

/// A function signature (of an `extern fn` or a replacement).
#[derive(Clone, Debug)]
pub struct Signature {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The function name.
    pub name: Ident,
    /// The parameters, `...` included, in order.
    pub params: Vec<Param>,
    /// The return type, if any.
    pub ret: Option<Fragment>,
}

/// A parameter.
#[derive(Clone, Debug)]
pub enum Param {
    /// `[mut] name: Type`.
    Named {
        /// Whether the binding is `mut`.
        mutable: bool,
        /// The name.
        name: Ident,
        /// The type.
        ty: Fragment,
    },
    /// `...`.
    Variadic(Span),
}

/// A `static` in an `extern` block.
#[derive(Clone, Debug)]
pub struct Static {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// Whether it is `static mut`.
    pub mutable: bool,
    /// The symbol name.
    pub name: Ident,
    /// Its type.
    pub ty: Fragment,
}

/// A `shadow TYPE { ... }` block.
#[derive(Clone, Debug)]
pub struct ShadowBlock {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The kernel type the data is attached to.
    pub ty: Ident,
    /// The options between parentheses after the type (`id = N`, `keep`, `drop = f`).
    pub options: Vec<ShadowOption>,
    /// The fields.
    pub fields: Vec<Field>,
}

/// An option of a shadow block: `key` or `key = value`.
#[derive(Clone, Debug)]
pub struct ShadowOption {
    /// The option's name.
    pub key: Ident,
    /// Its value (an integer or a name, as written), if any.
    pub value: Option<Ident>,
    /// The whole option.
    pub span: Span,
}

/// A shadow field.
#[derive(Clone, Debug)]
pub struct Field {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The field name.
    pub name: Ident,
    /// Its Rust type.
    pub ty: Fragment,
    /// Its initial value, a Rust expression.
    pub init: Fragment,
}

/// An attribute `#[name(arg)]` on a replacement.
#[derive(Clone, Debug)]
pub struct Attribute {
    /// The attribute's name.
    pub name: Ident,
    /// The text between the parentheses, if any.
    pub arg: Option<Fragment>,
    /// The whole attribute.
    pub span: Span,
}

/// A `replace fn ...` item.
#[derive(Clone, Debug)]
pub struct Replace {
    /// Its attributes.
    pub attrs: Vec<Attribute>,
    /// The signature; its name is the kernel function replaced.
    pub sig: Signature,
    /// The body, braces included.
    pub body: Fragment,
    /// From `replace` to the end of the signature.
    pub head: Span,
    /// The `in C` that makes the body C, if it is C.
    pub in_c: Option<Span>,
}

/// A `module "name" { ... }` block.
#[derive(Clone, Debug)]
pub struct ModuleBlock {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The module name as written between the quotes.
    pub name: String,
    /// The string literal.
    pub name_span: Span,
    /// Its replacements.
    pub fns: Vec<Replace>,
    /// Its callbacks, run for this module.
    pub callbacks: Vec<Callback>,
    /// Symbols of this module the bodies use (resolved in the module, not in vmlinux).
    pub externs: Vec<ExternBlock>,
}

/// An `on KIND { ... }` callback.
#[derive(Clone, Debug)]
pub struct Callback {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The callback kind as written.
    pub kind: Ident,
    /// The name the object is bound to in the body (`on post_patch(obj)`), if any.
    pub param: Option<Ident>,
    /// The body, braces included.
    pub body: Fragment,
}

/// A `static NAME: Type = value;` item: data owned by the patch, shared by its bodies.
#[derive(Clone, Debug)]
pub struct Global {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// Its name.
    pub name: Ident,
    /// Its Rust type.
    pub ty: Fragment,
    /// Its initial value, a constant Rust expression.
    pub init: Fragment,
}

/// A `c { ... }` item: `#include`s and helpers shared by the C bodies.
///
/// A named item, `c "kernel/fork.c" { ... }`, begins a C unit of its own: it and the C bodies
/// and unnamed `c` items after it, up to the next named item, are compiled as one C file,
/// apart from the others (as the kernel compiles each of its files apart).
#[derive(Clone, Debug)]
pub struct CItem {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The `c` keyword.
    pub keyword: Span,
    /// The unit's name as written between the quotes (the kernel file the C comes from),
    /// with the string literal's span; `None` for an unnamed item.
    pub unit: Option<(String, Span)>,
    /// The C text, braces included.
    pub body: Fragment,
}

/// A helper `fn` of the patch, callable from the Rust bodies.
#[derive(Clone, Debug)]
pub struct Helper {
    /// The signature.
    pub sig: Signature,
    /// The body, braces included.
    pub body: Fragment,
}

/// A `replace syscall NAME(params) -> T { ... }` item.
#[derive(Clone, Debug)]
pub struct Syscall {
    /// The signature; its name is the system call's (`getpriority`, not `sys_getpriority`).
    pub sig: Signature,
    /// The body, braces included.
    pub body: Fragment,
    /// `in C` when the body is C (compiled into the patch's C file).
    pub in_c: Option<Span>,
    /// From `replace` to the end of the signature.
    pub head: Span,
}

/// A `state NAME (id = N, version = V);` item.
#[derive(Clone, Debug)]
pub struct State {
    /// Doc comments before it.
    pub docs: Vec<Doc>,
    /// The name bodies use for it.
    pub name: Ident,
    /// The options between the parentheses (`id = N`, `version = V`).
    pub options: Vec<ShadowOption>,
    /// The whole item.
    pub span: Span,
}

/// A `param NAME: T = default;` item.
#[derive(Clone, Debug)]
pub struct ModParam {
    /// Doc comments before it (the parameter's description in `modinfo`).
    pub docs: Vec<Doc>,
    /// The parameter's name.
    pub name: Ident,
    /// Its Rust type.
    pub ty: Fragment,
    /// Its default value, a literal.
    pub default: Fragment,
}
