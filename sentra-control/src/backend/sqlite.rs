//! The SQLite control store: `control.db` in the data directory.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use sqlx::{
    Sqlite,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
        SqliteSynchronous,
    },
};

use super::{
    CONTROL_LOCK_FILE,
    sql::{Dialect, SqlBackend},
};
use crate::{Error, Result, util};

/// File name of the control database inside the data directory.
pub const CONTROL_DB_FILE: &str = "control.db";

/// The SQLite backend (`control.db`, WAL mode, `synchronous = FULL`).
pub(crate) type SqliteBackend = SqlBackend<SqliteDialect>;

/// SQLite's side of [`SqlBackend`]: where the database file is, and the data directory's
/// lock when the store holds it.
#[derive(Debug)]
pub(crate) struct SqliteDialect {
    path: PathBuf,
    _lock: Option<File>,
}

impl SqliteBackend {
    /// Opens (creating if needed) `control.db` in `data_dir` and runs the migrations. The
    /// directory is created 0700 and the file 0600 when new; an existing database file
    /// readable by others is tightened to 0600. With `lock`, first takes
    /// [`CONTROL_LOCK_FILE`] in `data_dir` or says who holds it.
    pub(crate) async fn open(data_dir: &Path, lock: bool) -> Result<Self> {
        create_private_dir(data_dir)?;
        let lock = if lock {
            Some(lock_dir(data_dir)?)
        } else {
            None
        };
        let path = data_dir.join(CONTROL_DB_FILE);
        ensure_private_file(&path)?;
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            dialect: SqliteDialect { path, _lock: lock },
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dialect.path
    }
}

impl Dialect for SqliteDialect {
    type Db = Sqlite;

    const CAP_KEYS: &'static str = "UPDATE agent_keys
         SET not_after_ms = MIN(COALESCE(not_after_ms, $1), $1) WHERE agent_id = $2";
    const DESIRED_REVISION: &'static str = "SELECT desired_revision FROM agents
         WHERE agent_id = $1 AND (NOT $2 OR revoked_ms IS NULL)";
    const AUDIT_LOG: &'static str =
        "SELECT id, at_ms, actor, action, target, outcome, detail FROM audit_log
         WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR at_ms >= $2)
         ORDER BY id DESC LIMIT $3";
    const UPDATE_USER: &'static str = "UPDATE users SET role = $1,
            disabled_ms = CASE WHEN $2 THEN coalesce(disabled_ms, $3) ELSE NULL END,
            password_hash = coalesce($4, password_hash),
            token_version = token_version + $5
         WHERE username = $6";

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Takes the exclusive OS lock (`flock`) on `<data_dir>/control.lock` and writes our pid
/// into it, or names the holder's pid (what the file says) in the refusal.
fn lock_dir(data_dir: &Path) -> Result<File> {
    let path = data_dir.join(CONTROL_LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse::<u32>().ok())
                .map_or_else(
                    || "another process".to_owned(),
                    |pid| format!("another process (pid {pid})"),
                );
            return Err(Error::DataDirInUse {
                path: data_dir.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn ensure_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match util::create_private_file(path) {
        Ok(f) => {
            f.sync_all().map_err(|e| Error::io(path, e))?;
            util::sync_parent(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "control database was readable by others; setting mode 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(path, e))?;
            }
            Ok(())
        }
        Err(e) => Err(Error::io(path, e)),
    }
}
