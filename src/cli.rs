//! The command line, in Promtail's spelling: `-config.file=PATH` works as well as
//! `--config.file PATH`.

use clap::{ArgAction, Parser};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "logferry",
    about = "Ships log files to Loki; reads Promtail configs unchanged",
    disable_version_flag = true
)]
pub struct Cli {
    /// Configuration file (Promtail's YAML). Without it, a built-in config tails /var/log/*log
    /// and prints entries to standard output.
    #[arg(long = "config.file", value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Expand ${VAR} and ${VAR:-default} in the config file from the environment.
    #[arg(long = "config.expand-env", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub expand_env: bool,

    /// Print entries to standard output instead of shipping them; positions are read, never written.
    #[arg(long = "dry-run", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub dry_run: bool,

    /// Check the config file and exit: 0 when valid, 1 with the problem when not.
    #[arg(long = "check-syntax", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub check_syntax: bool,

    /// Print the effective config (secrets hidden) to standard error at start.
    #[arg(long = "print-config-stderr", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub print_config_stderr: bool,

    /// Accepted for Promtail compatibility (the printed config is always in file order).
    #[arg(long = "log-config-reverse-order", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", hide = true)]
    pub log_config_reverse_order: bool,

    /// Log level: debug, info, warn or error.
    #[arg(long = "log.level", value_name = "LEVEL", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: Option<String>,

    /// Log format: logfmt or json.
    #[arg(long = "log.format", value_name = "FORMAT", value_parser = ["logfmt", "json"])]
    pub log_format: Option<String>,

    /// Serve POST /reload, which reloads the config file as SIGHUP does.
    #[arg(long = "server.enable-runtime-reload", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub enable_runtime_reload: bool,

    /// Read lines from standard input instead of files, through the first scrape config's stages
    /// and labels; exit at the end of the input.
    #[arg(long = "stdin", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub stdin: bool,

    /// With -dry-run: print what each pipeline stage changes in each entry, to standard error.
    #[arg(long = "inspect", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true")]
    pub inspect: bool,

    /// Print the version and exit.
    #[arg(long = "version", action = ArgAction::SetTrue)]
    pub version: bool,
}

/// Turns Go-style single-dash long flags (`-config.file=x`, `-dry-run`) into clap's
/// double-dash form; single-letter flags (`-h`) and everything after `--` stay as they are.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest_literal = false;
    for (i, arg) in args.into_iter().enumerate() {
        let text = arg.to_string_lossy();
        if i == 0 || rest_literal {
            out.push(arg);
            continue;
        }
        if text == "--" {
            rest_literal = true;
            out.push(arg);
        } else if text.starts_with('-') && !text.starts_with("--") && text.len() > 2 {
            let mut long = OsString::from("-");
            long.push(&arg);
            out.push(long);
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn promtail_and_gnu_spellings() {
        let a = parse(&[
            "logferry",
            "-config.file=/etc/x.yaml",
            "-dry-run",
            "-config.expand-env=true",
        ]);
        assert_eq!(
            a.config_file.as_deref(),
            Some(std::path::Path::new("/etc/x.yaml"))
        );
        assert!(a.dry_run && a.expand_env);
        let b = parse(&[
            "logferry",
            "--config.file",
            "/etc/x.yaml",
            "--dry-run=false",
            "-log.level=debug",
        ]);
        assert_eq!(
            b.config_file.as_deref(),
            Some(std::path::Path::new("/etc/x.yaml"))
        );
        assert!(!b.dry_run);
        assert_eq!(b.log_level.as_deref(), Some("debug"));
        assert!(parse(&["logferry", "-version"]).version);
    }

    #[test]
    fn bad_level_is_rejected() {
        assert!(
            Cli::try_parse_from(normalize_args(
                ["logferry", "-log.level=loud"].map(OsString::from)
            ))
            .is_err()
        );
    }
}
