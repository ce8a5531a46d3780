//! WebSocket on riftd's own listeners (`web = true`, issue 16): the
//! upgrade, one message per protocol line, the framing rules (masking,
//! fragments, control frames, close codes, the line cap, UTF-8), the HTTP
//! answers (origins, methods, slow heads) and the greeting rule for TCP
//! clients on a web listener. Main flows use `tungstenite` as a client;
//! rule-breaking frames are written by hand (`RawSocket`). See
//! `design/protocol.md`, "WebSocket".

use crate::common;

use common::{Client, Launch, READ_TIMEOUT, Server, tls_client_config};
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const WEB: &str = "web = true\n";
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(address(port)).expect("cannot connect");
    stream.set_nodelay(true).expect("set_nodelay");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set_read_timeout");
    stream
}

/// A `tungstenite` client upgraded on `ws://127.0.0.1:port/`.
fn ws_client(port: u16) -> WebSocket<TcpStream> {
    let url = format!("ws://127.0.0.1:{port}/");
    let (socket, response) = tungstenite::client(url, tcp(port)).expect("the upgrade failed");
    assert_eq!(response.status(), 101);
    socket
}

/// The next text message, which must be one JSON object and one line.
fn next_json<S: Read + Write>(socket: &mut WebSocket<S>) -> Value {
    loop {
        match socket.read().expect("cannot read a message") {
            Message::Text(text) => {
                assert!(!text.contains('\n'), "a message is one line: {text:?}");
                let frame: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {text:?}"));
                assert!(frame.is_object(), "{text}");
                return frame;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn expect_code<S: Read + Write>(socket: &mut WebSocket<S>, code: u64) -> Value {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no {code} in time");
        let frame = next_json(socket);
        if frame["code"] == code {
            return frame;
        }
    }
}

fn send_json<S: Read + Write>(socket: &mut WebSocket<S>, frame: &Value) {
    socket
        .send(Message::text(frame.to_string()))
        .expect("cannot send");
}

/// Greeted and logged in as `name` over WebSocket.
fn login<S: Read + Write>(socket: &mut WebSocket<S>, name: &str) {
    let greeting = next_json(socket);
    assert_eq!(greeting["code"], 210, "{greeting}");
    send_json(socket, &json!({"code": 110, "username": name}));
    assert_eq!(next_json(socket), json!({"code": 202, "new": name}));
    let joined = expect_code(socket, 201);
    assert_eq!(joined["new"], name);
}

/// A WebSocket spoken by hand, for frames no library would send.
struct RawSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawSocket {
    /// Upgrades with a request written by hand and reads the 101.
    fn connect(port: u16) -> RawSocket {
        let mut stream = tcp(port);
        stream
            .write_all(upgrade_request(port, "").as_bytes())
            .expect("cannot send the request");
        let mut socket = RawSocket {
            stream,
            buffer: Vec::new(),
        };
        let head = socket.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        socket
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(count) => {
                self.buffer.extend_from_slice(&chunk[..count]);
                true
            }
            Err(error) if error.kind() == ErrorKind::ConnectionReset => false,
            Err(error) => panic!("read failed: {error}"),
        }
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|four| four == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                return String::from_utf8(head).expect("an ASCII head");
            }
            assert!(self.fill(), "EOF before the response head");
        }
    }

    fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], is_masked: bool) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![if fin { 0x80 | opcode } else { opcode }];
        let bit = if is_masked { 0x80 } else { 0 };
        match payload.len() {
            len if len < 126 => frame.push(bit | len as u8),
            len if len <= 0xFFFF => {
                frame.push(bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if is_masked {
            frame.extend_from_slice(&mask);
            frame.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(at, byte)| byte ^ mask[at % 4]),
            );
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).expect("cannot send a frame");
    }

    fn send_text(&mut self, text: &str) {
        self.send_frame(true, 0x1, text.as_bytes(), true);
    }

    /// The next server frame (opcode, payload), or `None` at EOF. Server
    /// frames must be final and unmasked.
    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buffer.len() >= 2 {
                assert_eq!(self.buffer[0] & 0x80, 0x80, "server frames are final");
                assert_eq!(self.buffer[1] & 0x80, 0, "server frames are unmasked");
                let (len, start) = match self.buffer[1] {
                    126 if self.buffer.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                        4,
                    ),
                    127 if self.buffer.len() >= 10 => {
                        let mut bytes = [0; 8];
                        bytes.copy_from_slice(&self.buffer[2..10]);
                        (u64::from_be_bytes(bytes) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    len => (usize::from(len), 2),
                };
                if start > 0 && self.buffer.len() >= start + len {
                    let opcode = self.buffer[0] & 0x0F;
                    let payload = self.buffer[start..start + len].to_vec();
                    self.buffer.drain(..start + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill() {
                assert!(self.buffer.is_empty(), "EOF inside a frame");
                return None;
            }
        }
    }

    fn next_json(&mut self) -> Value {
        match self.read_frame() {
            Some((0x1, payload)) => serde_json::from_slice(&payload)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {payload:?}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads until the close frame; returns its code, and checks the
    /// connection then ends.
    fn expect_close(&mut self) -> u16 {
        loop {
            match self.read_frame() {
                Some((0x8, payload)) => {
                    assert!(payload.len() >= 2, "a close frame without a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    // Our side of the closing handshake, then the EOF.
                    self.send_frame(true, 0x8, &payload[..2], true);
                    assert_eq!(self.read_frame(), None, "data after the close frame");
                    return code;
                }
                Some(_) => {}
                None => panic!("EOF without a close frame"),
            }
        }
    }
}

fn upgrade_request(port: u16, extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` and reads the whole response until the server closes.
fn http_exchange(port: u16, request: &str) -> String {
    let mut stream = tcp(port);
    stream.write_all(request.as_bytes()).expect("cannot send");
    read_all(&mut stream)
}

#[test]
fn a_websocket_client_chats_with_a_tcp_client_in_the_same_room() {
    let server = Server::with_config(WEB);
    let mut web = ws_client(server.port());
    login(&mut web, "ann");
    let mut tcp = Client::json(server.port());
    tcp.login("bob");
    assert_eq!(expect_code(&mut web, 201)["new"], "bob");
    send_json(
        &mut web,
        &json!({"code": 100, "message": "hello from a browser"}),
    );
    let said = tcp.expect_code(200);
    assert_eq!(said["message"]["from"], "ann");
    assert_eq!(said["message"]["text"], "hello from a browser");
    // The sender is a member too: its own message comes back first.
    assert_eq!(expect_code(&mut web, 200)["message"]["from"], "ann");
    tcp.send_json(&json!({"code": 100, "message": "hello from nc"}));
    let heard = expect_code(&mut web, 200);
    assert_eq!(heard["message"]["from"], "bob");
    assert_eq!(heard["message"]["text"], "hello from nc");
    // JSON mode only: what is not a JSON object gets 400, and the session
    // goes on; a pretty-printed object is still one line.
    web.send(Message::text("ann")).unwrap();
    assert_eq!(next_json(&mut web)["code"], 400);
    web.send(Message::text("{\n  \"code\": 108,\n  \"token\": \"t\"\n}"))
        .unwrap();
    assert_eq!(next_json(&mut web), json!({"code": 207, "token": "t"}));
}

#[test]
fn a_text_looking_first_message_does_not_put_a_websocket_client_in_text_mode() {
    let server = Server::with_config(WEB);
    let mut web = ws_client(server.port());
    assert_eq!(next_json(&mut web)["code"], 210);
    web.send(Message::text("ann")).unwrap();
    assert_eq!(next_json(&mut web)["code"], 400);
    send_json(&mut web, &json!({"code": 110, "username": "ann"}));
    assert_eq!(next_json(&mut web), json!({"code": 202, "new": "ann"}));
}

#[test]
fn pings_get_pongs_and_a_close_is_echoed_before_the_end() {
    let server = Server::with_config(WEB);
    let mut web = ws_client(server.port());
    assert_eq!(next_json(&mut web)["code"], 210);
    web.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match web.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    web.close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match web.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Library(4000));
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("the close did not end cleanly: {error}"),
        }
    }
}

#[test]
fn a_quit_ends_with_a_normal_close() {
    let server = Server::with_config(WEB);
    let mut raw = RawSocket::connect(server.port());
    assert_eq!(raw.next_json()["code"], 210);
    raw.send_text(r#"{"code":109}"#);
    assert_eq!(raw.expect_close(), 1000);
}

#[test]
fn unmasked_client_frames_are_closed_with_1002() {
    let server = Server::with_config(WEB);
    let mut raw = RawSocket::connect(server.port());
    assert_eq!(raw.next_json()["code"], 210);
    raw.send_frame(true, 0x1, br#"{"code":108,"token":"x"}"#, false);
    assert_eq!(raw.expect_close(), 1002);
}

#[test]
fn fragments_are_reassembled_with_a_ping_between_them() {
    let server = Server::with_config(WEB);
    let mut raw = RawSocket::connect(server.port());
    assert_eq!(raw.next_json()["code"], 210);
    raw.send_frame(false, 0x1, br#"{"code":108,"#, true);
    raw.send_frame(true, 0x9, b"mid", true);
    raw.send_frame(false, 0x0, br#""token":"#, true);
    raw.send_frame(true, 0x0, br#""joined"}"#, true);
    assert_eq!(raw.read_frame(), Some((0xA, b"mid".to_vec())));
    assert_eq!(raw.next_json(), json!({"code": 207, "token": "joined"}));
}

#[test]
fn a_message_over_max_line_bytes_gets_413_and_the_session_goes_on() {
    let server = Server::with_config(&format!("{WEB}max_line_bytes = 100\n"));
    let mut raw = RawSocket::connect(server.port());
    assert_eq!(raw.next_json()["code"], 210);
    let long = format!(r#"{{"code":108,"token":"{}"}}"#, "x".repeat(200));
    raw.send_frame(false, 0x1, &long.as_bytes()[..150], true);
    raw.send_frame(true, 0x0, &long.as_bytes()[150..], true);
    assert_eq!(raw.next_json()["code"], 413);
    raw.send_text(r#"{"code":108,"token":"after"}"#);
    assert_eq!(raw.next_json(), json!({"code": 207, "token": "after"}));
}

#[test]
fn invalid_utf8_is_closed_with_1007() {
    let server = Server::with_config(WEB);
    let mut raw = RawSocket::connect(server.port());
    assert_eq!(raw.next_json()["code"], 210);
    raw.send_frame(true, 0x1, b"{\"code\":108,\"token\":\"\xFF\"}", true);
    assert_eq!(raw.expect_close(), 1007);
}

#[test]
fn binary_messages_are_closed_with_1003() {
    let server = Server::with_config(WEB);
    let mut raw = RawSocket::connect(server.port());
    assert_eq!(raw.next_json()["code"], 210);
    raw.send_frame(true, 0x2, b"\x00\x01", true);
    assert_eq!(raw.expect_close(), 1003);
}

#[test]
fn origins_other_than_the_pages_own_are_refused_with_403() {
    let server = Server::with_config(WEB);
    let port = server.port();
    let response = http_exchange(
        port,
        &upgrade_request(port, "Origin: http://evil.example\r\n"),
    );
    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
    assert!(
        !response.contains("\"code\""),
        "no chat frame over HTTP: {response}"
    );
    // The page's own origin (the Host, with the listener's scheme) may.
    let mut raw = RawSocket {
        stream: tcp(port),
        buffer: Vec::new(),
    };
    let own = upgrade_request(port, &format!("Origin: http://127.0.0.1:{port}\r\n"));
    raw.stream.write_all(own.as_bytes()).unwrap();
    assert!(raw.read_head().starts_with("HTTP/1.1 101 "));
    assert_eq!(raw.next_json()["code"], 210);
}

#[test]
fn listed_origins_replace_the_default() {
    let server = Server::with_config(&format!("{WEB}web_origins = [\"https://chat.example\"]\n"));
    let port = server.port();
    let mut listed = RawSocket {
        stream: tcp(port),
        buffer: Vec::new(),
    };
    let request = upgrade_request(port, "Origin: https://chat.example\r\n");
    listed.stream.write_all(request.as_bytes()).unwrap();
    assert!(listed.read_head().starts_with("HTTP/1.1 101 "));
    assert_eq!(listed.next_json()["code"], 210);
    let own = http_exchange(
        port,
        &upgrade_request(port, &format!("Origin: http://127.0.0.1:{port}\r\n")),
    );
    assert!(own.starts_with("HTTP/1.1 403 "), "{own}");
}

#[test]
fn other_http_requests_get_proper_errors_and_no_greeting() {
    let server = Server::with_config(WEB);
    let port = server.port();
    for (request, status) in [
        (
            "GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n",
            "404 Not Found",
        ),
        ("GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", "404 Not Found"),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "405 Method Not Allowed",
        ),
        ("GET / HTTP/1.1\r\nHost x\r\n\r\n", "400 Bad Request"),
    ] {
        let response = http_exchange(port, request);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?} got {response:?}"
        );
        assert!(!response.contains("\"code\":210"), "{response}");
        let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
    }
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "y".repeat(9000));
    assert!(http_exchange(port, &huge).starts_with("HTTP/1.1 431 "));
}

#[test]
fn a_plain_get_of_the_root_serves_the_chat_page_with_its_policy() {
    let server = Server::with_config(WEB);
    let port = server.port();
    let response = http_exchange(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for header in [
        "Content-Type: text/html; charset=utf-8",
        "X-Content-Type-Options: nosniff",
        "Cache-Control: no-cache",
        "Connection: close",
        &format!("Content-Length: {}", body.len()),
    ] {
        assert!(
            format!("{head}\r\n").contains(&format!("\r\n{header}\r\n")),
            "{head}"
        );
    }
    let policy = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("Content-Security-Policy: "))
        .expect("a Content-Security-Policy");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(!policy.contains("script-src 'unsafe-inline'"), "{policy}");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(!response.contains("\"code\":210"));
    // /index.html is the same page; HEAD has its head and no body.
    let same = http_exchange(port, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(same, response);
    let head_only = http_exchange(port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head_only, format!("{head}\r\n\r\n"));
}

#[test]
fn slow_http_headers_hit_the_login_deadline_with_408() {
    let server = Server::with_config(&format!("{WEB}auth_timeout_secs = 1\n"));
    let mut stream = tcp(server.port());
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read failed");
    let response = String::from_utf8(response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{response:?}"
    );
    assert!(started.elapsed() < READ_TIMEOUT);
}

#[test]
fn with_web_off_an_http_request_line_still_gets_todays_400() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    client.send("GET / HTTP/1.1");
    let refusal = client.recv_line();
    assert!(
        refusal.contains("not an HTTP server") && refusal.contains("(400)"),
        "{refusal}"
    );
    client.expect_eof();
}

#[test]
fn nc_users_on_a_web_listener_are_greeted_without_saying_anything() {
    let server = Server::with_config(WEB);
    let started = Instant::now();
    let mut client = Client::json(server.port());
    // Held 150 ms at most; well under the read timeout on a busy machine.
    assert!(started.elapsed() < Duration::from_secs(3));
    client.send("ann");
    client.expect_line("ann");
    let mut json = Client::json(server.port());
    json.login("bob");
    // Once greeted, a connection speaks lines for good: a request line
    // then is refused as it is without `web`.
    let mut late = Client::json(server.port());
    late.send("GET / HTTP/1.1");
    assert!(late.recv_line().contains("(400)"));
    late.expect_eof();
}

#[test]
fn a_client_that_speaks_first_gets_the_greeting_then_its_answer() {
    let server = Server::with_config(WEB);
    let mut client = Client::connect(address(server.port()));
    client.send_json(&json!({"code": 110, "username": "ann"}));
    assert_eq!(client.recv_json()["code"], 210);
    assert_eq!(client.recv_json(), json!({"code": 202, "new": "ann"}));
    // Even a name that starts like a method is a text login.
    let mut text = Client::connect(address(server.port()));
    text.send("GETTY");
    assert_eq!(text.recv_json()["code"], 210);
    text.expect_line("GETTY");
}

// ---------------------------------------------------------------------------
// wss:// over a TLS listener.

fn certificate() -> rcgen::CertifiedKey<rcgen::KeyPair> {
    rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("cannot generate a certificate")
}

/// A web server with a TLS listener; returns it with its TLS address.
fn start_tls(certificate: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (Server, SocketAddr) {
    let mut server = Launch::new()
        .config(&format!(
            "{WEB}listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
             tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"
        ))
        .file("cert.pem", &certificate.cert.pem())
        .file("key.pem", &certificate.signing_key.serialize_pem())
        .start();
    let line = server.wait_for_log("(TLS)");
    let tls: SocketAddr = line
        .rsplit("listening on ")
        .next()
        .and_then(|rest| rest.trim().strip_suffix("(TLS)"))
        .and_then(|address| address.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TLS address in log line {line:?}"));
    (server, tls)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_stream(address: SocketAddr, certificate: &rcgen::CertifiedKey<rcgen::KeyPair>) -> TlsStream {
    let connection = rustls::ClientConnection::new(
        tls_client_config(certificate),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let socket = TcpStream::connect(address).unwrap();
    socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    rustls::StreamOwned::new(connection, socket)
}

#[test]
fn wss_over_a_tls_listener_chats_with_the_pages_https_origin() {
    let certificate = certificate();
    let (server, tls) = start_tls(&certificate);
    let mut request = format!("wss://localhost:{}/", tls.port())
        .into_client_request()
        .unwrap();
    // The page's own origin on a TLS listener is https://.
    request.headers_mut().insert(
        "Origin",
        format!("https://localhost:{}", tls.port()).parse().unwrap(),
    );
    let (mut web, response) =
        tungstenite::client(request, tls_stream(tls, &certificate)).expect("wss upgrade failed");
    assert_eq!(response.status(), 101);
    login(&mut web, "ann");
    let mut plain = Client::json(server.port());
    plain.login("bob");
    send_json(&mut web, &json!({"code": 100, "message": "over wss"}));
    assert_eq!(plain.expect_code(200)["message"]["text"], "over wss");
    // The http:// origin is another origin for a TLS listener.
    let mut refused = format!("wss://localhost:{}/", tls.port())
        .into_client_request()
        .unwrap();
    refused.headers_mut().insert(
        "Origin",
        format!("http://localhost:{}", tls.port()).parse().unwrap(),
    );
    match tungstenite::client(refused, tls_stream(tls, &certificate)) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "expected 403, got {:?}",
            other.map(|(_, response)| response)
        ),
    }
}

#[test]
fn a_tls_client_that_says_nothing_is_greeted_on_a_web_tls_listener() {
    let certificate = certificate();
    let (_server, tls) = start_tls(&certificate);
    let mut stream = tls_stream(tls, &certificate);
    let mut line = Vec::new();
    let mut byte = [0; 1];
    while !line.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("no greeting: {other:?} after {line:?}"),
        }
    }
    let greeting: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(greeting["code"], 210);
}

// ---------------------------------------------------------------------------
// Web listeners (`web_listen`, `web_tls_listen`): HTTP from the first byte.

/// The address of the web listener whose log line ends in `label`
/// (`(web: HTTP only)` or `(web: HTTPS only)`).
pub fn web_address(server: &mut Server, label: &str) -> SocketAddr {
    let line = server.wait_for_log(label);
    line.rsplit("listening on ")
        .next()
        .and_then(|rest| rest.trim().strip_suffix(label))
        .and_then(|address| address.trim().parse().ok())
        .unwrap_or_else(|| panic!("no web address in log line {line:?}"))
}

/// A server with a plain chat listener (`server.port()`, no `web`) and a
/// web listener, whose address comes second.
fn start_web(extra: &str) -> (Server, SocketAddr) {
    let mut server = Server::with_config(&format!("web_listen = \"127.0.0.1:0\"\n{extra}"));
    let web = web_address(&mut server, "(web: HTTP only)");
    (server, web)
}

/// Asserts that nothing arrives on `stream` within `quiet` (a bounded
/// negative check: longer than the 150 ms a shared listener holds the
/// greeting), then restores the read timeout.
fn assert_silent<S: Read>(stream: &mut S, socket: &TcpStream, quiet: Duration) {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a web listener sent something before a request: {other:?} {byte:?}"),
    }
    socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

/// Reads until the server closes.
fn read_all<S: Read>(stream: &mut S) -> String {
    let mut response = Vec::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut chunk = [0; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "the response did not end in time"
        );
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(count) => response.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break,
            Err(error) => panic!("read failed: {error}"),
        }
    }
    String::from_utf8(response).expect("an ASCII response")
}

#[test]
fn a_web_listener_never_greets_a_silent_connection_and_serves_the_page_it_asks_later() {
    // Chrome's preconnect: a socket opened ahead of the request and left
    // silent. A shared listener greets it after 150 ms and the later GET
    // reads the greeting as its response; a web listener waits.
    let (_server, web) = start_web("");
    let mut stream = tcp(web.port());
    let socket = stream.try_clone().unwrap();
    assert_silent(&mut stream, &socket, Duration::from_millis(400));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let response = read_all(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.contains("<!doctype html>"));
    assert!(!response.contains("\"code\":210"), "{response}");
}

#[test]
fn a_websocket_on_a_web_listener_chats_with_nc_on_the_plain_listener() {
    let (server, web) = start_web("");
    let port = web.port();
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    // The default web_origins: the page's own origin, the web listener's.
    request.headers_mut().insert(
        "Origin",
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    );
    let (mut socket, response) = tungstenite::client(request, tcp(port)).expect("upgrade failed");
    assert_eq!(response.status(), 101);
    login(&mut socket, "ann");
    // The chat listener has no `web`: greeted at once, as always.
    let mut nc = Client::text(server.port());
    nc.send("bob");
    nc.expect_line("* you are now bob");
    assert_eq!(expect_code(&mut socket, 201)["new"], "bob");
    send_json(
        &mut socket,
        &json!({"code": 100, "message": "from the web"}),
    );
    nc.expect_line("<ann> from the web");
    assert_eq!(expect_code(&mut socket, 200)["message"]["from"], "ann");
    nc.send("from nc");
    let heard = expect_code(&mut socket, 200);
    assert_eq!(heard["message"]["from"], "bob");
    assert_eq!(heard["message"]["text"], "from nc");
    // Another origin is refused there too.
    let refused = http_exchange(
        port,
        &upgrade_request(port, "Origin: http://evil.example\r\n"),
    );
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
}

#[test]
fn protocol_lines_on_a_web_listener_get_http_400_not_a_greeting() {
    let (_server, web) = start_web("");
    for first in [
        "{\"code\":110,\"username\":\"ann\"}\n",
        "ann\n",
        "\x16\x03\x01",
    ] {
        let response = http_exchange(web.port(), first);
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{first:?} got {response:?}"
        );
        assert!(!response.contains("\"code\""), "{response}");
    }
}

#[test]
fn a_silent_web_connection_is_closed_without_a_word_at_the_login_deadline() {
    let (_server, web) = start_web("auth_timeout_secs = 1\n");
    let mut stream = tcp(web.port());
    let started = Instant::now();
    assert_eq!(read_all(&mut stream), "", "no chat 408 over HTTP");
    assert!(started.elapsed() < READ_TIMEOUT);
    // A request begun and not finished gets HTTP's 408.
    let mut begun = tcp(web.port());
    begun.write_all(b"GE").unwrap();
    let response = read_all(&mut begun);
    assert!(
        response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{response:?}"
    );
}

#[test]
fn over_limit_connections_on_a_web_listener_get_http_503_with_retry_after() {
    for (limit, held) in [
        ("max_connections_per_ip = 1\n", 1),
        ("max_connections = 2\n", 2),
    ] {
        let (server, web) = start_web(limit);
        let _held: Vec<Client> = (0..held)
            .map(|index| {
                let mut client = Client::json(server.port());
                client.login(&format!("user{index}"));
                client
            })
            .collect();
        let mut stream = tcp(web.port());
        let response = read_all(&mut stream);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{limit}: not HTTP: {response:?}"));
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{limit}: {head}"
        );
        assert!(head.contains("\r\nRetry-After: "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        // The chat listener still refuses with the protocol's 503 line.
        let mut chat = TcpStream::connect(address(server.port())).unwrap();
        chat.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let refusal = read_all(&mut chat);
        assert!(refusal.starts_with("{\"code\":503"), "{refusal:?}");
    }
}

#[test]
fn a_web_tls_listener_without_a_certificate_is_refused_with_exit_2() {
    common::assert_config_refused(
        Launch::new().config("web_tls_listen = \"127.0.0.1:0\"\n"),
        "web_tls_listen needs tls_cert and tls_key",
    );
    common::assert_config_refused(
        Launch::new().config("web_listen = \"nowhere\"\n"),
        "web_listen",
    );
}

#[test]
fn wss_on_a_web_tls_listener_waits_for_the_request_and_checks_the_https_origin() {
    let certificate = certificate();
    let mut server = Launch::new()
        .config(
            "web_tls_listen = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        )
        .file("cert.pem", &certificate.cert.pem())
        .file("key.pem", &certificate.signing_key.serialize_pem())
        .start();
    let tls = web_address(&mut server, "(web: HTTPS only)");
    // The handshake done, nothing comes before a request.
    let mut stream = tls_stream(tls, &certificate);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("the TLS handshake failed");
    }
    let socket = stream.sock.try_clone().unwrap();
    assert_silent(&mut stream, &socket, Duration::from_millis(400));
    let mut request = format!("wss://localhost:{}/", tls.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Origin",
        format!("https://localhost:{}", tls.port()).parse().unwrap(),
    );
    let (mut web, response) = tungstenite::client(request, stream).expect("wss upgrade failed");
    assert_eq!(response.status(), 101);
    login(&mut web, "ann");
    let mut plain = Client::json(server.port());
    plain.login("bob");
    send_json(&mut web, &json!({"code": 100, "message": "over wss"}));
    assert_eq!(plain.expect_code(200)["message"]["text"], "over wss");
}
