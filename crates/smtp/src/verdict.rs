//! The one table that turns a hook's verdict into a reply: `(hook, verdict) → Decision`.
//!
//! Every reply that follows a hook is made here, and so is everything the engine does because
//! of a verdict: whether the command's own action happens, the transaction ends, the
//! connection closes, a failed AUTH counts against the client, and what a `*_pre` hook's OK
//! means ([`rewritten_path`]). The server carries a [`Decision`] out; it never looks at a
//! verdict itself.
//!
//! The codes and default texts are qpsmtpd 1.00's (its `Qpsmtpd::SMTP` module), with RFC 3463
//! enhanced codes added. A verdict a hook does not allow falls through to the
//! hook's default, as in qpsmtpd (so for `queue` anything but OK/DENY/DENYSOFT/DONE is the soft
//! failure 451). Differences from qpsmtpd, made because plugins here cannot write to the socket:
//! - DONE means "the plugin has handled it": the engine skips its own action (the recipient is
//!   not added, the message is not queued, ...) but still sends the hook's success reply, with
//!   the plugin's message if it gave one, so the client is never left waiting.
//! - HELO/EHLO denied without a message get a default text (qpsmtpd sent nothing at all).
//! - HELO/EHLO answered DONE: the plugin's message is the first line of the 250 at most; the
//!   EHLO keywords that follow are always the server's (see `hello_reply`).
//! - A message from a plugin is cleaned of control characters by [`Reply`]; the code always
//!   comes from this table, never from the plugin.

use std::net::IpAddr;

use crate::address::Address;
use crate::hook::{Hook, HookArgs, HookResult, Verdict};
use crate::reply::{EnhancedCode, Reply};

/// What the engine does after a hook: the reply, and whether to perform the command's own
/// action (`accept`), discard the transaction (`reset`), and close the connection (`close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reply: Reply,
    pub accept: bool,
    pub reset: bool,
    pub close: bool,
    /// The auth hooks checked the credentials and found them wrong (`535`): the attempt
    /// counts against the client's address, and the reply is sent late.
    pub bad_credentials: bool,
}

/// The facts default reply texts are made of.
#[derive(Debug, Clone)]
pub struct ReplyContext<'a> {
    /// Our host name (`config/me`).
    pub me: &'a str,
    /// `config/smtpgreeting`, if set.
    pub greeting: Option<&'a str>,
    pub remote_ip: IpAddr,
    /// EHLO keywords (for `ehlo`).
    pub capabilities: &'a [String],
}

const fn enh(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode(class, subject, detail))
}

/// The reply for `hook`, run with `args`, when its chain answered `result`.
pub fn decide(hook: Hook, args: &HookArgs<'_>, result: &HookResult, ctx: &ReplyContext<'_>) -> Decision {
    use Verdict::*;
    let v = result.verdict;
    // Builds a reply from the plugin's text and enhanced code, or the defaults given.
    let r = |code: u16, e: Option<EnhancedCode>, default: &str| {
        let text = result.message.as_deref().filter(|m| !m.trim().is_empty()).unwrap_or(default);
        Reply::new(code, result.enhanced.or(e), text)
    };
    let decision = Decision::new;
    let accept = |reply: Reply| decision(reply, true, false, false);
    let refuse = |reply: Reply| decision(reply, false, false, false);
    let reset = |reply: Reply| decision(reply, false, true, false);
    let close = |reply: Reply| decision(reply, false, true, true);
    let done = |reply: Reply| decision(reply, false, false, false);
    let bad_credentials = |d: Decision| Decision { bad_credentials: true, ..d };
    let addr = &path_text(args);
    // A temporary failure the plugin marks as network or routing (X.4.x: a downstream that
    // refused, timed out or did not speak SMTP) is 451, "aborted: error in processing",
    // rather than the hook's 450 or 452 (which say "mailbox busy", "no storage").
    let routing = result.enhanced.is_some_and(|e| e.1 == 4);
    let soft = |default: u16| if routing { 451 } else { default };

    if result.fault && !hook.result_is_ignored() {
        return fault_decision(hook, args, ctx);
    }

    let d = match hook {
        Hook::Connect => {
            let greeting = greeting(ctx);
            match v {
                Deny | DenyDisconnect => close(r(550, None, "Connection from you denied, bye bye.")),
                DenySoft | DenySoftDisconnect => {
                    close(r(450, None, "Connection from you temporarily denied, bye bye."))
                }
                Done => done(r(220, None, &greeting)),
                _ => accept(Reply::new(220, None, greeting)),
            }
            .without_enhanced_reply()
        }
        // qpsmtpd's forkserver: a refusal before the greeting is 550 or 451, and close. Any
        // other verdict goes on to the greeting (the reply here is never sent).
        Hook::PreConnection => match v {
            Deny | DenyDisconnect => close(r(550, None, "Sorry, service not available for you")),
            DenySoft | DenySoftDisconnect => close(r(451, None, "Sorry, try again later")),
            _ => accept(Reply::new(220, None, greeting(ctx))),
        }
        .without_enhanced_reply(),
        Hook::Helo | Hook::Ehlo => {
            let denied = format!("{} denied", hook.name().to_ascii_uppercase());
            match v {
                Deny => refuse(r(550, None, &denied)),
                DenySoft => refuse(r(450, None, &denied)),
                DenyDisconnect => close(r(550, None, &denied)),
                DenySoftDisconnect => close(r(450, None, &denied)),
                // The plugin may word the first line; what follows it is the server's.
                Done => done(hello_reply(hook, args, ctx, result.message.as_deref())),
                _ => accept(hello_reply(hook, args, ctx, None)),
            }
            .without_enhanced_reply()
        }
        Hook::Mail => match v {
            Deny => refuse(r(550, enh(5, 7, 1), &format!("{addr}, denied"))),
            DenySoft => refuse(r(450, enh(4, 7, 1), &format!("{addr}, temporarily denied"))),
            DenyDisconnect => close(r(550, enh(5, 7, 1), &format!("{addr}, denied"))),
            DenySoftDisconnect => close(r(421, enh(4, 7, 1), &format!("{addr}, temporarily denied"))),
            Done => done(r(250, enh(2, 1, 0), &format!("{addr}, sender OK"))),
            _ => accept(r(250, enh(2, 1, 0), &format!("{addr}, sender OK"))),
        },
        Hook::Rcpt => match v {
            Ok => accept(r(250, enh(2, 1, 5), &format!("{addr}, recipient ok"))),
            Deny => refuse(r(550, enh(5, 7, 1), "relaying denied")),
            DenySoft => refuse(r(soft(450), enh(4, 7, 1), "relaying denied")),
            DenyDisconnect => close(r(550, enh(5, 7, 1), "delivery denied")),
            DenySoftDisconnect => close(r(421, enh(4, 7, 1), "relaying denied")),
            Done => done(r(250, enh(2, 1, 5), &format!("{addr}, recipient ok"))),
            Declined => refuse(r(450, enh(4, 7, 1), "No plugin decided if relaying is allowed")),
        },
        Hook::Data => match v {
            Deny => reset(r(554, enh(5, 7, 1), "Message denied")),
            DenySoft => reset(r(451, enh(4, 7, 1), "Message denied temporarily")),
            DenyDisconnect => close(r(554, enh(5, 7, 1), "Message denied")),
            DenySoftDisconnect => close(r(451, enh(4, 7, 1), "Message denied temporarily")),
            // DONE in qpsmtpd hands the DATA phase to the plugin; a sandboxed plugin cannot
            // read the socket, so DONE is not allowed here and falls to the default.
            _ => accept(Reply::new(354, None, "go ahead, end with <CRLF>.<CRLF>")),
        },
        Hook::DataPost => match v {
            Deny => reset(r(552, enh(5, 7, 1), "Message denied")),
            DenySoft => reset(r(soft(452), enh(4, 7, 1), "Message denied temporarily")),
            DenyDisconnect => close(r(552, enh(5, 7, 1), "Message denied")),
            DenySoftDisconnect => close(r(452, enh(4, 7, 1), "Message denied temporarily")),
            // Not queued; the plugin took responsibility for the message.
            Done => reset(r(250, enh(2, 0, 0), "Queued")),
            // Go on to the queue hook; this reply is only a placeholder.
            _ => accept(Reply::new(250, enh(2, 0, 0), "data_post passed")),
        },
        Hook::Queue => match v {
            Ok | Done => reset(r(250, enh(2, 0, 0), "Queued")),
            Deny => reset(r(552, enh(5, 7, 1), "Message denied")),
            DenySoft => reset(r(soft(452), enh(4, 7, 1), "Message denied temporarily")),
            _ => reset(r(451, enh(4, 3, 0), "Queuing declined or disabled; try again later")),
        },
        Hook::Vrfy => match v {
            Ok | Done => done(r(250, enh(2, 1, 5), "User OK")),
            Deny => reset(r(554, enh(5, 7, 1), "Access Denied")),
            _ => done(Reply::new(252, enh(2, 5, 0), "Just try sending a mail and we'll see how it turns out ...")),
        },
        Hook::Noop => match v {
            Deny => refuse(r(500, enh(5, 5, 1), "Stop wasting my time.")),
            DenyDisconnect => close(r(500, enh(5, 5, 1), "Stop wasting my time.")),
            Done => done(r(250, enh(2, 0, 0), "OK")),
            _ => done(Reply::new(250, enh(2, 0, 0), "OK")),
        },
        Hook::Help => match v {
            Deny => refuse(r(500, enh(5, 5, 1), "Syntax error, command not recognized")),
            _ => done(match &result.message {
                Some(m) if !m.trim().is_empty() => Reply::new(214, result.enhanced.or(enh(2, 0, 0)), m),
                _ => Reply::multiline(
                    214,
                    enh(2, 0, 0),
                    [
                        "This is wasmtpd, an SMTP server whose plugins are WebAssembly components.",
                        "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
                        "End of HELP info",
                    ],
                ),
            }),
        },
        Hook::Quit => decision(
            match v {
                Done => r(221, enh(2, 0, 0), &format!("{} closing connection. Have a wonderful day.", ctx.me)),
                _ => Reply::new(221, enh(2, 0, 0), format!("{} closing connection. Have a wonderful day.", ctx.me)),
            },
            true,
            true,
            true,
        ),
        Hook::UnrecognizedCommand => match v {
            Deny => refuse(r(500, enh(5, 5, 1), "Unrecognized command")),
            DenyDisconnect => close(r(521, enh(5, 5, 1), "Unrecognized command")),
            Done => done(r(250, enh(2, 0, 0), "OK")),
            _ => refuse(Reply::new(500, enh(5, 5, 1), "Unrecognized command")),
        },
        // RFC 4954 section 6: 235 on success, 535 5.7.8 for bad credentials, 454 4.7.0 for a
        // temporary failure. Nobody deciding is a failure (qpsmtpd), and so is DONE.
        Hook::Auth | Hook::AuthPlain | Hook::AuthLogin => match v {
            Ok => accept(r(235, enh(2, 7, 0), "Authentication successful")),
            Deny => bad_credentials(refuse(r(535, enh(5, 7, 8), "Authentication credentials invalid"))),
            DenySoft => refuse(r(454, enh(4, 7, 0), "Temporary authentication failure")),
            DenyDisconnect => bad_credentials(close(r(535, enh(5, 7, 8), "Authentication credentials invalid"))),
            DenySoftDisconnect => close(r(421, enh(4, 7, 0), "Temporary authentication failure")),
            Declined | Done => {
                bad_credentials(refuse(Reply::new(535, enh(5, 7, 8), "Authentication credentials invalid")))
            }
        },
        Hook::Disconnect | Hook::ResetTransaction | Hook::Deny | Hook::MailPre | Hook::RcptPre => {
            // Their results are ignored, or (the `*_pre` hooks) say how to rewrite an address
            // (see `rewritten_path`); no reply comes from here.
            accept(Reply::new(250, None, ""))
        }
    };
    // A 421 always closes the connection (RFC 5321 3.8).
    if d.reply.code() == 421 { Decision { close: true, reset: true, ..d } } else { d }
}

/// What a `mail_pre` or `rcpt_pre` answer means: OK with a message asks for the command to go
/// on with that address instead; anything else (or a fault) leaves the command refused.
pub fn rewritten_path(result: &HookResult) -> Option<&str> {
    match (result.verdict, &result.message) {
        (Verdict::Ok, Some(path)) if !result.fault => Some(path),
        _ => None,
    }
}

/// A plugin fault: a temporary failure for this command only. Connection-phase hooks close
/// the connection with 421 (there is no transaction to fail); a fault while the message is
/// being accepted ends the transaction; QUIT still says goodbye.
fn fault_decision(hook: Hook, args: &HookArgs<'_>, ctx: &ReplyContext<'_>) -> Decision {
    let text = "Temporary failure in plugin processing, try again later";
    let decision = |reply: Reply, reset: bool, close: bool| Decision::new(reply, false, reset, close);
    match hook {
        Hook::PreConnection | Hook::Connect | Hook::Helo | Hook::Ehlo => {
            decision(Reply::new(421, enh(4, 3, 0), text), true, true)
        }
        Hook::Data | Hook::DataPost | Hook::Queue => decision(Reply::new(451, enh(4, 3, 0), text), true, false),
        Hook::Quit => decide(hook, args, &HookResult::declined(), ctx),
        Hook::Auth | Hook::AuthPlain | Hook::AuthLogin => {
            decision(Reply::new(454, enh(4, 7, 0), "Temporary authentication failure"), false, false)
        }
        _ => decision(Reply::new(451, enh(4, 3, 0), text), false, false),
    }
}

/// `<address>` of a MAIL or RCPT (`<>` for the null sender), for the reply texts.
fn path_text(args: &HookArgs<'_>) -> String {
    let show = |a: Option<&Address>| a.map_or_else(|| "<>".to_string(), |a| format!("<{a}>"));
    match args {
        HookArgs::Mail { from, .. } => show(*from),
        HookArgs::Rcpt { to, .. } => show(Some(to)),
        _ => String::new(),
    }
}

impl Decision {
    /// A decision that counts no AUTH failure.
    fn new(reply: Reply, accept: bool, reset: bool, close: bool) -> Decision {
        Decision { reply, accept, reset, close, bad_credentials: false }
    }

    /// The greeting and the HELO/EHLO replies carry no enhanced code (RFC 2034 section 3).
    fn without_enhanced_reply(self) -> Self {
        Decision { reply: self.reply.without_enhanced(), ..self }
    }
}

fn greeting(ctx: &ReplyContext<'_>) -> String {
    match ctx.greeting {
        Some(g) if g.contains("ESMTP") => g.to_string(),
        Some(g) => format!("{g} ESMTP"),
        None => format!("{} ESMTP wasmtpd ready", ctx.me),
    }
}

/// The 250 reply to HELO/EHLO. The EHLO keywords always come from the server
/// (`ctx.capabilities`): only the server knows what it implements, and a client acts on every
/// keyword it reads (a plugin advertising AUTH, CHUNKING or XCLIENT would invite commands the
/// server refuses, or worse). A plugin's `text` (DONE) can only replace the first line: its
/// first line is taken, the rest dropped.
fn hello_reply(hook: Hook, args: &HookArgs<'_>, ctx: &ReplyContext<'_>, text: Option<&str>) -> Reply {
    let host = match args {
        HookArgs::Hello { host } => host,
        _ => "",
    };
    let first = match text.and_then(|t| t.split('\n').next()).filter(|l| !l.trim().is_empty()) {
        Some(line) => line.to_string(),
        None => format!("{} Hi {} [{}]", ctx.me, host, ctx.remote_ip),
    };
    if hook == Hook::Helo {
        return Reply::new(250, None, first);
    }
    Reply::multiline(250, None, std::iter::once(first).chain(ctx.capabilities.iter().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MailParams;
    use Verdict::*;

    const ALL: [Verdict; 7] = [Ok, Deny, DenySoft, DenyDisconnect, DenySoftDisconnect, Declined, Done];

    fn ctx() -> ReplyContext<'static> {
        static CAPS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        ReplyContext {
            me: "mx.example",
            greeting: None,
            remote_ip: "192.0.2.7".parse().unwrap(),
            capabilities: CAPS.get_or_init(|| vec!["PIPELINING".into(), "SIZE 100".into()]),
        }
    }

    /// The arguments `hook` runs with: HELO `client.example`, the address `<a@b.example>`.
    fn args(hook: Hook) -> HookArgs<'static> {
        static ADDRESS: std::sync::OnceLock<Address> = std::sync::OnceLock::new();
        static PARAMS: std::sync::OnceLock<MailParams> = std::sync::OnceLock::new();
        let address = ADDRESS.get_or_init(|| Address::new("a", "b.example").unwrap());
        match hook {
            Hook::Helo | Hook::Ehlo => HookArgs::Hello { host: "client.example" },
            Hook::Mail => HookArgs::Mail { from: Some(address), params: PARAMS.get_or_init(MailParams::default) },
            Hook::Rcpt => HookArgs::Rcpt { to: address, params: &[] },
            _ => HookArgs::None,
        }
    }

    fn decide(hook: Hook, result: &HookResult, ctx: &ReplyContext<'_>) -> Decision {
        super::decide(hook, &args(hook), result, ctx)
    }

    fn d(hook: Hook, v: Verdict) -> Decision {
        decide(hook, &HookResult::new(v), &ctx())
    }

    /// (hook, verdict) → (code, close) for every pair, qpsmtpd's table.
    #[test]
    fn the_table() {
        let expected: &[(Hook, [(u16, bool); 7])] = &[
            // Ok, Deny, DenySoft, DenyDisconnect, DenySoftDisconnect, Declined, Done
            (
                Hook::Connect,
                [(220, false), (550, true), (450, true), (550, true), (450, true), (220, false), (220, false)],
            ),
            (
                Hook::PreConnection,
                [(220, false), (550, true), (451, true), (550, true), (451, true), (220, false), (220, false)],
            ),
            (
                Hook::Helo,
                [(250, false), (550, false), (450, false), (550, true), (450, true), (250, false), (250, false)],
            ),
            (
                Hook::Ehlo,
                [(250, false), (550, false), (450, false), (550, true), (450, true), (250, false), (250, false)],
            ),
            (
                Hook::Mail,
                [(250, false), (550, false), (450, false), (550, true), (421, true), (250, false), (250, false)],
            ),
            (
                Hook::Rcpt,
                [(250, false), (550, false), (450, false), (550, true), (421, true), (450, false), (250, false)],
            ),
            (
                Hook::Data,
                [(354, false), (554, false), (451, false), (554, true), (451, true), (354, false), (354, false)],
            ),
            (
                Hook::DataPost,
                [(250, false), (552, false), (452, false), (552, true), (452, true), (250, false), (250, false)],
            ),
            (
                Hook::Queue,
                [(250, false), (552, false), (452, false), (451, false), (451, false), (451, false), (250, false)],
            ),
            (
                Hook::Vrfy,
                [(250, false), (554, false), (252, false), (252, false), (252, false), (252, false), (250, false)],
            ),
            (
                Hook::Noop,
                [(250, false), (500, false), (250, false), (500, true), (250, false), (250, false), (250, false)],
            ),
            (
                Hook::Help,
                [(214, false), (500, false), (214, false), (214, false), (214, false), (214, false), (214, false)],
            ),
            (Hook::Quit, [(221, true), (221, true), (221, true), (221, true), (221, true), (221, true), (221, true)]),
            (
                Hook::UnrecognizedCommand,
                [(500, false), (500, false), (500, false), (521, true), (500, false), (500, false), (250, false)],
            ),
            (
                Hook::Auth,
                [(235, false), (535, false), (454, false), (535, true), (421, true), (535, false), (535, false)],
            ),
            (
                Hook::AuthPlain,
                [(235, false), (535, false), (454, false), (535, true), (421, true), (535, false), (535, false)],
            ),
        ];
        for (hook, row) in expected {
            for (v, (code, close)) in ALL.iter().zip(row) {
                let got = d(*hook, *v);
                assert_eq!((got.reply.code(), got.close), (*code, *close), "{} {}", hook.name(), v.name());
            }
        }
    }

    #[test]
    fn only_the_success_path_accepts() {
        assert!(d(Hook::Rcpt, Ok).accept);
        assert!(!d(Hook::Rcpt, Declined).accept);
        assert!(!d(Hook::Rcpt, Done).accept, "DONE: recipient not added by the engine");
        assert!(d(Hook::Mail, Declined).accept);
        assert!(d(Hook::Data, Declined).accept);
        assert!(!d(Hook::Queue, Declined).accept);
        assert!(d(Hook::Data, Deny).reset);
    }

    #[test]
    fn default_texts_and_enhanced_codes() {
        assert_eq!(d(Hook::Rcpt, Declined).reply.to_string(), "450 4.7.1 No plugin decided if relaying is allowed\r\n");
        assert_eq!(
            d(Hook::Queue, Declined).reply.to_string(),
            "451 4.3.0 Queuing declined or disabled; try again later\r\n"
        );
        assert_eq!(d(Hook::Connect, Ok).reply.to_string(), "220 mx.example ESMTP wasmtpd ready\r\n");
        assert_eq!(
            d(Hook::Ehlo, Declined).reply.to_string(),
            "250-mx.example Hi client.example [192.0.2.7]\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        assert_eq!(d(Hook::Mail, Deny).reply.to_string(), "550 5.7.1 <a@b.example>, denied\r\n");
    }

    #[test]
    fn a_plugin_fault_is_a_temporary_failure() {
        let fault = HookResult::fault("broken");
        for hook in [Hook::Mail, Hook::Rcpt, Hook::Vrfy, Hook::UnrecognizedCommand] {
            let got = decide(hook, &fault, &ctx());
            assert_eq!((got.reply.code(), got.close, got.accept), (451, false, false), "{}", hook.name());
        }
        for hook in [Hook::Data, Hook::DataPost, Hook::Queue] {
            let got = decide(hook, &fault, &ctx());
            assert_eq!((got.reply.code(), got.reset), (451, true), "{}", hook.name());
        }
        for hook in [Hook::Connect, Hook::Helo, Hook::Ehlo] {
            let got = decide(hook, &fault, &ctx());
            assert_eq!((got.reply.code(), got.close), (421, true), "{}", hook.name());
            assert_eq!(got.reply.to_string(), "421 4.3.0 Temporary failure in plugin processing, try again later\r\n");
        }
        assert_eq!(decide(Hook::Quit, &fault, &ctx()).reply.code(), 221);
        for hook in [Hook::Auth, Hook::AuthPlain, Hook::AuthLogin] {
            let got = decide(hook, &fault, &ctx());
            assert_eq!((got.reply.code(), got.accept, got.close), (454, false, false), "{}", hook.name());
        }
    }

    #[test]
    fn auth_replies() {
        assert_eq!(d(Hook::Auth, Ok).reply.to_string(), "235 2.7.0 Authentication successful\r\n");
        assert!(d(Hook::AuthLogin, Ok).accept);
        assert!(!d(Hook::Auth, Done).accept, "DONE cannot authenticate anyone");
        assert_eq!(d(Hook::Auth, Declined).reply.to_string(), "535 5.7.8 Authentication credentials invalid\r\n");
    }

    #[test]
    fn a_plugin_words_the_first_ehlo_line_at_most_and_never_the_keywords() {
        let res = HookResult::new(Done)
            .with_message("mx.example welcomes you\nAUTH PLAIN LOGIN\nCHUNKING\nXCLIENT NAME ADDR");
        let got = decide(Hook::Ehlo, &res, &ctx());
        assert_eq!(got.reply.to_string(), "250-mx.example welcomes you\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
        let got = decide(Hook::Helo, &res, &ctx());
        assert_eq!(got.reply.to_string(), "250 mx.example welcomes you\r\n");
        // Without a message (or an empty first line): the default first line, the server's keywords.
        for res in [HookResult::new(Done), HookResult::new(Done).with_message("\nAUTH PLAIN")] {
            let got = decide(Hook::Ehlo, &res, &ctx());
            assert_eq!(
                got.reply.to_string(),
                "250-mx.example Hi client.example [192.0.2.7]\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
            );
        }
        // OK and DECLINED ignore the message altogether, as before.
        let res = HookResult::new(Ok).with_message("hello\nXCLIENT");
        let got = decide(Hook::Ehlo, &res, &ctx());
        assert_eq!(got.reply.lines(), ["mx.example Hi client.example [192.0.2.7]", "PIPELINING", "SIZE 100"]);
    }

    #[test]
    fn plugin_text_is_used_but_cannot_inject() {
        let mut res = HookResult::new(Deny).with_message("no thanks\r\n250 2.0.0 OK");
        res.enhanced = Some(EnhancedCode(2, 1, 5));
        let got = decide(Hook::Rcpt, &res, &ctx());
        assert_eq!(got.reply.to_string(), "550-5.1.5 no thanks\r\n550 5.1.5 250 2.0.0 OK\r\n");
    }

    #[test]
    fn a_routing_failure_is_451() {
        let mut res = HookResult::new(DenySoft).with_message("downstream unavailable");
        res.enhanced = Some(EnhancedCode(4, 4, 1));
        for hook in [Hook::Rcpt, Hook::DataPost, Hook::Queue] {
            assert_eq!(decide(hook, &res, &ctx()).reply.to_string(), "451 4.4.1 downstream unavailable\r\n");
        }
        res.enhanced = Some(EnhancedCode(4, 2, 2));
        assert_eq!(decide(Hook::Queue, &res, &ctx()).reply.code(), 452, "other temporary failures keep their code");
    }

    #[test]
    fn only_checked_and_refused_credentials_count_as_failed_auth() {
        for hook in [Hook::Auth, Hook::AuthPlain, Hook::AuthLogin] {
            let counted: Vec<bool> = ALL.iter().map(|v| d(hook, *v).bad_credentials).collect();
            // Ok, Deny, DenySoft, DenyDisconnect, DenySoftDisconnect, Declined, Done
            assert_eq!(counted, [false, true, false, true, false, true, true], "{}", hook.name());
            assert!(!decide(hook, &HookResult::fault("broken"), &ctx()).bad_credentials);
        }
        for hook in Hook::ALL.into_iter().filter(|h| !matches!(h, Hook::Auth | Hook::AuthPlain | Hook::AuthLogin)) {
            assert!(ALL.iter().all(|v| !d(hook, *v).bad_credentials), "{}", hook.name());
        }
    }

    #[test]
    fn a_pre_hook_rewrites_only_with_ok_and_an_address() {
        assert_eq!(rewritten_path(&HookResult::new(Ok).with_message("<a@b.example>")), Some("<a@b.example>"));
        assert_eq!(rewritten_path(&HookResult::new(Ok)), None);
        for v in [Deny, DenySoft, DenyDisconnect, DenySoftDisconnect, Declined, Done] {
            assert_eq!(rewritten_path(&HookResult::new(v).with_message("<a@b.example>")), None, "{}", v.name());
        }
        let mut fault = HookResult::new(Ok).with_message("<a@b.example>");
        fault.fault = true;
        assert_eq!(rewritten_path(&fault), None);
    }

    #[test]
    fn a_421_always_closes() {
        for hook in Hook::ALL {
            for v in ALL {
                let got = d(hook, v);
                if got.reply.code() == 421 {
                    assert!(got.close && got.reset, "{} {}", hook.name(), v.name());
                }
            }
        }
    }
}
