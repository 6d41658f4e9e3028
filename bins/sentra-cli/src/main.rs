//! `sentra`: the Sentra admin CLI.
//!
//! This executable parses every command (src/cli.rs) but runs only `wg show` and
//! `completions` itself; it replaces itself with `sentra-admin` (src/admin_main.rs: the
//! HTTP client, the control database, the WAL tools) for the other commands and with
//! `sentra-plugin-host` (src/plugin_host.rs: wasmtime) for `plugin`, both found next to it.
//! So `sentra wg show`, meant to be as cheap as `wg show`, does not load, relocate and
//! page in tokio, reqwest, rustls, sqlx and wasmtime at every start: bins/sentra-cli/README.md
//! has the figures.

use clap::Parser as _;

// The command groups run by sentra-admin: only their argument types are used here, the
// linker leaves their code (and its dependencies) out of this executable.
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod admin;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod alerts;
mod cli;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod client;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod doctor;
mod exec;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod fleet;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod peer;
mod plugin_args;
mod report;
#[allow(dead_code, reason = "shared with sentra-admin, which uses all of it")]
mod safe;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod table;
#[allow(
    dead_code,
    reason = "run by sentra-admin; sentra uses only the argument types"
)]
mod wal;
mod wg;

use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    report::exit_code(run())
}

/// `sentra wg …` alone: `Cli` with its top-level attributes and only the `wg` subcommand.
/// Parsing `sentra wg show` with it does not build the other commands' arguments (clap
/// builds the whole tree it is given: for `Cli`, a third of the page faults of a
/// `sentra wg show` start). With `wg` as the first argument both parse alike (help and
/// errors included; the test below compares them).
#[derive(Debug, clap::Parser)]
#[command(name = "sentra", version, about, long_about = None)]
struct WgCli {
    #[command(subcommand)]
    command: WgOnly,
}

#[derive(Debug, clap::Subcommand)]
enum WgOnly {
    /// WireGuard state straight from the kernel (`sentra wg show`).
    Wg(wg::WgArgs),
}

/// The arguments after `sentra wg show` in their plain forms, read without clap: at
/// most two positionals (UTF-8, not empty, not starting with `-`) and `--json` /
/// `--show-keys` at most once each, `--json` without a format. Anything else (help,
/// `--`, other options, a repeated flag, ...) is `None`: clap parses it, or rejects it
/// with its usual message. Under emulation, building clap's parser costs more than the
/// netlink dump (README.md). The tests below check this against clap.
fn plain_wg_show(args: &[std::ffi::OsString]) -> Option<wg::ShowArgs> {
    let mut a = wg::ShowArgs {
        interface: None,
        format: None,
        json: false,
        show_keys: false,
    };
    for arg in args {
        let arg = arg.to_str()?;
        match arg {
            "--json" if !a.json => a.json = true,
            "--show-keys" if !a.show_keys => a.show_keys = true,
            _ if arg.is_empty() || arg.starts_with('-') => return None,
            _ if a.interface.is_none() => a.interface = Some(arg.to_owned()),
            _ if a.format.is_none() => a.format = Some(arg.to_owned()),
            _ => return None,
        }
    }
    (!(a.json && a.format.is_some())).then_some(a)
}

fn run() -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "wg") {
        if args.get(2).is_some_and(|a| a == "show")
            && let Some(show) = plain_wg_show(&args[3..])
        {
            return wg::show_cmd(show);
        }
        let WgOnly::Wg(args) = WgCli::parse_from(args).command;
        return wg::run(args);
    }
    match Cli::parse().command {
        Command::Completions { shell } => cli::completions(shell),
        Command::Wg(args) => wg::run(args),
        Command::Plugin(_) => exec::plugin_host(),
        _ => exec::exec(
            exec::ADMIN,
            "the HTTP client, control database and WAL commands",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parse prints and returns: the arguments, or the rendered error (help and
    /// version included) and its exit code.
    fn outcome<P: clap::Parser>(
        args: &[&str],
        wg: impl Fn(P) -> Option<wg::WgArgs>,
    ) -> Result<String, (String, i32)> {
        match P::try_parse_from(args) {
            Ok(p) => Ok(format!("{:?}", wg(p))),
            Err(e) => Err((e.render().to_string(), e.exit_code())),
        }
    }

    #[test]
    fn the_wg_parser_parses_wg_like_the_full_one() {
        for args in [
            &["sentra", "wg"][..],
            &["sentra", "wg", "--help"],
            &["sentra", "wg", "-h"],
            &["sentra", "wg", "help"],
            &["sentra", "wg", "help", "show"],
            &["sentra", "wg", "--version"],
            &["sentra", "wg", "show"],
            &["sentra", "wg", "show", "--help"],
            &["sentra", "wg", "show", "wg0", "dump"],
            &["sentra", "wg", "show", "all", "dump", "--show-keys"],
            &["sentra", "wg", "show", "wg0", "--json"],
            &["sentra", "wg", "show", "wg0", "dump", "--json"],
            &["sentra", "wg", "show", "a", "b", "c"],
            &["sentra", "wg", "show", "--bogus"],
            &["sentra", "wg", "shwo"],
            &["sentra", "wg", "sh"],
        ] {
            let full = outcome::<Cli>(args, |c| match c.command {
                Command::Wg(a) => Some(a),
                _ => None,
            });
            let fast = outcome::<WgCli>(args, |c| match c.command {
                WgOnly::Wg(a) => Some(a),
            });
            assert_eq!(fast, full, "{args:?}");
        }
    }

    /// Every list of up to 4 arguments after `sentra wg show` from a set of plain and
    /// tricky ones: what `ShowArgs::plain` accepts, clap parses to the same arguments.
    #[test]
    fn the_plain_wg_show_reader_agrees_with_clap() {
        let tokens = [
            "wg0",
            "all",
            "dump",
            "help",
            "--json",
            "--show-keys",
            "-h",
            "--help",
            "--",
            "-x",
            "",
            "--json=1",
        ];
        let mut lists: Vec<Vec<&str>> = vec![vec![]];
        let mut plain = 0;
        for _ in 0..4 {
            let longer: Vec<Vec<&str>> = lists
                .iter()
                .filter(|l| l.len() == lists.last().map_or(0, Vec::len))
                .flat_map(|l| {
                    tokens.iter().map(move |t| {
                        let mut l = l.clone();
                        l.push(t);
                        l
                    })
                })
                .collect();
            lists.extend(longer);
        }
        for list in &lists {
            let os: Vec<std::ffi::OsString> = list.iter().map(Into::into).collect();
            let Some(ours) = plain_wg_show(&os) else {
                continue;
            };
            plain += 1;
            let mut argv = vec!["sentra", "wg", "show"];
            argv.extend(list);
            let clap = match Cli::try_parse_from(&argv) {
                Ok(Cli {
                    command: Command::Wg(a),
                }) => format!("{a:?}"),
                other => panic!("{argv:?}: plain {ours:?}, clap {other:?}"),
            };
            assert_eq!(
                clap,
                format!("WgArgs {{ command: Show({ours:?}) }}"),
                "{argv:?}"
            );
        }
        // the common forms do take the plain path
        assert!(plain > 100, "{plain}");
        for l in [
            &[][..],
            &["wg0", "dump"],
            &["all", "dump", "--show-keys"],
            &["--json"],
        ] {
            let os: Vec<std::ffi::OsString> = l.iter().map(Into::into).collect();
            assert!(plain_wg_show(&os).is_some(), "{l:?}");
        }
    }
}
