//! `template`: sets an extracted value from a Go template over the extracted map.

use super::options;
// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use crate::pipeline::gotemplate::{Data, Template};
use crate::pipeline::{Cx, Entry, Flow, Stage, get_string};
use serde::Deserialize;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateConfig {
    source: Option<WString>,
    template: Option<WString>,
}

struct TemplateStage {
    source: String,
    template: Template,
}

/// What the template sees: the extracted values that have a string form, `.Value` (the source's
/// value) and `.Entry` (the line).
pub(crate) struct ExtractedData<'a> {
    pub extracted: &'a crate::pipeline::Extracted,
    /// `.Value`, when set.
    pub value: Option<&'a str>,
    /// `.Entry`, when set.
    pub line: Option<&'a str>,
}

impl Data for ExtractedData<'_> {
    fn get(&self, key: &str) -> Option<String> {
        match key {
            "Value" if self.value.is_some() => self.value.map(str::to_string),
            "Entry" if self.line.is_some() => self.line.map(str::to_string),
            _ => self
                .extracted
                .get(key)
                .and_then(get_string)
                .map(|s| s.into_owned()),
        }
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .extracted
            .iter()
            .filter(|(_, v)| get_string(v).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for (k, present) in [
            ("Value", self.value.is_some()),
            ("Entry", self.line.is_some()),
        ] {
            if present && !keys.iter().any(|x| x == k) {
                keys.push(k.to_string());
            }
        }
        keys.sort();
        keys
    }
}

impl Stage for TemplateStage {
    fn name(&self) -> &'static str {
        "template"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        let value = entry.extracted.get(&self.source).and_then(get_string);
        let result = {
            let data = ExtractedData {
                extracted: &entry.extracted,
                value: value.as_deref(),
                line: Some(&entry.line),
            };
            self.template.execute(&data)
        };
        drop(value);
        match result {
            Ok(s) if s.is_empty() => {
                entry.extracted.remove(&self.source);
            }
            Ok(s) => {
                entry
                    .extracted
                    .insert(self.source.clone(), Value::String(s));
            }
            Err(e) => {
                tracing::debug!(
                    error = e.as_str(),
                    "failed to execute template on extracted value"
                )
            }
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("template stage config cannot be empty".into());
    }
    let c: TemplateConfig = options(config)?;
    let source = c
        .source
        .filter(|s| !s.0.is_empty())
        .ok_or("template source value is required")?;
    let template = Template::parse(&c.template.unwrap_or_default().0)?;
    Ok(Box::new(TemplateStage {
        source: source.0,
        template,
    }))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::{build_err, run_entry_with};
    use serde_json::json;

    fn tpl(yaml: &str, pairs: &[(&str, &str)]) -> crate::pipeline::Extracted {
        run_entry_with(yaml, "the line", pairs).extracted
    }

    #[test]
    fn docs_examples() {
        let e = tpl(
            "- template:\n    source: new_key\n    template: 'hello world!'",
            &[],
        );
        assert_eq!(e["new_key"], json!("hello world!"));
        let e = tpl(
            "- template:\n    source: app\n    template: '{{ .Value }}_some_suffix'",
            &[("app", "loki")],
        );
        assert_eq!(e["app"], json!("loki_some_suffix"));
        let e = tpl(
            "- template:\n    source: app\n    template: '{{ ToLower .Value }}'",
            &[("app", "LOKI")],
        );
        assert_eq!(e["app"], json!("loki"));
        let e = tpl(
            "- template:\n    source: output_msg\n    template: '{{ .level }} for app {{ ToUpper .app }}'",
            &[("app", "loki"), ("level", "warn")],
        );
        assert_eq!(e["output_msg"], json!("warn for app LOKI"));
        let e = tpl(
            "- template:\n    source: app\n    template: '{{ .level }} for app {{ ToUpper .Value }} in module {{.module}}'",
            &[("app", "loki"), ("level", "warn"), ("module", "test")],
        );
        assert_eq!(e["app"], json!("warn for app LOKI in module test"));
        let e = tpl(
            "- template:\n    source: app\n    template: '{{ Replace .Value \"loki\" \"blokey\" 1 }}'",
            &[("app", "loki loki")],
        );
        assert_eq!(e["app"], json!("blokey loki"));
    }

    #[test]
    fn entry_prepends_the_line() {
        let yaml = "
- template:
    source: message
    template: '{{.app }}: {{ .Entry }}'
- output:
    source: message
";
        let out = run_entry_with(yaml, "the line", &[("app", "loki")]);
        assert_eq!(out.line, "loki: the line");
    }

    #[test]
    fn docs_multiline_yaml_template() {
        // The docs' YAML, with `\` line continuations in a double-quoted scalar.
        let yaml = r#"
- template:
    source: time
    template: "\
      {{ .date_local | substr 6 10 }}-{{ .date_local | substr 0 2 }}-{{ .date_local | substr 3 5 }}T\
      {{ if eq (.time_local | substr 0 2) \"12\" }}\
          {{ if eq .hour_period \"AM\" }}00{{ else }}12{{ end }}{{ .time_local | substr 2 10}}Z\
      {{ else }}\
          {{ if eq .hour_period \"AM\" }}\
              {{ if or (eq (.time_local | substr 0 2) \"11\") (eq (.time_local | substr 0 2) \"10\") }}{{ .time_local }}Z\
                  {{ else }}0{{ .time_local }}Z\
              {{ end }}\
          {{ else }}\
              {{ if eq (.time_local | substr 0 2) \"11\" }}23{{ .time_local | substr 2 10 }}Z{{ end }}\
              {{ if eq (.time_local | substr 0 2) \"10\" }}22{{ .time_local | substr 2 10 }}Z{{ end }}\
              {{ if eq (.time_local | substr 0 2) \"9:\" }}21{{ .time_local | substr 1 10 }}Z{{ end }}\
              {{ if eq (.time_local | substr 0 2) \"8:\" }}20{{ .time_local | substr 1 10 }}Z{{ end }}\
              {{ if and (le (.time_local | substr 0 1) \"7\") (eq (.time_local | substr 1 2) \":\") }}1{{ add (.time_local | substr 0 1) 2 }}{{ .time_local | substr 1 10 }}Z{{ end }}\
          {{ end }}\
      {{ end }}"
- timestamp:
    source: time
    format: RFC3339
"#;
        let out = run_entry_with(
            yaml,
            "x",
            &[
                ("date_local", "11/08/2022"),
                ("time_local", "12:53:24"),
                ("hour_period", "PM"),
            ],
        );
        assert_eq!(out.extracted["time"], json!("2022-11-08T12:53:24Z"));
        assert_eq!(out.timestamp.0, 1_667_912_004_000_000_000);
    }

    #[test]
    fn empty_result_removes_the_key_and_errors_leave_it() {
        let e = tpl(
            "- template:\n    source: app\n    template: ''",
            &[("app", "x")],
        );
        assert!(!e.contains_key("app"));
        let e = tpl(
            "- template:\n    source: app\n    template: '{{ ToUpper .missing }}'",
            &[("app", "x")],
        );
        assert_eq!(e["app"], json!("x"));
    }

    #[test]
    fn config_errors() {
        assert!(
            build_err("- template:\n    template: x").contains("template source value is required")
        );
        let err = build_err("- template:\n    source: a\n    template: '{{ nope .Value }}'");
        assert!(err.contains("pipeline_stages[0] (template)"), "{err}");
        assert!(err.contains("function \"nope\" not defined"), "{err}");
        assert!(
            build_err("- template:\n    source: a\n    template: '{{ if }}'")
                .contains("(template)")
        );
    }
}
