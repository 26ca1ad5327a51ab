//! Lowering of the items that came with C bodies: C-bodied replacements (the Rust side) and
//! helper functions.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::{Lowering, doc_attrs};
use crate::ast::*;
use crate::cbody;
use crate::check::{self, Target};
use crate::diagnostic::{Diagnostic, Diagnostics};

impl Lowering<'_> {
    /// Returns the Rust side of a C-bodied replacement: the C function declared `extern "C"`,
    /// under the `#[replace]` that puts its address in the descriptor (the build form with the
    /// parameters and return type verbatim).
    pub(super) fn c_replacement(
        &mut self,
        t: &Target<'_>,
    ) -> Result<(TokenStream, TokenStream, Ident), Box<Diagnostic>> {
        let r = t.func;
        let mut ignored = Diagnostics::default();
        let sympos_value = check::sympos(r, &mut ignored);
        let sympos = proc_macro2::Literal::u32_unsuffixed(sympos_value);
        let target = &r.sig.name.name;
        let object = t.object;
        let symbol = format_ident!("{}", cbody::symbol(t, sympos_value));
        let params = self.params(&r.sig, true)?;
        let ret = self.ret(&r.sig)?;
        let docs = doc_attrs(&r.sig.docs);
        let note = format!(" The body is C, in the patch's C file; it replaces `{target}` (object `{object}`).");
        let sep = (!r.sig.docs.is_empty()).then(|| quote!(#[doc = ""]));
        let item = |params: &[TokenStream], ret: &TokenStream| {
            c_extern(
                quote!(#[kgraft_macros::replace(name = #target, object = #object, sympos = #sympos)]),
                quote!(#docs #sep #[doc = #note] pub fn #symbol(#(#params),*) #ret;),
            )
        };
        let full = item(&params, &ret);
        let sketch = item(&self.verbatim_params(&r.sig, true)?, &self.verbatim_ret(&r.sig));
        Ok((full, sketch, symbol))
    }

    /// Returns a helper function in both forms: an `unsafe fn` whose body runs inside `unsafe`,
    /// as replacements' bodies do.
    pub(super) fn helper(&mut self, h: &Helper) -> Result<(TokenStream, TokenStream), Box<Diagnostic>> {
        let name = super::ident(&h.sig.name)?;
        let params = self.params(&h.sig, false)?;
        let ret = self.ret(&h.sig)?;
        let docs = doc_attrs(&h.sig.docs);
        let sep = (!h.sig.docs.is_empty()).then(|| quote!(#[doc = ""]));
        let marker = self.safety_marker(format!(
            "`{}` is a helper of the patch, called only from its bodies, callbacks and helpers, which run in the \
             kernel's context; the body is the reviewed patch source.",
            h.sig.name.name
        ));
        let (block, n) = self.body(&h.body)?;
        let head = |params: &[TokenStream], ret: &TokenStream| {
            quote! {
                #docs
                #sep
                #[doc = " # Safety"]
                #[doc = ""]
                #[doc = " Called in the kernel's context, under the contracts of the bodies that call it."]
                unsafe fn #name(#(#params),*) #ret
            }
        };
        let full = head(&params, &ret);
        let sketch = head(&self.verbatim_params(&h.sig, false)?, &self.verbatim_ret(&h.sig));
        Ok((quote!(#full { #marker unsafe #block }), quote!(#sketch { #marker __kgraft_body!(#n); })))
    }

    /// Returns the items of a `replace syscall`: the body as one function, then one replacement
    /// per entry of the system call, which unpacks the registers and calls it; with the Rust
    /// names of the replacements.
    pub(super) fn syscall(&mut self, sc: &Syscall) -> Result<SyscallItems, Box<Diagnostic>> {
        let name = &sc.sig.name.name;
        let docs = doc_attrs(&sc.sig.docs);
        let sep = (!sc.sig.docs.is_empty()).then(|| quote!(#[doc = ""]));
        let (body_ident, mut out) = if sc.in_c.is_some() {
            // The body is a C function of the patch's C file; the entries call it.
            let body_ident = format_ident!("{}", cbody::syscall_symbol(name));
            let note = format!(" The body of the system call `{name}`, in the patch's C file.");
            let item = |params: &[TokenStream], ret: &TokenStream| {
                c_extern(TokenStream::new(), quote!(#docs #sep #[doc = #note] fn #body_ident(#(#params),*) #ret;))
            };
            let full = item(&self.params(&sc.sig, true)?, &self.ret(&sc.sig)?);
            let sketch = item(&self.verbatim_params(&sc.sig, true)?, &self.verbatim_ret(&sc.sig));
            (body_ident, vec![(full, sketch)])
        } else {
            let body_ident = format_ident!("__kgraft_sys_{}", name);
            let params = self.params(&sc.sig, false)?;
            let ret = self.ret(&sc.sig)?;
            let marker = self.safety_marker(format!(
                "the entries of the system call `{name}` call this body with the call's arguments, in the calling \
                 task's context; the body is the reviewed patch source."
            ));
            let (block, n) = self.body(&sc.body)?;
            let head = |params: &[TokenStream], ret: &TokenStream| {
                quote! {
                    #docs
                    #sep
                    #[doc = " # Safety"]
                    #[doc = ""]
                    #[doc = " Called by the system call's entries below, with its arguments, in the calling task's context."]
                    unsafe fn #body_ident(#(#params),*) #ret
                }
            };
            let full = head(&params, &ret);
            let sketch = head(&self.verbatim_params(&sc.sig, false)?, &self.verbatim_ret(&sc.sig));
            (
                body_ident,
                vec![(quote!(#full { #marker unsafe #block }), quote!(#sketch { #marker __kgraft_body!(#n); }))],
            )
        };
        let mut names = Vec::new();
        let ret_ty = match &sc.sig.ret {
            Some(r) => {
                let ty: syn::Type = super::parse(r)?;
                quote!(-> #ty)
            }
            None => TokenStream::new(),
        };
        let count = sc.sig.params.iter().filter(|p| matches!(p, Param::Named { .. })).count();
        for (abi, symbol, regs) in crate::syscalls::entries(name, self.kernel) {
            let fn_ident = format_ident!("__kgraft_{}_sys_{}", abi, name);
            let unpack = if abi == "ia32" { format_ident!("arg32") } else { format_ident!("arg") };
            let args = regs.iter().take(count).map(|r| {
                let r = format_ident!("{}", r);
                quote!(kgraft_rt::syscall::#unpack(regs.#r))
            });
            let doc = format!(
                " The `{abi}` entry of `{name}`: unpacks the arguments from the saved registers, as `SYSCALL_DEFINE` does."
            );
            let marker = self.safety_marker(format!(
                "the kernel's system call entry passes the calling task's saved registers, valid for the whole call; \
                 the arguments are unpacked as `SYSCALL_DEFINE` unpacks them for the `{abi}` ABI."
            ));
            let tokens = quote! {
                #[doc = #doc]
                #[doc = ""]
                #[doc = " # Safety"]
                #[doc = ""]
                #[doc = " Called by the kernel in place of the system call's entry, with its `struct pt_regs`."]
                #[kgraft_macros::replace(name = #symbol, object = "vmlinux", sympos = 0)]
                pub unsafe extern "C" fn #fn_ident(regs: *const kgraft_rt::syscall::PtRegs) #ret_ty {
                    #marker
                    unsafe {
                        let regs = &*regs;
                        #body_ident(#(#args),*)
                    }
                }
            };
            out.push((tokens.clone(), tokens));
            names.push(fn_ident);
        }
        Ok(SyscallItems { items: out, replacements: names })
    }
}

/// The `extern "C"` block, under `attrs`, that declares a C body (`decl`) to the crate.
fn c_extern(attrs: TokenStream, decl: TokenStream) -> TokenStream {
    quote! {
        #attrs
        // Only pointers cross to C: the Rust shape of what they point to (a kernel type from
        // BTF, opaque or not) is never passed by value.
        #[allow(improper_ctypes)]
        unsafe extern "C" { #decl }
    }
}

/// The items of a `replace syscall` in both forms (the body, then one replacement per entry),
/// and the Rust names of its replacements.
pub(super) struct SyscallItems {
    pub(super) items: Vec<(TokenStream, TokenStream)>,
    pub(super) replacements: Vec<Ident>,
}
