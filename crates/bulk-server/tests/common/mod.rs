//! Shared test harness: a real server on 127.0.0.1:0 and a raw SMTP client.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulk_policy::{MemoryBackend, NormalizeConfig, PolicyBackend, Population};
use bulk_server::{ServerConfig, StatsSnapshot};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The population every server test runs on.
pub const POPULATION: &str = "\
# an opt-in domain and an opt-out domain
@example.org\topt-in
@example.net\topt-out
ann@example.org\tin
bob@example.org\tdefault
carol@example.org\tout
dave@example.net\tdefault
erin@example.net\tout
frank@example.net\tin
";

/// A running server and the means to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<StatsSnapshot>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> TestServer {
        let population = Population::parse(POPULATION.as_bytes(), NormalizeConfig::default())
            .expect("test population parses");
        Self::start_with(config, Arc::new(MemoryBackend::new(population))).await
    }

    pub async fn start_with<P: PolicyBackend>(config: ServerConfig, policy: Arc<P>) -> TestServer {
        // Tests open up to a thousand connections, both ends in this process, while other
        // tests run beside them: lift the soft open-files limit (1,024 on most machines),
        // as the bulkbench binary does for itself.
        bulk_server::raise_open_files_limit();
        let listener = bulk_server::bind("127.0.0.1:0".parse().unwrap(), 1024).expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bulk_server::run(listener, config, policy, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs")
        });
        TestServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Starts the graceful shutdown and waits for the server to return its stats.
    pub async fn stop(mut self) -> StatsSnapshot {
        let _ = self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
    }

    /// Begins shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
    }

    pub async fn wait(self) -> StatsSnapshot {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
    }
}

/// One reply: its code and its lines' texts (after the code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line as sent: "550 5.7.1 Recipient does not accept bulk mail".
    pub fn text(&self) -> String {
        format!(
            "{} {}",
            self.code,
            self.lines.last().cloned().unwrap_or_default()
        )
    }

    /// Code and enhanced code: "550 5.7.1".
    pub fn codes(&self) -> String {
        let text = self.text();
        text.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")
    }
}

/// A raw SMTP client over a real socket, or TLS over it after [`Client::starttls`]; every
/// wait is bounded.
pub struct Client<S = TcpStream> {
    reader: BufReader<S>,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Client::from_stream(stream)
    }

    /// A client over a socket already connected.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Connects from `source` (bound before the connect: any 127.0.0.0/8 address works on
    /// loopback), so tests can stand for many client addresses.
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let _ = stream.set_nodelay(true);
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends each write without waiting for more (no Nagle), so small writes reach the
    /// server as small reads.
    pub fn set_nodelay(&self) {
        self.reader
            .get_ref()
            .set_nodelay(true)
            .expect("TCP_NODELAY");
    }

    /// Connects and reads the greeting, which must be 220.
    pub async fn greeted(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        let greeting = client.reply().await.expect("greeting");
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client
    }

    /// Connects until the server greets with 220 rather than turning the connection away
    /// with 421, for at most `within` (a freed slot is seen once the old connection's task
    /// has ended); None if it never does.
    pub async fn admitted_within(addr: SocketAddr, within: Duration) -> Option<Client> {
        let started = tokio::time::Instant::now();
        while started.elapsed() < within {
            let mut client = Client::connect(addr).await;
            if client.reply().await.expect("a greeting").code == 220 {
                return Some(client);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The socket, for a test that takes over from here (nothing must be left unread).
    pub fn into_stream(self) -> TcpStream {
        assert!(self.reader.buffer().is_empty(), "unread server output");
        self.reader.into_inner()
    }

    /// The TLS handshake as a client, after the server's `220` to STARTTLS, trusting
    /// exactly `certificate` (the server's self-signed one) for `localhost`. Nothing the
    /// server sent may be left unread: a byte buffered here would be plaintext.
    pub async fn starttls(
        self,
        certificate: &tls::CertificateDer<'static>,
    ) -> Client<tls::ClientStream> {
        let stream = tokio::time::timeout(WAIT, tls::connect(self.into_stream(), certificate))
            .await
            .expect("handshake in time")
            .expect("handshake");
        Client::from_tls(stream)
    }
}

impl Client<tls::ClientStream> {
    fn from_tls(stream: tls::ClientStream) -> Self {
        Client {
            reader: BufReader::new(stream),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.expect("send");
    }

    /// Sends a command line (CRLF added) and returns its reply.
    pub async fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply()
            .await
            .unwrap_or_else(|| panic!("no reply to {line:?}"))
    }

    /// Reads one (possibly multi-line) reply; None when the server closed the connection.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("reply in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("numeric code");
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if !more {
                return Some(Reply { code, lines });
            }
        }
    }

    /// Sends QUIT, expects 221 and the server's close, and closes our side.
    pub async fn quit(mut self) {
        assert_eq!(self.command("QUIT").await.codes(), "221 2.0.0");
        assert_eq!(self.reply().await, None, "server closes after QUIT");
    }

    /// Reads until the server closes; returns the replies seen meanwhile.
    pub async fn replies_until_close(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Some(reply) = self.reply().await {
            replies.push(reply);
        }
        replies
    }
}

/// TLS for the tests: a server configuration with a fresh self-signed certificate, and a
/// client that trusts exactly that certificate.
pub mod tls {
    use std::io;
    use std::sync::Arc;

    use tokio::net::TcpStream;
    use tokio_rustls::rustls;
    pub use tokio_rustls::rustls::pki_types::CertificateDer;

    /// What a test client reads and writes after STARTTLS.
    pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

    /// STARTTLS settings with a self-signed certificate for localhost (required before
    /// MAIL/BULK if `required`), and the certificate, for the client to trust.
    pub fn server(required: bool) -> (bulk_server::TlsConfig, CertificateDer<'static>) {
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = bulk_server::tls::self_signed(&names).expect("a self-signed certificate");
        let config = bulk_server::TlsConfig {
            server: made.server,
            required,
        };
        (config, made.certificate)
    }

    /// The client side of the handshake over `stream`, for `localhost`, trusting only
    /// `certificate`, in any TLS version rustls offers by default (1.3, 1.2).
    pub async fn connect(
        stream: TcpStream,
        certificate: &CertificateDer<'static>,
    ) -> io::Result<ClientStream> {
        connect_with(stream, certificate, rustls::DEFAULT_VERSIONS).await
    }

    /// [`connect`], offering only `versions`.
    pub async fn connect_with(
        stream: TcpStream,
        certificate: &CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> io::Result<ClientStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certificate.clone()).expect("a valid certificate");
        // The workspace's provider, as the server's (bulk_server::tls says why it is ring).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions the provider supports")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
    }
}
