//! How the load tools end: one `main` shape for `stress`, `floor` and
//! friends, so a failed run prints its reason and exits 2.

/// Prints `tool: error` and exits 2 when the run failed.
pub fn exit_on_error(tool: &str, result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("{tool}: {e}");
        std::process::exit(2);
    }
}
