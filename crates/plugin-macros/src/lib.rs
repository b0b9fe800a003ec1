//! `#[wasmtpd_plugin::plugin]`: put it on `impl Plugin for YourType { ... }`. It looks at which
//! hook methods the block defines and exports exactly those hook interfaces, so the server
//! never calls (or even instantiates) the plugin for the others.
//!
//! It expands to the impl block itself, plus a hidden module that runs `wit_bindgen::generate!`
//! for a world exporting the implemented hooks, and forwards each generated `Guest` trait to
//! your `Plugin` impl.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// A hook: (method, WIT interface, parameters as `(name, type)`).
type HookSignature = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// Every hook of `wit/hooks.wit`.
const HOOKS: &[HookSignature] = &[
    ("connect", "connect", &[]),
    ("helo", "helo", &[("host", "String")]),
    ("ehlo", "ehlo", &[("host", "String")]),
    ("mail_pre", "mail-pre", &[("address", "String")]),
    ("rcpt_pre", "rcpt-pre", &[("address", "String")]),
    (
        "mail",
        "mail",
        &[("sender", "Option<::wasmtpd_plugin::Address>"), ("params", "Vec<::wasmtpd_plugin::EsmtpParam>")],
    ),
    ("rcpt", "rcpt", &[("recipient", "::wasmtpd_plugin::Address"), ("params", "Vec<::wasmtpd_plugin::EsmtpParam>")]),
    ("data", "data", &[]),
    ("data_post", "data-post", &[]),
    ("queue", "queue", &[]),
    ("quit", "quit", &[]),
    ("disconnect", "disconnect", &[]),
    ("vrfy", "vrfy", &[("argument", "String")]),
    ("noop", "noop", &[]),
    ("help", "help", &[("argument", "String")]),
    ("unrecognized_command", "unrecognized-command", &[("verb", "String"), ("args", "Vec<String>")]),
    ("reset_transaction", "reset-transaction", &[]),
    (
        "deny",
        "deny",
        &[
            ("hook", "String"),
            ("plugin", "String"),
            ("verdict", "::wasmtpd_plugin::Verdict"),
            ("message", "Option<String>"),
        ],
    ),
    ("auth_plain", "auth-plain", &[("user", "String"), ("password", "String")]),
    ("auth_login", "auth-login", &[("user", "String"), ("password", "String")]),
    ("auth", "auth", &[("mechanism", "String"), ("user", "String"), ("password", "String")]),
];

#[proc_macro_attribute]
pub fn plugin(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let block = parse_macro_input!(item as ItemImpl);
    let self_ty = &block.self_ty;
    let mut exports = Vec::new();
    let mut impls = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        let name = f.sig.ident.to_string();
        let Some((method, iface, params)) = HOOKS.iter().find(|(m, _, _)| *m == name) else {
            return syn::Error::new_spanned(&f.sig.ident, format!("`{name}` is not a hook of wasmtpd:plugin"))
                .to_compile_error()
                .into();
        };
        exports.push(format!("export wasmtpd:plugin/{iface}@0.1.0;"));
        let module = format_ident!("{}", method);
        let method = format_ident!("{}", method);
        let args: Vec<_> = params.iter().map(|(n, _)| format_ident!("{}", n)).collect();
        let types: Vec<syn::Type> = params.iter().map(|(_, t)| syn::parse_str(t).expect("valid type")).collect();
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
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");
    let wit = std::path::Path::new(wit).canonicalize().map(|p| p.display().to_string()).unwrap_or(wit.to_string());
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
        }
    }
    .into()
}
