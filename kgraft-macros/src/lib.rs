//! Procedural macros for kgraft live patches.
//!
//! The compiler lowers every `.kgp` source onto these macros, and a patch can be written by hand
//! in plain Rust with them:
//!
//! - `#[replace(name = "…", object = "…", sympos = N)]` on an `unsafe extern "C" fn` makes it
//!   the replacement of a kernel function;
//! - `shadow! { type { field: Type = init, … } }` declares shadow fields of a kernel type;
//! - `#[callback(pre_patch | post_patch | pre_unpatch | post_unpatch)]` marks a callback;
//! - `patch! { name: "…", … }` builds the patch descriptor and exports it for the target.

mod callback;
mod patch;
mod replace;
mod shadow;

use proc_macro::TokenStream;

/// Makes an `unsafe extern "C" fn` the replacement of the kernel function `name`.
///
/// `object` is `"vmlinux"` (the default) or the name of a loadable module; `sympos` picks one
/// of several local symbols of the same name (1-based; 0, the default, means the name is unique).
/// The function keeps its Rust name and gains a hidden constant `__kgraft_func_<fn>` that
/// `patch!` lists.
#[proc_macro_attribute]
pub fn replace(args: TokenStream, item: TokenStream) -> TokenStream {
    replace::expand(args.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Declares shadow fields attached to objects of kernel types.
#[proc_macro]
pub fn shadow(input: TokenStream) -> TokenStream {
    shadow::expand(input.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Marks a function as one of the patch's callbacks and checks its signature.
#[proc_macro_attribute]
pub fn callback(args: TokenStream, item: TokenStream) -> TokenStream {
    callback::expand(args.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Builds the patch descriptor from its replacements, shadows and callbacks, and exports it.
#[proc_macro]
pub fn patch(input: TokenStream) -> TokenStream {
    patch::expand(input.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Returns the name of the constant `#[replace]` adds next to the function `ident`.
fn func_const(ident: &syn::Ident) -> syn::Ident {
    syn::Ident::new(&format!("__kgraft_func_{ident}"), ident.span())
}

/// Returns a C string literal token for `text`.
fn c_str(text: &str, span: proc_macro2::Span) -> syn::Result<proc_macro2::Literal> {
    let owned = std::ffi::CString::new(text).map_err(|_| syn::Error::new(span, "a name may not contain a NUL byte"))?;
    let mut lit = proc_macro2::Literal::c_string(&owned);
    lit.set_span(span);
    Ok(lit)
}
