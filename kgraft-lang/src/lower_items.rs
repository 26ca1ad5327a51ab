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
    /// under the `#[replace]` that puts its address in the descriptor. Both forms are the same.
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
        let tokens = quote! {
            #[kgraft_macros::replace(name = #target, object = #object, sympos = #sympos)]
            unsafe extern "C" {
                #docs
                #sep
                #[doc = #note]
                pub fn #symbol(#(#params),*) #ret;
            }
        };
        Ok((tokens.clone(), tokens, symbol))
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
        let head = quote! {
            #docs
            #sep
            #[doc = " # Safety"]
            #[doc = ""]
            #[doc = " Called in the kernel's context, under the contracts of the bodies that call it."]
            unsafe fn #name(#(#params),*) #ret
        };
        Ok((quote!(#head { #marker unsafe #block }), quote!(#head { #marker __kgraft_body!(#n); })))
    }
}
