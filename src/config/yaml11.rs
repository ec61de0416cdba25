//! YAML 1.1 booleans inside `pipeline_stages`.
//!
//! Promtail reads its config with a YAML 1.1 parser, which takes a plain (unquoted) `yes`, `no`,
//! `on`, `off`, `y` or `n` for a boolean. Elsewhere in the config that makes no difference (a
//! boolean read into a string keeps its text), but stage options are decoded from the parsed
//! tree: `drop_malformed: yes` is true, and `source: on` or a key `n:` is a boolean where a
//! string is expected, which Promtail refuses. The YAML library here follows YAML 1.2, so those
//! words are rewritten to `true`/`false` (and YAML 1.1 numbers such as `017` or `1_000` to decimal) inside `pipeline_stages` before parsing, so that the
//! stages see what Promtail's see. Hand-written because the parser does not say which scalars
//! were quoted; the rewrite works line by line on block style and on flow collections written
//! on one line (`{drop_malformed: yes}`), and leaves quoted text, comments and block scalars
//! alone, keeping every line.

/// The YAML 1.1 boolean a plain word means, if it is one YAML 1.2 does not know.
fn yaml11_bool(word: &str) -> Option<&'static str> {
    match word {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some("true"),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some("false"),
        _ => None,
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Rewrites the plain YAML 1.1 booleans of every `pipeline_stages` block of `text`.
pub fn booleans_in_stages(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Indentation of the `pipeline_stages:` key whose block we are in.
    let mut stages_at: Option<usize> = None;
    // Indentation above which a block scalar's lines run.
    let mut block_scalar_at: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let blank = body.trim().is_empty() || body.trim_start().starts_with('#');
        let indent = indent_of(body);
        if let Some(at) = block_scalar_at {
            if blank || indent > at {
                out.push_str(line);
                continue;
            }
            block_scalar_at = None;
        }
        if let Some(at) = stages_at
            && !blank
            && (indent < at || (indent == at && !body.trim_start().starts_with("- ")))
        {
            stages_at = None;
        }
        let trimmed = body.trim_start();
        if trimmed
            .trim_start_matches("- ")
            .starts_with("pipeline_stages:")
        {
            stages_at = Some(indent + (trimmed.len() - trimmed.trim_start_matches("- ").len()));
            out.push_str(line);
            continue;
        }
        if stages_at.is_none() || blank {
            out.push_str(line);
            continue;
        }
        let rewritten = rewrite_line(body);
        let t = rewritten.trim_end();
        let t = match t.find(" #") {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        if t.ends_with(['|', '>']) || t.ends_with("|-") || t.ends_with(">-") || t.ends_with("|+") {
            block_scalar_at = Some(indent);
        }
        out.push_str(&rewritten);
        out.push_str(ending);
    }
    out
}

/// Rewrites the plain words of one block-style line: sequence items, keys, and a value after
/// `key: `.
fn rewrite_line(body: &str) -> String {
    let indent = indent_of(body);
    let mut out = body[..indent].to_string();
    let mut rest = &body[indent..];
    while let Some(after) = rest.strip_prefix("- ") {
        out.push_str("- ");
        rest = after.trim_start_matches(' ');
        out.push_str(&" ".repeat(after.len() - rest.len()));
    }
    if rest == "-" {
        out.push_str(rest);
        return out;
    }
    // Split off a trailing comment (only outside quotes, which start a scalar).
    let (content, comment) = match rest.find(" #") {
        Some(i) if !rest.starts_with(['"', '\'']) => (&rest[..i], &rest[i..]),
        _ => (rest, ""),
    };
    match split_key(content) {
        Some((key, sep, value)) => {
            out.push_str(yaml11_bool(key).unwrap_or(key));
            out.push_str(sep);
            out.push_str(&scalar_or_flow(value));
        }
        None => {
            out.push_str(&scalar_or_flow(content));
        }
    }
    out.push_str(comment);
    out
}

/// A value: a flow collection has its plain scalars rewritten, a plain scalar itself.
fn scalar_or_flow(value: &str) -> String {
    if value.starts_with(['{', '[']) {
        rewrite_flow(value)
    } else {
        plain_word(value)
    }
}

/// Rewrites the plain scalars (keys and values) of a flow collection written on one line,
/// `{drop_malformed: yes, labels: [n]}`; quoted scalars are copied as they are. A collection
/// that goes on to the next lines is rewritten up to the end of this one, the rest left alone.
fn rewrite_flow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '"' => quoted_len(rest, '"'),
            '\'' => quoted_len(rest, '\''),
            '{' | '}' | '[' | ']' | ',' | ':' | ' ' => 1,
            _ => {
                let end = plain_flow_end(rest);
                out.push_str(&plain_word(&rest[..end]));
                rest = &rest[end..];
                continue;
            }
        };
        out.push_str(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// The length of the quoted scalar `text` starts with, quotes included (all of `text` when it
/// is not closed on this line). In double quotes `\` escapes; in single quotes `''` is a quote.
fn quoted_len(text: &str, quote: char) -> usize {
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if quote == '"' && c == '\\' {
            chars.next();
        } else if c == quote {
            if quote == '\'' && chars.peek().is_some_and(|&(_, n)| n == '\'') {
                chars.next();
                continue;
            }
            return i + 1;
        }
    }
    text.len()
}

/// Where the plain scalar `text` starts with ends in a flow collection: at `,`, a bracket or
/// brace, or a `:` followed by a space, an indicator or the end.
fn plain_flow_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b',' | b'[' | b']' | b'{' | b'}' => return i,
            b':' if matches!(
                bytes.get(i + 1),
                None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')
            ) =>
            {
                return i;
            }
            _ => {}
        }
    }
    text.len()
}

/// A scalar with its trailing spaces, the word rewritten if it is a YAML 1.1 boolean or a
/// YAML 1.1 octal number (`017` is 15).
fn plain_word(scalar: &str) -> String {
    let word = scalar.trim_end();
    let tail = &scalar[word.len()..];
    if let Some(b) = yaml11_bool(word) {
        return format!("{b}{tail}");
    }
    let (sign, digits) = match word.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", word.strip_prefix('+').unwrap_or(word)),
    };
    if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && let Ok(n) = i64::from_str_radix(digits, 8)
    {
        return format!("{sign}{n}{tail}");
    }
    // `1_000` is 1000 in YAML 1.1.
    if digits.contains('_')
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return format!("{sign}{}{tail}", digits.replace('_', ""));
    }
    scalar.to_string()
}

/// `key: value` (or `key:`) with a plain key: the key, the separator and the value.
fn split_key(content: &str) -> Option<(&str, &str, &str)> {
    if content.starts_with(['"', '\'', '{', '[', '&', '*', '!', '|', '>']) {
        return None;
    }
    let colon = content
        .match_indices(':')
        .map(|(i, _)| i)
        .find(|&i| content[i + 1..].is_empty() || content[i + 1..].starts_with(' '))?;
    let key = &content[..colon];
    let after = &content[colon + 1..];
    let value = after.trim_start_matches(' ');
    let sep = &content[colon..content.len() - value.len()];
    Some((key, sep, value))
}

#[cfg(test)]
mod tests {
    use super::booleans_in_stages;

    #[test]
    fn flow_collections_on_one_line() {
        let text = "\
pipeline_stages:
  - json: {drop_malformed: yes, expressions: {n: num, 'y': \"on\", q: 'it''s no'}}
  - {static_labels: {v: Y, o: 017, u: http://a:b/c, w: [n, off , 'no']}}  # no
  - labels: {lvl: }
";
        let want = "\
pipeline_stages:
  - json: {drop_malformed: true, expressions: {false: num, 'y': \"on\", q: 'it''s no'}}
  - {static_labels: {v: true, o: 15, u: http://a:b/c, w: [false, false , 'no']}}  # no
  - labels: {lvl: }
";
        assert_eq!(booleans_in_stages(text), want);
    }

    #[test]
    fn booleans_become_yaml_1_2_inside_stages_only() {
        let text = "\
scrape_configs:
  - job_name: a
    static_configs:
      - labels: {flag: yes}
        targets: [on]
    pipeline_stages:
      - json:
          drop_malformed: yes  # a comment
          expressions:
            n: num
            name: 'no'
      - template:
          source: out
          template: |
            on: no
            y
      - static_labels:
          v: \"yes\"
          w: off
          o: 017
          u: 1_000
  - job_name: b
    pipeline_stages:
    - drop:
        source: n
";
        let out = booleans_in_stages(text);
        let want = "\
scrape_configs:
  - job_name: a
    static_configs:
      - labels: {flag: yes}
        targets: [on]
    pipeline_stages:
      - json:
          drop_malformed: true  # a comment
          expressions:
            false: num
            name: 'no'
      - template:
          source: out
          template: |
            on: no
            y
      - static_labels:
          v: \"yes\"
          w: false
          o: 15
          u: 1000
  - job_name: b
    pipeline_stages:
    - drop:
        source: false
";
        assert_eq!(out, want);
    }
}
