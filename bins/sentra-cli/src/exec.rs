//! Running a sibling executable in place of this process (`sentra` → `sentra-admin`,
//! `sentra-plugin-host`), like git runs `git-<command>`: found next to the running
//! executable (how the package and `cargo build` lay them out), then on `PATH`.

use std::ffi::OsString;
use std::path::PathBuf;

/// The executable that runs every command but `wg`, `completions` and `plugin`.
pub(crate) const ADMIN: &str = "sentra-admin";
/// The executable that runs `sentra plugin …` (the WASM plugin sandbox).
pub(crate) const PLUGIN_HOST: &str = "sentra-plugin-host";

/// Finds `name` next to this executable, then on `PATH`.
fn find(name: &str, what: &str) -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)));
    if let Some(p) = here.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        anyhow::anyhow!(
            "this command runs the {name} executable ({what}), which was found neither next \
             to sentra{} nor on PATH: install it with sentra (the sentra-cli package ships \
             sentra, {ADMIN} and {PLUGIN_HOST})",
            here.as_ref()
                .and_then(|p| p.parent())
                .map(|d| format!(" (in {})", d.display()))
                .unwrap_or_default()
        )
    })
}

/// Replaces this process with `name`, same arguments (already checked by the caller's
/// parse) and same `argv[0]` (clap's usage lines name it): its output, errors and exit
/// status are the command's. Returns only on failure.
pub(crate) fn exec(name: &str, what: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let path = find(name, what)?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("sentra"));
    let err = std::process::Command::new(&path)
        .arg0(arg0)
        .args(args)
        .exec();
    Err(anyhow::Error::new(err).context(format!("running {}", path.display())))
}

/// `sentra plugin …`: runs in `sentra-plugin-host`.
pub(crate) fn plugin_host() -> anyhow::Result<()> {
    exec(PLUGIN_HOST, "the WASM plugin sandbox")
}
