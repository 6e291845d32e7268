//! A real Mosquitto (Debian package) for the tests, on a loopback port of
//! the test's choosing, configured from the test's directory: optional
//! persistence, a password file, a TLS listener. Killed when dropped.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct MosquittoOptions {
    pub persistence: bool,
    /// (user, password): anonymous clients are then refused.
    pub user: Option<(String, String)>,
    /// (port, ca, cert, key) of a TLS listener beside the plain one.
    pub tls: Option<(u16, PathBuf, PathBuf, PathBuf)>,
    /// The TLS listener refuses clients without a certificate of its CA.
    pub require_client_cert: bool,
    /// `max_inflight_messages` (unacknowledged QoS 1 messages per client;
    /// Mosquitto's own default is 20); `None`: 1000.
    pub max_inflight: Option<u16>,
}

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    config: PathBuf,
}

impl Mosquitto {
    pub fn start(dir: &Path, port: u16) -> Self {
        Self::start_with(dir, port, &MosquittoOptions::default())
    }

    pub fn start_with(dir: &Path, port: u16, o: &MosquittoOptions) -> Self {
        let config = dir.join(format!("mosquitto-{port}.conf"));
        let mut text = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\nmax_inflight_messages {}\nmax_queued_messages 1000000\nlog_dest stderr\nlog_type error\n",
            o.max_inflight.unwrap_or(1000)
        );
        // Started as root, Mosquitto drops to the `mosquitto` user, which
        // cannot write the test's directory: its persistence would fail
        // (silently, to us) at every save. Stay root when we are root.
        if is_root() {
            text.push_str("user root\n");
        }
        if o.persistence {
            let store = dir.join(format!("mosquitto-store-{port}"));
            std::fs::create_dir_all(&store).unwrap();
            write!(
                text,
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                store.display()
            )
            .unwrap();
        } else {
            text.push_str("persistence false\n");
        }
        match &o.user {
            Some((user, password)) => {
                let file = dir.join(format!("mosquitto-{port}.passwd"));
                let ok = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, password])
                    .status()
                    .expect("mosquitto_passwd (Debian mosquitto) must be installed")
                    .success();
                assert!(ok, "mosquitto_passwd failed");
                write!(
                    text,
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                )
                .unwrap();
            }
            None => text.push_str("allow_anonymous true\n"),
        }
        if let Some((tls_port, ca, cert, key)) = &o.tls {
            write!(
                text,
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                ca.display(),
                cert.display(),
                key.display()
            )
            .unwrap();
            if o.require_client_cert {
                text.push_str("require_certificate true\n");
            }
        }
        std::fs::write(&config, text).unwrap();
        let mut m = Self {
            child: None,
            port,
            config,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        // Debian installs it in /usr/sbin, which a non-root PATH lacks.
        let binary = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let log = self.config.with_extension("log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("mosquitto must be installed (tests/run.sh installs the Debian package)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "mosquitto exited ({status}) on port {}: {}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}: {}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (Mosquitto saves its persistent sessions), then start again.
    pub fn restart_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        self.spawn();
    }

    /// SIGKILL: whatever was only in memory (sessions) is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
