//! The effective settings: each key's value and where it came from, for the start-up
//! log and `--print-config` (as a TOML file), with passwords masked.

use std::collections::BTreeSet;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use super::{Kind, Setting, Source, keys, kind, repeated};

/// `value` of `key` with any password masked: `--user`'s NAME:PASSWORD[:TAGS], and
/// whole values of keys that name a password or secret.
pub(super) fn mask(key: &str, value: &str) -> String {
    if key.contains("password") || key.contains("secret") {
        return "****".to_owned();
    }
    if key == "user" {
        let mut parts = value.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        return match (parts.next(), parts.next()) {
            (Some(_), Some(tags)) => format!("{name}:****:{tags}"),
            (Some(_), None) => format!("{name}:****"),
            _ => name.to_owned(),
        };
    }
    value.to_owned()
}

/// Every key's effective value in `matches`; `from_file` names the ids the file set.
pub(super) fn settings(
    cmd: &Command,
    matches: &ArgMatches,
    from_file: &BTreeSet<String>,
) -> Vec<Setting> {
    keys(cmd)
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let key = arg.get_long()?.to_owned();
            let values: Vec<String> = matches
                .get_raw(id)
                .map(|raw| raw.map(|v| mask(&key, &v.to_string_lossy())).collect())
                .unwrap_or_default();
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) if from_file.contains(id) => Source::File,
                Some(ValueSource::CommandLine) => Source::CommandLine,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ if from_file.contains(id) => Source::File,
                Some(_) => Source::Default,
                None => Source::Unset,
            };
            Some(Setting {
                key,
                values,
                repeated: repeated(arg),
                kind: kind(arg),
                source,
            })
        })
        .collect()
}

/// One setting's value as TOML (`None` if not set).
fn toml_value(s: &Setting) -> Option<String> {
    let one = |v: &str| -> toml::Value {
        match s.kind {
            Kind::Bool => v
                .parse::<bool>()
                .map_or_else(|_| toml::Value::String(v.to_owned()), toml::Value::Boolean),
            Kind::Integer => v
                .parse::<i64>()
                .map_or_else(|_| toml::Value::String(v.to_owned()), toml::Value::Integer),
            Kind::Float => v
                .parse::<f64>()
                .map_or_else(|_| toml::Value::String(v.to_owned()), toml::Value::Float),
            Kind::String => toml::Value::String(v.to_owned()),
        }
    };
    if s.repeated {
        Some(toml::Value::Array(s.values.iter().map(|v| one(v)).collect()).to_string())
    } else {
        s.values.first().map(|v| one(v).to_string())
    }
}

/// The settings as a TOML config file, each with its source as a comment (unset ones
/// commented out). Passwords are masked.
pub fn to_toml(settings: &[Setting]) -> String {
    let mut out = String::from("# Effective settings (passwords masked).\n");
    for s in settings {
        let line = match toml_value(s) {
            Some(v) => format!("{} = {v} # {}\n", s.key.replace('-', "_"), s.source),
            None => format!("# {} = # {}\n", s.key.replace('-', "_"), s.source),
        };
        out.push_str(&line);
    }
    out
}

/// Logs the config file loaded and every effective setting (info).
pub fn log(file: Option<&Path>, settings: &[Setting]) {
    match file {
        Some(f) => tracing::info!(file = %f.display(), "loaded config file"),
        None => tracing::info!("no config file (--config / BROKER_CONFIG)"),
    }
    for s in settings {
        let value = toml_value(s).unwrap_or_else(|| "(not set)".to_owned());
        tracing::info!(source = %s.source, "setting {} = {value}", s.key.replace('-', "_"));
    }
}
