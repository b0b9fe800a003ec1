//! The host side of `wit/dns.wit`: a plugin's DNS questions, each admitted by its grant
//! (`sandbox::DnsGrant`) and its budget (`dns-queries` per transaction), then asked through
//! the server's [`Resolver`] by a deadline within the hook's time. A refusal is an error the
//! plugin sees, and a log line naming it (a few per instance; a flood is not logged).
//!
//! The deadline leaves the plugin a tenth of what is left of its hook time (at most 500 ms)
//! to act on the answer, so a name server that never answers makes the lookup fail with
//! `timeout`, not the hook run out of time.

use std::net::IpAddr;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use crate::bindings::dns::{self, DnsError, Listing, MailExchanger, Question, RecordType};
use crate::resolver::{self, LookupError, QueryType, RecordData, Resolver};
use crate::state::PluginState;

/// Most questions of one `lookup-all`, and zones of one `check-lists`.
pub const MAX_QUESTIONS: usize = 16;
/// Refusals logged per instance; past that, one line says the rest are not.
const MAX_REFUSALS_LOGGED: u32 = 4;
/// The most of its remaining hook time a lookup leaves the plugin.
const TIME_TO_ACT: Duration = Duration::from_millis(500);

/// The questions a plugin instance asked in the current transaction.
#[derive(Debug, Default)]
pub struct DnsUse {
    /// The transaction they were asked in (`None`: the connection phase).
    transaction: Option<String>,
    asked: u32,
    refusals_logged: u32,
}

/// A DNS list answer for "you may not query us" rather than a listing: Spamhaus's codes for
/// queries through public resolvers, over the rate limit, and for typing errors.
const REFUSAL_CODES: [[u8; 4]; 3] = [[127, 255, 255, 252], [127, 255, 255, 254], [127, 255, 255, 255]];

impl PluginState {
    /// Counts a question for `name` against the grant and the budget. The grant is checked on
    /// the labels the query will carry, not on the text (`a\.zone.example` is not under
    /// `zone.example`); a name that is not one is not asked, and not counted.
    fn admit_question(&mut self, name: &str) -> Result<(), LookupError> {
        let transaction = self.call.transaction.as_ref().map(|t| t.id.as_str());
        if self.dns.transaction.as_deref() != transaction {
            self.dns.transaction = transaction.map(str::to_string);
            self.dns.asked = 0;
        }
        let parsed = resolver::parse_name(name)?;
        let labels: Vec<&[u8]> = parsed.iter().collect();
        let refusal = if self.meta.resolver.is_none() || !self.meta.dns.allows(&labels) {
            format!(
                "not granted: the operator has not granted this plugin DNS for `{}` (`dns` in config/sandbox)",
                shown(name)
            )
        } else if self.dns.asked >= self.meta.dns_queries {
            format!(
                "over budget: this plugin may ask {} DNS questions per transaction (`dns-queries` in config/sandbox)",
                self.meta.dns_queries
            )
        } else {
            self.dns.asked += 1;
            return Ok(());
        };
        self.log_dns_refusal(&refusal);
        Err(LookupError::Refused(refusal))
    }

    fn log_dns_refusal(&mut self, refusal: &str) {
        let plugin = self.meta.name.as_str();
        let conn = self.call.connection.id.as_str();
        match self.dns.refusals_logged {
            n if n < MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "DNS question refused: {refusal}"),
            MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "more DNS questions refused; no longer logged"),
            _ => {}
        }
        self.dns.refusals_logged = self.dns.refusals_logged.saturating_add(1);
    }

    /// When a lookup must have its answer: what is left of the hook's time, less time to act.
    fn dns_deadline(&self) -> Instant {
        let now = Instant::now();
        match self.limits.deadline {
            Some(d) => {
                let left = Instant::from_std(d).saturating_duration_since(now);
                now + left - (left / 10).min(TIME_TO_ACT)
            }
            None => now + self.meta.resolver.as_ref().map_or(Duration::ZERO, Resolver::timeout),
        }
    }

    /// Admits each of `names` in turn; the resolver, with each admission.
    fn admit_all(&mut self, names: &[Result<String, LookupError>]) -> (Option<Resolver>, Vec<Result<(), LookupError>>) {
        let admitted = names
            .iter()
            .map(|n| match n {
                Ok(name) => self.admit_question(name),
                Err(e) => Err(e.clone()),
            })
            .collect();
        (self.meta.resolver.clone(), admitted)
    }
}

impl dns::Host for PluginState {
    async fn lookup(&mut self, name: String, record_type: RecordType) -> Result<Vec<dns::ResourceRecord>, DnsError> {
        let question = Question { name, record_type };
        self.lookup_all(vec![question]).await.pop().expect("one answer per question")
    }

    async fn lookup_all(&mut self, questions: Vec<Question>) -> Vec<Result<Vec<dns::ResourceRecord>, DnsError>> {
        if questions.len() > MAX_QUESTIONS {
            let e = DnsError::Refused(format!("at most {MAX_QUESTIONS} questions at once, not {}", questions.len()));
            return questions.iter().map(|_| Err(e.clone())).collect();
        }
        let names: Vec<_> = questions.iter().map(|q| Ok(q.name.clone())).collect();
        let (resolver, admitted) = self.admit_all(&names);
        let deadline = self.dns_deadline();
        let asked = questions.iter().zip(admitted).map(|(q, admitted)| {
            let resolver = resolver.clone();
            async move {
                admitted?;
                let resolver = resolver.expect("admitted only with a resolver");
                resolver.lookup(&q.name, query_type(q.record_type), deadline).await
            }
        });
        join_all(asked)
            .await
            .into_iter()
            .map(|r| r.map(|records| records.into_iter().map(to_wit).collect()).map_err(error))
            .collect()
    }

    async fn reverse(&mut self, ip: String) -> Result<Vec<String>, DnsError> {
        let ip: IpAddr = ip.parse().map_err(|_| DnsError::InvalidName(format!("not an IP address: {}", shown(&ip))))?;
        let name = resolver::reverse_name(ip);
        self.admit_question(&name).map_err(error)?;
        let deadline = self.dns_deadline();
        let resolver = self.meta.resolver.clone().expect("admitted only with a resolver");
        let records = resolver.lookup(&name, QueryType::Ptr, deadline).await.map_err(error)?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r.data {
                RecordData::Ptr(name) => Some(name),
                _ => None,
            })
            .collect())
    }

    async fn check_lists(&mut self, subject: String, zones: Vec<String>) -> Vec<Result<Option<Listing>, DnsError>> {
        if zones.len() > MAX_QUESTIONS {
            let e = DnsError::Refused(format!("at most {MAX_QUESTIONS} zones at once, not {}", zones.len()));
            return zones.iter().map(|_| Err(e.clone())).collect();
        }
        let names: Vec<Result<String, LookupError>> = zones.iter().map(|zone| listed_name(&subject, zone)).collect();
        let (resolver, admitted) = self.admit_all(&names);
        let deadline = self.dns_deadline();
        let checked = names.iter().zip(&zones).zip(admitted).map(|((name, zone), admitted)| {
            let resolver = resolver.clone();
            async move {
                admitted?;
                let name = name.as_ref().map_err(Clone::clone)?;
                let resolver = resolver.expect("admitted only with a resolver");
                check_list(&resolver, name, zone, deadline).await
            }
        });
        join_all(checked).await.into_iter().map(|r| r.map_err(error)).collect()
    }
}

/// The name `subject` (an IP address or a domain) is listed under in `zone`.
fn listed_name(subject: &str, zone: &str) -> Result<String, LookupError> {
    let name = match subject.parse::<IpAddr>() {
        Ok(ip) => resolver::list_name(ip, zone),
        Err(_) => format!("{}.{}", subject.trim_end_matches('.'), zone.trim_end_matches('.')),
    };
    resolver::parse_name(&name)?;
    Ok(name)
}

/// One DNS list's answer for `name`: its A records, and for a listing its TXT reason.
async fn check_list(
    resolver: &Resolver,
    name: &str,
    zone: &str,
    deadline: Instant,
) -> Result<Option<Listing>, LookupError> {
    let records = match resolver.lookup(name, QueryType::A, deadline).await {
        Err(LookupError::NoSuchDomain | LookupError::NoRecords) => return Ok(None),
        r => r?,
    };
    let codes: Vec<_> = records
        .iter()
        .filter_map(|r| match r.data {
            RecordData::A(a) => Some(a),
            _ => None,
        })
        .collect();
    if let Some(odd) = codes.iter().find(|a| a.octets()[0] != 127) {
        return Err(LookupError::ServerFailure(format!("{zone} answered {odd}, outside 127.0.0.0/8: not a listing")));
    }
    if let Some(refused) = codes.iter().find(|a| REFUSAL_CODES.contains(&a.octets())) {
        return Err(LookupError::ServerFailure(format!("{zone} refused the query ({refused}): not a listing")));
    }
    // The reason is a courtesy: a list without TXT records still lists.
    let reason = match resolver.lookup(name, QueryType::Txt, deadline).await {
        Ok(txt) => txt.into_iter().find_map(|r| match r.data {
            RecordData::Txt(t) => Some(t),
            _ => None,
        }),
        Err(_) => None,
    };
    Ok(Some(Listing {
        zone: zone.trim_end_matches('.').to_ascii_lowercase(),
        codes: codes.iter().map(|a| a.to_string()).collect(),
        reason,
    }))
}

/// A name as it may be shown in a message: escaped, and cut.
fn shown(name: &str) -> String {
    let mut s: String = name.escape_debug().take(255).collect();
    if s.len() < name.escape_debug().count() {
        s.push('…');
    }
    s
}

fn query_type(t: RecordType) -> QueryType {
    match t {
        RecordType::A => QueryType::A,
        RecordType::Aaaa => QueryType::Aaaa,
        RecordType::Mx => QueryType::Mx,
        RecordType::Txt => QueryType::Txt,
        RecordType::Ptr => QueryType::Ptr,
        RecordType::Ns => QueryType::Ns,
        RecordType::Cname => QueryType::Cname,
    }
}

fn to_wit(r: resolver::ResourceRecord) -> dns::ResourceRecord {
    let data = match r.data {
        RecordData::A(a) => dns::RecordData::A(a.to_string()),
        RecordData::Aaaa(a) => dns::RecordData::Aaaa(a.to_string()),
        RecordData::Mx { preference, exchange } => dns::RecordData::Mx(MailExchanger { preference, exchange }),
        RecordData::Txt(t) => dns::RecordData::Txt(t),
        RecordData::Ptr(n) => dns::RecordData::Ptr(n),
        RecordData::Ns(n) => dns::RecordData::Ns(n),
        RecordData::Cname(n) => dns::RecordData::Cname(n),
    };
    dns::ResourceRecord { data, ttl: r.ttl }
}

fn error(e: LookupError) -> DnsError {
    match e {
        LookupError::NoSuchDomain => DnsError::NoSuchDomain,
        LookupError::NoRecords => DnsError::NoRecords,
        LookupError::ServerFailure(s) => DnsError::ServerFailure(s),
        LookupError::Timeout => DnsError::Timeout,
        LookupError::Refused(s) => DnsError::Refused(s),
        LookupError::InvalidName(s) => DnsError::InvalidName(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_of_addresses_and_domains() {
        assert_eq!(listed_name("127.0.0.2", "zen.example").unwrap(), "2.0.0.127.zen.example");
        assert_eq!(listed_name("sender.example.", "dbl.example.").unwrap(), "sender.example.dbl.example");
        assert!(matches!(listed_name("bad name", "zen.example"), Err(LookupError::InvalidName(_))));
    }
}
