//! Shell-level tests of one `Conn` against a real hub and a real loopback
//! socket pair: what the client receives when the shell follows the hub.

use super::*;
use crate::hub::{HubConfig, Wire};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

const NOW: Now = Now {
    unix_ms: 1_700_000_000_000,
    mono_ms: 0,
};

fn hub() -> Hub {
    Hub::new(HubConfig::for_tests())
}

/// A connected pair: the client's blocking std socket and the server's
/// `Conn` (plain), whose first bytes have already arrived when it returns.
fn pair(client_sends: &[u8], max_line_bytes: usize) -> (std::net::TcpStream, Conn) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    client.write_all(client_sends).unwrap();
    // Wait (blocking) until the bytes are in the server's receive buffer.
    let mut one = [0u8; 1];
    server.peek(&mut one).unwrap();
    server.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(server);
    (
        client,
        Conn::new(stream, peer, Transport::Plain, max_line_bytes),
    )
}

/// Everything the client receives until the server's FIN.
fn read_to_end(client: &mut std::net::TcpStream) -> Vec<String> {
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut bytes = Vec::new();
    client
        .read_to_end(&mut bytes)
        .expect("the server ends the stream");
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The hub ended the session outside a read (SIGTERM's `handle_shutdown`;
/// a verifier verdict or a reload does the same) earlier in the turn in
/// which the connection's bytes are read. Before the refactor the shell
/// asked the hub (`is_quitting`) before each line, so nothing the client
/// sent after that point reached the hub; now `Conn::phase` is still `Open`
/// and the lines are handed on. Here a too-long line makes that visible: a
/// codec refusal is queued after the 205.
#[test]
fn a_session_the_hub_ended_outside_a_read_is_handed_no_more_lines() {
    let mut line = vec![b'x'; 100];
    line.push(b'\n');
    let (mut client, mut conn) = pair(&line, 16);
    let poll = mio::Poll::new().unwrap();
    let mut hub = hub();
    let id = ConnId(0);
    hub.handle_connected(id, conn.peer(), Wire::Plain, NOW);
    conn.register(poll.registry(), id);
    // The turn: the signal's event first, then the connection's.
    hub.handle_shutdown();
    let mut read_buf = vec![0u8; READ_CHUNK];
    conn.read(id, &mut hub, &mut read_buf, 1, &TurnBudget::share(1), NOW);
    conn.flush(id, &mut hub, poll.registry(), Instant::now(), None);
    assert_eq!(conn.phase, Phase::Draining, "everything owed was written");
    let received = read_to_end(&mut client);
    assert_eq!(
        received.len(),
        2,
        "the greeting and the 205 only: {received:?}"
    );
    assert!(received[1].contains("205"), "{received:?}");
}

/// QUIT and the peer's FIN in one read: the goodbye is written and the
/// connection closes as a quit (no drain linger: both sides are done).
#[test]
fn quit_then_eof_in_one_read_writes_the_goodbye_and_closes() {
    let (mut client, mut conn) = pair(b"{\"cmd\":\"quit\"}\n", 1024);
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let poll = mio::Poll::new().unwrap();
    let mut hub = hub();
    let id = ConnId(0);
    hub.handle_connected(id, conn.peer(), Wire::Plain, NOW);
    conn.register(poll.registry(), id);
    let mut read_buf = vec![0u8; READ_CHUNK];
    // The FIN may trail the data by a moment on loopback: read until seen.
    let mut turn = 1;
    conn.read(
        id,
        &mut hub,
        &mut read_buf,
        turn,
        &TurnBudget::share(1),
        NOW,
    );
    while !conn.has_peer_closed {
        turn += 1;
        std::thread::yield_now();
        conn.read(
            id,
            &mut hub,
            &mut read_buf,
            turn,
            &TurnBudget::share(1),
            NOW,
        );
    }
    assert_eq!(conn.phase, Phase::Quitting);
    conn.flush(id, &mut hub, poll.registry(), Instant::now(), None);
    assert_eq!(conn.close_reason(), Some(CloseReason::Quit));
    assert_eq!(hub.fate(id), Fate::Ended, "the flush ended the session");
    drop(conn);
    let received = read_to_end(&mut client);
    assert_eq!(received.len(), 2, "{received:?}");
}
