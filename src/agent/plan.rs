//! Check first, build once: a config resolves into the inputs and outputs that run.

use crate::config::{Config, ConfigError};
use crate::input::{self, Input};
use crate::pipeline::CustomMetrics;
use crate::ship::{self, OutputSpec};
use std::path::Path;

/// How a run was asked for, besides the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Read standard input instead of files (`-stdin`), and exit at its end.
    pub stdin: bool,
    /// Print entries instead of shipping them, and never write positions.
    pub dry_run: bool,
    /// Print in colour (standard output is a terminal).
    pub color: bool,
}

impl Mode {
    /// Entries are printed rather than shipped: `-dry-run`, `-stdin`, or no output configured.
    pub(super) fn print(self, config: &Config) -> bool {
        self.dry_run || self.stdin || (config.clients.is_empty() && config.elasticsearch.is_empty())
    }
}

/// What a config resolves to: the inputs and outputs that run. The config is checked and
/// everything is built here, once (pipelines, globs, output settings); a reload builds a new
/// plan and swaps it in, or keeps the old one running if the new one fails.
pub struct Plan {
    pub(super) inputs: Vec<Box<dyn Input>>,
    pub(super) outputs: Vec<OutputSpec>,
}

impl Plan {
    /// Resolves `config` (read from `origin`, named in errors). Metrics stages register with
    /// `custom`.
    pub fn build(
        config: &Config,
        origin: &str,
        mode: Mode,
        custom: &CustomMetrics,
    ) -> Result<Plan, ConfigError> {
        Ok(Plan {
            inputs: input::plan(config, origin, mode.stdin, custom)?,
            outputs: ship::plan(config, mode.print(config), mode.color),
        })
    }
}

/// How a config file is named in errors.
pub fn origin(path: Option<&Path>) -> String {
    path.map_or_else(|| "built-in config".into(), |p| p.display().to_string())
}
