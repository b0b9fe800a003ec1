//! BDAT (RFC 3030): chunks agree with DATA on what reaches the hooks; a refused chunk leaves a
//! defined state; the framing holds whatever the client sends.

use wasmtpd_smtp::{Hook, Verdict};

use super::{Scripted, Setup, code_of, without_received};

/// A message as it is (BDAT has no dot-stuffing).
const RAW: &[u8] = b"Subject: test\r\n\r\nHello.\r\n.a line that starts with a dot\r\n";

fn bdat(chunk: &[u8], last: bool) -> Vec<u8> {
    let head = format!("BDAT {}{}\r\n", chunk.len(), if last { " LAST" } else { "" });
    [head.as_bytes(), chunk].concat()
}

async fn envelope(c: &mut super::Client) {
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
}

#[tokio::test(start_paused = true)]
async fn ehlo_advertises_chunking_and_binarymime() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.reply().await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.contains("250-CHUNKING\r\n") && ehlo.contains("BINARYMIME\r\n"), "{ehlo}");
}

#[tokio::test(start_paused = true)]
async fn chunks_of_every_size_make_the_same_message_with_datas_hooks() {
    for size in [1, 2, 3, 7, 16, RAW.len() - 1, RAW.len()] {
        let mut c = Setup::new(Scripted::accepting()).connect().await;
        envelope(&mut c).await;
        for piece in RAW.chunks(size) {
            c.send(&bdat(piece, false)).await;
            assert_eq!(c.reply().await, format!("250 2.0.0 {} octets received\r\n", piece.len()));
        }
        c.send(&bdat(b"", true)).await;
        assert_eq!(code_of(&c.reply().await), 250, "size {size}");
        let hooks: Vec<Hook> =
            c.hooks().into_iter().filter(|h| matches!(h, Hook::Data | Hook::DataPost | Hook::Queue)).collect();
        assert_eq!(hooks, [Hook::Data, Hook::DataPost, Hook::Queue], "once each, in DATA's order");
        let seen = c.calls_of(Hook::Queue)[0].message.clone().unwrap();
        assert_eq!(without_received(&seen), RAW, "size {size}");
    }
}

#[tokio::test(start_paused = true)]
async fn pipelined_bdat_chunks_and_commands_keep_their_framing() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.ehlo().await;
    // Commands inside a chunk are message text; the chunk size says where commands resume.
    let inside = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@x.test>\r\n";
    let all = [
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n".as_slice(),
        &bdat(inside, false),
        &bdat(b"tail\r\n", true),
        b"NOOP\r\n",
    ]
    .concat();
    c.send(&all).await;
    for code in [250, 250, 250, 250, 250] {
        assert_eq!(code_of(&c.reply().await), code);
    }
    assert_eq!(c.calls_of(Hook::Mail).len(), 1, "no MAIL from inside the chunk");
    let seen = c.calls_of(Hook::Queue)[0].message.clone().unwrap();
    assert_eq!(without_received(&seen), [inside.as_slice(), b"tail\r\n"].concat());
}

#[tokio::test(start_paused = true)]
async fn a_lying_chunk_size_only_moves_where_commands_resume() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    envelope(&mut c).await;
    // Says 3, sends more: the rest is read as commands (and is not one).
    c.send(b"BDAT 3 LAST\r\nabcQUIT-ISH\r\n").await;
    assert_eq!(code_of(&c.reply().await), 250, "the message is `abc`");
    assert_eq!(code_of(&c.reply().await), 500, "`QUIT-ISH` is an unrecognized command");
    // Says more than it sends: the server waits for the rest, then times out and closes.
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    envelope(&mut c).await;
    c.send(b"BDAT 1000 LAST\r\nshort\r\n").await;
    assert_eq!(code_of(&c.reply().await), 421);
    assert!(c.closed().await);
    assert!(!c.hooks().contains(&Hook::Queue));
}

#[tokio::test(start_paused = true)]
async fn a_chunk_cut_by_a_disconnect_drops_the_message() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    envelope(&mut c).await;
    c.send(&bdat(b"first\r\n", false)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    c.send(b"BDAT 100 LAST\r\nonly part").await;
    c.hang_up().await;
    assert!(c.task_ends().await);
    assert!(!c.hooks().contains(&Hook::Queue) && !c.hooks().contains(&Hook::DataPost));
    assert!(c.hooks().contains(&Hook::ResetTransaction), "the transaction ends");
}

#[tokio::test(start_paused = true)]
async fn past_the_size_limit() {
    let setup = || Setup::new(Scripted::accepting()).config(|c| c.limits.max_message_size = 100);
    // One chunk past the limit is not read: 552 and close.
    let mut c = setup().connect().await;
    envelope(&mut c).await;
    c.send(b"BDAT 101 LAST\r\n").await;
    assert_eq!(code_of(&c.reply().await), 552);
    assert!(c.closed().await);
    // Exactly the limit is fine.
    let mut c = setup().connect().await;
    envelope(&mut c).await;
    c.send(&bdat(&[b"x".repeat(98), b"\r\n".to_vec()].concat(), true)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    // Chunks that add up past it: 552, then the transaction's chunks are refused until RSET,
    // each read whole so the framing holds.
    let mut c = setup().connect().await;
    envelope(&mut c).await;
    let sixty = [b"y".repeat(58), b"\r\n".to_vec()].concat();
    c.send(&bdat(&sixty, false)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    c.send(&bdat(&sixty, false)).await;
    assert_eq!(c.reply().await, "552 5.3.4 Message too big\r\n");
    c.send(&bdat(b"RSET\r\n", true)).await;
    assert_eq!(c.reply().await, "503 5.5.1 An earlier BDAT chunk of this transaction was refused; send RSET\r\n");
    c.expect("DATA", 503).await;
    c.expect("MAIL FROM:<a@b.test>", 503).await;
    c.expect("RSET", 250).await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
    c.send(&bdat(b"ok\r\n", true)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(c.calls_of(Hook::Queue).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn datas_text_rules_hold_in_chunks() {
    for (chunks, code) in [
        (&[&b"a\nb\r\n"[..]][..], 550),
        (&[b"a\r", b"b\r\n"], 550),
        (&[b"a\0b\r\n"], 550),
        (&[b"a\r", b"\nb\r\n"], 250),
        (&[b"no final CRLF"], 250),
        (&[b"ends in CR\r"], 550),
    ] {
        let mut c = Setup::new(Scripted::accepting()).connect().await;
        envelope(&mut c).await;
        let mut last = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            c.send(&bdat(chunk, i + 1 == chunks.len())).await;
            last = code_of(&c.reply().await);
            if last != 250 {
                break;
            }
        }
        assert_eq!(last, code, "{chunks:?}");
        assert_eq!(c.hooks().contains(&Hook::Queue), code == 250);
    }
}

#[tokio::test(start_paused = true)]
async fn binarymime_needs_bdat_and_keeps_every_octet() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test> BODY=BINARYMIME", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
    c.expect("DATA", 503).await;
    let binary = b"\0\n\r\xff\r\n.\r\n".to_vec();
    c.send(&bdat(&binary, true)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    let seen = c.calls_of(Hook::Queue)[0].message.clone().unwrap();
    assert_eq!(without_received(&seen), binary.as_slice());
}

#[tokio::test(start_paused = true)]
async fn bdat_and_data_do_not_mix_in_a_transaction_but_do_on_a_connection() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    envelope(&mut c).await;
    c.send(&bdat(b"part\r\n", false)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    c.expect("DATA", 503).await;
    c.send(&bdat(b"", true)).await;
    assert_eq!(code_of(&c.reply().await), 250);
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
    c.expect("DATA", 354).await;
    c.send(super::MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(c.calls_of(Hook::Queue).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_first_chunk_and_bdat_without_an_envelope() {
    let mut c = Setup::new(Scripted::accepting().answer(Hook::Data, Verdict::Deny)).connect().await;
    c.ehlo().await;
    // No transaction: the chunk is read and dropped, then 503.
    c.send(&bdat(b"RSET\r\n", false)).await;
    assert_eq!(code_of(&c.reply().await), 503);
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
    c.send(&bdat(b"x\r\n", false)).await;
    assert_eq!(code_of(&c.reply().await), 554, "the data hook's refusal");
    c.send(&bdat(b"y\r\n", true)).await;
    assert_eq!(code_of(&c.reply().await), 503);
    assert_eq!(c.calls_of(Hook::Data).len(), 1);
    assert!(c.still_open().await);
}
