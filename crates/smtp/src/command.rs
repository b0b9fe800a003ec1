//! One SMTP command line → [`Command`]. This is where MAIL FROM and RCPT TO are parsed.
//!
//! The parser is strict and total: any byte string gives either a command or a
//! [`CommandError`] that maps to one reply; it never panics (see `fuzz/`).
//! - The verb is case-insensitive, 1 to 12 letters (qpsmtpd's rule); anything else is an
//!   unrecognized command, handed to the `unrecognized_command` hook with its arguments.
//! - Control characters anywhere in the line are a syntax error (they never reach a hook).
//! - `MAIL FROM:` and `RCPT TO:` take a bracketed path (see [`crate::address`]); one space after
//!   the colon is tolerated, as nearly every server does.
//! - ESMTP parameters are `KEYWORD[=value]` (RFC 5321 4.1.2); keywords are upper-cased; a
//!   repeated keyword is an error. SIZE is parsed as a number that may not overflow; BODY must be
//!   7BIT, 8BITMIME or BINARYMIME; SMTPUTF8 takes no value.
//! - `BDAT <size> [LAST]` (RFC 3030) is parsed exactly: the server must know how many octets
//!   of chunk follow the line, whether it takes or refuses them (a chunk is message text, never
//!   commands). A BDAT without a valid size is its own error, [`CommandError::BadBdat`].

use crate::address::{self, Address, AddressError};

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `MAIL FROM:<path>`; `from` is `None` for the null reverse path `<>`.
    Mail {
        from: Option<Address>,
        params: MailParams,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        to: Address,
        params: Vec<EsmtpParam>,
    },
    Data,
    Rset,
    Noop,
    Vrfy(String),
    Help(String),
    Quit,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The mechanism is upper-cased; the
    /// initial response is still base64 (`=` for an empty one).
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
    /// `BDAT chunk-size [LAST]` (RFC 3030): `size` octets of message follow the line at once,
    /// without waiting for a reply. They are message text, taken or refused, and never read as
    /// commands.
    Bdat {
        size: u64,
        last: bool,
    },
    /// `XCLIENT attribute=value ...` (Postfix): a trusted front end's facts of its client.
    Xclient(crate::xclient::Xclient),
    /// A known SMTP verb this server does not implement (EXPN, TURN, ...): 502.
    NotImplemented(String),
    /// Anything else: handed to the `unrecognized_command` hook.
    Unrecognized {
        verb: String,
        args: Vec<String>,
    },
}

/// The parameters of MAIL FROM that the engine itself understands, and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152); `false` for `BODY=7BIT` or no BODY.
    pub body_8bitmime: bool,
    /// `BODY=BINARYMIME` (RFC 3030 section 3): the message comes by BDAT only, and may hold
    /// any octet.
    pub binarymime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET` and `ENVID` (RFC 3461).
    pub dsn: crate::dsn::MailDsn,
    /// Every other parameter, in order.
    pub other: Vec<EsmtpParam>,
}

/// One ESMTP parameter: upper-cased keyword, optional value (never containing controls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmtpParam {
    pub keyword: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("line contains control characters or invalid UTF-8")]
    BadCharacters,
    #[error("{0} requires a domain or address")]
    MissingHelloArgument(&'static str),
    #[error("expected {0}")]
    Syntax(&'static str),
    #[error("{0}")]
    Address(#[from] AddressError),
    #[error("malformed ESMTP parameter")]
    BadParameter,
    #[error("duplicate ESMTP parameter {0}")]
    DuplicateParameter(String),
    #[error("SIZE value is not a number in range")]
    BadSize,
    #[error("BODY must be 7BIT, 8BITMIME or BINARYMIME")]
    BadBody,
    #[error("SMTPUTF8 takes no value")]
    BadSmtputf8,
    /// A BDAT line without a valid chunk size: where its chunk ends is unknown, so nothing
    /// after it can be trusted to be a command.
    #[error("BDAT <chunk-size> [LAST]")]
    BadBdat,
    #[error("{0}")]
    Dsn(#[from] crate::dsn::DsnError),
    /// A malformed XCLIENT (answered 550 instead when the client may not use XCLIENT at all).
    #[error("{0}")]
    Xclient(#[from] crate::xclient::XclientError),
}

impl Command {
    /// Parses one command line, without its CRLF.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        // Every control character (including CR, LF, NUL, TAB, DEL) is refused here, so none can
        // ride in a parameter, an address or a HELO name into a header, a log or a plugin.
        let line = std::str::from_utf8(line).map_err(|_| CommandError::BadCharacters)?;
        if line.chars().any(char::is_control) {
            return Err(CommandError::BadCharacters);
        }
        let (verb, rest) = match line.split_once(' ') {
            Some((v, r)) => (v, r),
            None => (line, ""),
        };
        if verb.is_empty() || verb.len() > 12 || !verb.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Ok(unrecognized(line));
        }
        let upper = verb.to_ascii_uppercase();
        let cmd = match upper.as_str() {
            "HELO" => Command::Helo(hello_argument(rest, "HELO")?),
            "EHLO" => Command::Ehlo(hello_argument(rest, "EHLO")?),
            "MAIL" => parse_mail(rest)?,
            "RCPT" => parse_rcpt(rest)?,
            "DATA" => no_argument(rest, Command::Data, "DATA with no argument")?,
            "RSET" => no_argument(rest, Command::Rset, "RSET with no argument")?,
            "QUIT" => no_argument(rest, Command::Quit, "QUIT with no argument")?,
            // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
            "NOOP" => Command::Noop,
            "VRFY" if rest.trim().is_empty() => return Err(CommandError::Syntax("VRFY <string>")),
            "VRFY" => Command::Vrfy(rest.trim().to_string()),
            "HELP" => Command::Help(rest.trim().to_string()),
            "STARTTLS" => no_argument(rest, Command::StartTls, "STARTTLS with no argument")?,
            "AUTH" => parse_auth(rest)?,
            "BDAT" => parse_bdat(rest)?,
            "XCLIENT" => Command::Xclient(crate::xclient::parse(rest)?),
            "EXPN" | "TURN" | "ATRN" | "ETRN" | "SEND" | "SOML" | "SAML" => Command::NotImplemented(upper),
            _ => unrecognized(line),
        };
        Ok(cmd)
    }
}

/// The verbs of the commands this server carries out (not the ones it answers 502).
const IMPLEMENTED_VERBS: [&str; 14] = [
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "VRFY", "HELP", "QUIT", "STARTTLS", "AUTH", "BDAT",
    "XCLIENT",
];

/// Whether `line` starts with the verb of a command this server carries out (any case),
/// followed by a space or the end of the line. Used where a line may be either a command or a
/// SASL response (after a refused AUTH, see the server's `connection/auth.rs`): base64 has no
/// space, so a response can only look like a verb without arguments, and none of those repeats
/// its line in a reply or a log.
pub fn names_an_implemented_verb(line: &[u8]) -> bool {
    let verb = line.split(|&b| b == b' ').next().unwrap_or_default();
    IMPLEMENTED_VERBS.iter().any(|v| v.as_bytes().eq_ignore_ascii_case(verb))
}

fn unrecognized(line: &str) -> Command {
    let mut words = line.split(' ').filter(|w| !w.is_empty()).map(str::to_string);
    let verb = words.next().unwrap_or_default();
    Command::Unrecognized { verb, args: words.collect() }
}

fn no_argument(rest: &str, cmd: Command, expected: &'static str) -> Result<Command, CommandError> {
    if rest.trim().is_empty() { Ok(cmd) } else { Err(CommandError::Syntax(expected)) }
}

fn hello_argument(rest: &str, verb: &'static str) -> Result<String, CommandError> {
    // RFC 5321: EHLO SP ( Domain / address-literal ). We accept any single word: a client's
    // idea of its own name is not ours to police here (check_spamhelo-style plugins do that).
    let arg = rest.trim();
    match arg.split_whitespace().next() {
        Some(word) if word.len() <= address::MAX_DOMAIN + 2 => Ok(word.to_string()),
        Some(_) => Err(CommandError::Syntax("a domain of at most 255 octets")),
        None => Err(CommandError::MissingHelloArgument(verb)),
    }
}

/// `AUTH SP mechanism [SP initial-response]` (RFC 4954 section 4). A mechanism name is 1 to 20
/// of `A-Z 0-9 - _` (RFC 4422 section 3.1).
fn parse_auth(rest: &str) -> Result<Command, CommandError> {
    let mut words = rest.split(' ');
    let (Some(mechanism), initial, None) = (words.next(), words.next(), words.next()) else {
        return Err(CommandError::Syntax("AUTH <mechanism> [<initial response>]"));
    };
    let valid = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    if mechanism.is_empty() || mechanism.len() > 20 || !mechanism.bytes().all(valid) {
        return Err(CommandError::Syntax("AUTH <mechanism> [<initial response>]"));
    }
    if initial.is_some_and(str::is_empty) {
        return Err(CommandError::Syntax("AUTH <mechanism> [<initial response>]"));
    }
    Ok(Command::Auth { mechanism: mechanism.to_ascii_uppercase(), initial_response: initial.map(str::to_string) })
}

/// `BDAT SP chunk-size [SP end-marker]` (RFC 3030 section 2): chunk-size = 1*DIGIT (it must
/// fit in a u64), end-marker = `LAST` (any case, like every SMTP keyword). Nothing else may
/// follow, and the separators are single spaces (trailing spaces are harmless).
fn parse_bdat(rest: &str) -> Result<Command, CommandError> {
    let mut words = rest.trim_end_matches(' ').split(' ');
    let (Some(size), marker, None) = (words.next(), words.next(), words.next()) else {
        return Err(CommandError::BadBdat);
    };
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::BadBdat);
    }
    let size = size.parse().map_err(|_| CommandError::BadBdat)?;
    let last = match marker {
        None => false,
        Some(m) if m.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::BadBdat),
    };
    Ok(Command::Bdat { size, last })
}

/// `MAIL FROM:<reverse-path> [SP mail-parameters]`
pub fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let args = strip_keyword(rest, "FROM:").ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
    let (path, params) = split_path(args)?;
    let from = address::parse_path(path, false)?;
    let mut mail = MailParams::default();
    for p in parse_params(params)? {
        match (p.keyword.as_str(), p.value.as_deref()) {
            ("SIZE", Some(v)) => mail.size = Some(parse_size(v)?),
            ("SIZE", None) => return Err(CommandError::BadSize),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => mail.body_8bitmime = true,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => mail.body_8bitmime = false,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => mail.binarymime = true,
            ("BODY", _) => return Err(CommandError::BadBody),
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            ("SMTPUTF8", Some(_)) => return Err(CommandError::BadSmtputf8),
            ("RET", v) => mail.dsn.ret = Some(crate::dsn::ret(v)?),
            ("ENVID", v) => mail.dsn.envid = Some(crate::dsn::envid(v)?),
            _ => mail.other.push(p),
        }
    }
    Ok(Command::Mail { from, params: mail })
}

/// `RCPT TO:<forward-path> [SP rcpt-parameters]`; `<postmaster>` is allowed, `<>` is not.
pub fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let args = strip_keyword(rest, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let (path, params) = split_path(args)?;
    let to = address::parse_path(path, true)?.ok_or(CommandError::Syntax("a recipient address, not <>"))?;
    let params = parse_params(params)?;
    rcpt_dsn(&params)?;
    Ok(Command::Rcpt { to, params })
}

/// The DSN parameters among a RCPT's (RFC 3461: NOTIFY and ORCPT), checked.
pub fn rcpt_dsn(params: &[EsmtpParam]) -> Result<crate::dsn::RcptDsn, CommandError> {
    let mut dsn = crate::dsn::RcptDsn::default();
    for p in params {
        match p.keyword.as_str() {
            "NOTIFY" => dsn.notify = Some(crate::dsn::notify(p.value.as_deref())?),
            "ORCPT" => dsn.orcpt = Some(crate::dsn::orcpt(p.value.as_deref())?),
            _ => {}
        }
    }
    Ok(dsn)
}

fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let args = &rest[keyword.len()..];
    // Tolerate `FROM: <a@b>`, a common deviation; more than one space is still an error.
    Some(args.strip_prefix(' ').unwrap_or(args))
}

/// Splits `<path> params` at the `>` that closes the path (a `>` inside a quoted local part
/// does not count).
fn split_path(s: &str) -> Result<(&str, &str), CommandError> {
    if !s.starts_with('<') {
        return Err(AddressError::NotBracketed.into());
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => {
                let (path, rest) = s.split_at(i + 1);
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return Err(CommandError::Syntax("a space between the address and its parameters"));
                }
                return Ok((path, rest.trim_start_matches(' ')));
            }
            _ => {}
        }
    }
    Err(AddressError::NotBracketed.into())
}

/// A MAIL or RCPT line whose address is not in angle brackets. The `mail_pre` and `rcpt_pre`
/// hooks may rewrite it (qpsmtpd's dont_require_anglebrackets); with no rewrite it is a 501.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnbracketedPath {
    /// `MAIL FROM:` or `RCPT TO:`.
    pub verb: &'static str,
    /// The address as written.
    pub path: String,
    /// The parameters after it, as written.
    pub params: String,
}

impl UnbracketedPath {
    /// Finds an unbracketed address in a MAIL or RCPT line (which is otherwise well-formed text).
    pub fn find(line: &[u8]) -> Option<UnbracketedPath> {
        let line = std::str::from_utf8(line).ok()?;
        if line.chars().any(char::is_control) {
            return None;
        }
        let (verb, rest) = line.split_once(' ')?;
        let (verb, keyword) = match verb.to_ascii_uppercase().as_str() {
            "MAIL" => ("MAIL FROM:", "FROM:"),
            "RCPT" => ("RCPT TO:", "TO:"),
            _ => return None,
        };
        let args = strip_keyword(rest, keyword)?;
        let (path, params) = args.split_once(' ').unwrap_or((args, ""));
        if path.is_empty() || path.starts_with('<') {
            return None;
        }
        Some(UnbracketedPath { verb, path: path.to_string(), params: params.to_string() })
    }

    /// The command line with `path` (a plugin's rewrite) in place of the address.
    pub fn rewrite(&self, path: &str) -> Vec<u8> {
        let mut line = format!("{}{}", self.verb, path);
        if !self.params.is_empty() {
            line.push(' ');
            line.push_str(&self.params);
        }
        line.into_bytes()
    }
}

/// `esmtp-param *(SP esmtp-param)`: keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"),
/// value = 1*(%d33-60 / %d62-126 / UTF-8 non-ASCII).
pub fn parse_params(s: &str) -> Result<Vec<EsmtpParam>, CommandError> {
    let mut params: Vec<EsmtpParam> = Vec::new();
    let s = s.trim_end_matches(' '); // trailing spaces are harmless
    if s.is_empty() {
        return Ok(params);
    }
    for word in s.split(' ') {
        if word.is_empty() {
            return Err(CommandError::BadParameter);
        }
        let (keyword, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let kb = keyword.as_bytes();
        if kb.is_empty()
            || !kb[0].is_ascii_alphanumeric()
            || !kb.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return Err(CommandError::BadParameter);
        }
        if let Some(v) = value
            && (v.is_empty()
                || !v.chars().all(|c| (c.is_ascii_graphic() && c != '=') || (!c.is_ascii() && !c.is_control())))
        {
            return Err(CommandError::BadParameter);
        }
        let keyword = keyword.to_ascii_uppercase();
        if let Some(earlier) = params.iter().find(|p| p.keyword == keyword) {
            // Real clients repeat themselves: Python's smtplib adds SMTPUTF8 to a MAIL whose
            // options already have it. The same parameter again means nothing new; the same
            // keyword with another value is a contradiction.
            if earlier.value.as_deref() == value {
                continue;
            }
            return Err(CommandError::DuplicateParameter(keyword));
        }
        params.push(EsmtpParam { keyword, value: value.map(str::to_string) });
    }
    Ok(params)
}

/// RFC 1870 size-value = 1*20DIGIT, which must fit in a u64 (no silent wrap-around).
fn parse_size(v: &str) -> Result<u64, CommandError> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::BadSize);
    }
    v.parse().map_err(|_| CommandError::BadSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("quit"), Ok(Command::Quit));
        assert_eq!(p("DaTa"), Ok(Command::Data));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("NOOP hello"), Ok(Command::Noop));
        assert_eq!(p("HELP mail"), Ok(Command::Help("mail".into())));
        assert_eq!(p("VRFY bob"), Ok(Command::Vrfy("bob".into())));
        assert_eq!(p("EHLO client.example"), Ok(Command::Ehlo("client.example".into())));
        assert_eq!(p("HELO [192.0.2.1]"), Ok(Command::Helo("[192.0.2.1]".into())));
        assert_eq!(p("EXPN list"), Ok(Command::NotImplemented("EXPN".into())));
        assert_eq!(p("TURN"), Ok(Command::NotImplemented("TURN".into())));
        assert!(matches!(p("DATA x"), Err(CommandError::Syntax(_))));
        assert!(matches!(p("EHLO"), Err(CommandError::MissingHelloArgument("EHLO"))));
        assert!(matches!(p("VRFY"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn starttls_and_auth() {
        assert_eq!(p("STARTTLS"), Ok(Command::StartTls));
        assert_eq!(p("starttls"), Ok(Command::StartTls));
        assert!(matches!(p("STARTTLS now"), Err(CommandError::Syntax(_))));
        assert_eq!(p("AUTH plain"), Ok(Command::Auth { mechanism: "PLAIN".into(), initial_response: None }));
        assert_eq!(
            p("AUTH PLAIN AGFsaWNlAHB3"),
            Ok(Command::Auth { mechanism: "PLAIN".into(), initial_response: Some("AGFsaWNlAHB3".into()) })
        );
        assert_eq!(
            p("AUTH LOGIN ="),
            Ok(Command::Auth { mechanism: "LOGIN".into(), initial_response: Some("=".into()) })
        );
        assert_eq!(
            p("AUTH SCRAM-SHA-256"),
            Ok(Command::Auth { mechanism: "SCRAM-SHA-256".into(), initial_response: None })
        );
        for bad in ["AUTH", "AUTH ", "AUTH PLAIN a b", "AUTH PLAIN  a", "AUTH PL@IN", "AUTH ABCDEFGHIJKLMNOPQRSTU"] {
            assert!(matches!(p(bad), Err(CommandError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn implemented_verbs() {
        for verb in IMPLEMENTED_VERBS {
            let line = format!("{verb} x");
            assert!(names_an_implemented_verb(line.as_bytes()) && names_an_implemented_verb(verb.as_bytes()));
            assert!(names_an_implemented_verb(verb.to_ascii_lowercase().as_bytes()));
            let parsed = p(&line);
            assert!(
                !matches!(parsed, Ok(Command::Unrecognized { .. } | Command::NotImplemented(_))),
                "{verb}: {parsed:?}"
            );
        }
        for other in ["EXPN", "TURN", "XFORWARD", "dXNlcg==", "YWxpY2U=", "*", "", " QUIT", "QUITX", "MAIL:"] {
            assert!(!names_an_implemented_verb(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn bdat_chunk_sizes() {
        assert_eq!(p("BDAT 1000"), Ok(Command::Bdat { size: 1000, last: false }));
        assert_eq!(p("bdat 0 last"), Ok(Command::Bdat { size: 0, last: true }));
        assert_eq!(p("BDAT 42 LAST"), Ok(Command::Bdat { size: 42, last: true }));
        assert_eq!(p("BDAT 007"), Ok(Command::Bdat { size: 7, last: false }));
        assert_eq!(p("BDAT 10 "), Ok(Command::Bdat { size: 10, last: false }));
        assert_eq!(p("BDAT 18446744073709551615"), Ok(Command::Bdat { size: u64::MAX, last: false }));
        for bad in [
            "BDAT",
            "BDAT ",
            "BDAT x",
            "BDAT -1",
            "BDAT +1",
            "BDAT 1e3",
            "BDAT 18446744073709551616",
            "BDAT 123456789012345678901",
            "BDAT 10 FIRST",
            "BDAT 10 LAST x",
            "BDAT 10  LAST",
            "BDAT  10",
        ] {
            assert_eq!(p(bad), Err(CommandError::BadBdat), "{bad:?}");
        }
    }

    #[test]
    fn unrecognized_commands_keep_their_words() {
        assert_eq!(
            p("XFOO a  b"),
            Ok(Command::Unrecognized { verb: "XFOO".into(), args: vec!["a".into(), "b".into()] })
        );
        assert_eq!(p(""), Ok(Command::Unrecognized { verb: "".into(), args: vec![] }));
        assert!(matches!(p("ABCDEFGHIJKLM"), Ok(Command::Unrecognized { .. })));
        assert!(matches!(p("MAIL2 x"), Ok(Command::Unrecognized { .. })));
    }

    #[test]
    fn mail_from() {
        let Ok(Command::Mail { from, params }) = p("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8") else {
            panic!()
        };
        assert_eq!(from.unwrap().to_string(), "a@b.example");
        assert_eq!(params.size, Some(1000));
        assert!(params.body_8bitmime && params.smtputf8);
        assert!(matches!(p("mail from:<>"), Ok(Command::Mail { from: None, .. })));
        assert!(matches!(p("MAIL FROM: <a@b.example>"), Ok(Command::Mail { .. })));
        assert!(p("MAIL FROM:  <a@b.example>").is_err());
        assert!(p("MAIL FROM:a@b.example").is_err());
        assert!(p("MAIL TO:<a@b.example>").is_err());
        assert!(p("MAIL FROM:<postmaster>").is_err());
        assert!(p("MAIL FROM:<a@b.example>SIZE=1").is_err());
        let Ok(Command::Mail { params, .. }) = p("MAIL FROM:<a@b.example> ENVID=abc+2B RET=hdrs") else { panic!() };
        assert_eq!(params.dsn.envid.as_deref(), Some("abc+"), "ENVID is xtext, decoded");
        assert_eq!(params.dsn.ret, Some(crate::dsn::Ret::Hdrs));
        assert!(params.other.is_empty());
        assert_eq!(p("MAIL FROM:<a@b.example> ENVID=a+0D+0Ab"), Err(CommandError::Dsn(crate::dsn::DsnError::Envid)));
        assert!(p("MAIL FROM:<a@b.example> RET=ALL").is_err());
        assert!(p("MAIL FROM:<a@b.example> RET=FULL RET=FULL").is_ok(), "an identical repeat is one");
        let Ok(Command::Rcpt { params, .. }) =
            p("RCPT TO:<a@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b.example")
        else {
            panic!()
        };
        let dsn = rcpt_dsn(&params).unwrap();
        assert_eq!(dsn.orcpt.unwrap().address, "a@b.example");
        assert!(dsn.notify.unwrap().success);
        assert!(p("RCPT TO:<a@b.example> NOTIFY=NEVER,DELAY").is_err());
        assert!(p("RCPT TO:<a@b.example> ORCPT=rfc822;a+0Ab").is_err());
    }

    #[test]
    fn size_is_strict() {
        assert!(p("MAIL FROM:<a@b.example> SIZE=18446744073709551615").is_ok());
        for bad in ["SIZE=18446744073709551616", "SIZE=999999999999999999999", "SIZE=-1", "SIZE=1e3", "SIZE=", "SIZE"] {
            assert!(p(&format!("MAIL FROM:<a@b.example> {bad}")).is_err(), "{bad}");
        }
        assert!(p("MAIL FROM:<a@b.example> BODY=BINARY").is_err());
        assert!(
            matches!(p("MAIL FROM:<a@b.example> BODY=binarymime"), Ok(Command::Mail { params, .. }) if params.binarymime)
        );
        assert!(p("MAIL FROM:<a@b.example> SIZE=1 SIZE=2").is_err());
        assert!(p("MAIL FROM:<a@b.example> SMTPUTF8=yes").is_err());
    }

    #[test]
    fn a_parameter_repeated_as_it_was_counts_once_and_a_contradiction_is_refused() {
        // What Python's smtplib sends for send_message(msg, mail_options=["SMTPUTF8"]).
        let Ok(Command::Mail { params, .. }) = p("MAIL FROM:<j\u{fc}rgen@b.example> SMTPUTF8 SMTPUTF8 BODY=8BITMIME")
        else {
            panic!()
        };
        assert!(params.smtputf8);
        assert_eq!(p("MAIL FROM:<a@b.example> SIZE=10 size=10"), p("MAIL FROM:<a@b.example> SIZE=10"));
        assert_eq!(
            p("MAIL FROM:<a@b.example> BODY=8BITMIME BODY=7BIT"),
            Err(CommandError::DuplicateParameter("BODY".into()))
        );
        assert_eq!(parse_params("X-ONE=1 X-ONE=1 X-ONE=2"), Err(CommandError::DuplicateParameter("X-ONE".into())));
    }

    #[test]
    fn rcpt_to() {
        let Ok(Command::Rcpt { to, params }) = p("RCPT TO:<postmaster> NOTIFY=NEVER") else { panic!() };
        assert!(to.is_bare_postmaster());
        assert_eq!(params[0].keyword, "NOTIFY");
        assert!(p("RCPT TO:<>").is_err());
        assert!(p("RCPT TO:<\"a>b\"@example.com>").is_ok());
        assert!(p("RCPT FROM:<a@example.com>").is_err());
    }

    #[test]
    fn control_characters_are_refused_everywhere() {
        for bad in [
            "MAIL FROM:<a@b.example> ENVID=a\rb",
            "RCPT TO:<a@b.example>\0",
            "EHLO a\tb",
            "RCPT TO:<a\n@b.example>",
            "NOOP \x7f",
        ] {
            assert_eq!(p(bad), Err(CommandError::BadCharacters), "{bad:?}");
        }
        assert_eq!(Command::parse(b"EHLO \xff\xfe"), Err(CommandError::BadCharacters));
    }

    #[test]
    fn unbracketed_paths_for_the_pre_hooks() {
        let u = UnbracketedPath::find(b"mail from: a@b.example SIZE=10").unwrap();
        assert_eq!((u.verb, u.path.as_str(), u.params.as_str()), ("MAIL FROM:", "a@b.example", "SIZE=10"));
        assert_eq!(u.rewrite("<a@b.example>"), b"MAIL FROM:<a@b.example> SIZE=10");
        let u = UnbracketedPath::find(b"RCPT TO:c@d.example").unwrap();
        assert_eq!(u.rewrite("<c@d.example>"), b"RCPT TO:<c@d.example>");
        assert_eq!(UnbracketedPath::find(b"MAIL FROM:<a@b.example>"), None);
        assert_eq!(UnbracketedPath::find(b"MAIL FROM:a@b\r.example"), None);
        assert_eq!(UnbracketedPath::find(b"DATA x"), None);
    }
}
