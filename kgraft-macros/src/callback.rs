//! `#[callback]`: a patch callback with the signature of its kind.

use proc_macro2::TokenStream;
use syn::{ItemFn, ReturnType};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let kind: syn::Ident = syn::parse2(args)?;
    let func: ItemFn = syn::parse2(item)?;
    let returns_int = match kgraft_rt::rules::callback(&kind.to_string()) {
        Some((_, returns_int)) => returns_int,
        None => {
            return Err(syn::Error::new_spanned(
                &kind,
                "unknown callback: expected `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`",
            ));
        }
    };
    let sig = &func.sig;
    if sig.unsafety.is_none() || sig.abi.is_some() || sig.inputs.len() != 1 || !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            sig,
            "a callback is an `unsafe fn` with one parameter, the object: `obj: &kgraft_rt::Object`",
        ));
    }
    let ok = match (&sig.output, returns_int) {
        (ReturnType::Default, false) => true,
        (ReturnType::Type(_, ty), true) => quote::quote!(#ty).to_string().ends_with("c_int"),
        _ => false,
    };
    if !ok {
        let want = if returns_int { "`c_int` (0 to go on, a negative errno to refuse)" } else { "nothing" };
        let message = format!("`{kind}` returns {want}");
        return Err(match &sig.output {
            ReturnType::Default => syn::Error::new_spanned(&sig.ident, message),
            ReturnType::Type(..) => syn::Error::new_spanned(&sig.output, message),
        });
    }
    Ok(quote::quote!(#func))
}
