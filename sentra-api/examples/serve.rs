//! Embed the REST API: open the control plane on a data directory, create the first admin
//! (what `sentra init` does), serve the router on a real socket, then act as a client: log
//! in, issue an agent bootstrap token, list agents, and see a viewer refused an admin call.
//!
//! ```text
//! cargo run -p sentra-api --example serve [DATA_DIR]
//! ```
//!
//! Without `DATA_DIR` it uses a temporary directory that is removed at the end.

use std::net::SocketAddr;
use std::path::PathBuf;

use sentra_api::{Actor, Api, ApiConfig, Password, Role};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    println!("data directory: {}", dir.display());

    let api = Api::open(&dir, ApiConfig::default()).await?;
    // Throwaway credentials for this demo only; `sentra init` asks for a real passphrase.
    let admin_pw = format!("demo-{}", std::process::id()).repeat(3);
    let viewer_pw = format!("view-{}", std::process::id()).repeat(3);
    for (name, pw, role) in [
        ("admin", &admin_pw, Role::Admin),
        ("viewer", &viewer_pw, Role::Viewer),
    ] {
        match api
            .store()
            .create_user(&Actor::local(), name, Password::new(pw.as_str()), role)
            .await
        {
            Ok(_) => println!("created user {name}"),
            // A DATA_DIR from an earlier run: the user exists with another password.
            Err(e) => return Err(format!("creating {name}: {e} (use an empty DATA_DIR)").into()),
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = api
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on {base}");

    let http = reqwest::Client::new();
    let login = |user: &'static str, pw: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/auth/login");
        async move {
            let body: Value = http
                .post(url)
                .json(&json!({ "username": user, "password": pw }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let token = body["access_token"].as_str().unwrap_or_default().to_owned();
            println!("logged in as {user} (role {})", body["role"]);
            Ok::<_, reqwest::Error>(token)
        }
    };
    let admin = login("admin", admin_pw).await?;
    let viewer = login("viewer", viewer_pw).await?;

    // An admin issues a bootstrap token for an agent (shown once; not printed here).
    let issued: Value = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({ "ttl_s": 600, "note": "example" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("bootstrap token {} issued", issued["token_id"]);

    let agents: Value = http
        .get(format!("{base}/api/v1/agents"))
        .bearer_auth(&viewer)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("agents: {agents}");

    // Roles are enforced: a viewer cannot issue tokens.
    let refused = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&viewer)
        .json(&json!({ "ttl_s": 600 }))
        .send()
        .await?;
    println!("viewer issuing a token: HTTP {}", refused.status());
    assert_eq!(refused.status(), 403);

    server.abort();
    Ok(())
}
