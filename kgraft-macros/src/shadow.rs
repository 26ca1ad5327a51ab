//! `shadow!`: shadow blocks declared for kernel types.
//!
//! Every block of the patch is declared in one invocation, because the invocation also defines
//! the module `__kgraft_shadow_fields`: one marker type per field name, which tells the body
//! macros of `kgraft_rt` (`shadow!(ptr.field)` and its siblings) which block holds a field.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, LitInt, Token, Type, braced, parenthesized};

/// `name: Type = init`, with its doc comments.
struct Field {
    attrs: Vec<Attribute>,
    name: Ident,
    ty: Type,
    init: Expr,
}

/// `kernel_type (id = N, keep, drop = f) { field, … }`.
struct Decl {
    attrs: Vec<Attribute>,
    ty: Ident,
    id: Option<LitInt>,
    keep: bool,
    drop: Option<Ident>,
    fields: Punctuated<Field, Token![,]>,
}

impl Parse for Field {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let name = input.parse()?;
        input.parse::<Token![:]>()?;
        let ty = input.parse()?;
        input.parse::<Token![=]>()?;
        let init = input.parse()?;
        Ok(Field { attrs, name, ty, init })
    }
}

impl Parse for Decl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let ty = input.parse()?;
        let (mut id, mut keep, mut drop) = (None, false, None);
        if input.peek(syn::token::Paren) {
            let options;
            parenthesized!(options in input);
            while !options.is_empty() {
                let key: Ident = options.call(syn::ext::IdentExt::parse_any)?;
                match key.to_string().as_str() {
                    "id" if id.is_none() => {
                        options.parse::<Token![=]>()?;
                        let lit: LitInt = options.parse()?;
                        lit.base10_parse::<u64>()?;
                        id = Some(lit);
                    }
                    "keep" if !keep => keep = true,
                    "drop" if drop.is_none() => {
                        options.parse::<Token![=]>()?;
                        drop = Some(options.parse()?);
                    }
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &key,
                            "expected `id = N`, `keep` or `drop = function`, each at most once",
                        ));
                    }
                }
                if !options.is_empty() {
                    options.parse::<Token![,]>()?;
                }
            }
        }
        let content;
        braced!(content in input);
        let fields = content.parse_terminated(Field::parse, Token![,])?;
        Ok(Decl { attrs, ty, id, keep, drop, fields })
    }
}

/// Returns the FNV-1a hash of `text`: a shadow id that is the same in every build.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Returns the name of a block's items: the kernel type, then its first field.
pub(crate) fn block_name(ty: &Ident, first_field: Option<&Ident>) -> Ident {
    match first_field {
        Some(f) => format_ident!("{}_{}", ty, f),
        None => ty.clone(),
    }
}

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let decls = syn::parse::Parser::parse2(
        |input: ParseStream| {
            let mut decls = Vec::new();
            while !input.is_empty() {
                decls.push(input.parse::<Decl>()?);
            }
            Ok(decls)
        },
        input,
    )?;
    let mut out = TokenStream::new();
    // Field name to the blocks holding it, by kernel type: the marker types.
    let mut markers: BTreeMap<String, Vec<(Ident, Ident)>> = BTreeMap::new();
    let mut ids: BTreeMap<u64, Ident> = BTreeMap::new();
    let mut fields_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for decl in decls {
        let seen = fields_of.entry(decl.ty.to_string()).or_default();
        for field in &decl.fields {
            if !seen.insert(field.name.to_string()) {
                return Err(syn::Error::new_spanned(&field.name, "this shadow field is declared twice for this type"));
            }
        }
        let ty = &decl.ty;
        let attrs = &decl.attrs;
        let block = block_name(ty, decl.fields.first().map(|f| &f.name));
        let fields_ty = format_ident!("__kgraft_shadow_{}", block);
        let decl_const = format_ident!("__kgraft_shadow_decl_{}", block);
        let names: Vec<_> = decl.fields.iter().map(|f| &f.name).collect();
        let types: Vec<_> = decl.fields.iter().map(|f| &f.ty).collect();
        let inits: Vec<_> = decl.fields.iter().map(|f| &f.init).collect();
        let field_attrs: Vec<_> = decl.fields.iter().map(|f| &f.attrs).collect();
        let id = match &decl.id {
            Some(lit) => lit.base10_parse::<u64>()?,
            None => {
                let signature = format!(
                    "{ty}{{{}}}",
                    decl.fields
                        .iter()
                        .map(|f| {
                            let t = &f.ty;
                            format!("{}:{};", f.name, quote!(#t))
                        })
                        .collect::<String>()
                );
                fnv1a(&signature)
            }
        };
        if ids.insert(id, ty.clone()).is_some() {
            let at = decl.id.as_ref().map_or_else(|| ty.span(), LitInt::span);
            return Err(syn::Error::new(at, "another shadow block has this id"));
        }
        for name in &names {
            markers.entry(name.to_string()).or_default().push((ty.clone(), fields_ty.clone()));
        }
        let release = decl.drop.as_ref().map(|f| {
            quote! {
                unsafe fn release(obj: *mut #ty, fields: #fields_ty) {
                    // SAFETY: the store calls this once per allocation, when nothing uses the
                    // data any more; the destructor is the patch's own helper.
                    unsafe { #f(obj, #(fields.#names),*) }
                }
            }
        });
        let type_name = crate::c_str(&ty.to_string(), ty.span())?;
        let owned = !decl.keep;
        out.extend(quote! {
            #(#attrs)*
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            pub struct #fields_ty {
                #( #(#field_attrs)* pub #names: #types, )*
            }

            // SAFETY: the id is the source's declared id, which the source vouches for, or a hash
            // of the type's name with its fields' names and types, so no other fields type is
            // stored under it.
            unsafe impl ::kgraft_rt::shadow::ShadowBlock for #fields_ty {
                type Target = #ty;
                type Fields = #fields_ty;
                const ID: u64 = #id;
                fn init() -> #fields_ty {
                    #fields_ty { #( #names: #inits, )* }
                }
                #release
            }

            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            pub const #decl_const: ::kgraft_rt::ShadowDecl = ::kgraft_rt::ShadowDecl {
                type_name: #type_name,
                id: #id,
                size: ::core::mem::size_of::<#fields_ty>(),
                dtor: ::kgraft_rt::shadow::destruct::<#fields_ty>,
                owned: #owned,
            };
        });
    }
    let marker_items = markers.iter().map(|(field, blocks)| {
        let marker = format_ident!("{}", field);
        let impls = blocks.iter().map(|(ty, fields_ty)| {
            quote! {
                impl ::kgraft_rt::shadow::ShadowField<super::#ty> for #marker {
                    type Block = super::#fields_ty;
                }
            }
        });
        quote! {
            pub enum #marker {}
            #(#impls)*
        }
    });
    out.extend(quote! {
        /// One marker type per shadow field name, naming the block that holds the field.
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        pub mod __kgraft_shadow_fields {
            #(#marker_items)*
        }
    });
    Ok(out)
}
