//! The `once` subcommand: one run of every lane, the exposition written to
//! standard output or a file (for node_exporter's textfile collector).
//!
//! Place in the data flow: on top, with the rest of [`crate::app`].

use super::*;

/// Writes `text` to `path` atomically (see [`crate::fsutil`]).
pub fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    crate::fsutil::write_atomically(path, text.as_bytes())
        .map_err(io(format!("cannot write {}", path.display())))
}

/// Runs every lane once and prints or writes the exposition (without
/// `process_*` series: the output is meant for node_exporter's textfile
/// collector, which exports its own); returns whether every scope succeeded.
pub async fn run_once(mut config: Config, output: Option<&Path>) -> Result<bool, Error> {
    // One sweep per scope is as fresh as it gets: no changes lane, no table
    // kept, no watermark series in the output.
    config.changes_interval = Duration::ZERO;
    let exporter = Exporter::new(config)?;
    exporter.log_plan();
    let ok = exporter.run_once().await;
    exporter.persist().await;
    // For node_exporter's textfile collector: no process_* series.
    let text = exporter.metrics().render_textfile();
    match output {
        Some(path) => write_atomically(path, &text)?,
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(io("cannot write to standard output"))?;
        }
    }
    Ok(ok)
}
