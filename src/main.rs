//! The command line: parses flags, picks the subcommand, and hands over to
//! the library. Exit codes: 0 success, 1 runtime failure (or a scope that
//! failed in `once`), 2 bad flags or configuration.
//!
//! Each subcommand takes only its own flags: the `--web.*` flags belong to
//! the daemon (and the demo's server), `--config.file` to the commands that
//! read a configuration; `--log.level` and `--log.format` apply everywhere.
//! Errors that end the process are logged in the `--log.format` chosen, so a
//! log pipeline reading JSON gets them as JSON lines too.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use hss_swr_exporter::config::{Config, DEFAULT_LISTEN_ADDRESS, DEFAULT_TELEMETRY_PATH};
#[cfg(feature = "simulator")]
use hss_swr_exporter::simulator;
use hss_swr_exporter::{app, logging};

/// `--version`, in the form of the Prometheus tools.
fn version_text() -> String {
    format!(
        "hss-swr-exporter, version {} (branch: {}, revision: {})\n  \
         build user:       {}\n  \
         build date:       {}\n  \
         rust version:     rustc {}\n  \
         platform:         {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("HSS_SWR_BRANCH"),
        env!("HSS_SWR_REVISION"),
        env!("HSS_SWR_BUILD_USER"),
        env!("HSS_SWR_BUILD_DATE"),
        env!("HSS_SWR_RUST_VERSION"),
        env!("HSS_SWR_PLATFORM"),
    )
}

/// Prometheus exporter for Huawei Cloud HSS container-image security results.
#[derive(Debug, Parser)]
#[command(
    name = "hss-swr-exporter",
    about,
    long_about = None,
    after_help = "Without a command, runs the exporter daemon with the options above. \
                  `hss-swr-exporter <COMMAND> --help` lists the options of a command.",
    disable_version_flag = true
)]
struct Cli {
    /// Print the version, build and platform, and exit.
    #[arg(long, short = 'V')]
    version: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    web: WebArgs,
    #[command(flatten)]
    daemon: DaemonWebArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The configuration file flag, for the commands that read one.
#[derive(Debug, Clone, Args)]
struct ConfigArgs {
    /// The configuration file (YAML).
    #[arg(long = "config.file", value_name = "FILE")]
    config_file: Option<PathBuf>,
}

/// The HTTP server's flags shared by the daemon and the demo.
#[derive(Debug, Clone, Args)]
struct WebArgs {
    /// Address to serve metrics on; `:9929` means every interface.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS)]
    listen_address: String,
    /// Path of the metrics endpoint.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = DEFAULT_TELEMETRY_PATH)]
    telemetry_path: String,
    /// TLS and basic-auth configuration for the HTTP server (exporter-toolkit format).
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
}

/// The HTTP server's flags only the daemon has.
#[derive(Debug, Clone, Args)]
struct DaemonWebArgs {
    /// Serve POST /-/reload (lifecycle API); without it, it answers 403. SIGHUP always reloads.
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,
    /// Connections served at once; more wait, unaccepted, until one closes.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 512, value_parser = parse_max_connections)]
    max_connections: usize,
}

/// Logging, for every command.
#[derive(Debug, Clone, Args)]
struct LogArgs {
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every lane of every scope once, print the metrics (or write them
    /// atomically to --output), and exit non-zero if a scope failed.
    Once {
        #[command(flatten)]
        config: ConfigArgs,
        /// Write the exposition to this file, e.g. for node_exporter's textfile collector.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Validate the configuration file and exit.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run the built-in HSS API simulator.
    #[cfg(feature = "simulator")]
    Simulate(simulator::SimulateArgs),
    /// Run the simulator and the exporter together, serving metrics with no cloud account.
    #[cfg(feature = "simulator")]
    Demo {
        #[command(flatten)]
        web: WebArgs,
    },
}

/// The top-level flags that may also be written before a subcommand that
/// has a flag of the same name (as in releases where every flag was
/// accepted everywhere); the subcommand's own flag wins.
const CONFIG_IDS: &[&str] = &["config_file"];
const WEB_IDS: &[&str] = &["listen_address", "telemetry_path", "web_config_file"];
const DAEMON_IDS: &[&str] = &["enable_lifecycle", "max_connections"];

/// Parses the command line; exits 2 (after clap's message) on bad flags,
/// including a daemon flag written before a subcommand that has no use for it.
fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let (name, accepted): (&str, &[&[&str]]) = match &cli.command {
        None => return cli,
        Some(Command::Once { .. }) => ("once", &[CONFIG_IDS]),
        Some(Command::CheckConfig { .. }) => ("check-config", &[CONFIG_IDS]),
        #[cfg(feature = "simulator")]
        Some(Command::Simulate(_)) => ("simulate", &[]),
        #[cfg(feature = "simulator")]
        Some(Command::Demo { .. }) => ("demo", &[WEB_IDS]),
    };
    for id in CONFIG_IDS.iter().chain(WEB_IDS).chain(DAEMON_IDS) {
        if given(id) && !accepted.iter().any(|ids| ids.contains(id)) {
            let flag = Cli::command()
                .get_arguments()
                .find(|a| a.get_id() == *id)
                .and_then(|a| a.get_long().map(|l| format!("--{l}")))
                .unwrap_or_else(|| (*id).to_string());
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{flag} is not a flag of `{name}` (see `hss-swr-exporter {name} --help`)"
                    ),
                )
                .exit();
        }
    }
    let sub = subcommand_matches(&matches);
    #[cfg_attr(not(feature = "simulator"), allow(unused_variables))]
    let sub_given =
        |id: &str| sub.is_some_and(|m| m.value_source(id) == Some(ValueSource::CommandLine));
    match &mut cli.command {
        Some(Command::Once { config, .. } | Command::CheckConfig { config })
            if config.config_file.is_none() =>
        {
            config.config_file = cli.config.config_file.clone();
        }
        #[cfg(feature = "simulator")]
        Some(Command::Demo { web }) => {
            if given("listen_address") && !sub_given("listen_address") {
                web.listen_address = cli.web.listen_address.clone();
            }
            if given("telemetry_path") && !sub_given("telemetry_path") {
                web.telemetry_path = cli.web.telemetry_path.clone();
            }
            if web.web_config_file.is_none() {
                web.web_config_file = cli.web.web_config_file.clone();
            }
        }
        _ => {}
    }
    cli
}

fn subcommand_matches(matches: &ArgMatches) -> Option<&ArgMatches> {
    matches.subcommand().map(|(_, m)| m)
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
        tracing::error!("--config.file is required");
        return Err(ExitCode::from(2));
    };
    Config::load(path).map_err(|error| {
        tracing::error!(file = %path.display(), error = %error, "invalid configuration");
        ExitCode::from(2)
    })
}

/// Checks the web flags of the daemon or the demo before anything starts.
fn check_web(web: &WebArgs) -> Result<(), ExitCode> {
    if let Some(path) = &web.web_config_file
        && let Err(error) = hss_swr_exporter::web::load_web_config(path)
    {
        tracing::error!(file = %path.display(), error = %error, "invalid web configuration");
        return Err(ExitCode::from(2));
    }
    if !web.telemetry_path.starts_with('/') || web.telemetry_path.len() < 2 {
        tracing::error!(
            path = %web.telemetry_path,
            "--web.telemetry-path must start with / and not be / itself"
        );
        return Err(ExitCode::from(2));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = parse();
    if cli.version {
        print!("{}", version_text());
        return ExitCode::SUCCESS;
    }
    logging::init(cli.log.log_level, cli.log.log_format);
    let web = match &cli.command {
        None => Some(&cli.web),
        #[cfg(feature = "simulator")]
        Some(Command::Demo { web }) => Some(web),
        Some(_) => None,
    };
    if let Some(web) = web
        && let Err(code) = check_web(web)
    {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the async runtime");
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
            let config = match load_config(cli.config.config_file.as_ref()) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            let exporter = app::Exporter::new(config).context("starting the exporter")?;
            let listener = app::bind(&cli.web.listen_address).await?;
            let options = app::DaemonOptions {
                config_path: cli.config.config_file.clone(),
                web_config: cli.web.web_config_file.clone(),
                enable_lifecycle: cli.daemon.enable_lifecycle,
                limits: hss_swr_exporter::web::ServerLimits {
                    max_connections: cli.daemon.max_connections,
                    ..Default::default()
                },
                ..app::DaemonOptions::new(&cli.web.telemetry_path)
            };
            app::run_daemon_with(exporter, listener, options, app::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Once { config, output }) => {
            let config = match load_config(config.config_file.as_ref()) {
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
        Some(Command::CheckConfig { config }) => match load_config(config.config_file.as_ref()) {
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
        #[cfg(feature = "simulator")]
        Some(Command::Simulate(args)) => {
            simulator::run(args, app::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "simulator")]
        Some(Command::Demo { web }) => {
            let listener = app::bind(&web.listen_address).await?;
            app::run_demo(
                listener,
                &web.telemetry_path,
                web.web_config_file.clone(),
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
        assert!(!cli.daemon.enable_lifecycle);
        assert_eq!(cli.daemon.max_connections, 512);
        let cli = Cli::try_parse_from([
            "hss-swr-exporter",
            "--web.enable-lifecycle",
            "--web.max-connections=16",
        ])
        .unwrap();
        assert!(cli.daemon.enable_lifecycle);
        assert_eq!(cli.daemon.max_connections, 16);
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
