//! The command line of `broker ctl`: the connection options and the commands, named
//! as `rabbitmqctl`'s with dashes.

use clap::{Args, Subcommand, ValueEnum};

/// Output format of list commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Header line, then tab-separated rows (as `rabbitmqctl`).
    Tsv,
    /// A JSON array of objects.
    Json,
}

/// `broker ctl [OPTIONS] COMMAND`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The management API's base URL (`https://...` for a broker started with
    /// --management-tls).
    #[arg(
        long,
        global = true,
        env = "BROKER_MANAGEMENT_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    pub url: String,
    /// PEM file of the certificate(s) to trust for an `https://` URL instead of the
    /// built-in (Mozilla) roots, e.g. the broker's own self-signed --tls-cert.
    #[arg(long, global = true, env = "BROKER_CACERT", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// User for HTTP basic auth.
    #[arg(long = "user", global = true, default_value = "guest")]
    pub api_user: String,
    /// Password for HTTP basic auth.
    #[arg(long = "password", global = true, default_value = "guest")]
    pub api_password: String,
    /// Output format of list commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Tsv)]
    pub format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands, named as `rabbitmqctl`'s with dashes.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Queues (default columns: name messages).
    ListQueues {
        /// Columns, e.g. name messages_ready messages_unacknowledged consumers.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Exchanges (default columns: name type).
    ListExchanges {
        /// Columns.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Bindings, including the default exchange's (default: rabbitmqctl's columns).
    ListBindings {
        /// Columns.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Connections (default columns: name user peer_host peer_port state).
    ListConnections {
        /// Columns.
        columns: Vec<String>,
    },
    /// Channels (default columns: name user consumer_count messages_unacknowledged).
    ListChannels {
        /// Columns.
        columns: Vec<String>,
    },
    /// Consumers (default: rabbitmqctl's columns).
    ListConsumers {
        /// Columns.
        columns: Vec<String>,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Users and their tags.
    ListUsers,
    /// Virtual hosts.
    ListVhosts,
    /// Permissions in a vhost.
    ListPermissions {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Drops a queue's ready messages.
    PurgeQueue {
        /// Queue name.
        name: String,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Deletes a queue.
    DeleteQueue {
        /// Queue name.
        name: String,
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
        /// Only if it has no ready messages.
        #[arg(long)]
        if_empty: bool,
    },
    /// Closes a connection (by its name, `PEER -> LOCAL`) with 320 CONNECTION_FORCED.
    CloseConnection {
        /// Connection name as `list-connections` shows it.
        name: String,
        /// Reply text the client sees.
        reason: Option<String>,
    },
    /// Adds a user (no tags, no permissions).
    AddUser {
        /// User name.
        name: String,
        /// Password.
        password: String,
    },
    /// Deletes a user.
    DeleteUser {
        /// User name.
        name: String,
    },
    /// Changes a user's password.
    ChangePassword {
        /// User name.
        name: String,
        /// New password.
        password: String,
    },
    /// Replaces a user's tags.
    SetUserTags {
        /// User name.
        name: String,
        /// Tags (none clears them).
        tags: Vec<String>,
    },
    /// Sets a user's permissions in a vhost.
    SetPermissions {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// User name.
        user: String,
        /// Configure pattern.
        configure: String,
        /// Write pattern.
        write: String,
        /// Read pattern.
        read: String,
    },
    /// Removes a user's permissions in a vhost.
    ClearPermissions {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// User name.
        user: String,
    },
    /// Adds a vhost (persisted with a data directory).
    AddVhost {
        /// Vhost name.
        name: String,
    },
    /// Deletes a vhost: its queues, exchanges, messages and permissions go, and its
    /// connections are closed with 320 CONNECTION_FORCED.
    DeleteVhost {
        /// Vhost name.
        name: String,
    },
    /// Writes the broker's definitions (users with their password hashes, vhosts,
    /// permissions, queues, exchanges, bindings) as RabbitMQ's JSON, which
    /// `import-definitions` here or RabbitMQ's own import reads.
    ExportDefinitions {
        /// The file to write; `-` for standard output.
        file: String,
        /// Only this vhost's queues, exchanges and bindings (RabbitMQ's per-vhost form).
        #[arg(short = 'p', long = "vhost")]
        vhost: Option<String>,
    },
    /// Sets a policy: queue and exchange settings by name pattern (`rabbitmqctl
    /// set_policy`), applied at once.
    SetPolicy(PolicyArgs),
    /// The policies of a vhost (default columns: rabbitmqctl's).
    ListPolicies {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Clears a policy.
    ClearPolicy {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Policy name.
        name: String,
    },
    /// Sets an operator policy: limits (`max-length`, `max-length-bytes`,
    /// `message-ttl`, `expires`, `delivery-limit`) that cap the users' policies.
    SetOperatorPolicy(PolicyArgs),
    /// The operator policies of a vhost.
    ListOperatorPolicies {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
    },
    /// Clears an operator policy.
    ClearOperatorPolicy {
        /// The vhost.
        #[arg(short = 'p', long = "vhost", default_value = "/")]
        vhost: String,
        /// Policy name.
        name: String,
    },
    /// Creates what a definitions file (exported here or by RabbitMQ) has and the
    /// broker lacks; refuses a file with parameters, which the broker has not.
    ImportDefinitions {
        /// The file to read; `-` for standard input.
        file: String,
        /// Into this vhost only: the file's queues, exchanges and bindings.
        #[arg(short = 'p', long = "vhost")]
        vhost: Option<String>,
    },
}

/// `set-policy [-p VHOST] [--priority N] [--apply-to KIND] NAME PATTERN DEFINITION`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The vhost.
    #[arg(short = 'p', long = "vhost", default_value = "/")]
    pub vhost: String,
    /// Of the policies matching an object, the highest priority applies.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i64,
    /// What it applies to: queues, classic_queues, quorum_queues, streams, exchanges
    /// or all.
    #[arg(long = "apply-to", default_value = "all")]
    pub apply_to: String,
    /// Policy name.
    pub name: String,
    /// Regular expression matched against queue and exchange names.
    pub pattern: String,
    /// The settings, as JSON: '{"max-length": 1000, "dead-letter-exchange": "dlx"}'.
    pub definition: String,
}
