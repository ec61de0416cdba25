//! The `logferry` command.

mod cli;
mod heap;

use clap::Parser;
use cli::Cli;
use logferry::agent::{self, Mode, Plan, RunOptions};
use logferry::config::{self, Config};
use logferry::pipeline::CustomMetrics;
use logferry::positions::PositionsError;
use std::io::IsTerminal;
use std::process::ExitCode;

/// The exit status when the positions file cannot be parsed (EX_CONFIG of sysexits.h); the
/// systemd unit does not restart on it.
const EXIT_POSITIONS_CORRUPT: u8 = 78;

fn main() -> ExitCode {
    heap::tune();
    let cli = Cli::parse_from(cli::normalize_args(std::env::args_os()));
    if cli.version {
        println!("logferry, version {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match &cli.config_file {
        Some(path) => Config::load(path, cli.expand_env),
        None => Ok(Config::builtin_default(&config::default_state_dir())),
    };
    // Check first, build once: the config resolves into what will run, or says what is wrong.
    let mode = Mode {
        stdin: cli.stdin,
        dry_run: cli.dry_run,
        color: std::io::stdout().is_terminal(),
    };
    let custom = CustomMetrics::default();
    let origin = agent::origin(cli.config_file.as_deref());
    let config = config.and_then(|c| Plan::build(&c, &origin, mode, &custom).map(|p| (c, p)));
    if cli.check_syntax {
        return match config {
            Ok((config, _)) => {
                if cli.print_config_stderr {
                    eprint!("{}", config.to_yaml());
                }
                println!("Valid config file! No syntax issues found");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("Invalid config file: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let (config, plan) = match config {
        Ok(checked) => checked,
        Err(err) => {
            eprintln!("logferry: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cli, &config);
    if cli.print_config_stderr {
        eprint!("{}", config.to_yaml());
    }
    let options = RunOptions {
        config,
        plan,
        custom,
        config_path: cli.config_file.clone(),
        expand_env: cli.expand_env,
        mode,
        reload_endpoint: cli.enable_runtime_reload,
        inspect: cli.inspect,
    };
    match agent::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Logging is set up by now: the error goes out in the chosen log format.
            tracing::error!("{err:#}");
            // A damaged positions file needs a person: a distinct status lets the service
            // manager stop there instead of restarting into the same error forever.
            if let Some(PositionsError::Corrupt { .. }) = err.downcast_ref::<PositionsError>() {
                ExitCode::from(EXIT_POSITIONS_CORRUPT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(cli: &Cli, config: &Config) {
    let level = cli
        .log_level
        .as_deref()
        .or(config.server.log_level.as_deref())
        .unwrap_or("info");
    let format = cli
        .log_format
        .as_deref()
        .or(config.server.log_format.as_deref())
        .unwrap_or("logfmt");
    logferry::logging::init(level, format);
}
