//! `#[wasmtpd_plugin::plugin]`: put it on `impl Plugin for YourType { ... }`. It looks at which
//! hook methods the block defines and exports exactly those hook interfaces, so the server
//! never calls (or even instantiates) the plugin for the others.
//!
//! The hooks are those of `wit/` (module `wit`, read with `wit-parser` when the macro runs), and
//! `hook_trait!` makes the SDK's `Plugin` trait from the same list, so the SDK holds no list of
//! hooks of its own.
//!
//! It expands to the impl block itself, plus a hidden module that runs `wit_bindgen::generate!`
//! for a world exporting the implemented hooks, and forwards each generated `Guest` trait to
//! your `Plugin` impl.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ImplItem, ItemImpl, parse_macro_input};

mod wit;

/// `hook_trait! { /// docs\n pub trait Plugin {} }`: the trait with one method per hook of
/// `wit/` (see [`wit`]), each documented with the WIT's documentation of the hook and
/// defaulting to `HookResult::declined()`. The SDK's `Plugin` trait is made this way; it is
/// not meant for plugins.
#[proc_macro]
pub fn hook_trait(item: TokenStream) -> TokenStream {
    let mut item = parse_macro_input!(item as syn::ItemTrait);
    let hooks = match wit::hooks() {
        Ok(hooks) => hooks,
        Err(e) => return syn::Error::new_spanned(&item.ident, e).to_compile_error().into(),
    };
    for hook in &hooks.hooks {
        let (method, docs) = (&hook.method, &hook.docs);
        let args = hook.params.iter().map(|(n, _)| n);
        let types = hook.params.iter().map(|(_, t)| t);
        item.items.push(syn::parse_quote! {
            #[doc = #docs]
            fn #method(#(#args: #types),*) -> ::wasmtpd_plugin::HookResult {
                ::wasmtpd_plugin::HookResult::declined()
            }
        });
    }
    let track = hooks.track_files();
    quote! {
        #[allow(unused_variables)]
        #item
        #track
    }
    .into()
}

#[proc_macro_attribute]
pub fn plugin(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let block = parse_macro_input!(item as ItemImpl);
    let self_ty = &block.self_ty;
    let hooks = match wit::hooks() {
        Ok(hooks) => hooks,
        Err(e) => return syn::Error::new_spanned(self_ty, e).to_compile_error().into(),
    };
    let mut exports = Vec::new();
    let mut impls = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        let name = f.sig.ident.to_string();
        let Some(hook) = hooks.hooks.iter().find(|h| h.method == name) else {
            return syn::Error::new_spanned(&f.sig.ident, format!("`{name}` is not a hook of wasmtpd:plugin"))
                .to_compile_error()
                .into();
        };
        exports.push(format!("export wasmtpd:plugin/{}@0.1.0;", hook.interface));
        // wit-bindgen names an interface's module and its function alike (`data_post`).
        let (module, method) = (&hook.method, &hook.method);
        let args: Vec<_> = hook.params.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = hook.params.iter().map(|(_, t)| t).collect();
        impls.push(quote! {
            impl exports::wasmtpd::plugin::#module::Guest for __Export {
                fn #method(#(#args: #types),*) -> ::wasmtpd_plugin::HookResult {
                    <super::#self_ty as ::wasmtpd_plugin::Plugin>::#method(#(#args),*)
                }
            }
        });
    }
    let world =
        format!("package wasmtpd:guest; world plugin {{ import wasmtpd:plugin/host@0.1.0; {} }}", exports.join(" "));
    let wit = hooks.dir.display().to_string();
    let track = hooks.track_files();
    quote! {
        #block

        #[doc(hidden)]
        #[allow(clippy::all, unused)]
        mod __wasmtpd_plugin_export {
            ::wasmtpd_plugin::__wit_bindgen::generate!({
                inline: #world,
                path: #wit,
                world: "wasmtpd:guest/plugin",
                runtime_path: "::wasmtpd_plugin::__wit_bindgen::rt",
                with: {
                    "wasmtpd:plugin/types@0.1.0": ::wasmtpd_plugin::types,
                    "wasmtpd:plugin/host@0.1.0": ::wasmtpd_plugin::host,
                },
            });

            struct __Export;
            #(#impls)*
            export!(__Export);
            #track
        }
    }
    .into()
}
