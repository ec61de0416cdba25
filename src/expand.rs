//! `-config.expand-env`: `${VAR}`, `${VAR:-default}` and `$VAR` are replaced by the environment
//! before the YAML is parsed, as Promtail does. `$$` stands for a literal `$`.

/// Expands environment references in `text`, looking each name up with `lookup`.
///
/// ```
/// let env = |name: &str| (name == "HOST").then(|| "web-1".to_string());
/// let out = logferry::config::expand_env("host: ${HOST}, dc: ${DC:-eu}, cost: $$5", env);
/// assert_eq!(out, "host: web-1, dc: eu, cost: $5");
/// ```
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    out.push_str(&substitute(&body[..end], &lookup));
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn substitute(expr: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    if let Some((name, default)) = expr.split_once(":-") {
        return lookup(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string());
    }
    if let Some((name, default)) = expr.split_once('-') {
        return lookup(name).unwrap_or_else(|| default.to_string());
    }
    lookup(expr).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_forms() {
        assert_eq!(expand_env("${A}/$A/${B:-beta}", env), "alpha/alpha/beta");
        assert_eq!(
            expand_env("${EMPTY:-d}|${EMPTY-d}|${MISSING-d}", env),
            "d||d"
        );
        assert_eq!(expand_env("${MISSING}x", env), "x");
        assert_eq!(
            expand_env("a $ b $$ c ${unclosed", env),
            "a $ b $ c ${unclosed"
        );
    }
}
