#![doc = include_str!("../README.md")]

use std::fmt;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The environment variable naming an already running PostgreSQL (a superuser URL whose
/// database exists, normally `.../postgres`), as printed by `scripts/pg-test-server start`.
pub const URL_ENV: &str = "SENTRA_TEST_PG_URL";

/// Overrides where `initdb`/`pg_ctl` are looked up (default: the newest
/// `/usr/lib/postgresql/<ver>/bin`, then `PATH`).
pub const BINDIR_ENV: &str = "SENTRA_TEST_PG_BINDIR";

const INSTALL_HINT: &str =
    "PostgreSQL not installed: apt-get install postgresql, or set SENTRA_TEST_PG_URL";

/// Everything that can go wrong while providing a test database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No `initdb`/`pg_ctl` found and `SENTRA_TEST_PG_URL` is unset.
    #[error("{INSTALL_HINT}")]
    NotInstalled,
    /// A file-system or process-spawn operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL tool (`initdb`, `pg_ctl`) exited unsuccessfully.
    #[error("{what} failed ({status}): {output}")]
    Tool {
        /// The command that failed.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The tail of its output or of the server log.
        output: String,
    },
    /// A SQL statement or connection failed.
    #[error("PostgreSQL: {0}")]
    Sql(#[from] sqlx::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A cluster this process made with `initdb`, in its own temp dir.
struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    /// `Some(user)` when we are root and run the tools as that unprivileged user.
    owner: Option<String>,
    port: u16,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let exe = self.bindir.join(name);
        match &self.owner {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null());
        let what = format!("pg_ctl {}", args.join(" "));
        let out = cmd.output().map_err(io(format!("running {what}")))?;
        check(&what, out, Some(&self.dir.join("server.log")))
    }

    fn start(&self) -> Result<(), Error> {
        let log = self.dir.join("server.log");
        let opts = format!("-p {}", self.port);
        self.pg_ctl(&[
            "-l",
            log.to_str().unwrap_or_default(),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ])
    }
}

fn check(what: &str, out: Output, log: Option<&Path>) -> Result<(), Error> {
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    if let Some(log) = log
        && let Ok(text) = std::fs::read_to_string(log)
    {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        output.push_str(" | server log: ");
        output.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
    }
    Err(Error::Tool {
        what: what.to_owned(),
        status: out.status,
        output: output.trim().to_owned(),
    })
}

fn find_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os(BINDIR_ENV) {
        let d = PathBuf::from(d);
        return has_tools(&d).then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has_tools(d)))
}

fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io("reading /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding a loopback port"))?;
    let port = l.local_addr().map_err(io("reading the bound port"))?.port();
    Ok(port)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A PostgreSQL server for tests: either one this process started (and stops on drop), or an
/// external one named by [`URL_ENV`].
pub struct PgServer {
    cluster: Option<Cluster>,
    url: String,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL carries the password: never print it.
        f.debug_struct("PgServer")
            .field("own_cluster", &self.cluster.is_some())
            .field("port", &self.cluster.as_ref().map(|c| c.port))
            .finish_non_exhaustive()
    }
}

static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();

impl PgServer {
    /// The server shared by every test of this process: [`URL_ENV`] when set, else a
    /// cluster started on first use (and stopped by a watchdog when the process exits).
    ///
    /// Do not stop or restart it: tests run in parallel on it. Use [`PgServer::start`] for that.
    pub fn shared() -> Result<&'static Self, Error> {
        let r = SHARED.get_or_init(|| match std::env::var(URL_ENV) {
            Ok(url) if !url.is_empty() => Ok(Self { cluster: None, url }),
            _ => Self::start().map_err(|e| e.to_string()),
        });
        match r {
            Ok(s) => Ok(s),
            Err(e) if e == INSTALL_HINT => Err(Error::NotInstalled),
            Err(e) => Err(Error::Io {
                what: "starting the shared test PostgreSQL".into(),
                source: std::io::Error::other(e.clone()),
            }),
        }
    }

    /// Starts a new cluster of this process's own: `initdb` in a temp dir (as the `postgres`
    /// user when we are root), `pg_ctl start` on a free loopback port, fsync and
    /// synchronous_commit on. It is stopped (immediately) and deleted on drop, and by a
    /// watchdog if the process dies without dropping it.
    pub fn start() -> Result<Self, Error> {
        let bindir = find_bindir().ok_or(Error::NotInstalled)?;
        let owner = if is_root() {
            Some(
                if user_exists("postgres") {
                    "postgres"
                } else {
                    "nobody"
                }
                .to_owned(),
            )
        } else {
            None
        };
        // As root the cluster belongs to an unprivileged user, who may not reach $TMPDIR.
        let base = if owner.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "sentra-testkit-pg.{}.{}",
            std::process::id(),
            random_hex(6)?
        ));
        std::fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
        if let Some(user) = &owner {
            let out = Command::new("chown")
                .arg(user)
                .arg(&dir)
                .output()
                .map_err(io("running chown"))?;
            check(&format!("chown {user} {}", dir.display()), out, None)?;
        }
        let password = random_hex(16)?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))
            .map_err(io(format!("writing {}", pwfile.display())))?;
        let mut cluster = Cluster {
            dir,
            bindir,
            owner,
            port: 0,
        };
        if let Some(user) = &cluster.owner {
            let out = Command::new("chown")
                .arg(user)
                .arg(&pwfile)
                .output()
                .map_err(io("running chown"))?;
            check("chown pwfile", out, None)?;
        }
        spawn_watchdog(&cluster);

        let mut initdb = cluster.tool("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data())
            .args([
                "-U",
                "sentra",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--no-locale", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null());
        let out = initdb.output().map_err(io("running initdb"))?;
        let _ = std::fs::remove_file(&pwfile);
        check("initdb", out, None)?;

        let conf = format!(
            "\n# sentra-testkit\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = on\nsynchronous_commit = on\nfull_page_writes = on\nmax_connections = 300\n\
             shared_buffers = 32MB\nlog_min_messages = warning\n",
            cluster.dir.display()
        );
        let conf_path = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .map_err(io(format!("reading {}", conf_path.display())))?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).map_err(io(format!("writing {}", conf_path.display())))?;

        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.start() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        let url = format!(
            "postgres://sentra:{password}@127.0.0.1:{}/postgres",
            cluster.port
        );
        Ok(Self {
            cluster: Some(cluster),
            url,
        })
    }

    /// A superuser URL of the server's `postgres` database. Carries the password: do not log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of database `name` on this server (same credentials).
    pub fn url_for(&self, name: &str) -> String {
        with_database(&self.url, name)
    }

    /// The loopback port of a cluster of this process (None for an external server).
    pub fn port(&self) -> Option<u16> {
        self.cluster.as_ref().map(|c| c.port)
    }

    fn own(&self, op: &str) -> Result<&Cluster, Error> {
        self.cluster.as_ref().ok_or_else(|| Error::Io {
            what: format!("{op}: the server comes from {URL_ENV}, not from this process"),
            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
        })
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`): sessions are disconnected, data kept.
    pub fn stop(&self) -> Result<(), Error> {
        self.own("stop")?
            .pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"])
    }

    /// Stops the server like a crash (`pg_ctl stop -m immediate`): no shutdown checkpoint;
    /// the next start runs WAL recovery. Committed transactions must survive.
    pub fn crash(&self) -> Result<(), Error> {
        self.own("crash")?
            .pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"])
    }

    /// Starts a stopped server again on the same port with the same data.
    pub fn start_again(&self) -> Result<(), Error> {
        self.own("start_again")?.start()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let _ = c.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
            let _ = std::fs::remove_dir_all(&c.dir);
        }
    }
}

/// Stops and deletes the cluster when this process is gone (the shared server is a static,
/// never dropped; a test process can also be killed).
fn spawn_watchdog(c: &Cluster) {
    let pg_ctl = c.bindir.join("pg_ctl");
    let stop = match &c.owner {
        Some(u) => format!("runuser -u {u} -- '{}'", pg_ctl.display()),
        None => format!("'{}'", pg_ctl.display()),
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         if [ -d '{dir}/data' ]; then {stop} -D '{dir}/data' -m immediate stop; fi; \
         rm -rf '{dir}'",
        pid = std::process::id(),
        dir = c.dir.display(),
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Replaces the database (path) of a `postgres://` URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A fresh, uniquely named database, dropped (`WITH (FORCE)`) when this value is dropped.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// A new database on the [shared](PgServer::shared) server.
    pub async fn new() -> Result<Self, Error> {
        Self::on(PgServer::shared()?).await
    }

    /// A new database on `server`.
    pub async fn on(server: &PgServer) -> Result<Self, Error> {
        let name = format!(
            "sentra_test_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed),
            random_hex(3)?
        );
        let mut conn = sqlx::PgConnection::connect(server.url()).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(Self {
            url: server.url_for(&name),
            admin_url: server.url().to_owned(),
            name,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser URL of this database. Carries the password: do not log it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop cannot await, and may run inside a runtime: use a thread with its own.
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&sql).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        });
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
