use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Tansu broker of this test's own, in memory (or SQLite, `start_persistent`), on a free
/// loopback port.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    storage: String,
    /// The SQLite file's directory, removed on drop.
    dir: Option<PathBuf>,
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    if home.exists() {
        return home;
    }
    PathBuf::from("tansu")
}

impl Broker {
    pub fn start() -> Broker {
        let mut broker = Broker {
            port: crate::free_port(),
            child: None,
            storage: "memory://tansu/".into(),
            dir: None,
        };
        broker.launch();
        broker
    }

    /// A broker whose log survives `restart` (SQLite storage): for tests of what clients do when
    /// their broker goes away and comes back.
    pub fn start_persistent() -> Broker {
        let dir = std::env::temp_dir().join(format!("hie-tansu-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            port: crate::free_port(),
            child: None,
            // sqlite:// + an absolute path (Tansu strips one slash).
            storage: format!("sqlite:///{}", dir.join("tansu.db").display()),
            dir: Some(dir),
        };
        broker.launch();
        broker
    }

    /// Kill the broker and start it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu (install: cargo install tansu --version 0.6.0 --locked --features libsql,dynostore)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the broker (in memory, it loses everything).
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
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
