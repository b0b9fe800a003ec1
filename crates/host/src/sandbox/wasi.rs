//! What a plugin instance sees of WASI: nothing (no preopened directories, no environment, no
//! arguments, no network, stdin closed, stdout discarded), plus what was granted (its `/tmp`
//! with `wasi-temp`, the `grant-dir` directories), in none of which it can make a link; and its
//! stderr, kept (bounded) for the log.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::{Linker, LinkerInstance, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, PathFlags};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::SandboxSettings;

/// Most bytes of a plugin's stderr kept for the log, per instance: room for a Rust panic
/// message or a Python traceback, while a plugin that floods stderr holds no more than this.
pub const STDERR_LIMIT: usize = 16 * 1024;

/// The WASI context of an instance: nothing, plus what was granted (`temp_dir` as `/tmp`).
pub fn wasi_ctx(settings: &SandboxSettings, temp_dir: Option<&Path>, stderr: StderrLog) -> anyhow::Result<WasiCtx> {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr);
    if let Some(dir) = temp_dir {
        b.preopened_dir(dir, "/tmp", FsPerms::ReadWrite)?;
    }
    for g in &settings.grants {
        let perms = if g.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        b.preopened_dir(&g.host, &g.guest, perms)
            .map_err(|e| anyhow::anyhow!("granting {} as {}: {e}", g.host.display(), g.guest))?;
    }
    Ok(b.build())
}

/// The WASI filesystem interface, as wasmtime-wasi 48 links it (`wasi:filesystem@0.2.12`;
/// guests importing any 0.2.x are served by it).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Refuses links in every directory a plugin can reach (its `/tmp` and its grants): creating
/// a symlink or a hard link fails with `not-permitted`. A plugin cannot follow a symlink out of
/// its directory (cap-std resolves beneath it), but the MDA, IMAP server or backup job that
/// later reads a granted maildir would; a hard link would make a file of a read-only grant
/// (or of another grant) writable through a read-write one. Plugins need neither.
///
/// Replaces wasmtime-wasi's `[method]descriptor.symlink-at` and `link-at`; called after
/// `add_to_linker_async`. If wasmtime-wasi names the interface otherwise (another version),
/// this fails at start-up instead of silently adding functions nobody imports.
pub fn refuse_links<T: 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    // Without shadowing, defining a name that exists fails: that is how we know it exists.
    if refuse_symlinks(&mut linker.instance(WASI_FILESYSTEM_TYPES)?).is_ok() {
        anyhow::bail!(
            "{WASI_FILESYSTEM_TYPES} is not what wasmtime-wasi links: update sandbox::wasi::WASI_FILESYSTEM_TYPES"
        );
    }
    linker.allow_shadowing(true);
    let mut types = linker.instance(WASI_FILESYSTEM_TYPES)?;
    refuse_symlinks(&mut types)?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |_, _: (Resource<Descriptor>, PathFlags, String, Resource<Descriptor>, String)| {
            Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn refuse_symlinks<T: 'static>(types: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    types.func_wrap_async("[method]descriptor.symlink-at", |_, _: (Resource<Descriptor>, String, String)| {
        Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
    })
}

/// A plugin's stderr: kept in memory up to [`STDERR_LIMIT`] bytes (the rest is dropped, never
/// an error), and written to the log when the instance ends.
#[derive(Clone, Default)]
pub struct StderrLog(Arc<Mutex<Vec<u8>>>);

impl StderrLog {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl IsTerminal for StderrLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Written synchronously, so that what a plugin printed just before it trapped (a Rust
    /// panic message, a Python traceback) is there when the fault is logged.
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

impl StderrLog {
    fn keep(&self, buf: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = STDERR_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
    }
}

impl wasmtime_wasi::p2::OutputStream for StderrLog {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        // Always room (64 KiB, a write's worth of stdio buffer): what does not fit is dropped,
        // never an error the plugin could trap on.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for StderrLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrLog {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
