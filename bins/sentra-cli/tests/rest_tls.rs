//! The REST API over TLS: a real `sentra-server` serving https with a certificate from a
//! private test CA (`--api-tls-cert`/`--api-tls-key`), the `sentra` CLI verifying it with
//! `--ca-cert`, refusing it clearly without, and a real `sentra-agent` enrolling over https.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{PASSWORD, Server, ok, run, sentra, sibling_bin};

/// A test CA and a server certificate for `localhost` and `127.0.0.1`, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A CA that did not issue the server certificate.
    other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

impl Pki {
    fn write(dir: &Path) -> Self {
        let (ca_cert, ca_key) = ca("sentra test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let pki = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("api.crt"),
            key: dir.join("api.key"),
            other_ca: dir.join("other-ca.pem"),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        std::fs::write(&pki.other_ca, ca("another CA").0.pem()).unwrap();
        pki
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_and_agent_verify_the_rest_api_over_tls_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::write(tmp.path());
    let server = Server::spawn(tmp.path(), &[], Some((&pki.cert, &pki.key)));
    let (data, cli_dir, api) = (
        server.data.clone(),
        server.cli_dir.clone(),
        server.api.clone(),
    );
    let ca = pki.ca.to_str().unwrap();

    // Up when an unauthenticated `status` gets the API's 401 over verified TLS.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let err = stderr(&run(&cli_dir, &api, &["status", "--ca-cert", ca], None));
        if err.contains("401") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server never came up over https: {err}\nserver log:\n{}",
            std::fs::read_to_string(tmp.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    ok(&run(
        &cli_dir,
        &api,
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--password-stdin",
        ],
        Some(PASSWORD),
    ));
    ok(&run(
        &cli_dir,
        &api,
        &["login", "--password-stdin", "--ca-cert", ca],
        Some(PASSWORD),
    ));
    let status = ok(&run(
        &cli_dir,
        &api,
        &["status", "--ca-cert", ca, "--json"],
        None,
    ));
    serde_json::from_str::<serde_json::Value>(&status)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {status}"));
    // The environment variable works as the flag does.
    let mut cmd = Command::new(sentra());
    let out = cmd
        .args(["status", "--json"])
        .env("SENTRA_CLI_DIR", &cli_dir)
        .env("SENTRA_SERVER", &api)
        .env("SENTRA_CA_CERT", ca)
        .env_remove("SENTRA_TOKEN")
        .output()
        .unwrap();
    ok(&out);

    // Without the CA, or with a CA that did not issue the certificate: a clear refusal.
    for args in [
        vec!["status"],
        vec!["status", "--ca-cert", pki.other_ca.to_str().unwrap()],
    ] {
        let out = run(&cli_dir, &api, &args, None);
        assert!(
            !out.status.success(),
            "{args:?} succeeded against an untrusted certificate"
        );
        let err = stderr(&out);
        assert!(
            err.contains("certificate") && err.contains("--ca-cert"),
            "{args:?}: the error should say the certificate is not trusted and how to fix it:\n{err}"
        );
    }
    // Plain http to the TLS listener does not get an answer from the API.
    let out = run(
        &cli_dir,
        &api.replacen("https://", "http://", 1),
        &["status"],
        None,
    );
    assert!(!out.status.success());

    // A real agent enrols over https, trusting the private CA with --ca-file.
    let issued = ok(&run(
        &cli_dir,
        &api,
        &["token", "issue", "--ttl", "5m", "--json", "--ca-cert", ca],
        None,
    ));
    let issued: serde_json::Value = serde_json::from_str(&issued).unwrap();
    let token = issued["token"].as_str().unwrap();
    let agent = |state: &Path, ca_file: Option<&Path>| {
        let mut cmd = Command::new(sibling_bin("sentra-agent"));
        cmd.arg("--state-dir").arg(state);
        if let Some(ca_file) = ca_file {
            cmd.arg("--ca-file").arg(ca_file);
        }
        cmd.args(["enroll", "--server-api", &api, "--name", "tls-agent"])
            .env("SENTRA_AGENT_TOKEN", token)
            .env_remove("SENTRA_AGENT_CA_FILE")
            .output()
            .unwrap()
    };
    // Without the CA the agent refuses the server (and the token stays unused).
    let refused = agent(&tmp.path().join("agent-no-ca"), None);
    assert!(
        !refused.status.success(),
        "the agent enrolled without trusting the CA"
    );
    assert!(
        stderr(&refused).contains("certificate"),
        "{}",
        stderr(&refused)
    );
    let state = tmp.path().join("agent");
    let enrolled = ok(&agent(&state, Some(&pki.ca)));
    assert!(enrolled.contains("enrolled as"), "{enrolled}");
    assert!(state.join("credentials.toml").exists());
    let agents = ok(&run(
        &cli_dir,
        &api,
        &["agent", "list", "--ca-cert", ca],
        None,
    ));
    assert!(agents.contains("tls-agent"), "{agents}");
}
