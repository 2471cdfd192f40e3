//! A firmware server for download tests: HTTPS on loopback with a certificate of a
//! test CA, Range requests, and faults on demand (a response cut after some bytes).
//! Each connection is served by a thread, HTTP/1.1 written by hand so the faults are
//! exactly what the test asks. Included with `#[path]`, beside `certificates.rs`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Default)]
struct State {
    /// Files by path.
    files: Vec<(String, Vec<u8>)>,
    /// The next response stops after this many body bytes.
    cut_next_after: Option<usize>,
    /// Every request: its path and its Range header.
    requests: Vec<(String, Option<String>)>,
}

pub struct FirmwareServer {
    pub port: u16,
    /// The CA the server's certificate chains to (PEM).
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
}

impl FirmwareServer {
    pub fn start() -> FirmwareServer {
        let issued = crate::certificates::issue(&["127.0.0.1"], false);
        let chain =
            vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()];
        let private = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, config, &state));
            }
        });
        FirmwareServer {
            port,
            ca_pem: issued.ca_pem,
            state,
        }
    }

    /// Serves `body` at `path`.
    pub fn put(&self, path: &str, body: Vec<u8>) {
        let mut state = self.state.lock().unwrap();
        state.files.retain(|(known, _)| known != path);
        state.files.push((path.to_string(), body));
    }

    /// The next response stops after `bytes` body bytes (the connection drops).
    pub fn cut_next_after(&self, bytes: usize) {
        self.state.lock().unwrap().cut_next_after = Some(bytes);
    }

    /// Every request so far: path and Range header.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>, state: &Mutex<State>) {
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let range = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("range")
            .then(|| value.trim().to_string())
    });
    let (file, cut) = {
        let mut state = state.lock().unwrap();
        state.requests.push((path.clone(), range.clone()));
        let file = state
            .files
            .iter()
            .find(|(known, _)| *known == path)
            .map(|(_, body)| body.clone());
        (file, state.cut_next_after.take())
    };
    let Some(file) = file else {
        let _ = tls
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = tls.flush();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        return;
    };
    let start = range
        .as_deref()
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.strip_suffix('-'))
        .and_then(|start| start.parse::<usize>().ok())
        .filter(|start| *start < file.len());
    let (status, body, content_range) = match start {
        Some(start) => (
            "206 Partial Content",
            &file[start..],
            format!(
                "content-range: bytes {start}-{}/{}\r\n",
                file.len() - 1,
                file.len()
            ),
        ),
        None => ("200 OK", &file[..], String::new()),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{content_range}content-type: application/octet-stream\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if tls.write_all(header.as_bytes()).is_err() {
        return;
    }
    match cut {
        Some(bytes) => {
            let _ = tls.write_all(&body[..bytes.min(body.len())]);
            let _ = tls.flush();
            // Gone mid-body, without a TLS close_notify: the backhaul dropped.
            let _ = tls.sock.shutdown(Shutdown::Both);
        }
        None => {
            let _ = tls.write_all(body);
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}
