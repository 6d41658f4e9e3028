//! How `sentra` and `sentra-plugin-host` end: exit status 0, or the error and its causes on
//! stderr (terminal-safe) and status 1.

use std::process::ExitCode;

/// Like anyhow's report, with every message made terminal-safe (errors quote server
/// messages and user input).
pub(crate) fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("Error: {}", crate::safe::display_safe(&e.to_string()));
    let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
    if !causes.is_empty() {
        eprintln!("\nCaused by:");
        for (i, c) in causes.iter().enumerate() {
            if causes.len() == 1 {
                eprintln!("    {}", crate::safe::display_safe(c));
            } else {
                eprintln!("    {i}: {}", crate::safe::display_safe(c));
            }
        }
    }
    ExitCode::FAILURE
}
