//! What every example's `main` does before it builds its server: logs to stderr, and the configuration
//! from `.env` (or `--env-file PATH`) and the environment, as the chat app reads it.

use std::process::ExitCode;

use roomcast::Config;

/// Starts logging and loads the configuration; on a bad value, prints it (prefixed with the example's
/// `name`) and gives the exit code to return, 2 as the chat app does.
pub fn start(name: &str) -> Result<Config, ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let env_file = match (std::env::args().nth(1).as_deref(), std::env::args().nth(2)) {
        (Some("--env-file"), Some(path)) => Some(std::path::PathBuf::from(path)),
        _ => None,
    };
    Config::load(env_file.as_deref())
        .map(|(config, _)| config)
        .map_err(|e| {
            eprintln!("{name}: configuration error: {e}");
            ExitCode::from(2)
        })
}
