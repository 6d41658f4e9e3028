//! `--local-agent`: an agent inside the server process, monitoring this host.
//!
//! It is a real agent — its own WAL, signed batches, the gRPC path over loopback — so what
//! a newcomer sees is exactly what a remote agent would produce. Its identity is enrolled
//! through the control store on first start (a bootstrap token issued and consumed at once)
//! and kept in `<data_dir>/local-agent/credentials` (mode 0600).

use std::path::Path;

use anyhow::Context as _;
use sentra_agent::Credentials;
use tokio::{sync::watch, task::JoinHandle};
use tracing::info;

use crate::config::Config;

/// The name the local agent enrols with.
const LOCAL_AGENT_NAME: &str = "local";

/// Starts the local agent; the task ends when `stop` turns true.
pub(crate) async fn start(
    config: &Config,
    api: &sentra_api::Api,
    grpc_url: String,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let state_dir = config.data_dir.join("local-agent");
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let mut agent_config = sentra_agent::Config::new(&state_dir);
    let credentials = ensure_credentials(api, &agent_config.credentials_file).await?;
    info!(agent_id = %credentials.agent_id(), "local agent enrolled");
    agent_config.server = Some(grpc_url);
    // With --api-tls-cert the agent needs a CA that issued that certificate (`ca_file`),
    // as it does for gRPC over TLS; on plain loopback it talks http.
    let api_scheme = if config.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    agent_config.api = Some(format!("{api_scheme}://{}", config.api_listen));
    agent_config.credentials = Some(credentials);
    let agent = sentra_agent::Agent::new(agent_config).context("configuring the local agent")?;
    Ok(tokio::spawn(async move {
        let mut stop = stop;
        agent
            .run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("local agent")
    }))
}

/// Loads the local agent's credentials, enrolling it first if there are none or if the
/// server no longer knows the agent (for example after control.db was deleted).
async fn ensure_credentials(api: &sentra_api::Api, path: &Path) -> anyhow::Result<Credentials> {
    if path.exists() {
        let creds = Credentials::load(path)
            .with_context(|| format!("reading local agent credentials {}", path.display()))?;
        if api.store().get_agent(creds.agent_id()).await.is_ok() {
            return Ok(creds);
        }
        info!(agent_id = %creds.agent_id(), "local agent unknown to the control store; enrolling anew");
    }
    let store = api.store();
    let actor = sentra_api::Actor::local();
    let issued = store
        .issue_bootstrap_token(&actor, std::time::Duration::from_secs(60), "local agent")
        .await
        .context("issuing a bootstrap token for the local agent")?;
    let enrolment = store
        .enroll(&issued.token, LOCAL_AGENT_NAME)
        .await
        .context("enrolling the local agent")?;
    let creds = Credentials::new(enrolment.agent_id, enrolment.key_id, enrolment.secret);
    creds
        .save(path)
        .with_context(|| format!("saving local agent credentials {}", path.display()))?;
    Ok(creds)
}
