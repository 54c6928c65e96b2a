//! `${VAR}` expansion in the configuration file, and keeping what the
//! variables held out of error messages.
//!
//! Place in the data flow: inside `config`, between parsing the YAML and
//! reading it into the raw schema (`schema.rs`). In every string value,
//! `${VAR}` and `${VAR:-default}` are replaced and `$$` becomes a literal
//! `$`; an unset variable without a default is an error naming the key. Each
//! expanded value is recorded, so that a later error about it names the
//! variable (`(value from ${HSS_SECRET_KEY})`) instead of showing what it
//! held.

use serde_yaml_ng::Value;

use super::ConfigError;
use super::schema::unquoted;

/// A value that `${VAR}` references filled in: its key path and each
/// variable's name and the text it put there.
#[derive(Debug)]
pub(super) struct Expansion {
    path: String,
    variables: Vec<(String, String)>,
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value; `$$` is a
/// literal `$`. An unset variable without a default is an error naming the key.
/// Every expanded value is recorded in `expansions`, so that errors can name
/// the variable instead of showing what it held.
pub(super) fn expand_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    expansions: &mut Vec<Expansion>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains('$') => {
            let mut variables = Vec::new();
            *s = expand_string(s, env, &mut variables)
                .map_err(|reason| ConfigError::invalid(path.clone(), reason))?;
            if !variables.is_empty() {
                expansions.push(Expansion {
                    path: path.clone(),
                    variables,
                });
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env, expansions)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                expand_env(item, path, env, expansions)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether an error at `key` concerns a value at `path`: the same key, or a
/// key above it (`credentials` for `credentials.secret_key`).
fn concerns(key: &str, path: &str) -> bool {
    key == "config"
        || path == key
        || path
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// An error about a value that came from `${VAR}`: what the variables held is
/// replaced by their names wherever it shows, any other quoted part of such a
/// value is dropped, and the message says where the value came from
/// (`(value from ${HSS_SECRET_KEY})`). Errors about other keys are unchanged.
pub(super) fn conceal_expansions(error: ConfigError, expansions: &[Expansion]) -> ConfigError {
    let ConfigError::Invalid { key, mut reason } = error else {
        return error;
    };
    let related: Vec<&Expansion> = expansions
        .iter()
        .filter(|x| concerns(&key, &x.path))
        .collect();
    if related.is_empty() {
        return ConfigError::Invalid { key, reason };
    }
    for (name, value) in related.iter().flat_map(|x| &x.variables) {
        if value.is_empty() {
            continue;
        }
        let reference = format!("${{{name}}}");
        reason = reason.replace(&format!("{value:?}"), &reference);
        let escaped = value.escape_debug().to_string();
        // Very short values would garble the message and are no secrets.
        for form in [value.as_str(), escaped.as_str()] {
            if form.chars().count() >= 3 {
                reason = reason.replace(form, &reference);
            }
        }
    }
    // A part of the value that is still quoted (a duration's unit, say).
    reason = unquoted(&reason, '"', |inner| inner.contains("${"));
    let sources: Vec<String> = related
        .iter()
        .filter(|x| x.path == key)
        .flat_map(|x| x.variables.iter().map(|(name, _)| format!("${{{name}}}")))
        .collect();
    if !sources.is_empty() {
        reason = format!("{reason} (value from {})", sources.join(", "));
    }
    ConfigError::Invalid { key, reason }
}

fn expand_string(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
    variables: &mut Vec<(String, String)>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed ${ in value".to_string())?;
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{reference}}} is not a valid environment reference"
                ));
            }
            match (env(name), default) {
                (Some(v), _) => {
                    out.push_str(&v);
                    variables.push((name.to_string(), v));
                }
                (None, Some(d)) => {
                    out.push_str(d);
                    variables.push((name.to_string(), d.to_string()));
                }
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, env, error};

    fn parse_with(text: &str, name: &str, value: &str) -> String {
        let with = |n: &str| {
            if n == name {
                Some(value.to_string())
            } else {
                env(n)
            }
        };
        Config::parse(text, Path::new("/etc/hss/config.yml"), &with)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_value_from_the_environment_is_named_by_its_variable_not_shown() {
        let secret = "hunter2 x/y!";
        let cases = [
            (
                format!("page_size: ${{SECRET}}\n{MINIMAL}"),
                "page_size: expected u32, found a string (value from ${SECRET})",
            ),
            (
                format!("poll_interval: ${{SECRET}}\n{MINIMAL}"),
                "poll_interval: ${SECRET} is not a duration",
            ),
            (
                format!("api_rate_limit: '5/${{SECRET}}'\n{MINIMAL}"),
                "api_rate_limit: ",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: '${SECRET}', project_id: p}]\n"
                    .to_string(),
                "targets[0].region: ${SECRET} is not a region id",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: r, project_id: p, endpoint: 'ftp://${SECRET}/x'}]\n"
                    .to_string(),
                "targets[0].endpoint: ",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: r, project_id: p, latest_version_only: '${SECRET}'}]\n"
                    .to_string(),
                "targets[0].latest_version_only: expected a boolean, found a string \
                 (value from ${SECRET})",
            ),
            (
                "credentials: {access_key: a, secret_key: b}\n\
                 targets: [{region: r, project_id: p, image_types: ['${SECRET}']}]\n"
                    .to_string(),
                "targets[0].image_types[0]: unknown image type ${SECRET}",
            ),
        ];
        for (text, expected) in &cases {
            let message = parse_with(text, "SECRET", secret);
            assert!(message.starts_with(expected), "got {message}");
            assert!(message.ends_with("(value from ${SECRET})"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let message = parse_with(
            &format!("page_size: ${{SECRET}}\n{MINIMAL}"),
            "SECRET",
            "hunter2-xyz",
        );
        assert_eq!(
            message,
            "page_size: expected u32, found a string (value from ${SECRET})"
        );
        // A part of the value quoted by a parser (a duration's unit) goes too.
        let message = parse_with(
            &format!("stale_after: ${{STALE}}\n{MINIMAL}"),
            "STALE",
            "5hunter2xyz",
        );
        assert!(message.starts_with("stale_after: "), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        // The key path and the variable are named; errors elsewhere are not
        // touched.
        let message = parse_with(
            &format!("page_size: 500\nstate_file: ${{SECRET}}\n{MINIMAL}"),
            "SECRET",
            secret,
        );
        assert_eq!(
            message,
            "page_size: 500 is outside 1..=200, the range the API accepts"
        );
    }

    #[test]
    fn unset_environment_variable_is_named() {
        let message = error(
            "credentials: {access_key: a, secret_key: '${MISSING_SK}'}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert_eq!(
            message,
            "credentials.secret_key: environment variable MISSING_SK is not set"
        );
    }

    #[test]
    fn env_expansion_handles_defaults_and_escapes() {
        assert_eq!(
            expand_string("a${MISSING:-b}c", &env, &mut Vec::new()).unwrap(),
            "abc"
        );
        assert_eq!(
            expand_string("$$HOME", &env, &mut Vec::new()).unwrap(),
            "$HOME"
        );
        assert_eq!(
            expand_string("cost $5", &env, &mut Vec::new()).unwrap(),
            "cost $5"
        );
        assert!(expand_string("${BAD NAME}", &env, &mut Vec::new()).is_err());
        assert!(expand_string("${OPEN", &env, &mut Vec::new()).is_err());
    }
}
