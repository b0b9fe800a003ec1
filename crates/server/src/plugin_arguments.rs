//! Which arguments each standard plugin takes on its `config/plugins` line, so that a line
//! copied from qpsmtpd with an option the plugin does not know stops start-up with the file,
//! the line and the option's name, instead of running a silently different filter.
//!
//! [`KNOWN`] is the one table of them (keep it with each plugin's `ARGUMENTS` in
//! `plugins-wasm/`, and its README row). Plugins not in it (the operator's own, the test
//! fixtures) are not checked: their arguments are theirs.

use crate::config::PluginLine;

/// How a plugin takes its arguments.
#[derive(Debug, Clone, Copy)]
pub enum Arguments {
    /// qpsmtpd's `option value` pairs, with these options (`loglevel`, which qpsmtpd gives
    /// every plugin, is always allowed).
    Pairs(&'static [&'static str]),
    /// At most this many words of its own (`noop_counter 5`, `queue/maildir /maildir`).
    Positional(usize),
    /// One word, or `option value` pairs: `bogus_bounce deny` or `bogus_bounce reject 1`.
    WordOrPairs(&'static [&'static str]),
}

const REJECT: &[&str] = &["reject", "reject_type"];

/// The standard plugins' arguments, by plugin name.
pub const KNOWN: &[(&str, Arguments)] = &[
    ("rcpt_ok", Arguments::Positional(0)),
    ("relay", Arguments::Pairs(&["only"])),
    ("queue/maildir", Arguments::Positional(1)),
    ("queue/discard", Arguments::Positional(0)),
    ("check_badmailfrom", Arguments::Positional(0)),
    ("check_badrcptto", Arguments::Positional(0)),
    ("check_spamhelo", Arguments::Positional(0)),
    ("count_unrecognized_commands", Arguments::Positional(1)),
    ("check_earlytalker", Arguments::Pairs(&["wait", "check-at", "reject", "reject_type", "action", "defer-reject"])),
    ("dont_require_anglebrackets", Arguments::Positional(0)),
    ("hosts_allow", Arguments::Pairs(&["max_from_ip"])),
    ("headers", Arguments::Pairs(&["require", "future", "past", "reject", "reject_type"])),
    ("auth_flat_file", Arguments::Positional(0)),
    ("dnsbl", Arguments::Pairs(REJECT)),
    ("rhsbl", Arguments::Pairs(&["reject", "reject_type", "helo"])),
    ("resolvable_fromhost", Arguments::Pairs(REJECT)),
    ("fcrdns", Arguments::Pairs(&["reject", "reject_type", "timeout"])),
    (
        "helo",
        Arguments::Pairs(&[
            "policy",
            "reject",
            "reject_type",
            "timeout",
            "dns_timeout",
            "is_in_badhelo",
            "invalid_localhost",
            "is_forged_literal",
            "is_plain_ip",
            "claims_to_be_us",
            "is_not_fqdn",
            "no_forward_dns",
            "no_reverse_dns",
            "is_address_literal",
            "no_matching_dns",
        ]),
    ),
    ("sender_permitted_from", Arguments::Pairs(&["reject", "spf_deny", "no_dmarc_policy"])),
    ("dkim", Arguments::Pairs(REJECT)),
    ("dmarc", Arguments::Pairs(&["reject", "reject_type", "quarantine", "reporting"])),
    (
        "greylisting",
        Arguments::Pairs(&[
            "remote_ip",
            "sender",
            "recipient",
            "deny_late",
            "black_timeout",
            "white_timeout",
            "grey_timeout",
            "reject",
            "mode",
            "subnet",
            "store",
            "per_recipient",
        ]),
    ),
    (
        "limit",
        Arguments::Pairs(&[
            "store",
            "concurrency",
            "connections",
            "messages_per_client",
            "messages_per_sender",
            "recipients_per_client",
            "recipients_per_sender",
        ]),
    ),
    ("karma", Arguments::Pairs(&["store", "negative", "strikes", "penalty_days", "history_days", "reject"])),
    ("bogus_bounce", Arguments::WordOrPairs(REJECT)),
    ("noop_counter", Arguments::Positional(1)),
    ("naughty", Arguments::Pairs(REJECT)),
    ("random_error", Arguments::Positional(1)),
    ("loadcheck", Arguments::Pairs(&["max_load", "cache_time", "uptime"])),
];

/// Whether `line`'s arguments are ones its plugin takes; the error names the option.
pub fn check(line: &PluginLine) -> Result<(), String> {
    let Some((_, form)) = KNOWN.iter().find(|(name, _)| *name == line.name) else { return Ok(()) };
    let args = &line.args;
    let pairs = |known: &[&str]| -> Result<(), String> {
        if !args.len().is_multiple_of(2) {
            let last = args.last().map(String::as_str).unwrap_or_default();
            return Err(format!("plugin `{}`: option `{last}` has no value", line.name));
        }
        for key in args.iter().step_by(2) {
            if key != "loglevel" && !known.contains(&key.as_str()) {
                return Err(format!(
                    "plugin `{}` has no option `{key}` (its options: {})",
                    line.name,
                    known.iter().chain(&["loglevel"]).copied().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    };
    match *form {
        Arguments::Pairs(known) => pairs(known),
        Arguments::WordOrPairs(_) if args.len() == 1 => Ok(()),
        Arguments::WordOrPairs(known) => pairs(known),
        Arguments::Positional(most) if args.len() > most => Err(match most {
            0 => format!("plugin `{}` takes no arguments, found `{}`", line.name, args.join(" ")),
            n => format!("plugin `{}` takes at most {n} argument(s), found `{}`", line.name, args.join(" ")),
        }),
        Arguments::Positional(_) => Ok(()),
    }
}
