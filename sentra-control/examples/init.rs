//! What `sentra init` does: create the first admin on a data directory.
//!
//! ```text
//! cargo run -p sentra-control --example init -- /tmp/sentra-data admin
//! ```
//! The password is read from the environment variable `SENTRA_PASSWORD`.

use sentra_control::{Actor, ControlStore, Password, Role, StoreOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "./sentra-data".to_owned());
    let username = args.next().unwrap_or_else(|| "admin".to_owned());
    let password = std::env::var("SENTRA_PASSWORD")
        .map_err(|_| "set SENTRA_PASSWORD to the new admin's password")?;
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
