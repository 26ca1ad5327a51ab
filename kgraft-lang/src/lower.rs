//! Lowering: a checked source to the Rust crate described in ARCHITECTURE.md.
//!
//! The crate is produced twice from the same items. `expanded` is formatted by prettyplease
//! throughout, bodies included, for review. `build_source` is the same text except that every
//! Rust fragment of the source (bodies, parameters, types, initial values) is copied verbatim
//! from the `.kgp` file, so rustc's line and column inside one map back to the source exactly;
//! the [`LineMap`] records where each piece came from.

use std::collections::BTreeSet;

use proc_macro2::{Ident, TokenStream};
use quote::{ToTokens, format_ident, quote};
use syn::visit::Visit;

use crate::Checked;
use crate::ast::*;
use crate::bindings;
use crate::cbody::CUnit;
use crate::check::{self, Target};
use crate::diagnostic::{Diagnostic, Diagnostics, Span, line_starts, offset_of};
use crate::kernel::Kernel;

#[path = "lower_items.rs"]
mod items;

/// A lowered patch: the generated crate's source in two forms, and the way back to the `.kgp`.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// The patch name (the module name).
    pub name: String,
    /// The crate's `lib.rs` formatted for review (`kgraftc expand`).
    pub expanded: String,
    /// The crate's `lib.rs` to build: bodies verbatim from the source, see [`Lowered::map_position`].
    pub build_source: String,
    /// Where each piece of `build_source` came from.
    pub line_map: LineMap,
    /// The patch's C files, one per unit, when it has C bodies or `c { }` items: compiled next
    /// to the crate, each apart (by kbuild for Linux, by `cc` for the host).
    pub c_units: Vec<CUnit>,
    /// The symbols the patch declares in `module` blocks, with their module: the Linux build
    /// resolves those it must through livepatch relocations against that module, not vmlinux.
    pub module_symbols: Vec<(String, String)>,
}

/// The symbols declared in `module` blocks' `extern` blocks, with the module (as the kernel
/// spells it) they belong to.
fn module_symbols(file: &File) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in &file.items {
        if let Item::Module(m) = item {
            for ext in m.externs.iter().flat_map(|b| &b.items) {
                out.push((ext.name().name.clone(), kernel_object_name(&m.name)));
            }
        }
    }
    out
}

/// Maps byte ranges of `build_source` to spans of the `.kgp` source.
#[derive(Clone, Debug, Default)]
pub struct LineMap {
    pieces: Vec<Piece>,
    line_starts: Vec<usize>,
}

/// One piece of `build_source`.
#[derive(Clone, Debug)]
struct Piece {
    /// Its byte range in `build_source`.
    start: usize,
    end: usize,
    /// Where it came from.
    origin: Origin,
}

#[derive(Clone, Copy, Debug)]
enum Origin {
    /// Copied byte for byte from the source, starting at this offset.
    Verbatim(usize),
    /// Generated for the item written at this span.
    Generated(Span),
}

impl Lowered {
    /// Maps a 1-based line and 1-based column (in characters, as rustc reports them) of
    /// `build_source` to a span of the `.kgp` source.
    ///
    /// A position inside a body maps to the same character of the source; a position in
    /// generated code maps to the item that produced it (its signature, or the header).
    /// Returns `None` past the end of `build_source`.
    pub fn map_position(&self, line: usize, column: usize) -> Option<Span> {
        let offset = offset_of(&self.build_source, &self.line_map.line_starts, line, column);
        self.map_offset(offset)
    }

    /// Maps a byte offset of `build_source` to a span of the `.kgp` source; see
    /// [`Lowered::map_position`].
    pub fn map_offset(&self, offset: usize) -> Option<Span> {
        if offset > self.build_source.len() {
            return None;
        }
        // A position inside a character (rustc's range ends, less one) is that character's.
        let offset = (0..=offset).rev().find(|&o| self.build_source.is_char_boundary(o)).unwrap_or(0);
        let piece = self
            .line_map
            .pieces
            .iter()
            .find(|p| p.start <= offset && offset < p.end)
            .or_else(|| self.line_map.pieces.last())?;
        Some(match piece.origin {
            Origin::Verbatim(at) => {
                let o = at + (offset - piece.start);
                let len = self.build_source[offset..].chars().next().map(char::len_utf8).unwrap_or(0);
                Span::new(o, o + len)
            }
            Origin::Generated(span) => span,
        })
    }

    /// Maps a byte range of `build_source` to a span of the `.kgp` source.
    pub fn map_range(&self, start: usize, end: usize) -> Option<Span> {
        let first = self.map_offset(start)?;
        let last = self.map_offset(end.saturating_sub(1).max(start)).unwrap_or(first);
        let same_piece = self
            .line_map
            .pieces
            .iter()
            .any(|p| matches!(p.origin, Origin::Verbatim(_)) && p.start <= start && end <= p.end);
        Some(if same_piece { Span::new(first.start, last.end.max(first.end)) } else { first })
    }
}

/// The names in scope without a declaration: Rust's and `kgraft_rt::prelude`'s.
/// Whether a type name is in scope without a declaration: Rust's own, or the prelude's.
pub(crate) fn is_known_type(name: &str) -> bool {
    kgraft_rt::rules::RUST_TYPES.contains(&name) || kgraft_rt::rules::PRELUDE_TYPES.contains(&name)
}

/// Returns the name the kernel knows a module by: kbuild turns `-` into `_`, so `module
/// "kgraft-testmod"` (modprobe's spelling) targets the loaded module `kgraft_testmod`.
fn kernel_object_name(object: &str) -> String {
    object.replace('-', "_")
}

/// Lowers a checked source.
pub(crate) fn lower(checked: &Checked, kernel: Option<&Kernel>) -> Result<Lowered, Diagnostics> {
    let cx = Lowering {
        checked,
        kernel,
        items: Vec::new(),
        bodies: Vec::new(),
        safety: Vec::new(),
        frags: Vec::new(),
        opaque: BTreeSet::new(),
    };
    cx.finish()
}

/// One top-level item of the crate, in both forms.
struct ItemOut {
    /// Text written by hand instead of formatted tokens (macro invocations, which prettyplease
    /// prints as raw token streams).
    text: Option<String>,
    /// With bodies as tokens.
    full: TokenStream,
    /// With body placeholders.
    sketch: TokenStream,
    /// The span of the source that produced it.
    origin: Span,
}

struct Lowering<'a> {
    checked: &'a Checked,
    /// The target kernel, whose types the crate then defines instead of leaving them opaque.
    kernel: Option<&'a Kernel>,
    items: Vec<ItemOut>,
    /// The body fragments, by placeholder number.
    bodies: Vec<Fragment>,
    /// The SAFETY comments, by marker number.
    safety: Vec<String>,
    /// Signature and initializer fragments copied verbatim into the build source, by
    /// placeholder number (`__kgraft_frag_N`).
    frags: Vec<Fragment>,
    opaque: BTreeSet<String>,
}

/// Parses text that the checks accepted; a failure here is a compiler bug, reported as such.
fn parse<T: syn::parse::Parse>(frag: &Fragment) -> Result<T, Box<Diagnostic>> {
    check::parse_fragment::<T>(frag).map_err(|(span, message)| internal(span, &message))
}

fn internal(span: Span, message: &str) -> Box<Diagnostic> {
    Box::new(
        Diagnostic::error("E0000", "internal compiler error while lowering")
            .primary(span, message.to_owned())
            .note("the checks accepted this source but the generated crate did not parse; please report it"),
    )
}

fn doc_attrs(docs: &[Doc]) -> TokenStream {
    let lines = docs.iter().map(|d| &d.text);
    quote!(#(#[doc = #lines])*)
}

struct TypeNames<'a>(&'a mut BTreeSet<String>);

impl<'ast> Visit<'ast> for TypeNames<'_> {
    fn visit_type_path(&mut self, tp: &'ast syn::TypePath) {
        if let Some(name) = bindings::kernel_type_name(tp) {
            self.0.insert(name.to_string());
        }
        syn::visit::visit_type_path(self, tp);
    }
}

impl Lowering<'_> {
    fn note_types<T>(&mut self, node: &T, visit: fn(&mut TypeNames<'_>, &T)) {
        visit(&mut TypeNames(&mut self.opaque), node);
    }

    fn ty(&mut self, frag: &Fragment) -> Result<syn::Type, Box<Diagnostic>> {
        let ty: syn::Type = parse(frag)?;
        self.note_types(&ty, |v, t| v.visit_type(t));
        Ok(ty)
    }

    fn body(&mut self, frag: &Fragment) -> Result<(syn::Block, proc_macro2::Literal), Box<Diagnostic>> {
        let block: syn::Block = parse(frag)?;
        self.note_types(&block, |v, b| v.visit_block(b));
        self.bodies.push(frag.clone());
        Ok((block, proc_macro2::Literal::usize_unsuffixed(self.bodies.len() - 1)))
    }

    fn safety_marker(&mut self, text: String) -> TokenStream {
        self.safety.push(text);
        let n = proc_macro2::Literal::usize_unsuffixed(self.safety.len() - 1);
        quote!(__kgraft_safety!(#n);)
    }

    fn push(&mut self, full: TokenStream, sketch: TokenStream, origin: Span) {
        self.items.push(ItemOut { text: None, full, sketch, origin });
    }

    fn params(&mut self, sig: &Signature, foreign: bool) -> Result<Vec<TokenStream>, Box<Diagnostic>> {
        let mut out = Vec::new();
        for p in &sig.params {
            match p {
                Param::Named { mutable, name, ty } => {
                    let ty = self.ty(ty)?;
                    // `_` is a pattern, not an identifier.
                    let name = if name.name == "_" { quote!(_) } else { ident(name)?.into_token_stream() };
                    let m = (*mutable && !foreign && name.to_string() != "_").then(|| quote!(mut));
                    out.push(quote!(#m #name: #ty));
                }
                Param::Variadic(_) => out.push(quote!(...)),
            }
        }
        Ok(out)
    }

    fn ret(&mut self, sig: &Signature) -> Result<TokenStream, Box<Diagnostic>> {
        Ok(match &sig.ret {
            Some(r) => {
                let ty = self.ty(r)?;
                quote!(-> #ty)
            }
            None => TokenStream::new(),
        })
    }

    /// Returns the function item of one replacement, in both forms, and its Rust name.
    fn replacement(&mut self, t: &Target<'_>) -> Result<(TokenStream, TokenStream, Ident), Box<Diagnostic>> {
        if t.func.in_c.is_some() {
            return self.c_replacement(t);
        }
        let r = t.func;
        let mut ignored = Diagnostics::default();
        let sympos_value = check::sympos(r, &mut ignored);
        let sympos = proc_macro2::Literal::u32_unsuffixed(sympos_value);
        let target = &r.sig.name.name;
        let fn_ident =
            if sympos_value == 0 { ident(&r.sig.name)? } else { format_ident!("{}__sympos{}", target, sympos_value) };
        let params = self.params(&r.sig, false)?;
        let ret = self.ret(&r.sig)?;
        let docs = doc_attrs(&r.sig.docs);
        let safety_doc: Vec<String> = wrap(
            &format!(
                "Called by the kernel in place of `{target}` (object `{}`), with that function's arguments and in its context.",
                kernel_object_name(t.object)
            ),
            92,
        )
        .into_iter()
        .map(|l| format!(" {l}"))
        .collect();
        let object = kernel_object_name(t.object);
        let marker = self.safety_marker(format!(
            "the kernel enters this function instead of `{target}`, with that function's arguments and in its context; \
             the body is the reviewed patch source and uses raw pointers and kernel symbols under the contracts the C \
             original relies on."
        ));
        let (block, n) = self.body(&r.body)?;
        let sep = (!r.sig.docs.is_empty()).then(|| quote!(#[doc = ""]));
        let head = |params: &[TokenStream], ret: &TokenStream| {
            quote! {
                #docs
                #sep
                #[doc = " # Safety"]
                #[doc = ""]
                #(#[doc = #safety_doc])*
                #[kgraft_macros::replace(name = #target, object = #object, sympos = #sympos)]
                pub unsafe extern "C" fn #fn_ident(#(#params),*) #ret
            }
        };
        let full_head = head(&params, &ret);
        let full = quote!(#full_head { #marker unsafe #block });
        // The build form takes each parameter and the return type verbatim from the source, so
        // that rustc's messages about them land on their own tokens.
        let sketch_head = head(&self.verbatim_params(&r.sig, false)?, &self.verbatim_ret(&r.sig));
        let sketch = quote!(#sketch_head { #marker __kgraft_body!(#n); });
        Ok((full, sketch, fn_ident))
    }

    /// Records a fragment to copy verbatim into the build source and returns its placeholder.
    fn frag(&mut self, text: &str, at: usize) -> Ident {
        self.frags.push(Fragment { text: text.to_owned(), span: Span::new(at, at + text.len()) });
        format_ident!("__kgraft_frag_{}", self.frags.len() - 1)
    }

    /// The parameters of a function for the build form: `__kgraft_frag_N: __kgraft_frag`
    /// placeholders for `name: Type` as the source writes them (a `mut` binding, `_` and `...`
    /// are generated; `foreign` as for [`Self::params`]).
    fn verbatim_params(&mut self, sig: &Signature, foreign: bool) -> Result<Vec<TokenStream>, Box<Diagnostic>> {
        let source = &self.checked.source.text;
        let mut out = Vec::new();
        for p in &sig.params {
            match p {
                Param::Named { mutable: false, name, ty } if name.name != "_" => {
                    let text = source.get(name.span.start..ty.span.end).unwrap_or_default().to_owned();
                    let placeholder = self.frag(&text, name.span.start);
                    out.push(quote!(#placeholder: __kgraft_frag));
                }
                _ => out.extend(self.params(&Signature { params: vec![p.clone()], ..sig.clone() }, foreign)?),
            }
        }
        Ok(out)
    }

    /// The return type of a function for the build form, as a placeholder.
    fn verbatim_ret(&mut self, sig: &Signature) -> TokenStream {
        match &sig.ret {
            Some(r) => {
                let placeholder = self.frag(&r.text, r.span.start);
                quote!(-> #placeholder)
            }
            None => TokenStream::new(),
        }
    }

    /// Returns the function of one callback, in both forms, and its Rust name.
    fn callback(&mut self, cb: &Callback) -> Result<(TokenStream, TokenStream, Ident), Box<Diagnostic>> {
        let kind = &cb.kind.name;
        let kind_ident = ident(&cb.kind)?;
        let fn_ident = format_ident!("__kgraft_{}", kind);
        let ret = kgraft_rt::rules::callback(kind).is_some_and(|(_, int)| int).then(|| quote!(-> c_int));
        let param = match &cb.param {
            Some(p) => ident(p)?.into_token_stream(),
            None => quote!(_),
        };
        let marker = self.safety_marker(format!(
            "the patch engine runs this `{kind}` callback once per transition of its object, in process context; \
             the body is the reviewed patch source."
        ));
        let (block, n) = self.body(&cb.body)?;
        let docs = doc_attrs(&cb.docs);
        let sep = (!cb.docs.is_empty()).then(|| quote!(#[doc = ""]));
        let safety_doc = format!(" Called only by the patch engine, as the object's `{kind}` callback.");
        let head = quote! {
            #docs
            #sep
            #[doc = " # Safety"]
            #[doc = ""]
            #[doc = #safety_doc]
            #[kgraft_macros::callback(#kind_ident)]
            pub unsafe fn #fn_ident(#param: &kgraft_rt::Object) #ret
        };
        Ok((quote!(#head { #marker unsafe #block }), quote!(#head { #marker __kgraft_body!(#n); }), fn_ident))
    }

    fn finish(mut self) -> Result<Lowered, Diagnostics> {
        let mut diags = Diagnostics::default();
        if let Err(d) = self.items_all() {
            diags.push(*d);
            return Err(diags);
        }
        match self.render() {
            Ok(l) => Ok(l),
            Err(d) => {
                diags.push(*d);
                Err(diags)
            }
        }
    }

    fn items_all(&mut self) -> Result<(), Box<Diagnostic>> {
        let file = &self.checked.file;
        let header = &self.checked.header;
        let header_span = file
            .items
            .iter()
            .find_map(|i| match i {
                Item::Header(h) => Some(Span::new(h.keyword.start, h.name.span.end)),
                _ => None,
            })
            .unwrap_or_default();

        // Every item in source order, each kind by its own function; what they add to the
        // patch's descriptor is gathered in `parts`.
        let mut parts = PatchParts::default();
        for item in &file.items {
            match item {
                Item::Header(_) | Item::C(_) | Item::StaticMut(_) => {}
                Item::Syscall(sc) => self.item_syscall(sc, &mut parts)?,
                Item::State(st) => self.item_state(st, &mut parts)?,
                Item::Param(p) => self.item_param(p)?,
                Item::Helper(h) => {
                    let (full, sketch) = self.helper(h)?;
                    self.push(full, sketch, h.sig.name.span);
                }
                Item::Global(g) => self.item_global(g)?,
                Item::Extern(block) => self.item_extern(block, header_span)?,
                Item::Shadow(block) => self.item_shadow(block, &mut parts)?,
                Item::Replace(r) => {
                    let (full, sketch, name) = self.replacement(&Target { object: "vmlinux", func: r })?;
                    parts.functions.push(name.to_string());
                    self.push(full, sketch, r.head);
                }
                Item::Module(m) => self.item_module(m, &mut parts)?,
                Item::Callback(cb) => {
                    let (full, sketch, fn_ident) = self.callback(cb)?;
                    parts.callbacks.push(format!("{}: {fn_ident}", cb.kind.name));
                    self.push(full, sketch, cb.kind.span);
                }
            }
        }
        if let Some(slot) = parts.shadow_slot
            && let Some(text) = &mut self.items[slot].text
        {
            *text = format!("kgraft_macros::shadow! {{\n{text}}}\n");
        }
        self.close_modules(std::mem::take(&mut parts.modules));
        let text = patch_macro(header, file, &parts);
        self.items.push(ItemOut {
            text: Some(text),
            full: TokenStream::new(),
            sketch: TokenStream::new(),
            origin: header_span,
        });

        // The crate's head: docs, attributes, imports, the kernel's types and opaque types.
        let docs = self.checked.file.docs.iter().map(|d| &d.text);
        let mut bindings = TokenStream::new();
        if let Some(kernel) = self.kernel {
            let b = bindings::generate(kernel, &bindings::Uses::of(&self.checked.file));
            bindings = b.items;
            self.opaque = b.opaque;
        }
        let opaque: Vec<Ident> = self.opaque.iter().map(|n| bindings::type_ident(n)).collect();
        let opaque = (!opaque.is_empty()).then(|| quote!(kgraft_rt::opaque_types!(#(#opaque),*);));
        let head = quote! {
            #(#![doc = #docs])*
            #![no_std]
            #![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
            #![allow(unused_unsafe, unused_imports)]
            use kgraft_rt::prelude::*;
            #opaque
        };
        self.items.insert(0, ItemOut { text: None, full: head.clone(), sketch: head, origin: header_span });
        if !bindings.is_empty() {
            self.items.insert(1, ItemOut { text: None, full: bindings.clone(), sketch: bindings, origin: header_span });
        }
        Ok(())
    }

    fn item_syscall(&mut self, sc: &Syscall, parts: &mut PatchParts) -> Result<(), Box<Diagnostic>> {
        let items::SyscallItems { items: fns, replacements: names } = self.syscall(sc)?;
        for (full, sketch) in fns {
            self.push(full, sketch, sc.head);
        }
        parts.functions.extend(names.iter().map(ToString::to_string));
        Ok(())
    }

    fn item_state(&mut self, st: &State, parts: &mut PatchParts) -> Result<(), Box<Diagnostic>> {
        let mut ignored = Diagnostics::default();
        let Some(info) = crate::states::resolve(st, &mut ignored) else {
            return Err(internal(st.span, "a state the checks accepted did not resolve"));
        };
        let name = ident(&st.name)?;
        let docs = doc_attrs(&st.docs);
        let id = proc_macro2::Literal::u64_unsuffixed(info.id);
        let tokens = quote!(#docs pub const #name: u64 = #id;);
        self.push(tokens.clone(), tokens, st.name.span);
        parts.states.push((info.id, info.version));
        Ok(())
    }

    fn item_param(&mut self, p: &ModParam) -> Result<(), Box<Diagnostic>> {
        let name = ident(&p.name)?;
        let ty = self.ty(&p.ty)?;
        let docs = doc_attrs(&p.docs);
        let link = format!("__kgraft_param_{}", p.name.name);
        let note = format!(" The module parameter `{}`, defined in the patch's C file.", p.name.name);
        let sep = (!p.docs.is_empty()).then(|| quote!(#[doc = ""]));
        let tokens = quote! {
            unsafe extern "C" {
                #docs
                #sep
                #[doc = #note]
                #[link_name = #link]
                pub static mut #name: #ty;
            }
        };
        self.push(tokens.clone(), tokens, p.name.span);
        Ok(())
    }

    fn item_global(&mut self, g: &Global) -> Result<(), Box<Diagnostic>> {
        let name = ident(&g.name)?;
        let ty = self.ty(&g.ty)?;
        let init: syn::Expr = parse(&g.init)?;
        let docs = doc_attrs(&g.docs);
        let tokens = quote!(#docs static #name: #ty = #init;);
        let ty_frag = self.frag(&g.ty.text, g.ty.span.start);
        let init_frag = self.frag(&g.init.text, g.init.span.start);
        let sketch = quote!(#docs static #name: #ty_frag = #init_frag;);
        self.push(tokens, sketch, g.name.span);
        Ok(())
    }

    fn item_extern(&mut self, block: &ExternBlock, header_span: Span) -> Result<(), Box<Diagnostic>> {
        let (full, sketch) = self.extern_tokens(block)?;
        let origin = block.items.first().map(|i| i.name().span).unwrap_or(header_span);
        self.push(full, sketch, origin);
        Ok(())
    }

    /// An `extern { }` block as an `unsafe extern "C"` block, in both forms (the build form with
    /// the parameters and types verbatim).
    fn extern_tokens(&mut self, block: &ExternBlock) -> Result<(TokenStream, TokenStream), Box<Diagnostic>> {
        let (mut full, mut sketch) = (Vec::new(), Vec::new());
        for ext in &block.items {
            match ext {
                ExternItem::Fn(sig) => {
                    let name = ident(&sig.name)?;
                    let params = self.params(sig, true)?;
                    let ret = self.ret(sig)?;
                    let docs = doc_attrs(&sig.docs);
                    full.push(quote!(#docs pub fn #name(#(#params),*) #ret;));
                    let (params, ret) = (self.verbatim_params(sig, true)?, self.verbatim_ret(sig));
                    sketch.push(quote!(#docs pub fn #name(#(#params),*) #ret;));
                }
                ExternItem::Static(s) => {
                    let name = ident(&s.name)?;
                    let ty = self.ty(&s.ty)?;
                    let docs = doc_attrs(&s.docs);
                    let m = s.mutable.then(|| quote!(mut));
                    full.push(quote!(#docs pub static #m #name: #ty;));
                    let ty = self.frag(&s.ty.text, s.ty.span.start);
                    sketch.push(quote!(#docs pub static #m #name: #ty;));
                }
            }
        }
        let docs = doc_attrs(&block.docs);
        Ok((quote!(#docs unsafe extern "C" { #(#full)* }), quote!(#docs unsafe extern "C" { #(#sketch)* })))
    }

    fn item_shadow(&mut self, block: &ShadowBlock, parts: &mut PatchParts) -> Result<(), Box<Diagnostic>> {
        ident(&block.ty)?;
        self.opaque.insert(block.ty.name.clone());
        // Every block goes into one `shadow!` invocation, where the first block is.
        let slot = match parts.shadow_slot {
            Some(slot) => slot,
            None => {
                self.items.push(ItemOut {
                    text: Some(String::new()),
                    full: TokenStream::new(),
                    sketch: TokenStream::new(),
                    origin: block.ty.span,
                });
                parts.shadow_slot = Some(self.items.len() - 1);
                self.items.len() - 1
            }
        };
        let mut text = String::new();
        for d in &block.docs {
            text.push_str(&format!("    ///{}\n", d.text));
        }
        let options: Vec<String> = block
            .options
            .iter()
            .map(|o| match &o.value {
                Some(v) => format!("{} = {}", o.key.name, v.name),
                None => o.key.name.clone(),
            })
            .collect();
        let options = if options.is_empty() { String::new() } else { format!(" ({})", options.join(", ")) };
        text.push_str(&format!("    {}{options} {{\n", block.ty.name));
        for f in &block.fields {
            // Parsed for the type names only; the type and the initial value are the source's,
            // copied verbatim into the build form.
            self.ty(&f.ty)?;
            let _: syn::Expr = parse(&f.init)?;
            for d in &f.docs {
                text.push_str(&format!("        ///{}\n", d.text));
            }
            let (ty, init) = (self.frag(&f.ty.text, f.ty.span.start), self.frag(&f.init.text, f.init.span.start));
            text.push_str(&format!("        {}: {ty} = {init},\n", f.name.name));
        }
        text.push_str("    }\n");
        let name = match block.fields.first() {
            Some(f) => format!("{}_{}", block.ty.name, f.name.name),
            None => block.ty.name.clone(),
        };
        parts.shadows.push(format_ident!("{}", name));
        if let Some(t) = &mut self.items[slot].text {
            t.push_str(&text);
        }
        Ok(())
    }

    fn item_module(&mut self, m: &ModuleBlock, parts: &mut PatchParts) -> Result<(), Box<Diagnostic>> {
        let mut fns = Vec::new();
        let mod_ident = format_ident!("__kgraft_obj_{}", m.name.replace('-', "_"));
        for block in &m.externs {
            fns.push(self.extern_tokens(block)?);
        }
        for r in &m.fns {
            let t = Target { object: &m.name, func: r };
            let (full, sketch, name) = self.replacement(&t)?;
            parts.functions.push(format!("{mod_ident}::{name}"));
            fns.push((full, sketch));
        }
        let listed = match parts.objects.iter_mut().find(|(name, _)| *name == m.name) {
            Some((_, list)) => list,
            None => {
                parts.objects.push((m.name.clone(), Vec::new()));
                &mut parts.objects.last_mut().expect("pushed just above").1
            }
        };
        for cb in &m.callbacks {
            let (full, sketch, fn_ident) = self.callback(cb)?;
            listed.push(format!("{}: {mod_ident}::{fn_ident}", cb.kind.name));
            fns.push((full, sketch));
        }
        // Blocks for the same module share one Rust module.
        let key = m.name.replace('-', "_");
        match parts.modules.iter_mut().find(|out| out.key == key) {
            Some(out) => out.fns.extend(fns),
            None => {
                parts.modules.push(ModuleOut {
                    key,
                    fns,
                    span: m.name_span,
                    docs: m.docs.clone(),
                    index: self.items.len(),
                });
                self.push(TokenStream::new(), TokenStream::new(), m.name_span);
            }
        }
        Ok(())
    }

    /// Puts one Rust module per kernel module where its first block is.
    fn close_modules(&mut self, modules: Vec<ModuleOut>) {
        for ModuleOut { key, fns, span, docs, index } in modules {
            let mod_ident = format_ident!("__kgraft_obj_{}", key);
            let docs = doc_attrs(&docs);
            let (full, sketch): (Vec<_>, Vec<_>) = fns.into_iter().unzip();
            let wrap = |inner: Vec<TokenStream>| {
                quote! {
                    #docs
                    pub mod #mod_ident {
                        use super::*;
                        #(#inner)*
                    }
                }
            };
            self.items[index] = ItemOut { text: None, full: wrap(full), sketch: wrap(sketch), origin: span };
        }
    }

    fn render(&self) -> Result<Lowered, Box<Diagnostic>> {
        let mut expanded = String::new();
        let mut build = String::new();
        let mut pieces: Vec<Piece> = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                expanded.push('\n');
                build.push('\n');
            }
            if let Some(text) = &item.text {
                expanded.push_str(&self.unfrag(text));
                let mut generated_start = build.len();
                for line in text.split_inclusive('\n') {
                    self.push_line(line, &mut build, &mut pieces, &mut generated_start, item.origin);
                }
                if build.len() > generated_start {
                    pieces.push(Piece {
                        start: generated_start,
                        end: build.len(),
                        origin: Origin::Generated(item.origin),
                    });
                }
                continue;
            }
            let full = format(&item.full).map_err(|m| internal(item.origin, &m))?;
            expanded.push_str(&self.fill_safety(&full));
            let sketch = format(&item.sketch).map_err(|m| internal(item.origin, &m))?;
            let sketch = self.fill_safety(&sketch);
            let mut generated_start = build.len();
            for line in sketch.split_inclusive('\n') {
                let trimmed = line.trim();
                let body = trimmed
                    .strip_prefix("__kgraft_body!(")
                    .and_then(|r| r.strip_suffix(");"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| self.bodies.get(n));
                match body {
                    Some(frag) => {
                        let indent = &line[..line.len() - line.trim_start().len()];
                        build.push_str(indent);
                        build.push_str("unsafe ");
                        if build.len() > generated_start {
                            pieces.push(Piece {
                                start: generated_start,
                                end: build.len(),
                                origin: Origin::Generated(item.origin),
                            });
                        }
                        let start = build.len();
                        build.push_str(&frag.text);
                        pieces.push(Piece { start, end: build.len(), origin: Origin::Verbatim(frag.span.start) });
                        build.push('\n');
                        generated_start = build.len() - 1;
                    }
                    None => self.push_line(line, &mut build, &mut pieces, &mut generated_start, item.origin),
                }
            }
            if build.len() > generated_start {
                pieces.push(Piece { start: generated_start, end: build.len(), origin: Origin::Generated(item.origin) });
            }
        }
        let line_starts = line_starts(&build);
        Ok(Lowered {
            name: self.checked.header.name.clone(),
            expanded,
            build_source: build,
            line_map: LineMap { pieces, line_starts },
            c_units: crate::cbody::c_units(&self.checked.source, &self.checked.file),
            module_symbols: module_symbols(&self.checked.file),
        })
    }

    /// Appends a generated line to the build source, putting back the verbatim fragments its
    /// placeholders stand for (`__kgraft_frag_N: __kgraft_frag` for a parameter,
    /// `__kgraft_frag_N` for a type or an initializer) and recording where each came from.
    fn push_line(
        &self,
        line: &str,
        build: &mut String,
        pieces: &mut Vec<Piece>,
        generated_start: &mut usize,
        origin: Span,
    ) {
        const MARK: &str = "__kgraft_frag_";
        let mut rest = line;
        while let Some(at) = rest.find(MARK) {
            let digits = rest[at + MARK.len()..].bytes().take_while(u8::is_ascii_digit).count();
            let frag =
                rest[at + MARK.len()..at + MARK.len() + digits].parse::<usize>().ok().and_then(|n| self.frags.get(n));
            let Some(frag) = frag else {
                build.push_str(&rest[..at + MARK.len()]);
                rest = &rest[at + MARK.len()..];
                continue;
            };
            build.push_str(&rest[..at]);
            if build.len() > *generated_start {
                pieces.push(Piece { start: *generated_start, end: build.len(), origin: Origin::Generated(origin) });
            }
            let start = build.len();
            build.push_str(&frag.text);
            pieces.push(Piece { start, end: build.len(), origin: Origin::Verbatim(frag.span.start) });
            *generated_start = build.len();
            rest = &rest[at + MARK.len() + digits..];
            rest = rest.strip_prefix(": __kgraft_frag").filter(|r| !r.starts_with('_')).unwrap_or(rest);
        }
        build.push_str(rest);
    }

    /// The text of a generated item with the fragments its placeholders stand for, for the
    /// review form.
    fn unfrag(&self, text: &str) -> String {
        let (mut build, mut pieces, mut start) = (String::new(), Vec::new(), 0);
        self.push_line(text, &mut build, &mut pieces, &mut start, Span::default());
        build
    }

    /// Replaces each `__kgraft_safety!(N);` line with its `// SAFETY:` comment.
    fn fill_safety(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim();
            let note = trimmed
                .strip_prefix("__kgraft_safety!(")
                .and_then(|r| r.strip_suffix(");"))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| self.safety.get(n));
            match note {
                Some(note) => {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    for (i, l) in wrap(note, 96usize.saturating_sub(indent.len())).iter().enumerate() {
                        out.push_str(indent);
                        out.push_str(if i == 0 { "// SAFETY: " } else { "// " });
                        out.push_str(l);
                        out.push('\n');
                    }
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// What the items add to the patch's descriptor, gathered in source order.
#[derive(Default)]
struct PatchParts {
    /// The replacements' Rust paths.
    functions: Vec<String>,
    /// The shadow blocks' names.
    shadows: Vec<Ident>,
    /// vmlinux's callbacks, as `kind: path`.
    callbacks: Vec<String>,
    /// The system states, as `(id, version)`.
    states: Vec<(u64, u32)>,
    /// One Rust module per kernel module.
    modules: Vec<ModuleOut>,
    /// The slot of the one `shadow!` invocation, once a block is seen.
    shadow_slot: Option<usize>,
    /// Per module a block names: its callbacks, as `kind: path`.
    objects: Vec<(String, Vec<String>)>,
}

/// A kernel module's Rust module: its key (the name with `_`), its functions in both forms,
/// where its first block is written and its docs, and the item slot it takes.
struct ModuleOut {
    key: String,
    fns: Vec<(TokenStream, TokenStream)>,
    span: Span,
    docs: Vec<Doc>,
    index: usize,
}

/// The `patch!` invocation that builds the descriptor.
fn patch_macro(header: &check::HeaderInfo, file: &File, parts: &PatchParts) -> String {
    let mut text = String::from("kgraft_macros::patch! {\n");
    text.push_str(&format!("    name: {:?},\n", header.name));
    text.push_str(&format!("    description: {:?},\n", header.description));
    if let Some(k) = &header.kernel {
        text.push_str(&format!("    kernel: {k:?},\n"));
    }
    match &header.replace_param {
        Some(param) => text.push_str(&format!("    replace_all: {},\n", param.name)),
        None => text.push_str(&format!("    replace_all: {},\n", header.replace_all)),
    }
    text.push_str(&format!("    functions: [{}],\n", join(&parts.functions)));
    if !parts.shadows.is_empty() {
        text.push_str(&format!("    shadows: [{}],\n", join(&parts.shadows)));
    }
    if !parts.callbacks.is_empty() {
        text.push_str(&format!("    callbacks: {{ {} }},\n", join(&parts.callbacks)));
    }
    if !parts.states.is_empty() {
        let list: Vec<String> = parts.states.iter().map(|(id, version)| format!("({id}, {version})")).collect();
        text.push_str(&format!("    states: [{}],\n", join(&list)));
    }
    let listed = |(name, list): &&(String, Vec<String>)| {
        !list.is_empty()
            || !file.items.iter().any(|i| matches!(i, Item::Module(m) if m.name == *name && !m.fns.is_empty()))
    };
    if parts.objects.iter().any(|o| listed(&o)) {
        text.push_str("    objects: {\n");
        // A module with functions is registered by them; list it only for its callbacks.
        for (name, list) in &parts.objects {
            let has_functions =
                file.items.iter().any(|i| matches!(i, Item::Module(m) if m.name == *name && !m.fns.is_empty()));
            if list.is_empty() && has_functions {
                continue;
            }
            text.push_str(&format!("        {name:?}: {{ {} }},\n", join(list)));
        }
        text.push_str("    },\n");
    }
    text.push_str("}\n");
    text
}

/// Splits a sentence into lines of at most `width` characters (a longer word gets its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let extra = if lines.is_empty() { 8 } else { 0 };
        if !current.is_empty() && current.len() + 1 + word.len() + extra > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines.push(current);
    lines
}

fn ident(name: &crate::ast::Ident) -> Result<Ident, Box<Diagnostic>> {
    syn::parse_str::<Ident>(&name.name).map_err(|e| internal(name.span, &e.to_string()))
}

fn format(tokens: &TokenStream) -> Result<String, String> {
    let file: syn::File = syn::parse2(tokens.clone()).map_err(|e| e.to_string())?;
    Ok(prettyplease::unparse(&file))
}

fn join(list: &[impl std::fmt::Display]) -> String {
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
