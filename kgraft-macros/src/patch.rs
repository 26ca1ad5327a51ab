//! `patch!`: the patch descriptor and its export.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitBool, LitInt, LitStr, Path, Token, braced, bracketed, parenthesized};

/// Everything `patch!` may be told.
#[derive(Default)]
struct Spec {
    name: Option<LitStr>,
    description: Option<LitStr>,
    kernel: Option<LitStr>,
    replace_all: Option<ReplaceAll>,
    functions: Vec<Path>,
    shadows: Vec<Path>,
    callbacks: Vec<(Ident, Path)>,
    objects: Vec<(LitStr, Vec<(Ident, Path)>)>,
    states: Vec<(LitInt, LitInt)>,
}

/// `replace_all: true`, or `replace_all: NAME`: the module parameter that decides it at load.
enum ReplaceAll {
    Fixed(LitBool),
    Param(Ident),
}

impl Parse for ReplaceAll {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(LitBool) { Ok(ReplaceAll::Fixed(input.parse()?)) } else { Ok(ReplaceAll::Param(input.parse()?)) }
    }
}

/// Parses `{ kind: path, ... }`.
fn parse_callbacks(input: ParseStream) -> syn::Result<Vec<(Ident, Path)>> {
    let content;
    braced!(content in input);
    let mut out = Vec::new();
    while !content.is_empty() {
        let kind: Ident = content.parse()?;
        content.parse::<Token![:]>()?;
        let path: Path = content.parse()?;
        out.push((kind, path));
        if !content.is_empty() {
            content.parse::<Token![,]>()?;
        }
    }
    Ok(out)
}

impl Parse for Spec {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut spec = Spec::default();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![:]>()?;
            match key.to_string().as_str() {
                "name" => spec.name = Some(input.parse()?),
                "description" => spec.description = Some(input.parse()?),
                "kernel" => spec.kernel = Some(input.parse()?),
                "replace_all" => spec.replace_all = Some(input.parse()?),
                "functions" | "shadows" => {
                    let content;
                    bracketed!(content in input);
                    let paths = Punctuated::<Path, Token![,]>::parse_terminated(&content)?;
                    let list = if key == "functions" { &mut spec.functions } else { &mut spec.shadows };
                    list.extend(paths);
                }
                "callbacks" => spec.callbacks = parse_callbacks(input)?,
                "states" => {
                    // `[(id, version), ...]`.
                    let content;
                    bracketed!(content in input);
                    while !content.is_empty() {
                        let pair;
                        parenthesized!(pair in content);
                        let id: LitInt = pair.parse()?;
                        pair.parse::<Token![,]>()?;
                        let version: LitInt = pair.parse()?;
                        id.base10_parse::<u64>()?;
                        version.base10_parse::<u32>()?;
                        spec.states.push((id, version));
                        if !content.is_empty() {
                            content.parse::<Token![,]>()?;
                        }
                    }
                }
                "objects" => {
                    let content;
                    braced!(content in input);
                    while !content.is_empty() {
                        let name: LitStr = content.parse()?;
                        content.parse::<Token![:]>()?;
                        let callbacks = parse_callbacks(&content)?;
                        spec.objects.push((name, callbacks));
                        if !content.is_empty() {
                            content.parse::<Token![,]>()?;
                        }
                    }
                }
                _ => {
                    return Err(syn::Error::new_spanned(
                        &key,
                        "unknown key: expected `name`, `description`, `kernel`, `replace_all`, \
                         `functions`, `shadows`, `callbacks`, `objects` or `states`",
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(spec)
    }
}

/// Returns `path` with its last segment renamed by `rename`.
fn sibling(path: &Path, rename: impl Fn(&Ident) -> Ident) -> Path {
    let mut path = path.clone();
    if let Some(last) = path.segments.last_mut() {
        last.ident = rename(&last.ident);
    }
    path
}

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let spec: Spec = syn::parse2(input)?;
    let name = spec.name.ok_or_else(|| syn::Error::new(Span::call_site(), "missing `name`"))?;
    let text = name.value();
    if text.is_empty()
        || text.len() > kgraft_rt::rules::MAX_NAME_LEN
        || !text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(syn::Error::new_spanned(
            &name,
            "a patch name is 1 to 55 characters of `a-z`, `0-9` and `_`: it becomes the module name",
        ));
    }
    let name_c = crate::c_str(&text, name.span())?;
    let description = match &spec.description {
        Some(d) => crate::c_str(&d.value(), d.span())?,
        None => crate::c_str("", Span::call_site())?,
    };
    let kernel = match &spec.kernel {
        Some(k) => {
            let lit = crate::c_str(&k.value(), k.span())?;
            quote!(::core::option::Option::Some(#lit))
        }
        None => quote!(::core::option::Option::None),
    };
    let (replace_all, replace_param) = match &spec.replace_all {
        None => (false, quote!(::core::option::Option::None)),
        Some(ReplaceAll::Fixed(b)) => (b.value, quote!(::core::option::Option::None)),
        // A function of the crate reads the parameter when the patch is applied.
        Some(ReplaceAll::Param(_)) => (false, quote!(::core::option::Option::Some(__kgraft_replace_all))),
    };
    let replace_fn = match &spec.replace_all {
        Some(ReplaceAll::Param(param)) => quote! {
            /// Whether the module parameter that decides `replace_all` is set.
            #[doc(hidden)]
            fn __kgraft_replace_all() -> bool {
                // SAFETY: the parameter is a variable of the module that the kernel writes when
                // the module loads (and sysfs later); a plain read of an integer or a bool.
                ::kgraft_rt::patch::Flag::is_set(unsafe { ::core::ptr::read_volatile(::core::ptr::addr_of!(#param)) })
            }
        },
        _ => TokenStream::new(),
    };
    let funcs = spec.functions.iter().map(|p| sibling(p, crate::func_const));
    let shadows = spec.shadows.iter().map(|p| sibling(p, |i| format_ident!("__kgraft_shadow_decl_{}", i)));

    let vmlinux_callbacks = callbacks(&spec.callbacks)?;
    let mut objects = Vec::new();
    for (name, list) in &spec.objects {
        if spec.objects.iter().filter(|(n, _)| n.value() == name.value()).count() > 1 {
            return Err(syn::Error::new_spanned(name, "this object is listed twice"));
        }
        let lit = crate::c_str(&name.value(), name.span())?;
        let cbs = callbacks(list)?;
        objects.push(quote!(::kgraft_rt::ObjectDecl { name: #lit, callbacks: #cbs }));
    }

    let mut states = Vec::new();
    for (i, (id, version)) in spec.states.iter().enumerate() {
        let value = id.base10_parse::<u64>()?;
        if spec.states[..i].iter().any(|(other, _)| other.base10_parse::<u64>().ok() == Some(value)) {
            return Err(syn::Error::new_spanned(id, "this state id is listed twice"));
        }
        let id = proc_macro2::Literal::u64_unsuffixed(value);
        let version = proc_macro2::Literal::u32_unsuffixed(version.base10_parse::<u32>()?);
        states.push(quote!(::kgraft_rt::state::StateDecl { id: #id, version: #version }));
    }

    Ok(quote! {
        #[doc(hidden)]
        pub static __KGRAFT_PATCH: ::kgraft_rt::Patch = ::kgraft_rt::Patch {
            name: #name_c,
            description: #description,
            kernel: #kernel,
            replace_all: #replace_all,
            replace_all_param: #replace_param,
            funcs: &[#(#funcs),*],
            shadows: &[#(#shadows),*],
            callbacks: #vmlinux_callbacks,
            objects: &[#(#objects),*],
            states: &[#(#states),*],
        };

        #replace_fn

        ::kgraft_rt::__export_patch!(__KGRAFT_PATCH, #name);
    })
}

/// Returns the `Callbacks` value of a list of `kind: path`.
fn callbacks(list: &[(Ident, Path)]) -> syn::Result<TokenStream> {
    let obj = quote!(&::kgraft_rt::Object);
    let mut slots = [None, None, None, None];
    for (kind, path) in list {
        let (slot, ty) = match kgraft_rt::rules::callback(&kind.to_string()) {
            Some((slot, true)) => (slot, quote!(unsafe fn(#obj) -> ::core::ffi::c_int)),
            Some((slot, false)) => (slot, quote!(unsafe fn(#obj))),
            None => {
                return Err(syn::Error::new_spanned(
                    kind,
                    "unknown callback: expected `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`",
                ));
            }
        };
        if slots[slot].is_some() {
            return Err(syn::Error::new_spanned(kind, "this callback is given twice"));
        }
        slots[slot] = Some(quote!(::core::option::Option::Some(#path as #ty)));
    }
    let [pre_patch, post_patch, pre_unpatch, post_unpatch] =
        slots.map(|slot| slot.unwrap_or_else(|| quote!(::core::option::Option::None)));
    Ok(quote! {
        ::kgraft_rt::Callbacks {
            pre_patch: #pre_patch,
            post_patch: #post_patch,
            pre_unpatch: #pre_unpatch,
            post_unpatch: #post_unpatch,
        }
    })
}
