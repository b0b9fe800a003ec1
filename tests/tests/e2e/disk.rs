//! A full disk: the client gets a temporary failure (452), nothing half-written is visible as a
//! message, and the server carries on. The state directory is a 4 MiB tmpfs (needs root, as CI
//! has; elsewhere the test says it cannot run and passes vacuously only when not root).

use std::process::Command;

use wasmtpd_tests::{TempDir, TestServer};

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn message(id: usize, kib: usize) -> Vec<u8> {
    let line = format!("{}\r\n", "x".repeat(62));
    let mut m = format!("Subject: m{id}\r\n\r\n").into_bytes();
    m.extend(line.repeat(kib * 1024 / 64).into_bytes());
    m.extend(format!("END m{id}").into_bytes());
    m
}

#[test]
fn a_full_disk_gives_452_and_no_corruption() {
    if !is_root() {
        eprintln!("a_full_disk_gives_452_and_no_corruption: needs root to mount a tmpfs; not run");
        return;
    }
    let dir = TempDir::new("fulldisk");
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&state).status().unwrap();
    assert!(mounted.success(), "mount tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    {
        let s = TestServer::start_in(
            dir,
            &[
                ("me", "mx.test"),
                ("rcpthosts", "example.com\n"),
                ("plugins", "rcpt_ok\nqueue/maildir /maildir\n"),
                ("sandbox", "queue/maildir grant-dir maildir /maildir rw\n"),
            ],
        );
        let mut c = s.greeted();
        let mut codes = Vec::new();
        for id in 0..6 {
            c.envelope("a@remote.test", &["b@example.com"]);
            let r = c.data(&message(id, 900));
            codes.push(r.code);
            if r.code != 250 {
                assert_eq!(r.code, 452, "message {id}: {r:?}");
            }
            c.cmd("RSET", 250);
        }
        assert!(codes.contains(&250) && codes.contains(&452), "{codes:?}");
        // A message larger than what is left fails while it is spooled: 452 too.
        c.envelope("a@remote.test", &["b@example.com"]);
        let r = c.data(&message(99, 3000));
        assert_eq!((r.code, r.text().as_str()), (452, "4.3.1 Insufficient system storage, try again later"));
        // Whatever was delivered is whole; nothing is left half-written.
        let delivered = s.delivered();
        assert_eq!(delivered.len(), codes.iter().filter(|c| **c == 250).count());
        for m in &delivered {
            let m = String::from_utf8_lossy(m);
            let id = m.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap();
            assert!(m.ends_with(&format!("END {id}\r\n")), "{id} is not whole");
        }
        let tmp = std::fs::read_dir(state.join("maildir/tmp")).unwrap().count();
        assert_eq!(tmp, 0, "no half-written file left in tmp/");
        assert_eq!(s.spool_files(), 0);
        // And the server still answers.
        c.cmd("NOOP", 250);
        assert!(s.log().contains("delivery to /maildir failed"), "the plugin logged the failure");
    }
}
