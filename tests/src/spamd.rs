//! A private SpamAssassin `spamd` for the tests (Debian's spamd, which `cargo xtask test`
//! installs without starting it): on 127.0.0.1 and a port of its own, in the foreground (no
//! `--daemonize`), with a pidfile, its log on stderr into a file, and rules of the test's own
//! only (`-C` and `--siteconfigpath` in its directory; `-L`, no network tests; no user
//! preferences): one rule scoring [`TEST_SPAM`] 20 against a threshold of 5. Stopped by its PID
//! on drop (its children, the preforked scanners, go with it: spamd ends them on SIGTERM).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long spamd may take to listen after it is started (Perl compiles its rules first).
const START_LIMIT: Duration = Duration::from_secs(90);

/// A token the test rule scores 20 (the threshold is 5).
pub const TEST_SPAM: &str = "WASMTPD-TEST-SPAM-5e1d";
/// The test rule's name, as `tests=` shows it.
pub const TEST_RULE: &str = "WASMTPD_TEST_TOKEN";

const RULES: &str = "loadplugin Mail::SpamAssassin::Plugin::Check\n";
const LOCAL_CF: &str = "body WASMTPD_TEST_TOKEN /WASMTPD-TEST-SPAM-5e1d/\n\
score WASMTPD_TEST_TOKEN 20.0\n\
describe WASMTPD_TEST_TOKEN The tests' own spam token\n\
required_score 5.0\n\
report_safe 0\n\
use_bayes 0\n\
bayes_auto_learn 0\n\
clear_headers\n\
add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_ autolearn=_AUTOLEARN_ version=_VERSION_\n\
add_header spam Flag _YESNOCAPS_\n\
add_header all Level _STARS(*)_\n";

/// A running spamd.
pub struct Spamd {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Spamd {
    /// Starts one on a free loopback port.
    pub fn start() -> Spamd {
        for _ in 0..3 {
            let mut spamd = Spamd::stopped(crate::redis::free_port());
            if spamd.run() {
                return spamd;
            }
        }
        panic!("could not start spamd on a free loopback port");
    }

    fn stopped(port: u16) -> Spamd {
        let dir = crate::daemon::scratch_dir("spamd");
        for sub in ["rules", "site"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("rules/v320.pre"), RULES).unwrap();
        std::fs::write(dir.join("rules/50_wasmtpd.cf"), LOCAL_CF).unwrap();
        std::fs::write(dir.join("site/local.cf"), "").unwrap();
        // spamd run as root drops to nobody, who must read its rules.
        let _ = Command::new("chmod").arg("-R").arg("a+rX").arg(&dir).status();
        Spamd { child: None, port, dir }
    }

    fn binary() -> &'static str {
        let path = "/usr/sbin/spamd";
        if !std::path::Path::new(path).is_file() {
            panic!("spamd is not installed: `cargo xtask test` installs it (Debian package spamd)");
        }
        path
    }

    fn run(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.join("spamd.log")).unwrap();
        let child = Command::new(Self::binary())
            .arg("-C")
            .arg(self.dir.join("rules"))
            .arg("--siteconfigpath")
            .arg(self.dir.join("site"))
            .args(["-L", "-x", "--max-children", "2", "--min-children", "1"])
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg("--pidfile")
            .arg(self.dir.join("spamd.pid"))
            .args(["-s", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting spamd");
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
        std::fs::read_to_string(self.dir.join("spamd.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM by its PID, so it ends its children; SIGKILL after 5 s) and waits.
    pub fn stop(&mut self) {
        crate::daemon::terminate(self.child.take());
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
