//! Configuration loading: the shipped file, environment overrides, and every kind of
//! mistake named by its key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use otpd::config::{Config, ConfigError};
use otpd::server::Settings;

/// Read and parse, as `otpd serve` does; the sections as read.
fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    Settings::load(file, env).map(|s| s.config)
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/otpd.toml")
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let f = file(text);
    load(Some(f.path()), Vec::new())
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_shipped_file_is_the_default() {
    let config = load(Some(&shipped()), Vec::new()).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn no_file_means_defaults() {
    let config = load(None, Vec::new()).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.purposes["login"].ttl, Duration::from_secs(600));
    assert_eq!(config.purposes["login"].code_length, 6);
}

#[test]
fn file_values_and_extra_purposes_merge_with_defaults() {
    let config = load_text(
        r#"
        [server]
        listen = "127.0.0.1:9999"
        [purposes.payment]
        ttl = "2m"
        code_length = 8
        "#,
    )
    .unwrap();
    assert_eq!(config.server.listen.port(), 9999);
    assert_eq!(config.purposes["payment"].ttl, Duration::from_secs(120));
    assert_eq!(config.purposes["payment"].max_attempts, 5);
    assert!(config.purposes.contains_key("login"));
}

#[test]
fn environment_overrides_the_file() {
    let f = file("[server]\nlisten = \"127.0.0.1:9999\"\n");
    let config = load(
        Some(f.path()),
        env(&[
            ("OTPD_SERVER__LISTEN", "127.0.0.1:7000"),
            ("OTPD_PURPOSES__LOGIN__CODE_LENGTH", "8"),
            ("OTPD_PURPOSES__LOGIN__TTL", "5m"),
            ("OTPD_SECRET", "an environment secret of 32+ bytes!!"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.listen.port(), 7000);
    assert_eq!(config.purposes["login"].code_length, 8);
    assert_eq!(config.purposes["login"].ttl, Duration::from_secs(300));
    assert_eq!(
        config.codes.secret.as_ref().map(|s| s.expose()),
        Some("an environment secret of 32+ bytes!!")
    );
}

fn error_of(result: Result<Config, ConfigError>) -> String {
    result.expect_err("must be refused").to_string()
}

#[test]
fn unknown_keys_are_named() {
    let e = error_of(load_text("[server]\nlisten = \"127.0.0.1:1\"\nport = 80\n"));
    assert!(e.contains("port") && e.contains("server"), "{e}");
    let e = error_of(load_text("[sever]\n"));
    assert!(e.contains("sever"), "{e}");
    let e = error_of(load(None, env(&[("OTPD_SERVER__PORT", "1")])));
    assert!(e.contains("OTPD_SERVER__PORT"), "{e}");
}

#[test]
fn wrong_types_are_named() {
    let e = error_of(load_text("[purposes.login]\ncode_length = \"six\"\n"));
    assert!(e.contains("purposes.login.code_length"), "{e}");
    let e = error_of(load_text("[server]\nlisten = \"not an address\"\n"));
    assert!(e.contains("server.listen"), "{e}");
    let e = error_of(load_text("[purposes.login]\nttl = \"ten minutes\"\n"));
    assert!(e.contains("purposes.login.ttl"), "{e}");
    let e = error_of(load(
        None,
        env(&[("OTPD_DELIVERY__QUEUE_CAPACITY", "lots")]),
    ));
    assert!(
        e.contains("delivery.queue_capacity") && e.contains("OTPD_DELIVERY__QUEUE_CAPACITY"),
        "{e}"
    );
}

#[test]
fn impossible_values_are_named() {
    let cases = [
        (
            "[purposes.login]\ncode_length = 12\n",
            "purposes.login.code_length",
        ),
        (
            "[purposes.login]\ncode_length = 3\n",
            "purposes.login.code_length",
        ),
        (
            "[purposes.login]\nmax_attempts = 0\n",
            "purposes.login.max_attempts",
        ),
        ("[purposes.login]\nttl = \"0s\"\n", "purposes.login.ttl"),
        (
            "[purposes.login]\nresend_cooldown = \"20m\"\n",
            "purposes.login.resend_cooldown",
        ),
        ("[purposes.\"Bad Name\"]\n", "purposes.Bad Name"),
        ("[codes]\nsecret = \"short\"\n", "codes.secret"),
        (
            "[codes]\ndefault_purpose = \"signup\"\n",
            "codes.default_purpose",
        ),
        ("[codes]\ndefault_locale = \"fr\"\n", "codes.default_locale"),
        (
            "[delivery]\nqueue_capacity = 0\n",
            "delivery.queue_capacity",
        ),
        ("[delivery]\nconcurrency = 0\n", "delivery.concurrency"),
        (
            "[delivery]\nmax_queue_delay = \"1ms\"\n",
            "delivery.max_queue_delay",
        ),
        ("[delivery]\nsms = \"pigeon\"\n", "delivery.sms"),
        ("[delivery]\nsms = \"smpp.nobody\"\n", "delivery.sms"),
        (
            "[channels.smpp.c]\nsystem_id = \"\"\n",
            "channels.smpp.c.system_id",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"a-system-id-far-too-long\"\n",
            "channels.smpp.c.system_id",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\npassword = \"ninechars\"\n",
            "channels.smpp.c.password",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\nsource_addr = \"TwelveLetter\"\n",
            "channels.smpp.c.source_addr",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\nbinds = 0\n",
            "channels.smpp.c.binds",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\ntps = 0\n",
            "channels.smpp.c.tps",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\nport = 0\n",
            "channels.smpp.c.port",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\nwindow = \"big\"\n",
            "channels.smpp.c.window",
        ),
        (
            "[channels.smpp.c]\nsystem_id = \"x\"\nbind_mode = \"rx\"\n",
            "bind_mode",
        ),
        ("[store]\nkind = \"postgres\"\n", "store.kind"),
        ("[store]\npath = \"\"\n", "store.path"),
        ("[store]\nsync = \"sometimes\"\n", "store.sync"),
        ("[store]\nwrite_timeout = \"0s\"\n", "store.write_timeout"),
        ("[store]\nkind = \"redis\"\n", "codes.secret"),
        (
            "[store]\nkind = \"redis\"\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[redis]\nurls = [\"http://x\"]\n",
            "redis.urls[0]",
        ),
        (
            "[store]\nkind = \"redis\"\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[redis]\nurls = [\"redis://a:1\", \"redis://b:2\"]\n",
            "cluster = true",
        ),
        (
            "[store]\nkind = \"redis\"\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[redis]\npartitions = 0\n",
            "redis.partitions",
        ),
        (
            "[store]\nkind = \"redis\"\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[redis]\nprefix = \"a b\"\n",
            "redis.prefix",
        ),
        (
            "[store]\nkind = \"redis\"\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[redis]\ntimeout = \"0s\"\n",
            "redis.timeout",
        ),
        ("[redis]\nurls = \"redis://x\"\n", "redis.urls"),
        ("[server]\nbody_limit = 10\n", "server.body_limit"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        (
            "[[clients]]\nname = \"sede\"\nkey_sha256 = \"not-hex\"\n",
            "clients.0.key_sha256",
        ),
        (
            "[[clients]]\nname = \"sede\"\nkey_sha256 = \"abcd\"\n",
            "64 hex digits",
        ),
        (
            "[[clients]]\nname = \"a\"\nkey_sha256 = \"AB00000000000000000000000000000000000000000000000000000000000000\"\n[[clients]]\nname = \"b\"\nkey_sha256 = \"ab00000000000000000000000000000000000000000000000000000000000000\"\n",
            "two clients have the same key",
        ),
    ];
    for (text, key) in cases {
        let e = error_of(load_text(text));
        assert!(e.contains(key), "{text:?} gave {e}");
    }
}

#[test]
fn an_smpp_carrier_is_configured_and_named_by_delivery_sms() {
    let config = load_text(
        r#"
        [delivery]
        sms = "smpp.movistar"
        [channels.smpp.movistar]
        host = "127.0.0.1"
        port = 2776
        system_id = "otpd"
        password = "secret"
        binds = 2
        tps = 100
        source_addr = "Clave"
        response_timeout = "5s"
        "#,
    )
    .unwrap();
    let c = &config.channels.smpp["movistar"];
    assert_eq!((c.port, c.binds, c.tps, c.window), (2776, 2, Some(100), 64));
    assert_eq!(c.response_timeout, Duration::from_secs(5));
    assert!(c.registered_delivery);
    // A carrier's password is not echoed when it is refused.
    let e = error_of(load_text(
        "[channels.smpp.c]\nsystem_id = \"x\"\npassword = \"topsecret\"\n",
    ));
    assert!(!e.contains("topsecret"), "{e}");
}

#[test]
fn a_short_secret_is_never_echoed() {
    let e = error_of(load_text("[codes]\nsecret = \"hunter2\"\n"));
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn broken_toml_and_missing_files_are_clear() {
    let e = error_of(load_text("[server\nlisten = 1"));
    assert!(e.contains("invalid configuration"), "{e}");
    let e = error_of(load(Some(Path::new("/no/such/otpd.toml")), Vec::new()));
    assert!(e.contains("/no/such/otpd.toml"), "{e}");
}

const PUSH_TOML: &str = r#"
    [push.apns]
    url = "https://127.0.0.1:8443"
    key_file = "/etc/otpd/AuthKey.p8"
    key_id = "ABC123DEFG"
    team_id = "TEAM123456"
    [push.hms]
    client_id = "104523"
    [purposes.login]
    escalate_after = "45s"
    push_ack = "provider"
"#;

#[test]
fn push_providers_are_configured_per_platform() {
    // The HMS secret is required; it may come from the environment.
    assert!(error_of(load_text(PUSH_TOML)).contains("push.hms"));
    let f = file(PUSH_TOML);
    let config = load(
        Some(f.path()),
        env(&[("OTPD_PUSH__HMS__CLIENT_SECRET", "s3cret")]),
    )
    .unwrap();
    let apns = config.push.apns.as_ref().unwrap();
    assert_eq!(apns.connections, 2);
    assert_eq!(apns.max_streams, 1000);
    assert!(config.push.fcm.is_none());
    let hms = config.push.hms.as_ref().unwrap();
    assert_eq!(hms.client_secret.expose(), "s3cret");
    assert_eq!(hms.url, "https://push-api.cloud.huawei.com");
    assert_eq!(
        config.purposes["login"].escalate_after,
        Duration::from_secs(45)
    );
    assert!(
        !format!("{hms:?}").contains("s3cret"),
        "the secret stays out of debug output"
    );
}

#[test]
fn push_mistakes_are_named() {
    for (text, key) in [
        ("[push.apns]\nkey_id = \"A\"\nteam_id = \"B\"\n", "key_file"),
        (
            "[push.apns]\nurl = \"ftp://x\"\nkey_file = \"k\"\nkey_id = \"A\"\nteam_id = \"B\"\n",
            "push.apns.url",
        ),
        (
            "[push.fcm]\nservice_account_file = \"a.json\"\nconnections = 0\n",
            "push.fcm.connections",
        ),
        (
            "[push.fcm]\nservice_account_file = \"a.json\"\nmystery = 1\n",
            "mystery",
        ),
        ("[push.wns]\nurl = \"https://x\"\n", "wns"),
        ("[purposes.login]\npush_ack = \"sometimes\"\n", "push_ack"),
        (
            "[purposes.login]\nescalate_after = \"11m\"\n",
            "purposes.login.escalate_after",
        ),
        ("[delivery]\npush = \"smpp.x\"\n", "delivery.push"),
    ] {
        let message = error_of(load_text(text));
        assert!(message.contains(key), "{text:?}: {message}");
    }
}

#[test]
fn routes_templates_and_numbers_are_read() {
    let config = load_text(
        r#"
        [numbers]
        default_region = "PT"
        [channels.smpp.movistar]
        system_id = "otpd"
        tps = 200
        [channels.smpp.vodafone]
        system_id = "otpd"
        [routing]
        default = ["smpp.vodafone"]
        [[routing.routes]]
        prefix = "34"
        carriers = ["movistar", { carrier = "vodafone", priority = 5, weight = 2 }]
        [[routing.routes]]
        prefix = "88213"
        blocked = true
        [[messages.templates]]
        purpose = "*"
        locale = "gl"
        text = "{code} é o código de {app}"
        domain = "clave.gob.es"
        "#,
    )
    .unwrap();
    assert_eq!(config.numbers.default_region, "PT");
    assert_eq!(config.routing.routes.len(), 2);
    assert_eq!(config.channels.smpp["movistar"].tps, Some(200));
    assert_eq!(
        config.messages.templates[0].domain.as_deref(),
        Some("clave.gob.es")
    );
}

#[test]
fn routing_and_template_mistakes_are_named() {
    let route = |body: &str| format!("[channels.smpp.a]\nsystem_id = \"x\"\n{body}");
    let cases: Vec<(String, &str)> = vec![
        (route("[routing]\ndefault = [\"b\"]"), "carrier `b`"),
        (
            route("[[routing.routes]]\nprefix = \"3x\"\ncarriers = [\"a\"]"),
            "prefix `3x`",
        ),
        (
            route("[[routing.routes]]\nprefix = \"34\"\ncarriers = [\"a\"]\n[[routing.routes]]\nprefix = \"34\"\ncarriers = [\"a\"]"),
            "configured twice",
        ),
        (
            route("[[routing.routes]]\nprefix = \"34\"\ncarriers = [\"a\"]\nblocked = true"),
            "routing.routes[0].carriers",
        ),
        (
            route("[[routing.routes]]\nprefix = \"34\""),
            "routing.routes[0].carriers",
        ),
        (
            route("[[routing.routes]]\nprefix = \"34\"\ncarriers = [\"a\", \"smpp.a\"]"),
            "listed twice",
        ),
        ("[routing.breaker]\nerror_rate = 1.5".into(), "routing.breaker.error_rate"),
        ("[numbers]\ndefault_region = \"XX\"".into(), "numbers.default_region"),
        ("[messages]\nmax_segments = 0".into(), "messages.max_segments"),
        ("[messages.country_locales]\nES = \"fr\"".into(), "messages.country_locales.ES"),
        (
            "[[messages.templates]]\npurpose = \"nope\"\nlocale = \"es\"\ntext = \"{code}\"".into(),
            "messages.templates[0].purpose",
        ),
        (
            "[[messages.templates]]\npurpose = \"*\"\nlocale = \"es\"\ntext = \"{pin}\"".into(),
            "unknown placeholder `{pin}`",
        ),
        (
            "[[messages.templates]]\npurpose = \"*\"\nlocale = \"es\"\ntext = \"no code\"".into(),
            "has no {code}",
        ),
        (
            format!(
                "[messages]\nmax_segments = 1\n[[messages.templates]]\npurpose = \"*\"\nlocale = \"en\"\ntext = \"{}{{code}}\"",
                "x".repeat(155)
            ),
            "takes 2 SMS",
        ),
        (
            "[[messages.templates]]\npurpose = \"*\"\nlocale = \"en\"\ntext = \"{code}\"\nandroid_app_hash = \"short\"".into(),
            "android_app_hash",
        ),
        (
            "[channels.smpp.file]\nsystem_id = \"x\"".into(),
            "channels.smpp.file",
        ),
        (route("[channels.smpp.a.queue_capacity]"), "queue_capacity"),
    ];
    for (text, want) in cases {
        let e = error_of(load_text(&text));
        assert!(e.contains(want), "{text}\n→ {e}\n(wanted {want})");
    }
}

#[test]
fn webhooks_and_the_audit_trail_refuse_what_cannot_work_and_name_it() {
    let client = |extra: &str| {
        format!(
            "[[clients]]\nname = \"sede\"\nkey_sha256 = \"{}\"\n{extra}",
            "ab".repeat(32)
        )
    };
    let cases = [
        (
            client("webhook_url = \"https://sede.example/h\""),
            "webhook_secret",
        ),
        (
            client("webhook_url = \"https://sede.example/h\"\nwebhook_secret = \"sekrit\""),
            "whsec_",
        ),
        (
            client(
                "webhook_url = \"ftp://sede.example/h\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            ),
            "webhook_url",
        ),
        (
            "[webhooks]\nconcurrency = 0".to_string(),
            "webhooks.concurrency",
        ),
        ("[audit]\npath = \"trail\"".to_string(), "audit.signing_key"),
        (
            "[audit]\npath = \"trail\"\nsigning_key = \"c2hvcnQ=\"".to_string(),
            "32 bytes",
        ),
    ];
    for (text, named) in cases {
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains(named), "{text}: {e}");
        assert!(!e.contains("MfKQ9r8G"), "a secret echoed: {e}");
    }
    let ok = load_text(&client(
        "webhook_url = \"https://sede.example/h\"\nwebhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
    ))
    .unwrap();
    assert!(ok.clients[0].keeps_events());
}
