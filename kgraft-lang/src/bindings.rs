//! Rust definitions of the kernel's types, generated from its BTF for what a patch reaches.
//!
//! A type the patch names (in a signature, a static, a shadow block or a body) gets a
//! `#[repr(C)]` definition with every member at the offset the kernel has it, asserted at
//! compile time; what such a definition holds by value is defined too, and what it only points
//! to stays opaque unless the patch names it as well. Bitfields are reached through accessor
//! methods, anonymous members are named `__anonN`, a flexible array is `[T; 0]`, a function
//! pointer is `Option<unsafe extern "C" fn(..)>`. An enum is an integer type with one constant
//! per enumerator; an enumerator a body uses brings its enum in. A kernel function a body calls
//! without declaring it is declared from its prototype.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};
use syn::visit::Visit;

use crate::ast::{ExternItem, File, Fragment, Item, Param};
use crate::check;
use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics, Span};
use crate::kernel::{self, Kernel, Ty, TypeId};
use crate::lower::is_known_type;

/// The names a patch uses: types (with where each is first written), values and called
/// functions.
#[derive(Default)]
pub(crate) struct Uses {
    pub(crate) types: BTreeMap<String, Span>,
    pub(crate) values: BTreeSet<String>,
    pub(crate) calls: BTreeSet<String>,
    /// Names the patch itself declares (externs, statics, replacements, parameters, locals).
    pub(crate) declared: BTreeSet<String>,
    /// Whether bodies and initial values are skipped (declarations only: no body is parsed).
    skip_bodies: bool,
    /// For each type name, the objects whose code uses it: `vmlinux` for the patch's own items,
    /// a module's name for its `module` block. A module's own types come first there.
    pub(crate) scopes: BTreeMap<String, BTreeSet<String>>,
    /// The object of the item being read.
    scope: String,
}

struct Collect<'a> {
    uses: &'a mut Uses,
    frag: &'a Fragment,
}

/// The kernel type a path names, if it is a bare name (`seq_file`) that is neither Rust's nor
/// the prelude's.
pub(crate) fn kernel_type_name(tp: &syn::TypePath) -> Option<&syn::Ident> {
    let seg = tp.path.segments.first()?;
    let bare = tp.qself.is_none() && tp.path.leading_colon.is_none() && tp.path.segments.len() == 1;
    (bare && seg.arguments.is_none() && !is_known_type(&seg.ident.to_string())).then_some(&seg.ident)
}

impl<'ast> Visit<'ast> for Collect<'_> {
    fn visit_type_path(&mut self, tp: &'ast syn::TypePath) {
        if let Some(name) = kernel_type_name(tp) {
            let span = check::node_span(name.span(), self.frag);
            self.uses.types.entry(name.to_string()).or_insert(span);
            let scope = self.uses.scope.clone();
            self.uses.scopes.entry(name.to_string()).or_default().insert(scope);
        }
        syn::visit::visit_type_path(self, tp);
    }

    fn visit_expr_path(&mut self, e: &'ast syn::ExprPath) {
        if e.qself.is_none() && e.path.leading_colon.is_none() && e.path.segments.len() == 1 {
            self.uses.values.insert(e.path.segments[0].ident.to_string());
        }
        syn::visit::visit_expr_path(self, e);
    }

    fn visit_expr_call(&mut self, e: &'ast syn::ExprCall) {
        if let syn::Expr::Path(p) = &*e.func
            && p.qself.is_none()
            && p.path.segments.len() == 1
        {
            self.uses.calls.insert(p.path.segments[0].ident.to_string());
        }
        syn::visit::visit_expr_call(self, e);
    }

    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.uses.declared.insert(p.ident.to_string());
        syn::visit::visit_pat_ident(self, p);
    }
}

impl Uses {
    fn ty(&mut self, frag: &Fragment) {
        if let Ok(t) = check::parse_fragment::<syn::Type>(frag) {
            Collect { uses: self, frag }.visit_type(&t);
        }
    }

    fn block(&mut self, frag: &Fragment) {
        if self.skip_bodies {
            return;
        }
        if let Ok(b) = check::parse_fragment::<syn::Block>(frag) {
            Collect { uses: self, frag }.visit_block(&b);
        }
    }

    fn expr(&mut self, frag: &Fragment) {
        if self.skip_bodies {
            return;
        }
        if let Ok(e) = check::parse_fragment::<syn::Expr>(frag) {
            Collect { uses: self, frag }.visit_expr(&e);
        }
    }

    fn signature(&mut self, sig: &crate::ast::Signature) {
        for p in &sig.params {
            if let Param::Named { name, ty, .. } = p {
                self.declared.insert(name.name.clone());
                self.ty(ty);
            }
        }
        if let Some(r) = &sig.ret {
            self.ty(r);
        }
    }

    fn extern_block(&mut self, block: &crate::ast::ExternBlock) {
        for ext in &block.items {
            self.declared.insert(ext.name().name.clone());
            match ext {
                ExternItem::Fn(sig) => self.signature(sig),
                ExternItem::Static(s) => self.ty(&s.ty),
            }
        }
    }

    fn replacement(&mut self, r: &crate::ast::Replace) {
        self.declared.insert(r.sig.name.name.clone());
        self.signature(&r.sig);
        if r.in_c.is_none() {
            self.block(&r.body);
        }
    }

    /// The kernel type `name` means where the patch uses it (see [`Kernel::type_in_scopes`]).
    pub(crate) fn resolve(&self, kernel: &Kernel, name: &str) -> Result<Option<TypeId>, kernel::Ambiguity> {
        let scopes = self.scopes.get(name).into_iter().flatten().map(String::as_str);
        kernel.type_in_scopes(name, scopes)
    }

    /// Collects the names used anywhere in a source.
    pub(crate) fn of(file: &File) -> Uses {
        Uses::collect(file, false)
    }

    /// Collects the names the declarations use (signatures, statics, shadow blocks), without
    /// parsing a single body: cheap enough for a note.
    pub(crate) fn of_declarations(file: &File) -> Uses {
        Uses::collect(file, true)
    }

    fn collect(file: &File, skip_bodies: bool) -> Uses {
        let mut uses = Uses { skip_bodies, scope: "vmlinux".into(), ..Uses::default() };
        for item in &file.items {
            match item {
                Item::Header(_) => {}
                Item::Extern(block) => uses.extern_block(block),
                Item::Shadow(block) => {
                    uses.types.entry(block.ty.name.clone()).or_insert(block.ty.span);
                    uses.scopes.entry(block.ty.name.clone()).or_default().insert(uses.scope.clone());
                    for f in &block.fields {
                        uses.ty(&f.ty);
                        uses.expr(&f.init);
                    }
                }
                Item::Replace(r) => uses.replacement(r),
                Item::Module(m) => {
                    uses.scope = m.name.replace('-', "_");
                    m.externs.iter().for_each(|b| uses.extern_block(b));
                    m.fns.iter().for_each(|r| uses.replacement(r));
                    m.callbacks.iter().for_each(|cb| uses.block(&cb.body));
                    uses.scope = "vmlinux".into();
                }
                Item::Helper(h) => {
                    uses.declared.insert(h.sig.name.name.clone());
                    uses.signature(&h.sig);
                    uses.block(&h.body);
                }
                Item::StaticMut(g) => {
                    uses.declared.insert(g.name.name.clone());
                    uses.ty(&g.ty);
                }
                // C is compiled against the target's headers, not these definitions.
                Item::C(_) => {}
                Item::Callback(cb) => uses.block(&cb.body),
                Item::Syscall(sc) => {
                    uses.signature(&sc.sig);
                    if sc.in_c.is_none() {
                        uses.block(&sc.body);
                    }
                }
                Item::State(st) => {
                    uses.declared.insert(st.name.name.clone());
                }
                Item::Param(p) => {
                    uses.declared.insert(p.name.name.clone());
                    uses.ty(&p.ty);
                }
                Item::Global(g) => {
                    uses.declared.insert(g.name.name.clone());
                    uses.ty(&g.ty);
                    uses.expr(&g.init);
                }
            }
        }
        uses
    }
}

/// Warns of the types a patch names that the kernel does not have.
pub(crate) fn check_types(file: &File, kernel: &Kernel, diags: &mut Diagnostics) {
    let uses = Uses::of(file);
    for (name, span) in &uses.types {
        if let Err(a) = uses.resolve(kernel, name) {
            let list: Vec<String> = a
                .candidates
                .iter()
                .map(|(object, _, size)| match size {
                    Some(n) => format!("{object}'s ({n} bytes)"),
                    None => format!("{object}'s"),
                })
                .collect();
            diags.push(
                Diagnostic::error(codes::E0047, format!("`{name}` names {} different types", a.candidates.len()))
                    .primary(*span, format!("which one: {}?", list.join(", ")))
                    .note(
                        "a name means the type of the object whose code uses it (a `module` block's own, then \
                         vmlinux's); here the objects the patch uses it in, or one object's BTF, define it \
                         differently",
                    )
                    .help("use the name in one object's code only, or patch the objects in separate patches"),
            );
            continue;
        }
        if kernel.type_named(name).is_none() {
            let mut d = Diagnostic::warning(codes::E0045, format!("the target kernel has no type `{name}`"))
                .primary(*span, "not in the kernel's BTF: it stays opaque, without fields")
                .note("kernel types are named as in C, without `struct`: `seq_file` for `struct seq_file`");
            if name == "void" {
                // C's spelling, the one a kernel engineer's fingers know.
                d = d.help("C's `void` is `c_void` here: `*mut c_void` points to anything");
            } else if let Some(c) = crate::prototype::closest(name, kernel.type_names()) {
                d = d.help(format!("did you mean `{c}`?"));
            }
            diags.push(d);
        }
    }
}

/// The generated definitions, and the names that remain opaque.
pub(crate) struct Bindings {
    /// The items, in a deterministic order.
    pub(crate) items: TokenStream,
    /// Kernel type names that are only pointed to, and names the kernel does not know.
    pub(crate) opaque: BTreeSet<String>,
}

/// Generates the definitions a patch needs: `types` it names, enumerators among `uses.values`,
/// and kernel functions it calls without declaring them.
pub(crate) fn generate(kernel: &Kernel, uses: &Uses) -> Bindings {
    let mut g = Gen::new(kernel);
    let mut unknown = BTreeSet::new();
    for name in uses.types.keys() {
        match uses.resolve(kernel, name) {
            Ok(Some(id)) => g.want_named(name, id),
            // An ambiguity is an error of the checks; here the type stays opaque.
            Ok(None) | Err(_) => {
                unknown.insert(name.clone());
            }
        }
    }
    for name in &uses.values {
        if uses.declared.contains(name) || uses.types.contains_key(name) {
            continue;
        }
        if let Some((enum_id, _)) = kernel.enumerator(name) {
            g.enum_def(enum_id);
        }
    }
    let mut externs = Vec::new();
    if let Some(vmlinux) = kernel.objects.get("vmlinux") {
        for name in &uses.calls {
            if uses.declared.contains(name) || g.values.contains(name) {
                continue;
            }
            let unique = vmlinux.symbols.as_ref().and_then(|s| s.get(name)).is_none_or(|s| s.count <= 1);
            if let (Some([proto]), true) = (vmlinux.functions.get(name).map(Vec::as_slice), unique)
                && let Some(decl) = g.extern_fn(name, *proto)
            {
                g.values.insert(name.clone());
                externs.push(decl);
            }
        }
    }
    g.drain();
    let mut opaque: BTreeSet<String> = g.opaque.iter().filter(|n| !g.defined_names.contains(*n)).cloned().collect();
    opaque.extend(unknown);
    let defs: Vec<&TokenStream> = g.defs.values().collect();
    let consts: Vec<&TokenStream> = g.consts.values().collect();
    let externs = (!externs.is_empty()).then(|| quote!(unsafe extern "C" { #(#externs)* }));
    Bindings { items: quote!(#(#defs)* #(#consts)* #externs), opaque }
}

/// What a definition needs of a type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Its layout (held by value).
    Full,
    /// A name to point to.
    Pointee,
}

struct Gen<'k> {
    kernel: &'k Kernel,
    /// Definitions by Rust name: structs, unions, typedefs, enum aliases.
    defs: BTreeMap<String, TokenStream>,
    /// Constants by name.
    consts: BTreeMap<String, TokenStream>,
    /// Value names taken (constants, declared functions).
    values: BTreeSet<String>,
    /// Names with a full definition (or queued for one).
    defined_names: BTreeSet<String>,
    /// Rust names of the structs and unions to define.
    names: HashMap<TypeId, String>,
    queue: VecDeque<TypeId>,
    opaque: BTreeSet<String>,
    aligns: HashMap<TypeId, u64>,
    enums_done: BTreeSet<TypeId>,
    /// How deep the spelling of types has gone: BTF may make a type its own element, target
    /// or base (`int *p` where the pointer is its own target), which no C type is.
    depth: u32,
}

/// The deepest a type's spelling goes (C types are a few levels deep); deeper, the type is
/// taken for a loop and spelled as `c_void`.
const MAX_TYPE_DEPTH: u32 = 64;

impl<'k> Gen<'k> {
    fn new(kernel: &'k Kernel) -> Gen<'k> {
        Gen {
            kernel,
            defs: BTreeMap::new(),
            consts: BTreeMap::new(),
            values: BTreeSet::new(),
            defined_names: BTreeSet::new(),
            names: HashMap::new(),
            queue: VecDeque::new(),
            opaque: BTreeSet::new(),
            aligns: HashMap::new(),
            enums_done: BTreeSet::new(),
            depth: 0,
        }
    }

    /// A type the patch names: defined in full.
    fn want_named(&mut self, name: &str, id: TypeId) {
        match self.kernel.ty(id) {
            Ty::Fwd { .. } => {
                self.opaque.insert(name.to_owned());
            }
            _ => {
                self.rust_ty(id, Need::Full);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(id) = self.queue.pop_front() {
            self.composite_def(id);
        }
    }

    /// The Rust spelling of a kernel type, queueing the definitions it needs.
    fn rust_ty(&mut self, id: TypeId, need: Need) -> TokenStream {
        if self.depth >= MAX_TYPE_DEPTH {
            return quote!(c_void);
        }
        self.depth += 1;
        let spelled = self.rust_ty_at(id, need);
        self.depth -= 1;
        spelled
    }

    fn rust_ty_at(&mut self, id: TypeId, need: Need) -> TokenStream {
        let kernel = self.kernel;
        match kernel.ty(id) {
            Ty::Void | Ty::Proto(_) => quote!(c_void),
            Ty::Int { name, size, signed, boolean } => int_ty(name, *size, *signed, *boolean),
            Ty::Float { size } => {
                if *size == 4 {
                    quote!(f32)
                } else {
                    quote!(f64)
                }
            }
            Ty::Ptr(to) => self.pointer(*to),
            Ty::Array { elem, len } => {
                let elem = self.rust_ty(*elem, Need::Full);
                let len = Literal::usize_unsuffixed(*len as usize);
                quote!([#elem; #len])
            }
            Ty::Struct(c) | Ty::Union(c) => match &c.name {
                Some(name) if need == Need::Pointee && !self.defined_names.contains(name) => {
                    self.opaque.insert(name.clone());
                    let ident = type_ident(name);
                    quote!(#ident)
                }
                _ => {
                    let name = self.composite_name(id);
                    let ident = type_ident(&name);
                    quote!(#ident)
                }
            },
            Ty::Enum(e) => match &e.name {
                Some(name) => {
                    self.enum_def(id);
                    let ident = type_ident(name);
                    quote!(#ident)
                }
                None => {
                    self.enum_def(id);
                    int_ty("", e.size, e.signed, false)
                }
            },
            Ty::Fwd { name, .. } => {
                if !self.defined_names.contains(name) {
                    self.opaque.insert(name.clone());
                }
                let ident = type_ident(name);
                quote!(#ident)
            }
            Ty::Typedef { name, ty } => {
                if is_known_type(name) {
                    let ident = format_ident!("{}", name);
                    return quote!(#ident);
                }
                let target = kernel.unqualified(*ty);
                // `typedef struct { ... } name;`: the struct takes the typedef's name.
                if let Ty::Struct(c) | Ty::Union(c) = kernel.ty(target)
                    && c.name.is_none()
                {
                    if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(target) {
                        e.insert(name.clone());
                        self.defined_names.insert(name.clone());
                        self.queue.push_back(target);
                    }
                    let ident = type_ident(self.names.get(&target).map(String::as_str).unwrap_or(name));
                    return quote!(#ident);
                }
                if !self.defs.contains_key(name) {
                    // Placeholder first: a typedef may reach itself through a pointer.
                    self.defs.insert(name.clone(), TokenStream::new());
                    let inner = self.rust_ty(*ty, need);
                    let ident = type_ident(name);
                    let doc = format!(" `typedef {};` of the target kernel.", kernel.c_decl(*ty, name));
                    self.defs.insert(name.clone(), quote!(#[doc = #doc] pub type #ident = #inner;));
                } else if need == Need::Full {
                    self.rust_ty(*ty, Need::Full);
                }
                let ident = type_ident(name);
                quote!(#ident)
            }
            Ty::Const(ty) | Ty::Qualified(ty) => self.rust_ty(*ty, need),
        }
    }

    fn pointer(&mut self, to: TypeId) -> TokenStream {
        let kernel = self.kernel;
        let constant = matches!(kernel.ty(to), Ty::Const(_));
        let target = kernel.unqualified(to);
        if let Ty::Proto(p) = kernel.ty(target) {
            let p = p.clone();
            let params: Vec<TokenStream> = p.params.iter().map(|q| self.rust_ty(q.ty, Need::Pointee)).collect();
            let dots = p.variadic.then(|| quote!(, ...));
            let ret = self.ret_ty(p.ret);
            return quote!(Option<unsafe extern "C" fn(#(#params),* #dots) #ret>);
        }
        let inner = self.rust_ty(target, Need::Pointee);
        if constant { quote!(*const #inner) } else { quote!(*mut #inner) }
    }

    fn ret_ty(&mut self, ret: TypeId) -> TokenStream {
        if matches!(self.kernel.ty(self.kernel.resolve(ret)), Ty::Void) {
            TokenStream::new()
        } else {
            let t = self.rust_ty(ret, Need::Full);
            quote!(-> #t)
        }
    }

    /// The Rust name of a struct or union, queueing its definition.
    fn composite_name(&mut self, id: TypeId) -> String {
        if let Some(name) = self.names.get(&id) {
            return name.clone();
        }
        let name = match self.kernel.ty(id) {
            Ty::Struct(c) | Ty::Union(c) => c.name.clone().unwrap_or_else(|| format!("__kgraft_anon{id}")),
            _ => format!("__kgraft_anon{id}"),
        };
        if self.defined_names.insert(name.clone()) {
            self.queue.push_back(id);
        }
        self.names.insert(id, name.clone());
        name
    }

    /// The alignment a type has in the generated Rust.
    fn align(&mut self, id: TypeId) -> u64 {
        let kernel = self.kernel;
        match kernel.ty(kernel.resolve(id)) {
            Ty::Int { size, .. } | Ty::Float { size } => u64::from(*size).clamp(1, 16),
            Ty::Enum(e) => u64::from(e.size).max(1),
            Ty::Ptr(_) => 8,
            Ty::Array { elem, .. } if self.depth < MAX_TYPE_DEPTH => {
                self.depth += 1;
                let a = self.align(*elem);
                self.depth -= 1;
                a
            }
            Ty::Struct(_) | Ty::Union(_) => {
                let id = kernel.resolve(id);
                if let Some(a) = self.aligns.get(&id) {
                    return *a;
                }
                // Cut cycles (impossible by value, but cheap to guard).
                self.aligns.insert(id, 1);
                let a = self.layout(id).align;
                self.aligns.insert(id, a);
                a
            }
            _ => 1,
        }
    }

    /// Decides how a struct or union is laid out in Rust.
    fn layout(&mut self, id: TypeId) -> Layout {
        let kernel = self.kernel;
        let (c, union) = match kernel.ty(id) {
            Ty::Struct(c) => (c, false),
            Ty::Union(c) => (c, true),
            _ => return Layout { align: 1, packed: false },
        };
        let mut align = 1;
        let mut packed = false;
        for m in &c.members {
            if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
                continue;
            }
            let a = self.align(m.ty);
            if !union && (u64::from(m.bit_offset / 8)) % a != 0 {
                packed = true;
            }
            align = align.max(a);
        }
        if u64::from(c.size) % align != 0 {
            packed = true;
        }
        if packed { Layout { align: 1, packed } } else { Layout { align, packed } }
    }

    fn composite_def(&mut self, id: TypeId) {
        let kernel = self.kernel;
        let name = self.names.get(&id).cloned().unwrap_or_else(|| format!("__kgraft_anon{id}"));
        let (c, union) = match kernel.ty(id) {
            Ty::Struct(c) => (c.clone(), false),
            Ty::Union(c) => (c.clone(), true),
            _ => return,
        };
        let layout = self.layout(id);
        let ident = type_ident(&name);
        let mut fields: Vec<TokenStream> = Vec::new();
        let mut asserts: Vec<TokenStream> = Vec::new();
        let mut accessors: Vec<TokenStream> = Vec::new();
        let mut cur: u64 = 0;
        let mut pads = 0usize;
        let mut anon = 0usize;
        let mut members = c.members.iter().peekable();
        let mut bitfields = 0usize;
        while let Some(m) = members.next() {
            let is_bits = m.bitfield_size != 0 || m.bit_offset % 8 != 0;
            if is_bits {
                // One storage field for a run of bitfields sharing bytes.
                let start = u64::from(m.bit_offset / 8);
                let mut group = vec![m];
                let mut end = (u64::from(m.bit_offset) + u64::from(m.bitfield_size.max(1))).div_ceil(8);
                while let Some(next) = members.next_if(|next| {
                    let next_bits = next.bitfield_size != 0 || next.bit_offset % 8 != 0;
                    !union && next_bits && (u64::from(next.bit_offset / 8) < end || next.bit_offset % 8 != 0)
                }) {
                    end = end.max((u64::from(next.bit_offset) + u64::from(next.bitfield_size.max(1))).div_ceil(8));
                    group.push(next);
                }
                if !union && start > cur {
                    fields.push(pad(&mut pads, start - cur));
                }
                let start = if union { 0 } else { start };
                let storage = format_ident!("_bitfield{}", bitfields);
                bitfields += 1;
                let bytes = Literal::usize_unsuffixed((end - start) as usize);
                fields.push(quote!(pub #storage: [u8; #bytes]));
                for b in group {
                    let Some(field) = &b.name else { continue };
                    let at = Literal::u32_unsuffixed(b.bit_offset - (start as u32) * 8);
                    let width = Literal::u32_unsuffixed(b.bitfield_size);
                    let ty = self.rust_ty(b.ty, Need::Full);
                    let resolved = kernel.ty(kernel.resolve(b.ty));
                    let getter = member_ident(field);
                    let setter = format_ident!("set_{}", getter.to_string().trim_start_matches("r#"));
                    let doc = format!(" The bitfield `{}` ({} bits).", kernel.c_decl(b.ty, field), b.bitfield_size);
                    let (get, set) = match resolved {
                        Ty::Int { boolean: true, .. } => (
                            quote!(kgraft_rt::bits::get(&self.#storage, #at, #width) != 0),
                            quote!(kgraft_rt::bits::set(&mut self.#storage, #at, #width, value as u64)),
                        ),
                        Ty::Int { signed: true, .. } | Ty::Enum(crate::kernel::EnumTy { signed: true, .. }) => (
                            quote!(kgraft_rt::bits::get_signed(&self.#storage, #at, #width) as #ty),
                            quote!(kgraft_rt::bits::set(&mut self.#storage, #at, #width, value as i64 as u64)),
                        ),
                        _ => (
                            quote!(kgraft_rt::bits::get(&self.#storage, #at, #width) as #ty),
                            quote!(kgraft_rt::bits::set(&mut self.#storage, #at, #width, value as u64)),
                        ),
                    };
                    accessors.push(quote! {
                        #[doc = #doc]
                        pub fn #getter(&self) -> #ty { #get }
                        #[doc = #doc]
                        pub fn #setter(&mut self, value: #ty) { #set }
                    });
                }
                if !union {
                    cur = end;
                }
                continue;
            }
            let off = u64::from(m.bit_offset / 8);
            if !union && off < cur {
                // Overlapping members cannot be expressed; the size assertion still holds.
                continue;
            }
            if !union && off > cur {
                fields.push(pad(&mut pads, off - cur));
            }
            let field = match &m.name {
                Some(n) => member_ident(n),
                None => {
                    anon += 1;
                    format_ident!("__anon{}", anon)
                }
            };
            let ty = self.rust_ty(m.ty, Need::Full);
            let size = kernel.size_of(m.ty).unwrap_or(0);
            fields.push(quote!(pub #field: #ty));
            if !union {
                let off_lit = Literal::u64_unsuffixed(off);
                asserts.push(quote!(#field = #off_lit));
                cur = off + size;
            } else {
                cur = cur.max(size);
            }
        }
        let size = u64::from(c.size);
        if !union && size > cur {
            fields.push(pad(&mut pads, size - cur));
        }
        if union && size > cur {
            let bytes = Literal::u64_unsuffixed(size);
            fields.push(quote!(pub _size: [u8; #bytes]));
        }
        let repr = if layout.packed { quote!(#[repr(C, packed)]) } else { quote!(#[repr(C)]) };
        let kind = if union { quote!(union) } else { quote!(struct) };
        let c_name = kernel.c_name(id);
        let doc = format!(" `{c_name}` of the target kernel ({size} bytes), from its BTF.");
        let size_lit = Literal::u64_unsuffixed(size);
        let methods = (!accessors.is_empty()).then(|| quote!(impl #ident { #(#accessors)* }));
        let separator = if asserts.is_empty() { None } else { Some(quote!(;)) };
        let separator = std::iter::once(separator).chain(std::iter::repeat(None));
        self.defs.insert(
            name,
            quote! {
                #[doc = #doc]
                #repr
                #[derive(Clone, Copy)]
                pub #kind #ident { #(#fields),* }
                #methods
                kgraft_rt::assert_layout!(#ident, #size_lit #(#separator #asserts),*);
            },
        );
    }

    /// An enum: an integer alias named as the enum, and a constant per enumerator.
    fn enum_def(&mut self, id: TypeId) {
        if !self.enums_done.insert(id) {
            return;
        }
        let Ty::Enum(e) = self.kernel.ty(id) else { return };
        let int = int_ty("", e.size, e.signed, false);
        let ty = match &e.name {
            Some(name) => {
                let ident = type_ident(name);
                let doc = format!(" `enum {name}` of the target kernel.");
                self.defs.insert(name.clone(), quote!(#[doc = #doc] pub type #ident = #int;));
                quote!(#ident)
            }
            None => int,
        };
        for (name, value) in &e.values {
            if !self.values.insert(name.clone()) || syn::parse_str::<Ident>(name).is_err() {
                continue;
            }
            let ident = format_ident!("{}", name);
            let lit = if e.signed { Literal::i64_unsuffixed(*value) } else { Literal::u64_unsuffixed(*value as u64) };
            self.consts.insert(name.clone(), quote!(pub const #ident: #ty = #lit;));
        }
    }

    /// The declaration of a kernel function from its prototype.
    fn extern_fn(&mut self, name: &str, proto: TypeId) -> Option<TokenStream> {
        let p = self.kernel.proto(proto)?.clone();
        let ident = syn::parse_str::<Ident>(name).ok()?;
        let params: Vec<TokenStream> = p
            .params
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let n = q.name.as_deref().filter(|n| syn::parse_str::<Ident>(n).is_ok()).map(member_ident);
                let n = n.unwrap_or_else(|| format_ident!("arg{}", i));
                let t = self.rust_ty(q.ty, Need::Pointee);
                quote!(#n: #t)
            })
            .collect();
        let dots = p.variadic.then(|| quote!(, ...));
        let ret = self.ret_ty(p.ret);
        let doc = format!(" `{};`", self.kernel.c_prototype(name, proto));
        Some(quote!(#[doc = #doc] pub fn #ident(#(#params),* #dots) #ret;))
    }
}

struct Layout {
    align: u64,
    packed: bool,
}

fn pad(n: &mut usize, bytes: u64) -> TokenStream {
    let ident = format_ident!("_pad{}", *n);
    *n += 1;
    let bytes = Literal::u64_unsuffixed(bytes);
    quote!(#ident: [u8; #bytes])
}

fn int_ty(name: &str, size: u32, signed: bool, boolean: bool) -> TokenStream {
    match (size, signed, boolean) {
        (1, _, true) => quote!(bool),
        (1, _, _) if name == "char" => quote!(c_char),
        (1, true, _) => quote!(i8),
        (1, false, _) => quote!(u8),
        (2, true, _) => quote!(i16),
        (2, false, _) => quote!(u16),
        (4, true, _) => quote!(i32),
        (4, false, _) => quote!(u32),
        (8, true, _) => quote!(i64),
        (8, false, _) => quote!(u64),
        (16, true, _) => quote!(i128),
        (16, false, _) => quote!(u128),
        (n, _, _) => {
            let n = Literal::u32_unsuffixed(n);
            quote!([u8; #n])
        }
    }
}

/// A kernel name as a Rust type name (`r#type` for a keyword).
pub(crate) fn type_ident(name: &str) -> Ident {
    member_ident(name)
}

/// A kernel name as a Rust identifier: raw for keywords, with `_` added where raw is not allowed.
/// A name that is no identifier at all (BTF may hold any text: `a.b`, `1st`, `é`, nothing)
/// becomes `__kgraft_name_` and its bytes in hex: an identifier no C name spells, one per name.
fn member_ident(name: &str) -> Ident {
    match name {
        "self" | "Self" | "super" | "crate" | "_" => format_ident!("{}_", name),
        _ if check::is_keyword(name) => Ident::new_raw(name, proc_macro2::Span::call_site()),
        _ if is_plain_ident(name) => format_ident!("{}", name),
        _ => {
            let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
            format_ident!("__kgraft_name_{}", hex)
        }
    }
}

/// Whether `name` is an ASCII identifier (a letter or `_`, then letters, digits and `_`).
fn is_plain_ident(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
