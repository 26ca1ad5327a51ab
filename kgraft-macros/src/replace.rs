//! `#[replace]`: a replacement function and its descriptor.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ItemFn, Lit, MetaNameValue, Token};

/// What `#[replace(...)]` says about the target.
struct Target {
    name: Option<syn::LitStr>,
    object: Option<syn::LitStr>,
    sympos: u32,
}

fn parse_args(args: TokenStream) -> syn::Result<Target> {
    let pairs = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args)?;
    let mut target = Target { name: None, object: None, sympos: 0 };
    for pair in pairs {
        let key = pair.path.get_ident().map(ToString::to_string).unwrap_or_default();
        let Expr::Lit(lit) = &pair.value else {
            return Err(syn::Error::new_spanned(&pair.value, "expected a literal"));
        };
        match (key.as_str(), &lit.lit) {
            ("name", Lit::Str(s)) => target.name = Some(s.clone()),
            ("object", Lit::Str(s)) => target.object = Some(s.clone()),
            ("sympos", Lit::Int(n)) => target.sympos = n.base10_parse()?,
            ("name" | "object", _) => return Err(syn::Error::new_spanned(lit, "expected a string")),
            ("sympos", _) => return Err(syn::Error::new_spanned(lit, "expected an integer")),
            _ => {
                return Err(syn::Error::new_spanned(&pair.path, "unknown key: expected `name`, `object` or `sympos`"));
            }
        }
    }
    Ok(target)
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let target = parse_args(args)?;
    if let Ok(block) = syn::parse2::<syn::ItemForeignMod>(item.clone()) {
        return expand_foreign(&target, block);
    }
    let func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    if sig.unsafety.is_none() || sig.abi.as_ref().and_then(|abi| abi.name.as_ref()).is_none_or(|n| n.value() != "C") {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "a replacement must be an `unsafe extern \"C\" fn`: it is entered with the target's C calling convention",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(variadic, "a replacement cannot be variadic"));
    }
    if !sig.generics.params.is_empty() || sig.asyncness.is_some() || sig.constness.is_some() {
        return Err(syn::Error::new_spanned(
            sig,
            "a replacement must be a plain function: no generics, `async` or `const`",
        ));
    }
    let konst = descriptor(&target, &sig.ident, &func.vis)?;
    Ok(quote! {
        #func

        #konst
    })
}

/// `#[replace]` on an `unsafe extern "C" { fn f(...); }` block of one function: the replacement
/// is code compiled elsewhere (a C body), and the descriptor takes its address.
fn expand_foreign(target: &Target, block: syn::ItemForeignMod) -> syn::Result<TokenStream> {
    if block.abi.name.as_ref().is_none_or(|n| n.value() != "C") {
        return Err(syn::Error::new_spanned(&block.abi, "a replacement must be declared `extern \"C\"`"));
    }
    let [syn::ForeignItem::Fn(func)] = block.items.as_slice() else {
        return Err(syn::Error::new_spanned(
            &block.abi,
            "`#[replace]` on an `extern` block takes a block declaring exactly one function",
        ));
    };
    if let Some(variadic) = &func.sig.variadic {
        return Err(syn::Error::new_spanned(variadic, "a replacement cannot be variadic"));
    }
    let konst = descriptor(target, &func.sig.ident, &func.vis)?;
    Ok(quote! {
        #block

        #konst
    })
}

/// Returns the hidden descriptor constant `__kgraft_func_<ident>` of a replacement.
fn descriptor(target: &Target, ident: &syn::Ident, vis: &syn::Visibility) -> syn::Result<TokenStream> {
    let name_text = target.name.as_ref().map_or_else(|| ident.to_string(), syn::LitStr::value);
    let name_span = target.name.as_ref().map_or_else(|| ident.span(), syn::LitStr::span);
    let name = crate::c_str(&name_text, name_span)?;
    let object = match &target.object {
        Some(obj) if obj.value() != "vmlinux" => {
            let lit = crate::c_str(&obj.value(), obj.span())?;
            quote!(::core::option::Option::Some(#lit))
        }
        _ => quote!(::core::option::Option::None),
    };
    let sympos = target.sympos;
    let konst = crate::func_const(ident);
    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #konst: ::kgraft_rt::Func = ::kgraft_rt::Func {
            name: #name,
            object: #object,
            sympos: #sympos,
            new_fn: #ident as *const (),
            direct: ::kgraft_rt::__direct_entry!(#ident),
        };
    })
}
