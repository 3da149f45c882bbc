//! Typed reading of a parsed TOML table, with every problem collected as an [`Issue`].
//!
//! Each section of the config is read through a [`Section`]: the reader asks for the keys it
//! knows, each ask records the key as known, and [`Section::finish`] reports every key that was
//! never asked for as unknown, with the nearest known key as a suggestion. So each option is
//! defined exactly once (where it is read), errors name the full key path, and one run of
//! `hookwarden check` reports every problem in the file rather than the first.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use toml::{Table, Value};

use super::expand::{ExpandError, expand};
use super::units::{parse_duration, parse_size};
use crate::secret::Secret;

/// How serious an [`Issue`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works but is risky or probably not what was meant.
    Warning,
}

/// One problem found in the config: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// The full key path, e.g. `route[chat].upstream.url`.
    pub key: String,
    /// What is wrong, as a sentence.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}: {}", self.key, self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Shared state of one config read: the collected issues and the environment lookup.
pub struct Reader<'e> {
    issues: RefCell<Vec<Issue>>,
    env: &'e dyn Fn(&str) -> Option<String>,
    /// Every variable `${…}` expanded, with its value: messages show the reference instead of
    /// the value (see [`Reader::into_issues`]).
    expanded: RefCell<Vec<(String, String)>>,
}

/// `text` with the values of `vars` (name, value) replaced by their `${NAME}`: a quoted part
/// of the text that is (a piece of) a value, where a check quoted what it refused (a value,
/// trimmed, or a unit or period cut from it), and the value itself, trimmed, or as `{:?}`
/// writes it, where it stands as a whole word (so `sync` from `${MODE}` leaves "async" alone).
fn redact(text: &str, vars: &[(String, String)]) -> String {
    let mut forms: Vec<(String, String)> = Vec::new();
    for (name, value) in vars {
        let debug = format!("{value:?}");
        for form in [value.as_str(), value.trim(), &debug[1..debug.len() - 1]] {
            if form.chars().count() >= REDACT_MIN_CHARS && !forms.iter().any(|(f, _)| f == form) {
                forms.push((form.to_owned(), format!("${{{name}}}")));
            }
        }
    }
    // Longest first, so a value that contains another is replaced whole.
    forms.sort_by_key(|(f, _)| std::cmp::Reverse(f.len()));
    let owner = |piece: &str| {
        let piece = piece.trim();
        (piece.chars().count() >= REDACT_MIN_CHARS)
            .then(|| vars.iter().find(|(_, v)| v.contains(piece)))
            .flatten()
            .map(|(name, v)| {
                if v.trim() == piece {
                    format!("${{{name}}}")
                } else {
                    format!("part of ${{{name}}}")
                }
            })
    };
    // Quoted parts (between the 1st and 2nd `"`, the 3rd and 4th, …) are what a check quoted
    // of the config: one that is a value or a piece of one becomes its reference, and values
    // inside a longer one are replaced wherever they stand. Outside quotes only whole words
    // are replaced: that text is the gateway's own.
    // A value with quotes or backslashes, as `{:?}` escapes it, would be split below.
    let mut text = text.to_owned();
    for (form, reference) in forms.iter().filter(|(f, _)| f.contains(['"', '\\'])) {
        text = text.replace(form.as_str(), reference);
    }
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        if i % 2 == 1 {
            match owner(part) {
                Some(reference) => out.push_str(&reference),
                None => {
                    // Inside a longer quoted value, a long one wherever it stands (a secret
                    // written next to other text); a short one only as a whole word.
                    let mut part = part.to_owned();
                    for (form, reference) in &forms {
                        part = if form.chars().count() >= 8 {
                            part.replace(form.as_str(), reference)
                        } else {
                            replace_words(&part, form, reference)
                        };
                    }
                    out.push_str(&part);
                }
            }
        } else {
            let mut part = part.to_owned();
            for (form, reference) in &forms {
                part = replace_words(&part, form, reference);
            }
            out.push_str(&part);
        }
    }
    out
}

/// `text` with each occurrence of `word` that is not part of a longer word replaced.
fn replace_words(text: &str, word: &str, with: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let starts_word = is_word(word.chars().next());
    let ends_word = is_word(word.chars().next_back());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + word.len()..].chars().next();
        let joined = (starts_word && is_word(before)) || (ends_word && is_word(after));
        out.push_str(&rest[..at]);
        out.push_str(if joined { word } else { with });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Values shorter than this are left in messages: they cannot be meaningful secrets, and
/// replacing every `80` or `on` in a message's text would garble it.
const REDACT_MIN_CHARS: usize = 4;

impl<'e> Reader<'e> {
    /// A reader that expands `${VAR}` through `env`.
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Reader {
            issues: RefCell::new(Vec::new()),
            env,
            expanded: RefCell::new(Vec::new()),
        }
    }

    /// Looks `name` up in the environment and remembers its value for redaction.
    fn lookup(&self, name: &str) -> Option<String> {
        let value = (self.env)(name)?;
        if value.chars().count() >= REDACT_MIN_CHARS {
            let mut seen = self.expanded.borrow_mut();
            if !seen.iter().any(|(n, _)| n == name) {
                seen.push((name.to_owned(), value.clone()));
            }
        }
        Some(value)
    }

    /// Opens the document's root table.
    pub fn root<'a>(&'a self, table: &'a Table) -> Section<'a, 'e> {
        Section {
            reader: self,
            path: String::new(),
            toml_path: String::new(),
            table,
            known: RefCell::new(Vec::new()),
        }
    }

    /// Records an issue found outside a section read (cross-section checks).
    pub fn push(&self, issue: Issue) {
        // The same message twice says nothing more (`["https://${DOMAIN}",
        // "https://www.${DOMAIN}"]` with DOMAIN unset is one problem).
        let mut issues = self.issues.borrow_mut();
        if !issues.contains(&issue) {
            issues.push(issue);
        }
    }

    /// True when an error (not just a warning) has been recorded.
    pub fn has_errors(&self) -> bool {
        self.issues
            .borrow()
            .iter()
            .any(|i| i.severity == Severity::Error)
    }

    /// All issues recorded so far, errors first, in the order they were found.
    ///
    /// A value that came from the environment is shown as its `${NAME}`: messages quote the
    /// values they refuse, and a secret put in the wrong key (a decryption key as the cipher's
    /// name) must not reach a terminal, a CI log or a reload's answer. Secret keys never quote
    /// their values; this covers every other key, whichever check wrote the message.
    pub fn into_issues(self) -> Vec<Issue> {
        let expanded = self.expanded.into_inner();
        let mut issues = self.issues.into_inner();
        if !expanded.is_empty() {
            for issue in &mut issues {
                issue.problem = redact(&issue.problem, &expanded);
                issue.fix = redact(&issue.fix, &expanded);
            }
        }
        issues.sort_by_key(|i| i.severity);
        issues
    }
}

/// One table of the config being read. See the module docs.
pub struct Section<'a, 'e> {
    reader: &'a Reader<'e>,
    path: String,
    /// The section's header as written in TOML (`route.limit`): `path` names one entry
    /// (`route[chat].limit[#2]`), which is not something a user can write.
    toml_path: String,
    table: &'a Table,
    known: RefCell<Vec<&'static str>>,
}

/// Reads every item of `items` (each records its own issues) and gives all of them, or `None`
/// when any could not be read. Not `collect::<Option<_>>()` alone, which stops at the first
/// failure: a list or table with several missing `${VAR}`s must name them all in one run.
fn all_read<T>(items: impl Iterator<Item = Option<T>>) -> Option<Vec<T>> {
    let read: Vec<Option<T>> = items.collect();
    read.into_iter().collect()
}

impl<'a, 'e> Section<'a, 'e> {
    /// The full path of `key` in this section, for messages.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// `key` of this section as a TOML header names it (`route.limit`).
    fn toml_key(&self, key: &str) -> String {
        if self.toml_path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.toml_path)
        }
    }

    /// The path of this section itself.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Renames this section's path (used once a route's name is known).
    pub fn set_path(&mut self, path: String) {
        self.path = path;
    }

    /// Records an error about `key` of this section.
    pub fn error(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.reader.push(Issue {
            severity: Severity::Error,
            key: self.key_path(key),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Records a warning about `key` of this section.
    pub fn warn(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.reader.push(Issue {
            severity: Severity::Warning,
            key: self.key_path(key),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// True when the table has `key` (and marks it known).
    pub fn has(&self, key: &'static str) -> bool {
        self.known.borrow_mut().push(key);
        self.table.contains_key(key)
    }

    /// The raw value of `key` without marking it as read: for a lint that looks at a setting
    /// another reader owns (the key is still reported as unknown if nobody reads it).
    pub fn peek(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    fn get(&self, key: &'static str) -> Option<&'a Value> {
        self.known.borrow_mut().push(key);
        self.table.get(key)
    }

    fn wrong_type(&self, key: &str, expected: &str, v: &Value) {
        self.error(
            key,
            format!("expected {expected}, found {}", v.type_str()),
            format!("write `{key} = ` followed by {expected}"),
        );
    }

    fn expand_str(&self, key: &str, raw: &str) -> Option<String> {
        match expand(raw, &|name| self.reader.lookup(name)) {
            Ok(s) => Some(s),
            Err(ExpandError::Missing(var)) => {
                self.error(
                    key,
                    format!("environment variable {var} is not set"),
                    format!("set {var} before starting hookwarden, or write `${{{var}:-default}}` to give a default"),
                );
                None
            }
            Err(ExpandError::Malformed(bad)) => {
                self.error(
                    key,
                    format!("the value has {bad}"),
                    "write ${NAME} with a name of letters, digits and _, or $${ for a literal ${",
                );
                None
            }
        }
    }

    /// An optional string, `${VAR}`-expanded. Only use for values that may be echoed in
    /// messages; credentials go through [`Section::secret`].
    pub fn string(&self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => self.expand_str(key, s),
            v => {
                self.wrong_type(key, "a string", v);
                None
            }
        }
    }

    /// A required string: records an error when it is missing.
    pub fn required_string(&self, key: &'static str, fix: &str) -> Option<String> {
        if !self.table.contains_key(key) {
            self.known.borrow_mut().push(key);
            self.error(key, "is required but missing", fix);
            return None;
        }
        self.string(key)
    }

    /// An optional secret string, `${VAR}`-expanded; never echoed in messages.
    pub fn secret(&self, key: &'static str) -> Option<Secret> {
        self.string(key).map(Secret::new)
    }

    /// An optional boolean.
    pub fn bool(&self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            v => {
                self.wrong_type(key, "true or false", v);
                None
            }
        }
    }

    /// An optional whole number in `min..=max`.
    pub fn integer(&self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            Value::Integer(n) => {
                self.error(
                    key,
                    format!("{n} is out of range"),
                    format!("use a whole number from {min} to {max}"),
                );
                None
            }
            v => {
                self.wrong_type(key, "a whole number", v);
                None
            }
        }
    }

    /// An optional size (`"32KiB"`, or a number of bytes).
    pub fn size(&self, key: &'static str) -> Option<u64> {
        match self.get(key)? {
            Value::Integer(n) if *n >= 0 => Some(*n as u64),
            Value::Integer(n) => {
                self.error(
                    key,
                    format!("{n} is negative"),
                    "write a whole number of bytes, or a number and a unit, e.g. \"64KiB\"",
                );
                None
            }
            Value::String(s) => {
                let s = self.expand_str(key, s)?;
                match parse_size(&s) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.error(
                            key,
                            e,
                            "write a whole number and a unit (B, KiB, MiB or GiB), e.g. \"64KiB\" or \"1MiB\"",
                        );
                        None
                    }
                }
            }
            v => {
                self.wrong_type(key, "a size such as \"32KiB\"", v);
                None
            }
        }
    }

    /// An optional duration (`"10m"`).
    pub fn duration(&self, key: &'static str) -> Option<Duration> {
        match self.get(key)? {
            Value::String(s) => {
                let s = self.expand_str(key, s)?;
                match parse_duration(&s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.error(
                            key,
                            e,
                            "write a number and a unit (ms, s, m, h or d), e.g. \"30s\", \"10m\" or \"1h30m\"",
                        );
                        None
                    }
                }
            }
            v => {
                self.wrong_type(key, "a duration such as \"30s\"", v);
                None
            }
        }
    }

    /// An optional list of strings, each `${VAR}`-expanded. A single string is accepted as a
    /// list of one, since that is a common slip.
    pub fn string_list(&self, key: &'static str) -> Option<Vec<String>> {
        match self.get(key)? {
            Value::String(s) => self.expand_str(key, s).map(|s| vec![s]),
            Value::Array(items) => all_read(items.iter().enumerate().map(|(i, item)| match item {
                Value::String(s) => self.expand_str(key, s),
                v => {
                    self.error(
                        key,
                        format!("item {} is {}, not a string", i + 1, v.type_str()),
                        format!("write `{key} = [\"…\", \"…\"]`"),
                    );
                    None
                }
            })),
            v => {
                self.wrong_type(key, "a list of strings", v);
                None
            }
        }
    }

    /// Records an error when `value` (item `item` of `key`, counted from 1, or the key's only
    /// value with `None`) begins or ends with whitespace: a credential compared with what a
    /// client sends in a header can never match then (HTTP drops a field's surrounding
    /// whitespace), and a signing key would sign something else than the sender's. Usually a
    /// secret file's trailing newline. True when it does.
    pub fn refuse_padded(&self, key: &str, item: Option<usize>, value: &Secret) -> bool {
        let v = value.expose();
        if v.is_empty() || v.trim() == v {
            return false;
        }
        let which = item.map_or_else(|| "the value".to_owned(), |i| format!("item {i}"));
        self.error(
            key,
            format!(
                "{which} begins or ends with whitespace or a line break (a secret file's trailing newline?), so it could never match"
            ),
            "remove it from the value or the variable that sets it, e.g. KEY=\"$(tr -d '\\n' < key.txt)\"",
        );
        true
    }

    /// An optional list of secrets.
    pub fn secret_list(&self, key: &'static str) -> Option<Vec<Secret>> {
        self.string_list(key)
            .map(|v| v.into_iter().map(Secret::new).collect())
    }

    /// An optional table of string values (`{ "X-Name" = "value" }`), values kept secret.
    pub fn secret_map(&self, key: &'static str) -> Option<Vec<(String, Secret)>> {
        match self.get(key)? {
            Value::Table(t) => all_read(t.iter().map(|(name, v)| {
                let path = format!("{key}.{name}");
                let value = match v {
                    Value::String(s) => self.expand_str(&path, s),
                    v => {
                        self.error(
                            &path,
                            format!("expected a string, found {}", v.type_str()),
                            "header values are strings",
                        );
                        None
                    }
                };
                value.map(|v| (name.clone(), Secret::new(v)))
            })),
            v => {
                self.wrong_type(key, "a table such as { \"X-Name\" = \"value\" }", v);
                None
            }
        }
    }

    /// An optional sub-table, read as its own section.
    pub fn table(&self, key: &'static str) -> Option<Section<'a, 'e>> {
        match self.get(key)? {
            Value::Table(t) => Some(Section {
                reader: self.reader,
                path: self.key_path(key),
                toml_path: self.toml_key(key),
                table: t,
                known: RefCell::new(Vec::new()),
            }),
            v => {
                self.error(
                    key,
                    format!("expected a table, found {}", v.type_str()),
                    format!("write it as a `[{}]` section", self.toml_key(key)),
                );
                None
            }
        }
    }

    /// An optional array of tables (`[[route]]`), each read as its own section named
    /// `key[index]` until the caller renames it.
    pub fn tables(&self, key: &'static str) -> Vec<Section<'a, 'e>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Table(t) => out.push(Section {
                            reader: self.reader,
                            path: format!("{}[#{}]", self.key_path(key), i + 1),
                            toml_path: self.toml_key(key),
                            table: t,
                            known: RefCell::new(Vec::new()),
                        }),
                        v => self.error(
                            key,
                            format!("item {} is {}, not a table", i + 1, v.type_str()),
                            format!("write each one as a `[[{}]]` section", self.toml_key(key)),
                        ),
                    }
                }
                out
            }
            Value::Table(_) => {
                self.error(
                    key,
                    "is a single table, but a list of tables is expected",
                    format!(
                        "write `[[{0}]]` (double brackets) instead of `[{0}]`",
                        self.toml_key(key)
                    ),
                );
                Vec::new()
            }
            v => {
                self.wrong_type(key, "a list of tables", v);
                Vec::new()
            }
        }
    }

    /// Reports every key of this table that no read asked for, with a suggestion.
    pub fn finish(self) {
        let known = self.known.into_inner();
        for key in self.table.keys() {
            if known.iter().any(|k| k == key) {
                continue;
            }
            let fix = match suggest(key, &known) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => "remove it".to_owned(),
                None => {
                    let mut list = known.clone();
                    list.sort_unstable();
                    list.dedup();
                    format!("remove it; known keys here: {}", list.join(", "))
                }
            };
            self.reader.push(Issue {
                severity: Severity::Error,
                key: if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                },
                problem: "unknown key".into(),
                fix,
            });
        }
    }
}

/// The known key closest to `unknown`, if it is close enough to be a plausible typo.
fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let unknown_l = unknown.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (*k, edit_distance(&unknown_l, k)))
        .filter(|(k, d)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// What checks quote of a value from the environment becomes its reference: the value,
    /// trimmed, a piece cut from it, its `{:?}` form, a value inside a longer quoted one; and
    /// the gateway's own words that merely contain a value stay as they are.
    #[test]
    fn values_from_the_environment_are_redacted_without_garbling_messages() {
        let vars = [
            ("TOKEN".to_owned(), "s3cr3t-token-value\n".to_owned()),
            ("T2".to_owned(), "123SEKRITunit".to_owned()),
            ("MODE".to_owned(), "sync".to_owned()),
            ("P".to_owned(), "/a\"bc".to_owned()),
        ];
        let cases = [
            (
                "\"s3cr3t-token-value\" is not an IP address",
                "\"${TOKEN}\" is not an IP address",
            ),
            (
                "\"123SEKRITunit\" has an unknown size unit \"SEKRITunit\"",
                "\"${T2}\" has an unknown size unit \"part of ${T2}\"",
            ),
            (
                "only applies to async routes, and this route is sync",
                "only applies to async routes, and this route is ${MODE}",
            ),
            ("set mode = \"async\"", "set mode = \"async\""),
            ("\"/a\\\"bc\" holds '\"'", "\"${P}\" holds '\"'"),
            (
                "\"https://x.example/123SEKRITunit/y\" is odd",
                "\"https://x.example/${T2}/y\" is odd",
            ),
            ("\"x123SEKRITunitx\" is odd", "\"x${T2}x\" is odd"),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text, &vars), want, "{text}");
        }
    }

    #[test]
    fn unknown_key_suggests_the_near_miss() {
        let t: Table = "allowed_origin = []\ntoken = true".parse().unwrap();
        let r = Reader::new(&no_env);
        let mut s = r.root(&t);
        s.set_path("route[chat].browser".into());
        let _ = s.string_list("allowed_origins");
        let _ = s.bool("token");
        s.finish();
        let issues = r.into_issues();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "route[chat].browser.allowed_origin");
        assert_eq!(issues[0].problem, "unknown key");
        assert_eq!(issues[0].fix, "did you mean `allowed_origins`?");
    }

    #[test]
    fn unknown_key_without_near_miss_lists_known_keys() {
        let t: Table = "zzzzzz = 1".parse().unwrap();
        let r = Reader::new(&no_env);
        let s = r.root(&t);
        let _ = s.string("listen");
        let _ = s.size("max_body");
        s.finish();
        let issues = r.into_issues();
        assert_eq!(
            issues[0].fix,
            "remove it; known keys here: listen, max_body"
        );
    }

    #[test]
    fn wrong_types_and_missing_variables_are_reported_with_the_key() {
        let t: Table = "max_body = true\nsecret = \"${NOT_SET_ANYWHERE}\""
            .parse()
            .unwrap();
        let r = Reader::new(&no_env);
        let s = r.root(&t);
        assert_eq!(s.size("max_body"), None);
        assert!(s.secret("secret").is_none());
        s.finish();
        let issues = r.into_issues();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].key, "max_body");
        assert!(
            issues[0].problem.contains("found boolean"),
            "{:?}",
            issues[0]
        );
        assert_eq!(issues[1].key, "secret");
        assert_eq!(
            issues[1].problem,
            "environment variable NOT_SET_ANYWHERE is not set"
        );
    }

    #[test]
    fn single_table_where_array_expected_explains_double_brackets() {
        let t: Table = "[route]\nname = \"x\"".parse().unwrap();
        let r = Reader::new(&no_env);
        let s = r.root(&t);
        assert!(s.tables("route").is_empty());
        let issues = r.into_issues();
        assert!(issues[0].fix.contains("[[route]]"), "{:?}", issues[0]);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(
            suggest("max-body", &["max_body", "listen"]),
            Some("max_body")
        );
        assert_eq!(suggest("qqqq", &["max_body", "listen"]), None);
    }
}
