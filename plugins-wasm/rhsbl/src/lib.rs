//! rhsbl (qpsmtpd): refuses senders whose domain a right-hand-side DNS blocklist lists.
//!
//! At MAIL, the sender's domain (and, with `helo 1`, the HELO/EHLO name too) is looked up in
//! every zone of `config/rhsbl_zones` at once (`example.com.ZONE`, one `check-lists` call per
//! name). A listing refuses the sender: `Mail from DOMAIN rejected because it REASON`, where
//! REASON is the list's TXT record, or the message given after the zone on its line
//! (`dbl.example.net is listed in dbl.example.net`). The listing is kept in the transaction note
//! `rhsbl` (`DOMAIN ZONE: REASON`). The null sender and immune clients (authenticated, relay)
//! are not checked.
//!
//! Arguments: `reject 0|1` (default 1), `reject_type perm|temp|disconnect` (default perm:
//! 550 5.7.1), `helo 0|1` (default 0). A list that cannot be asked is logged and counts as not
//! listing. Needs the `dns` grant for the zones in `config/sandbox`.

use policy::{Options, RejectType};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, dns, host};

struct Rhsbl;

#[wasmtpd_plugin::plugin]
impl Plugin for Rhsbl {
    fn mail(sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        let Some(domain) = sender.and_then(|s| s.domain) else { return HookResult::declined() };
        if policy::is_immune() {
            return HookResult::declined();
        }
        let options = Options::from_args(&["reject", "reject_type", "helo"]);
        let zones: Vec<(String, Option<String>)> = host::config("rhsbl_zones")
            .unwrap_or_default()
            .iter()
            .filter_map(|line| {
                let mut words = line.trim().splitn(2, char::is_whitespace);
                let zone = words.next().filter(|z| !z.is_empty())?;
                Some((zone.to_string(), words.next().map(|m| m.trim().to_string()).filter(|m| !m.is_empty())))
            })
            .collect();
        if zones.is_empty() {
            return HookResult::declined();
        }
        let mut names = vec![(domain.to_ascii_lowercase(), "Mail from")];
        if options.flag("helo", false)
            && let Some(helo) = host::connection().hello_host.filter(|h| !h.starts_with('['))
        {
            names.push((helo.to_ascii_lowercase(), "Mail from HELO"));
        }
        let zone_names: Vec<String> = zones.iter().map(|(z, _)| z.clone()).collect();
        for (name, what) in names {
            for ((zone, message), answer) in zones.iter().zip(dns::check_lists(&name, &zone_names)) {
                let listing = match answer {
                    Ok(Some(listing)) => listing,
                    Ok(None) => continue,
                    Err(e) => {
                        wasmtpd_plugin::warn(format!("{zone} could not be asked: {}", policy::describe(&e)));
                        continue;
                    }
                };
                let reason = message.clone().or(listing.reason).unwrap_or_else(|| format!("is listed in {zone}"));
                wasmtpd_plugin::info(format!("fail, {name} listed by {zone}: {reason}"));
                if let Err(e) = host::set_transaction_note("rhsbl", Some(&format!("{name} {zone}: {reason}"))) {
                    wasmtpd_plugin::warn(format!("cannot record the listing: {e}"));
                }
                if !options.flag("reject", true) {
                    return HookResult::declined();
                }
                return options
                    .reject_type(RejectType::Perm)
                    .refuse(format!("{what} {name} rejected because it {reason}"), "5.7.1");
            }
        }
        HookResult::declined()
    }
}
