//! Test harness: a real `Api` on a real loopback socket, a real SQLite file in a temp dir.

#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use prost::Message as _;
use reqwest::{Client, Method as HttpMethod, StatusCode};
use sentra_api::{Actor, Api, ApiConfig, Password, PasswordCost, Role};
use sentra_core::{AgentId, KeyId, Method, Nonce, SecretKey, Seq, Signer, UnixMillis, proto};
use serde_json::{Value, json};

pub const ADMIN: &str = "root";
pub const ADMIN_PW: &str = "admin-password-for-tests";
pub const VIEWER: &str = "watcher";
pub const VIEWER_PW: &str = "viewer-password-for-tests";

pub struct Server {
    pub api: Api,
    pub base: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub ingest: Option<std::sync::Arc<sentra_ingest::Ingest>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn test_config() -> ApiConfig {
    let mut config = ApiConfig::default();
    config.store.password_cost = PasswordCost::insecure_for_tests();
    config
}

pub async fn start() -> Server {
    start_with(test_config()).await
}

pub async fn start_with(config: ApiConfig) -> Server {
    start_full(config, false).await
}

/// With `with_ingest`, a real `sentra_ingest::Ingest` in the same data directory.
pub async fn start_full(config: ApiConfig, with_ingest: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let ingest = if with_ingest {
        Some(std::sync::Arc::new(
            sentra_ingest::Ingest::open(dir.path(), sentra_ingest::Config::default())
                .await
                .unwrap(),
        ))
    } else {
        None
    };
    let api = Api::open_with_ingest(dir.path(), config, ingest.clone())
        .await
        .unwrap();
    api.store()
        .create_user(&Actor::local(), ADMIN, Password::new(ADMIN_PW), Role::Admin)
        .await
        .unwrap();
    api.store()
        .create_user(
            &Actor::local(),
            VIEWER,
            Password::new(VIEWER_PW),
            Role::Viewer,
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        api,
        base: format!("http://{addr}"),
        client: Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        dir,
        ingest,
        task,
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the JSON error shape and returns the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {v}"))
            .to_owned();
        assert!(v["error"]["message"].is_string(), "no error.message in {v}");
        code
    }
}

impl Server {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn send(
        &self,
        method: HttpMethod,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    pub async fn raw(
        &self,
        method: HttpMethod,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(HttpMethod::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(HttpMethod::POST, path, token, Some(body)).await
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let r = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({ "username": user, "password": password }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN, ADMIN_PW).await
    }

    pub async fn viewer(&self) -> String {
        self.login(VIEWER, VIEWER_PW).await
    }

    pub async fn issue_token(&self, admin: &str, ttl_s: u64) -> String {
        let r = self
            .post("/api/v1/tokens", Some(admin), json!({ "ttl_s": ttl_s }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json()["token"].as_str().unwrap().to_owned()
    }

    /// Enrols an agent and returns its credentials.
    pub async fn enroll(&self, admin: &str, name: &str) -> AgentCreds {
        let token = self.issue_token(admin, 600).await;
        let r = self
            .post(
                "/api/v1/agents/enroll",
                None,
                json!({ "token": token, "name": name }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        AgentCreds::from_json(&r.json())
    }

    pub async fn audit(&self, admin: &str) -> Vec<Value> {
        let r = self.get("/api/v1/audit?limit=1000", Some(admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["entries"].as_array().unwrap().clone()
    }

    /// POST /api/v1/agent/key with an envelope signed by `creds`.
    pub async fn fetch_key(&self, creds: &AgentCreds) -> Resp {
        let env = creds.sign(Method::FetchKey, 0);
        self.post_envelope(&env).await
    }

    pub async fn post_envelope(&self, env: &proto::SignedBatch) -> Resp {
        self.raw(
            HttpMethod::POST,
            "/api/v1/agent/key",
            None,
            Some("application/x-protobuf"),
            env.encode_to_vec(),
        )
        .await
    }
}

#[derive(Clone, Debug)]
pub struct AgentCreds {
    pub agent_id: AgentId,
    pub key_id: KeyId,
    pub secret: SecretKey,
    pub secret_b64: String,
}

impl AgentCreds {
    pub fn from_json(v: &Value) -> Self {
        let secret_b64 = v["secret"].as_str().unwrap().to_owned();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&secret_b64)
            .unwrap();
        Self {
            agent_id: AgentId::new(v["agent_id"].as_str().unwrap()).unwrap(),
            key_id: KeyId::new(u32::try_from(v["key_id"].as_u64().unwrap()).unwrap()),
            secret: SecretKey::from_slice(&bytes).unwrap(),
            secret_b64,
        }
    }

    /// A signed envelope for `method` carrying a `DesiredStateQuery`.
    pub fn sign(&self, method: Method, known_revision: u64) -> proto::SignedBatch {
        self.sign_at(method, known_revision, UnixMillis::now())
    }

    pub fn sign_at(
        &self,
        method: Method,
        known_revision: u64,
        at: UnixMillis,
    ) -> proto::SignedBatch {
        let payload = proto::DesiredStateQuery {
            agent_id: self.agent_id.to_string(),
            known_revision,
        }
        .encode_to_vec();
        Signer::new(self.agent_id.clone(), self.key_id, &self.secret).sign(
            method,
            Seq::FIRST,
            at,
            Nonce::random(),
            Bytes::from(payload),
        )
    }
}

pub fn wg_key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}
