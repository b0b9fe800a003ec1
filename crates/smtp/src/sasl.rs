//! SMTP AUTH (RFC 4954) as pure data: the SASL exchanges of the PLAIN (RFC 4616) and LOGIN
//! mechanisms, from the `AUTH` command's initial response to the credentials a plugin checks.
//!
//! The connection task starts an [`Exchange`] for `AUTH <mechanism> [initial-response]`, sends
//! each [`Step::Challenge`] as a `334` reply, feeds every client line to
//! [`Exchange::respond`], and stops at [`Step::Done`]. Base64 and the mechanisms' framing are
//! handled here; whether the credentials are right is the `auth` hooks' business.
//!
//! The password is a [`Secret`]: its `Debug` prints `[redacted]`, so it cannot reach a log by
//! accident.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Longest SASL response line we read, with CRLF (RFC 4954 section 4: 12288 octets).
pub const MAX_RESPONSE_LINE: usize = 12288;

/// The SASL mechanisms the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616: `authzid NUL authcid NUL password`, in one response.
    Plain,
    /// The de-facto LOGIN mechanism: user name and password, each prompted for.
    Login,
    /// Not one the server runs or offers: a login a trusted front end reported with XCLIENT
    /// LOGIN (the client authenticated there).
    Xclient,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

    /// The mechanism named `name` (case-insensitive), if we implement it.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// How many response lines follow `AUTH <mechanism>` (with or without an initial
    /// response) when every challenge is answered: what a client that does not wait for the
    /// `334` challenges sends right behind the command.
    pub fn responses(self, initial_response: bool) -> u8 {
        match (self, initial_response) {
            (Mechanism::Plain, false) => 1,
            (Mechanism::Plain, true) => 0,
            (Mechanism::Login, false) => 2,
            (Mechanism::Login, true) => 1,
            (Mechanism::Xclient, _) => 0,
        }
    }

    /// The IANA name, as advertised in `250-AUTH`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::Xclient => "XCLIENT",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A password: printed as `[redacted]`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The password itself, for the one place that needs it (the hook call).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the client proved it knows, for the `auth` hooks to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: Mechanism,
    /// The authentication identity (PLAIN's authcid, LOGIN's user name).
    pub user: String,
    pub password: Secret,
}

/// Why an exchange ended without credentials. Each maps to one reply (see [`SaslError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("the client cancelled the exchange")]
    Cancelled,
    #[error("the response is not valid base64")]
    BadBase64,
    #[error("the response is not a valid {0} message")]
    Malformed(Mechanism),
    #[error("authorization identity differs from authentication identity")]
    AuthzidNotPermitted,
}

impl SaslError {
    pub fn reply(&self) -> crate::Reply {
        match self {
            SaslError::Cancelled => crate::reply::auth_cancelled(),
            SaslError::BadBase64 | SaslError::Malformed(_) => crate::reply::auth_bad_response(),
            // We never act for another identity (RFC 4616 section 2: the server may refuse).
            SaslError::AuthzidNotPermitted => crate::reply::auth_failed(),
        }
    }
}

/// The next thing to do in an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <challenge>` (already base64) and read the client's response line.
    Challenge(&'static str),
    /// The exchange is over.
    Done(Result<Credentials, SaslError>),
}

#[derive(Debug, Clone)]
enum State {
    /// PLAIN without an initial response: waiting for it.
    PlainResponse,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password of this user.
    LoginPassword(String),
    Finished,
}

/// One SASL exchange, from `AUTH` to its outcome.
#[derive(Debug, Clone)]
pub struct Exchange {
    mechanism: Mechanism,
    state: State,
}

/// LOGIN's prompts, base64 of "Username:" and "Password:".
const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

impl Exchange {
    /// Starts an exchange for `AUTH <mechanism> [initial-response]`. The initial response is
    /// base64, or `=` for an empty one (RFC 4954 section 4).
    pub fn start(mechanism: Mechanism, initial_response: Option<&str>) -> (Exchange, Step) {
        let mut ex = Exchange { mechanism, state: State::Finished };
        let step = match (mechanism, initial_response) {
            (Mechanism::Plain, None) => {
                ex.state = State::PlainResponse;
                Step::Challenge("")
            }
            (Mechanism::Plain, Some(r)) => Step::Done(decode(r).and_then(|b| plain(&b))),
            (Mechanism::Login, None) => {
                ex.state = State::LoginUser;
                Step::Challenge(LOGIN_USER_PROMPT)
            }
            // Some clients send the user name with `AUTH LOGIN <base64 user>`.
            (Mechanism::Login, Some(r)) => match decode(r).and_then(|b| login_text(&b)) {
                Ok(user) => {
                    ex.state = State::LoginPassword(user);
                    Step::Challenge(LOGIN_PASSWORD_PROMPT)
                }
                Err(e) => Step::Done(Err(e)),
            },
            (Mechanism::Xclient, _) => Step::Done(Err(SaslError::Malformed(mechanism))),
        };
        (ex, step)
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds one response line (without CRLF). `*` cancels (RFC 4954 section 4).
    pub fn respond(&mut self, line: &[u8]) -> Step {
        let state = std::mem::replace(&mut self.state, State::Finished);
        if line == b"*" {
            return Step::Done(Err(SaslError::Cancelled));
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return Step::Done(Err(SaslError::BadBase64));
        };
        match state {
            State::PlainResponse => Step::Done(decode(line).and_then(|b| plain(&b))),
            State::LoginUser => match decode(line).and_then(|b| login_text(&b)) {
                Ok(user) => {
                    self.state = State::LoginPassword(user);
                    Step::Challenge(LOGIN_PASSWORD_PROMPT)
                }
                Err(e) => Step::Done(Err(e)),
            },
            State::LoginPassword(user) => {
                Step::Done(decode(line).and_then(|b| login_text(&b)).map(|password| Credentials {
                    mechanism: Mechanism::Login,
                    user,
                    password: Secret(password),
                }))
            }
            State::Finished => Step::Done(Err(SaslError::Malformed(self.mechanism))),
        }
    }
}

/// Base64 (standard alphabet, padded); `=` alone is the empty response.
fn decode(s: &str) -> Result<Vec<u8>, SaslError> {
    let s = s.trim_end();
    if s == "=" {
        return Ok(Vec::new());
    }
    BASE64.decode(s).map_err(|_| SaslError::BadBase64)
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`, UTF-8, no NUL inside the parts, authcid and
/// password not empty. An authzid other than the authcid is refused.
fn plain(bytes: &[u8]) -> Result<Credentials, SaslError> {
    let malformed = SaslError::Malformed(Mechanism::Plain);
    let text = std::str::from_utf8(bytes).map_err(|_| malformed.clone())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    if authcid.is_empty() || password.is_empty() || !printable(authcid) || has_control(password) {
        return Err(malformed);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidNotPermitted);
    }
    Ok(Credentials { mechanism: Mechanism::Plain, user: authcid.to_string(), password: Secret(password.to_string()) })
}

/// LOGIN: one UTF-8 text per response, not empty, no control characters.
fn login_text(bytes: &[u8]) -> Result<String, SaslError> {
    let malformed = SaslError::Malformed(Mechanism::Login);
    let text = std::str::from_utf8(bytes).map_err(|_| malformed.clone())?;
    if text.is_empty() || has_control(text) {
        return Err(malformed);
    }
    Ok(text.to_string())
}

/// A user name that can safely appear in a log line or a reply.
fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control) && s.len() <= 255
}

/// Control characters (CR, LF, NUL, ...) are never part of a user name or password we accept.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Base64 of `bytes` (for tests and clients).
pub fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(step: Step) -> Result<Credentials, SaslError> {
        match step {
            Step::Done(r) => r,
            s => panic!("expected the end of the exchange, got {s:?}"),
        }
    }

    #[test]
    fn plain_with_initial_response() {
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&encode(b"\0alice\0s3cret pass")));
        let c = done(step).unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("alice", "s3cret pass"));
        assert!(!format!("{c:?}").contains("s3cret"), "the password never prints");
        // authzid equal to authcid is fine; another one is refused.
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&encode(b"alice\0alice\0pw")));
        assert!(done(step).is_ok());
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&encode(b"root\0alice\0pw")));
        assert_eq!(done(step), Err(SaslError::AuthzidNotPermitted));
    }

    #[test]
    fn plain_with_a_challenge() {
        let (mut ex, step) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(step, Step::Challenge(""));
        let c = done(ex.respond(encode(b"\0bob\0pw").as_bytes())).unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(c.mechanism, Mechanism::Plain);
    }

    #[test]
    fn login_prompts_for_user_then_password() {
        let (mut ex, step) = Exchange::start(Mechanism::Login, None);
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6"));
        assert_eq!(ex.respond(encode(b"carol").as_bytes()), Step::Challenge("UGFzc3dvcmQ6"));
        let c = done(ex.respond(encode("pässword".as_bytes()).as_bytes())).unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("carol", "pässword"));
        // The user name may come with the command.
        let (mut ex, step) = Exchange::start(Mechanism::Login, Some(&encode(b"dave")));
        assert_eq!(step, Step::Challenge("UGFzc3dvcmQ6"));
        assert_eq!(done(ex.respond(encode(b"pw").as_bytes())).unwrap().user, "dave");
    }

    #[test]
    fn bad_responses() {
        let (mut ex, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(done(ex.respond(b"*")), Err(SaslError::Cancelled));
        let (mut ex, _) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(done(ex.respond(b"not base64!")), Err(SaslError::BadBase64));
        for bad in [&b"alice"[..], b"\0alice", b"\0\0pw", b"\0alice\0", b"\0al\nice\0pw", b"a\0b\0c\0d", b"\0\xff\0pw"]
        {
            let (_, step) = Exchange::start(Mechanism::Plain, Some(&encode(bad)));
            assert_eq!(done(step), Err(SaslError::Malformed(Mechanism::Plain)), "{bad:?}");
        }
        let (_, step) = Exchange::start(Mechanism::Plain, Some("="));
        assert_eq!(done(step), Err(SaslError::Malformed(Mechanism::Plain)), "empty response");
        let (mut ex, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(done(ex.respond(b"=")), Err(SaslError::Malformed(Mechanism::Login)), "empty user");
    }

    #[test]
    fn responses_count_the_challenges_of_a_successful_exchange() {
        let initial = |m| match m {
            Mechanism::Plain => encode(b"\0alice\0pw"),
            Mechanism::Login => encode(b"alice"),
            Mechanism::Xclient => unreachable!("not in ALL"),
        };
        for m in Mechanism::ALL {
            for with_initial in [false, true] {
                let first = with_initial.then(|| initial(m));
                let (mut ex, mut step) = Exchange::start(m, first.as_deref());
                let mut challenges = 0;
                while let Step::Challenge(_) = step {
                    challenges += 1;
                    let response = if m == Mechanism::Plain || (challenges == 1 && !with_initial) {
                        initial(m)
                    } else {
                        encode(b"pw")
                    };
                    step = ex.respond(response.as_bytes());
                }
                assert!(done(step).is_ok(), "{m} {with_initial}");
                assert_eq!(challenges, m.responses(with_initial), "{m} with initial response: {with_initial}");
            }
        }
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("LOGIN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::parse("CRAM-MD5"), None);
    }
}
