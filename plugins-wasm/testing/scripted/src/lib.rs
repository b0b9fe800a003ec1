//! Test fixture: every hook answers what the plugin's arguments say.
//!
//! Arguments: `HOOK=VERDICT[:MESSAGE]` (VERDICT: ok, deny, denysoft, denydisconnect,
//! denysoftdisconnect, declined, done; MESSAGE without spaces, `_` stands for a space and `|`
//! for a line break). Hooks not named decline. `relay=HOOK` makes the client a relay client
//! (`set-relay-client`) when that hook runs. Every call is counted in the transaction (or connection) note
//! `<plugin-arg tag>.<hook>`, where the tag is the argument `tag=NAME` (default "scripted"),
//! and, in a transaction, recorded as `TAG:HOOK` in the note `scripted.order.N` (N counting
//! the calls of every scripted instance; one note per call, since a plugin may change only its
//! own notes), so tests can see which plugins ran, in which order, and which hooks reached them.
//! `auth=password:SECRET` makes the `auth` hook accept exactly that password and deny others.
//! In data_post it adds `X-Scripted-Tls` and `X-Scripted-Auth` headers with the connection's
//! TLS and AUTH facts, as a plugin sees them.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, Verdict, host};

struct Scripted;

fn answer(hook: &str) -> HookResult {
    let args = host::args();
    let tag = args.iter().find_map(|a| a.strip_prefix("tag=")).unwrap_or("scripted").to_string();
    // The order in which plugins ran, visible to later plugins and to tests.
    let key = format!("{tag}.{hook}");
    if host::transaction().is_some() {
        let n = host::transaction_note(&key).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0) + 1;
        let _ = host::set_transaction_note(&key, Some(&n.to_string()));
        let next = (0..).find(|i| host::transaction_note(&format!("scripted.order.{i}")).is_none()).unwrap_or(0);
        let _ = host::set_transaction_note(&format!("scripted.order.{next}"), Some(&format!("{tag}:{hook}")));
    } else {
        let n = host::connection_note(&key).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0) + 1;
        let _ = host::set_connection_note(&key, Some(&n.to_string()));
    }
    if args.iter().any(|a| a.strip_prefix("relay=") == Some(hook)) {
        let _ = host::set_relay_client(true);
    }
    for arg in &args {
        let Some((h, rest)) = arg.split_once('=') else { continue };
        if h != hook {
            continue;
        }
        let (verdict, message) =
            rest.split_once(':').map_or((rest, None), |(v, m)| (v, Some(m.replace('_', " ").replace('|', "\n"))));
        let verdict = match verdict {
            "ok" => Verdict::Ok,
            "deny" => Verdict::Deny,
            "denysoft" => Verdict::DenySoft,
            "denydisconnect" => Verdict::DenyDisconnect,
            "denysoftdisconnect" => Verdict::DenySoftDisconnect,
            "done" => Verdict::Done,
            _ => Verdict::Declined,
        };
        return HookResult { verdict, message, enhanced_code: None };
    }
    HookResult::declined()
}

#[wasmtpd_plugin::plugin]
impl Plugin for Scripted {
    fn connect() -> HookResult {
        answer("connect")
    }
    fn helo(_host: String) -> HookResult {
        answer("helo")
    }
    fn ehlo(_host: String) -> HookResult {
        answer("ehlo")
    }
    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        answer("mail")
    }
    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        answer("rcpt")
    }
    fn data() -> HookResult {
        answer("data")
    }
    fn data_post() -> HookResult {
        // Leave the record of this transaction's notes in the message for the test to read.
        if let Some(t) = host::transaction() {
            let order: Vec<String> =
                (0..).map_while(|i| host::transaction_note(&format!("scripted.order.{i}"))).collect();
            let _ = host::add_header("X-Scripted-Order", &order.join(" "));
            let _ = host::add_header("X-Scripted-Recipients", &t.recipients.len().to_string());
            if let Some(deny) = host::connection_note("scripted.last_deny") {
                let _ = host::add_header("X-Scripted-Last-Deny", &deny);
            }
            // What a plugin knows of TLS and AUTH.
            let c = host::connection();
            if let Some(tls) = c.tls {
                let sni = tls.server_name.unwrap_or_else(|| "-".into());
                let _ = host::add_header("X-Scripted-Tls", &format!("{} {} {sni}", tls.version, tls.cipher));
            }
            if let Some(auth) = c.auth {
                let _ = host::add_header("X-Scripted-Auth", &format!("{} {}", auth.user, auth.mechanism));
            }
        }
        answer("data_post")
    }
    fn queue() -> HookResult {
        answer("queue")
    }
    fn quit() -> HookResult {
        answer("quit")
    }
    fn disconnect() -> HookResult {
        answer("disconnect")
    }
    fn vrfy(_argument: String) -> HookResult {
        answer("vrfy")
    }
    fn noop() -> HookResult {
        answer("noop")
    }
    fn help(_argument: String) -> HookResult {
        answer("help")
    }
    fn unrecognized_command(_verb: String, _args: Vec<String>) -> HookResult {
        answer("unrecognized_command")
    }
    fn reset_transaction() -> HookResult {
        answer("reset_transaction")
    }
    fn auth_plain(user: String, _password: String) -> HookResult {
        let _ = host::set_connection_note("scripted.auth_user", Some(&user));
        answer("auth_plain")
    }
    fn auth_login(user: String, _password: String) -> HookResult {
        let _ = host::set_connection_note("scripted.auth_user", Some(&user));
        answer("auth_login")
    }
    fn auth(mechanism: String, user: String, password: String) -> HookResult {
        // `auth=password:SECRET` accepts exactly that password (for the real-client tests).
        if let Some(secret) = host::args().iter().find_map(|a| a.strip_prefix("auth=password:")) {
            return if password == secret { HookResult::ok() } else { HookResult::deny("wrong password") };
        }
        let _ = host::set_connection_note("scripted.auth", Some(&format!("{mechanism} {user}")));
        answer("auth")
    }
    fn deny(hook: String, plugin: String, verdict: Verdict, _message: Option<String>) -> HookResult {
        let _ = host::set_connection_note("scripted.last_deny", Some(&format!("{plugin}:{hook}:{verdict:?}")));
        answer("deny")
    }
}
