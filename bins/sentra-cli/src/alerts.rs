//! `sentra alerts …`: the server's built-in alert engine through the REST API — active
//! alerts, rules, silences and a receiver test.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    admin::{Output, parse_duration, runtime},
    client::{Api, Conn, enc},
    table::{Table, age_ms, ms_to_rfc3339},
};

/// `sentra alerts …`.
#[derive(Debug, clap::Args)]
pub(crate) struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

#[derive(Debug, clap::Subcommand)]
enum AlertsCommand {
    /// Firing and pending alerts.
    List,
    /// The rules the engine evaluates.
    Rules,
    /// Silences: add, list, expire.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Expire a silence now (same as `silence expire`).
    Unsilence {
        /// The silence id (`sentra alerts silence list`).
        id: u64,
    },
    /// Send a real test notification to a receiver and show its answer (admin).
    Test {
        /// The receiver name, as in the routing file (`log` without one).
        receiver: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum SilenceCommand {
    /// Mute alerts matching every matcher, e.g. `agent="gw-1"` `alertname=~"Wg.*"` (admin).
    Add {
        /// One or more matchers `label OP "value"` (OP: = != =~ !~).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 30m, 2h, 7d.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Silences, including expired ones not yet purged.
    List,
    /// Expire a silence now (admin).
    Expire {
        /// The silence id.
        id: u64,
    },
}

fn labels_text(v: &Value) -> String {
    v.as_object().map_or_else(String::new, |m| {
        m.iter()
            .filter(|(k, _)| k.as_str() != "alertname" && k.as_str() != "severity")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(",")
    })
}

pub(crate) fn run(args: AlertsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        let json_out = args.out.json;
        let print_json = |v: &Value| -> anyhow::Result<()> {
            println!("{}", crate::safe::json_pretty(v)?);
            Ok(())
        };
        match args.command {
            AlertsCommand::List => {
                let v: Value = api.get("/api/v1/alerts").await?;
                if json_out {
                    return print_json(&v);
                }
                let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
                if alerts.is_empty() {
                    println!("No alert is firing or pending.");
                    return Ok(());
                }
                let mut t =
                    Table::new(["STATUS", "RULE", "SEVERITY", "SINCE", "LABELS", "SUMMARY"]);
                for a in &alerts {
                    t.row([
                        a["status"].as_str().unwrap_or("").to_owned(),
                        a["rule"].as_str().unwrap_or("").to_owned(),
                        a["severity"].as_str().unwrap_or("").to_owned(),
                        age_ms(a["since_ms"].as_i64()),
                        labels_text(&a["labels"]),
                        a["summary"].as_str().unwrap_or("").to_owned(),
                    ]);
                }
                print!("{t}");
            }
            AlertsCommand::Rules => {
                let v: Value = api.get("/api/v1/alerts/rules").await?;
                if json_out {
                    return print_json(&v);
                }
                let mut t = Table::new(["NAME", "KIND", "SEVERITY", "FOR", "MATCHERS"]);
                for r in v["rules"].as_array().into_iter().flatten() {
                    t.row([
                        r["name"].as_str().unwrap_or("").to_owned(),
                        r["kind"].as_str().unwrap_or("").to_owned(),
                        r["severity"].as_str().unwrap_or("").to_owned(),
                        format!("{}s", r["for_s"].as_u64().unwrap_or(0)),
                        r["matchers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","),
                    ]);
                }
                print!("{t}");
            }
            AlertsCommand::Silence {
                command:
                    SilenceCommand::Add {
                        matchers,
                        duration,
                        comment,
                    },
            } => {
                let body = json!({
                    "matchers": matchers,
                    "duration_s": duration.as_secs_f64(),
                    "comment": comment,
                });
                let v: Value = api.post("/api/v1/alerts/silences", &body).await?;
                if json_out {
                    return print_json(&v);
                }
                println!(
                    "Silence {} created for {}.",
                    v["id"],
                    humantime::format_duration(duration)
                );
            }
            AlertsCommand::Silence {
                command: SilenceCommand::List,
            } => {
                let v: Value = api.get("/api/v1/alerts/silences").await?;
                if json_out {
                    return print_json(&v);
                }
                let silences = v["silences"].as_array().cloned().unwrap_or_default();
                if silences.is_empty() {
                    println!("No silences.");
                    return Ok(());
                }
                let mut t = Table::new(["ID", "STATE", "ENDS", "BY", "MATCHERS", "COMMENT"]);
                for s in &silences {
                    t.row([
                        s["id"].to_string(),
                        s["state"].as_str().unwrap_or("").to_owned(),
                        ms_to_rfc3339(s["ends_ms"].as_i64()),
                        s["created_by"].as_str().unwrap_or("").to_owned(),
                        s["matchers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","),
                        s["comment"].as_str().unwrap_or("").to_owned(),
                    ]);
                }
                print!("{t}");
            }
            AlertsCommand::Silence {
                command: SilenceCommand::Expire { id },
            }
            | AlertsCommand::Unsilence { id } => {
                let _: Value = api.delete(&format!("/api/v1/alerts/silences/{id}")).await?;
                if json_out {
                    return print_json(&json!({ "id": id, "expired": true }));
                }
                println!("Silence {id} expired.");
            }
            AlertsCommand::Test { receiver } => {
                let v: Value = api
                    .post(
                        &format!("/api/v1/alerts/receivers/{}/test", enc(&receiver)),
                        &json!({}),
                    )
                    .await?;
                if json_out {
                    return print_json(&v);
                }
                println!(
                    "Receiver {receiver} answered {} after {} attempt(s): {}",
                    v["status"],
                    v["attempts"],
                    crate::safe::display_safe(v["body"].as_str().unwrap_or(""))
                );
            }
        }
        Ok(())
    })
}
