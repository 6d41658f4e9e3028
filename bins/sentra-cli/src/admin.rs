//! Commands that administer a running server over its REST API: `init`, `login`, `token`,
//! `agent`. Human tables by default, `--json` for scripts.

use std::{io::Read as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    client::{Api, Conn, enc, save_token},
    safe::display_safe,
    table::{Table, age_ms, ms_to_rfc3339},
};

/// Output options shared by the API commands.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Output {
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// `sentra init`: create the first admin user on a data directory.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The server's data directory (where control.db lives).
    #[arg(long, env = "SENTRA_DATA_DIR", default_value = "./sentra-data")]
    data_dir: PathBuf,
    /// Name of the admin user to create.
    #[arg(long, default_value = "admin")]
    username: String,
    /// Read the password from standard input (one line) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// File holding the postgres:// URL of a shared PostgreSQL control database (as given
    /// to sentra-server --control-database-url-file): the admin is created there instead
    /// of in the data directory's control.db.
    #[arg(long, env = "SENTRA_CONTROL_DATABASE_URL_FILE")]
    control_database_url_file: Option<PathBuf>,
    #[command(flatten)]
    out: Output,
}

/// `sentra login`: exchange a username and password for an access token.
#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// User name.
    #[arg(long, short, default_value = "admin")]
    username: String,
    /// Read the password from standard input (one line) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

/// `sentra token …`: bootstrap tokens for agent enrolment.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Issue a single-use, expiring bootstrap token (shown once).
    Issue {
        /// Lifetime, e.g. 30m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// A note stored with the token (who or what it is for).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List bootstrap tokens (never their secrets).
    List,
}

/// `sentra agent …`: manage enrolled agents.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Issue a bootstrap token and print the command that enrols an agent with it.
    Enrol {
        /// Name for the new agent (its id is derived from it).
        name: String,
        /// Token lifetime, e.g. 30m, 1h.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// List agents.
    List,
    /// Show one agent with its keys.
    Show {
        /// Agent id.
        id: String,
    },
    /// Create a new key; older keys stay valid for the overlap window.
    RotateKey {
        /// Agent id.
        id: String,
        /// How long the old key stays valid, e.g. 24h.
        #[arg(long, value_parser = parse_duration)]
        overlap: Option<Duration>,
        /// Also reset the agent's sequence on the server, for an agent whose batches are
        /// refused as below its high-water mark (a far-ahead seq was signed with its key,
        /// or it lost its state). Use a short --overlap if the old key may be compromised.
        #[arg(long)]
        reset_sequence: bool,
    },
    /// Revoke an agent: its keys stop verifying at once.
    Revoke {
        /// Agent id.
        id: String,
    },
    /// Delete an agent and its stored data.
    Delete {
        /// Agent id.
        id: String,
        /// Confirm deletion (required).
        #[arg(long)]
        yes: bool,
    },
}

/// The duration syntax of every Sentra tool (`90s`, `15m`, `1h 30m`, `2d`, `1w`, or plain
/// seconds).
pub(crate) use sentra_core::parse_duration;

fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.lines().next().unwrap_or("").to_owned()
    } else {
        rpassword::prompt_password(prompt)
            .context("reading the password from the terminal (use --password-stdin in scripts)")?
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let pw = read_password(
        args.password_stdin,
        &format!("Password for {}: ", args.username),
    )?;
    if !args.password_stdin {
        let again = read_password(false, "Repeat: ")?;
        if again != pw {
            bail!("the passwords differ");
        }
    }
    if let Some(url_file) = &args.control_database_url_file {
        return init_postgres(&args, url_file, pw);
    }
    // What exists now stays; what this command creates is removed again if it fails.
    let created = Created::before(&args.data_dir);
    let result = runtime()?.block_on(async {
        // The store creates the directory itself, 0700 (it holds password hashes and keys).
        let store = sentra_control::ControlStore::open(
            &args.data_dir,
            sentra_control::StoreOptions::default(),
        )
        .await
        .with_context(|| format!("opening the control store in {}", args.data_dir.display()))?;
        let res = store
            .create_user(
                &sentra_control::Actor::local(),
                &args.username,
                sentra_control::Password::new(pw),
                sentra_control::Role::Admin,
            )
            .await
            .with_context(|| format!("creating admin user {:?}", args.username));
        drop(store);
        res
    });
    if let Err(e) = result {
        created.undo();
        return Err(e);
    }
    let data_dir = args.data_dir.display().to_string();
    if args.out.json {
        println!(
            "{}",
            crate::safe::json_pretty(&json!({
                "username": args.username,
                "role": "admin",
                "data_dir": data_dir,
            }))?
        );
        return Ok(());
    }
    println!(
        "Created admin user {:?} in {}.",
        args.username,
        display_safe(&data_dir)
    );
    println!(
        "Next: sentra login --username {}",
        display_safe(&args.username)
    );
    Ok(())
}

/// `sentra init --control-database-url-file`: the first admin in a shared PostgreSQL
/// control database. Errors name the file, never the URL (it may carry a password).
fn init_postgres(args: &InitArgs, url_file: &std::path::Path, pw: String) -> anyhow::Result<()> {
    let url = sentra_control::SecretString::new(std::fs::read_to_string(url_file).with_context(
        || {
            format!(
                "reading the control database URL file {}",
                url_file.display()
            )
        },
    )?);
    runtime()?.block_on(async {
        let mut options = sentra_control::StoreOptions::default();
        options.reload_interval = None;
        let store =
            sentra_control::ControlStore::open_postgres(url.expose_secret().trim(), options)
                .await
                .context("opening the PostgreSQL control database")?;
        store
            .create_user(
                &sentra_control::Actor::local(),
                &args.username,
                sentra_control::Password::new(pw),
                sentra_control::Role::Admin,
            )
            .await
            .with_context(|| format!("creating admin user {:?}", args.username))
    })?;
    if args.out.json {
        println!(
            "{}",
            crate::safe::json_pretty(&json!({
                "username": args.username,
                "role": "admin",
                "control_database": "postgres",
            }))?
        );
    } else {
        println!(
            "Created admin user {:?} in the PostgreSQL control database.",
            args.username
        );
        println!(
            "Next: sentra login --username {}",
            display_safe(&args.username)
        );
    }
    Ok(())
}

/// What `sentra init` may create: the directories of the data directory's path that are
/// missing, and `control.db` (with SQLite's `-wal` and `-shm` files) if it is missing.
struct Created {
    /// Missing directories, deepest first.
    dirs: Vec<PathBuf>,
    /// Database files to remove (empty when `control.db` existed).
    files: Vec<PathBuf>,
}

impl Created {
    fn before(data_dir: &std::path::Path) -> Self {
        let mut dirs = Vec::new();
        let mut cur = Some(data_dir);
        while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            dirs.push(d.to_path_buf());
            cur = d.parent();
        }
        let db = data_dir.join(sentra_control::CONTROL_DB_FILE);
        let files = if db.exists() {
            Vec::new()
        } else {
            ["", "-wal", "-shm", "-journal"]
                .iter()
                .map(|suffix| {
                    let mut name = db.clone().into_os_string();
                    name.push(suffix);
                    PathBuf::from(name)
                })
                .collect()
        };
        Self { dirs, files }
    }

    /// Removes what was created. Directories are only removed when empty, so nothing
    /// another process put there meanwhile is lost.
    fn undo(&self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for d in &self.dirs {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
        }
    }
}

pub(crate) fn login(args: LoginArgs) -> anyhow::Result<()> {
    let pw = read_password(
        args.password_stdin,
        &format!("Password for {}: ", args.username),
    )?;
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        let (status, resp) = api
            .post_with_status(
                "/api/v1/auth/login",
                &json!({"username": args.username, "password": pw}),
            )
            .await?;
        if status == 401 {
            bail!(
                "wrong user name or password for {:?} at {} (401)",
                args.username,
                api.base()
            );
        }
        if !(200..300).contains(&status) {
            match (
                resp["error"]["code"].as_str(),
                resp["error"]["message"].as_str(),
            ) {
                (Some(code), Some(message)) => bail!("login failed: {status} ({code}): {message}"),
                _ => bail!("login failed: HTTP {status}"),
            }
        }
        let token = resp["access_token"]
            .as_str()
            .context("no access_token in the response")?;
        let expires = resp["expires_in"].as_u64().unwrap_or(900);
        let path = save_token(api.base(), token, expires)?;
        let role = resp["role"].as_str().unwrap_or("?");
        if args.out.json {
            // The token itself is not printed: it is in the file (mode 0600).
            println!(
                "{}",
                crate::safe::json_pretty(&json!({
                    "server": api.base(),
                    "username": args.username,
                    "role": role,
                    "expires_in_s": expires,
                    "token_file": path.display().to_string(),
                }))?
            );
            return Ok(());
        }
        println!(
            "Logged in to {} as {} ({}); token valid for {} min, saved in {}.",
            display_safe(api.base()),
            display_safe(&args.username),
            display_safe(role),
            expires / 60,
            display_safe(&path.display().to_string())
        );
        anyhow::Ok(())
    })
}

pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        match args.command {
            TokenCommand::Issue { ttl, note } => {
                let v: Value = api
                    .post(
                        "/api/v1/tokens",
                        &json!({"ttl_s": ttl.as_secs(), "note": note}),
                    )
                    .await?;
                if args.out.json {
                    println!("{}", crate::safe::json_pretty(&v)?);
                } else {
                    println!("{}", display_safe(v["token"].as_str().unwrap_or_default()));
                    eprintln!(
                        "Single-use bootstrap token {} (expires {}). It is not shown again.",
                        display_safe(v["token_id"].as_str().unwrap_or("?")),
                        ms_to_rfc3339(v["expires_ms"].as_i64())
                    );
                }
            }
            TokenCommand::List => {
                let v: Value = api.get("/api/v1/tokens").await?;
                if args.out.json {
                    println!("{}", crate::safe::json_pretty(&v)?);
                } else {
                    let mut t =
                        Table::new(["TOKEN ID", "CREATED BY", "EXPIRES", "USED BY", "NOTE"]);
                    for tok in v["tokens"].as_array().into_iter().flatten() {
                        t.row([
                            tok["token_id"].as_str().unwrap_or("").to_owned(),
                            tok["created_by"].as_str().unwrap_or("").to_owned(),
                            ms_to_rfc3339(tok["expires_ms"].as_i64()),
                            tok["used_by_agent"].as_str().unwrap_or("-").to_owned(),
                            tok["note"].as_str().unwrap_or("").to_owned(),
                        ]);
                    }
                    print!("{t}");
                }
            }
        }
        anyhow::Ok(())
    })
}

pub(crate) fn agent(args: AgentArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        let print = |v: &Value| -> anyhow::Result<()> {
            println!("{}", crate::safe::json_pretty(v)?);
            Ok(())
        };
        match args.command {
            AgentCommand::Enrol { name, ttl } => {
                let v: Value = api
                    .post(
                        "/api/v1/tokens",
                        &json!({"ttl_s": ttl.as_secs(), "note": format!("enrol {name}")}),
                    )
                    .await?;
                if args.out.json {
                    return print(&v);
                }
                println!("On the agent host, run (the token is single use and expires {}):", ms_to_rfc3339(v["expires_ms"].as_i64()));
                println!();
                println!(
                    "  sentra-agent enroll --server-api {} --token {} --name {}",
                    display_safe(api.base()),
                    display_safe(v["token"].as_str().unwrap_or_default()),
                    display_safe(&name)
                );
            }
            AgentCommand::List => {
                let v: Value = api.get("/api/v1/agents").await?;
                if args.out.json {
                    return print(&v);
                }
                let mut t = Table::new(["AGENT ID", "NAME", "KEYS", "CREATED", "STATE"]);
                for a in v["agents"].as_array().into_iter().flatten() {
                    t.row([
                        a["agent_id"].as_str().unwrap_or("").to_owned(),
                        a["name"].as_str().unwrap_or("").to_owned(),
                        a["keys"].as_array().map_or(0, Vec::len).to_string(),
                        ms_to_rfc3339(a["created_ms"].as_i64()),
                        if a["revoked_ms"].is_null() { "active".into() } else { "revoked".into() },
                    ]);
                }
                print!("{t}");
            }
            AgentCommand::Show { id } => {
                let v: Value = api.get(&format!("/api/v1/agents/{}", enc(&id))).await?;
                if args.out.json {
                    return print(&v);
                }
                println!("agent:   {}", display_safe(v["agent_id"].as_str().unwrap_or("")));
                println!("name:    {}", display_safe(v["name"].as_str().unwrap_or("")));
                println!("created: {}", ms_to_rfc3339(v["created_ms"].as_i64()));
                if let Some(r) = v["revoked_ms"].as_i64() {
                    println!("revoked: {}", ms_to_rfc3339(Some(r)));
                }
                let mut t = Table::new(["KEY ID", "CREATED", "VALID FROM", "VALID UNTIL"]);
                for k in v["keys"].as_array().into_iter().flatten() {
                    t.row([
                        k["key_id"].to_string(),
                        ms_to_rfc3339(k["created_ms"].as_i64()),
                        k["not_before_ms"].as_i64().map_or("-".into(), |m| ms_to_rfc3339(Some(m))),
                        k["not_after_ms"].as_i64().map_or("-".into(), |m| ms_to_rfc3339(Some(m))),
                    ]);
                }
                print!("{t}");
            }
            AgentCommand::RotateKey { id, overlap, reset_sequence } => {
                let mut params = Vec::new();
                if let Some(d) = overlap {
                    params.push(format!("overlap_s={}", d.as_secs()));
                }
                if reset_sequence {
                    params.push("reset_sequence=true".to_owned());
                }
                let q = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
                let v: Value = api
                    .post(&format!("/api/v1/agents/{}/rotate-key{q}", enc(&id)), &json!({}))
                    .await?;
                if args.out.json {
                    return print(&v);
                }
                println!(
                    "Agent {} now has key {}; older keys stop verifying {} ({}). The agent fetches the new key on its next poll.",
                    id,
                    v["new_key_id"],
                    ms_to_rfc3339(v["previous_keys_not_after_ms"].as_i64()),
                    age_ms(v["previous_keys_not_after_ms"].as_i64())
                );
                if let Some(reset) = v.get("sequence_reset") {
                    match reset["previous_high_water"].as_u64() {
                        Some(h) => println!(
                            "Sequence reset: the server forgot high-water mark {h}; the agent's next batches are accepted."
                        ),
                        None => println!("Sequence reset: the server held no high-water mark for this agent."),
                    }
                }
            }
            AgentCommand::Revoke { id } => {
                let v: Value = api.post(&format!("/api/v1/agents/{}/revoke", enc(&id)), &json!({})).await?;
                if args.out.json {
                    return print(&v);
                }
                println!("Agent {} revoked: its keys no longer verify.", display_safe(&id));
            }
            AgentCommand::Delete { id, yes } => {
                if !yes {
                    bail!("deleting agent {id} removes it and its stored data; pass --yes to confirm");
                }
                let v: Value = api.delete(&format!("/api/v1/agents/{}", enc(&id))).await?;
                if args.out.json {
                    return print(&v);
                }
                println!("Agent {} deleted.", display_safe(&id));
            }
        }
        anyhow::Ok(())
    })
}
