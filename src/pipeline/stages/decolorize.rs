//! `decolorize`: removes ANSI escape sequences (colors, cursor moves) from the line, with the
//! same expression as Loki's `decolorize` (from the `stripansi` package).

use crate::pipeline::{Cx, Entry, Flow, Stage};
use regex::Regex;
use serde_yaml_ng::Value as Yaml;
use std::sync::LazyLock;

static ANSI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        "[\u{1b}\u{9b}][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u{7})|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))",
    )
    .expect("valid ANSI expression")
});

struct Decolorize;

impl Stage for Decolorize {
    fn name(&self) -> &'static str {
        "decolorize"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        if entry.line.contains(['\u{1b}', '\u{9b}'])
            && let std::borrow::Cow::Owned(s) = ANSI.replace_all(&entry.line, "")
        {
            entry.line = s;
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    match config {
        Yaml::Null => {}
        Yaml::Mapping(m) if m.is_empty() => {}
        _ => return Err("decolorize takes no options (write `decolorize: {}`)".into()),
    }
    Ok(Box::new(Decolorize))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::{build_err, run_one};

    #[test]
    fn strips_colors() {
        // Promtail's test lines.
        let out = run_one(
            "- decolorize: {}",
            "\u{1b}[0;32mINFO\u{1b}[0m [\u{1b}[1;34mmain\u{1b}[0m] ready",
        );
        assert_eq!(out.line, "INFO [main] ready");
        let out = run_one(
            "- decolorize:",
            "\u{1b}[1mbold\u{1b}[22m plain \u{1b}]0;title\u{7}x",
        );
        assert_eq!(out.line, "bold plain x");
        let out = run_one("- decolorize: {}", "no colors here");
        assert_eq!(out.line, "no colors here");
        assert!(build_err("- decolorize: {x: 1}").contains("no options"));
    }
}
