//! `cargo xtask new-plugin --lang rust|python|js|c NAME`: a new plugin directory
//! `plugins-wasm/NAME/` made from the language's template in `plugins-wasm/templates/LANG/`
//! (one hook, `rcpt`, and a session file that tests it offline), with `my_plugin` replaced by
//! NAME everywhere. A Rust plugin is added to the `plugins-wasm` workspace, so
//! `cargo xtask build-plugins` builds it. The templates themselves are built and their sessions
//! run by `cargo xtask test` (`tests/tests/e2e/vetting.rs`), so what this makes builds and passes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::project_root;

/// The placeholder name in the templates.
const PLACEHOLDER: &str = "my_plugin";

pub fn new_plugin(args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask new-plugin --lang rust|python|js|c NAME";
    let (lang, name) = match args {
        [flag, lang, name] if flag == "--lang" => (lang.as_str(), name.as_str()),
        [name, flag, lang] if flag == "--lang" => (lang.as_str(), name.as_str()),
        _ => bail!("{usage}"),
    };
    let root = project_root().join("plugins-wasm");
    let dir = generate(&root, lang, name)?;
    if lang == "rust" {
        add_member(&root.join("Cargo.toml"), name)?;
    }
    let rel = dir.strip_prefix(project_root()).unwrap_or(&dir).display().to_string();
    println!("made {rel}/ from plugins-wasm/templates/{lang}");
    println!("build it:   cargo xtask build-plugins");
    println!(
        "test it:    target/debug/wasmtpd plugin test target/plugins/{name}.wasm blocked.example --session {rel}/{name}.session"
    );
    println!("run it:     add `{name} blocked.example` to config/plugins");
    Ok(())
}

/// Copies the template of `lang` into `root/NAME`, with the placeholder replaced in file names
/// and contents. Refuses a name that is not a plugin name, or a directory that exists.
pub fn generate(root: &Path, lang: &str, name: &str) -> Result<PathBuf> {
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || !name.as_bytes()[0].is_ascii_lowercase()
    {
        bail!("`{name}` is not a plugin name: lower-case letters, digits and `_`, starting with a letter");
    }
    let template = root.join("templates").join(lang);
    if !["rust", "python", "js", "c"].contains(&lang) || !template.is_dir() {
        bail!("no template for `{lang}`: rust, python, js or c");
    }
    let dir = root.join(name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    copy(&template, &dir, name, lang)?;
    Ok(dir)
}

fn copy(from: &Path, to: &Path, name: &str, lang: &str) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().replace(PLACEHOLDER, name);
        let target = to.join(file_name);
        if entry.file_type()?.is_dir() {
            // What a build leaves beside the sources is not part of the template.
            if entry.file_name() != "__pycache__" && entry.file_name() != "target" {
                copy(&entry.path(), &target, name, lang)?;
            }
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let text = text
            .replace(&format!("plugin = \"templates/{lang}\""), &format!("plugin = \"{name}\""))
            .replace("my-plugin:plugin", &format!("{}:plugin", name.replace('_', "-")))
            .replace(PLACEHOLDER, name);
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// Adds `name` to the workspace members of `manifest` (`plugins-wasm/Cargo.toml`).
fn add_member(manifest: &Path, name: &str) -> Result<()> {
    let text = std::fs::read_to_string(manifest)?;
    let Some(start) = text.find("members = [") else { bail!("{}: no members list", manifest.display()) };
    let end = start + text[start..].find(']').context("members list not closed")?;
    let text = format!("{}    \"{name}\",\n{}", &text[..end], &text[end..]);
    std::fs::write(manifest, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_becomes_a_plugin_of_its_name_with_no_placeholder_left() {
        let root = project_root().join("plugins-wasm");
        let scratch = std::env::temp_dir().join(format!("wasmtpd-new-plugin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        std::os::unix::fs::symlink(root.join("templates"), scratch.join("templates")).unwrap();
        for lang in ["rust", "python", "js", "c"] {
            let name = format!("spam_{lang}");
            let dir = generate(&scratch, lang, &name).unwrap();
            assert!(dir.join(format!("{name}.session")).is_file(), "{lang}");
            let mut files = Vec::new();
            walk(&dir, &mut files);
            assert!(files.len() >= 2, "{lang}: {files:?}");
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                assert!(!text.contains(PLACEHOLDER) && !text.contains("my-plugin"), "{}", f.display());
                assert!(!text.contains("templates/"), "{}", f.display());
            }
            if lang == "rust" {
                let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
                assert!(
                    manifest.contains(&format!("name = \"{name}\""))
                        && manifest.contains(&format!("plugin = \"{name}\""))
                );
            }
            assert!(generate(&scratch, lang, &name).is_err(), "an existing directory is kept");
        }
        assert!(generate(&scratch, "rust", "Bad-Name").is_err());
        assert!(generate(&scratch, "cobol", "fine").is_err());
        let _ = std::fs::remove_dir_all(&scratch);
    }

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { walk(&p, out) } else { out.push(p) }
        }
    }
}
