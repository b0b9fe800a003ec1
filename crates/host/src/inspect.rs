//! What a component file is, read without running or compiling it: its size and content hash,
//! the contract it was built against, the hooks it exports, every interface it imports (and
//! which of those are capabilities that need a grant), and the toolchains that made it, from
//! its `producers` sections. `wasmtpd plugin inspect` prints this; an operator vets a
//! third-party plugin with it before pinning it in `config/plugins`.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use wasmparser::{Parser, Payload};

use crate::sandbox::{Capability, PACKAGE, SandboxSettings, capability, interface_of};

/// A component, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub size: usize,
    /// `sha256:` and 64 hex digits: what a `config/plugins` pin names.
    pub sha256: String,
    /// The versions of `wasmtpd:plugin` its imports and exports name (normally one).
    pub contract: BTreeSet<String>,
    /// Its top-level exports (`wasmtpd:plugin/rcpt@0.1.0`), in file order.
    pub exports: Vec<String>,
    /// Its top-level imports, in file order.
    pub imports: Vec<String>,
    /// `(field, name, version)` from every `producers` section (the component's and its
    /// modules'), each once: `language Python`, `processed-by componentize-py 0.17.2`.
    pub producers: BTreeSet<(String, String, String)>,
}

impl Inspection {
    /// The hooks it exports: the `wasmtpd:plugin` interfaces among its exports, by name.
    pub fn hooks(&self) -> Vec<&str> {
        self.exports.iter().filter_map(|e| interface_of(e)).collect()
    }
}

/// Reads `bytes` as a component. A core module or a file that is not wasm is an error.
pub fn inspect(bytes: &[u8]) -> Result<Inspection> {
    if !Parser::is_component(bytes) {
        anyhow::bail!("not a WebAssembly component (a core module, or not wasm at all)");
    }
    let mut out = Inspection {
        size: bytes.len(),
        sha256: crate::plugin::content_hash(bytes),
        contract: BTreeSet::new(),
        exports: Vec::new(),
        imports: Vec::new(),
        producers: BTreeSet::new(),
    };
    // Nested modules and components come inline between their section and their `End`:
    // only depth 0 is the component's own interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("reading the component")? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    out.imports.push(extern_name(&import.context("reading an import")?.name));
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    out.exports.push(extern_name(&export.context("reading an export")?.name));
                }
            }
            Payload::CustomSection(section) if section.name() == "producers" => {
                // A malformed producers section is only a missing trace, not an error.
                if let Ok(reader) = wasmparser::ProducersSectionReader::new(wasmparser::BinaryReader::new(
                    section.data(),
                    section.data_offset(),
                )) {
                    for field in reader.into_iter().flatten() {
                        for value in field.values.into_iter().flatten() {
                            out.producers.insert((
                                field.name.to_string(),
                                value.name.to_string(),
                                value.version.to_string(),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let prefix = PACKAGE;
    for name in out.imports.iter().chain(&out.exports) {
        if let Some(version) = name.strip_prefix(prefix).and_then(|r| r.split_once('@')).map(|(_, v)| v) {
            out.contract.insert(version.to_string());
        }
    }
    Ok(out)
}

/// An import's or export's name as the component model writes it (`wasmtpd:plugin/dns@0.1.0`).
fn extern_name(name: &wasmparser::ComponentExternName<'_>) -> String {
    match name.version_suffix {
        Some(v) if !name.name.contains('@') => format!("{}{v}", name.name),
        _ => name.name.to_string(),
    }
}

/// What an import is to the server, for a plugin with `settings` (if known).
#[derive(Debug, Clone, Copy)]
pub enum ImportStatus {
    /// An interface every plugin has (`host`, `authentication-results`).
    Given,
    /// A capability, granted.
    Granted,
    /// A capability, not granted: the plugin would be refused at start-up.
    NotGranted(&'static Capability),
    /// A capability; no config was given to say whether it is granted.
    Capability(&'static Capability),
    /// WASI, linked with nothing in it (no files, network or environment).
    Wasi,
    /// Anything else: the server does not offer it, so the plugin would not load.
    Unknown,
}

/// The status of `import` for a plugin with `settings` (`None`: no config given).
pub fn status(import: &str, settings: Option<&SandboxSettings>) -> ImportStatus {
    if let Some(c) = capability(import) {
        return match settings {
            None => ImportStatus::Capability(c),
            Some(s) if (c.granted)(s) => ImportStatus::Granted,
            Some(_) => ImportStatus::NotGranted(c),
        };
    }
    if interface_of(import).is_some() {
        return ImportStatus::Given;
    }
    // The WASI 0.2 packages `plugin::linker` links (wasmtime-wasi's p2), each empty.
    const LINKED_WASI: &[&str] =
        &["wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/"];
    if LINKED_WASI.iter().any(|p| import.starts_with(p)) {
        return ImportStatus::Wasi;
    }
    ImportStatus::Unknown
}
