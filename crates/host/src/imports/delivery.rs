//! The host side of `wit/delivery.wit`: a plugin's deliveries to the downstreams it was
//! granted (`downstream NAME` in `config/sandbox`), each admitted by its grant and its budget
//! per transaction, made by the session code of `crate::downstream` within a deadline inside
//! the hook's time. A refusal is an error the plugin sees, and a log line naming it.
//!
//! The envelope is always the transaction's own: the sender is its MAIL FROM, and the message
//! goes only to recipients of the transaction. `check-recipient` may have asked the downstream
//! about an address that is not (or no longer: a later plugin refused it) a recipient of the
//! transaction; then `deliver` resets the downstream's transaction and asks again for the
//! transaction's recipients alone, so the message never reaches anyone the client did not
//! name and the server did not accept.
//!
//! A downstream's session opened at `check-recipient` stays with the plugin instance for the
//! transaction; when the transaction ends without a delivery (or the instance is dropped), it
//! goes back to the pool and is reset (RSET) before its next use.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtpd_smtp::address::parse_path;
use wasmtpd_smtp::downstream::DownstreamReply as Reply;

use crate::bindings::delivery::{self, DeliveryError, DeliveryReport, DownstreamReply, RecipientOutcome};
use crate::downstream::{ClientFacts, Downstream, Fault, Session};
use crate::state::PluginState;

/// Most `check-recipient` calls per transaction.
pub const MAX_CHECKS: u32 = 1000;
/// Most `deliver` calls per transaction.
pub const MAX_DELIVERIES: u32 = 16;
/// Refusals logged per instance; past that, one line says the rest are not.
const MAX_REFUSALS_LOGGED: u32 = 4;
/// The most of its remaining hook time a call leaves the plugin.
const TIME_TO_ACT: Duration = Duration::from_millis(500);
/// The chunk of the message read at a time.
const CHUNK: u32 = 64 * 1024;

/// A session with a downstream opened for the current transaction.
struct Open {
    downstream: Arc<Downstream>,
    session: Option<Session>,
    /// The reply to MAIL FROM.
    mail: Reply,
    /// The recipients asked, with their replies, in order.
    asked: Vec<(String, Reply)>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.downstream.checkin(s);
        }
    }
}

/// What a plugin instance did with downstreams in the current transaction.
#[derive(Default)]
pub struct DeliveryUse {
    /// The transaction (`None`: the connection phase).
    transaction: Option<String>,
    checks: u32,
    deliveries: u32,
    open: Option<Open>,
    refusals_logged: u32,
}

impl PluginState {
    /// The downstream `name` if granted, counting the call against `budget`.
    fn admit_delivery(&mut self, name: &str, deliver: bool) -> Result<(Arc<Downstream>, Instant), DeliveryError> {
        let transaction = self.call.transaction.as_ref().map(|t| t.id.clone());
        if self.delivery.transaction != transaction {
            self.delivery.transaction = transaction;
            self.delivery.checks = 0;
            self.delivery.deliveries = 0;
            self.delivery.open = None;
        }
        let granted = self.meta.downstreams.iter().find(|d| d.name() == name).cloned();
        let refusal = match granted {
            None => DeliveryError::NotGranted(format!(
                "not granted: the operator has not granted this plugin the downstream `{}` (`downstream` in config/sandbox)",
                name.escape_debug().to_string().chars().take(80).collect::<String>()
            )),
            Some(_) if deliver && self.delivery.deliveries >= MAX_DELIVERIES => DeliveryError::OverBudget(format!(
                "over budget: a plugin may make {MAX_DELIVERIES} deliveries per transaction"
            )),
            Some(_) if !deliver && self.delivery.checks >= MAX_CHECKS => DeliveryError::OverBudget(format!(
                "over budget: a plugin may check {MAX_CHECKS} recipients per transaction"
            )),
            Some(_) if self.call.transaction.is_none() => {
                DeliveryError::Invalid("no transaction: MAIL FROM has not been given".into())
            }
            Some(d) => {
                if deliver {
                    self.delivery.deliveries += 1;
                } else {
                    self.delivery.checks += 1;
                }
                let deadline = self.delivery_deadline();
                return Ok((d, deadline));
            }
        };
        self.log_delivery_refusal(&refusal);
        Err(refusal)
    }

    fn log_delivery_refusal(&mut self, refusal: &DeliveryError) {
        let plugin = self.meta.name.as_str();
        let conn = self.call.connection.id.as_str();
        let reason = match refusal {
            DeliveryError::NotGranted(s) | DeliveryError::OverBudget(s) => s.as_str(),
            _ => return,
        };
        match self.delivery.refusals_logged {
            n if n < MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "delivery refused: {reason}"),
            MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "more deliveries refused; no longer logged"),
            _ => {}
        }
        self.delivery.refusals_logged = self.delivery.refusals_logged.saturating_add(1);
    }

    /// What is left of the hook's time, less time to act (the downstream's own timeouts
    /// bound each step within it).
    fn delivery_deadline(&self) -> Instant {
        let now = Instant::now();
        match self.limits.deadline {
            Some(d) => {
                let left = Instant::from_std(d).saturating_duration_since(now);
                now + left - (left / 10).min(TIME_TO_ACT)
            }
            None => now + Duration::from_secs(600),
        }
    }

    fn client_facts(&self, downstream: &Downstream) -> Option<ClientFacts> {
        let c = &self.call.connection;
        downstream.settings.xclient.then(|| ClientFacts {
            addr: c.remote,
            helo: c.hello.as_ref().map(|h| h.host.clone()),
            esmtp: c.hello.as_ref().is_some_and(|h| h.esmtp),
            login: c.auth.as_ref().map(|a| a.user.clone()),
        })
    }

    fn envelope_sender(&self) -> (String, bool) {
        let t = self.call.transaction.as_ref();
        let sender = t.and_then(|t| t.sender.as_ref()).map(|a| a.to_string()).unwrap_or_default();
        (sender, t.is_some_and(|t| t.mail_params.smtputf8))
    }

    /// The open session for this transaction with `downstream`, opening one (or reusing a
    /// pooled one) and sending MAIL FROM if there is none. A session open with another
    /// downstream goes back to its pool.
    async fn open_session(&mut self, downstream: &Arc<Downstream>, deadline: Instant) -> Result<(), Fault> {
        if self.delivery.open.as_ref().is_some_and(|o| Arc::ptr_eq(&o.downstream, downstream)) {
            return Ok(());
        }
        self.delivery.open = None;
        let facts = self.client_facts(downstream);
        let (sender, smtputf8) = self.envelope_sender();
        // A pooled connection the downstream closed meanwhile fails at its first command: then
        // once more on a fresh one.
        let key = facts.as_ref().map(ClientFacts::key);
        let mut fresh = false;
        loop {
            let mut session = downstream.checkout(deadline, fresh, key.as_deref()).await?;
            match session.begin(facts.as_ref(), &sender, smtputf8, deadline).await {
                Ok(mail) => {
                    self.delivery.open =
                        Some(Open { downstream: downstream.clone(), session: Some(session), mail, asked: Vec::new() });
                    return Ok(());
                }
                Err(Fault::Protocol(_) | Fault::Stale) if !fresh => {
                    // A stale one goes back for its own client.
                    downstream.checkin(session);
                    fresh = true;
                }
                Err(Fault::Stale) => return Err(Fault::Protocol("no connection for this client".into())),
                Err(e) => return Err(e),
            }
        }
    }

    fn fault(&self, downstream: &Downstream, what: &str, fault: Fault) -> DeliveryError {
        tracing::warn!(
            plugin = self.meta.name.as_str(),
            conn = self.call.connection.id.as_str(),
            downstream = downstream.name(),
            "{what}: {fault}"
        );
        match fault {
            Fault::Unavailable(s) => DeliveryError::Unavailable(s),
            Fault::Timeout(s) => DeliveryError::Timeout(s),
            Fault::Protocol(s) => DeliveryError::Protocol(s),
            Fault::Stale => DeliveryError::Protocol("no connection for this client".into()),
        }
    }
}

fn to_wit(r: &Reply) -> DownstreamReply {
    DownstreamReply {
        code: r.code,
        enhanced: r.enhanced.map(|e| e.to_string()),
        text: wasmtpd_smtp::reply::clean_text(&r.text()),
    }
}

/// `address` as a recipient path, or why it is not one.
fn recipient(address: &str) -> Result<String, DeliveryError> {
    match parse_path(&format!("<{address}>"), true) {
        Ok(Some(a)) => Ok(a.to_string()),
        _ => Err(DeliveryError::Invalid(format!(
            "not a recipient address: {:?}",
            address.chars().take(80).collect::<String>()
        ))),
    }
}

impl delivery::Host for PluginState {
    async fn check_recipient(&mut self, downstream: String, address: String) -> Result<DownstreamReply, DeliveryError> {
        let (d, deadline) = self.admit_delivery(&downstream, false)?;
        let address = recipient(&address)?;
        if let Err(e) = self.open_session(&d, deadline).await {
            return Err(self.fault(&d, "checking a recipient", e));
        }
        let open = self.delivery.open.as_mut().expect("just opened");
        if !open.mail.is_positive() {
            return Ok(to_wit(&open.mail));
        }
        if let Some((_, r)) = open.asked.iter().find(|(a, _)| *a == address) {
            return Ok(to_wit(r));
        }
        let session = open.session.as_mut().expect("open");
        match session.recipients(std::slice::from_ref(&address), deadline).await {
            Ok(mut replies) => {
                let r = replies.pop().expect("one reply per recipient");
                let wit = to_wit(&r);
                open.asked.push((address, r));
                Ok(wit)
            }
            Err(e) => {
                self.delivery.open = None;
                Err(self.fault(&d, "checking a recipient", e))
            }
        }
    }

    async fn deliver(&mut self, downstream: String, recipients: Vec<String>) -> Result<DeliveryReport, DeliveryError> {
        let (d, deadline) = self.admit_delivery(&downstream, true)?;
        let envelope: Vec<String> = {
            let t = self.call.transaction.as_ref().expect("admitted");
            if t.message.is_none() {
                return Err(DeliveryError::Invalid("no message yet: deliver at data_post or queue".into()));
            }
            t.recipients.iter().map(|r| r.address.to_string()).collect()
        };
        let wanted: Vec<String> = if recipients.is_empty() {
            envelope.clone()
        } else {
            let mut wanted = Vec::new();
            for r in &recipients {
                let r = recipient(r)?;
                if !envelope.contains(&r) {
                    return Err(DeliveryError::Invalid(format!("{r} is not a recipient of this transaction")));
                }
                if !wanted.contains(&r) {
                    wanted.push(r);
                }
            }
            wanted
        };
        if wanted.is_empty() {
            return Err(DeliveryError::Invalid("the transaction has no recipients".into()));
        }
        // Recipients the downstream accepted that this delivery is not for: its transaction
        // is reset and the envelope asked again.
        if let Some(open) = &self.delivery.open
            && Arc::ptr_eq(&open.downstream, &d)
            && open.asked.iter().any(|(a, r)| r.is_positive() && !wanted.contains(a))
        {
            self.delivery.open = None;
        }
        match self.deliver_to(&d, wanted, deadline).await {
            Ok(report) => Ok(report),
            Err(e) => {
                self.delivery.open = None;
                Err(self.fault(&d, "delivering", e))
            }
        }
    }
}

impl PluginState {
    async fn deliver_to(
        &mut self,
        d: &Arc<Downstream>,
        wanted: Vec<String>,
        deadline: Instant,
    ) -> Result<DeliveryReport, Fault> {
        self.open_session(d, deadline).await?;
        let mut open = self.delivery.open.take().expect("just opened");
        let report = |outcomes: Vec<(String, Reply)>, d: &Downstream| DeliveryReport {
            all_accepted: outcomes.iter().all(|(_, r)| r.is_positive()),
            recipients: outcomes
                .iter()
                .map(|(a, r)| RecipientOutcome { recipient: a.clone(), reply: to_wit(r) })
                .collect(),
            connections_opened: d.connections_opened(),
        };
        if !open.mail.is_positive() {
            let outcomes = wanted.into_iter().map(|a| (a, open.mail.clone())).collect();
            return Ok(report(outcomes, d));
        }
        let unasked: Vec<String> =
            wanted.iter().filter(|a| !open.asked.iter().any(|(x, _)| x == *a)).cloned().collect();
        let session = open.session.as_mut().expect("open");
        let replies = session.recipients(&unasked, deadline).await?;
        open.asked.extend(unasked.into_iter().zip(replies));
        let mut outcomes: Vec<(String, Reply)> =
            wanted.iter().map(|a| open.asked.iter().find(|(x, _)| x == a).cloned().expect("asked")).collect();
        let accepted: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].1.is_positive()).collect();
        if accepted.is_empty() {
            // Nothing to send: the session goes back (reset before its next use).
            drop(open);
            return Ok(report(outcomes, d));
        }
        let message = self.message().map_err(Fault::Protocol)?;
        let data = session.data(accepted.len(), |offset| message.read(offset, CHUNK), deadline).await?;
        match data {
            Err(refused) => {
                for &i in &accepted {
                    outcomes[i].1 = refused.clone();
                }
            }
            Ok(replies) if replies.len() == 1 && accepted.len() > 1 => {
                for &i in &accepted {
                    outcomes[i].1 = replies[0].clone();
                }
            }
            Ok(replies) => {
                for (&i, r) in accepted.iter().zip(replies) {
                    outcomes[i].1 = r;
                }
            }
        }
        // The message was sent: the session goes back to the pool, ready for the next.
        drop(open);
        Ok(report(outcomes, d))
    }
}
