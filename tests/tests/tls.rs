//! The API over TLS, on a real otpd process: a client that pins the test's CA (and
//! trusts nothing else) reaches it over HTTP/1.1 and HTTP/2 (ALPN); plain HTTP on
//! the TLS port gets nothing; with `client_ca_file` a client without a certificate
//! from that CA is refused at the handshake; a renewed certificate is served after
//! SIGHUP, without a restart, and broken files on reload leave the one in force.

use std::path::Path;
use std::time::{Duration, Instant};

use otpd_e2e::process::OtpdProcess;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and its key (PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A client that trusts `ca` and nothing else, with `identity` (certificate and key
/// PEM) when given.
fn pinned(ca: &Ca, identity: Option<(String, String)>, http2: bool) -> reqwest::Client {
    otpd_adapters::push::http::install_crypto();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    if !http2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn write_server_files(dir: &Path, ca: &Ca) {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"], false);
    std::fs::write(dir.join("server.crt"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
}

fn config(dir: &Path, client_ca: Option<&Path>) -> String {
    let mut tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    );
    if let Some(ca) = client_ca {
        tls.push_str(&format!("client_ca_file = \"{}\"\n", ca.display()));
    }
    format!(
        "[codes]\nsecret = \"one secret for every node, at least 32 bytes long\"\n\n{tls}\n[log]\nlevel = \"warn\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls_pinned_to_its_ca_on_both_http_versions() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("otpd test CA");
    write_server_files(dir.path(), &ca);
    let otpd = OtpdProcess::start_tls(&config(dir.path(), None), pinned(&ca, None, true)).await;
    assert!(otpd.base.starts_with("https://"));

    for http2 in [false, true] {
        let answer = pinned(&ca, None, http2)
            .post(format!("{}/v1/verifications", otpd.base))
            .json(&serde_json::json!({"to": format!("+3460000000{}", u8::from(http2))}))
            .send()
            .await
            .unwrap();
        let version = answer.version();
        assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(version, expected, "ALPN agreed on the version asked for");
    }

    // A client that pins another CA refuses otpd's certificate.
    let other = Ca::new("another CA");
    let refused = pinned(&other, None, true)
        .get(format!("{}/livez", otpd.base))
        .send()
        .await;
    assert!(refused.is_err(), "a certificate from another CA was taken");

    // Plain HTTP on the TLS port: no HTTP answer, and the server goes on.
    let plain = otpd.base.replacen("https://", "http://", 1);
    let answer = otpd_e2e::client()
        .get(format!("{plain}/livez"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
    let live = pinned(&ca, None, true)
        .get(format!("{}/livez", otpd.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("otpd test CA");
    write_server_files(dir.path(), &ca);
    let clients = Ca::new("backends' CA");
    std::fs::write(dir.path().join("clients.crt"), clients.pem()).unwrap();
    let backend = pinned(&ca, Some(clients.issue(&["backend"], true)), true);
    let otpd = OtpdProcess::start_tls(
        &config(dir.path(), Some(&dir.path().join("clients.crt"))),
        backend.clone(),
    )
    .await;

    let ok = backend
        .get(format!("{}/livez", otpd.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for (who, client) in [
        ("no certificate", pinned(&ca, None, true)),
        (
            "a certificate from another CA",
            pinned(
                &ca,
                Some(Ca::new("stranger").issue(&["backend"], true)),
                true,
            ),
        ),
    ] {
        let answer = client.get(format!("{}/livez", otpd.base)).send().await;
        assert!(answer.is_err(), "{who} was let in: {answer:?}");
    }
}

/// The CA that signed the certificate otpd serves now, of `cas`.
async fn served_by(base: &str, cas: &[&Ca]) -> Option<usize> {
    for (i, ca) in cas.iter().enumerate() {
        if pinned(ca, None, false)
            .get(format!("{base}/livez"))
            .send()
            .await
            .is_ok()
        {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (Ca::new("old CA"), Ca::new("new CA"));
    write_server_files(dir.path(), &old);
    let otpd = OtpdProcess::start_tls(&config(dir.path(), None), pinned(&old, None, true)).await;
    assert_eq!(served_by(&otpd.base, &[&old, &new]).await, Some(0));

    // Broken files: the reload is refused and the certificate in force stays.
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    otpd.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !otpd.log().contains("configuration reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            otpd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(otpd.log().contains("server.tls"), "{}", otpd.log());
    assert_eq!(served_by(&otpd.base, &[&old, &new]).await, Some(0));

    // Renewed: served to every connection after the reload, no restart.
    write_server_files(dir.path(), &new);
    otpd.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_by(&otpd.base, &[&old, &new]).await != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `otpd check-config` on `[server.tls]` files that make no certificate: exit 78,
/// the message naming the key and what is wrong.
#[test]
fn broken_tls_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("otpd test CA");
    write_server_files(dir.path(), &ca);
    let check = |config: &str| {
        let file = dir.path().join("otpd.toml");
        std::fs::write(&file, config).unwrap();
        let out = std::process::Command::new(otpd_e2e::process::otpd_binary())
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let good = config(dir.path(), None);
    assert_eq!(check(&good).0, Some(0), "{}", check(&good).1);

    let missing = good.replace("server.crt", "absent.crt");
    let (code, said) = check(&missing);
    assert_eq!(code, Some(78), "{said}");
    assert!(
        said.contains("server.tls.cert_file") && said.contains("absent.crt"),
        "{said}"
    );

    // The key of another certificate.
    let (_, other_key) = ca.issue(&["localhost"], false);
    std::fs::write(dir.path().join("other.key"), other_key).unwrap();
    let (code, said) = check(&good.replace("server.key", "other.key"));
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("do not go together"), "{said}");

    std::fs::write(dir.path().join("garbage.key"), "-----BEGIN NOTHING-----\n").unwrap();
    let (code, said) = check(&good.replace("server.key", "garbage.key"));
    assert_eq!(code, Some(78), "{said}");
    assert!(
        said.contains("server.tls.key_file") && said.contains("no usable private key"),
        "{said}"
    );

    // A carrier's TLS: a CA file that is not there, one without tls = true.
    let carrier = over_tls_to(2775, &dir.path().join("absent-ca.crt"));
    let (code, said) = check(&carrier);
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("channels.smpp.sim.tls_ca_file"), "{said}");
    let (code, said) = check(&carrier.replace("tls = true", "tls = false"));
    assert_eq!(code, Some(78), "{said}");
    assert!(said.contains("set without tls = true"), "{said}");
}

/// The configuration of a node whose carrier is reached over TLS at `port`,
/// trusting `ca_file`.
fn over_tls_to(port: u16, ca_file: &Path) -> String {
    otpd_e2e::process::with_carrier(
        port,
        "",
        &format!(
            "tls = true\ntls_ca_file = \"{}\"\nbinds = 1\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"",
            ca_file.display()
        ),
    )
}

/// A carrier that offers SMPP over TLS (the SMSC simulator behind a TLS front):
/// otpd binds over TLS, checks the SMSC's certificate against the carrier's CA
/// file, submits, and the receipt comes back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp_over_tls_to_a_carrier_that_offers_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("carrier CA");
    std::fs::write(dir.path().join("carrier-ca.crt"), ca.pem()).unwrap();
    let smsc = otpd_simulators::smsc::Smsc::start(otpd_e2e::process::smsc_for_carrier())
        .await
        .unwrap();
    let (cert, key) = ca.issue(&["smsc.example", "127.0.0.1"], false);
    let front = otpd_e2e::tls_front::TlsFront::start(smsc.addr(), &cert, &key).await;
    let otpd = OtpdProcess::start(&over_tls_to(
        front.addr.port(),
        &dir.path().join("carrier-ca.crt"),
    ))
    .await;
    otpd.wait_channels().await;

    let client = otpd_e2e::client();
    let issued: serde_json::Value = client
        .post(format!("{}/v1/verifications", otpd.base))
        .json(&serde_json::json!({"to": "+34600000077"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = issued["id"].as_str().expect("an id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = client
            .get(format!("{}/v1/verifications/{id}", otpd.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["delivery"]["state"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "no receipt over TLS: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = smsc.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].destination.addr, "34600000077");
}

/// A carrier whose certificate does not chain to the configured CA: otpd never
/// binds (nothing reaches the SMSC), the carrier is not live, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpp_over_tls_refuses_a_carrier_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, impostor) = (Ca::new("carrier CA"), Ca::new("impostor CA"));
    std::fs::write(dir.path().join("carrier-ca.crt"), trusted.pem()).unwrap();
    let smsc = otpd_simulators::smsc::Smsc::start(otpd_e2e::process::smsc_for_carrier())
        .await
        .unwrap();
    let (cert, key) = impostor.issue(&["127.0.0.1"], false);
    let front = otpd_e2e::tls_front::TlsFront::start(smsc.addr(), &cert, &key).await;
    let config = over_tls_to(front.addr.port(), &dir.path().join("carrier-ca.crt"))
        .replace("level = \"warn\"", "level = \"info\"");
    let otpd = OtpdProcess::start(&config).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = otpd_e2e::client()
        .get(format!("{}/readyz", otpd.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        smsc.stats()
            .binds
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a bind reached the SMSC through an untrusted certificate"
    );
    let log = otpd.log();
    assert!(
        log.to_lowercase().contains("certificate"),
        "the log does not say the certificate was refused:\n{log}"
    );
}
