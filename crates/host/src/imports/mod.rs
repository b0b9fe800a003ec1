//! The host side of the interfaces a plugin imports. `wit/host.wit` is here, one file per group
//! of its functions (this file wires them to the generated `Host` trait and holds the small
//! ones); each other interface has a file of its own: `dns.rs` (`wit/dns.wit`),
//! `authentication_results.rs` (`wit/authentication-results.wit`), `key_value.rs`
//! (`wit/key-value.wit`) and `delivery.rs` (`wit/delivery.wit`).
//! (`wit/key-value.wit`) and `upstream.rs` (`wit/upstream.wit`).
//!
//! Every function is bounded: strings and lists a plugin hands us are size-checked, reads
//! return at most 64 KiB, and errors come back as `Err(reason)` to the plugin, never as a trap.

pub mod authentication_results;
pub mod delivery;
pub mod dns;
pub mod key_value;
pub mod log;
pub mod message;
pub mod notes;
pub mod server_load;
pub mod temp;
pub mod upstream;

use crate::bindings::host::{self, AuthInfo, ConnectionInfo, Header, Recipient, TlsInfo, TransactionInfo};
use crate::bindings::wit::{self, LogLevel};
use crate::bindings::{mail_params, params};
use crate::sandbox::Right;
use crate::state::PluginState;

impl wit::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: LogLevel, message: String) {
        log::write(self, level, message)
    }

    fn args(&mut self) -> Vec<String> {
        self.meta.args.clone()
    }

    /// Only the files granted to this plugin (`state::ConfigGrant`) are read; every other
    /// name reads as missing, so the server's own files (`tls`, `sandbox`, `auth_users`, the
    /// keys under `certs/`) never reach a plugin that was not given them.
    fn config(&mut self, name: String) -> Option<Vec<String>> {
        if !self.meta.config_grant.allows(&name) {
            self.meta.config_grant.log_refusal(&self.meta.name, &name);
            return None;
        }
        self.meta.config.lines(&name)
    }

    fn connection(&mut self) -> ConnectionInfo {
        let c = &self.call.connection;
        ConnectionInfo {
            id: c.id.clone(),
            remote_ip: c.remote.ip().to_string(),
            remote_port: c.remote.port(),
            local_ip: c.local.ip().to_string(),
            local_port: c.local.port(),
            hello_host: c.hello.as_ref().map(|h| h.host.clone()),
            esmtp: c.hello.as_ref().is_some_and(|h| h.esmtp),
            relay_client: c.relay_client,
            tls: c.tls.as_ref().map(|t| TlsInfo {
                version: t.version.clone(),
                cipher: t.cipher.clone(),
                server_name: t.server_name.clone(),
            }),
            auth: c.auth.as_ref().map(|a| AuthInfo { user: a.user.clone(), mechanism: a.mechanism.name().to_string() }),
            early_talker: c.early_talker,
        }
    }

    /// `true` needs the right `relay-client`; `false` only takes a permission away, and is
    /// always allowed. A refusal is logged once per instance (a plugin may call this in a loop).
    fn set_relay_client(&mut self, allowed: bool) -> Result<(), String> {
        if allowed && !self.meta.rights.has(Right::RelayClient) {
            if !self.relay_refusal_logged {
                self.relay_refusal_logged = true;
                tracing::warn!(
                    plugin = self.meta.name.as_str(),
                    hook = self.call.hook.map_or("", |h| h.name()),
                    right = Right::RelayClient.name(),
                    conn = self.call.connection.id.as_str(),
                    "set-relay-client(true) refused: the plugin lacks the right (grant it with `rights` in config/sandbox)"
                );
            }
            return Err(format!(
                "not allowed: the operator has not granted this plugin the right `{}`",
                Right::RelayClient.name()
            ));
        }
        self.call.connection.relay_client = allowed;
        Ok(())
    }

    fn transaction(&mut self) -> Option<TransactionInfo> {
        let t = self.call.transaction.as_ref()?;
        Some(TransactionInfo {
            id: t.id.clone(),
            sender: t.sender.as_ref().map(wit::Address::from),
            sender_params: mail_params(&t.mail_params),
            recipients: t
                .recipients
                .iter()
                .map(|r| Recipient { address: wit::Address::from(&r.address), params: params(&r.params) })
                .collect(),
            message_size: t.message.as_ref().map(|m| m.size),
        })
    }

    fn connection_note(&mut self, key: String) -> Option<String> {
        notes::get(&self.call.connection.notes, &self.meta.chain, &key).map(str::to_string)
    }

    fn set_connection_note(&mut self, key: String, value: Option<String>) -> Result<(), String> {
        notes::set(&mut self.call.connection.notes, &self.meta.chain, self.meta.index, key, value)
    }

    fn transaction_note(&mut self, key: String) -> Option<String> {
        notes::get(&self.call.transaction.as_ref()?.notes, &self.meta.chain, &key).map(str::to_string)
    }

    fn set_transaction_note(&mut self, key: String, value: Option<String>) -> Result<(), String> {
        let t = self.call.transaction.as_mut().ok_or("no transaction in progress")?;
        notes::set(&mut t.notes, &self.meta.chain, self.meta.index, key, value)
    }

    fn headers(&mut self) -> Result<Vec<Header>, String> {
        Ok(self.message()?.headers())
    }

    fn add_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.message()?.add_header(&name, &value)
    }

    fn remove_header(&mut self, name: String) -> Result<u32, String> {
        Ok(self.message()?.remove_header(&name))
    }

    fn message_size(&mut self) -> Result<u64, String> {
        Ok(self.message()?.size())
    }

    fn read_message(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        self.message()?.read(offset, len)
    }

    fn temp_file(&mut self) -> Result<String, String> {
        self.temp.temp_file()
    }

    fn temp_dir(&mut self) -> Result<String, String> {
        self.temp.temp_dir()
    }

    fn spool_dir(&mut self) -> String {
        ".".to_string()
    }

    fn write_file(&mut self, name: String, offset: u64, data: Vec<u8>) -> Result<(), String> {
        self.temp.write(&name, offset, &data)
    }

    fn read_file(&mut self, name: String, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        self.temp.read(&name, offset, len)
    }

    fn remove_file(&mut self, name: String) -> Result<(), String> {
        self.temp.remove(&name)
    }
}

impl PluginState {
    /// The message of the current transaction, opened on first use.
    fn message(&mut self) -> Result<&mut message::MessageView, String> {
        if self.call.message.is_none() {
            let received = self
                .call
                .transaction
                .as_ref()
                .and_then(|t| t.message.as_ref())
                .ok_or("no message yet: the message is readable from data_post on")?;
            self.call.message = Some(message::MessageView::open(received)?);
        }
        Ok(self.call.message.as_mut().expect("just set"))
    }
}
