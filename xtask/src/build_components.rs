//! Plugins in languages other than Rust: every directory under `plugins-wasm/` holding a
//! `world.wit` and an `app.py` (Python), `app.js` (JavaScript) or `app.c` (C) is built into
//! `target/plugins/<its path>.wasm` with the language's component toolchain, which is installed
//! on first use under `target/toolchains/` from the package registries:
//!
//! - Python: `componentize-py` 0.25.1 from PyPI (`pip install --target`); the SDK module
//!   `sdk/python/wasmtpd_plugin.py` is on the module path.
//! - JavaScript: `@bytecodealliance/componentize-js` 0.23.0 from npm; the SDK module
//!   `sdk/js/wasmtpd-plugin.js` is copied beside `app.js`.
//! - C: Debian's clang, lld and wasi-libc (`apt-get install clang lld wasi-libc
//!   libclang-rt-14-dev-wasm32`), `wit-bindgen-cli` 0.63.0 from crates.io (`cargo install`
//!   into `target/toolchains/cargo`) for the bindings, and rustup's `wasm-component-ld` (it has
//!   the WASI preview1 adapter built in) to link the component; `sdk/c/wasmtpd_plugin.h` is on
//!   the include path.
//!
//! A plugin's WIT directory is its `world.wit` plus `wit/` as the dependency `wasmtpd-plugin`.
//! A component newer than all its inputs is not rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::build_plugins::plugin_dir;
use crate::install::on_path;
use crate::{project_root, run};

const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
const WIT_BINDGEN_CLI: &str = "wit-bindgen-cli@0.63.0";
/// Debian packages for C plugins.
const C_PACKAGES: &[&str] = &["clang", "lld", "wasi-libc", "libclang-rt-14-dev-wasm32"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Language {
    Python,
    JavaScript,
    C,
}

/// Builds every Python and JavaScript plugin; returns how many there are.
pub fn build() -> Result<usize> {
    let root = project_root().join("plugins-wasm");
    let mut found = Vec::new();
    find(&root, &mut found)?;
    for (dir, lang) in &found {
        let name = dir.strip_prefix(&root)?.to_string_lossy().to_string();
        let out = plugin_dir().join(format!("{name}.wasm"));
        let sdk = match lang {
            Language::Python => project_root().join("sdk/python/wasmtpd_plugin.py"),
            Language::JavaScript => project_root().join("sdk/js/wasmtpd-plugin.js"),
            Language::C => project_root().join("sdk/c/wasmtpd_plugin.h"),
        };
        let mut inputs = vec![sdk];
        inputs.extend(files_in(dir)?);
        inputs.extend(files_in(&project_root().join("wit"))?);
        if up_to_date(&out, &inputs) {
            continue;
        }
        let work = project_root().join("target/component-build").join(&name);
        let _ = std::fs::remove_dir_all(&work);
        let wit = work.join("wit");
        std::fs::create_dir_all(wit.join("deps/wasmtpd-plugin"))?;
        std::fs::copy(dir.join("world.wit"), wit.join("world.wit"))?;
        for f in files_in(&project_root().join("wit"))? {
            std::fs::copy(&f, wit.join("deps/wasmtpd-plugin").join(f.file_name().unwrap()))?;
        }
        std::fs::create_dir_all(out.parent().unwrap())?;
        eprintln!("xtask: building {name} ({lang:?})");
        match lang {
            Language::Python => {
                let tool = python_toolchain()?;
                run(Command::new(tool.join("bin/componentize-py"))
                    .env("PYTHONPATH", &tool)
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", "plugin", "componentize", "app", "-p"])
                    .arg(dir)
                    .arg("-p")
                    .arg(project_root().join("sdk/python"))
                    .arg("-o")
                    .arg(&out))?;
            }
            Language::JavaScript => {
                let tool = js_toolchain()?;
                let src = work.join("src");
                std::fs::create_dir_all(&src)?;
                for f in files_in(dir)? {
                    std::fs::copy(&f, src.join(f.file_name().unwrap()))?;
                }
                std::fs::copy(project_root().join("sdk/js/wasmtpd-plugin.js"), src.join("wasmtpd-plugin.js"))?;
                run(Command::new(tool.join("node_modules/.bin/componentize-js"))
                    .arg(src.join("app.js"))
                    .arg("--wit")
                    .arg(&wit)
                    .args(["--world-name", "plugin", "--disable", "http", "fetch-event", "-o"])
                    .arg(&out))?;
            }
            Language::C => {
                let wit_bindgen = c_toolchain()?;
                let generated = work.join("gen");
                run(Command::new(wit_bindgen)
                    .arg("c")
                    .arg(&wit)
                    .args(["--world", "plugin", "--out-dir"])
                    .arg(&generated))?;
                let include = |c: &mut Command| {
                    c.arg("--target=wasm32-wasi")
                        .arg("-O2")
                        .arg("-I")
                        .arg(&generated)
                        .arg("-I")
                        .arg(project_root().join("sdk/c"));
                };
                let mut objects = vec![generated.join("plugin_component_type.o")];
                for (src, obj) in
                    [(dir.join("app.c"), work.join("app.o")), (generated.join("plugin.c"), work.join("plugin.o"))]
                {
                    let mut cc = Command::new("clang");
                    include(&mut cc);
                    run(cc.arg("-c").arg(&src).arg("-o").arg(&obj))?;
                    objects.push(obj);
                }
                // No -O at link time: clang would run wasm-opt on the component, which fails.
                run(Command::new("clang")
                    .args(["--target=wasm32-wasi", "-mexec-model=reactor"])
                    .arg(format!("-fuse-ld={}", wasm_component_ld()?.display()))
                    .args(["-Wl,--wasi-adapter=reactor", "-Wl,--strip-all", "-o"])
                    .arg(&out)
                    .args(&objects))?;
            }
        }
    }
    Ok(found.len())
}

fn find(dir: &Path, out: &mut Vec<(PathBuf, Language)>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() || path.file_name().is_some_and(|n| n == "target" || n == "src") {
            continue;
        }
        if path.join("world.wit").is_file() {
            if path.join("app.py").is_file() {
                out.push((path.clone(), Language::Python));
            } else if path.join("app.js").is_file() {
                out.push((path.clone(), Language::JavaScript));
            } else if path.join("app.c").is_file() {
                out.push((path.clone(), Language::C));
            }
        }
        find(&path, out)?;
    }
    Ok(())
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn up_to_date(out: &Path, inputs: &[PathBuf]) -> bool {
    let Some(built) = modified(out) else { return false };
    inputs.iter().all(|i| modified(i).is_some_and(|t| t <= built))
}

/// `target/toolchains/python`, with componentize-py installed into it.
fn python_toolchain() -> Result<PathBuf> {
    let dir = project_root().join("target/toolchains/python");
    if dir.join("bin/componentize-py").is_file() {
        return Ok(dir);
    }
    if !on_path("python3") {
        bail!("python3 is needed to install componentize-py");
    }
    eprintln!("xtask: installing {COMPONENTIZE_PY} from PyPI into {}", dir.display());
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&dir)
        .arg(COMPONENTIZE_PY))?;
    Ok(dir)
}

/// `target/toolchains/js`, with componentize-js installed into it.
fn js_toolchain() -> Result<PathBuf> {
    let dir = project_root().join("target/toolchains/js");
    if dir.join("node_modules/.bin/componentize-js").is_file() {
        return Ok(dir);
    }
    if !on_path("npm") {
        bail!("npm (Node.js) is needed to install componentize-js");
    }
    eprintln!("xtask: installing {COMPONENTIZE_JS} from npm into {}", dir.display());
    std::fs::create_dir_all(&dir)?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel", "error", "--prefix"])
        .arg(&dir)
        .arg(COMPONENTIZE_JS))?;
    Ok(dir)
}

/// clang and wasi-libc (from Debian), and `wit-bindgen` (from crates.io, into
/// `target/toolchains/cargo`); returns the path of `wit-bindgen`.
fn c_toolchain() -> Result<PathBuf> {
    if !on_path("clang") || !Path::new("/usr/lib/wasm32-wasi/libc.a").is_file() {
        eprintln!("xtask: installing Debian packages for C plugins: {}", C_PACKAGES.join(", "));
        crate::install::apt_install(C_PACKAGES)?;
    }
    let root = project_root().join("target/toolchains/cargo");
    let bin = root.join("bin/wit-bindgen");
    if !bin.is_file() {
        eprintln!("xtask: installing {WIT_BINDGEN_CLI} from crates.io into {}", root.display());
        run(crate::cargo().args(["install", "--locked", "--quiet", WIT_BINDGEN_CLI, "--root"]).arg(&root))?;
    }
    Ok(bin)
}

/// rustup's `wasm-component-ld`, which turns a wasm32-wasi module into a component.
fn wasm_component_ld() -> Result<PathBuf> {
    let sysroot =
        Command::new("rustc").args(["--print", "sysroot"]).output().context("running rustc --print sysroot")?;
    let sysroot = String::from_utf8(sysroot.stdout)?.trim().to_string();
    let host = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    let host = String::from_utf8(host.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV has no host line")?;
    let ld = Path::new(&sysroot).join("lib/rustlib").join(host).join("bin/wasm-component-ld");
    if !ld.is_file() {
        bail!("{} not found: it comes with rustup's Rust toolchain (1.82 or later)", ld.display());
    }
    Ok(ld)
}
