//! TLS: loading the certificate chain and key into a rustls server config,
//! and moving bytes between a socket, a rustls `ServerConnection` and an
//! outbox. rustls is sans-IO, so the event loop drives it like any other
//! connection: no thread per connection, no blocking.
//!
//! Only the `ring` provider is compiled in (see `Cargo.toml`); certificates
//! are re-read on SIGHUP by building a new config for new connections.

use crate::outbox::{Arena, Flushed, Outbox};
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot read TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS certificate and key do not fit together: {0}")]
    Config(String),
}

/// Reads a PEM certificate chain and private key into a server config.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificate_error = |reason: String| TlsError::Certificate {
        path: cert.to_owned(),
        reason,
    };
    // Read through the bounded, non-blocking reader every configured file
    // goes through (a FIFO must not hang a reload).
    let read =
        |path: &Path| crate::config::read_regular_file(path, crate::config::MAX_TLS_FILE_BYTES);
    let cert_pem = read(cert).map_err(|error| certificate_error(error.to_string()))?;
    let key_pem = read(key).map_err(|error| TlsError::Key {
        path: key.to_owned(),
        reason: error.to_string(),
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| certificate_error(error.to_string()))?;
    if chain.is_empty() {
        return Err(certificate_error("no certificate in the file".to_owned()));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Key {
        path: key.to_owned(),
        reason: error.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    Ok(Arc::new(config))
}

/// What one attempt to get plaintext produced.
#[derive(Debug)]
pub enum Received {
    Data(usize),
    /// This many bytes of TLS records were taken from the socket and gave
    /// no plaintext yet; call again. Returned after each socket read, so
    /// the caller can charge them to its budget.
    Records(usize),
    WouldBlock,
    /// The peer closed (with or without close_notify).
    Closed,
}

/// Reads plaintext: what rustls already decrypted, or else one read of
/// records from the socket (`Records`). A TLS protocol error is returned as
/// `InvalidData` after the alert (if any) has been queued for sending.
pub fn read_plaintext<S: Read>(
    tls: &mut ServerConnection,
    socket: &mut S,
    buf: &mut [u8],
) -> io::Result<Received> {
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return Ok(Received::Closed),
            Ok(count) => return Ok(Received::Data(count)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Received::Closed);
            }
            Err(error) => return Err(error),
        }
        match tls.read_tls(socket) {
            Ok(0) => return Ok(Received::Closed),
            Ok(count) => {
                tls.process_new_packets()
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                return Ok(Received::Records(count));
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Received::WouldBlock);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Feeds the outbox's frames into rustls as plaintext and the resulting
/// records into the socket, until both are empty or the socket (or rustls'
/// bounded plaintext buffer, during the handshake) would block.
pub fn flush<S: Write>(
    tls: &mut ServerConnection,
    socket: &mut S,
    outbox: &mut Outbox,
    arena: &Arena,
) -> io::Result<Flushed> {
    loop {
        let before = outbox.pending_bytes();
        let moved = outbox.write_to(arena, &mut Plaintext(tls))?;
        let mut wrote_records = false;
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(_) => wrote_records = true,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed::Partly);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if moved == Flushed::All {
            return Ok(Flushed::All);
        }
        if !wrote_records && outbox.pending_bytes() == before {
            // rustls holds all the plaintext it will take until the
            // handshake completes; the peer's next record moves things on.
            return Ok(Flushed::Partly);
        }
    }
}

/// Writes only the records rustls already has (handshake, alerts,
/// close_notify).
pub fn flush_records<S: Write>(tls: &mut ServerConnection, socket: &mut S) -> io::Result<Flushed> {
    flush(tls, socket, &mut Outbox::default(), &Arena::default())
}

/// rustls' plaintext side as a `Write` that blocks (`WouldBlock`) instead of
/// buffering without bound.
struct Plaintext<'a>(&'a mut ServerConnection);

impl Write for Plaintext<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            count => Ok(count),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.writer().write_vectored(bufs)? {
            0 if bufs.iter().any(|buf| !buf.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            count => Ok(count),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_generated_certificate_and_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        assert!(load_server_config(&cert, &key).is_ok());
    }

    #[test]
    fn missing_or_mismatched_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let error = load_server_config(&dir.path().join("nope.pem"), &key).unwrap_err();
        assert!(error.to_string().contains("nope.pem"), "{error}");
        let error = load_server_config(&cert, &cert).unwrap_err();
        assert!(error.to_string().contains("key"), "{error}");
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_key) = self_signed(&other);
        assert!(load_server_config(&cert, &other_key).is_err());
    }

    /// A client and a server connection talking through in-memory pipes:
    /// the handshake completes and an outbox frame arrives decrypted.
    #[test]
    fn outbox_frames_reach_a_tls_client_through_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let server_config = load_server_config(&cert, &key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(&cert).unwrap() {
            roots.add(der.unwrap()).unwrap();
        }
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = ServerConnection::new(server_config).unwrap();
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        outbox.push(arena.append(|bytes| bytes.extend_from_slice(b"{\"code\":210}\n")));

        let mut received = Vec::new();
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut to_server).unwrap();
            }
            // Feed rustls directly: an exhausted slice would read as EOF.
            let mut reader = &to_server[..];
            while !reader.is_empty() {
                server.read_tls(&mut reader).unwrap();
                server.process_new_packets().unwrap();
            }
            let mut buf = [0u8; 4096];
            if let Ok(count) = server.reader().read(&mut buf) {
                received.extend_from_slice(&buf[..count]);
            }
            let mut to_client = Vec::new();
            flush(&mut server, &mut to_client, &mut outbox, &arena).unwrap();
            let mut reader = &to_client[..];
            while !reader.is_empty() {
                client.read_tls(&mut reader).unwrap();
                client.process_new_packets().unwrap();
            }
            let mut plain = Vec::new();
            let _ = client.reader().read_to_end(&mut plain);
            if !plain.is_empty() {
                assert_eq!(plain, b"{\"code\":210}\n");
                assert!(received.is_empty());
                return;
            }
        }
        panic!("the frame never arrived");
    }

    #[test]
    fn garbage_is_an_invalid_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let mut server = ServerConnection::new(load_server_config(&cert, &key).unwrap()).unwrap();
        let mut garbage = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let error = read_plaintext(&mut server, &mut garbage, &mut [0u8; 1024]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
