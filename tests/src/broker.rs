use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_binary;

/// An event log (`hie-log`, the `eventlog` crate: what `deploy/local/up` runs) of this test's own,
/// in a temporary directory, on a free loopback port. Its log survives `restart` and `kill` (it
/// is on disk, synced before each acknowledgement), as the stack's does.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = std::env::temp_dir().join(format!("hie-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            port: crate::free_port(),
            child: None,
            dir,
        };
        broker.launch();
        broker
    }

    /// The same as `start`: every broker here keeps its log across `restart`.
    pub fn start_persistent() -> Broker {
        Self::start()
    }

    /// Kill the broker (SIGKILL) and start it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn launch(&mut self) {
        let child = Command::new(workspace_binary("hie-log"))
            .args(["--addr", &self.address(), "--dir"])
            .arg(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting hie-log (cargo build --bins builds it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "hie-log did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the broker (SIGKILL: what it acknowledged is on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
