//! The hooks as `wit/` declares them: the exports of the world `wasmtpd:plugin/plugin`
//! (`wit/world.wit`), in its order, each an interface of `wit/hooks.wit` with one function named
//! after it. Both macros of this crate are made from this list, so the SDK has no list of hooks
//! of its own.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use wit_parser::{Resolve, Type, TypeDefKind, TypeOwner, WorldItem};

/// One hook: its interface and the function in it.
pub struct HookFn {
    /// The WIT interface (`data-post`).
    pub interface: String,
    /// The Rust name of the interface's module and function (`data_post`), which is the
    /// `Plugin` method's.
    pub method: syn::Ident,
    /// The interface's documentation and then the function's.
    pub docs: String,
    /// The parameters in WIT order, as Rust names and types.
    pub params: Vec<(syn::Ident, TokenStream)>,
}

/// The hooks, and the files they were read from (for `include_bytes!`, so that cargo builds
/// again when the WIT changes).
pub struct Hooks {
    pub hooks: Vec<HookFn>,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

impl Hooks {
    /// `const _: &[u8] = include_bytes!(...)` for every WIT file read.
    pub fn track_files(&self) -> TokenStream {
        let files = self.files.iter().map(|f| f.display().to_string());
        quote! { #(const _: &[u8] = include_bytes!(#files);)* }
    }
}

/// The repository's `wit/`, beside this crate.
fn wit_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit"));
    dir.canonicalize().unwrap_or(dir)
}

/// Reads `wit/` and lists its hooks. An error is a sentence for `compile_error!`.
pub fn hooks() -> Result<Hooks, String> {
    let dir = wit_dir();
    let mut resolve = Resolve::default();
    let (package, sources) = resolve.push_dir(&dir).map_err(|e| format!("reading {}: {e:#}", dir.display()))?;
    let files = sources.paths().map(|p| p.to_path_buf()).collect();
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .map_err(|e| format!("{}: no world `plugin`: {e:#}", dir.display()))?;
    let mut hooks = Vec::new();
    for item in resolve.worlds[world].exports.values() {
        let WorldItem::Interface { id, .. } = item else {
            return Err("world `plugin` exports something other than a hook interface".into());
        };
        let interface = &resolve.interfaces[*id];
        let name = interface.name.clone().ok_or("world `plugin` exports an unnamed interface")?;
        let mut functions = interface.functions.values();
        let (Some(function), None) = (functions.next(), functions.next()) else {
            return Err(format!("hook interface `{name}` must hold exactly one function"));
        };
        if function.name != name {
            return Err(format!("hook interface `{name}`'s function must be named `{name}`, not `{}`", function.name));
        }
        match &function.result {
            Some(ty) if named_in_types(&resolve, ty) == Some("hook-result") => {}
            _ => return Err(format!("hook `{name}` must return `hook-result`")),
        }
        let params = function
            .params
            .iter()
            .map(|p| Ok((ident(&p.name)?, rust_type(&resolve, &p.ty)?)))
            .collect::<Result<_, String>>()?;
        let docs = [&interface.docs.contents, &function.docs.contents]
            .into_iter()
            .flatten()
            .map(|d| d.trim_end())
            .collect::<Vec<_>>()
            .join("\n\n");
        hooks.push(HookFn { method: ident(&name)?, interface: name, docs, params });
    }
    Ok(Hooks { hooks, dir, files })
}

/// `data-post` as a Rust identifier (`data_post`).
fn ident(wit_name: &str) -> Result<syn::Ident, String> {
    syn::parse_str(&wit_name.replace('-', "_"))
        .map_err(|_| format!("`{wit_name}` is not usable as a Rust name (a keyword?)"))
}

/// The name of the type `ty` stands for, if it is one of `wasmtpd:plugin/types` (through the
/// `use` aliases of the hook interfaces).
fn named_in_types<'r>(resolve: &'r Resolve, ty: &Type) -> Option<&'r str> {
    let Type::Id(id) = ty else { return None };
    let def = &resolve.types[*id];
    match (&def.kind, def.owner) {
        (TypeDefKind::Type(aliased), _) => named_in_types(resolve, aliased),
        (_, TypeOwner::Interface(owner)) if resolve.interfaces[owner].name.as_deref() == Some("types") => {
            def.name.as_deref()
        }
        _ => None,
    }
}

/// The Rust type wit-bindgen gives a parameter of WIT type `ty` (the named types are the
/// SDK's `types` module, as the export glue's `with` says).
fn rust_type(resolve: &Resolve, ty: &Type) -> Result<TokenStream, String> {
    Ok(match ty {
        Type::Bool => quote!(bool),
        Type::U8 => quote!(u8),
        Type::U16 => quote!(u16),
        Type::U32 => quote!(u32),
        Type::U64 => quote!(u64),
        Type::S8 => quote!(i8),
        Type::S16 => quote!(i16),
        Type::S32 => quote!(i32),
        Type::S64 => quote!(i64),
        Type::F32 => quote!(f32),
        Type::F64 => quote!(f64),
        Type::Char => quote!(char),
        Type::String => quote!(::std::string::String),
        Type::Id(id) => {
            if let Some(name) = named_in_types(resolve, ty) {
                let name = format_ident!("{}", upper_camel(name));
                return Ok(quote!(::wasmtpd_plugin::types::#name));
            }
            match &resolve.types[*id].kind {
                TypeDefKind::Option(inner) => {
                    let inner = rust_type(resolve, inner)?;
                    quote!(::std::option::Option<#inner>)
                }
                TypeDefKind::List(inner) => {
                    let inner = rust_type(resolve, inner)?;
                    quote!(::std::vec::Vec<#inner>)
                }
                TypeDefKind::Type(aliased) => rust_type(resolve, aliased)?,
                other => return Err(format!("hook parameters of WIT type {other:?} are not supported by the SDK yet")),
            }
        }
        other => return Err(format!("hook parameters of WIT type {other:?} are not supported by the SDK yet")),
    })
}

/// `esmtp-param` -> `EsmtpParam`.
fn upper_camel(wit_name: &str) -> String {
    wit_name
        .split('-')
        .map(|w| {
            let mut cs = w.chars();
            cs.next().map(|c| c.to_ascii_uppercase().to_string() + cs.as_str()).unwrap_or_default()
        })
        .collect()
}
