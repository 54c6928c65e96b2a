//! Log output in the two formats Prometheus exporters use: logfmt (the
//! default) and JSON, one line per event.
//!
//! Place in the data flow: beside it; every module logs through `tracing`, and
//! this module decides how lines look. Fields named `target_name` in the code
//! are written as `target` (the name `target` is taken by `tracing` itself).

use std::fmt::{self, Write as _};
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ts=... level=info msg="..." key=value`.
    Logfmt,
    /// One JSON object per line.
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logfmt" => Ok(Self::Logfmt),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}; expected logfmt or json"
            )),
        }
    }
}

/// Parses a `--log.level` value.
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s {
        "debug" => Ok(Level::DEBUG),
        "info" => Ok(Level::INFO),
        "warn" => Ok(Level::WARN),
        "error" => Ok(Level::ERROR),
        other => Err(format!(
            "unknown log level {other:?}; expected debug, info, warn or error"
        )),
    }
}

/// Installs the global subscriber, writing to standard error.
pub fn init(level: Level, format: Format) {
    // The project's crates at the chosen level (the simulator is its own
    // crate), every dependency at warn.
    let level = level.as_str().to_ascii_lowercase();
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,hss_swr_exporter={level},hss_sim={level},hss_api={level}"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = builder.event_format(Lines(format)).try_init();
}

/// Formats events as logfmt or JSON lines.
#[derive(Debug, Clone, Copy)]
pub struct Lines(pub Format);

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs.push((rename(field.name()), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.pairs.push((rename(field.name()), text));
        }
    }
}

fn rename(name: &'static str) -> &'static str {
    if name == "target_name" {
        "target"
    } else {
        name
    }
}

/// Quotes a logfmt value when it needs it.
fn logfmt_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && c != '\\' && !c.is_control());
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let mut line = String::with_capacity(128);
        match self.0 {
            Format::Logfmt => {
                line.push_str("ts=");
                line.push_str(&ts);
                line.push_str(" level=");
                line.push_str(&level);
                line.push_str(" msg=");
                logfmt_value(&mut line, &fields.message);
                for (key, value) in &fields.pairs {
                    line.push(' ');
                    line.push_str(key);
                    line.push('=');
                    logfmt_value(&mut line, value);
                }
            }
            Format::Json => {
                let mut object = serde_json::Map::new();
                object.insert("ts".into(), ts.into());
                object.insert("level".into(), level.into());
                object.insert("msg".into(), fields.message.into());
                for (key, value) in fields.pairs {
                    object.insert(key.to_string(), value.into());
                }
                line.push_str(&serde_json::Value::Object(object).to_string());
            }
        }
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_quotes_only_what_needs_it() {
        let mut out = String::new();
        logfmt_value(&mut out, "plain");
        out.push(' ');
        logfmt_value(&mut out, "two words \"q\"\n");
        out.push(' ');
        logfmt_value(&mut out, "");
        assert_eq!(out, r#"plain "two words \"q\"\n" """#);
    }

    #[test]
    fn formats_and_levels_parse() {
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().is_err());
        assert_eq!(parse_level("warn"), Ok(Level::WARN));
        assert!(parse_level("loud").is_err());
    }
}
