//! `sentra status` and `sentra metrics`: read the fleet through the REST API.

use std::time::Duration;

use serde_json::Value;

use crate::{
    admin::{Output, parse_duration, runtime},
    client::{Api, Conn, enc},
    safe::{display_safe, display_safe_lines},
    table::{Table, age_ms, ms_to_rfc3339},
};

/// `sentra status`: agents, their presence, interfaces and peers.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Also list every peer.
    #[arg(long, short)]
    peers: bool,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

/// `sentra metrics …`: query stored metrics.
#[derive(Debug, clap::Args)]
pub(crate) struct MetricsArgs {
    #[command(subcommand)]
    command: MetricsCommand,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    out: Output,
}

/// Which series: a metric name plus optional agent and label filters.
#[derive(Debug, clap::Args)]
struct SelectorArgs {
    /// Metric name, e.g. node_load1 or wireguard_sent_bytes_total.
    name: String,
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Label filter `key=value` or `key!=value`; repeatable.
    #[arg(long = "label", short)]
    labels: Vec<String>,
}

impl SelectorArgs {
    fn query(&self) -> String {
        let mut q = format!("name={}", enc(&self.name));
        if let Some(a) = &self.agent {
            q.push_str(&format!("&agent={}", enc(a)));
        }
        for l in &self.labels {
            q.push_str(&format!("&label={}", enc(l)));
        }
        q
    }
}

/// A time window ending now.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Window {
    /// How far back, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    since: Duration,
}

impl Window {
    fn query(self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let from = now - self.since.as_millis() as i64;
        format!("from={from}&to={now}")
    }
}

#[derive(Debug, clap::Subcommand)]
enum MetricsCommand {
    /// Metric names (optionally of one agent).
    Names {
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
    },
    /// The newest value of every matching series.
    Latest(SelectorArgs),
    /// Values over a window, aggregated per step.
    History {
        #[command(flatten)]
        selector: SelectorArgs,
        #[command(flatten)]
        window: Window,
        /// Step, e.g. 10s, 1m, 1h.
        #[arg(long, default_value = "1m", value_parser = parse_duration)]
        step: Duration,
        /// Aggregation per step: avg, min, max, sum, count or last.
        #[arg(long, default_value = "avg")]
        agg: String,
    },
    /// Raw samples over a window as CSV (default) or JSON, for other tools.
    Export {
        #[command(flatten)]
        selector: SelectorArgs,
        #[command(flatten)]
        window: Window,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

fn labels_text(v: &Value) -> String {
    v.as_object().map_or_else(String::new, |m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn rate(v: &Value) -> String {
    v.as_f64().map_or_else(
        || "-".to_owned(),
        |bps| {
            if bps >= 1e6 {
                format!("{:.1} MB/s", bps / 1e6)
            } else if bps >= 1e3 {
                format!("{:.1} kB/s", bps / 1e3)
            } else {
                format!("{bps:.0} B/s")
            }
        },
    )
}

pub(crate) fn status(args: StatusArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        let path = match &args.agent {
            Some(a) => format!("/api/v1/status/agents/{}", enc(a)),
            None => "/api/v1/status".to_owned(),
        };
        let v: Value = api.get(&path).await?;
        if args.out.json {
            println!("{}", crate::safe::json_pretty(&v)?);
            return anyhow::Ok(());
        }
        let agents: Vec<Value> = match v.get("agents") {
            Some(list) => list.as_array().cloned().unwrap_or_default(),
            None => vec![v.clone()],
        };
        if agents.is_empty() {
            println!("No agents have reported yet. Start one with `sentra-server --local-agent` or enrol one with `sentra agent enrol NAME`.");
            return Ok(());
        }
        let mut t = Table::new(["AGENT", "PRESENCE", "LAST SEEN", "INTERFACES", "PEERS ONLINE"]);
        for a in &agents {
            let ifaces = a["interfaces"].as_array().cloned().unwrap_or_default();
            let peers: Vec<&Value> = ifaces.iter().flat_map(|i| i["peers"].as_array().into_iter().flatten()).collect();
            let online = peers.iter().filter(|p| p["online"].as_bool() == Some(true)).count();
            t.row([
                a["agent_id"].as_str().unwrap_or("").to_owned(),
                a["presence"].as_str().unwrap_or("?").to_owned(),
                age_ms(a["last_seen_ms"].as_i64()),
                ifaces.len().to_string(),
                format!("{online}/{}", peers.len()),
            ]);
        }
        print!("{t}");
        if args.peers {
            let mut t = Table::new(["AGENT", "INTERFACE", "PEER", "ENDPOINT", "HANDSHAKE", "RX", "TX", "STATE"]);
            for a in &agents {
                for i in a["interfaces"].as_array().into_iter().flatten() {
                    for p in i["peers"].as_array().into_iter().flatten() {
                        t.row([
                            a["agent_id"].as_str().unwrap_or("").to_owned(),
                            i["name"].as_str().unwrap_or("").to_owned(),
                            p["public_key"].as_str().unwrap_or("").to_owned(),
                            p["endpoint"].as_str().unwrap_or("-").to_owned(),
                            age_ms(p["last_handshake_ms"].as_i64()),
                            rate(&p["rx_rate_bps"]),
                            rate(&p["tx_rate_bps"]),
                            if p["online"].as_bool() == Some(true) { "online".into() } else { "offline".into() },
                        ]);
                    }
                }
            }
            println!();
            print!("{t}");
        }
        Ok(())
    })
}

pub(crate) fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let api = Api::new(&args.conn)?;
        let json = args.out.json;
        match args.command {
            MetricsCommand::Names { agent } => {
                let q = agent.map_or(String::new(), |a| format!("?agent={}", enc(&a)));
                let v: Value = api.get(&format!("/api/v1/metrics/names{q}")).await?;
                if json {
                    println!("{}", crate::safe::json_pretty(&v)?);
                } else {
                    for n in v["names"].as_array().into_iter().flatten() {
                        println!("{}", display_safe(n.as_str().unwrap_or_default()));
                    }
                }
            }
            MetricsCommand::Latest(sel) => {
                let v: Value = api
                    .get(&format!("/api/v1/metrics/latest?{}", sel.query()))
                    .await?;
                if json {
                    println!("{}", crate::safe::json_pretty(&v)?);
                } else {
                    let mut t = Table::new(["AGENT", "NAME", "LABELS", "VALUE", "AT"]);
                    for x in v["values"].as_array().into_iter().flatten() {
                        t.row([
                            x["series"]["agent_id"].as_str().unwrap_or("").to_owned(),
                            x["series"]["name"].as_str().unwrap_or("").to_owned(),
                            labels_text(&x["series"]["labels"]),
                            x["value"].to_string(),
                            ms_to_rfc3339(x["timestamp_ms"].as_i64()),
                        ]);
                    }
                    print!("{t}");
                }
            }
            MetricsCommand::History {
                selector,
                window,
                step,
                agg,
            } => {
                let v: Value = api
                    .get(&format!(
                        "/api/v1/metrics/history?{}&{}&step_ms={}&agg={}",
                        selector.query(),
                        window.query(),
                        step.as_millis(),
                        enc(&agg)
                    ))
                    .await?;
                if json {
                    println!("{}", crate::safe::json_pretty(&v)?);
                } else {
                    for s in v["series"].as_array().into_iter().flatten() {
                        println!(
                            "{} {{{}}} agent={} ({})",
                            display_safe(s["series"]["name"].as_str().unwrap_or("")),
                            display_safe(&labels_text(&s["series"]["labels"])),
                            display_safe(s["series"]["agent_id"].as_str().unwrap_or("")),
                            display_safe(s["resolution"].as_str().unwrap_or(""))
                        );
                        for p in s["points"].as_array().into_iter().flatten() {
                            println!(
                                "  {}  {}",
                                ms_to_rfc3339(p[0].as_i64()),
                                display_safe(&p[1].to_string())
                            );
                        }
                    }
                }
            }
            MetricsCommand::Export {
                selector,
                window,
                format,
            } => {
                let text = api
                    .get_text(&format!(
                        "/api/v1/metrics/export?{}&{}&format={}",
                        selector.query(),
                        window.query(),
                        enc(&format)
                    ))
                    .await?;
                // CSV/JSON for other tools: unchanged when piped; on a terminal, control
                // characters in values are shown escaped (line and field structure kept).
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    print!("{}", display_safe_lines(&text));
                } else {
                    print!("{text}");
                }
            }
        }
        anyhow::Ok(())
    })
}
