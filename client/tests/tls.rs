//! `wss://`: the client library and the `easechat` binary against a tiny
//! TLS WebSocket server run by the test (rustls + tungstenite on
//! 127.0.0.1), with a test CA and certificates made by rcgen.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use easechat::{tls_config, Client, ClientError, Connection, Options, Received};
use easechat_protocol::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::Message as WsMessage;

/// The longest any step may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// A test CA, and a server certificate it signed for `localhost` and
/// 127.0.0.1.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new(ca_name: &str) -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = server.signed_by(&key, &*ca).unwrap();
        Pki {
            ca_pem: ca.pem(),
            server_chain: vec![cert.der().clone(), ca.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// What the test server saw.
#[derive(Debug)]
enum Seen {
    /// A TLS handshake completed, with the client's SNI and ALPN.
    Handshake {
        sni: Option<String>,
        alpn: Option<String>,
    },
    /// The TLS handshake failed (the client refused the certificate…).
    HandshakeFailed(String),
    /// An EaseChat frame from a client.
    Frame(String),
}

/// A TLS WebSocket server on 127.0.0.1 that answers `1t` with the `1r` the
/// nexus would send to a subscriber (to the sender itself), a `1c` with a
/// `1r` from "server" with text "subscribed", and `1d` with a 1000 close.
struct TlsServer {
    port: u16,
    seen: Receiver<Seen>,
}

impl TlsServer {
    fn start(pki: &Pki) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                pki.server_chain.clone(),
                PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = mpsc::channel();
        // Ends with the test process; every connection ends within PATIENCE
        // of its last frame.
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let (config, tx) = (config.clone(), tx.clone());
                thread::spawn(move || serve(tcp, config, tx));
            }
        });
        TlsServer { port, seen }
    }

    /// The next thing the server saw.
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(PATIENCE)
            .expect("the test server saw nothing")
    }

    /// The next handshake outcome, skipping frames.
    fn next_handshake(&self) -> Seen {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left).expect("no handshake") {
                Seen::Frame(_) => continue,
                other => return other,
            }
        }
    }

    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/", self.port)
    }
}

fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>, seen: Sender<Seen>) {
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.set_write_timeout(Some(PATIENCE)).unwrap();
    let mut tls = ServerConnection::new(config).unwrap();
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut tcp) {
            let _ = seen.send(Seen::HandshakeFailed(e.to_string()));
            return;
        }
    }
    let _ = seen.send(Seen::Handshake {
        sni: tls.server_name().map(str::to_string),
        alpn: tls
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    });
    let Ok(mut ws) = tungstenite::accept(StreamOwned::new(tls, tcp)) else {
        return;
    };
    let mut name = String::new();
    loop {
        let text = match ws.read() {
            Ok(WsMessage::Text(text)) => text,
            Ok(_) => continue,
            Err(_) => return,
        };
        let _ = seen.send(Seen::Frame(text.to_string()));
        let reply = match easechat_protocol::parse(&text) {
            Ok(Message::Hello { name: hello }) => {
                name = hello.to_string();
                None
            }
            Ok(Message::Transmit { channel, text }) => Some(
                Message::Receive {
                    sender: &name,
                    channel,
                    text,
                }
                .encode(),
            ),
            Ok(Message::Subscribe { channel, ttl }) if !ttl.is_zero() => Some(
                Message::Receive {
                    sender: "server",
                    channel,
                    text: "subscribed",
                }
                .encode(),
            ),
            Ok(Message::Disconnect { reason }) => {
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: reason.to_string().into(),
                }));
                None
            }
            _ => None,
        };
        if let Some(reply) = reply {
            if ws.send(WsMessage::text(reply)).is_err() {
                return;
            }
        }
    }
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "easechat-tls-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn received(sender: &str, channel: &str, text: &str) -> Received {
    Received {
        sender: sender.into(),
        channel: channel.into(),
        text: text.into(),
    }
}

fn options(ca: Option<&Path>) -> Options {
    Options {
        ca: ca.map(Path::to_path_buf),
        token: None,
        ..Options::default()
    }
}

/// The server's side of a client refusing its certificate: a TLS alert.
fn assert_refused(seen: Seen) {
    match seen {
        Seen::HandshakeFailed(e) => {
            assert!(e.contains("alert"), "{e}")
        }
        other => panic!("expected a failed handshake, got {other:?}"),
    }
}

/// The connect error of an untrusted certificate, with its reason.
fn assert_untrusted(result: Result<impl std::fmt::Debug, ClientError>, url: &str) {
    match result {
        Err(e @ ClientError::Connect { .. }) => {
            let text = e.to_string();
            assert!(text.contains(url), "{text}");
            assert!(text.contains("certificate"), "{text}");
            assert!(text.contains("UnknownIssuer"), "{text}");
        }
        other => panic!("expected an untrusted certificate, got {other:?}"),
    }
}

#[test]
fn wss_with_the_ca_round_trips() {
    let pki = Pki::new("EaseChat test CA");
    let server = TlsServer::start(&pki);
    let dir = scratch("trusted");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let tls = tls_config(Some(&ca)).unwrap();

    // By IP address: checked against the certificate's IP (no SNI).
    let url = server.url("127.0.0.1");
    let mut connection = Connection::open_with(&url, None, Some(&tls)).unwrap();
    match server.next_handshake() {
        Seen::Handshake { sni, alpn } => {
            assert_eq!(sni, None);
            assert_eq!(alpn.as_deref(), Some("http/1.1"));
        }
        other => panic!("{other:?}"),
    }
    connection.hello("alice").unwrap();
    // The read timeout works on the TLS stream, and a read resumes after it.
    let started = Instant::now();
    assert_eq!(connection.recv(Duration::from_millis(200)).unwrap(), None);
    assert!(started.elapsed() < PATIENCE);
    connection.transmit("c/1", "hé | 你好").unwrap();
    assert_eq!(
        connection.recv(PATIENCE).unwrap(),
        Some(received("alice", "c/1", "hé | 你好"))
    );
    let big = "x".repeat(100_000); // several TLS records
    connection.transmit("c/1", &big).unwrap();
    assert_eq!(
        connection.recv(PATIENCE).unwrap(),
        Some(received("alice", "c/1", &big))
    );
    connection.disconnect("bye").unwrap();

    // By name: the name is the SNI. The CA file may hold several
    // certificates: every one is trusted.
    let other = Pki::new("Another CA");
    let bundle = write(
        &dir,
        "bundle.pem",
        &format!("{}\n{}", other.ca_pem, pki.ca_pem),
    );
    let url = server.url("localhost");
    let mut client = Client::connect(&url, "bob", options(Some(&bundle))).unwrap();
    match server.next_handshake() {
        Seen::Handshake { sni, .. } => assert_eq!(sni.as_deref(), Some("localhost")),
        other => panic!("{other:?}"),
    }
    client.subscribe("room", Duration::from_secs(60)).unwrap();
    assert_eq!(
        client.recv(PATIENCE).unwrap(),
        Some(received("server", "room", "subscribed"))
    );
    client.transmit("room", "hi").unwrap();
    assert_eq!(
        client.recv(PATIENCE).unwrap(),
        Some(received("bob", "room", "hi"))
    );
    client.disconnect("done").unwrap();
}

#[test]
fn wss_refuses_a_certificate_it_does_not_trust() {
    let pki = Pki::new("EaseChat test CA");
    let server = TlsServer::start(&pki);
    let url = server.url("127.0.0.1");

    // The system's roots do not hold the test CA.
    assert_untrusted(Connection::open(&url, None), &url);
    assert_refused(server.next());
    assert_untrusted(Client::connect(&url, "x", options(None)), &url);
    assert_refused(server.next());

    // Nor does another CA.
    let dir = scratch("untrusted");
    let other = write(&dir, "other.pem", &Pki::new("Another CA").ca_pem);
    let tls = tls_config(Some(&other)).unwrap();
    assert_untrusted(Connection::open_with(&url, None, Some(&tls)), &url);
    assert_refused(server.next());
    let url = server.url("localhost");
    assert_untrusted(Client::connect(&url, "x", options(Some(&other))), &url);
}

#[test]
fn a_ca_file_without_a_certificate_is_named() {
    let dir = scratch("bad-ca");
    let key_only = write(
        &dir,
        "key.pem",
        &KeyPair::generate().unwrap().serialize_pem(),
    );
    let empty = write(&dir, "empty.pem", "");
    let missing = dir.join("missing.pem");
    let bad_base64 = write(
        &dir,
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let not_der = write(
        &dir,
        "not-der.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    for (path, says) in [
        (&key_only, "no certificate"),
        (&empty, "no certificate"),
        (&missing, "cannot read"),
        (&bad_base64, "not valid PEM"),
        (&not_der, "certificate 1"),
    ] {
        match tls_config(Some(path)) {
            Err(e @ ClientError::Ca { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&path.display().to_string()), "{text}");
                assert!(text.contains(says), "{text}");
            }
            other => panic!("{}: {other:?}", path.display()),
        }
        // Reported before connecting, whatever the URL.
        for url in ["wss://127.0.0.1:1/", "ws://127.0.0.1:1/"] {
            assert!(matches!(
                Client::connect(url, "x", options(Some(path))),
                Err(ClientError::Ca { .. })
            ));
        }
    }
}

/// Runs `easechat ARGS` to its end (at most PATIENCE): exit status, stdout,
/// stderr.
fn easechat(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_easechat"))
        .args(args)
        .env_remove("EASECHAT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait(&mut child);
    (status, out.join().unwrap(), err.join().unwrap())
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        text
    })
}

/// Waits at most PATIENCE for `child` to exit (killing it after that).
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("easechat did not exit within {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn easechat_pub_and_sub_over_wss_with_ca() {
    let pki = Pki::new("EaseChat test CA");
    let server = TlsServer::start(&pki);
    let dir = scratch("binary");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let ca = ca.to_str().unwrap();
    let url = server.url("127.0.0.1");

    let (status, _, err) = easechat(&[
        "pub", "--url", &url, "--ca", ca, "--name", "editor", "news", "extra",
    ]);
    assert!(status.success(), "{err}");
    let frames: Vec<String> = server.seen.try_iter().filter_map(frame).collect();
    let transmit = Message::Transmit {
        channel: "news",
        text: "extra",
    }
    .encode();
    assert!(frames.contains(&transmit), "{frames:?}");

    // Without --ca: the system's roots, which do not hold the test CA.
    let (status, _, err) = easechat(&["pub", "--url", &url, "--name", "e", "news", "x"]);
    assert!(!status.success());
    assert!(err.contains("certificate"), "{err}");
    // A --ca file without a certificate is named.
    let empty = write(&dir, "empty.pem", "not PEM\n");
    let empty = empty.to_str().unwrap();
    let (status, _, err) = easechat(&[
        "pub", "--url", &url, "--ca", empty, "--name", "e", "news", "x",
    ]);
    assert!(!status.success());
    assert!(
        err.contains(empty) && err.contains("no certificate"),
        "{err}"
    );

    // sub: the server answers the 1c with a message on the channel.
    let url = server.url("localhost");
    let mut sub = Command::new(env!("CARGO_BIN_EXE_easechat"))
        .args([
            "sub", "--url", &url, "--ca", ca, "--name", "watcher", "--json", "room",
        ])
        .env_remove("EASECHAT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = lines.recv_timeout(PATIENCE);
    // SIGTERM: sub says 1d, the server closes, sub exits cleanly.
    Command::new("kill")
        .args(["-TERM", &sub.id().to_string()])
        .status()
        .unwrap();
    let status = wait(&mut sub);
    let json: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "sender": "server", "channel": "room", "text": "subscribed" })
    );
    assert!(status.success());
}

fn frame(seen: Seen) -> Option<String> {
    match seen {
        Seen::Frame(text) => Some(text),
        _ => None,
    }
}
