//! A private rspamd for the tests (Debian's rspamd, which `cargo xtask test` installs without
//! starting it): in the foreground (`-f`), one normal worker on 127.0.0.1 and a port of its
//! own, with a configuration of its own in a directory of its own (`-c`): no modules (so no
//! network checks: its resolver points at a closed loopback port), a short TLD list (the full
//! one takes a minute to compile on a busy machine), the actions' thresholds, and three Lua
//! rules for the tests' tokens. Stopped by its PID on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long rspamd may take to listen after it is started.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Scores 20: `reject` (at 15).
pub const TEST_SPAM: &str = "WASMTPD-TEST-SPAM-5e1d";
/// Scores 7: `add header` (at 6), and asks (through the milter block) for `X-Wasmtpd-Milter:
/// added` and `X-Remove-Me` removed.
pub const TEST_TAG: &str = "WASMTPD-TEST-TAG-91b2";
/// Scores 11: `rewrite subject` (at 10).
pub const TEST_SUBJECT: &str = "WASMTPD-TEST-SUBJ-3f7e";
/// Scores 4.5: `greylist` (at 4).
pub const TEST_GREY: &str = "WASMTPD-TEST-GREY-8a21";

const RULES: &str = r#"
local function has(task, token)
  return tostring(task:get_content()):find(token, 1, true) ~= nil
end
rspamd_config:register_symbol({ name = 'WASMTPD_TEST_REJECT', score = 20.0,
  callback = function(task) return has(task, 'WASMTPD-TEST-SPAM-5e1d') end })
rspamd_config:register_symbol({ name = 'WASMTPD_TEST_SUBJECT', score = 11.0,
  callback = function(task) return has(task, 'WASMTPD-TEST-SUBJ-3f7e') end })
rspamd_config:register_symbol({ name = 'WASMTPD_TEST_GREY', score = 4.5,
  callback = function(task) return has(task, 'WASMTPD-TEST-GREY-8a21') end })
rspamd_config:register_symbol({ name = 'WASMTPD_TEST_HEADER', score = 7.0,
  callback = function(task)
    if not has(task, 'WASMTPD-TEST-TAG-91b2') then return false end
    task:set_milter_reply({ add_headers = { ['X-Wasmtpd-Milter'] = 'added' },
      remove_headers = { ['X-Remove-Me'] = 0 } })
    return true
  end })
"#;

/// A running rspamd.
pub struct Rspamd {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Rspamd {
    /// Starts one on a free loopback port.
    pub fn start() -> Rspamd {
        for _ in 0..3 {
            let mut rspamd = Rspamd::stopped(crate::redis::free_port());
            if rspamd.run() {
                return rspamd;
            }
        }
        panic!("could not start rspamd on a free loopback port");
    }

    fn stopped(port: u16) -> Rspamd {
        let dir = crate::daemon::scratch_dir("rspamd");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        std::fs::write(dir.join("tests.lua"), RULES).unwrap();
        std::fs::write(dir.join("tld.dat"), "com\nnet\norg\ntest\nexample\n").unwrap();
        let conf = format!(
            "options {{\n  pidfile = \"{d}/rspamd.pid\";\n  dns {{ nameserver = [\"127.0.0.1:1\"]; timeout = 100ms; retransmits = 1; }}\n  \
             filters = \"\";\n  hs_cache_dir = \"{d}/\";\n  cache_file = \"{d}/symbols.cache\";\n  tempdir = \"{d}\";\n  \
             url_tld = \"{d}/tld.dat\";\n  control_socket = \"{d}/rspamd.sock mode=0600\";\n}}\n\
             logging {{ type = \"file\"; filename = \"{d}/rspamd.log\"; level = \"info\"; }}\n\
             actions {{ reject = 15; \"rewrite subject\" = 10; \"add header\" = 6; greylist = 4; }}\n\
             lua = \"{d}/tests.lua\";\n\
             worker \"normal\" {{ bind_socket = \"127.0.0.1:{port}\"; count = 1; }}\n"
        );
        std::fs::write(dir.join("rspamd.conf"), conf).unwrap();
        Rspamd { child: None, port, dir }
    }

    fn binary() -> &'static str {
        let path = "/usr/bin/rspamd";
        if !std::path::Path::new(path).is_file() {
            panic!("rspamd is not installed: `cargo xtask test` installs it (Debian package rspamd)");
        }
        path
    }

    fn run(&mut self) -> bool {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = Command::new(Self::binary());
        cmd.arg("-f").arg("-c").arg(self.dir.join("rspamd.conf"));
        if root {
            // Its workers would otherwise refuse to run as root.
            cmd.args(["-i", "-u", "root", "-g", "root"]);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting rspamd");
        self.child = Some(child);
        if crate::daemon::wait_listening(&mut self.child, self.port, START_LIMIT) {
            return true;
        }
        self.stop();
        false
    }

    /// `NAME tcp 127.0.0.1:PORT` for `config/upstreams`, with `settings` after it.
    pub fn upstream_line(&self, name: &str, settings: &str) -> String {
        format!("{name} tcp 127.0.0.1:{} {settings}\n", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rspamd.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM by its PID, so it ends its workers; SIGKILL after 5 s) and waits.
    pub fn stop(&mut self) {
        crate::daemon::terminate(self.child.take());
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
