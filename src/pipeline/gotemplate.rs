//! Go's `text/template`, as Promtail's `template` and `replace` stages use it.
//!
//! No maintained Rust crate implements Go's template language with Sprig's functions, so this is
//! a small interpreter: actions `{{ }}` with trim markers `{{- -}}` and comments, pipelines with
//! `|`, variables (`$x := ...`, `$x = ...`, `$`), fields (`.Value`, `.a.b`, `(pipe).f`),
//! `if`/`else if`/`else`, `range` (lists, maps, integers; `break`, `continue`), `with`, Go's
//! builtin functions (`and or not len index slice print printf println eq ne lt le gt ge html js
//! urlquery`), Promtail's own (`ToLower ToUpper Replace Trim TrimLeft TrimRight TrimPrefix
//! TrimSuffix TrimSpace Hash Sha2Hash regexReplaceAll regexReplaceAllLiteral`) and the Sprig
//! functions listed in [`FUNCTIONS`] (Sprig's `slice`, which takes lists only, replaces Go's, as
//! in Promtail), named templates (`define`, `template`, `block`), and the methods templates call
//! on Sprig's versions (`(semver .v).Major`) and on times (`now.Unix`). A function that is not
//! listed makes the template fail to parse, naming the function, as Go does.
//!
//! ```
//! use logferry::pipeline::gotemplate::Template;
//! use std::collections::BTreeMap;
//! let t = Template::parse(r#"{{ if eq .Value "200" }}OK{{ else }}{{ .Value | ToUpper }}{{ end }}"#).unwrap();
//! let mut data = BTreeMap::new();
//! data.insert("Value".to_string(), "abc".to_string());
//! assert_eq!(t.execute(&data).unwrap(), "ABC");
//! ```

mod semver;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc as Rc;

/// The data a template sees as `.`: a map of strings.
pub trait Data {
    fn get(&self, key: &str) -> Option<String>;
    /// All keys, sorted (for `range`, printing, `len`).
    fn keys(&self) -> Vec<String>;
}

impl Data for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
    fn keys(&self) -> Vec<String> {
        BTreeMap::keys(self).cloned().collect()
    }
}

/// A value during execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Go's invalid value (a missing map key): prints `<no value>`.
    Missing,
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<Vec<Value>>),
    Map(Rc<BTreeMap<String, Value>>),
    /// A point in time (Sprig's `now`), nanoseconds since the epoch.
    Time(i64),
    /// Sprig's `semver` result.
    Semver(Rc<semver::Version>),
    /// The template's data (`.` at the top, `$`).
    Root,
}

impl Value {
    fn str(s: impl Into<Rc<str>>) -> Value {
        Value::Str(s.into())
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Missing => "invalid",
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) | Value::Root => "map",
            Value::Time(_) => "struct",
            Value::Semver(_) => "ptr",
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Missing | Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Root => "map[string]interface {}",
            Value::Time(_) => "time.Time",
            Value::Semver(_) => "*semver.Version",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(String),
    Var(String),
    Dot,
    Str(String),
    Num(Value),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Whether whitespace came before the token (a field right after an operand chains).
    spaced: bool,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Action(Vec<Token>, usize),
}

fn lex(src: &str) -> Result<Vec<Piece>, String> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    let mut line = 1;
    loop {
        let Some(open) = rest.find("{{") else {
            let mut text = rest;
            if trim_next {
                text = text.trim_start_matches(is_space);
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_string()));
            }
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start_matches(is_space);
        }
        let after = &rest[open + 2..];
        let trim_left = after.starts_with('-') && after[1..].starts_with(is_space);
        if trim_left {
            text = text.trim_end_matches(is_space);
        }
        line += rest[..open].matches('\n').count();
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        let mut inner = if trim_left { &after[2..] } else { after };
        // Comments.
        let trimmed = inner.trim_start_matches(is_space);
        if trimmed.starts_with("/*") {
            let end = trimmed
                .find("*/")
                .ok_or_else(|| format!("{line}: unclosed comment"))?;
            let after_comment = trimmed[end + 2..].trim_start_matches(is_space);
            let (close_trim, skip) = if after_comment.starts_with("-}}") {
                (true, 3)
            } else if after_comment.starts_with("}}") {
                (false, 2)
            } else {
                return Err(format!("{line}: comment ends before closing delimiter"));
            };
            let consumed = src.len() - after_comment.len() + skip;
            line += src[src.len() - after.len()..consumed].matches('\n').count();
            rest = &src[consumed..];
            trim_next = close_trim;
            continue;
        }
        let (tokens, consumed, close_trim) = lex_action(inner, line)?;
        line += inner[..consumed].matches('\n').count();
        inner = &inner[consumed..];
        pieces.push(Piece::Action(tokens, line));
        rest = inner;
        trim_next = close_trim;
    }
    Ok(pieces)
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Lexes one action's tokens; returns them, the bytes consumed (through `}}`), and whether the
/// close had a trim marker.
fn lex_action(s: &str, line: usize) -> Result<(Vec<Token>, usize, bool), String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut toks = Vec::new();
    let mut spaced = true;
    loop {
        if i >= b.len() {
            return Err(format!("{line}: unclosed action"));
        }
        let c = b[i];
        if is_space(c as char) {
            // Trim marker " -}}".
            let rest = &s[i..];
            let ws = rest.len() - rest.trim_start_matches(is_space).len();
            if rest[ws..].starts_with("-}}") {
                return Ok((toks, i + ws + 3, true));
            }
            i += ws;
            spaced = true;
            continue;
        }
        if s[i..].starts_with("}}") {
            return Ok((toks, i + 2, false));
        }
        let start = i;
        let tok = match c {
            b'|' => {
                i += 1;
                Tok::Pipe
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b':' if s[i..].starts_with(":=") => {
                i += 2;
                Tok::Declare
            }
            b'=' => {
                i += 1;
                Tok::Assign
            }
            b'"' => {
                let (v, n) = lex_quoted(&s[i..]).map_err(|e| format!("{line}: {e}"))?;
                i += n;
                Tok::Str(v)
            }
            b'`' => {
                let end = s[i + 1..]
                    .find('`')
                    .ok_or_else(|| format!("{line}: unterminated raw quoted string"))?;
                let v = s[i + 1..i + 1 + end].to_string();
                i += end + 2;
                Tok::Str(v)
            }
            b'\'' => {
                let (v, n) = lex_char(&s[i..]).map_err(|e| format!("{line}: {e}"))?;
                i += n;
                Tok::Num(Value::Int(v as i64))
            }
            b'$' => {
                i += 1;
                while i < b.len() && is_alnum(b[i]) {
                    i += 1;
                }
                Tok::Var(s[start..i].to_string())
            }
            b'.' => {
                if i + 1 < b.len() && is_alnum(b[i + 1]) && !b[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < b.len() && is_alnum(b[i]) {
                        i += 1;
                    }
                    Tok::Field(s[start + 1..i].to_string())
                } else if i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                    let (v, n) = lex_number(&s[i..]).map_err(|e| format!("{line}: {e}"))?;
                    i += n;
                    Tok::Num(v)
                } else {
                    i += 1;
                    Tok::Dot
                }
            }
            b'0'..=b'9' | b'+' | b'-' => {
                let (v, n) = lex_number(&s[i..]).map_err(|e| format!("{line}: {e}"))?;
                i += n;
                Tok::Num(v)
            }
            c if is_alnum(c) => {
                while i < b.len() && is_alnum(b[i]) {
                    i += 1;
                }
                match &s[start..i] {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    w => Tok::Ident(w.to_string()),
                }
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(format!("{line}: unexpected {ch:?} in command"));
            }
        };
        toks.push(Token { tok, spaced });
        spaced = false;
    }
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn lex_number(s: &str) -> Result<(Value, usize), String> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let start_digits = i;
    let mut is_float = false;
    let radix_prefix = b.len() > i + 1
        && b[i] == b'0'
        && matches!(b[i + 1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B');
    if radix_prefix {
        i += 2;
        while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b'_') {
            i += 1;
        }
    } else {
        while i < b.len()
            && (b[i].is_ascii_digit()
                || b[i] == b'_'
                || b[i] == b'.'
                || matches!(b[i], b'e' | b'E')
                || (matches!(b[i], b'+' | b'-') && matches!(b[i - 1], b'e' | b'E')))
        {
            if matches!(b[i], b'.' | b'e' | b'E') {
                is_float = true;
            }
            i += 1;
        }
    }
    if i < b.len() && is_alnum(b[i]) {
        return Err(format!("bad number syntax: {:?}", &s[..i]));
    }
    let text: String = s[..i].chars().filter(|c| *c != '_').collect();
    if i == start_digits {
        return Err(format!("bad number syntax: {:?}", &s[..i.max(1)]));
    }
    if radix_prefix {
        let (neg, body) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text.trim_start_matches('+')),
        };
        let radix = match &body[..2] {
            "0x" | "0X" => 16,
            "0o" | "0O" => 8,
            _ => 2,
        };
        let v = i64::from_str_radix(&body[2..], radix)
            .map_err(|_| format!("bad number syntax: {text:?}"))?;
        return Ok((Value::Int(if neg { -v } else { v }), i));
    }
    if !is_float && let Ok(v) = text.parse::<i64>() {
        // Go reads 0777 as octal.
        let digits = text.trim_start_matches(['+', '-']);
        if digits.len() > 1 && digits.starts_with('0') {
            let v = i64::from_str_radix(digits, 8)
                .map_err(|_| format!("bad number syntax: {text:?}"))?;
            return Ok((Value::Int(if text.starts_with('-') { -v } else { v }), i));
        }
        return Ok((Value::Int(v), i));
    }
    text.parse::<f64>()
        .map(|f| (Value::Float(f), i))
        .map_err(|_| format!("bad number syntax: {text:?}"))
}

/// A Go interpreted string literal; returns the value and the bytes consumed.
fn lex_quoted(s: &str) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => return Err("unterminated quoted string".into()),
            '\\' => {
                let (_, e) = chars.next().ok_or("unterminated quoted string")?;
                match e {
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\u{b}'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => return Err("unknown escape sequence \\'".into()),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String =
                            (0..n).filter_map(|_| chars.next().map(|p| p.1)).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .map_err(|_| "invalid escape in quoted string")?;
                        if e == 'x' {
                            // A byte; only ASCII makes a valid string here.
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        } else {
                            out.push(char::from_u32(code).ok_or("invalid Unicode code point")?);
                        }
                    }
                    '0'..='7' => {
                        let mut code = e.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            let (_, d) = chars.next().ok_or("invalid octal escape")?;
                            code = code * 8 + d.to_digit(8).ok_or("invalid octal escape")?;
                        }
                        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                    }
                    other => return Err(format!("unknown escape sequence \\{other}")),
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

fn lex_char(s: &str) -> Result<(char, usize), String> {
    let end = s[1..].find('\'').ok_or("unterminated character constant")? + 1;
    let body = &s[1..end];
    let c = if let Some(esc) = body.strip_prefix('\\') {
        match esc {
            "n" => '\n',
            "t" => '\t',
            "r" => '\r',
            "\\" => '\\',
            "'" => '\'',
            "0" => '\0',
            _ => {
                let quoted = format!("\"{}\"", body.replace('\'', "\\'"));
                lex_quoted(&quoted)?
                    .0
                    .chars()
                    .next()
                    .ok_or("bad character constant")?
            }
        }
    } else {
        let mut it = body.chars();
        let c = it.next().ok_or("empty character constant")?;
        if it.next().is_some() {
            return Err("invalid character constant".into());
        }
        c
    };
    Ok((c, end + 1))
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Break,
    Continue,
    /// `{{template "name" pipe}}` (and the call half of `{{block}}`).
    Template(String, Option<Pipe>),
}

#[derive(Debug, Clone)]
struct Pipe {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    Lit(Value),
    Dot,
    /// `.a.b` on dot.
    Field(Vec<String>),
    /// `$x.a.b`.
    Var(String, Vec<String>),
    Func(&'static str),
    /// `(pipe).a.b`.
    Sub(Box<Pipe>, Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// Templates named by `{{define}}` and `{{block}}`.
    defs: BTreeMap<String, Vec<Node>>,
}

struct Parser {
    pieces: std::vec::IntoIter<Piece>,
    vars: Vec<String>,
    range_depth: usize,
    /// How many control structures enclose the current list (`define` only at the top).
    nest: usize,
    defs: BTreeMap<String, Vec<Node>>,
}

enum Closer {
    Eof,
    End,
    Else(Vec<Token>, usize),
}

impl Template {
    /// Parses a template; errors read like Go's (`template: pipeline_template:1: ...`).
    pub fn parse(src: &str) -> Result<Template, String> {
        let pieces = lex(src).map_err(|e| format!("template: pipeline_template:{e}"))?;
        let mut p = Parser {
            pieces: pieces.into_iter(),
            vars: vec!["$".to_string()],
            range_depth: 0,
            nest: 0,
            defs: BTreeMap::new(),
        };
        let (nodes, end) = p
            .list()
            .map_err(|e| format!("template: pipeline_template:{e}"))?;
        match end {
            Closer::Eof => Ok(Template {
                nodes,
                defs: p.defs,
            }),
            Closer::End => Err("template: pipeline_template: unexpected {{end}}".into()),
            Closer::Else(..) => Err("template: pipeline_template: unexpected {{else}}".into()),
        }
    }

    /// Executes the template over `data`.
    pub fn execute(&self, data: &dyn Data) -> Result<String, String> {
        let mut ex = Exec {
            data,
            vars: vec![("$".to_string(), Value::Root)],
            out: String::new(),
            depth: 0,
            calls: 0,
            defs: &self.defs,
        };
        ex.walk(&Value::Root, &self.nodes)
            .map_err(|e| format!("template: pipeline_template: {e}"))?;
        Ok(ex.out)
    }
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Closer), String> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            match piece {
                Piece::Text(t) => nodes.push(Node::Text(t)),
                Piece::Action(toks, line) => {
                    let Some(first) = toks.first() else {
                        return Err(format!("{line}: missing value for command"));
                    };
                    let keyword = match &first.tok {
                        Tok::Ident(w) => w.as_str(),
                        _ => "",
                    };
                    match keyword {
                        "end" => {
                            if toks.len() > 1 {
                                return Err(format!("{line}: unexpected token in end"));
                            }
                            return Ok((nodes, Closer::End));
                        }
                        "else" => return Ok((nodes, Closer::Else(toks[1..].to_vec(), line))),
                        "if" | "with" | "range" => {
                            let node = self.control(keyword, &toks[1..], line)?;
                            nodes.push(node);
                        }
                        "break" | "continue" => {
                            if self.range_depth == 0 {
                                return Err(format!(
                                    "{line}: {{{{{keyword}}}}} outside {{{{range}}}}"
                                ));
                            }
                            nodes.push(if keyword == "break" {
                                Node::Break
                            } else {
                                Node::Continue
                            });
                        }
                        "define" => {
                            if self.nest > 0 {
                                return Err(format!("{line}: unexpected <define> in command"));
                            }
                            let name = template_name(&toks, "define", line)?;
                            if toks.len() > 2 {
                                return Err(format!("{line}: unexpected token in define clause"));
                            }
                            self.definition(name, line)?;
                        }
                        "template" | "block" => {
                            let name = template_name(&toks, keyword, line)?;
                            let pipe = if toks.len() > 2 {
                                Some(self.pipeline(&toks[2..], line, false)?)
                            } else if keyword == "block" {
                                return Err(format!("{line}: missing value for block clause"));
                            } else {
                                None
                            };
                            if keyword == "block" {
                                self.definition(name.clone(), line)?;
                            }
                            nodes.push(Node::Template(name, pipe));
                        }
                        _ => {
                            let pipe = self.pipeline(&toks, line, false)?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
            }
        }
        Ok((nodes, Closer::Eof))
    }

    /// The body of `define` or `block`, up to its `{{end}}`, with its own variables.
    fn definition(&mut self, name: String, line: usize) -> Result<(), String> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let range_depth = std::mem::replace(&mut self.range_depth, 0);
        self.nest += 1;
        let (body, end) = self.list()?;
        self.nest -= 1;
        self.vars = vars;
        self.range_depth = range_depth;
        match end {
            Closer::End => {}
            Closer::Eof => return Err(format!("{line}: unexpected EOF")),
            Closer::Else(_, eline) => return Err(format!("{eline}: unexpected <else>")),
        }
        // As in Go, an empty definition gives way to a non-empty one; two non-empty ones clash.
        let blank = |nodes: &[Node]| {
            nodes
                .iter()
                .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
        };
        match self.defs.get(&name) {
            Some(old) if !blank(old) && !blank(&body) => Err(format!(
                " template: multiple definition of template {name:?}"
            )),
            Some(_) if blank(&body) => Ok(()),
            _ => {
                self.defs.insert(name, body);
                Ok(())
            }
        }
    }

    fn control(&mut self, keyword: &str, toks: &[Token], line: usize) -> Result<Node, String> {
        self.nest += 1;
        let node = self.control_inner(keyword, toks, line);
        self.nest -= 1;
        node
    }

    fn control_inner(
        &mut self,
        keyword: &str,
        toks: &[Token],
        line: usize,
    ) -> Result<Node, String> {
        let mark = self.vars.len();
        let pipe = self.pipeline(toks, line, keyword == "range")?;
        if keyword == "range" {
            self.range_depth += 1;
        }
        let (body, end) = self.list()?;
        if keyword == "range" {
            self.range_depth -= 1;
        }
        let else_nodes = match end {
            Closer::Eof => return Err(format!("{line}: unexpected EOF")),
            Closer::End => Vec::new(),
            Closer::Else(rest, eline) => {
                if rest.is_empty() {
                    let (nodes, end) = self.list()?;
                    match end {
                        Closer::End => nodes,
                        _ => return Err(format!("{eline}: expected end; found else or EOF")),
                    }
                } else {
                    // `else if` / `else with`: a nested control ending with the same `end`.
                    let kw = match &rest[0].tok {
                        Tok::Ident(w) if (w == "if" || w == "with") && w == keyword => w.clone(),
                        _ => return Err(format!("{eline}: unexpected tokens after else")),
                    };
                    vec![self.control(&kw, &rest[1..], eline)?]
                }
            }
        };
        self.vars.truncate(mark);
        Ok(match keyword {
            "if" => Node::If(pipe, body, else_nodes),
            "with" => Node::With(pipe, body, else_nodes),
            _ => Node::Range(pipe, body, else_nodes),
        })
    }

    fn pipeline(&mut self, toks: &[Token], line: usize, range: bool) -> Result<Pipe, String> {
        let mut i = 0;
        let mut decl = Vec::new();
        let mut assign = false;
        // Declarations: `$x :=`, `$x =`, `$i, $e :=` (range).
        if let Some(Tok::Var(v)) = toks.first().map(|t| &t.tok) {
            match toks.get(1).map(|t| &t.tok) {
                Some(Tok::Declare) | Some(Tok::Assign) => {
                    assign = toks[1].tok == Tok::Assign;
                    decl.push(v.clone());
                    i = 2;
                }
                Some(Tok::Comma) if range => {
                    if let (Some(Tok::Var(v2)), Some(Tok::Declare) | Some(Tok::Assign)) =
                        (toks.get(2).map(|t| &t.tok), toks.get(3).map(|t| &t.tok))
                    {
                        assign = toks[3].tok == Tok::Assign;
                        decl.push(v.clone());
                        decl.push(v2.clone());
                        i = 4;
                    } else {
                        return Err(format!("{line}: range can only initialize variables"));
                    }
                }
                _ => {}
            }
        }
        for d in &decl {
            if assign {
                if !self.vars.contains(d) {
                    return Err(format!("{line}: undefined variable \"{d}\""));
                }
            } else {
                self.vars.push(d.clone());
            }
        }
        let (pipe, used) = self.pipe_cmds(&toks[i..], line)?;
        if i + used != toks.len() {
            return Err(format!(
                "{line}: unexpected {:?} in command",
                toks[i + used].tok
            ));
        }
        if pipe.is_empty() {
            return Err(format!("{line}: missing value for command"));
        }
        Ok(Pipe {
            decl,
            assign,
            cmds: pipe,
        })
    }

    /// Commands separated by `|`, up to a `)` or the end; returns them and tokens used.
    fn pipe_cmds(&mut self, toks: &[Token], line: usize) -> Result<(Vec<Vec<Arg>>, usize), String> {
        let mut cmds = Vec::new();
        let mut cmd = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i].tok {
                Tok::RParen => break,
                Tok::Pipe => {
                    if cmd.is_empty() {
                        return Err(format!("{line}: missing command before |"));
                    }
                    cmds.push(std::mem::take(&mut cmd));
                    i += 1;
                }
                _ => {
                    let (arg, used) = self.operand(&toks[i..], line)?;
                    cmd.push(arg);
                    i += used;
                }
            }
        }
        if !cmd.is_empty() {
            cmds.push(cmd);
        } else if !cmds.is_empty() {
            return Err(format!("{line}: missing command after |"));
        }
        for (n, c) in cmds.iter().enumerate() {
            if n > 0
                && !matches!(
                    c[0],
                    Arg::Func(_) | Arg::Field(_) | Arg::Var(..) | Arg::Sub(..)
                )
            {
                return Err(format!(
                    "{line}: non executable command in pipeline stage {}",
                    n + 1
                ));
            }
        }
        Ok((cmds, i))
    }

    fn operand(&mut self, toks: &[Token], line: usize) -> Result<(Arg, usize), String> {
        let mut i = 1;
        let mut arg = match &toks[0].tok {
            Tok::Num(v) => Arg::Lit(v.clone()),
            Tok::Str(s) => Arg::Lit(Value::str(s.as_str())),
            Tok::Bool(b) => Arg::Lit(Value::Bool(*b)),
            Tok::Nil => Arg::Lit(Value::Nil),
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => Arg::Field(vec![f.clone()]),
            Tok::Var(v) => {
                if !self.vars.contains(v) {
                    return Err(format!("{line}: undefined variable \"{v}\""));
                }
                Arg::Var(v.clone(), vec![])
            }
            Tok::Ident(name) => match function(name) {
                Some(f) => Arg::Func(f),
                None => return Err(format!("{line}: function \"{name}\" not defined")),
            },
            Tok::LParen => {
                let (cmds, used) = self.pipe_cmds(&toks[1..], line)?;
                if toks.get(1 + used).map(|t| &t.tok) != Some(&Tok::RParen) {
                    return Err(format!("{line}: unclosed left paren"));
                }
                if cmds.is_empty() {
                    return Err(format!("{line}: missing value for parenthesized pipeline"));
                }
                i = used + 2;
                Arg::Sub(
                    Box::new(Pipe {
                        decl: vec![],
                        assign: false,
                        cmds,
                    }),
                    vec![],
                )
            }
            other => return Err(format!("{line}: unexpected {other:?} in operand")),
        };
        // Field chains (no space before).
        while let Some(Token {
            tok: Tok::Field(f),
            spaced: false,
        }) = toks.get(i)
        {
            match &mut arg {
                Arg::Field(v) | Arg::Var(_, v) | Arg::Sub(_, v) => v.push(f.clone()),
                Arg::Dot => arg = Arg::Field(vec![f.clone()]),
                // `now.Unix`: the function's result, called without arguments.
                Arg::Func(name) => {
                    let call = Pipe {
                        decl: vec![],
                        assign: false,
                        cmds: vec![vec![Arg::Func(name)]],
                    };
                    arg = Arg::Sub(Box::new(call), vec![f.clone()]);
                }
                _ => return Err(format!("{line}: unexpected . after term")),
            }
            i += 1;
        }
        Ok((arg, i))
    }
}

/// The quoted name after `define`, `template` or `block`.
fn template_name(toks: &[Token], keyword: &str, line: usize) -> Result<String, String> {
    match toks.get(1).map(|t| &t.tok) {
        Some(Tok::Str(name)) => Ok(name.clone()),
        _ => Err(format!("{line}: unexpected token in {keyword} clause")),
    }
}

// ---------------------------------------------------------------------------------------------
// Execution

struct Exec<'d> {
    data: &'d dyn Data,
    vars: Vec<(String, Value)>,
    out: String,
    depth: usize,
    calls: usize,
    defs: &'d BTreeMap<String, Vec<Node>>,
}

enum Ctl {
    Normal,
    Break,
    Continue,
}

const MAX_DEPTH: usize = 10_000;
/// Nested `{{template}}` calls; lower than Go's limit so that a template calling itself fails
/// before the thread's stack runs out.
const MAX_CALLS: usize = 500;
const MAX_OUTPUT: usize = 16 << 20;

impl Exec<'_> {
    fn walk(&mut self, dot: &Value, nodes: &[Node]) -> Result<Ctl, String> {
        for node in nodes {
            if self.out.len() > MAX_OUTPUT {
                return Err("output too large".into());
            }
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipe(dot, p)?;
                    if p.decl.is_empty() {
                        print_value(&v, self.data, &mut self.out);
                    }
                }
                Node::If(p, then, els) => {
                    let mark = self.vars.len();
                    let v = self.pipe(dot, p)?;
                    let ctl = if truth(&v, self.data) {
                        self.walk(dot, then)?
                    } else {
                        self.walk(dot, els)?
                    };
                    self.vars.truncate(mark);
                    if !matches!(ctl, Ctl::Normal) {
                        return Ok(ctl);
                    }
                }
                Node::With(p, body, els) => {
                    let mark = self.vars.len();
                    let v = self.pipe(dot, p)?;
                    let ctl = if truth(&v, self.data) {
                        self.walk(&v, body)?
                    } else {
                        self.walk(dot, els)?
                    };
                    self.vars.truncate(mark);
                    if !matches!(ctl, Ctl::Normal) {
                        return Ok(ctl);
                    }
                }
                Node::Range(p, body, els) => {
                    let ctl = self.range(dot, p, body, els)?;
                    if !matches!(ctl, Ctl::Normal) {
                        return Ok(ctl);
                    }
                }
                Node::Break => return Ok(Ctl::Break),
                Node::Continue => return Ok(Ctl::Continue),
                Node::Template(name, p) => self.call_template(dot, name, p.as_ref())?,
            }
        }
        Ok(Ctl::Normal)
    }

    /// Runs a named template with the pipeline's value (or no value) as dot and as `$`.
    fn call_template(&mut self, dot: &Value, name: &str, p: Option<&Pipe>) -> Result<(), String> {
        let defs = self.defs;
        let body = defs
            .get(name)
            .ok_or_else(|| format!("template {name:?} not defined"))?;
        let new_dot = match p {
            Some(p) => {
                let mark = self.vars.len();
                let v = self.pipe(dot, p)?;
                self.vars.truncate(mark);
                v
            }
            None => Value::Missing,
        };
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(format!("exceeded maximum template depth ({MAX_CALLS})"));
        }
        let vars = std::mem::replace(&mut self.vars, vec![("$".to_string(), new_dot.clone())]);
        let result = self.walk(&new_dot, body);
        self.vars = vars;
        self.calls -= 1;
        result.map(|_| ())
    }

    fn range(&mut self, dot: &Value, p: &Pipe, body: &[Node], els: &[Node]) -> Result<Ctl, String> {
        let mark = self.vars.len();
        let undecl = Pipe {
            decl: vec![],
            assign: false,
            cmds: p.cmds.clone(),
        };
        let v = self.pipe(dot, &undecl)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::Int(i as i64), e.clone()))
                .collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, e)| (Value::str(k.as_str()), e.clone()))
                .collect(),
            Value::Root => self
                .data
                .keys()
                .into_iter()
                .map(|k| {
                    let e = self.data.get(&k).map_or(Value::Missing, Value::str);
                    (Value::str(k), e)
                })
                .collect(),
            Value::Int(n) if *n > 1 << 20 => return Err(format!("range over {n} is too long")),
            Value::Int(n) => (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect(),
            Value::Missing | Value::Nil => vec![],
            other => {
                return Err(format!(
                    "range can't iterate over {}",
                    show(other, self.data)
                ));
            }
        };
        if items.is_empty() {
            let ctl = self.walk(dot, els)?;
            self.vars.truncate(mark);
            return Ok(ctl);
        }
        for (k, e) in items {
            self.vars.truncate(mark);
            self.declare(p, &[k, e.clone()], true);
            match self.walk(&e, body)? {
                Ctl::Break => break,
                Ctl::Continue | Ctl::Normal => {}
            }
        }
        self.vars.truncate(mark);
        Ok(Ctl::Normal)
    }

    fn declare(&mut self, p: &Pipe, values: &[Value], range: bool) {
        let vals: Vec<Value> = if range && p.decl.len() == 1 {
            vec![values[1].clone()]
        } else {
            values.to_vec()
        };
        for (name, v) in p.decl.iter().zip(vals) {
            if p.assign {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v;
                }
            } else {
                self.vars.push((name.clone(), v));
            }
        }
    }

    fn pipe(&mut self, dot: &Value, p: &Pipe) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("exceeded maximum template depth".into());
        }
        let mut value: Option<Value> = None;
        for cmd in &p.cmds {
            value = Some(self.command(dot, cmd, value)?);
        }
        self.depth -= 1;
        let value = value.unwrap_or(Value::Missing);
        if !p.decl.is_empty() {
            self.declare(p, std::slice::from_ref(&value), false);
        }
        Ok(value)
    }

    fn command(&mut self, dot: &Value, cmd: &[Arg], fin: Option<Value>) -> Result<Value, String> {
        match &cmd[0] {
            Arg::Func(name) => {
                if *name == "and" || *name == "or" {
                    return self.and_or(dot, name, &cmd[1..], fin);
                }
                let mut args = Vec::with_capacity(cmd.len());
                for a in &cmd[1..] {
                    args.push(self.arg(dot, a)?);
                }
                if let Some(f) = fin {
                    args.push(f);
                }
                call(name, args, self.data).map_err(|e| format!("error calling {name}: {e}"))
            }
            first => {
                if cmd.len() > 1 || fin.is_some() {
                    if let Some((recv, method_name)) = self.receiver(dot, first)? {
                        let mut args = Vec::with_capacity(cmd.len());
                        for a in &cmd[1..] {
                            args.push(self.arg(dot, a)?);
                        }
                        if let Some(f) = fin {
                            args.push(f);
                        }
                        return method(&recv, method_name, args);
                    }
                    let what = match first {
                        Arg::Field(f) => f.last().cloned().unwrap_or_default(),
                        _ => String::new(),
                    };
                    return Err(if what.is_empty() {
                        "can't give argument to non-function".to_string()
                    } else {
                        format!("{what} is not a method but has arguments")
                    });
                }
                self.arg(dot, first)
            }
        }
    }

    fn and_or(
        &mut self,
        dot: &Value,
        name: &str,
        args: &[Arg],
        fin: Option<Value>,
    ) -> Result<Value, String> {
        if args.len() + fin.is_some() as usize == 0 {
            return Err(format!(
                "wrong number of args for {name}: want at least 1 got 0"
            ));
        }
        let mut last = Value::Missing;
        for a in args {
            last = self.arg(dot, a)?;
            if truth(&last, self.data) == (name == "or") {
                return Ok(last);
            }
        }
        if let Some(f) = fin {
            last = f;
        }
        Ok(last)
    }

    fn arg(&mut self, dot: &Value, arg: &Arg) -> Result<Value, String> {
        match arg {
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(fields) => self.fields(dot.clone(), fields),
            Arg::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                self.fields(v, fields)
            }
            Arg::Sub(p, fields) => {
                let v = self.pipe(dot, p)?;
                self.fields(v, fields)
            }
            Arg::Func(name) => {
                if *name == "and" || *name == "or" {
                    return self.and_or(dot, name, &[], None);
                }
                call(name, vec![], self.data).map_err(|e| format!("error calling {name}: {e}"))
            }
        }
    }

    /// For `.a.Method args`: the value that has the method, when it is one with methods.
    fn receiver<'a>(
        &mut self,
        dot: &Value,
        arg: &'a Arg,
    ) -> Result<Option<(Value, &'a str)>, String> {
        let (base, chain) = match arg {
            Arg::Field(f) => (dot.clone(), f),
            Arg::Var(name, f) if !f.is_empty() => {
                (self.arg(dot, &Arg::Var(name.clone(), vec![]))?, f)
            }
            Arg::Sub(p, f) if !f.is_empty() => (self.pipe(dot, p)?, f),
            _ => return Ok(None),
        };
        let Some((last, init)) = chain.split_last() else {
            return Ok(None);
        };
        let recv = self.fields(base, init)?;
        Ok(match recv {
            Value::Semver(_) | Value::Time(_) => Some((recv, last.as_str())),
            _ => None,
        })
    }

    fn fields(&self, mut v: Value, fields: &[String]) -> Result<Value, String> {
        for f in fields {
            v = match v {
                Value::Semver(_) | Value::Time(_) => method(&v, f, vec![])?,
                Value::Root => self.data.get(f).map_or(Value::Missing, Value::str),
                Value::Map(m) => m.get(f.as_str()).cloned().unwrap_or(Value::Missing),
                Value::Missing | Value::Nil => Value::Missing,
                other => {
                    return Err(format!(
                        "can't evaluate field {f} in type {}",
                        other.type_name()
                    ));
                }
            };
        }
        Ok(v)
    }
}

/// Methods of the values that have them: Sprig's `*semver.Version` and Go's `time.Time`.
fn method(recv: &Value, name: &str, args: Vec<Value>) -> R {
    let arity = |n: usize| -> Result<(), String> {
        if args.len() != n {
            return Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ));
        }
        Ok(())
    };
    let unknown = || {
        Err(format!(
            "can't evaluate field {name} in type {}",
            recv.type_name()
        ))
    };
    match recv {
        Value::Semver(v) => {
            let other = || -> Result<Rc<semver::Version>, String> {
                arity(1)?;
                match &args[0] {
                    Value::Semver(o) => Ok(o.clone()),
                    o => Err(format!(
                        "wrong type for value; expected *semver.Version; got {}",
                        o.type_name()
                    )),
                }
            };
            let is = |o: std::cmp::Ordering| -> R { Ok(Value::Bool(v.compare(&*(other()?)) == o)) };
            let m = [
                "Major",
                "Minor",
                "Patch",
                "Prerelease",
                "Metadata",
                "Original",
                "String",
            ];
            if m.contains(&name) || name.starts_with("Inc") {
                arity(0)?;
            }
            Ok(match name {
                "Major" => Value::Int(v.major as i64),
                "Minor" => Value::Int(v.minor as i64),
                "Patch" => Value::Int(v.patch as i64),
                "Prerelease" => Value::str(v.pre.as_str()),
                "Metadata" => Value::str(v.meta.as_str()),
                "Original" => Value::str(v.original.as_str()),
                "String" => Value::str(v.to_string()),
                "IncMajor" => Value::Semver(Rc::new(v.inc("major"))),
                "IncMinor" => Value::Semver(Rc::new(v.inc("minor"))),
                "IncPatch" => Value::Semver(Rc::new(v.inc("patch"))),
                "Compare" => Value::Int(v.compare(&*(other()?)) as i64),
                "LessThan" => return is(std::cmp::Ordering::Less),
                "GreaterThan" => return is(std::cmp::Ordering::Greater),
                "Equal" => return is(std::cmp::Ordering::Equal),
                _ => return unknown(),
            })
        }
        Value::Time(ns) => {
            // A failed `toDate` gives Go's zero time, 1 January of year 1.
            let secs = if *ns == i64::MIN {
                -62_135_596_800
            } else {
                ns.div_euclid(1_000_000_000)
            };
            let sub = if *ns == i64::MIN {
                0
            } else {
                ns.rem_euclid(1_000_000_000)
            };
            let v = match name {
                "Unix" => Value::Int(secs),
                "UnixMilli" => Value::Int(secs.wrapping_mul(1_000).wrapping_add(sub / 1_000_000)),
                "UnixMicro" => Value::Int(secs.wrapping_mul(1_000_000).wrapping_add(sub / 1_000)),
                "UnixNano" => Value::Int(secs.wrapping_mul(1_000_000_000).wrapping_add(sub)),
                "UTC" | "Local" => recv.clone(),
                _ => return unknown(),
            };
            arity(0)?;
            Ok(v)
        }
        _ => unknown(),
    }
}

fn truth(v: &Value, data: &dyn Data) -> bool {
    match v {
        Value::Missing | Value::Nil => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Root => !data.keys().is_empty(),
        Value::Time(_) | Value::Semver(_) => true,
    }
}

/// Prints a value as Go's `fmt.Fprint` does in a template.
fn print_value(v: &Value, data: &dyn Data, out: &mut String) {
    match v {
        Value::Missing => out.push_str("<no value>"),
        Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&format_g(*f)),
        Value::Str(s) => out.push_str(s),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_value(e, data, out);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                print_value(e, data, out);
            }
            out.push(']');
        }
        Value::Root => {
            out.push_str("map[");
            for (i, k) in data.keys().iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                out.push_str(&data.get(k).unwrap_or_default());
            }
            out.push(']');
        }
        Value::Semver(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Time(ns) => {
            let l = crate::pipeline::gotime::Layout::new("2006-01-02 15:04:05.999999999 -0700 MST");
            out.push_str(&l.format(
                crate::entry::Timestamp::from_nanos(*ns),
                &crate::pipeline::gotime::Zone::local(),
            ));
        }
    }
}

fn show(v: &Value, data: &dyn Data) -> String {
    let mut s = String::new();
    print_value(v, data, &mut s);
    s
}

/// Go's `%v` for a float64: shortest digits, exponent when below 1e-4 or from 1e6 on.
pub(crate) fn format_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        format!("{f}")
    }
}

// ---------------------------------------------------------------------------------------------
// Functions

/// Every function a template may call.
pub const FUNCTIONS: &[&str] = &[
    // Go builtins
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    // Promtail
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "Hash",
    "Sha2Hash",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    // Sprig: strings
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "upper",
    "lower",
    "title",
    "untitle",
    "repeat",
    "substr",
    "nospace",
    "trunc",
    "abbrev",
    "abbrevboth",
    "initials",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "quote",
    "squote",
    "cat",
    "indent",
    "nindent",
    "replace",
    "plural",
    "snakecase",
    "camelcase",
    "kebabcase",
    "swapcase",
    "wrap",
    "wrapWith",
    "toString",
    "toStrings",
    "split",
    "splitList",
    "splitn",
    "join",
    "sortAlpha",
    // Sprig: regular expressions
    "regexMatch",
    "mustRegexMatch",
    "regexFind",
    "mustRegexFind",
    "regexFindAll",
    "mustRegexFindAll",
    "mustRegexReplaceAll",
    "mustRegexReplaceAllLiteral",
    "regexSplit",
    "mustRegexSplit",
    "regexQuoteMeta",
    // Sprig: defaults, conversions, types
    "default",
    "empty",
    "coalesce",
    "all",
    "any",
    "ternary",
    "fromJson",
    "mustFromJson",
    "toJson",
    "mustToJson",
    "toPrettyJson",
    "mustToPrettyJson",
    "toRawJson",
    "mustToRawJson",
    "atoi",
    "int",
    "int64",
    "float64",
    "toDecimal",
    "kindOf",
    "kindIs",
    "typeOf",
    "typeIs",
    "deepEqual",
    "fail",
    "required",
    // Sprig: math
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
    "floor",
    "ceil",
    "round",
    "addf",
    "add1f",
    "subf",
    "mulf",
    "divf",
    "maxf",
    "minf",
    "until",
    "untilStep",
    "seq",
    // Sprig: encodings and hashes
    "b64enc",
    "b64dec",
    "b32enc",
    "b32dec",
    "sha256sum",
    "sha1sum",
    "adler32sum",
    "encryptAES",
    "decryptAES",
    "urlquery",
    "urlParse",
    "urlJoin",
    // Sprig: random values (accepted; their output differs at every run)
    "uuidv4",
    "randAlphaNum",
    "randAlpha",
    "randNumeric",
    "randAscii",
    "randInt",
    "shuffle",
    "chunk",
    "durationRound",
    // Sprig: lists and dicts
    "list",
    "tuple",
    "first",
    "mustFirst",
    "last",
    "mustLast",
    "rest",
    "mustRest",
    "initial",
    "mustInitial",
    "append",
    "mustAppend",
    "push",
    "mustPush",
    "prepend",
    "mustPrepend",
    "concat",
    "reverse",
    "mustReverse",
    "uniq",
    "mustUniq",
    "has",
    "mustHas",
    "without",
    "mustWithout",
    "compact",
    "mustCompact",
    "dict",
    "get",
    "set",
    "unset",
    "hasKey",
    "keys",
    "values",
    "pick",
    "omit",
    "pluck",
    "dig",
    // Sprig: dates
    "now",
    "date",
    "dateInZone",
    "date_in_zone",
    "unixEpoch",
    "toDate",
    "mustToDate",
    "duration",
    "htmlDate",
    "htmlDateInZone",
    "ago",
    // Sprig: OS and paths
    "env",
    "expandenv",
    "base",
    "dir",
    "ext",
    "clean",
    "isAbs",
    // Sprig: versions
    "semver",
    "semverCompare",
];

fn function(name: &str) -> Option<&'static str> {
    FUNCTIONS.iter().copied().find(|f| *f == name)
}

type R = Result<Value, String>;

fn want(args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args: want {n} got {}", args.len()));
    }
    Ok(())
}

/// A `string` parameter: strings only (a missing value is an error, as in Go), numbers and
/// booleans are accepted and printed.
fn s_arg(v: &Value) -> Result<Rc<str>, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Missing | Value::Nil => Err("invalid value; expected string".into()),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => Ok(to_str(v).into()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
    }
}

/// An `int` parameter.
fn i_arg(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) if f.fract() == 0.0 => Ok(*f as i64),
        Value::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| "wrong type for value; expected int; got string".to_string()),
        other => Err(format!(
            "wrong type for value; expected int; got {}",
            other.type_name()
        )),
    }
}

/// Sprig's `strval` / `fmt.Sprint` of one value.
fn to_str(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Missing | Value::Nil => String::new(),
        other => {
            let mut s = String::new();
            print_value(other, &EmptyData, &mut s);
            s
        }
    }
}

struct EmptyData;
impl Data for EmptyData {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
    fn keys(&self) -> Vec<String> {
        vec![]
    }
}

/// Sprig's `toInt64` (via `cast`): numbers, numeric strings, booleans; anything else is 0.
/// Go's `strconv.ParseInt(s, 0, 64)`: decimal, or `0x`, `0o`, `0b` and leading-`0` octal.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body = body.replace('_', "");
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => *b as i64,
        Value::Str(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .or_else(|_| t.parse::<f64>().map(|f| f as i64))
                .unwrap_or(0)
        }
        _ => 0,
    }
}

fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => *b as i64 as f64,
        Value::Str(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Missing | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Float(f) => *f == 0.0,
        Value::Str(s) => s.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Root | Value::Time(_) | Value::Semver(_) => false,
    }
}

fn list_arg(v: &Value) -> Result<Rc<Vec<Value>>, String> {
    match v {
        Value::List(l) => Ok(l.clone()),
        Value::Missing | Value::Nil => Ok(Rc::new(vec![])),
        other => Err(format!("cannot find first on type {}", other.type_name())),
    }
}

fn map_arg(v: &Value, data: &dyn Data) -> Result<BTreeMap<String, Value>, String> {
    match v {
        Value::Map(m) => Ok((**m).clone()),
        Value::Root => Ok(data
            .keys()
            .into_iter()
            .map(|k| {
                let v = data.get(&k).map_or(Value::Missing, Value::str);
                (k, v)
            })
            .collect()),
        other => Err(format!("expected a dict, got {}", other.type_name())),
    }
}

fn regex(expr: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(expr).map_err(|e| e.to_string())
}

fn basic_eq(a: &Value, b: &Value) -> Result<bool, String> {
    Ok(match (a, b) {
        (Value::Missing, _) | (_, Value::Missing) => {
            return Err("invalid type for comparison".into());
        }
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Time(x), Value::Time(y)) => x == y,
        (Value::Semver(x), Value::Semver(y)) => Rc::ptr_eq(x, y),
        (Value::List(_) | Value::Map(_) | Value::Root, _)
        | (_, Value::List(_) | Value::Map(_) | Value::Root) => {
            return Err("non-comparable type".into());
        }
        _ => return Err("incompatible types for comparison".into()),
    })
}

fn basic_lt(a: &Value, b: &Value) -> Result<bool, String> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Int(x), Value::Float(y)) => (*x as f64) < *y,
        (Value::Float(x), Value::Int(y)) => *x < (*y as f64),
        (Value::Str(x), Value::Str(y)) => x < y,
        (Value::Missing, _) | (_, Value::Missing) => {
            return Err("invalid type for comparison".into());
        }
        (Value::Bool(_), Value::Bool(_)) | (Value::Nil, _) | (_, Value::Nil) => {
            return Err("invalid type for comparison".into());
        }
        _ => return Err("incompatible types for comparison".into()),
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn strs(v: Vec<String>) -> Value {
    Value::List(Rc::new(v.into_iter().map(Value::str).collect()))
}

fn call(name: &str, a: Vec<Value>, data: &dyn Data) -> R {
    use base64::Engine as _;
    let n = a.len();
    let s = |i: usize| -> Result<Rc<str>, String> { s_arg(a.get(i).ok_or("missing argument")?) };
    let i = |k: usize| -> Result<i64, String> { i_arg(a.get(k).ok_or("missing argument")?) };
    Ok(match name {
        // --- Go builtins
        "not" => {
            want(&a, 1)?;
            Value::Bool(!truth(&a[0], data))
        }
        "len" => {
            want(&a, 1)?;
            Value::Int(match &a[0] {
                Value::Str(s) => s.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                Value::Root => data.keys().len(),
                other => return Err(format!("len of type {}", other.type_name())),
            } as i64)
        }
        "index" => {
            if n == 0 {
                return Err("wrong number of args for index: want at least 1 got 0".into());
            }
            let mut v = a[0].clone();
            for k in &a[1..] {
                v = match (&v, k) {
                    (Value::List(l), k) => {
                        let idx = i_arg(k)?;
                        l.get(usize::try_from(idx).map_err(|_| "index out of range")?)
                            .cloned()
                            .ok_or_else(|| format!("index out of range: {idx}"))?
                    }
                    (Value::Str(s), k) => {
                        let idx = i_arg(k)?;
                        let b = s
                            .as_bytes()
                            .get(usize::try_from(idx).map_err(|_| "index out of range")?)
                            .ok_or_else(|| format!("index out of range: {idx}"))?;
                        Value::Int(*b as i64)
                    }
                    (Value::Map(m), k) => m.get(&*s_arg(k)?).cloned().unwrap_or(Value::Missing),
                    (Value::Root, k) => data.get(&s_arg(k)?).map_or(Value::Missing, Value::str),
                    (Value::Missing | Value::Nil, _) => {
                        return Err("index of untyped nil".into());
                    }
                    (other, _) => {
                        return Err(format!("can't index item of type {}", other.type_name()));
                    }
                };
            }
            v
        }
        // Sprig's `slice` replaces Go's builtin: lists only, a string is an error.
        "slice" => {
            if n == 0 {
                return Err("wrong number of args for slice: want at least 1 got 0".into());
            }
            let idx: Vec<i64> = a[1..].iter().map(i_arg).collect::<Result<_, _>>()?;
            match &a[0] {
                Value::List(l) => {
                    let lo = *idx.first().unwrap_or(&0);
                    let hi = idx.get(1).copied().unwrap_or(l.len() as i64);
                    let range = usize::try_from(lo)
                        .ok()
                        .zip(usize::try_from(hi).ok())
                        .and_then(|(lo, hi)| l.get(lo..hi))
                        .ok_or("reflect.Value.Slice: slice index out of bounds")?;
                    Value::List(Rc::new(range.to_vec()))
                }
                other => {
                    return Err(format!(
                        "list should be type of slice or array but {}",
                        other.kind()
                    ));
                }
            }
        }
        "print" => Value::str(sprint(&a, data)),
        "println" => {
            let mut out = String::new();
            for (k, v) in a.iter().enumerate() {
                if k > 0 {
                    out.push(' ');
                }
                print_value(v, data, &mut out);
            }
            out.push('\n');
            Value::str(out)
        }
        "printf" => {
            let f = s(0)?;
            Value::str(sprintf(&f, &a[1..], data))
        }
        "eq" => {
            if n < 2 {
                return Err("missing argument for comparison".into());
            }
            let mut any = false;
            for b in &a[1..] {
                if basic_eq(&a[0], b)? {
                    any = true;
                    break;
                }
            }
            Value::Bool(any)
        }
        "ne" => {
            want(&a, 2)?;
            Value::Bool(!basic_eq(&a[0], &a[1])?)
        }
        "lt" => {
            want(&a, 2)?;
            Value::Bool(basic_lt(&a[0], &a[1])?)
        }
        "le" => {
            want(&a, 2)?;
            Value::Bool(basic_lt(&a[0], &a[1])? || basic_eq(&a[0], &a[1])?)
        }
        "gt" => {
            want(&a, 2)?;
            Value::Bool(!(basic_lt(&a[0], &a[1])? || basic_eq(&a[0], &a[1])?))
        }
        "ge" => {
            want(&a, 2)?;
            Value::Bool(!basic_lt(&a[0], &a[1])?)
        }
        "html" => {
            let t = sprint(&a, data);
            let mut o = String::with_capacity(t.len());
            for c in t.chars() {
                match c {
                    '<' => o.push_str("&lt;"),
                    '>' => o.push_str("&gt;"),
                    '&' => o.push_str("&amp;"),
                    '"' => o.push_str("&#34;"),
                    '\'' => o.push_str("&#39;"),
                    '\0' => o.push('\u{FFFD}'),
                    c => o.push(c),
                }
            }
            Value::str(o)
        }
        "js" => {
            let t = sprint(&a, data);
            let mut o = String::with_capacity(t.len());
            for c in t.chars() {
                match c {
                    '\\' => o.push_str("\\\\"),
                    '\'' => o.push_str("\\'"),
                    '"' => o.push_str("\\\""),
                    '<' => o.push_str("\\u003C"),
                    '>' => o.push_str("\\u003E"),
                    '&' => o.push_str("\\u0026"),
                    '=' => o.push_str("\\u003D"),
                    '\n' => o.push_str("\\n"),
                    '\r' => o.push_str("\\r"),
                    '\t' => o.push_str("\\t"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(o, "\\u{:04X}", c as u32);
                    }
                    c => o.push(c),
                }
            }
            Value::str(o)
        }
        "urlquery" => {
            let t = sprint(&a, data);
            let mut o = String::new();
            for b in t.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        o.push(b as char)
                    }
                    b' ' => o.push('+'),
                    b => {
                        let _ = write!(o, "%{b:02X}");
                    }
                }
            }
            Value::str(o)
        }

        // --- Promtail
        "ToLower" | "lower" => {
            want(&a, 1)?;
            Value::str(s(0)?.to_lowercase())
        }
        "ToUpper" | "upper" => {
            want(&a, 1)?;
            Value::str(s(0)?.to_uppercase())
        }
        "Replace" => {
            want(&a, 4)?;
            Value::str(go_replace(&s(0)?, &s(1)?, &s(2)?, i(3)?))
        }
        "Trim" => {
            want(&a, 2)?;
            let cut = s(1)?;
            Value::str(s(0)?.trim_matches(|c| cut.contains(c)))
        }
        "TrimLeft" => {
            want(&a, 2)?;
            let cut = s(1)?;
            Value::str(s(0)?.trim_start_matches(|c| cut.contains(c)))
        }
        "TrimRight" => {
            want(&a, 2)?;
            let cut = s(1)?;
            Value::str(s(0)?.trim_end_matches(|c| cut.contains(c)))
        }
        "TrimPrefix" => {
            want(&a, 2)?;
            let (v, p) = (s(0)?, s(1)?);
            Value::str(v.strip_prefix(&*p).unwrap_or(&v))
        }
        "TrimSuffix" => {
            want(&a, 2)?;
            let (v, p) = (s(0)?, s(1)?);
            Value::str(v.strip_suffix(&*p).unwrap_or(&v))
        }
        "TrimSpace" => {
            want(&a, 1)?;
            Value::str(s(0)?.trim())
        }
        "Hash" | "Sha2Hash" => {
            want(&a, 2)?;
            let mut input = s(0)?.to_string();
            input.push_str(&s(1)?);
            if name == "Hash" {
                use sha3::Digest as _;
                Value::str(hex(&sha3::Sha3_256::digest(input.as_bytes())))
            } else {
                use sha2::Digest as _;
                Value::str(hex(&sha2::Sha256::digest(input.as_bytes())))
            }
        }
        "regexReplaceAll" | "mustRegexReplaceAll" => {
            want(&a, 3)?;
            let re = regex(&s(0)?)?;
            Value::str(re.replace_all(&s(1)?, &*s(2)?).into_owned())
        }
        "regexReplaceAllLiteral" | "mustRegexReplaceAllLiteral" => {
            want(&a, 3)?;
            let re = regex(&s(0)?)?;
            Value::str(re.replace_all(&s(1)?, regex::NoExpand(&s(2)?)).into_owned())
        }

        // --- Sprig strings
        "trim" => {
            want(&a, 1)?;
            Value::str(s(0)?.trim())
        }
        "trimAll" => {
            want(&a, 2)?;
            let cut = s(0)?;
            Value::str(s(1)?.trim_matches(|c| cut.contains(c)))
        }
        "trimPrefix" => {
            want(&a, 2)?;
            let (p, v) = (s(0)?, s(1)?);
            Value::str(v.strip_prefix(&*p).unwrap_or(&v))
        }
        "trimSuffix" => {
            want(&a, 2)?;
            let (p, v) = (s(0)?, s(1)?);
            Value::str(v.strip_suffix(&*p).unwrap_or(&v))
        }
        "title" => {
            want(&a, 1)?;
            let mut out = String::new();
            let mut prev_letter = false;
            for c in s(0)?.chars() {
                if !prev_letter && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
            }
            Value::str(out)
        }
        "untitle" => {
            want(&a, 1)?;
            let mut out = String::new();
            let mut prev_space = true;
            for c in s(0)?.chars() {
                if prev_space && c.is_alphabetic() {
                    out.extend(c.to_lowercase());
                } else {
                    out.push(c);
                }
                prev_space = c.is_whitespace();
            }
            Value::str(out)
        }
        "repeat" => {
            want(&a, 2)?;
            let count = i(0)?;
            if !(0..=1 << 20).contains(&count) {
                return Err("repeat count out of range".into());
            }
            Value::str(s(1)?.repeat(count as usize))
        }
        "substr" => {
            want(&a, 3)?;
            let (start, end, v) = (i(0)?, i(1)?, s(2)?);
            let len = v.len() as i64;
            // Sprig slices the string directly: bounds Go's slicing refuses fail the template.
            let (lo, hi) = if start < 0 {
                (0, end)
            } else if end < 0 || end > len {
                (start, len)
            } else {
                (start, end)
            };
            if lo > hi || hi > len || hi < 0 {
                return Err(format!("slice bounds out of range [{lo}:{hi}]"));
            }
            Value::str(byte_slice(&v, lo as usize, hi as usize))
        }
        "nospace" => {
            want(&a, 1)?;
            Value::str(
                s(0)?
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>(),
            )
        }
        "trunc" => {
            want(&a, 2)?;
            let (c, v) = (i(0)?, s(1)?);
            let len = v.len() as i64;
            Value::str(if c < 0 && len + c > 0 {
                byte_slice(&v, (len + c) as usize, len as usize)
            } else if c >= 0 && len > c {
                byte_slice(&v, 0, c as usize)
            } else {
                v.to_string()
            })
        }
        "abbrev" => {
            want(&a, 2)?;
            let (w, v) = (i(0)?, s(1)?);
            let chars: Vec<char> = v.chars().collect();
            Value::str(if w < 4 || chars.len() as i64 <= w {
                v.to_string()
            } else {
                chars[..(w - 3) as usize].iter().collect::<String>() + "..."
            })
        }
        "abbrevboth" => {
            want(&a, 3)?;
            let (l, w, v) = (i(0)?, i(1)?, s(2)?);
            let chars: Vec<char> = v.chars().collect();
            let len = chars.len() as i64;
            if w < 4 || len <= w {
                Value::str(v)
            } else {
                // As Sprig's (goutils') AbbreviateFull: an offset near the start abbreviates
                // the right end only, one near the end the left end only.
                let mut l = l.clamp(0, len);
                if len - l < w - 3 {
                    l = len - (w - 3);
                }
                let take = |from: i64, n: i64| -> String {
                    chars[from as usize..(from + n).min(len) as usize]
                        .iter()
                        .collect()
                };
                if l <= 4 {
                    Value::str(take(0, w - 3) + "...")
                } else if w < 7 {
                    return Err("minimum abbreviation width with offset is 7".into());
                } else if l + w - 3 < len {
                    let inner = w - 3;
                    let rest = len - l;
                    let body = if rest > inner {
                        take(l, inner - 3) + "..."
                    } else {
                        take(l, rest)
                    };
                    Value::str(format!("...{body}"))
                } else {
                    Value::str(format!("...{}", take(len - (w - 3), w - 3)))
                }
            }
        }
        "initials" => {
            want(&a, 1)?;
            Value::str(
                s(0)?
                    .split_whitespace()
                    .filter_map(|w| w.chars().next())
                    .collect::<String>(),
            )
        }
        "contains" => {
            want(&a, 2)?;
            Value::Bool(s(1)?.contains(&*s(0)?))
        }
        "hasPrefix" => {
            want(&a, 2)?;
            Value::Bool(s(1)?.starts_with(&*s(0)?))
        }
        "hasSuffix" => {
            want(&a, 2)?;
            Value::Bool(s(1)?.ends_with(&*s(0)?))
        }
        "quote" | "squote" => {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Missing | Value::Nil))
                .map(|v| {
                    let t = to_str(v);
                    if name == "quote" {
                        let mut q = String::new();
                        crate::labels::go_quote_into(&t, &mut q);
                        q
                    } else {
                        format!("'{t}'")
                    }
                })
                .collect();
            Value::str(parts.join(" "))
        }
        "cat" => {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Missing | Value::Nil))
                .map(to_str)
                .collect();
            Value::str(parts.join(" "))
        }
        "indent" | "nindent" => {
            want(&a, 2)?;
            let pad = " ".repeat(i(0)?.clamp(0, 1 << 16) as usize);
            let body = format!("{pad}{}", s(1)?.replace('\n', &format!("\n{pad}")));
            Value::str(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            })
        }
        "replace" => {
            want(&a, 3)?;
            Value::str(go_replace(&s(2)?, &s(0)?, &s(1)?, -1))
        }
        "plural" => {
            want(&a, 3)?;
            Value::str(if i(2)? == 1 { s(0)? } else { s(1)? })
        }
        "snakecase" | "kebabcase" => {
            want(&a, 1)?;
            let sep = if name == "snakecase" { '_' } else { '-' };
            Value::str(split_words(&s(0)?).join(&sep.to_string()))
        }
        "camelcase" => {
            want(&a, 1)?;
            let v = s(0)?;
            Value::str(
                v.split(['_', ' ', '-'])
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect::<String>())
                            .unwrap_or_default()
                    })
                    .collect::<String>(),
            )
        }
        "swapcase" => {
            want(&a, 1)?;
            Value::str(
                s(0)?
                    .chars()
                    .flat_map(|c| {
                        if c.is_uppercase() {
                            c.to_lowercase().collect::<Vec<_>>()
                        } else {
                            c.to_uppercase().collect::<Vec<_>>()
                        }
                    })
                    .collect::<String>(),
            )
        }
        "wrap" | "wrapWith" => {
            let (w, sep, v) = if name == "wrap" {
                want(&a, 2)?;
                (i(0)?, Rc::from("\n"), s(1)?)
            } else {
                want(&a, 3)?;
                (i(0)?, s(1)?, s(2)?)
            };
            Value::str(wrap_words(&v, w.max(1) as usize, &sep))
        }
        "toString" => {
            want(&a, 1)?;
            Value::str(to_str(&a[0]))
        }
        "toStrings" => {
            want(&a, 1)?;
            strs(list_arg(&a[0])?.iter().map(to_str).collect())
        }
        "split" => {
            want(&a, 2)?;
            let (sep, v) = (s(0)?, s(1)?);
            let m: BTreeMap<String, Value> = go_split(&v, &sep, -1)
                .into_iter()
                .enumerate()
                .map(|(k, p)| (format!("_{k}"), Value::str(p)))
                .collect();
            Value::Map(Rc::new(m))
        }
        "splitList" => {
            want(&a, 2)?;
            strs(go_split(&s(1)?, &s(0)?, -1))
        }
        "splitn" => {
            want(&a, 3)?;
            let (sep, count, v) = (s(0)?, i(1)?, s(2)?);
            let m: BTreeMap<String, Value> = go_split(&v, &sep, count)
                .into_iter()
                .enumerate()
                .map(|(k, p)| (format!("_{k}"), Value::str(p)))
                .collect();
            Value::Map(Rc::new(m))
        }
        "join" => {
            want(&a, 2)?;
            let sep = s(0)?;
            let parts: Vec<String> = match &a[1] {
                Value::List(l) => l.iter().map(to_str).collect(),
                other => vec![to_str(other)],
            };
            Value::str(parts.join(&sep))
        }
        "sortAlpha" => {
            want(&a, 1)?;
            let mut v: Vec<String> = list_arg(&a[0])?.iter().map(to_str).collect();
            v.sort();
            strs(v)
        }

        // --- Sprig regular expressions
        "regexMatch" | "mustRegexMatch" => {
            want(&a, 2)?;
            Value::Bool(regex(&s(0)?)?.is_match(&s(1)?))
        }
        "regexFind" | "mustRegexFind" => {
            want(&a, 2)?;
            let v = s(1)?;
            Value::str(regex(&s(0)?)?.find(&v).map(|m| m.as_str()).unwrap_or(""))
        }
        "regexFindAll" | "mustRegexFindAll" => {
            want(&a, 3)?;
            let v = s(1)?;
            let re = regex(&s(0)?)?;
            let limit = i(2)?;
            let it = re.find_iter(&v).map(|m| m.as_str().to_string());
            strs(if limit < 0 {
                it.collect()
            } else {
                it.take(limit as usize).collect()
            })
        }
        "regexSplit" | "mustRegexSplit" => {
            want(&a, 3)?;
            let v = s(1)?;
            let re = regex(&s(0)?)?;
            let limit = i(2)?;
            strs(if limit < 0 {
                re.split(&v).map(str::to_string).collect()
            } else if limit == 0 {
                vec![]
            } else {
                re.splitn(&v, limit as usize).map(str::to_string).collect()
            })
        }
        "regexQuoteMeta" => {
            want(&a, 1)?;
            Value::str(regex::escape(&s(0)?))
        }

        // --- Sprig defaults, conversions, types
        "default" => {
            if n == 0 {
                return Err("wrong number of args for default".into());
            }
            if n == 1 || empty(&a[1]) {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        "empty" => {
            want(&a, 1)?;
            Value::Bool(empty(&a[0]))
        }
        "coalesce" => a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil),
        "all" => Value::Bool(a.iter().all(|v| !empty(v))),
        "any" => Value::Bool(a.iter().any(|v| !empty(v))),
        "ternary" => {
            want(&a, 3)?;
            if truth(&a[2], data) {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        "fromJson" | "mustFromJson" => {
            want(&a, 1)?;
            match serde_json::from_str::<serde_json::Value>(&s(0)?) {
                Ok(j) => from_json(&j),
                Err(e) if name == "mustFromJson" => return Err(e.to_string()),
                Err(_) => Value::Map(Rc::new(BTreeMap::new())),
            }
        }
        "toJson" | "mustToJson" | "toRawJson" | "mustToRawJson" => {
            want(&a, 1)?;
            let mut out = String::new();
            let j = to_json(&a[0], data);
            if name.contains("Raw") {
                out = serde_json::to_string(&j).unwrap_or_default();
            } else {
                crate::pipeline::value::go_json_value(&j, &mut out);
            }
            Value::str(out)
        }
        "toPrettyJson" | "mustToPrettyJson" => {
            want(&a, 1)?;
            Value::str(serde_json::to_string_pretty(&to_json(&a[0], data)).unwrap_or_default())
        }
        "atoi" => {
            want(&a, 1)?;
            Value::Int(s(0)?.trim().parse().unwrap_or(0))
        }
        "int" | "int64" => {
            want(&a, 1)?;
            Value::Int(match &a[0] {
                // A string must be a whole number (with an optional base prefix), else 0.
                Value::Str(v) => parse_go_int(v.trim()).unwrap_or(0),
                other => to_i64(other),
            })
        }
        "float64" | "toDecimal" => {
            want(&a, 1)?;
            if name == "toDecimal" {
                Value::Int(i64::from_str_radix(&to_str(&a[0]), 8).unwrap_or(0))
            } else {
                Value::Float(to_f64(&a[0]))
            }
        }
        "kindOf" => {
            want(&a, 1)?;
            Value::str(a[0].kind())
        }
        "kindIs" => {
            want(&a, 2)?;
            Value::Bool(*s(0)? == *a[1].kind())
        }
        "typeOf" => {
            want(&a, 1)?;
            Value::str(a[0].type_name())
        }
        "typeIs" => {
            want(&a, 2)?;
            Value::Bool(*s(0)? == *a[1].type_name())
        }
        "deepEqual" => {
            want(&a, 2)?;
            Value::Bool(to_json(&a[0], data) == to_json(&a[1], data))
        }
        "fail" => return Err(s(0).map(|m| m.to_string()).unwrap_or_default()),
        "required" => {
            want(&a, 2)?;
            if matches!(a[1], Value::Missing | Value::Nil)
                || matches!(&a[1], Value::Str(v) if v.is_empty())
            {
                return Err(s(0)?.to_string());
            }
            a[1].clone()
        }

        // --- Sprig math
        "add" => Value::Int(a.iter().map(to_i64).fold(0i64, |x, y| x.wrapping_add(y))),
        "add1" => {
            want(&a, 1)?;
            Value::Int(to_i64(&a[0]).wrapping_add(1))
        }
        "sub" => {
            want(&a, 2)?;
            Value::Int(to_i64(&a[0]).wrapping_sub(to_i64(&a[1])))
        }
        "mul" => Value::Int(a.iter().map(to_i64).fold(1i64, |x, y| x.wrapping_mul(y))),
        "div" | "mod" => {
            want(&a, 2)?;
            let d = to_i64(&a[1]);
            if d == 0 {
                return Err("integer divide by zero".into());
            }
            Value::Int(if name == "div" {
                to_i64(&a[0]).wrapping_div(d)
            } else {
                to_i64(&a[0]).wrapping_rem(d)
            })
        }
        "max" | "min" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            let it = a.iter().map(to_i64);
            Value::Int(if name == "max" {
                it.max().unwrap_or(0)
            } else {
                it.min().unwrap_or(0)
            })
        }
        "floor" => {
            want(&a, 1)?;
            Value::Float(to_f64(&a[0]).floor())
        }
        "ceil" => {
            want(&a, 1)?;
            Value::Float(to_f64(&a[0]).ceil())
        }
        "round" => {
            if !(2..=3).contains(&n) {
                return Err("wrong number of args for round".into());
            }
            let p = 10f64.powi(to_i64(&a[1]) as i32);
            let half = if n == 3 { to_f64(&a[2]) } else { 0.5 };
            let x = to_f64(&a[0]) * p;
            let r = if x.fract().abs() >= half {
                x.trunc() + x.signum()
            } else {
                x.trunc()
            };
            Value::Float(r / p)
        }
        "addf" => Value::Float(a.iter().map(to_f64).sum()),
        "add1f" => {
            want(&a, 1)?;
            Value::Float(to_f64(&a[0]) + 1.0)
        }
        "subf" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            Value::Float(a[1..].iter().map(to_f64).fold(to_f64(&a[0]), |x, y| x - y))
        }
        "mulf" => Value::Float(a.iter().map(to_f64).product()),
        "divf" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            Value::Float(a[1..].iter().map(to_f64).fold(to_f64(&a[0]), |x, y| x / y))
        }
        "maxf" | "minf" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            let it = a.iter().map(to_f64);
            Value::Float(if name == "maxf" {
                it.fold(f64::NEG_INFINITY, f64::max)
            } else {
                it.fold(f64::INFINITY, f64::min)
            })
        }
        "until" | "untilStep" | "seq" => {
            let (start, stop, step) = match (name, n) {
                ("until", 1) => (0, to_i64(&a[0]), 1),
                ("untilStep", 3) => (to_i64(&a[0]), to_i64(&a[1]), to_i64(&a[2])),
                // Sprig's `seq` counts towards its (inclusive) end in either direction; with a
                // step that points away from the end it prints nothing.
                ("seq", 1 | 2) => {
                    let (start, end) = if n == 1 {
                        (1, to_i64(&a[0]))
                    } else {
                        (to_i64(&a[0]), to_i64(&a[1]))
                    };
                    if end >= start {
                        (start, end + 1, 1)
                    } else {
                        (start, end - 1, -1)
                    }
                }
                ("seq", 3) => {
                    let (start, step, end) = (to_i64(&a[0]), to_i64(&a[1]), to_i64(&a[2]));
                    if (end < start && step > 0) || (end > start && step < 0) {
                        (0, 0, 1)
                    } else if end >= start {
                        (start, end + 1, step)
                    } else {
                        (start, end - 1, step)
                    }
                }
                _ => return Err("wrong number of args".into()),
            };
            let step = if step == 0 { 1 } else { step };
            let mut v = Vec::new();
            let mut x = start;
            while (step > 0 && x < stop) || (step < 0 && x > stop) {
                if v.len() >= 1 << 20 {
                    return Err("sequence too long".into());
                }
                v.push(Value::Int(x));
                x += step;
            }
            if name == "seq" {
                Value::str(v.iter().map(to_str).collect::<Vec<_>>().join(" "))
            } else {
                Value::List(Rc::new(v))
            }
        }

        // --- Sprig encodings
        "b64enc" => {
            want(&a, 1)?;
            Value::str(base64::engine::general_purpose::STANDARD.encode(s(0)?.as_bytes()))
        }
        "b64dec" => {
            want(&a, 1)?;
            match base64::engine::general_purpose::STANDARD.decode(s(0)?.as_bytes()) {
                Ok(b) => Value::str(String::from_utf8_lossy(&b).into_owned()),
                // Sprig returns Go's error text as the result.
                Err(
                    base64::DecodeError::InvalidByte(at, _)
                    | base64::DecodeError::InvalidLastSymbol(at, _),
                ) => Value::str(format!("illegal base64 data at input byte {at}")),
                Err(_) => Value::str(format!("illegal base64 data at input byte {}", s(0)?.len())),
            }
        }
        "b32enc" => {
            want(&a, 1)?;
            Value::str(base32_encode(s(0)?.as_bytes()))
        }
        "b32dec" => {
            want(&a, 1)?;
            match base32_decode(&s(0)?) {
                Some(b) => Value::str(String::from_utf8_lossy(&b).into_owned()),
                None => Value::str("illegal base32 data"),
            }
        }
        "sha256sum" => {
            want(&a, 1)?;
            use sha2::Digest as _;
            Value::str(hex(&sha2::Sha256::digest(s(0)?.as_bytes())))
        }
        "sha1sum" => {
            want(&a, 1)?;
            Value::str(hex(&super::sprig_extra::sha1(s(0)?.as_bytes())))
        }
        "encryptAES" => {
            want(&a, 2)?;
            Value::str(super::sprig_extra::encrypt_aes(&s(0)?, &s(1)?)?)
        }
        "decryptAES" => {
            want(&a, 2)?;
            Value::str(super::sprig_extra::decrypt_aes(&s(0)?, &s(1)?)?)
        }
        "adler32sum" => {
            want(&a, 1)?;
            Value::str(super::sprig_extra::adler32(s(0)?.as_bytes()).to_string())
        }
        "urlParse" => {
            want(&a, 1)?;
            let u = super::sprig_extra::parse_url(&s(0)?);
            let mut m = BTreeMap::new();
            for (k, v) in [
                ("scheme", u.scheme),
                ("host", u.host),
                ("hostname", u.hostname),
                ("path", u.path),
                ("query", u.query),
                ("opaque", u.opaque),
                ("fragment", u.fragment),
                ("userinfo", u.userinfo),
            ] {
                m.insert(k.to_string(), Value::str(v));
            }
            Value::Map(Rc::new(m))
        }
        "urlJoin" => {
            want(&a, 1)?;
            let m = map_arg(&a[0], data)?;
            let part = |k: &str| m.get(k).map(to_str).unwrap_or_default();
            let mut out = String::new();
            if !part("scheme").is_empty() {
                out.push_str(&part("scheme"));
                out.push(':');
            }
            if !part("opaque").is_empty() {
                out.push_str(&part("opaque"));
            } else {
                if !part("host").is_empty() || !part("userinfo").is_empty() {
                    out.push_str("//");
                    if !part("userinfo").is_empty() {
                        out.push_str(&part("userinfo"));
                        out.push('@');
                    }
                    out.push_str(&part("host"));
                }
                out.push_str(&part("path"));
            }
            if !part("query").is_empty() {
                out.push('?');
                out.push_str(&part("query"));
            }
            if !part("fragment").is_empty() {
                out.push('#');
                out.push_str(&part("fragment"));
            }
            Value::str(out)
        }
        "uuidv4" => {
            want(&a, 0)?;
            Value::str(super::sprig_extra::uuid_v4())
        }
        "randAlphaNum" | "randAlpha" | "randNumeric" | "randAscii" => {
            want(&a, 1)?;
            let alphabet: &[u8] = match name {
                "randAlphaNum" => {
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                }
                "randAlpha" => b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                "randNumeric" => b"0123456789",
                _ => b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
            };
            let n = usize::try_from(to_i64(&a[0]).clamp(0, 1 << 20)).unwrap_or(0);
            Value::str(super::sprig_extra::random_string(n, alphabet))
        }
        "randInt" => {
            want(&a, 2)?;
            let (lo, hi) = (to_i64(&a[0]), to_i64(&a[1]));
            if hi <= lo {
                return Err("invalid argument to Int63n".into());
            }
            let span = hi.wrapping_sub(lo) as u64;
            Value::Int(lo.wrapping_add((super::sprig_extra::random_u64() % span) as i64))
        }
        "shuffle" => {
            want(&a, 1)?;
            let mut chars: Vec<char> = s(0)?.chars().collect();
            for i in (1..chars.len()).rev() {
                let j = (super::sprig_extra::random_u64() % (i as u64 + 1)) as usize;
                chars.swap(i, j);
            }
            Value::str(chars.into_iter().collect::<String>())
        }
        "chunk" => {
            want(&a, 2)?;
            let size = to_i64(&a[0]);
            let items = list_arg(&a[1])?;
            if size < 1 {
                return Err("chunk size must be at least 1".into());
            }
            Value::List(Rc::new(
                items
                    .chunks(size as usize)
                    .map(|c| Value::List(Rc::new(c.to_vec())))
                    .collect(),
            ))
        }
        "durationRound" => {
            want(&a, 1)?;
            let secs = match &a[0] {
                Value::Str(d) => crate::pipeline::value::go_duration_seconds(d).unwrap_or(0.0),
                other => to_i64(other) as f64 / 1e9,
            }
            .abs() as u64;
            const UNITS: [(u64, &str); 6] = [
                (365 * 86400, "y"),
                (30 * 86400, "mo"),
                (86400, "d"),
                (3600, "h"),
                (60, "m"),
                (1, "s"),
            ];
            Value::str(
                UNITS
                    .iter()
                    .find(|(u, _)| secs > *u)
                    .map_or("0s".to_string(), |(u, name)| format!("{}{name}", secs / u)),
            )
        }

        // --- Sprig lists and dicts
        "list" | "tuple" => Value::List(Rc::new(a)),
        "first" | "mustFirst" => {
            want(&a, 1)?;
            list_arg(&a[0])?.first().cloned().unwrap_or(Value::Nil)
        }
        "last" | "mustLast" => {
            want(&a, 1)?;
            list_arg(&a[0])?.last().cloned().unwrap_or(Value::Nil)
        }
        "rest" | "mustRest" => {
            want(&a, 1)?;
            let l = list_arg(&a[0])?;
            Value::List(Rc::new(l.iter().skip(1).cloned().collect()))
        }
        "initial" | "mustInitial" => {
            want(&a, 1)?;
            let l = list_arg(&a[0])?;
            Value::List(Rc::new(
                l.iter().take(l.len().saturating_sub(1)).cloned().collect(),
            ))
        }
        "append" | "mustAppend" | "push" | "mustPush" => {
            want(&a, 2)?;
            let mut l = (*list_arg(&a[0])?).clone();
            l.push(a[1].clone());
            Value::List(Rc::new(l))
        }
        "prepend" | "mustPrepend" => {
            want(&a, 2)?;
            let mut l = vec![a[1].clone()];
            l.extend(list_arg(&a[0])?.iter().cloned());
            Value::List(Rc::new(l))
        }
        "concat" => {
            let mut l = Vec::new();
            for v in &a {
                l.extend(list_arg(v)?.iter().cloned());
            }
            Value::List(Rc::new(l))
        }
        "reverse" | "mustReverse" => {
            want(&a, 1)?;
            let mut l = (*list_arg(&a[0])?).clone();
            l.reverse();
            Value::List(Rc::new(l))
        }
        "uniq" | "mustUniq" => {
            want(&a, 1)?;
            let mut out: Vec<Value> = Vec::new();
            for v in list_arg(&a[0])?.iter() {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Value::List(Rc::new(out))
        }
        "has" | "mustHas" => {
            want(&a, 2)?;
            Value::Bool(list_arg(&a[1])?.contains(&a[0]))
        }
        "without" | "mustWithout" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            let l = list_arg(&a[0])?;
            Value::List(Rc::new(
                l.iter().filter(|v| !a[1..].contains(v)).cloned().collect(),
            ))
        }
        "compact" | "mustCompact" => {
            want(&a, 1)?;
            Value::List(Rc::new(
                list_arg(&a[0])?
                    .iter()
                    .filter(|v| !empty(v))
                    .cloned()
                    .collect(),
            ))
        }
        "dict" => {
            let mut m = BTreeMap::new();
            for pair in a.chunks(2) {
                let k = to_str(&pair[0]);
                m.insert(k, pair.get(1).cloned().unwrap_or(Value::str("")));
            }
            Value::Map(Rc::new(m))
        }
        "get" => {
            want(&a, 2)?;
            let m = map_arg(&a[0], data)?;
            m.get(&*s(1)?).cloned().unwrap_or(Value::str(""))
        }
        "set" => {
            want(&a, 3)?;
            let mut m = map_arg(&a[0], data)?;
            m.insert(s(1)?.to_string(), a[2].clone());
            Value::Map(Rc::new(m))
        }
        "unset" => {
            want(&a, 2)?;
            let mut m = map_arg(&a[0], data)?;
            m.remove(&*s(1)?);
            Value::Map(Rc::new(m))
        }
        "hasKey" => {
            want(&a, 2)?;
            Value::Bool(map_arg(&a[0], data)?.contains_key(&*s(1)?))
        }
        "keys" => {
            let mut k: Vec<String> = Vec::new();
            for m in &a {
                k.extend(map_arg(m, data)?.into_keys());
            }
            strs(k)
        }
        "values" => {
            want(&a, 1)?;
            Value::List(Rc::new(map_arg(&a[0], data)?.into_values().collect()))
        }
        "pick" | "omit" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            let m = map_arg(&a[0], data)?;
            let names: Vec<String> = a[1..].iter().map(to_str).collect();
            let keep = name == "pick";
            Value::Map(Rc::new(
                m.into_iter()
                    .filter(|(k, _)| names.contains(k) == keep)
                    .collect(),
            ))
        }
        "pluck" => {
            if n == 0 {
                return Err("wrong number of args".into());
            }
            let key = s(0)?;
            let mut out = Vec::new();
            for m in &a[1..] {
                if let Some(v) = map_arg(m, data)?.get(&*key) {
                    out.push(v.clone());
                }
            }
            Value::List(Rc::new(out))
        }
        "dig" => {
            if n < 3 {
                return Err("dig needs keys, a default and a dict".into());
            }
            let mut v = a[n - 1].clone();
            for k in &a[..n - 2] {
                match map_arg(&v, data)
                    .ok()
                    .and_then(|m| m.get(&to_str(k)).cloned())
                {
                    Some(x) => v = x,
                    None => return Ok(a[n - 2].clone()),
                }
            }
            v
        }

        // --- Sprig dates
        "now" => Value::Time(crate::entry::Timestamp::now().0),
        "date" | "dateInZone" | "date_in_zone" | "htmlDate" | "htmlDateInZone" => {
            let (fmt, t, zone) = match name {
                "date" => {
                    want(&a, 2)?;
                    (s(0)?.to_string(), &a[1], None)
                }
                "htmlDate" => {
                    want(&a, 1)?;
                    ("2006-01-02".to_string(), &a[0], None)
                }
                "htmlDateInZone" => {
                    want(&a, 2)?;
                    ("2006-01-02".to_string(), &a[0], Some(s(1)?))
                }
                _ => {
                    want(&a, 3)?;
                    (s(0)?.to_string(), &a[1], Some(s(2)?))
                }
            };
            let zone = match zone {
                Some(z) => crate::pipeline::gotime::Zone::load(&z)
                    .unwrap_or(crate::pipeline::gotime::Zone::Utc),
                None => crate::pipeline::gotime::Zone::local(),
            };
            let ns = time_of(t);
            Value::str(
                crate::pipeline::gotime::Layout::new(&fmt)
                    .format(crate::entry::Timestamp::from_nanos(ns), &zone),
            )
        }
        "unixEpoch" => {
            want(&a, 1)?;
            Value::str(time_of(&a[0]).div_euclid(1_000_000_000).to_string())
        }
        "toDate" | "mustToDate" => {
            want(&a, 2)?;
            let layout = crate::pipeline::gotime::Layout::new(&s(0)?);
            match layout.parse(&s(1)?, &crate::pipeline::gotime::Zone::local()) {
                Ok(t) => Value::Time(t.0),
                Err(e) if name == "mustToDate" => return Err(e),
                Err(_) => Value::Time(i64::MIN),
            }
        }
        "duration" => {
            want(&a, 1)?;
            Value::str(go_duration(to_i64(&a[0]).saturating_mul(1_000_000_000)))
        }
        "ago" => {
            want(&a, 1)?;
            let d = crate::entry::Timestamp::now().0 - time_of(&a[0]);
            Value::str(go_duration(d / 1_000_000_000 * 1_000_000_000))
        }

        // --- Sprig versions
        "semver" => {
            want(&a, 1)?;
            Value::Semver(Rc::new(semver::Version::parse(&s(0)?)?))
        }
        "semverCompare" => {
            want(&a, 2)?;
            Value::Bool(semver::satisfies(&s(0)?, &s(1)?)?)
        }

        // --- Sprig OS and paths
        "env" => {
            want(&a, 1)?;
            Value::str(std::env::var(&*s(0)?).unwrap_or_default())
        }
        "expandenv" => {
            want(&a, 1)?;
            Value::str(crate::expand::expand_env(&s(0)?, |k| std::env::var(k).ok()))
        }
        "base" | "dir" | "ext" | "clean" | "isAbs" => {
            want(&a, 1)?;
            let p = s(0)?;
            match name {
                "isAbs" => Value::Bool(p.starts_with('/')),
                "ext" => {
                    let base = p.rsplit('/').next().unwrap_or("");
                    Value::str(base.rfind('.').map_or("", |k| &base[k..]))
                }
                "base" => {
                    let t = p.trim_end_matches('/');
                    Value::str(if p.is_empty() {
                        "."
                    } else if t.is_empty() {
                        "/"
                    } else {
                        t.rsplit('/').next().unwrap_or(t)
                    })
                }
                "dir" => {
                    let c = clean_path(&p);
                    Value::str(match c.rfind('/') {
                        Some(0) => "/".to_string(),
                        Some(k) => clean_path(&c[..k]),
                        None => ".".to_string(),
                    })
                }
                _ => Value::str(clean_path(&p)),
            }
        }
        _ => return Err(format!("function {name} not implemented")),
    })
}

fn byte_slice(s: &str, lo: usize, hi: usize) -> String {
    let b = s.as_bytes();
    let hi = hi.min(b.len());
    let lo = lo.min(hi);
    String::from_utf8_lossy(&b[lo..hi]).into_owned()
}

/// Go's `strings.Replace`.
fn go_replace(s: &str, old: &str, new: &str, n: i64) -> String {
    if n == 0 || (old == new) {
        return s.to_string();
    }
    if n < 0 {
        if old.is_empty() {
            let mut out = String::from(new);
            for c in s.chars() {
                out.push(c);
                out.push_str(new);
            }
            return out;
        }
        return s.replace(old, new);
    }
    if old.is_empty() {
        let mut out = String::new();
        let mut count = 0;
        let mut chars = s.chars();
        while count < n {
            out.push_str(new);
            count += 1;
            match chars.next() {
                Some(c) => out.push(c),
                None => return out,
            }
        }
        out.extend(chars);
        return out;
    }
    s.replacen(old, new, n as usize)
}

/// Go's `strings.SplitN` (n < 0: all).
fn go_split(s: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return vec![];
    }
    if sep.is_empty() {
        let chars: Vec<String> = s.chars().map(|c| c.to_string()).collect();
        if n > 0 && chars.len() as i64 > n {
            let mut v: Vec<String> = chars[..n as usize - 1].to_vec();
            v.push(chars[n as usize - 1..].concat());
            return v;
        }
        return chars;
    }
    if n < 0 {
        s.split(sep).map(str::to_string).collect()
    } else {
        s.splitn(n as usize, sep).map(str::to_string).collect()
    }
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c == '_' || c == '-' || c.is_whitespace() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn wrap_words(s: &str, width: usize, sep: &str) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for (k, w) in s.split(' ').enumerate() {
        if k > 0 {
            if line_len + 1 + w.len() > width {
                out.push_str(sep);
                line_len = 0;
            } else {
                out.push(' ');
                line_len += 1;
            }
        }
        out.push_str(w);
        line_len += w.len();
    }
    out
}

fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (abs, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

fn time_of(v: &Value) -> i64 {
    match v {
        Value::Time(ns) => *ns,
        other => to_i64(other).saturating_mul(1_000_000_000),
    }
}

/// Go's `time.Duration.String()`.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&trim_frac(u, div));
        out.push_str(unit);
    } else {
        let secs = u / 1_000_000_000;
        let (h, m) = (secs / 3600, (secs / 60) % 60);
        if h > 0 {
            let _ = write!(out, "{h}h");
        }
        if h > 0 || m > 0 {
            let _ = write!(out, "{m}m");
        }
        out.push_str(&trim_frac(u % 60_000_000_000, 1_000_000_000));
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

fn trim_frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

fn base32_encode(b: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in b.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            3 => 5,
            4 => 7,
            _ => 8,
        };
        for k in 0..8 {
            if k < chars {
                out.push(A[((bits >> (35 - 5 * k)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        } as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

fn from_json(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::str(s.as_str()),
        serde_json::Value::Array(a) => Value::List(Rc::new(a.iter().map(from_json).collect())),
        serde_json::Value::Object(o) => Value::Map(Rc::new(
            o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
        )),
    }
}

fn to_json(v: &Value, data: &dyn Data) -> serde_json::Value {
    match v {
        Value::Missing | Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Str(s) => serde_json::Value::String(s.to_string()),
        Value::List(l) => serde_json::Value::Array(l.iter().map(|e| to_json(e, data)).collect()),
        Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, e)| (k.clone(), to_json(e, data)))
                .collect(),
        ),
        Value::Root => serde_json::Value::Object(
            data.keys()
                .into_iter()
                .map(|k| {
                    let v = data.get(&k).unwrap_or_default();
                    (k, serde_json::Value::String(v))
                })
                .collect(),
        ),
        Value::Semver(v) => serde_json::Value::String(v.to_string()),
        Value::Time(ns) => serde_json::Value::String(
            crate::pipeline::gotime::Layout::new("2006-01-02T15:04:05.999999999Z07:00").format(
                crate::entry::Timestamp::from_nanos(*ns),
                &crate::pipeline::gotime::Zone::local(),
            ),
        ),
    }
}

/// `fmt.Sprint`: spaces between operands when neither is a string.
fn sprint(a: &[Value], data: &dyn Data) -> String {
    let mut out = String::new();
    for (k, v) in a.iter().enumerate() {
        if k > 0 && !matches!(v, Value::Str(_)) && !matches!(a[k - 1], Value::Str(_)) {
            out.push(' ');
        }
        print_value(v, data, &mut out);
    }
    out
}

/// `fmt.Sprintf` for the common verbs (`%v %s %d %q %x %X %o %b %c %t %f %F %e %E %g %G %T
/// %%`) with flags `-+# 0`, width and precision.
fn sprintf(f: &str, args: &[Value], data: &dyn Data) -> String {
    let mut out = String::new();
    let mut argi = 0;
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space, mut sharp) =
            (false, false, false, false, false);
        while let Some(&fc) = chars.peek() {
            match fc {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => sharp = true,
                _ => break,
            }
            chars.next();
        }
        let mut width: Option<usize> = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some((width.unwrap_or(0) * 10 + d as usize).min(1 << 16));
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            prec = Some(0);
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                prec = Some((prec.unwrap_or(0) * 10 + d as usize).min(1 << 10));
                chars.next();
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        let bad = || format!("%!{verb}({}={})", arg.type_name(), show(arg, data));
        let body: String = match (verb, arg) {
            ('v', _) => show(arg, data),
            ('T', _) => arg.type_name().to_string(),
            ('s', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_string(),
            },
            ('s', Value::List(_) | Value::Map(_)) => show(arg, data),
            ('q', Value::Str(s)) => {
                let mut q = String::new();
                crate::labels::go_quote_into(s, &mut q);
                q
            }
            ('d', Value::Int(i)) => {
                let mut s = i.to_string();
                if plus && *i >= 0 {
                    s.insert(0, '+');
                } else if space && *i >= 0 {
                    s.insert(0, ' ');
                }
                s
            }
            ('x', Value::Int(i)) => format!("{}{:x}", if sharp { "0x" } else { "" }, i),
            ('X', Value::Int(i)) => format!("{}{:X}", if sharp { "0X" } else { "" }, i),
            ('x', Value::Str(s)) => hex(s.as_bytes()),
            ('X', Value::Str(s)) => hex(s.as_bytes()).to_uppercase(),
            ('o', Value::Int(i)) => format!("{i:o}"),
            ('b', Value::Int(i)) => format!("{i:b}"),
            ('c', Value::Int(i)) => char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
            ('t', Value::Bool(b)) => b.to_string(),
            ('f' | 'F', Value::Float(x)) => format!("{:.*}", prec.unwrap_or(6), x),
            ('e' | 'E', Value::Float(x)) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), x);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                let r = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                if verb == 'E' { r.to_uppercase() } else { r }
            }
            ('g' | 'G', Value::Float(x)) => format_g(*x),
            _ => bad(),
        };
        let body = if plus && matches!(verb, 'f' | 'F' | 'e' | 'g') && !body.starts_with('-') {
            format!("+{body}")
        } else {
            body
        };
        match width {
            Some(w) if body.chars().count() < w => {
                let pad = w - body.chars().count();
                if minus {
                    out.push_str(&body);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else if zero && !matches!(verb, 's' | 'q' | 'v' | 'T' | 'c' | 't') {
                    let (sign, digits) = match body.strip_prefix(['-', '+']) {
                        Some(d) => (&body[..1], d),
                        None => ("", body.as_str()),
                    };
                    out.push_str(sign);
                    out.extend(std::iter::repeat_n('0', pad));
                    out.push_str(digits);
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, a) in args[argi..].iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", a.type_name(), show(a, data));
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
        let data: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Template::parse(t)?.execute(&data)
    }

    fn ok(t: &str, pairs: &[(&str, &str)]) -> String {
        run(t, pairs).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn text_fields_and_missing() {
        assert_eq!(ok("hello world!", &[]), "hello world!");
        assert_eq!(
            ok("{{ .Value }}_some_suffix", &[("Value", "loki")]),
            "loki_some_suffix"
        );
        assert_eq!(ok("{{ .nope }}", &[]), "<no value>");
        assert!(run("{{ .a.b }}", &[("a", "x")]).is_err());
        assert_eq!(ok("{{ . }}", &[("a", "1"), ("b", "2")]), "map[a:1 b:2]");
        assert_eq!(ok("{{ $ }}", &[("a", "1")]), "map[a:1]");
    }

    #[test]
    fn promtail_functions() {
        let d = [
            ("Value", "LOKI"),
            ("app", "loki"),
            ("level", "warn"),
            ("module", "test"),
        ];
        assert_eq!(ok("{{ ToLower .Value }}", &d), "loki");
        assert_eq!(ok("{{ .app | ToUpper }}", &d), "LOKI");
        assert_eq!(
            ok(
                "{{ .level }} for app {{ ToUpper .app }} in module {{.module}}",
                &d
            ),
            "warn for app LOKI in module test"
        );
        assert_eq!(
            ok(
                r#"{{ Replace .Value "loki" "blokey" 1 }}"#,
                &[("Value", "loki loki")]
            ),
            "blokey loki"
        );
        assert_eq!(
            ok(
                r#"{{ Replace .Value "loki" "Loki" 2 }}"#,
                &[("Value", "loki loki loki")]
            ),
            "Loki Loki loki"
        );
        assert_eq!(
            ok(r#"{{ Trim .Value ",. " }}"#, &[("Value", ",. a b .,")]),
            "a b"
        );
        assert_eq!(
            ok(r#"{{ TrimLeft .Value "x" }}"#, &[("Value", "xxaxx")]),
            "axx"
        );
        assert_eq!(
            ok(r#"{{ TrimRight .Value "x" }}"#, &[("Value", "xxaxx")]),
            "xxa"
        );
        assert_eq!(
            ok(r#"{{ TrimPrefix .Value "--" }}"#, &[("Value", "--a--")]),
            "a--"
        );
        assert_eq!(
            ok(r#"{{ TrimSuffix .Value "--" }}"#, &[("Value", "--a--")]),
            "--a"
        );
        assert_eq!(ok("{{ TrimSpace .Value }}", &[("Value", "  a \n")]), "a");
        assert_eq!(
            ok(
                r#"{{ regexReplaceAll "(a*)bc" .Value "${1}a" }}"#,
                &[("Value", "aaabc abc")]
            ),
            "aaaa aa"
        );
        assert_eq!(
            ok(
                r#"{{ regexReplaceAllLiteral "(ts=)" .Value "timestamp=" }}"#,
                &[("Value", "ts=1 ts=2")]
            ),
            "timestamp=1 timestamp=2"
        );
        // Hash(salt, input) hashes salt+input; docs call it as `Hash .Value "salt"`.
        assert_eq!(
            ok(r#"{{ Sha2Hash .Value "salt" }}"#, &[("Value", "abc")]),
            {
                use sha2::Digest as _;
                hex(&sha2::Sha256::digest(b"abcsalt"))
            }
        );
        assert_eq!(ok(r#"{{ Hash .Value "salt" }}"#, &[("Value", "abc")]), {
            use sha3::Digest as _;
            hex(&sha3::Sha3_256::digest(b"abcsalt"))
        });
        assert_eq!(ok(r#"{{ .Value | Hash "salt" }}"#, &[("Value", "abc")]), {
            use sha3::Digest as _;
            hex(&sha3::Sha3_256::digest(b"saltabc"))
        });
    }

    #[test]
    fn control_structures() {
        let t = r#"{{ if eq .Value "200" }}{{ Replace .Value "200" "HttpStatusOk" -1 }}{{ else }}{{ .Value | ToUpper }}{{ end }}"#;
        assert_eq!(ok(t, &[("Value", "200")]), "HttpStatusOk");
        assert_eq!(ok(t, &[("Value", "frank")]), "FRANK");
        let t = "{{ if eq .a \"1\" }}one{{ else if eq .a \"2\" }}two{{ else }}many{{ end }}";
        assert_eq!(ok(t, &[("a", "2")]), "two");
        assert_eq!(ok(t, &[("a", "9")]), "many");
        assert_eq!(
            ok(
                "{{ with .a }}[{{ . }}]{{ else }}none{{ end }}",
                &[("a", "x")]
            ),
            "[x]"
        );
        assert_eq!(
            ok("{{ with .a }}[{{ . }}]{{ else }}none{{ end }}", &[]),
            "none"
        );
        assert_eq!(
            ok(
                r#"{{ range $i, $e := splitList "," .a }}{{ $i }}={{ $e }};{{ end }}"#,
                &[("a", "x,y")]
            ),
            "0=x;1=y;"
        );
        assert_eq!(
            ok(
                r#"{{ range splitList "," .a }}{{ if eq . "b" }}{{ break }}{{ end }}{{ . }}{{ end }}"#,
                &[("a", "a,b,c")]
            ),
            "a"
        );
        assert_eq!(
            ok(
                r#"{{ range splitList "," .a }}{{ if eq . "b" }}{{ continue }}{{ end }}{{ . }}{{ end }}"#,
                &[("a", "a,b,c")]
            ),
            "ac"
        );
        assert_eq!(
            ok("{{ range .none }}x{{ else }}empty{{ end }}", &[]),
            "empty"
        );
        assert_eq!(
            ok(
                "{{ range $k, $v := . }}{{ $k }}{{ $v }}{{ end }}",
                &[("a", "1"), ("b", "2")]
            ),
            "a1b2"
        );
        assert_eq!(
            ok(
                "{{ $x := .a }}{{ $x = print $x \"!\" }}{{ $x }}",
                &[("a", "hi")]
            ),
            "hi!"
        );
        assert_eq!(
            ok(
                "{{ and .a .b }}|{{ or .c .b }}|{{ not .c }}",
                &[("a", "1"), ("b", "2")]
            ),
            "2|2|true"
        );
        assert_eq!(ok("{{ range 3 }}{{ . }}{{ end }}", &[]), "012");
    }

    #[test]
    fn trim_markers_and_comments() {
        assert_eq!(ok("a  {{- .x -}}  b", &[("x", "X")]), "aXb");
        assert_eq!(ok("a {{/* note */}} b", &[]), "a  b");
        assert_eq!(ok("a {{- /* note */ -}} b", &[]), "ab");
        assert_eq!(ok("{{- 3 -}}", &[]), "3");
        assert_eq!(ok("{{-3}}", &[]), "-3");
    }

    #[test]
    fn sprig_functions() {
        let d = [
            ("date_local", "11/08/2022"),
            ("time_local", "7:53:24"),
            ("hour_period", "PM"),
        ];
        assert_eq!(ok("{{ .date_local | substr 6 10 }}", &d), "2022");
        assert_eq!(ok("{{ add (.time_local | substr 0 1) 2 }}", &d), "9");
        assert_eq!(ok("{{ le (.time_local | substr 0 1) \"7\" }}", &d), "true");
        assert_eq!(ok(r#"{{ default "x" .missing }}"#, &[]), "x");
        assert_eq!(ok(r#"{{ .missing | default "x" }}"#, &[]), "x");
        assert_eq!(ok(r#"{{ "abc" | upper | repeat 2 }}"#, &[]), "ABCABC");
        assert_eq!(
            ok(r#"{{ trunc 3 "abcdef" }} {{ trunc -2 "abcdef" }}"#, &[]),
            "abc ef"
        );
        assert_eq!(ok(r#"{{ replace " " "_" "a b c" }}"#, &[]), "a_b_c");
        assert_eq!(
            ok(r#"{{ contains "b" "abc" }}{{ hasPrefix "a" "abc" }}"#, &[]),
            "truetrue"
        );
        assert_eq!(ok(r#"{{ regexMatch "^\\d+$" "123" }}"#, &[]), "true");
        assert_eq!(ok(r#"{{ regexFind "\\d+" "ab12cd34" }}"#, &[]), "12");
        assert_eq!(ok(r#"{{ join "-" (list 1 "a" 2.5) }}"#, &[]), "1-a-2.5");
        assert_eq!(ok(r#"{{ (split "," "a,b")._1 }}"#, &[]), "b");
        assert_eq!(
            ok(r#"{{ b64enc "hello" }}|{{ b64dec "aGVsbG8=" }}"#, &[]),
            "aGVsbG8=|hello"
        );
        assert_eq!(
            ok(r#"{{ b32enc "hello" }}|{{ b32dec "NBSWY3DP" }}"#, &[]),
            "NBSWY3DP|hello"
        );
        assert_eq!(
            ok(r#"{{ toJson (dict "a" 1 "b" "<x>") }}"#, &[]),
            r#"{"a":1,"b":"\u003cx\u003e"}"#
        );
        assert_eq!(ok(r#"{{ (fromJson "{\"a\":{\"b\":2}}").a.b }}"#, &[]), "2");
        assert_eq!(
            ok(r#"{{ quote "a\"b" }} {{ squote "c" }}"#, &[]),
            r#""a\"b" 'c'"#
        );
        assert_eq!(ok(r#"{{ ternary "yes" "no" true }}"#, &[]), "yes");
        assert_eq!(
            ok(
                r#"{{ mul 2 3 }} {{ sub 5 7 }} {{ div 7 2 }} {{ mod 7 2 }} {{ max 1 5 3 }}"#,
                &[]
            ),
            "6 -2 3 1 5"
        );
        assert_eq!(
            ok(
                r#"{{ addf 1.5 2 }} {{ floor 2.7 }} {{ round 2.567 2 }}"#,
                &[]
            ),
            "3.5 2 2.57"
        );
        assert_eq!(
            ok(
                r#"{{ printf "%s-%d-%.2f-%5s|%-3d|%05d|%q|%v" "a" 3 1.5 "x" 7 42 "q" 1.5 }}"#,
                &[]
            ),
            r#"a-3-1.50-    x|7  |00042|"q"|1.5"#
        );
        assert_eq!(ok(r#"{{ printf "%d" "x" }}"#, &[]), "%!d(string=x)");
        assert_eq!(
            ok(
                r#"{{ snakecase "HelloWorld" }} {{ camelcase "hello_world" }}"#,
                &[]
            ),
            "hello_world HelloWorld"
        );
        assert_eq!(ok(r#"{{ title "hello world" }}"#, &[]), "Hello World");
        assert_eq!(
            ok(
                r#"{{ base "/a/b.txt" }} {{ dir "/a/b.txt" }} {{ ext "b.tar.gz" }}"#,
                &[]
            ),
            "b.txt /a .gz"
        );
        assert_eq!(ok(r#"{{ date "2006-01-02" 0 }}"#, &[]).len(), 10);
        assert_eq!(ok(r#"{{ duration 95 }}"#, &[]), "1m35s");
        assert_eq!(
            ok(
                r#"{{ len "abc" }} {{ index (list 1 2) 1 }} {{ slice (list 1 2 3) 1 }}"#,
                &[]
            ),
            "3 2 [2 3]"
        );
        assert_eq!(
            ok(r#"{{ html "<a&b>" }} {{ urlquery "a b&c" }}"#, &[]),
            "&lt;a&amp;b&gt; a+b%26c"
        );
        assert_eq!(ok(r#"{{ print 1 2 "a" "b" 3 }}"#, &[]), "1 2ab3");
        assert_eq!(
            ok(r#"{{ 1e6 }} {{ 1.5 }} {{ 0x1F }} {{ 'a' }}"#, &[]),
            "1e+06 1.5 31 97"
        );
    }

    #[test]
    fn docs_multiline_template() {
        // The long `time` example of Promtail's template docs (12-hour clock to RFC3339).
        let t = "{{ .date_local | substr 6 10 }}-{{ .date_local | substr 0 2 }}-{{ .date_local | substr 3 5 }}T{{ if eq (.time_local | substr 0 2) \"12\" }}{{ if eq .hour_period \"AM\" }}00{{ else }}12{{ end }}{{ .time_local | substr 2 10}}Z{{ else }}{{ if eq .hour_period \"AM\" }}{{ if or (eq (.time_local | substr 0 2) \"11\") (eq (.time_local | substr 0 2) \"10\") }}{{ .time_local }}Z{{ else }}0{{ .time_local }}Z{{ end }}{{ else }}{{ if eq (.time_local | substr 0 2) \"11\" }}23{{ .time_local | substr 2 10 }}Z{{ end }}{{ if eq (.time_local | substr 0 2) \"10\" }}22{{ .time_local | substr 2 10 }}Z{{ end }}{{ if eq (.time_local | substr 0 2) \"9:\" }}21{{ .time_local | substr 1 10 }}Z{{ end }}{{ if eq (.time_local | substr 0 2) \"8:\" }}20{{ .time_local | substr 1 10 }}Z{{ end }}{{ if and (le (.time_local | substr 0 1) \"7\") (eq (.time_local | substr 1 2) \":\") }}1{{ add (.time_local | substr 0 1) 2 }}{{ .time_local | substr 1 10 }}Z{{ end }}{{ end }}{{ end }}";
        assert_eq!(
            ok(
                t,
                &[
                    ("date_local", "11/08/2022"),
                    ("time_local", "12:53:24"),
                    ("hour_period", "PM")
                ]
            ),
            "2022-11-08T12:53:24Z"
        );
        assert_eq!(
            ok(
                t,
                &[
                    ("date_local", "11/08/2022"),
                    ("time_local", "7:53:24"),
                    ("hour_period", "PM")
                ]
            ),
            "2022-11-08T19:53:24Z"
        );
        assert_eq!(
            ok(
                t,
                &[
                    ("date_local", "11/08/2022"),
                    ("time_local", "9:53:24"),
                    ("hour_period", "AM")
                ]
            ),
            "2022-11-08T09:53:24Z"
        );
    }

    #[test]
    fn errors() {
        assert!(
            Template::parse("{{ nosuchfunc .a }}")
                .unwrap_err()
                .contains("function \"nosuchfunc\" not defined")
        );
        assert!(
            Template::parse("{{ if .a }}x")
                .unwrap_err()
                .contains("unexpected EOF")
        );
        assert!(Template::parse("{{ end }}").is_err());
        assert!(Template::parse("{{ .a ").is_err());
        assert!(
            Template::parse("{{ $x }}")
                .unwrap_err()
                .contains("undefined variable")
        );
        // Runtime errors: a missing value where a string is needed, a bad comparison.
        assert!(run("{{ ToUpper .missing }}", &[]).is_err());
        assert!(run("{{ eq .missing \"x\" }}", &[]).is_err());
        assert!(run("{{ eq 1 \"x\" }}", &[]).is_err());
        assert!(run("{{ .a 1 }}", &[("a", "x")]).is_err());
        assert!(run(r#"{{ regexReplaceAll "(" .a "" }}"#, &[("a", "x")]).is_err());
    }

    #[test]
    fn go_formats() {
        assert_eq!(format_g(1e6), "1e+06");
        assert_eq!(format_g(123456.0), "123456");
        assert_eq!(format_g(1e20), "1e+20");
        assert_eq!(format_g(0.0001), "0.0001");
        assert_eq!(format_g(0.00001), "1e-05");
        assert_eq!(go_duration(95_000_000_000), "1m35s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    }

    #[test]
    fn semver_values_and_methods() {
        let d = [("ver", "1.2.3")];
        assert_eq!(
            ok(
                r#"{{ (semver .ver).Major }} {{ (semver .ver).Minor }} {{ (semver "1.2.3-beta.1").Prerelease }}"#,
                &d
            ),
            "1 2 beta.1"
        );
        // Loose input: a `v`, missing parts, leading zeros in numbers.
        assert_eq!(
            ok(
                r#"{{ semver "v1.2" }} {{ semver "1" }} {{ (semver "v1.2").Original }} {{ semver "01.2.3+b.7" }} {{ (semver "1.2.3+b.7").Metadata }}"#,
                &[]
            ),
            "1.2.0 1.0.0 v1.2 1.2.3+b.7 b.7"
        );
        assert_eq!(
            ok(
                r#"{{ (semver "1.2.3").IncMinor }} {{ (semver "1.2.3-a").IncPatch }} {{ (semver "1.2.3").IncPatch }} {{ (semver "1.2.3-a+m").IncMajor.Major }}"#,
                &[]
            ),
            "1.3.0 1.2.3 1.2.4 2"
        );
        assert_eq!(
            ok(
                r#"{{ (semver "1.2.3").Compare (semver "1.3.0") }} {{ (semver "1.2.3-a.10").Compare (semver "1.2.3-a.9") }} {{ (semver "1.2.3").LessThan (semver "1.2.3-rc") }} {{ (semver "1.2.3").Equal (semver "v1.2.3+x") }}"#,
                &[]
            ),
            "-1 1 false true"
        );
        assert_eq!(
            ok(
                r#"{{ $v := semver .ver }}{{ $v.Patch }} {{ with semver .ver }}{{ .String }}{{ end }} {{ typeOf (semver .ver) }} {{ semver .ver | toJson }}"#,
                &d
            ),
            r#"3 1.2.3 *semver.Version "1.2.3""#
        );
        for (bad, why) in [
            ("1.2.3.4", "Invalid Semantic Version"),
            ("V1.2.3", "Invalid Semantic Version"),
            ("1.2.3-", "Invalid Semantic Version"),
            ("1.2.3-01", "Version segment starts with 0"),
            ("99999999999999999999.0.0", "value out of range"),
        ] {
            let e = run(&format!("{{{{ semver {bad:?} }}}}"), &[]).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = run(r#"{{ (semver "1.2.3").Nope }}"#, &[]).unwrap_err();
        assert!(
            e.contains("can't evaluate field Nope in type *semver.Version"),
            "{e}"
        );
        let e = run(r#"{{ (semver "1.2.3").Compare "1.2.4" }}"#, &[]).unwrap_err();
        assert!(e.contains("expected *semver.Version; got string"), "{e}");
        assert!(run(r#"{{ (semver "1.2.3").Compare }}"#, &[]).is_err());
    }

    #[test]
    fn semver_compare_constraints() {
        let check = |c: &str, v: &str| ok(&format!("{{{{ semverCompare {c:?} {v:?} }}}}"), &[]);
        let cases = [
            (">=1.2.0", "1.2.3", "true"),
            ("<1.0", "1.2.3", "false"),
            ("~1.2", "1.2.3", "true"),
            ("~1.3", "1.2.3", "false"),
            ("~1", "1.9.0", "true"),
            ("^1.1", "1.9.0", "true"),
            ("^0.2", "0.3.0", "false"),
            ("^0.0.3", "0.0.4", "false"),
            ("^0", "0.9.1", "true"),
            ("1.2.x", "1.2.9", "true"),
            ("1.2", "1.3.0", "false"),
            ("*", "7.0.0", "true"),
            // A wildcard compares at its own precision.
            (">1.2", "1.2.9", "false"),
            ("<=1.2", "1.2.9", "true"),
            ("!=1.x", "1.5.0", "false"),
            ("!=1.2.2", "1.2.3", "true"),
            ("1.2 - 1.3", "1.3.9", "true"),
            ("1 - 1.2.2", "1.2.3", "false"),
            (">=1.0 <1.2.3", "1.2.3", "false"),
            (">=1.0, <2", "1.2.3", "true"),
            ("<1 || >1.2.2", "1.2.3", "true"),
            ("=>1.2", "1.2.0", "true"),
            ("=<1.2.3", "1.2.3", "true"),
            ("~>1.2", "1.2.3", "true"),
            ("v1.2.3", "1.2.3+meta", "true"),
            // A pre-release only meets constraints that name one.
            ("*", "1.2.3-beta.3", "false"),
            ("<1.2.3", "1.2.3-beta.3", "false"),
            (">=1.2.3-alpha", "1.2.3-beta.3", "true"),
            (">=1.2.3-beta.2, <1.3", "1.2.3-beta.3", "false"),
            ("<1.2.3-beta.10", "1.2.3-beta.3", "true"),
            ("!=1.2.2", "1.2.3-beta.3", "true"),
        ];
        for (c, v, want) in cases {
            assert_eq!(check(c, v), want, "semverCompare {c:?} {v:?}");
        }
        for (c, v, why) in [
            ("", "1.2.3", "improper constraint: "),
            ("foo", "1.2.3", "improper constraint: foo"),
            (">=1.0,,<2", "1.2.3", "improper constraint"),
            ("1.2.3 -1.2.4", "1.2.3", "improper constraint"),
            ("~1.2.3-01", "1.2.3", "constraint Parser Error"),
            (">1", "abc", "Invalid Semantic Version"),
        ] {
            let e = run(&format!("{{{{ semverCompare {c:?} {v:?} }}}}"), &[]).unwrap_err();
            assert!(e.contains(why), "{c:?} {v:?}: {e}");
        }
    }

    #[test]
    fn define_template_block() {
        let d = [("num", "42"), ("s", "x")];
        assert_eq!(
            ok(
                r#"{{ define "t" }}T{{ . }}{{ end }}{{ template "t" .num }}|{{ template "t" }}"#,
                &d
            ),
            "T42|T<no value>"
        );
        // Defined after use, calling each other, `$` is the argument.
        assert_eq!(
            ok(
                r#"{{ template "a" 1 }}{{ define "a" }}A{{ template "b" . }}{{ end }}{{ define "b" }}B{{ $ }}{{ end }}"#,
                &d
            ),
            "AB1"
        );
        assert_eq!(
            ok(
                r#"{{ define "r" }}{{ if gt . 0 }}{{ . }}{{ template "r" (sub . 1) }}{{ end }}{{ end }}{{ template "r" 3 }}"#,
                &d
            ),
            "321"
        );
        assert_eq!(
            ok(
                r#"{{ block "b" .s }}[{{ . }}]{{ end }}|{{ template "b" "y" }}"#,
                &d
            ),
            "[x]|[y]"
        );
        assert_eq!(
            ok(
                r#"{{ define "t" }}1{{ end }}{{ define "t" }} {{ end }}{{ template "t" }}"#,
                &d
            ),
            "1"
        );
        let e = run(r#"{{ template "nope" }}"#, &d).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        for bad in [
            r#"{{ define "t" }}1{{ end }}{{ define "t" }}2{{ end }}"#,
            r#"{{ if 1 }}{{ define "x" }}{{ end }}{{ end }}"#,
            r#"{{ $x := 1 }}{{ define "t" }}{{ $x }}{{ end }}"#,
            r#"{{ block "b" }}x{{ end }}"#,
            r#"{{ define "t" }}x{{ else }}y{{ end }}"#,
            r#"{{ define t }}{{ end }}"#,
            r#"{{ define "t" }}x"#,
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        // Endless recursion is an error, not a crash.
        assert!(
            run(
                r#"{{ define "l" }}{{ template "l" }}{{ end }}{{ template "l" }}"#,
                &d
            )
            .is_err()
        );
    }

    #[test]
    fn time_methods() {
        assert_eq!(
            ok(
                r#"{{ (toDate "2006-01-02T15:04:05Z07:00" "2023-05-06T07:08:09+02:00").Unix }}"#,
                &[]
            ),
            "1683349689"
        );
        assert_eq!(
            ok(
                r#"{{ $t := toDate "2006-01-02 15:04:05.000" "2023-05-06 07:08:09.123" }}{{ $t.UTC.UnixMilli }} {{ $t.UnixNano }}"#,
                &[]
            ),
            "1683356889123 1683356889123000000"
        );
        // A date toDate cannot read is Go's zero time.
        assert_eq!(ok(r#"{{ (toDate "2006" "x").Unix }}"#, &[]), "-62135596800");
        let e = run(r#"{{ now.Nope }}"#, &[]).unwrap_err();
        assert!(
            e.contains("can't evaluate field Nope in type time.Time"),
            "{e}"
        );
        assert!(run(r#"{{ now.Unix 1 }}"#, &[]).is_err());
    }

    #[test]
    fn slice_is_sprigs_lists_only() {
        assert_eq!(
            ok(
                r#"{{ slice (list 1 2 3) 1 }} {{ slice (list 1 2 3) }} {{ slice (list 1 2 3) 0 2 }} {{ index (splitList "," "a,b") 1 }}"#,
                &[]
            ),
            "[2 3] [1 2 3] [1 2] b"
        );
        let e = run(r#"{{ slice .s 0 2 }}"#, &[("s", "Hello")]).unwrap_err();
        assert!(
            e.contains("list should be type of slice or array but string"),
            "{e}"
        );
        assert!(run(r#"{{ slice (list 1 2 3) 2 5 }}"#, &[]).is_err());
    }
}
