//! STARTTLS sessions over real sockets on loopback: a small TLS-capable front (rustls,
//! certificates made by rcgen) that speaks the greeting, EHLO and STARTTLS itself and
//! then hands the connection to bulkbench's own server, so every RCPT is still answered
//! by the population and checked strictly.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulk_loadgen::{
    CertificateCheck, ErrorKind, LoadConfig, Phase, Progress, RunResult, Schedule, TlsClient,
};
use bulk_server::ServerConfig;
use common::{memory_backend, prepare, scenario, start_server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as TlsServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate it signed, for 127.0.0.1 and `localhost`.
struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: key.serialize_der(),
    }
}

#[allow(deprecated)] // ring, as the generator uses (see bulk-loadgen's tls.rs)
fn acceptor(pki: &Pki) -> TlsAcceptor {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = TlsServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// How the front answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Front {
    /// Advertises STARTTLS, answers it with 220 and does the handshake.
    Tls,
    /// Does not advertise STARTTLS.
    NoStarttls,
    /// Advertises STARTTLS but answers it with 454.
    Refuses,
    /// Sends a line after its 220, before the handshake.
    InjectsAfter220,
}

/// What the front saw of the TLS sessions: the SNI each asked for.
#[derive(Default)]
struct Seen {
    sni: Vec<Option<String>>,
}

/// The front on 127.0.0.1:0, in front of `backend` (bulkbench's server): the greeting and
/// the first EHLO go to the backend and back, STARTTLS added to the EHLO reply (unless
/// `NoStarttls`); STARTTLS is answered here, and after the handshake the rest of the
/// session (the second EHLO on) is relayed to the backend over the TLS stream. A session
/// without STARTTLS is relayed as it is.
async fn start_front(
    mode: Front,
    backend: SocketAddr,
    pki: &Pki,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(pki);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let front_seen = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), front_seen.clone());
            tokio::spawn(async move {
                let _ = serve(mode, client, backend, acceptor, seen).await;
            });
        }
    });
    (addr, seen)
}

/// Reads one reply (its lines up to the one whose code is followed by a space).
async fn read_reply(from: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    loop {
        let start = reply.len();
        if from.read_until(b'\n', &mut reply).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if reply.get(start + 3) != Some(&b'-') {
            return Ok(reply);
        }
    }
}

async fn serve(
    mode: Front,
    client: TcpStream,
    backend: SocketAddr,
    acceptor: TlsAcceptor,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    let mut server = BufReader::new(TcpStream::connect(backend).await?);
    let mut client = BufReader::new(client);
    let greeting = read_reply(&mut server).await?;
    client.get_mut().write_all(&greeting).await?;
    let mut ehlo = Vec::new();
    client.read_until(b'\n', &mut ehlo).await?;
    server.get_mut().write_all(&ehlo).await?;
    let mut reply = read_reply(&mut server).await?;
    if mode != Front::NoStarttls {
        let first = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
        reply.splice(first..first, b"250-STARTTLS\r\n".iter().copied());
    }
    client.get_mut().write_all(&reply).await?;
    let mut next = Vec::new();
    client.read_until(b'\n', &mut next).await?;
    if !next.eq_ignore_ascii_case(b"STARTTLS\r\n") {
        // A session without TLS: the rest goes to the backend as it comes.
        server.get_mut().write_all(&next).await?;
        server.get_mut().write_all(client.buffer()).await?;
        let (mut client, mut server) = (client.into_inner(), server.into_inner());
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    match mode {
        Front::Refuses => {
            client
                .get_mut()
                .write_all(b"454 4.7.0 TLS not available\r\n")
                .await?;
            // The client ends the session: wait for it to go.
            let _ = client.read_to_end(&mut Vec::new()).await;
            return Ok(());
        }
        Front::InjectsAfter220 => {
            client
                .get_mut()
                .write_all(b"220 2.0.0 go ahead\r\n250 injected\r\n")
                .await?;
            let _ = client.read_to_end(&mut Vec::new()).await;
            return Ok(());
        }
        Front::Tls | Front::NoStarttls => {}
    }
    assert!(
        client.buffer().is_empty(),
        "nothing is pipelined after STARTTLS"
    );
    client
        .get_mut()
        .write_all(b"220 2.0.0 go ahead\r\n")
        .await?;
    let mut tls = acceptor.accept(client.into_inner()).await?;
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    seen.lock().unwrap().sni.push(sni);
    let mut server = server.into_inner();
    tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
    Ok(())
}

fn config(target: SocketAddr) -> LoadConfig {
    let mut config = LoadConfig::new(target, Schedule::Closed { concurrency: 4 });
    config.command_timeout = Duration::from_secs(10);
    config
}

async fn run(prepared: &common::Prepared, config: LoadConfig) -> RunResult {
    let run = bulk_loadgen::run(
        prepared.workload.clone(),
        config,
        Arc::new(Progress::default()),
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("run ends in time")
}

/// 40 sessions of which `share` use STARTTLS, and bulkbench's server for them.
async fn setup(
    share: f64,
) -> (
    common::Prepared,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut scenario = scenario(40, 4, None);
    scenario.workload.starttls_share = share.try_into().unwrap();
    let prepared = prepare(scenario);
    let (backend, stop) =
        start_server(memory_backend(&prepared.model), ServerConfig::default()).await;
    (prepared, backend, stop)
}

fn tls_sessions(prepared: &common::Prepared) -> u64 {
    prepared
        .workload
        .sessions
        .iter()
        .filter(|s| s.starttls)
        .count() as u64
}

fn count(result: &RunResult, phase: Phase) -> u64 {
    result.measured.phase(phase).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_starttls_session_handshakes_and_is_checked_as_usual() {
    let (prepared, backend, _stop) = setup(1.0).await;
    let pki = pki();
    let (front, seen) = start_front(Front::Tls, backend, &pki).await;
    let result = run(&prepared, config(front)).await;
    assert_eq!(result.totals.error_count(), 0, "{:?}", result.totals.errors);
    assert_eq!(result.totals.sessions_completed, 40);
    assert_eq!(result.totals.starttls_sessions, 40);
    assert_eq!(result.totals.rcpts, prepared.workload.rcpt_count());
    // Strictly checked through TLS: the backend's verdicts are the population's.
    assert_eq!(result.mismatches.total, 0, "{:?}", result.mismatches);
    assert!(result.totals.messages > 0);
    assert_eq!(count(&result, Phase::TlsHandshake), 40);
    assert_eq!(count(&result, Phase::Starttls), 40);
    // EHLO before STARTTLS and again after the handshake.
    assert_eq!(count(&result, Phase::Ehlo), 80);
    // The target is an address: no SNI.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.sni.len(), 40);
    assert!(seen.sni.iter().all(Option::is_none), "{:?}", seen.sni);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_sessions_use_starttls_as_their_seed_draws() {
    let (prepared, backend, _stop) = setup(0.5).await;
    let tls = tls_sessions(&prepared);
    // Drawn from (seed, index): the same sessions every run; about half of them.
    assert_eq!(tls, 23);
    let pki = pki();
    let (front, seen) = start_front(Front::Tls, backend, &pki).await;
    let result = run(&prepared, config(front)).await;
    assert_eq!(result.totals.error_count(), 0, "{:?}", result.totals.errors);
    assert_eq!(result.mismatches.total, 0, "{:?}", result.mismatches);
    assert_eq!(result.totals.starttls_sessions, tls);
    assert_eq!(count(&result, Phase::TlsHandshake), tls);
    assert_eq!(count(&result, Phase::Ehlo), 40 + tls);
    assert_eq!(seen.lock().unwrap().sni.len() as u64, tls);
    assert_eq!(result.totals.rcpts, prepared.workload.rcpt_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_starttls_fails_tls_sessions_with_their_own_kind() {
    let (prepared, backend, _stop) = setup(0.5).await;
    let tls = tls_sessions(&prepared);
    let pki = pki();
    let (front, _) = start_front(Front::NoStarttls, backend, &pki).await;
    let result = run(&prepared, config(front)).await;
    // The TLS sessions fail, counted by kind; the run goes on, the others complete.
    assert_eq!(
        result.totals.errors.get(&ErrorKind::StarttlsNotOffered),
        Some(&tls),
        "{:?}",
        result.totals.errors
    );
    assert_eq!(result.totals.error_count(), tls);
    assert_eq!(result.totals.sessions_completed, 40 - tls);
    assert_eq!(count(&result, Phase::TlsHandshake), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_refused_or_bytes_after_its_220_fail_the_session() {
    let (prepared, backend, _stop) = setup(1.0).await;
    let pki = pki();
    for (mode, kind) in [
        (Front::Refuses, ErrorKind::StarttlsRefused),
        (Front::InjectsAfter220, ErrorKind::TlsHandshake),
    ] {
        let (front, _) = start_front(mode, backend, &pki).await;
        let result = run(&prepared, config(front)).await;
        assert_eq!(
            result.totals.errors.get(&kind),
            Some(&40),
            "{mode:?}: {:?}",
            result.totals.errors
        );
        assert_eq!(count(&result, Phase::TlsHandshake), 0, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_checked_against_the_given_ca_when_asked() {
    let (prepared, backend, _stop) = setup(1.0).await;
    let pki = pki();
    let (front, seen) = start_front(Front::Tls, backend, &pki).await;
    let ip = front.ip();

    // Another CA: every handshake fails on the certificate.
    let other = pki_ca_only();
    let mut wrong = config(front);
    wrong.tls = TlsClient::new(&CertificateCheck::Roots(vec![other]), None, ip).unwrap();
    assert!(wrong.tls.verifies_certificates());
    let result = run(&prepared, wrong).await;
    assert_eq!(
        result.totals.errors.get(&ErrorKind::TlsCertificate),
        Some(&40),
        "{:?}",
        result.totals.errors
    );

    // The right CA, for the address and for a name (sent as SNI): every session passes.
    let roots = CertificateCheck::Roots(vec![pki.ca.clone()]);
    for name in [None, Some("localhost")] {
        let mut right = config(front);
        right.tls = TlsClient::new(&roots, name, ip).unwrap();
        let result = run(&prepared, right).await;
        assert_eq!(result.totals.error_count(), 0, "{:?}", result.totals.errors);
        assert_eq!(count(&result, Phase::TlsHandshake), 40);
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.sni
                .iter()
                .filter(|s| s.as_deref() == Some("localhost"))
                .count(),
            40,
            "{:?}",
            seen.sni
        );
    }

    // A name the certificate does not hold fails as the certificate's.
    let mut misnamed = config(front);
    misnamed.tls = TlsClient::new(&roots, Some("mx.example"), ip).unwrap();
    let result = run(&prepared, misnamed).await;
    assert_eq!(
        result.totals.errors.get(&ErrorKind::TlsCertificate),
        Some(&40),
        "{:?}",
        result.totals.errors
    );
}

/// A CA certificate of its own, that signed nothing the front presents.
fn pki_ca_only() -> CertificateDer<'static> {
    pki().ca
}
