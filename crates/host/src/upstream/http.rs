//! HTTP/1.1 over an upstream connection (RFC 9112), as much as a scanner's API needs: a
//! request head the plugin cannot inject a line into, and an answer read with bounds (its head
//! at most [`MAX_HEAD`] octets and [`MAX_HEADERS`] fields, its body framed by `Content-Length`,
//! chunked, or the end of the connection, at most the caller's limit).

use tokio::time::Instant;

use super::{Connection, UpstreamError};

/// The most octets of a request's or an answer's header fields.
pub const MAX_HEAD: usize = 16 << 10;
/// The most header fields of a request or an answer.
pub const MAX_HEADERS: usize = 64;

/// Header fields the host writes itself.
const RESERVED: &[&str] = &["host", "content-length", "connection", "transfer-encoding", "te", "upgrade", "trailer"];

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The head of a request, checked: `method` a token, `path` from `/` without spaces or
/// controls, each header a token and a value without controls (but tab), none of the
/// [`RESERVED`] names. `Host` is `host`, `Content-Length` `body_len`, and the connection kept
/// alive.
pub fn request_head(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    host: &str,
    body_len: u64,
) -> Result<Vec<u8>, UpstreamError> {
    let invalid = |s: String| Err(UpstreamError::Invalid(s));
    if !is_token(method) {
        return invalid(format!("`{}` is not an HTTP method", method.escape_debug()));
    }
    if !path.starts_with('/') || path.len() > 2048 || !path.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return invalid(format!("`{}` is not a request path", path.escape_debug()));
    }
    if headers.len() > MAX_HEADERS {
        return invalid(format!("{} headers (at most {MAX_HEADERS})", headers.len()));
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (name, value) in headers {
        if !is_token(name) {
            return invalid(format!("`{}` is not a header name", name.escape_debug()));
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return invalid(format!("`{name}` is written by the host"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return invalid(format!("the value of `{name}` has a control character"));
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
        if head.len() > MAX_HEAD {
            return invalid(format!("the headers are longer than {MAX_HEAD} octets"));
        }
    }
    head.extend_from_slice(format!("Content-Length: {body_len}\r\nConnection: keep-alive\r\n\r\n").as_bytes());
    Ok(head)
}

/// An answer as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub reusable: bool,
}

/// Reads an answer from `conn` by `deadline`, its body at most `max_body` octets.
pub async fn read_response(
    conn: &mut Connection,
    max_body: usize,
    deadline: Instant,
) -> Result<Response, UpstreamError> {
    let protocol = |s: &str| UpstreamError::Protocol(s.to_string());
    // The head, then whatever of the body came with it.
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD + 1024 {
            return Err(UpstreamError::TooLarge(format!("an answer head longer than {MAX_HEAD} octets")));
        }
        let chunk = conn.read(8 << 10, deadline).await?;
        if chunk.is_empty() {
            return Err(match buf.is_empty() {
                true => UpstreamError::Unavailable("the upstream closed the connection without answering".into()),
                false => protocol("the answer ends within its head"),
            });
        }
        buf.extend_from_slice(&chunk);
    };
    let head = std::str::from_utf8(&buf[..head_end - 4]).map_err(|_| protocol("the answer head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(protocol("the answer does not start with HTTP/1.x"));
    }
    let status: u16 = match parts.next().map(str::parse) {
        Some(Ok(s)) if (100..600).contains(&s) => s,
        _ => return Err(protocol("the answer has no status code")),
    };
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(protocol("a header line without a colon"));
        };
        if !is_token(name) {
            return Err(protocol("a header name that is not a token"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(UpstreamError::TooLarge(format!("an answer of more than {MAX_HEADERS} headers")));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let closes = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) || version == "HTTP/1.0";
    let chunked = get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
    let length = match get("content-length") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| protocol("a Content-Length that is not a number"))?),
        None => None,
    };
    let too_large =
        || UpstreamError::TooLarge(format!("an answer body longer than the {max_body} octets the plugin asked for"));
    let mut rest = buf.split_off(head_end);
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let (body, reusable) = if no_body {
        (Vec::new(), !closes && rest.is_empty())
    } else if chunked {
        (read_chunked(conn, rest, max_body, deadline).await?, !closes)
    } else if let Some(length) = length {
        if length > max_body as u64 {
            return Err(too_large());
        }
        while (rest.len() as u64) < length {
            let chunk = conn.read((length as usize - rest.len()).min(64 << 10), deadline).await?;
            if chunk.is_empty() {
                return Err(protocol("the answer ends before its Content-Length"));
            }
            rest.extend_from_slice(&chunk);
        }
        let extra = rest.len() as u64 > length;
        rest.truncate(length as usize);
        (rest, !closes && !extra)
    } else {
        // Until the end of the connection.
        loop {
            if rest.len() > max_body {
                return Err(too_large());
            }
            let chunk = conn.read(64 << 10, deadline).await?;
            if chunk.is_empty() {
                break (rest, false);
            }
            rest.extend_from_slice(&chunk);
        }
    };
    if body.len() > max_body {
        return Err(too_large());
    }
    Ok(Response { status, reason, headers, body, reusable })
}

/// A chunked body (RFC 9112 section 7.1), extensions and trailers read and dropped.
async fn read_chunked(
    conn: &mut Connection,
    mut buf: Vec<u8>,
    max_body: usize,
    deadline: Instant,
) -> Result<Vec<u8>, UpstreamError> {
    let protocol = |s: &str| UpstreamError::Protocol(s.to_string());
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 1024 {
                return Err(protocol("a chunk size line over 1 KiB"));
            }
            let chunk = conn.read(8 << 10, deadline).await?;
            if chunk.is_empty() {
                return Err(protocol("the answer ends within a chunk"));
            }
            buf.extend_from_slice(&chunk);
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| protocol("a chunk size that is not text"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| protocol("a chunk size that is not hex"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    if i == 0 {
                        return Ok(body);
                    }
                    buf.drain(..i + 2);
                    continue;
                }
                if buf.len() > MAX_HEAD {
                    return Err(protocol("trailers over 16 KiB"));
                }
                let chunk = conn.read(8 << 10, deadline).await?;
                if chunk.is_empty() {
                    return Err(protocol("the answer ends within its trailers"));
                }
                buf.extend_from_slice(&chunk);
            }
        }
        if size > max_body.saturating_sub(body.len()) {
            return Err(UpstreamError::TooLarge(format!(
                "an answer body longer than the {max_body} octets the plugin asked for"
            )));
        }
        while buf.len() < size + 2 {
            let chunk = conn.read(64 << 10, deadline).await?;
            if chunk.is_empty() {
                return Err(protocol("the answer ends within a chunk"));
            }
            buf.extend_from_slice(&chunk);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(protocol("a chunk not ended by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_cannot_add_a_line_or_the_hosts_own_headers() {
        let h = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        let head = request_head("POST", "/checkv2", &h("Rcpt", "<a@example.com>"), "rspamd", 12).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /checkv2 HTTP/1.1\r\nHost: rspamd\r\nRcpt: <a@example.com>\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
        );
        for (m, p, hs) in [
            ("PO ST", "/", h("a", "b")),
            ("POST", "checkv2", h("a", "b")),
            ("POST", "/a b", h("a", "b")),
            ("POST", "/", h("X", "a\r\nEvil: 1")),
            ("POST", "/", h("Bad Name", "v")),
            ("POST", "/", h("content-length", "1")),
            ("POST", "/", h("Host", "elsewhere")),
        ] {
            assert!(matches!(request_head(m, p, &hs, "h", 0), Err(UpstreamError::Invalid(_))), "{m} {p} {hs:?}");
        }
    }
}
