//! MQTT over TLS with a site CA (made here by `openssl`) and a client
//! certificate, and a broker that refuses a wrong password: against a real
//! Mosquitto, through the collector and through `adit probe mqtt`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_certs;
mod support_mosquitto;
mod support_mqtt;
mod support_vm;
mod support_wait;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use adit::app::{App, HttpBind};
use support_mosquitto::{Mosquitto, MosquittoOptions};
use support_mqtt::{count, metric, Publisher};
use support_vm::free_port;
use support_wait::wait_for;

fn config(dir: &Path, broker: &str, extra: &str) -> String {
    format!(
        "site = \"mqtt-tls\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [[device]]\nid = \"edge\"\nprotocol = \"mqtt\"\nbroker = \"{broker}\"\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{extra}\n\
         [[device.subscription]]\nfilter = \"site/+\"\ntemplate = \"site/{{s}}\"\npoint = \"site.{{s}}\"\nformat = \"plain\"\n",
        data = dir.display()
    )
}

async fn start(text: &str) -> App {
    let config = adit_config::load_str(text, "mqtt.toml").unwrap();
    App::start(&config, HttpBind::BestEffort).await.unwrap()
}

/// `adit probe mqtt ...`, with a password in `ADIT_TEST_PW` when given.
fn probe(args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_adit"));
    cmd.args(["probe", "mqtt"]).args(args);
    if let Some(p) = password {
        cmd.env("ADIT_TEST_PW", p);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Publishes `value` on `topic` every 100 ms until `stop` is set.
fn keep_publishing(
    publisher: &Publisher,
    topic: &'static str,
    value: &'static str,
) -> tokio::task::JoinHandle<()> {
    let client = publisher.client.clone();
    tokio::spawn(async move {
        loop {
            let _ = client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, value.as_bytes())
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_site_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support_certs::make_certificates(d);
    let (plain, tls) = (free_port(), free_port());
    let _broker = Mosquitto::start_with(
        d,
        plain,
        &MosquittoOptions {
            tls: Some((
                tls,
                d.join("ca.pem"),
                d.join("server.pem"),
                d.join("server.key"),
            )),
            require_client_cert: true,
            ..MosquittoOptions::default()
        },
    );
    let publisher = Publisher::connect(plain, "tls-pub");
    let feeding = keep_publishing(&publisher, "site/co", "7.25");
    let broker = format!("mqtts://127.0.0.1:{tls}");
    let ca = d.join("ca.pem");
    let (cert, key) = (d.join("client.pem"), d.join("client.key"));

    // The collector over TLS with the CA and the client certificate.
    let good = d.join("good");
    let app = start(&config(
        &good,
        &broker,
        &format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        ),
    ))
    .await;
    let took = wait_for(Duration::from_secs(20), "a reading over TLS", || {
        count(
            &good.join("readings.db"),
            "SELECT count(*) FROM readings_view WHERE point = 'site.co' AND value = 7.25 AND quality = 'good'",
        ) > 0
    })
    .await;
    println!("figures: first reading over mutual TLS after {took:?}");
    assert!(app.shutdown().await);

    // Without a client certificate the broker ends the handshake: no
    // connection, counted, and nothing stored.
    let anon = d.join("anon");
    let app = start(&config(
        &anon,
        &broker,
        &format!("ca_file = \"{}\"", ca.display()),
    ))
    .await;
    wait_for(Duration::from_secs(20), "failed connects counted", || {
        metric(&app, "adit_mqtt_connects_total", &[("outcome", "failed")]) >= 2.0
    })
    .await;
    assert_eq!(metric(&app, "adit_mqtt_connected", &[]), 0.0);
    assert!(app.shutdown().await);

    // The probe: with the CA and certificate it sees the message decoded;
    // without the CA, the error says the certificate is not trusted.
    let tls_args = [
        "--broker", &broker, "--topic", "site/+", "--format", "plain", "--count", "1", "--for",
        "10s",
    ];
    let ok = probe(
        &[
            &tls_args[..],
            &[
                "--ca-file",
                ca.to_str().unwrap(),
                "--client-cert",
                cert.to_str().unwrap(),
                "--client-key",
                key.to_str().unwrap(),
            ],
        ]
        .concat(),
        None,
    );
    assert!(ok.status.success(), "probe over TLS: {}", text(&ok));
    assert!(text(&ok).contains("7.25"), "probe output: {}", text(&ok));
    let untrusted = probe(
        &[
            &tls_args[..],
            &[
                "--client-cert",
                cert.to_str().unwrap(),
                "--client-key",
                key.to_str().unwrap(),
            ],
        ]
        .concat(),
        None,
    );
    let said = text(&untrusted);
    println!("figures: probe without the site CA says: {}", said.trim());
    assert!(!untrusted.status.success());
    assert!(
        said.contains("UnknownIssuer") && said.contains("--ca-file"),
        "the error names the certificate problem: {said}"
    );
    feeding.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_and_the_right_one_connects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let _broker = Mosquitto::start_with(
        d,
        port,
        &MosquittoOptions {
            user: Some(("tunnel".into(), "s3cret-Pw".into())),
            ..MosquittoOptions::default()
        },
    );
    let broker = format!("mqtt://127.0.0.1:{port}");

    // The collector: refused, counted, audited once, the password never in
    // the audit log.
    let wrong = d.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::write(wrong.join("pw"), "not-the-password\n").unwrap();
    let app = start(&config(
        &wrong,
        &broker,
        &format!(
            "username = \"tunnel\"\npassword_file = \"{}\"",
            wrong.join("pw").display()
        ),
    ))
    .await;
    wait_for(Duration::from_secs(20), "refused connects counted", || {
        metric(&app, "adit_mqtt_connects_total", &[("outcome", "failed")]) >= 3.0
    })
    .await;
    assert!(app.shutdown().await);
    let audit: Vec<String> = adit_audit::read_entries(&wrong.join("audit"))
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    let refusals = audit
        .iter()
        .filter(|e| e.contains("mqtt_auth_refused"))
        .count();
    assert_eq!(refusals, 1, "one audit event per refusal streak: {audit:?}");
    assert!(
        !audit.iter().any(|e| e.contains("not-the-password")),
        "a password in the audit log"
    );

    // The right password: connected.
    let right = d.join("right");
    std::fs::create_dir_all(&right).unwrap();
    std::fs::write(right.join("pw"), "s3cret-Pw\n").unwrap();
    let app = start(&config(
        &right,
        &broker,
        &format!(
            "username = \"tunnel\"\npassword_file = \"{}\"",
            right.join("pw").display()
        ),
    ))
    .await;
    wait_for(Duration::from_secs(20), "connected", || {
        metric(&app, "adit_mqtt_connected", &[("device", "edge")]) == 1.0
    })
    .await;
    assert!(app.shutdown().await);

    // The probe says so in words.
    let refused = probe(
        &[
            "--broker",
            &broker,
            "--topic",
            "site/#",
            "--username",
            "tunnel",
            "--password-env",
            "ADIT_TEST_PW",
            "--for",
            "10s",
        ],
        Some("wrong"),
    );
    let said = text(&refused);
    println!("figures: probe with a wrong password says: {}", said.trim());
    assert!(!refused.status.success());
    assert!(
        said.contains("refused the credentials"),
        "a clear error: {said}"
    );
    assert!(!said.contains("wrong"), "the password is echoed: {said}");
}
