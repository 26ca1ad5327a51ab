//! `shadow!`: shadow fields declared for kernel types.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Token, Type, braced};

/// `name: Type = init`, with its doc comments.
struct Field {
    attrs: Vec<Attribute>,
    name: Ident,
    ty: Type,
    init: Expr,
}

/// `kernel_type { field, … }`.
struct Decl {
    attrs: Vec<Attribute>,
    ty: Ident,
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
        let content;
        braced!(content in input);
        let fields = content.parse_terminated(Field::parse, Token![,])?;
        Ok(Decl { attrs, ty, fields })
    }
}

/// Returns the FNV-1a hash of `text`: a shadow id that is the same in every build.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
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
    for decl in decls {
        let mut seen = std::collections::BTreeSet::new();
        for field in &decl.fields {
            if !seen.insert(field.name.to_string()) {
                return Err(syn::Error::new_spanned(&field.name, "this shadow field is declared twice"));
            }
        }
        let ty = &decl.ty;
        let attrs = &decl.attrs;
        let fields_ty = format_ident!("__kgraft_shadow_{}", ty);
        let decl_const = format_ident!("__kgraft_shadow_decl_{}", ty);
        let names: Vec<_> = decl.fields.iter().map(|f| &f.name).collect();
        let types: Vec<_> = decl.fields.iter().map(|f| &f.ty).collect();
        let inits: Vec<_> = decl.fields.iter().map(|f| &f.init).collect();
        let field_attrs: Vec<_> = decl.fields.iter().map(|f| &f.attrs).collect();
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
        let id = fnv1a(&signature);
        let type_name = crate::c_str(&ty.to_string(), ty.span())?;
        out.extend(quote! {
            #(#attrs)*
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            pub struct #fields_ty {
                #( #(#field_attrs)* pub #names: #types, )*
            }

            // SAFETY: the id hashes the type's name with its fields' names and types, so no other
            // fields type is stored under it.
            unsafe impl ::kgraft_rt::shadow::Shadowed for #ty {
                type Fields = #fields_ty;
                const ID: u64 = #id;
                fn init() -> #fields_ty {
                    #fields_ty { #( #names: #inits, )* }
                }
            }

            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            pub const #decl_const: ::kgraft_rt::ShadowDecl = ::kgraft_rt::ShadowDecl {
                type_name: #type_name,
                id: #id,
                size: ::core::mem::size_of::<#fields_ty>(),
                dtor: ::kgraft_rt::shadow::destruct::<#ty>,
            };
        });
    }
    Ok(out)
}
