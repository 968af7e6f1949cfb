//! Tests of the config file: keys, types, precedence, masking, the printed file.

use super::*;
use std::net::SocketAddr;

/// A command shaped like the broker's.
#[derive(Debug, clap::Parser)]
struct TestCli {
    #[arg(long, env = "BROKER_CONFIG_TEST_NEVER_SET")]
    config: Option<PathBuf>,
    #[arg(long, default_value = "0.0.0.0:5672")]
    listen: SocketAddr,
    #[arg(long = "user")]
    users: Vec<String>,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_message_size: u64,
    #[arg(long)]
    max_connections: Option<usize>,
    #[arg(long)]
    management_listen: Option<String>,
    #[arg(long)]
    management_tls: bool,
    /// Cargo sets CARGO_PKG_NAME for the test process: an environment value.
    #[arg(long, env = "CARGO_PKG_NAME", default_value = "dflt")]
    pkg: String,
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
    f
}

fn load_with(text: &str, args: &[&str]) -> Result<Loaded<TestCli>, LoadError> {
    let f = file(text);
    let mut argv: Vec<OsString> = vec!["broker".into(), "--config".into()];
    argv.push(f.path().into());
    argv.extend(args.iter().map(OsString::from));
    load::<TestCli>(argv)
}

fn config_error(r: Result<Loaded<TestCli>, LoadError>) -> String {
    match r {
        Err(LoadError::Config(e)) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn precedence_is_cli_then_env_then_file_then_default() {
    let l = load_with(
        "max_message_size = 500\nmax-connections = 7\npkg = \"from-file\"\n",
        &["--max-connections", "9"],
    )
    .expect("load");
    assert_eq!(l.cli.max_message_size, 500, "file over default");
    assert_eq!(l.cli.max_connections, Some(9), "command line over file");
    assert_eq!(l.cli.listen.port(), 5672, "default");
    if let Ok(env) = std::env::var("CARGO_PKG_NAME") {
        assert_eq!(l.cli.pkg, env, "environment over file");
    }
    let source = |k: &str| {
        l.settings
            .iter()
            .find(|s| s.key == k)
            .map(|s| s.source)
            .expect("key")
    };
    assert_eq!(source("max-message-size"), Source::File);
    assert_eq!(source("max-connections"), Source::CommandLine);
    assert_eq!(source("listen"), Source::Default);
    assert_eq!(source("management-listen"), Source::Unset);
}

#[test]
fn arrays_and_booleans() {
    let l = load_with(
        "user = [\"a:pw\", \"b:secret:monitoring\"]\nmanagement_tls = true\n",
        &[],
    )
    .expect("load");
    assert_eq!(l.cli.users, ["a:pw", "b:secret:monitoring"]);
    assert!(l.cli.management_tls);
    let users = l
        .settings
        .iter()
        .find(|s| s.key == "user")
        .expect("user key");
    assert_eq!(users.values, ["a:****", "b:****:monitoring"]);
    let printed = to_toml(&l.settings);
    assert!(!printed.contains("secret"), "{printed}");
    assert!(printed.contains("management_tls = true"), "{printed}");

    // The command line replaces the whole array; `false` leaves the flag off.
    let l = load_with(
        "user = [\"a:pw\"]\nmanagement_tls = false\n",
        &["--user", "c:pw"],
    )
    .expect("load");
    assert_eq!(l.cli.users, ["c:pw"]);
    assert!(!l.cli.management_tls);
}

#[test]
fn unknown_keys_are_refused_naming_the_file_and_key() {
    let f = file("max_mesage_size = 5\n");
    let argv: Vec<OsString> = vec!["broker".into(), "--config".into(), f.path().into()];
    let e = config_error(load::<TestCli>(argv));
    assert!(e.contains("unknown key `max_mesage_size`"), "{e}");
    assert!(e.contains(&f.path().display().to_string()), "{e}");
    for k in ["config", "help", "version"] {
        let e = config_error(load_with(&format!("{k} = \"x\"\n"), &[]));
        assert!(e.contains(&format!("unknown key `{k}`")), "{e}");
    }
}

#[test]
fn wrong_types_and_values_are_refused() {
    let e = config_error(load_with("max_message_size = \"5\"\n", &[]));
    assert!(
        e.contains("key `max_message_size` takes an integer, not a string"),
        "{e}"
    );
    let e = config_error(load_with("user = \"a:b\"\n", &[]));
    assert!(e.contains("key `user` takes an array of strings"), "{e}");
    let e = config_error(load_with("management_tls = \"yes\"\n", &[]));
    assert!(e.contains("takes a boolean"), "{e}");
    let e = config_error(load_with("listen = 5672\n", &[]));
    assert!(e.contains("takes a string, not an integer"), "{e}");
    let e = config_error(load_with("max_message_size = 5000\n", &[]));
    assert!(
        e.contains("key `max_message_size`: invalid value '5000'"),
        "{e}"
    );
    let e = config_error(load_with("listen = \"nowhere\"\n", &[]));
    assert!(e.contains("key `listen`: invalid value 'nowhere'"), "{e}");
    let e = config_error(load_with("max_connections = 1\nmax-connections = 2\n", &[]));
    assert!(e.contains("given twice"), "{e}");
}

#[test]
fn syntax_errors_have_a_line_and_unreadable_files_a_name() {
    let e = config_error(load_with("listen = \"127.0.0.1:0\"\nfoo = = 1\n", &[]));
    assert!(e.contains("invalid config file"), "{e}");
    assert!(e.contains("line 2"), "{e}");
    let argv: Vec<OsString> = vec![
        "broker".into(),
        "--config".into(),
        "/nonexistent/b.toml".into(),
    ];
    let e = config_error(load::<TestCli>(argv));
    assert!(
        e.contains("cannot read config file /nonexistent/b.toml"),
        "{e}"
    );
}

#[test]
fn values_starting_with_a_dash_stay_values() {
    let l = load_with("management_listen = \"-x\"\n", &[]).expect("load");
    assert_eq!(l.cli.management_listen.as_deref(), Some("-x"));
}
