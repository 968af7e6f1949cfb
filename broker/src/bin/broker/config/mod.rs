//! The configuration file (`broker --config FILE`, or `BROKER_CONFIG`): a TOML file
//! whose keys are the serving flags' long names.
//!
//! Nothing here knows the broker's flags: every flag of the clap command (except
//! `--config`, `--print-config`, `--help` and `--version`) is a key, so a flag added
//! later is a key with no extra code. Keys may be spelled with `-` or `_`
//! (`max_connections = 100`, `management-listen = "off"`); a flag whose long name has
//! dots is a dotted key (`deprecated_features.permit.global_qos = false`, or `global_qos`
//! in a `[deprecated_features.permit]` table); repeatable flags take TOML
//! arrays, on/off flags TOML booleans, numeric flags TOML numbers and every other flag
//! a TOML string. Each value is checked with the flag's own value parser, so a bad
//! value is refused naming the file and the key.
//!
//! Precedence: command-line flag > environment variable > config file > default. The
//! command line is parsed once to learn where each value came from; every file key
//! whose flag was neither given nor set in the environment is injected as
//! `--long=value` arguments, and the result is parsed again. A repeatable flag given on
//! the command line (or in its environment variable) replaces the file's whole array.

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

mod settings;

use settings::settings;
pub use settings::{log, to_toml};

/// The argument id of the config file flag.
const CONFIG_ID: &str = "config";
/// Argument ids that are never config keys.
const NOT_KEYS: &[&str] = &[CONFIG_ID, "print_config", "help", "version"];

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML (the message has the line and column).
    #[error("invalid config file {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// A key that is no flag of the broker.
    #[error("config file {}: unknown key `{key}` (known keys: {known})", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// The known keys, comma-separated.
        known: String,
    },
    /// The same key twice (once with `-`, once with `_`).
    #[error("config file {}: key `{key}` is given twice", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The key as written the second time.
        key: String,
    },
    /// A value of the wrong TOML type.
    #[error("config file {}: key `{key}` takes {expected}, not {found}", path.display())]
    Type {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// What the key takes.
        expected: String,
        /// The TOML type found.
        found: &'static str,
    },
    /// A value the flag's parser refuses.
    #[error("config file {}: key `{key}`: {message}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// The parser's message.
        message: String,
    },
    /// The settings do not go together once the file is applied (e.g. a flag that
    /// requires another).
    #[error("with config file {}: {message}", path.display())]
    Combined {
        /// The file.
        path: PathBuf,
        /// clap's message.
        message: String,
    },
}

/// Why the command line and configuration could not be turned into settings.
#[derive(Debug)]
pub enum LoadError {
    /// A command-line error (or `--help`/`--version`): `exit()` prints it as clap does.
    Clap(clap::Error),
    /// A configuration file error: print it and exit with code 1.
    Config(ConfigError),
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    CommandLine,
    /// An environment variable.
    Env,
    /// The config file.
    File,
    /// The documented default.
    Default,
    /// Not set at all (an optional setting).
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CommandLine => "command line",
            Self::Env => "environment",
            Self::File => "config file",
            Self::Default => "default",
            Self::Unset => "not set",
        })
    }
}

/// The TOML type a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false`.
    Bool,
    /// An integer.
    Integer,
    /// A number (integer or float).
    Float,
    /// A string.
    String,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Self::Bool => "a boolean",
            Self::Integer => "an integer",
            Self::Float => "a number",
            Self::String => "a string",
        }
    }

    fn accepts(self, v: &toml::Value) -> bool {
        matches!(
            (self, v),
            (Self::Bool, toml::Value::Boolean(_))
                | (Self::Integer | Self::Float, toml::Value::Integer(_))
                | (Self::Float, toml::Value::Float(_))
                | (Self::String, toml::Value::String(_))
        )
    }
}

/// One effective setting, for the start-up log and `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key (the flag's long name, with `-`).
    pub key: String,
    /// Its value(s), passwords masked; empty if not set.
    pub values: Vec<String>,
    /// Whether the key takes an array.
    pub repeated: bool,
    /// The TOML type of a value.
    pub kind: Kind,
    /// Where it came from.
    pub source: Source,
}

/// The parsed command line with the config file applied.
#[derive(Debug)]
pub struct Loaded<C> {
    /// The parsed command.
    pub cli: C,
    /// The config file applied, if any.
    pub file: Option<PathBuf>,
    /// Every config key's effective value (empty for a subcommand).
    pub settings: Vec<Setting>,
}

/// The config keys of `cmd`: every argument with a long name but the excluded ones.
pub(super) fn keys(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !NOT_KEYS.contains(&a.get_id().as_str())
            && !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// The TOML type of `arg`'s values.
pub(super) fn kind(arg: &Arg) -> Kind {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return Kind::Bool;
    }
    if matches!(arg.get_action(), ArgAction::Count) {
        return Kind::Integer;
    }
    let t = arg.get_value_parser().type_id();
    let integers = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<u128>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<i128>(),
        TypeId::of::<isize>(),
    ];
    if integers.iter().any(|i| t == *i) {
        Kind::Integer
    } else if t == TypeId::of::<f64>() || t == TypeId::of::<f32>() {
        Kind::Float
    } else if t == TypeId::of::<bool>() {
        Kind::Bool
    } else {
        Kind::String
    }
}

pub(super) fn repeated(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A clap error's message on one line: without its `error: ` prefix, its usage and
/// its `--help` hint.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let joined = first
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .strip_prefix("error: ")
        .map_or_else(|| joined.clone(), str::to_owned)
}

/// Parses `argv` (program name first) as `C`, applying the config file named by the
/// `config` argument (from the command line or its environment variable), if any.
/// With a subcommand the file is not applied.
pub fn load<C: clap::Parser>(argv: Vec<OsString>) -> Result<Loaded<C>, LoadError> {
    let cmd = C::command();
    let first = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            return Err(LoadError::Clap(e));
        }
        // The file may complete the command line (`--tls-cert` given, `tls_key` in
        // the file): learn the sources leniently, the final parse is strict.
        Err(e) => match cmd.clone().ignore_errors(true).try_get_matches_from(&argv) {
            Ok(m) if m.get_one::<PathBuf>(CONFIG_ID).is_some() => m,
            _ => return Err(LoadError::Clap(e)),
        },
    };
    let file = match first.get_one::<PathBuf>(CONFIG_ID) {
        Some(path) if first.subcommand().is_none() => path.clone(),
        _ => {
            let cli = C::from_arg_matches(&first).map_err(LoadError::Clap)?;
            let settings = if first.subcommand().is_none() {
                settings(&cmd, &first, &BTreeSet::new())
            } else {
                Vec::new()
            };
            return Ok(Loaded {
                cli,
                file: None,
                settings,
            });
        }
    };
    let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
        path: file.clone(),
        source,
    })?;
    let (extra, injected) = injections(&cmd, &first, &file, &text)?;
    let mut full: Vec<OsString> = Vec::with_capacity(argv.len() + extra.len());
    full.extend(argv.first().cloned());
    full.extend(extra);
    full.extend(argv.iter().skip(1).cloned());
    let matches = cmd
        .clone()
        .try_get_matches_from(&full)
        .map_err(|e| ConfigError::Combined {
            path: file.clone(),
            message: clap_message(&e),
        })?;
    let cli = C::from_arg_matches(&matches).map_err(|e| ConfigError::Combined {
        path: file.clone(),
        message: clap_message(&e),
    })?;
    Ok(Loaded {
        cli,
        settings: settings(&cmd, &matches, &injected),
        file: Some(file),
    })
}

/// The `--long=value` arguments for `text`'s keys whose flags `first` did not get
/// from the command line or the environment, and the ids of the keys the file set
/// (and nothing overrode).
fn injections(
    cmd: &Command,
    first: &ArgMatches,
    file: &Path,
    text: &str,
) -> Result<(Vec<OsString>, BTreeSet<String>), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
    let by_long: BTreeMap<&str, &Arg> = keys(cmd)
        .filter_map(|a| a.get_long().map(|l| (l, a)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut applied = BTreeSet::new();
    let mut extra = Vec::new();
    let mut flat = Vec::new();
    flatten("", &table, &by_long, &mut flat);
    for (key, value) in flat {
        let key = &key;
        let long = key.replace('_', "-");
        let Some(arg) = by_long.get(long.as_str()) else {
            return Err(ConfigError::UnknownKey {
                path: file.to_owned(),
                key: key.clone(),
                known: by_long.keys().copied().collect::<Vec<_>>().join(", "),
            });
        };
        let id = arg.get_id().as_str().to_owned();
        if !seen.insert(id.clone()) {
            return Err(ConfigError::Duplicate {
                path: file.to_owned(),
                key: key.clone(),
            });
        }
        let values = checked_values(arg, key, value, file)?;
        if matches!(
            first.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        applied.insert(id);
        for v in values {
            extra.push(match v {
                Some(v) => OsString::from(format!("--{long}={v}")),
                None => OsString::from(format!("--{long}")),
            });
        }
    }
    Ok((extra, applied))
}

/// `table`'s keys with tables opened: `a.b = 1` and `[a] b = 1` both give `a.b`. A
/// table under a key of its own (`[listen]`) stays a value, refused by its type.
fn flatten<'t>(
    prefix: &str,
    table: &'t toml::Table,
    known: &BTreeMap<&str, &Arg>,
    out: &mut Vec<(String, &'t toml::Value)>,
) {
    for (key, value) in table {
        let key = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) if !known.contains_key(key.replace('_', "-").as_str()) => {
                flatten(&format!("{key}."), inner, known, out);
            }
            other => out.push((key, other)),
        }
    }
}

/// `value` checked against `arg`: the values to inject (`None` is the bare flag).
fn checked_values(
    arg: &Arg,
    key: &str,
    value: &toml::Value,
    file: &Path,
) -> Result<Vec<Option<String>>, ConfigError> {
    let kind = kind(arg);
    let repeated = repeated(arg);
    let wrong = |found: &toml::Value| ConfigError::Type {
        path: file.to_owned(),
        key: key.to_owned(),
        expected: if repeated {
            format!(
                "an array of {}s",
                kind.describe()
                    .trim_start_matches("a ")
                    .trim_start_matches("an ")
            )
        } else {
            kind.describe().to_owned()
        },
        found: type_name(found),
    };
    let items: Vec<&toml::Value> = match (repeated, value) {
        (true, toml::Value::Array(items)) => items.iter().collect(),
        (false, toml::Value::Array(_)) | (true, _) => return Err(wrong(value)),
        (false, v) => vec![v],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !kind.accepts(item) {
            return Err(wrong(item));
        }
        match (arg.get_action(), item) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => out.extend(b.then_some(None)),
            (ArgAction::SetFalse, toml::Value::Boolean(b)) => out.extend((!b).then_some(None)),
            (ArgAction::Count, toml::Value::Integer(n)) => {
                out.extend((0..(*n).max(0)).map(|_| None));
            }
            (_, v) => {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                check_with_parser(arg, &text).map_err(|message| ConfigError::Value {
                    path: file.to_owned(),
                    key: key.to_owned(),
                    message,
                })?;
                out.push(Some(text));
            }
        }
    }
    Ok(out)
}

/// Runs `arg`'s value parser on `text` alone (without its relations to other flags).
fn check_with_parser(arg: &Arg, text: &str) -> Result<(), String> {
    let alone = Arg::new(arg.get_id().clone())
        .long("value")
        .action(ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    Command::new("config")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--value={text}")])
        .map(|_| ())
        .map_err(|e| {
            // "invalid value 'x' for '--value <V>': why" without the stand-in flag.
            let message = clap_message(&e);
            match message.find(" for '--value") {
                Some(start) => match message[start..].find("': ") {
                    Some(end) => format!("{}{}", &message[..start], &message[start + end + 1..]),
                    None => message,
                },
                None => message,
            }
        })
}

#[cfg(test)]
mod tests;
