//! What `sentra init` does: create the first admin on a data directory.
//!
//! ```text
//! SENTRA_PASSWORD=... cargo run -p sentra-control --example init -- /tmp/sentra-data admin
//! ```
//! The password is read from the environment variable `SENTRA_PASSWORD`. Without arguments
//! the example runs on a throwaway directory with a demo password (so it can run unattended,
//! as `scripts/check-docs` does).

use sentra_control::{Actor, ControlStore, Password, Role, StoreOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (dir, _demo_dir, password) = match args.next() {
        Some(dir) => {
            let password = std::env::var("SENTRA_PASSWORD")
                .map_err(|_| "set SENTRA_PASSWORD to the new admin's password")?;
            (dir, None, password)
        }
        None => {
            let tmp = tempfile::tempdir()?;
            let dir = tmp.path().display().to_string();
            (dir, Some(tmp), "correct horse battery staple".to_owned())
        }
    };
    let username = args.next().unwrap_or_else(|| "admin".to_owned());
    let store = ControlStore::open(dir.as_ref(), StoreOptions::default()).await?;
    let user = store
        .create_user(
            &Actor::local(),
            &username,
            Password::new(password),
            Role::Admin,
        )
        .await?;
    println!("created {} ({}) in {dir}", user.username, user.role);
    Ok(())
}
