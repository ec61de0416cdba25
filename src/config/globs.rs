//! `__path__` globs as written in a config: checked when the config is read, so that a bad
//! glob is reported with the file, line and key like any other config error.

use glob::Pattern;

/// Checks a `__path__` value: a shell glob, `**` for any depth, `{a,b}` alternatives.
pub fn check_glob(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty".into());
    }
    for pattern in expand_braces(value)? {
        Pattern::new(&pattern).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Expands `{a,b}` alternatives (which the glob crate does not know) into several patterns.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = vec![];
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| "unclosed '{'".to_string())?;
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    let mut out = vec![];
    for pair in bounds.windows(2) {
        let alternative = &pattern[pair[0] + 1..pair[1]];
        out.extend(expand_braces(&format!("{head}{alternative}{tail}"))?);
    }
    Ok(out)
}
