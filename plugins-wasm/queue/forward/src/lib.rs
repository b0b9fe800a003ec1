//! What `queue/smtp-forward` and `queue/lmtp` share (a library, not a plugin): which
//! downstream a recipient goes to, the recipient checked with it at RCPT, the message handed
//! to it at `queue`, and the downstream's replies turned into ours.
//!
//! Replies (the basic code is the verdict's, as for every plugin; the downstream's enhanced
//! code and its text, cleaned by the host and prefixed `downstream NAME:`, are passed on):
//!
//! | the downstream | at RCPT | after the message |
//! |---|---|---|
//! | accepts (2xx) | no opinion: the next plugin decides (`rcpt_ok`) | 250 (only if it accepted every recipient) |
//! | refuses (5xx) | 550 with its enhanced code and text | 552 with its enhanced code and text, if it refused every recipient |
//! | defers (4xx) | 451 4.4.0 with its code and text | 451 4.4.0 |
//! | is down, times out, is not SMTP | 451 4.4.1 (no connection) or 4.4.2 (bad connection) | the same |
//! | some recipients delivered, others not (LMTP) | | 451 4.4.0: nothing lost, see `queue/lmtp` |
//!
//! Recipients that route to different downstreams: the first recipient of a transaction picks
//! its downstream, and a later recipient routed elsewhere is deferred (450 4.5.3, "split
//! transaction"), as Haraka's `queue/smtp_forward` does: the client sends it again in a new
//! transaction (RFC 5321 section 3.3), so each message goes to one downstream and its one
//! reply is that downstream's. A recipient with no route is left to the next plugin, and a
//! message whose first recipient has none is deferred at `queue` (451 4.3.0).

use wasmtpd_plugin::delivery::{self, DeliveryError, DownstreamReply};
use wasmtpd_plugin::{Address, HookResult, host};

/// The transaction note naming the transaction's downstream.
const NOTE: &str = "downstream";

/// A forwarding plugin, reading its routes from the config file `routes_file`.
pub struct Forward {
    routes_file: &'static str,
}

impl Forward {
    pub fn new(routes_file: &'static str) -> Forward {
        Forward { routes_file }
    }

    /// The downstream for `domain` (`None`: the bare postmaster): the plugin's argument, or
    /// the routes file's line for it (exact, then `.parent` lines, then `*`).
    fn route(&self, domain: Option<&str>) -> Option<String> {
        if let Some(d) = host::args().into_iter().next() {
            return Some(d);
        }
        let routes: Vec<(String, String)> = host::config(self.routes_file)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_ascii_lowercase(), w.next()?.to_string()))
            })
            .collect();
        let domain = domain.map(str::to_ascii_lowercase);
        if let Some(d) = &domain {
            if let Some((_, to)) = routes.iter().find(|(k, _)| k == d) {
                return Some(to.clone());
            }
            if let Some((_, to)) = routes
                .iter()
                .filter(|(k, _)| k.starts_with('.') && d.ends_with(k.as_str()))
                .max_by_key(|(k, _)| k.len())
            {
                return Some(to.clone());
            }
        }
        routes.iter().find(|(k, _)| k == "*").map(|(_, to)| to.clone())
    }

    pub fn rcpt(&self, recipient: &Address) -> HookResult {
        let Some(downstream) = self.route(recipient.domain.as_deref()) else {
            wasmtpd_plugin::debug(format!("no route for {}", recipient.to_plain()));
            return HookResult::declined();
        };
        match host::transaction_note(NOTE) {
            Some(chosen) if chosen != downstream => {
                return HookResult::deny_soft(
                    "split transaction: this recipient goes to another downstream; send it again in a new transaction",
                )
                .with_enhanced_code("4.5.3");
            }
            Some(_) => {}
            None => {
                let _ = host::set_transaction_note(NOTE, Some(&downstream));
            }
        }
        match delivery::check_recipient(&downstream, &recipient.to_plain()) {
            Ok(r) if (200..300).contains(&r.code) => HookResult::declined(),
            Ok(r) if r.code >= 500 => HookResult::deny(said(&downstream, &r))
                .with_enhanced_code(r.enhanced.clone().unwrap_or_else(|| "5.0.0".into())),
            Ok(r) => HookResult::deny_soft(said(&downstream, &r)).with_enhanced_code("4.4.0"),
            Err(e) => failed(&downstream, e),
        }
    }

    pub fn queue(&self) -> HookResult {
        let first = host::transaction().and_then(|t| t.recipients.into_iter().next());
        let downstream =
            host::transaction_note(NOTE).or_else(|| first.and_then(|r| self.route(r.address.domain.as_deref())));
        let Some(downstream) = downstream else {
            wasmtpd_plugin::warn("no downstream for this message's recipients");
            return HookResult::deny_soft("no route to a downstream for these recipients").with_enhanced_code("4.3.0");
        };
        let report = match delivery::deliver(&downstream, &[]) {
            Ok(report) => report,
            Err(e) => return failed(&downstream, e),
        };
        let total = report.recipients.len();
        let delivered = report.recipients.iter().filter(|o| (200..300).contains(&o.reply.code)).count();
        if report.all_accepted && total > 0 {
            let r = &report.recipients[0].reply;
            wasmtpd_plugin::debug(format!(
                "delivered to downstream {downstream} for {total} recipient(s): {} {} (downstream connections opened: {})",
                r.code, r.text, report.connections_opened
            ));
            return HookResult::ok_with(format!("Queued by downstream {downstream}: {}", r.text));
        }
        let failures: Vec<&DownstreamReply> =
            report.recipients.iter().map(|o| &o.reply).filter(|r| !(200..300).contains(&r.code)).collect();
        let first_failure = failures.first().copied();
        for o in report.recipients.iter().filter(|o| !(200..300).contains(&o.reply.code)) {
            wasmtpd_plugin::info(format!(
                "downstream {downstream} refused {}: {} {}",
                o.recipient, o.reply.code, o.reply.text
            ));
        }
        match first_failure {
            Some(r) if delivered == 0 && failures.iter().all(|r| r.code >= 500) => HookResult::deny(said(&downstream, r))
                .with_enhanced_code(r.enhanced.clone().unwrap_or_else(|| "5.0.0".into())),
            Some(r) if delivered == 0 => HookResult::deny_soft(said(&downstream, r)).with_enhanced_code("4.4.0"),
            Some(r) => HookResult::deny_soft(format!(
                "delivered to {delivered} of {total} recipients by downstream {downstream}, not to the rest ({} {}); try again later",
                r.code, r.text
            ))
            .with_enhanced_code("4.4.0"),
            None => HookResult::deny_soft("the downstream accepted no recipient").with_enhanced_code("4.4.0"),
        }
    }
}

/// The downstream's reply as our text: `downstream NAME: CODE TEXT` (the host cleaned it).
fn said(downstream: &str, r: &DownstreamReply) -> String {
    let enhanced = r.enhanced.as_deref().map(|e| format!("{e} ")).unwrap_or_default();
    format!("downstream {downstream}: {} {enhanced}{}", r.code, r.text)
}

/// A delivery that got no reply to act on: a temporary failure.
fn failed(downstream: &str, e: DeliveryError) -> HookResult {
    let (code, text) = match &e {
        DeliveryError::Unavailable(s) => ("4.4.1", format!("downstream {downstream} unavailable: {s}")),
        DeliveryError::Timeout(s) => ("4.4.2", format!("downstream {downstream} did not answer: {s}")),
        DeliveryError::Protocol(s) => ("4.4.2", format!("downstream {downstream} failed: {s}")),
        DeliveryError::NotGranted(s) | DeliveryError::OverBudget(s) | DeliveryError::Invalid(s) => {
            ("4.3.0", format!("delivery to {downstream} not possible: {s}"))
        }
    };
    wasmtpd_plugin::warn(&text);
    HookResult::deny_soft(format!("{text}; try again later")).with_enhanced_code(code)
}
