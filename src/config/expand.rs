//! `${VAR}` expansion in string values.
//!
//! Expansion happens after TOML parsing, on string values only, so a variable's value can never
//! change the structure of the file. `${VAR:-default}` supplies a default; `$${` writes a
//! literal `${`. Any other `$` is kept as is (secrets often contain one).

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` where `NAME` is not set in the environment.
    Missing(String),
    /// `${` without a closing `}` or with a name that is not `[A-Za-z_][A-Za-z0-9_]*`. The
    /// text says which, without quoting the value (it may be a secret).
    Malformed(&'static str),
}

/// Expands `${VAR}` references in `input` using `lookup`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or(ExpandError::Malformed("a ${ without a closing }"))?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            // `${A:-${B}}` would end at the first `}`, and the rest would be kept as text: a
            // value such as a key would silently become the literal `${B}`.
            if default.is_some_and(|d| d.contains("${")) {
                return Err(ExpandError::Malformed(
                    "a ${…} inside a default (nesting is not supported; set the variable instead)",
                ));
            }
            if !is_var_name(name) {
                return Err(ExpandError::Malformed(
                    "a ${…} whose name is not letters, digits and _ (starting with a letter or _)",
                ));
            }
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(d),
                    None => return Err(ExpandError::Missing(name.to_owned())),
                },
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr$t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn nested_references_are_refused_not_kept_as_text() {
        for v in ["${NOPE:-${ALSO}}", "x${NOPE:-a${SECRET}b}"] {
            assert!(
                matches!(expand(v, &env), Err(ExpandError::Malformed(m)) if m.contains("nesting")),
                "{v}"
            );
        }
        assert_eq!(expand("${NOPE:-plain}", &env).unwrap(), "plain");
    }

    #[test]
    fn expands_known_variables() {
        assert_eq!(expand("${SECRET}", &env).unwrap(), "s3cr$t");
        assert_eq!(expand("a-${SECRET}-b", &env).unwrap(), "a-s3cr$t-b");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn missing_variable_is_named() {
        assert_eq!(
            expand("x${NOPE}y", &env),
            Err(ExpandError::Missing("NOPE".into()))
        );
    }

    #[test]
    fn default_applies_only_when_unset() {
        assert_eq!(expand("${NOPE:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${SECRET:-fallback}", &env).unwrap(), "s3cr$t");
    }

    #[test]
    fn dollar_escapes_and_lone_dollars() {
        assert_eq!(expand("$${SECRET}", &env).unwrap(), "${SECRET}");
        assert_eq!(expand("pa$$word$", &env).unwrap(), "pa$$word$");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(matches!(
            expand("${SECRET", &env),
            Err(ExpandError::Malformed(_))
        ));
        assert!(matches!(
            expand("${1ABC}", &env),
            Err(ExpandError::Malformed(_))
        ));
        assert!(matches!(
            expand("${A B}", &env),
            Err(ExpandError::Malformed(_))
        ));
    }
}
