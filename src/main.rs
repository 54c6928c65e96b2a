//! The command line: parses flags, picks the subcommand, and hands over to
//! the library. Exit codes: 0 success, 1 runtime failure (or a scope that
//! failed in `once`), 2 bad flags or configuration.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hss_swr_exporter::config::{Config, DEFAULT_LISTEN_ADDRESS, DEFAULT_TELEMETRY_PATH};
use hss_swr_exporter::{app, logging, simulator};

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("HSS_SWR_REVISION"),
    ")"
);

/// Prometheus exporter for Huawei Cloud HSS container-image security results.
#[derive(Debug, Parser)]
#[command(name = "hss-swr-exporter", version = LONG_VERSION, about, long_about = None)]
struct Cli {
    /// The configuration file (YAML).
    #[arg(long = "config.file", value_name = "FILE", global = true)]
    config_file: Option<PathBuf>,
    /// Address to serve metrics on; `:9929` means every interface.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS, global = true)]
    listen_address: String,
    /// Path of the metrics endpoint.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = DEFAULT_TELEMETRY_PATH, global = true)]
    telemetry_path: String,
    /// TLS and basic-auth configuration for the HTTP server (exporter-toolkit format).
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    web_config_file: Option<PathBuf>,
    /// Serve POST /-/reload (lifecycle API); without it, it answers 403. SIGHUP always reloads.
    #[arg(long = "web.enable-lifecycle", global = true)]
    enable_lifecycle: bool,
    /// Connections served at once; more wait, unaccepted, until one closes.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 512, global = true, value_parser = parse_max_connections)]
    max_connections: usize,
    /// Log level: debug, info, warn or error.
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info", global = true, value_parser = logging::parse_level)]
    log_level: tracing::Level,
    /// Log format: logfmt or json.
    #[arg(
        long = "log.format",
        value_name = "FORMAT",
        default_value = "logfmt",
        global = true
    )]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every lane of every scope once, print the metrics (or write them
    /// atomically to --output), and exit non-zero if a scope failed.
    Once {
        /// Write the exposition to this file, e.g. for node_exporter's textfile collector.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Run the built-in HSS API simulator.
    Simulate(simulator::SimulateArgs),
    /// Run the simulator and the exporter together, serving metrics with no cloud account.
    Demo,
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    let limit = hss_swr_exporter::web::MAX_CONNECTIONS_LIMIT;
    match text.parse::<usize>() {
        Ok(n) if (1..=limit).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {limit}")),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("hss-swr-exporter: --config.file is required");
        return Err(ExitCode::from(2));
    };
    Config::load(path).map_err(|error| {
        eprintln!("hss-swr-exporter: invalid configuration: {error}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    if let Some(path) = &cli.web_config_file
        && let Err(error) = hss_swr_exporter::web::load_web_config(path)
    {
        eprintln!(
            "hss-swr-exporter: invalid web configuration {}: {error}",
            path.display()
        );
        return ExitCode::from(2);
    }
    if !cli.telemetry_path.starts_with('/') || cli.telemetry_path.len() < 2 {
        eprintln!("hss-swr-exporter: --web.telemetry-path must start with / and not be / itself");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hss-swr-exporter: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => {
            let config = match load_config(cli.config_file.as_ref()) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let exporter = app::Exporter::new(config).context("starting the exporter")?;
            let listener = app::bind(&cli.listen_address).await?;
            let options = app::DaemonOptions {
                config_path: cli.config_file.clone(),
                web_config: cli.web_config_file.clone(),
                enable_lifecycle: cli.enable_lifecycle,
                limits: hss_swr_exporter::web::ServerLimits {
                    max_connections: cli.max_connections,
                    ..Default::default()
                },
                ..app::DaemonOptions::new(&cli.telemetry_path)
            };
            app::run_daemon_with(exporter, listener, options, app::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Once { output }) => {
            let config = match load_config(cli.config_file.as_ref()) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let ok = app::run_once(config, output.as_deref()).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::CheckConfig) => match load_config(cli.config_file.as_ref()) {
            Ok(config) => {
                println!(
                    "configuration OK: {} target(s), {} scope(s), budget {}",
                    config.targets.len(),
                    config.scope_count(),
                    config.api_rate_limit
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        },
        Some(Command::Simulate(args)) => {
            simulator::run(args, app::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Demo) => {
            let listener = app::bind(&cli.listen_address).await?;
            app::run_demo(
                listener,
                &cli.telemetry_path,
                cli.web_config_file.clone(),
                app::shutdown_signal(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_flags_default_as_in_prometheus_and_are_checked() {
        let cli = Cli::try_parse_from(["hss-swr-exporter"]).unwrap();
        assert!(!cli.enable_lifecycle);
        assert_eq!(cli.max_connections, 512);
        let cli = Cli::try_parse_from([
            "hss-swr-exporter",
            "--web.enable-lifecycle",
            "--web.max-connections=16",
        ])
        .unwrap();
        assert!(cli.enable_lifecycle);
        assert_eq!(cli.max_connections, 16);
        for bad in ["0", "-1", "many", "2000000"] {
            let error =
                Cli::try_parse_from(["hss-swr-exporter", &format!("--web.max-connections={bad}")])
                    .unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("must be a whole number from 1 to"),
                "{error}"
            );
        }
    }
}
