//! The configuration file as written: the raw serde schema, and the YAML
//! parser's and serde's messages made safe to show.
//!
//! Place in the data flow: the first step of `config`. [`read_yaml`] parses
//! the text into a YAML value; after `${VAR}` expansion (`env.rs`),
//! [`deserialize`] reads it into [`RawConfig`]: every key optional, unknown
//! keys refused, nothing checked beyond types (`validate.rs` does the rest).
//! The parser and serde quote the values they refuse, and such a value may be
//! a secret key or password: their messages are rewritten here to name the
//! key and what was expected, never the value.

use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::ConfigError;

/// Parses `text` (named `origin` in messages) as YAML; a syntax error gives
/// the position, not the value.
pub(super) fn read_yaml(text: &str, origin: &Path) -> Result<Value, ConfigError> {
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_path_buf(),
        message: syntax_without_values(&e.to_string()),
    })
}

/// Reads an expanded YAML value into the raw schema; an error names the key
/// and what was expected, never the value.
pub(super) fn deserialize(value: Value) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = without_values(&e.inner().to_string());
        ConfigError::invalid(if key == "." { "config".into() } else { key }, message)
    })
}

/// A value written as text, or as a number where text was meant (a duration
/// of 0, or a mistake worth a precise message).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Number(u64),
    Text(String),
}

/// The file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub(super) api_rate_limit: Option<DurationValue>,
    pub(super) malicious_interval: Option<DurationValue>,
    pub(super) poll_interval: Option<DurationValue>,
    pub(super) changes_interval: Option<DurationValue>,
    pub(super) changes_overlap: Option<DurationValue>,
    pub(super) request_timeout: Option<DurationValue>,
    pub(super) page_size: Option<u32>,
    pub(super) concurrency: Option<usize>,
    pub(super) max_retries: Option<u32>,
    pub(super) stale_after: Option<DurationValue>,
    pub(super) image_metrics: Option<bool>,
    pub(super) max_image_series: Option<usize>,
    pub(super) max_namespaces: Option<usize>,
    pub(super) state_file: Option<String>,
    pub(super) max_response_bytes: Option<usize>,
    pub(super) credentials: Option<RawCredentials>,
    pub(super) targets: Option<Vec<RawTarget>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) access_key: Option<String>,
    pub(super) secret_key: Option<String>,
    pub(super) secret_key_file: Option<String>,
    pub(super) security_token: Option<String>,
    pub(super) security_token_file: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) iam: Option<RawIam>,
    pub(super) metadata: Option<RawMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIam {
    pub(super) domain_name: Option<String>,
    pub(super) user_name: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetadata {
    pub(super) endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Option<String>,
    pub(super) region: Option<String>,
    pub(super) project_id: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) iam_endpoint: Option<String>,
    pub(super) enterprise_project_ids: Option<Vec<String>>,
    pub(super) image_types: Option<Vec<String>>,
    pub(super) latest_version_only: Option<bool>,
    pub(super) api: Option<String>,
    pub(super) credentials: Option<RawCredentials>,
}

/// A deserializer's message without the offending value: serde quotes the
/// scalar it refused (`invalid type: integer `12345`, expected a string`),
/// and that scalar may be a secret key or password. What stays is what was
/// expected and the kind of value found: `expected a string, found an
/// integer`. Messages about keys (unknown, missing, duplicate field) name
/// keys, not values, and stay; anything else unknown loses its quoted parts.
pub(super) fn without_values(message: &str) -> String {
    for (prefix, lead) in [
        ("invalid type: ", ""),
        ("invalid value: ", "invalid value, "),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = match rest.rfind(", expected ") {
                Some(at) => (&rest[..at], Some(&rest[at + ", expected ".len()..])),
                None => (rest, None),
            };
            let found = value_kind(found);
            return match (expected, found) {
                (Some(expected), Some(found)) => {
                    format!("{lead}expected {expected}, found {found}")
                }
                (Some(expected), None) => format!("{lead}expected {expected}"),
                (None, Some(found)) => format!("this value ({found}) is not accepted here"),
                (None, None) => "this value is not accepted here".to_string(),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let tail = [", expected ", ", there are no variants"]
            .iter()
            .filter_map(|marker| rest.rfind(marker))
            .max()
            .map_or("", |at| &rest[at..]);
        return format!("unknown variant{tail}");
    }
    if ["unknown field ", "missing field ", "duplicate field "]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return message.to_string();
    }
    unquoted(message, '`', |_| false)
}

/// A YAML parser's message without a value: the parser checks tags while it
/// reads (`secret_key: !!int hunter2` gives `credentials.secret_key: invalid
/// value: string "hunter2", expected an integer at line 1 column 42`) and
/// serde quotes big integers. Such a message goes through
/// [`without_values`]; scanner messages (which quote only punctuation such as
/// `','`) and duplicate keys stay; anything else loses its quoted parts. The
/// position stays.
fn syntax_without_values(message: &str) -> String {
    let (body, position) = match message.rfind(" at line ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let body = match ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|p| body.find(p))
        .min()
    {
        Some(at) => format!("{}{}", &body[..at], without_values(&body[at..])),
        None if body.contains("duplicate entry with key") => body.to_string(),
        None => unquoted(body, '`', |inner| inner.chars().count() <= 1),
    };
    format!("{body}{position}")
}

/// The kind of a value as serde's `Unexpected` prints it (`integer `5``,
/// `string "x"`, `sequence`), with its article; `None` for anything else.
fn value_kind(found: &str) -> Option<&'static str> {
    let kind = found.split(['`', '"']).next().unwrap_or_default().trim();
    Some(match kind {
        "boolean" => "a boolean",
        "integer" => "an integer",
        "floating point" => "a floating point number",
        "character" => "a character",
        "string" => "a string",
        "byte array" => "a byte array",
        "unit value" => "null",
        "Option value" => "an optional value",
        "sequence" => "a sequence",
        "map" => "a map",
        "enum" | "unit variant" | "newtype variant" | "tuple variant" | "struct variant" => {
            "a tagged value"
        }
        _ => return None,
    })
}

/// `text` with every span between a pair of `quote` characters, and every
/// `"..."` span, replaced by `…` unless `keep` accepts its content.
pub(super) fn unquoted(text: &str, quote: char, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(open) = rest.find([quote, '"']) else {
            out.push_str(rest);
            return out;
        };
        let mark = rest[open..].chars().next().unwrap_or('"');
        let after = &rest[open + mark.len_utf8()..];
        let Some(close) = after.find(mark) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..open]);
        let inner = &after[..close];
        out.push(mark);
        out.push_str(if keep(inner) { inner } else { "…" });
        out.push(mark);
        rest = &after[close + mark.len_utf8()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, error};

    #[test]
    fn a_typo_in_a_key_is_refused_naming_it() {
        let message = error(
            "
credentials: {access_key: a, secret_key: b}
targets:
  - regoin: cn-north-4
    project_id: p
",
        );
        assert!(
            message.starts_with("targets[0].regoin: unknown field `regoin`"),
            "{message}"
        );
        assert!(!message.contains('\n'));
        let message = error("poll_intreval: 5m\ntargets: []\n");
        assert!(
            message.contains("unknown field `poll_intreval`"),
            "{message}"
        );
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_named_not_shown() {
        let cases = [
            (
                "credentials: {access_key: AK, secret_key: 12345}\n",
                "credentials.secret_key: expected a string, found an integer",
                "12345",
            ),
            (
                "credentials: {iam: {domain_name: d, user_name: u, password: 98765}}\n",
                "credentials.iam.password: expected a string, found an integer",
                "98765",
            ),
            (
                "credentials: {access_key: AK, secret_key: s, security_token: 3.14159}\n",
                "credentials.security_token: expected a string, found a floating point number",
                "3.14159",
            ),
            (
                "credentials: {access_key: AK, secret_key: [hunter2, x]}\n",
                "credentials.secret_key: expected a string, found a sequence",
                "hunter2",
            ),
            (
                "credentials: {access_key: AK, secret_key: {hunter2: x}}\n",
                "credentials.secret_key: expected a string, found a map",
                "hunter2",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (credentials, expected, secret) in cases {
            let path = dir.path().join("config.yml");
            std::fs::write(
                &path,
                format!("{credentials}targets: [{{region: r, project_id: p}}]\n"),
            )
            .unwrap();
            let message = Config::load(&path).unwrap_err().to_string();
            assert_eq!(message, expected);
            assert!(!message.contains(secret), "{message}");
        }
        // Within a target too, and with booleans.
        let message = error(
            "targets: [{region: r, project_id: p, credentials: {access_key: AK, secret_key: true}}]\n",
        );
        assert_eq!(
            message,
            "targets[0].credentials.secret_key: expected a string, found a boolean"
        );
    }

    #[test]
    fn yaml_tags_and_huge_numbers_do_not_show_the_value() {
        let cases = [
            (
                "credentials: {access_key: a, secret_key: !!int hunter2}\n",
                "config file /etc/hss/config.yml is not valid YAML: credentials.secret_key: \
                 invalid value, expected an integer, found a string at line 2 column 42",
            ),
            (
                "credentials: {access_key: a, secret_key: !!float hunter2}\n",
                "config file /etc/hss/config.yml is not valid YAML: credentials.secret_key: \
                 invalid value, expected a float, found a string at line 2 column 42",
            ),
            (
                "credentials: {access_key: a, secret_key: 'hunter2}\n",
                "config file /etc/hss/config.yml is not valid YAML: found unexpected end of stream",
            ),
            (
                "credentials: {access_key: a, secret_key: hunter2, secret_key: hunter3}\n",
                "config file /etc/hss/config.yml is not valid YAML: credentials: \
                 duplicate entry with key \"secret_key\"",
            ),
        ];
        for (credentials, expected) in cases {
            let message = error(&format!(
                "\n{credentials}targets: [{{region: r, project_id: p}}]\n"
            ));
            assert!(message.starts_with(expected), "got {message}");
            assert!(!message.contains("hunter"), "{message}");
        }
        let message = error(&format!(
            "page_size: 123456789012345678901234567890\n{MINIMAL}"
        ));
        assert!(
            message.contains("page_size: expected any YAML value, found an integer at line 1"),
            "{message}"
        );
        assert!(!message.contains("123456"), "{message}");
        assert_eq!(
            syntax_without_values("did not find expected ',' or '}' at line 1 column 50"),
            "did not find expected ',' or '}' at line 1 column 50"
        );
    }

    #[test]
    fn serde_messages_lose_the_value_and_keep_the_expectation() {
        assert_eq!(
            without_values("invalid type: string \"a, expected b\", expected u32"),
            "expected u32, found a string"
        );
        assert_eq!(
            without_values("invalid value: integer `-1`, expected u32"),
            "invalid value, expected u32, found an integer"
        );
        assert_eq!(
            without_values("unknown variant `hunter2, expected x`, expected one of `a`, `b`"),
            "unknown variant, expected one of `a`, `b`"
        );
        assert_eq!(
            without_values("unknown field `regoin`, expected one of `name`, `region`"),
            "unknown field `regoin`, expected one of `name`, `region`"
        );
        assert_eq!(
            without_values("something about `hunter2` and \"hunter3\""),
            "something about `…` and \"…\""
        );
    }

    #[test]
    fn syntax_errors_give_the_position() {
        let message = error("targets: [\n");
        assert!(
            message.starts_with("config file /etc/hss/config.yml is not valid YAML"),
            "{message}"
        );
        assert!(message.contains("line"), "{message}");
    }
}
