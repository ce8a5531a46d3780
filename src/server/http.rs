//! The HTTP side of the web listeners and `web = true`, pure: whether a connection's first bytes
//! are an HTTP request line (`sniff`), what a complete request head gets
//! (`judge`: the WebSocket upgrade, the chat page, or an HTTP error), and
//! the responses' bytes. It never reads a socket and keeps no state: the gate in
//! `transport` holds the bytes and writes the answers. See
//! `design/protocol.md`, "WebSocket", and `design/security.md`, "Browsers".

use crate::websocket;
use std::time::Duration;

/// How long a shared `web = true` listener holds the 210 greeting for a client
/// that has sent nothing (counted once TLS is up): long enough for a
/// browser's request to arrive, short enough that `nc` users do not notice.
/// A web listener (`web_listen`) greets only after an upgrade, with no delay.
pub const GREETING_DELAY: Duration = Duration::from_millis(150);
/// The longest request head (request line and headers) accepted; longer
/// gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// `Retry-After` of the 503 a full server answers on a web listener: about
/// how long a reconnect storm takes to pass.
const FULL_RETRY_AFTER: &str = "Retry-After: 5\r\n";
/// Headers a request may have.
const MAX_HEADERS: usize = 64;
/// The request-line starts of every HTTP method a client would send.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// The `web_*` settings: who may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// Allowed `Origin`s, lower-case; empty: only the page's own origin
    /// (the request's `Host` with the listener's scheme).
    origins: Vec<String>,
}

impl WebSettings {
    /// `origins` as configured (checked by the config: `http(s)://host[:port]`).
    pub fn new(origins: &[String]) -> WebSettings {
        WebSettings {
            origins: origins
                .iter()
                .map(|origin| origin.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a page at `origin` may open a WebSocket to `host`.
    fn allows(&self, origin: &str, scheme: Scheme, host: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.origins.is_empty() {
            return origin == format!("{}://{}", scheme.name(), host.to_ascii_lowercase());
        }
        self.origins.contains(&origin)
    }
}

/// Whether a configured origin is spelled as browsers send one:
/// `http://host` or `https://host:port`, no path, no trailing slash.
pub fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]_".contains(&byte))
}

/// The listener's scheme, for the page's own origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What a connection's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// An HTTP request line begins.
    Http,
    /// Protocol lines (JSON or text): greet and read them as lines.
    Lines,
    /// Too few bytes to tell (a prefix of `GET `…).
    Undecided,
}

/// Whether `bytes`, the first a connection sent, begin an HTTP request.
pub fn sniff(bytes: &[u8]) -> Sniff {
    let mut verdict = Sniff::Lines;
    for method in METHODS {
        if bytes.starts_with(method) {
            return Sniff::Http;
        }
        if method.starts_with(bytes) {
            verdict = Sniff::Undecided;
        }
    }
    verdict
}

/// An HTTP answer riftd gives, with its status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    UpgradeRequired,
    HeadTooLarge,
    Unavailable,
    /// 503 at accept on a web listener: `max_connections` or
    /// `max_connections_per_ip` reached.
    Full,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::UpgradeRequired => 426,
            Status::HeadTooLarge => 431,
            Status::Unavailable | Status::Full => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::Unavailable | Status::Full => "Service Unavailable",
        }
    }

    /// The body: one line for a person who opened the address.
    fn body(self) -> &'static str {
        match self {
            Status::BadRequest => "riftd: malformed request\n",
            Status::Forbidden => "riftd: this origin may not open a WebSocket here\n",
            Status::NotFound => {
                "riftd: no page here; the chat is at / (WebSocket clients upgrade on GET /)\n"
            }
            Status::MethodNotAllowed => "riftd: only GET and HEAD are served\n",
            Status::RequestTimeout => "riftd: the request took too long\n",
            Status::UpgradeRequired => "riftd: WebSocket version 13 only\n",
            Status::HeadTooLarge => "riftd: request head too large\n",
            Status::Unavailable => "riftd: going down\n",
            Status::Full => "riftd: server full; try again later\n",
        }
    }

    /// Headers the status calls for, each ending in CRLF.
    fn extra_headers(self) -> &'static str {
        match self {
            Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
            Status::UpgradeRequired => "Sec-WebSocket-Version: 13\r\n",
            Status::Full => FULL_RETRY_AFTER,
            _ => "",
        }
    }
}

/// The whole response for an HTTP error; the connection closes after it.
pub fn error_response(status: Status) -> Vec<u8> {
    let body = status.body();
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{body}",
        status.code(),
        status.reason(),
        body.len(),
        status.extra_headers(),
    )
    .into_bytes()
}

/// riftd's chat page: one self-contained file, compiled in.
pub const PAGE: &str = include_str!("../web/index.html");

/// The SHA-256 of the page's one inline script, which the
/// `Content-Security-Policy` allows and nothing else (a test checks it
/// against `PAGE`: change both together).
const SCRIPT_HASH: &str = "sha256-ulWY5C+v1oJ2xyr9F+8iZDhDAC43EsiTme4LMqx64cQ=";

/// The page's `Content-Security-Policy`: its own inline script (by hash)
/// and styles, WebSockets to its own origin, nothing loaded from anywhere.
fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src '{SCRIPT_HASH}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The answer to `GET /` (the page) or `HEAD /` (its head alone); the
/// connection closes after it.
pub fn page_response(is_head: bool) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {}\r\nX-Content-Type-Options: nosniff\r\n\
         X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n\
         Connection: close\r\n\r\n",
        PAGE.len(),
        content_security_policy(),
    )
    .into_bytes();
    if !is_head {
        response.extend_from_slice(PAGE.as_bytes());
    }
    response
}

/// The 101 that switches the connection to WebSocket.
pub fn switching_response(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// What a complete request head gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Switch to WebSocket with this `Sec-WebSocket-Accept`.
    Upgrade { accept: String },
    /// Answer the page (`is_head`: its head alone) and close.
    Page { is_head: bool },
    /// Answer this error and close.
    Refuse(Status),
}

/// Judges `head`, the bytes a client sent so far; `None` while the head
/// is incomplete (and under `MAX_HEAD_BYTES`: the caller checks).
pub fn judge(head: &[u8], scheme: Scheme, settings: &WebSettings) -> Option<Verdict> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(head) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Verdict::Refuse(Status::HeadTooLarge));
        }
        Err(_) => return Some(Verdict::Refuse(Status::BadRequest)),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| std::str::from_utf8(header.value).map(str::trim))
    };
    let has_token = |name: &str, token: &str| {
        matches!(header(name), Some(Ok(value))
            if value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let is_head = match request.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Some(Verdict::Refuse(Status::MethodNotAllowed)),
    };
    let path = request.path.unwrap_or("");
    let is_root = path == "/" || path.starts_with("/?");
    if !has_token("upgrade", "websocket") {
        // A plain GET (or HEAD) of / or /index.html: the page.
        if is_root || path == "/index.html" || path.starts_with("/index.html?") {
            return Some(Verdict::Page { is_head });
        }
        return Some(Verdict::Refuse(Status::NotFound));
    }
    if !is_root {
        return Some(Verdict::Refuse(Status::NotFound));
    }
    if is_head {
        return Some(Verdict::Refuse(Status::BadRequest));
    }
    // An upgrade: HTTP/1.1 with a host, `Connection: Upgrade`, version 13
    // and a key; and no bytes after the head (a client waits for the 101).
    let Some(Ok(host)) = header("host") else {
        return Some(Verdict::Refuse(Status::BadRequest));
    };
    if request.version != Some(1)
        || host.is_empty()
        || !has_token("connection", "upgrade")
        || length != head.len()
    {
        return Some(Verdict::Refuse(Status::BadRequest));
    }
    if !matches!(header("sec-websocket-version"), Some(Ok("13"))) {
        return Some(Verdict::Refuse(Status::UpgradeRequired));
    }
    let Some(Ok(key)) = header("sec-websocket-key") else {
        return Some(Verdict::Refuse(Status::BadRequest));
    };
    if !websocket::is_valid_key(key) {
        return Some(Verdict::Refuse(Status::BadRequest));
    }
    match header("origin") {
        // Browsers always send one; other programs may not, and could
        // send any: the check guards browsers' users, not the server.
        None => {}
        Some(Ok(origin)) if settings.allows(origin, scheme, host) => {}
        Some(_) => return Some(Verdict::Refuse(Status::Forbidden)),
    }
    Some(Verdict::Upgrade {
        accept: websocket::accept_key(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade_with(extra: &str) -> String {
        format!(
            "GET / HTTP/1.1\r\nHost: chat.example:5050\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn judged(head: &str) -> Option<Verdict> {
        judge(head.as_bytes(), Scheme::Http, &WebSettings::new(&[]))
    }

    fn refused(head: &str) -> Status {
        match judged(head) {
            Some(Verdict::Refuse(status)) => status,
            other => panic!("{head:?} got {other:?}"),
        }
    }

    #[test]
    fn the_first_bytes_tell_http_from_protocol_lines() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(sniff(b"OPTIONS "), Sniff::Http);
        assert_eq!(sniff(b"GE"), Sniff::Undecided);
        assert_eq!(sniff(b"P"), Sniff::Undecided);
        assert_eq!(sniff(b"GET"), Sniff::Undecided);
        assert_eq!(sniff(b"{\"code\":100}\n"), Sniff::Lines);
        assert_eq!(sniff(b"ann\n"), Sniff::Lines);
        assert_eq!(sniff(b"GETTY\n"), Sniff::Lines);
        assert_eq!(sniff(b"get / HTTP/1.1"), Sniff::Lines);
    }

    #[test]
    fn a_valid_upgrade_is_switched_with_the_rfc_accept_key() {
        assert_eq!(
            judged(&upgrade_with("")),
            Some(Verdict::Upgrade {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            })
        );
        assert!(matches!(
            judged(&upgrade_with("Origin: http://chat.example:5050\r\n")),
            Some(Verdict::Upgrade { .. })
        ));
    }

    #[test]
    fn an_incomplete_head_waits() {
        assert_eq!(judged("GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn origins_other_than_the_pages_own_or_the_listed_ones_get_403() {
        assert_eq!(
            refused(&upgrade_with("Origin: http://evil.example\r\n")),
            Status::Forbidden
        );
        // The scheme is the listener's: an https page is another origin.
        assert_eq!(
            refused(&upgrade_with("Origin: https://chat.example:5050\r\n")),
            Status::Forbidden
        );
        let listed = WebSettings::new(&["https://Chat.Example".to_owned()]);
        let head = upgrade_with("Origin: https://chat.example\r\n");
        assert!(matches!(
            judge(head.as_bytes(), Scheme::Http, &listed),
            Some(Verdict::Upgrade { .. })
        ));
        let own = upgrade_with("Origin: http://chat.example:5050\r\n");
        assert_eq!(
            judge(own.as_bytes(), Scheme::Http, &listed),
            Some(Verdict::Refuse(Status::Forbidden))
        );
    }

    #[test]
    fn a_plain_get_or_head_of_the_root_is_the_page() {
        for (head, is_head) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false),
            ("GET /?room=rust HTTP/1.1\r\nHost: x\r\n\r\n", false),
            ("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", false),
            ("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", true),
        ] {
            assert_eq!(judged(head), Some(Verdict::Page { is_head }), "{head:?}");
        }
    }

    #[test]
    fn the_page_is_served_with_its_policy_and_head_gets_no_body() {
        let response = String::from_utf8(page_response(false)).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(head.contains("\r\nX-Content-Type-Options: nosniff\r\n"));
        assert!(head.contains("\r\nCache-Control: no-cache\r\n"));
        assert!(head.contains(&format!("script-src '{SCRIPT_HASH}';")));
        assert_eq!(body, PAGE);
        let head_only = page_response(true);
        assert_eq!(head_only, format!("{head}\r\n\r\n").into_bytes());
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_one_inline_script() {
        use base64::Engine;
        use sha2::Digest;
        let (_, rest) = PAGE.split_once("<script>").expect("the page has a script");
        let (script, after) = rest.split_once("</script>").expect("the script ends");
        assert!(!after.contains("<script"), "one inline script only");
        let digest = sha2::Sha256::digest(script.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(SCRIPT_HASH, format!("sha256-{hash}"), "update SCRIPT_HASH");
        // Nothing in the page loads from elsewhere.
        for needle in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the page contains {needle:?}");
        }
    }

    #[test]
    fn requests_that_are_not_an_upgrade_get_proper_errors() {
        assert_eq!(
            refused("GET /chat HTTP/1.1\r\nHost: x\r\n\r\n"),
            Status::NotFound
        );
        assert_eq!(
            refused("GET /index.htmlx HTTP/1.1\r\nHost: x\r\n\r\n"),
            Status::NotFound
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Status::MethodNotAllowed
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHo st: x\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(refused("GET /\r\n\r\n"), Status::BadRequest);
    }

    #[test]
    fn a_broken_upgrade_gets_400_or_426() {
        let no_key = upgrade_with("").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "");
        assert_eq!(refused(&no_key), Status::BadRequest);
        let short_key = upgrade_with("").replace(KEY, "c2hvcnQ=");
        assert_eq!(refused(&short_key), Status::BadRequest);
        let old = upgrade_with("").replace("Version: 13", "Version: 8");
        assert_eq!(refused(&old), Status::UpgradeRequired);
        let http10 = upgrade_with("").replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(refused(&http10), Status::BadRequest);
        let no_connection = upgrade_with("").replace("keep-alive, Upgrade", "keep-alive");
        assert_eq!(refused(&no_connection), Status::BadRequest);
        let early_frame = format!("{}\u{81}", upgrade_with(""));
        assert_eq!(refused(&early_frame), Status::BadRequest);
    }

    #[test]
    fn too_many_headers_get_431() {
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for index in 0..=MAX_HEADERS {
            head.push_str(&format!("X-{index}: y\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(refused(&head), Status::HeadTooLarge);
    }

    #[test]
    fn error_responses_are_complete_http_with_their_length() {
        let response = String::from_utf8(error_response(Status::MethodNotAllowed)).unwrap();
        assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(response.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(response.contains("\r\nConnection: close\r\n"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn a_full_server_answers_503_with_retry_after() {
        let response = String::from_utf8(error_response(Status::Full)).unwrap();
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(response.contains("\r\nRetry-After: 5\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nriftd: server full; try again later\n"));
    }

    #[test]
    fn configured_origins_must_look_like_origins() {
        assert!(is_origin("https://chat.example"));
        assert!(is_origin("http://127.0.0.1:8080"));
        assert!(is_origin("http://[::1]:8080"));
        assert!(!is_origin("chat.example"));
        assert!(!is_origin("https://chat.example/"));
        assert!(!is_origin("https://"));
        assert!(!is_origin("ftp://chat.example"));
    }
}
