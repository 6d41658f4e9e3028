//! A real `sentra-server` process on loopback and the `sentra` binary run against it.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub(crate) const PASSWORD: &str = "a long enough passphrase\n";

pub(crate) fn sentra() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentra"))
}

/// A binary built next to `sentra` (`sentra-server`, `sentra-agent`).
pub(crate) fn sibling_bin(name: &str) -> PathBuf {
    let p = sentra().with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p {name}` (cargo test --workspace does)",
        p.display()
    );
    p
}

pub(crate) fn server_bin() -> PathBuf {
    sibling_bin("sentra-server")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server; killed (and waited for) on drop.
pub(crate) struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>` of the REST API.
    pub(crate) api: String,
    /// `127.0.0.1:<port>` of the gRPC ingest listener.
    pub(crate) grpc: String,
    /// The data directory.
    pub(crate) data: PathBuf,
    /// The CLI state directory (saved token).
    pub(crate) cli_dir: PathBuf,
}

impl Server {
    /// Starts a server on `root/data` (no local agent) and waits until its API answers.
    pub(crate) fn start(root: &Path, extra: &[&str]) -> Self {
        let s = Self::spawn(root, extra, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = s.run(&["status"], None);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if err.contains("401") {
                break;
            }
            assert!(Instant::now() < deadline, "server never came up: {err}");
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    /// Spawns a server on `root/data` with `extra` arguments, without waiting for it (the
    /// caller polls for readiness). With `tls = Some((cert, key))` the REST API serves https
    /// with that certificate and `api` is an `https://` URL. Its stderr goes to
    /// `root/server.log`.
    pub(crate) fn spawn(root: &Path, extra: &[&str], tls: Option<(&Path, &Path)>) -> Self {
        let data = root.join("data");
        let cli_dir = root.join("cli");
        let (grpc, api_port) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let api = format!("{scheme}://127.0.0.1:{api_port}");
        let grpc = format!("127.0.0.1:{grpc}");
        let mut cmd = Command::new(server_bin());
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--grpc-listen", &grpc])
            .args(["--api-listen", &format!("127.0.0.1:{api_port}")]);
        if let Some((cert, key)) = tls {
            cmd.arg("--api-tls-cert")
                .arg(cert)
                .arg("--api-tls-key")
                .arg(key);
        }
        let child = cmd
            .args(["--status-interval", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("server.log")).unwrap())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            api,
            grpc,
            data,
            cli_dir,
        }
    }

    /// Creates the admin user (first start only) and logs in.
    pub(crate) fn init_and_login(&self) {
        let data = self.data.to_str().unwrap();
        ok(&self.run(
            &["init", "--data-dir", data, "--password-stdin"],
            Some(PASSWORD),
        ));
        self.login();
    }

    /// Logs in as the admin user.
    pub(crate) fn login(&self) {
        ok(&self.run(&["login", "--password-stdin"], Some(PASSWORD)));
    }

    /// Runs `sentra args…` against this server.
    pub(crate) fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(&self.cli_dir, &self.api, args, stdin)
    }

    /// Stops the server gracefully (SIGTERM), waiting up to 30 s, then SIGKILL.
    pub(crate) fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn run(cli_dir: &Path, api: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(sentra())
        .args(args)
        .env("SENTRA_CLI_DIR", cli_dir)
        .env("SENTRA_SERVER", api)
        .env_remove("SENTRA_TOKEN")
        .env_remove("SENTRA_CA_CERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
