//! adit's own binary as a child process of a test: started on a config,
//! killed with SIGKILL, or stopped with SIGTERM (it drains). Killed when
//! dropped, so a failing test leaves nothing running.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

pub struct Adit(Child);

impl Adit {
    /// `adit --log-level error run -c CONFIG`, output discarded.
    pub fn spawn(config: &Path) -> Self {
        Self(
            Command::new(env!("CARGO_BIN_EXE_adit"))
                .args(["--log-level", "error", "run", "-c"])
                .arg(config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM (adit drains, then exits), and its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .expect("`kill` (Debian package procps) must be installed");
        assert!(sent.success(), "kill -TERM failed");
        self.0.wait().unwrap()
    }
}

impl Drop for Adit {
    fn drop(&mut self) {
        self.kill9();
    }
}
