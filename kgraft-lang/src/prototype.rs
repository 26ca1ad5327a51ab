//! The checks against the target kernel: every replaced function exists there and can be
//! patched, every signature agrees with the kernel's prototype, every module exists.
//!
//! A signature is compared by shape, the way the C calling convention sees it: the number of
//! parameters, and for each one (and the return value) its kind (integer, pointer, structure,
//! floating point, nothing) and size; where both sides name the type a pointer points to, the
//! names must agree too. Rust spellings the kernel cannot judge (a pointer to `c_void`, a type
//! the BTF does not know) are accepted as written.

use std::collections::BTreeSet;

use crate::ast::{ExternItem, File, Fragment, Item, Param, Signature};
use crate::check::{self, distance};
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, Span};
use crate::kernel::{Kernel, Ty, TypeId};

/// Checks a parsed source against the kernel; pushes errors and warnings.
pub(crate) fn check(file: &File, kernel: &Kernel, diags: &mut Diagnostics) {
    let mut ignored = Diagnostics::default();
    let mut modules_reported = BTreeSet::new();
    let mut suggestions = 0;
    let all = check::targets(file);
    let replaced: BTreeSet<(String, &str)> =
        all.iter().map(|t| (t.object.replace('-', "_"), t.func.sig.name.name.as_str())).collect();
    let replaced: BTreeSet<(&str, &str)> = replaced.iter().map(|(o, f)| (o.as_str(), *f)).collect();
    for t in check::targets(file) {
        let object = t.object.replace('-', "_");
        let sig = &t.func.sig;
        if object != "vmlinux" && !kernel.objects.contains_key(&object) {
            let known = kernel.modules.as_ref().is_some_and(|m| m.contains(&object));
            if !known && kernel.modules.is_some() && modules_reported.insert(object.clone()) {
                let span = module_span(file, t.object).unwrap_or(sig.name.span);
                let names: Vec<&str> = kernel.modules.iter().flatten().map(String::as_str).collect();
                let mut d = Diagnostic::error(codes::E0040, format!("{} has no module `{object}`", kernel.release))
                    .primary(span, "no such module in the target kernel")
                    .note("a `module` block names a module the target release ships, as `lsmod` spells it");
                d = match closest(&object, names.iter().copied()) {
                    Some(c) => {
                        d.help(format!("did you mean \"{c}\"? An out-of-tree module is named with --module FILE.ko"))
                    }
                    None => d.help("name an out-of-tree module's file with --module FILE.ko"),
                };
                diags.push(d);
            }
            continue;
        }
        let Some(obj) = kernel.objects.get(&object) else { continue };
        let sympos = check::sympos(t.func, &mut ignored);
        let name = &sig.name.name;
        let symbol = obj.symbols.as_ref().and_then(|s| s.get(name)).copied();
        let protos = obj.functions.get(name);
        match (symbol, protos) {
            (Some(s), _) if s.traceable == 0 => {
                diags.push(
                    Diagnostic::error(codes::E0042, format!("`{name}` in {object} cannot be patched"))
                        .primary(sig.name.span, "this function has no fentry site")
                        .note(
                            "kGraft redirects calls through the NOP the compiler puts at the start of every traceable \
                             function; `notrace`, `noinstr` and `__init` functions have none",
                        )
                        .help("replace the functions that call it instead"),
                );
                continue;
            }
            (Some(s), _) if s.count > 1 && sympos == 0 => {
                diags.push(
                    Diagnostic::error(codes::E0043, format!("{object} has {} functions named `{name}`", s.count))
                        .primary(sig.name.span, "which one is meant?")
                        .note("local functions of one name are told apart by their position in /proc/kallsyms")
                        .help(format!("add `#[sympos(N)]`, with N from 1 to {}", s.count)),
                );
            }
            (Some(s), _) if sympos > s.count => {
                let span =
                    t.func.attrs.iter().find(|a| a.name.name == "sympos").map(|a| a.span).unwrap_or(sig.name.span);
                let only = if s.count == 1 { "only one function".to_owned() } else { format!("{} functions", s.count) };
                diags.push(
                    Diagnostic::error(codes::E0043, format!("`#[sympos({sympos})]` is out of range"))
                        .primary(span, format!("{object} has {only} named `{name}`"))
                        .help(if s.count == 1 {
                            "remove the attribute".to_owned()
                        } else {
                            format!("use 1 to {}", s.count)
                        }),
                );
            }
            (None, None) if obj.has_btf || obj.symbols.is_some() => {
                let mut d = Diagnostic::error(
                    codes::E0041,
                    format!("{object} of {} has no function `{name}` to patch", kernel.release),
                )
                .primary(sig.name.span, "not found in the target kernel");
                d = if obj.symbols.is_some() {
                    d.note("the function is not in the symbol table: it does not exist there, or it was inlined into every caller")
                } else {
                    d.note(
                        "the kernel's BTF describes every function compiled as one; this one is missing: \
                         it does not exist in this release, or it was inlined into every caller",
                    )
                };
                // A suggestion searches every function name; past the first few, the cost is not
                // worth it (a patch with hundreds of missing targets is for another kernel).
                suggestions += 1;
                let names = obj.functions.keys().map(String::as_str);
                let near = if suggestions <= MAX_SUGGESTIONS { closest(name, names) } else { None };
                d = match near {
                    Some(c) => d.help(format!("did you mean `{c}`? If it was inlined, replace its callers")),
                    None => d.help("if it was inlined, replace its callers"),
                };
                diags.push(d);
                continue;
            }
            _ => {}
        }
        if let Some(protos) = protos {
            check_signature(kernel, sig, protos, &format!("`{name}` in {object}"), diags);
        }
        if let Some(callers) = obj.inlined.get(name) {
            let missing: Vec<&str> =
                callers.iter().map(String::as_str).filter(|c| !replaced.contains(&(object.as_str(), *c))).collect();
            if !missing.is_empty() {
                let list = missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
                diags.push(
                    Diagnostic::warning(codes::E0046, format!("`{name}` is also inlined into {list}"))
                        .primary(sig.name.span, "calls from those functions keep running the old code")
                        .note("the compiler copied this function's body into those callers; only calls through its entry are redirected")
                        .help(format!("replace {} as well, with the fix applied to the inlined copy", if missing.len() == 1 { "it" } else { "them" })),
                );
            }
        }
    }
    // Externs are checked against the object they belong to: vmlinux, or a `module` block's.
    for item in &file.items {
        let (object, blocks) = match item {
            Item::Extern(block) => ("vmlinux".to_owned(), std::slice::from_ref(block)),
            Item::Module(m) => (m.name.replace('-', "_"), m.externs.as_slice()),
            _ => continue,
        };
        let Some(obj) = kernel.objects.get(&object) else { continue };
        for ext in blocks.iter().flat_map(|b| &b.items) {
            if let ExternItem::Fn(sig) = ext
                && let Some(protos) = obj.functions.get(&sig.name.name)
            {
                check_signature(kernel, sig, protos, &format!("the extern `{}`", sig.name.name), diags);
            }
        }
    }
}

fn module_span(file: &File, name: &str) -> Option<Span> {
    file.items.iter().find_map(|i| match i {
        Item::Module(m) if m.name == name => Some(m.name_span),
        _ => None,
    })
}

/// How many missing targets get a "did you mean" search.
const MAX_SUGGESTIONS: usize = 32;

/// The name closest to `word`, if one is close enough to be a typo.
pub fn closest<'a>(word: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).clamp(1, 3);
    // A cheap bound first: an edit changes the count of at most two characters by one each, so
    // names whose character counts differ from the word's by more than twice the limit are far.
    let mut counts = [0i32; 128];
    for b in word.bytes() {
        counts[usize::from(b & 0x7f)] += 1;
    }
    let near = |name: &str| {
        let mut c = counts;
        for b in name.bytes() {
            c[usize::from(b & 0x7f)] -= 1;
        }
        c.iter().map(|n| n.unsigned_abs() as usize).sum::<usize>() <= 2 * limit
    };
    names
        .filter(|n| n.len().abs_diff(word.len()) <= limit && near(n))
        .map(|n| (distance(word, n), n))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, n)| n)
}

/// The shape of a parameter or return value, as the calling convention sees it.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Void,
    Int(u64),
    Float(u64),
    /// A pointer, with the names the pointee goes by when it is a named kernel type.
    Ptr(BTreeSet<String>),
    /// A structure or union passed by value, with its size and names.
    Aggregate(u64, BTreeSet<String>),
    /// Not judged.
    Unknown,
}

impl Shape {
    fn describe(&self) -> String {
        match self {
            Shape::Void => "nothing".into(),
            Shape::Int(n) => format!("a {}-byte integer", n),
            Shape::Float(n) => format!("a {}-byte floating-point number", n),
            Shape::Ptr(names) => match names.iter().next() {
                Some(n) => format!("a pointer to `{n}`"),
                None => "a pointer".into(),
            },
            Shape::Aggregate(n, _) => format!("a {n}-byte structure passed by value"),
            Shape::Unknown => "a type kgraftc cannot judge".into(),
        }
    }
}

/// The size of a Rust primitive or prelude type.
pub(crate) fn primitive_size(name: &str) -> Option<(u64, bool)> {
    Some(match name {
        "u8" | "c_uchar" => (1, false),
        "i8" | "c_char" | "c_schar" | "s8" => (1, true),
        "bool" => (1, false),
        "u16" | "c_ushort" => (2, false),
        "i16" | "c_short" | "s16" => (2, true),
        "u32" | "c_uint" | "gfp_t" => (4, false),
        "i32" | "c_int" | "s32" => (4, true),
        "u64" | "usize" | "c_ulong" | "c_ulonglong" | "size_t" => (8, false),
        "i64" | "isize" | "c_long" | "c_longlong" | "ssize_t" | "loff_t" | "s64" => (8, true),
        "u128" => (16, false),
        "i128" => (16, true),
        _ => return None,
    })
}

/// The names a kernel type goes by: its typedef names down to its tag.
fn kernel_names(kernel: &Kernel, mut id: TypeId) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for _ in 0..32 {
        match kernel.ty(id) {
            Ty::Typedef { name, ty } => {
                names.insert(name.clone());
                id = *ty;
            }
            Ty::Qualified(ty) | Ty::Const(ty) => id = *ty,
            Ty::Struct(c) | Ty::Union(c) => {
                names.extend(c.name.clone());
                break;
            }
            Ty::Enum(e) => {
                names.extend(e.name.clone());
                break;
            }
            Ty::Fwd { name, .. } => {
                names.insert(name.clone());
                break;
            }
            _ => break,
        }
    }
    names
}

fn kernel_shape(kernel: &Kernel, id: TypeId) -> Shape {
    match kernel.ty(kernel.resolve(id)) {
        Ty::Void => Shape::Void,
        Ty::Int { size, .. } => Shape::Int(u64::from(*size)),
        Ty::Enum(e) => Shape::Int(u64::from(e.size)),
        Ty::Float { size } => Shape::Float(u64::from(*size)),
        Ty::Ptr(to) => {
            let to = kernel.unqualified(*to);
            Shape::Ptr(match kernel.ty(kernel.resolve(to)) {
                Ty::Struct(_) | Ty::Union(_) | Ty::Fwd { .. } => kernel_names(kernel, to),
                _ => BTreeSet::new(),
            })
        }
        Ty::Array { .. } | Ty::Proto(_) => Shape::Ptr(BTreeSet::new()),
        Ty::Struct(c) | Ty::Union(c) => Shape::Aggregate(u64::from(c.size), kernel_names(kernel, id)),
        _ => Shape::Unknown,
    }
}

fn rust_shape(kernel: &Kernel, ty: &syn::Type) -> Shape {
    match ty {
        syn::Type::Paren(p) => rust_shape(kernel, &p.elem),
        syn::Type::Group(g) => rust_shape(kernel, &g.elem),
        syn::Type::Tuple(t) if t.elems.is_empty() => Shape::Void,
        syn::Type::Never(_) => Shape::Void,
        syn::Type::Ptr(p) => Shape::Ptr(pointee_names(kernel, &p.elem)),
        syn::Type::Reference(r) => Shape::Ptr(pointee_names(kernel, &r.elem)),
        syn::Type::BareFn(_) => Shape::Ptr(BTreeSet::new()),
        syn::Type::Array(_) => Shape::Unknown,
        syn::Type::Path(p) => {
            let Some(last) = p.path.segments.last() else { return Shape::Unknown };
            let name = last.ident.to_string();
            if name == "Option" {
                // `Option<fn(..)>` and `Option<&T>` are pointers that may be null.
                return Shape::Ptr(BTreeSet::new());
            }
            if p.path.segments.len() > 1
                && !matches!(name.as_str(), "c_int" | "c_char" | "c_long" | "c_ulong" | "c_uint")
            {
                return Shape::Unknown;
            }
            if let Some((size, _)) = primitive_size(&name) {
                return Shape::Int(size);
            }
            match name.as_str() {
                "f32" => Shape::Float(4),
                "f64" => Shape::Float(8),
                "c_void" => Shape::Void,
                _ => match kernel.type_named(&name) {
                    Some(id) => kernel_shape(kernel, id),
                    None => Shape::Unknown,
                },
            }
        }
        _ => Shape::Unknown,
    }
}

/// The names of a pointee written in Rust, when it is a kernel type; empty for anything a
/// pointer may be cast from freely (`c_void`, bytes, a type the kernel does not know).
fn pointee_names(kernel: &Kernel, ty: &syn::Type) -> BTreeSet<String> {
    if let syn::Type::Path(p) = ty
        && let (Some(seg), 1) = (p.path.segments.last(), p.path.segments.len())
    {
        let name = seg.ident.to_string();
        if let Some(id) = kernel.type_named(&name)
            && matches!(kernel.ty(kernel.resolve(id)), Ty::Struct(_) | Ty::Union(_) | Ty::Fwd { .. })
        {
            return kernel_names(kernel, id);
        }
    }
    BTreeSet::new()
}

fn compatible(rust: &Shape, kernel: &Shape) -> bool {
    match (rust, kernel) {
        (Shape::Unknown, _) | (_, Shape::Unknown) => true,
        (Shape::Ptr(a), Shape::Ptr(b)) => a.is_empty() || b.is_empty() || !a.is_disjoint(b),
        (Shape::Aggregate(n, a), Shape::Aggregate(m, b)) => {
            n == m && (a.is_empty() || b.is_empty() || !a.is_disjoint(b))
        }
        (a, b) => a == b,
    }
}

fn parse_ty(frag: &Fragment) -> Option<syn::Type> {
    check::parse_fragment::<syn::Type>(frag).ok()
}

/// Compares a signature with the kernel's prototypes of that name (a local name may have several).
fn check_signature(kernel: &Kernel, sig: &Signature, protos: &[TypeId], what: &str, diags: &mut Diagnostics) {
    let mut first: Option<Vec<Diagnostic>> = None;
    for &proto_id in protos {
        let found = compare(kernel, sig, proto_id, what);
        if found.is_empty() {
            return;
        }
        first.get_or_insert(found);
    }
    for d in first.into_iter().flatten() {
        diags.push(d);
    }
}

fn compare(kernel: &Kernel, sig: &Signature, proto_id: TypeId, what: &str) -> Vec<Diagnostic> {
    let Some(proto) = kernel.proto(proto_id) else { return Vec::new() };
    let c = kernel.c_prototype(&sig.name.name, proto_id);
    let mut out = Vec::new();
    let params: Vec<(&crate::ast::Ident, &Fragment)> = sig
        .params
        .iter()
        .filter_map(|p| match p {
            Param::Named { name, ty, .. } => Some((name, ty)),
            Param::Variadic(_) => None,
        })
        .collect();
    let variadic = sig.params.iter().any(|p| matches!(p, Param::Variadic(_)));
    let mismatch = |span: Span, label: String, message: String| {
        Diagnostic::error(codes::E0044, message)
            .primary(span, label)
            .note(format!("the kernel's prototype: {c}"))
            .help("write the signature as the kernel declares it; a replacement is called with the kernel's arguments")
    };
    if params.len() != proto.params.len() || variadic != proto.variadic {
        let n = proto.params.len();
        let span = Span::new(sig.name.span.start, params.last().map(|(_, t)| t.span.end).unwrap_or(sig.name.span.end));
        let plural = |n: usize| if n == 1 { "parameter" } else { "parameters" };
        let message = format!(
            "{what} takes {n} {}{}; this signature {}",
            plural(n),
            if proto.variadic { " and `...`" } else { "" },
            if params.len() == n { "differs in `...`".to_owned() } else { format!("has {}", params.len()) }
        );
        out.push(mismatch(span, format!("{} {} here", params.len(), plural(params.len())), message));
        return out;
    }
    for (i, ((name, ty), kp)) in params.iter().zip(&proto.params).enumerate() {
        let Some(rust) = parse_ty(ty) else { continue };
        let rs = rust_shape(kernel, &rust);
        let ks = kernel_shape(kernel, kp.ty);
        if !compatible(&rs, &ks) {
            let c_param = kernel.c_decl(kp.ty, kp.name.as_deref().unwrap_or(""));
            out.push(mismatch(
                ty.span,
                format!("{} here", rs.describe()),
                format!(
                    "parameter {} (`{}`) of {what} is `{c_param}` in the kernel: {}",
                    i + 1,
                    name.name,
                    ks.describe()
                ),
            ));
        }
    }
    let ks = kernel_shape(kernel, proto.ret);
    let (rs, span) = match &sig.ret {
        Some(ret) => match parse_ty(ret) {
            Some(t) => (rust_shape(kernel, &t), ret.span),
            None => (Shape::Unknown, ret.span),
        },
        None => (Shape::Void, sig.name.span),
    };
    if !compatible(&rs, &ks) {
        out.push(mismatch(
            span,
            format!("{} here", rs.describe()),
            match ks {
                Shape::Void => format!("{what} returns nothing (`void`) in the kernel"),
                _ => format!("{what} returns `{}` in the kernel: {}", kernel.c_name(proto.ret), ks.describe()),
            },
        ));
    }
    out
}
