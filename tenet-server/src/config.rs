//! Command-line and environment configuration.
//!
//! Every flag has an environment fallback; a flag given on the command line
//! wins. An environment variable that is set but empty counts as unset, so
//! that `TENET_X=` in a shell or a deployment file leaves the default in
//! place instead of failing to parse. Boolean variables accept `true`,
//! `yes`, `on` and `1`, or `false`, `no`, `off` and `0`. The key pepper is
//! read from `TENET_KEY_PEPPER` only, never from a flag, so that it does
//! not show in the process list.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use tenet_core::{CacheOptions, Limit, PostgresOptions, RedisOptions};

use crate::forwarded::TrustedProxies;
use crate::limiting::LimiterOptions;

/// Environment variable that contains the key pepper.
pub const PEPPER_ENV: &str = "TENET_KEY_PEPPER";

/// Smallest request head limit that hyper accepts for HTTP/1, in bytes.
pub const MIN_HEADER_BYTES: u64 = 8192;

/// Default failed authentications per minute per client address. A client
/// that retries a wrong key a few times stays within the burst, while a
/// guesser is held to one attempt every 2 seconds once it has used it.
pub const DEFAULT_AUTH_FAILURE_RATE: u32 = 30;

/// Default failed authentications a client address may make at once, which
/// leaves room for several clients behind one NAT address to retry.
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 30;

/// Configuration of one `tenet-server` process.
///
/// `Debug` hides the admin token and the pepper.
#[derive(Clone, Parser)]
#[command(
    name = "tenet-server",
    version,
    about = "HTTP server for Tenet: tenants and API keys for SaaS backends.",
    long_about = "HTTP server for Tenet: tenants and API keys for SaaS backends.\n\n\
        The key pepper is read from the TENET_KEY_PEPPER environment variable \
        only. When it is unset, the server reads <data-dir>/pepper, or \
        generates that file on the first start."
)]
pub struct Config {
    /// Sets the address and port to listen on.
    #[arg(
        long,
        env = "TENET_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Sets the directory for the SQLite database, the generated pepper and
    /// the generated admin token; created with mode 0700 if missing.
    #[arg(
        long,
        env = "TENET_DATA_DIR",
        value_name = "DIR",
        default_value = "./tenet-data"
    )]
    pub data_dir: PathBuf,

    /// Sets the bearer token of the management API: at least 32 visible
    /// ASCII characters, without spaces. When unset, the server generates
    /// one on the first start and writes it to the file admin-token in the
    /// data directory.
    #[arg(
        long,
        env = "TENET_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Sets the log line format on standard output, and of the error line
    /// on standard error when the server fails to start. The RUST_LOG
    /// environment variable sets the filter (default "info"). tokio_postgres
    /// logs at debug or trace level only when RUST_LOG names it, such as
    /// tokio_postgres=debug, because those lines show statement parameters,
    /// which include key digests.
    #[arg(long, env = "TENET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Sets the largest accepted request body, in bytes; larger bodies get
    /// 413.
    #[arg(
        long,
        env = "TENET_MAX_BODY_BYTES",
        value_name = "BYTES",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u64).range(1..=1_073_741_824)
    )]
    pub max_body_bytes: u64,

    /// Sets the largest accepted HTTP/1 request head (request line and
    /// headers) and HTTP/2 header list, in bytes (at least 8192); larger
    /// heads get 431.
    #[arg(
        long,
        env = "TENET_MAX_HEADER_BYTES",
        value_name = "BYTES",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u64).range(MIN_HEADER_BYTES..=16_777_216)
    )]
    pub max_header_bytes: u64,

    /// Sets the maximum number of open client connections; further
    /// connections wait in the listen backlog.
    #[arg(
        long,
        env = "TENET_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value_t = 10_000,
        value_parser = parse_at_least_one::<u32>
    )]
    pub max_connections: u32,

    /// Sets how long a client may take to send a request head, in seconds;
    /// the connection is closed after that. A request body gets the same
    /// time once a route reads it, or the response is 408 `body_timeout`.
    #[arg(
        long,
        env = "TENET_HEADER_READ_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_read_timeout: u64,

    /// Sets how long in-flight requests may take to finish after SIGINT or
    /// SIGTERM, in seconds; connections still open then are dropped.
    #[arg(
        long,
        env = "TENET_SHUTDOWN_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub shutdown_timeout: u64,

    /// Sets how long the server keeps serving after SIGTERM, in seconds,
    /// with /readyz already returning 503, so that load balancers stop
    /// sending requests before it stops accepting connections. SIGINT skips
    /// this delay.
    #[arg(
        long,
        env = "TENET_DRAIN_DELAY",
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub drain_delay: u64,

    /// Sets a second address and port that serves only /metrics, /healthz
    /// and /readyz, for scrapers and probes. The main address serves
    /// /metrics too.
    #[arg(long, env = "TENET_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Sets how many requests share one access log line: 1 logs every
    /// request, N logs one request in N. Server errors are always logged.
    #[arg(
        long,
        env = "TENET_ACCESS_LOG_SAMPLE",
        value_name = "REQUESTS",
        default_value_t = 1,
        value_parser = parse_at_least_one::<u64>
    )]
    pub access_log_sample: u64,

    /// Sets the Postgres URL of a store shared by several replicas, for
    /// example postgres://tenet@db:5432/tenet. Without it the server uses
    /// the SQLite file in the data directory.
    #[arg(
        long,
        env = "TENET_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,

    /// Sets the maximum number of Postgres connections of this process.
    #[arg(
        long,
        env = "TENET_DATABASE_POOL_SIZE",
        value_name = "COUNT",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=1000),
        global = true
    )]
    pub database_pool_size: u32,

    /// Sets how long a request waits to connect to Postgres or to get a
    /// pooled connection, in milliseconds; it then fails with 503.
    #[arg(
        long,
        env = "TENET_DATABASE_CONNECT_TIMEOUT_MS",
        value_name = "MILLISECONDS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..=600_000),
        global = true
    )]
    pub database_connect_timeout_ms: u64,

    /// Sets Postgres's statement_timeout for this server's sessions, in
    /// milliseconds.
    #[arg(
        long,
        env = "TENET_DATABASE_STATEMENT_TIMEOUT_MS",
        value_name = "MILLISECONDS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000),
        global = true
    )]
    pub database_statement_timeout_ms: u64,

    /// Sets the Postgres schema that contains Tenet's tables; it must exist.
    /// Default: the server's search_path (usually public).
    #[arg(
        long,
        env = "TENET_DATABASE_SCHEMA",
        value_name = "SCHEMA",
        global = true
    )]
    pub database_schema: Option<String>,

    /// Skips applying Postgres schema migrations at start; use it when a
    /// separate `tenet-server migrate` job applies them. The environment
    /// variable accepts true, yes, on or 1, and false, no, off or 0.
    #[arg(long, env = "TENET_SKIP_MIGRATIONS", value_parser = BoolishValueParser::new())]
    pub skip_migrations: bool,

    /// Sets the Redis URL of the cache shared by replicas, for example
    /// redis://cache:6379. It also carries revocations between replicas,
    /// and requires --database-url.
    #[arg(
        long,
        env = "TENET_REDIS_URL",
        value_name = "URL",
        hide_env_values = true,
        requires = "database_url"
    )]
    pub redis_url: Option<String>,

    /// Sets the longest a request waits on Redis, in milliseconds, before
    /// going on without it.
    #[arg(
        long,
        env = "TENET_REDIS_TIMEOUT_MS",
        value_name = "MILLISECONDS",
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    pub redis_timeout_ms: u64,

    /// Sets the prefix of every Redis key and channel this server uses, so
    /// that deployments can share one Redis.
    #[arg(
        long,
        env = "TENET_REDIS_KEY_PREFIX",
        value_name = "PREFIX",
        default_value = "tenet:"
    )]
    pub redis_key_prefix: String,

    /// Sets the maximum number of verification results cached in process;
    /// 0 turns the in-process cache off (and Redis with it).
    #[arg(
        long,
        env = "TENET_CACHE_CAPACITY",
        value_name = "ENTRIES",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(0..=100_000_000)
    )]
    pub cache_capacity: u64,

    /// Sets how long a valid or revoked key stays cached, in seconds (at
    /// least 2). A revoke still takes effect on every replica within 1
    /// second.
    #[arg(
        long,
        env = "TENET_CACHE_TTL",
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(2..=86_400)
    )]
    pub cache_ttl: u64,

    /// Sets how long an unknown key stays cached, in seconds, so that
    /// repeated guesses do not each reach the store.
    #[arg(
        long,
        env = "TENET_NEGATIVE_CACHE_TTL",
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub negative_cache_ttl: u64,

    /// Sets the number of replicas sharing Redis. While Redis fails, each
    /// replica enforces this share of every rate limit and quota in
    /// process.
    #[arg(
        long,
        env = "TENET_REPLICAS",
        value_name = "COUNT",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub replicas: u32,

    /// Sets how long tenant and key limits are cached before they are read
    /// from the store again, in seconds. A change made through another
    /// replica takes effect here within this time.
    #[arg(
        long,
        env = "TENET_LIMIT_REFRESH",
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub limit_refresh: u64,

    /// Sets how many failed authentications a client address may make per
    /// minute before it gets 429 without its key being checked; 0 turns
    /// the limit off. Each replica counts in process and enforces its share
    /// (this value and the burst divided by --replicas). Behind a load
    /// balancer or reverse proxy, set --trusted-proxies, or every client
    /// shares the proxy's count.
    #[arg(
        long,
        env = "TENET_AUTH_FAILURE_RATE",
        value_name = "PER_MINUTE",
        default_value_t = DEFAULT_AUTH_FAILURE_RATE,
        value_parser = clap::value_parser!(u32).range(0..=1_000_000)
    )]
    pub auth_failure_rate: u32,

    /// Sets how many failed authentications a client address may make at
    /// once, on top of the rate.
    #[arg(
        long,
        env = "TENET_AUTH_FAILURE_BURST",
        value_name = "COUNT",
        default_value_t = DEFAULT_AUTH_FAILURE_BURST,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub auth_failure_burst: u32,

    /// Sets the reverse proxies whose X-Forwarded-For header the server
    /// trusts, as a comma-separated list of IP addresses and CIDR ranges
    /// such as 10.0.0.0/8,127.0.0.1. When a request's TCP peer is in the
    /// list, its client address is the rightmost X-Forwarded-For entry that
    /// is not. From any other peer the header is ignored. Default: none.
    #[arg(
        long,
        env = "TENET_TRUSTED_PROXIES",
        value_name = "RANGES",
        value_parser = TrustedProxies::from_str
    )]
    pub trusted_proxies: Option<TrustedProxies>,

    /// Sets how often usage counts are added to the store, in seconds. A
    /// crash loses the counts of at most this interval; a graceful shutdown
    /// writes them.
    #[arg(
        long,
        env = "TENET_USAGE_FLUSH_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub usage_flush_interval: u64,

    /// Sets how often the keys' last_used_at times are written to the
    /// store, in seconds, and so how far they may lag behind. Each key is
    /// written at most once per interval, and once more at shutdown.
    #[arg(
        long,
        env = "TENET_KEY_USE_FLUSH_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub key_use_flush_interval: u64,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// The key pepper's text, from `TENET_KEY_PEPPER` (see
    /// [`Config::load`]); `None` reads or generates `<data-dir>/pepper`.
    #[arg(skip)]
    pub key_pepper: Option<String>,

    /// Ids of the arguments whose value came from their environment
    /// variable, so that [`Config::setting_name`] names the variable only
    /// then. [`Config::from_matches`] fills it; clap's `Parser` methods
    /// leave it empty, and messages then name the flag alone.
    #[arg(skip)]
    from_env: BTreeSet<String>,
}

/// Subcommands; without one the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Applies pending Postgres schema migrations and exits; needs
    /// --database-url.
    Migrate,
}

/// Format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Parses the command line and the environment, and reads the pepper
    /// from `TENET_KEY_PEPPER`. Empty environment variables, the pepper's
    /// included, count as unset.
    ///
    /// Exits the process with clap's message and code 2 on an invalid flag
    /// or an environment value that is not valid UTF-8, and with code 0
    /// after `--help` or `--version`.
    pub fn load() -> Self {
        let mut command = without_empty_env(Self::command(), |name| std::env::var_os(name));
        if let Some(name) = non_utf8_env(&command, |name| std::env::var_os(name)) {
            command
                .error(
                    clap::error::ErrorKind::InvalidUtf8,
                    format!("{name} is not valid UTF-8. Set it to UTF-8 text, or unset it"),
                )
                .exit();
        }
        let matches = command.clone().try_get_matches().unwrap_or_else(|err| {
            let on_command_line: Vec<String> = std::env::args_os()
                .skip(1)
                .filter_map(|arg| arg.into_string().ok())
                .collect();
            with_env_source(err, &command, &on_command_line).exit()
        });
        let mut config = Self::from_matches(&matches).unwrap_or_else(|err| err.exit());
        config.key_pepper = match std::env::var(PEPPER_ENV) {
            Ok(text) => Some(text).filter(|text| !text.is_empty()),
            Err(std::env::VarError::NotPresent) => None,
            // Treating it as unset would generate a pepper file and issue
            // keys under a pepper that the operator never chose.
            Err(std::env::VarError::NotUnicode(_)) => Self::command()
                .error(
                    clap::error::ErrorKind::InvalidUtf8,
                    format!(
                        "{PEPPER_ENV} is not valid UTF-8. Set it to text of at least 32 \
                         bytes, such as the output of `openssl rand -base64 32`"
                    ),
                )
                .exit(),
        };
        config
    }

    /// Builds the configuration from parsed matches, and records which
    /// arguments took their value from an environment variable.
    ///
    /// Fails with clap's error when a value does not fit its field.
    pub fn from_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut config = Self::from_arg_matches(matches)?;
        config.from_env = matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(config)
    }

    /// Returns how messages name the setting of the argument `id`, a field
    /// name such as `listen`: its flag, as `--listen`, or `--listen from
    /// TENET_LISTEN` when the value came from the variable. An operator
    /// who typed the flag may never have set the variable, and one who set
    /// the variable learns which one to fix.
    ///
    /// An `id` that no argument has is returned unchanged.
    pub fn setting_name(&self, id: &str) -> String {
        let command = Self::command();
        let Some(arg) = command.get_arguments().find(|arg| arg.get_id() == id) else {
            return id.to_owned();
        };
        let flag = match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => id.to_owned(),
        };
        match arg.get_env() {
            Some(env) if self.from_env.contains(id) => {
                format!("{flag} from {}", env.to_string_lossy())
            }
            _ => flag,
        }
    }

    /// Returns the header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout)
    }

    /// Returns the Postgres settings, or `None` for the embedded store.
    pub fn postgres(&self) -> Option<(&str, PostgresOptions)> {
        let url = self.database_url.as_deref()?;
        let options = PostgresOptions {
            pool_size: self.database_pool_size,
            connect_timeout: Duration::from_millis(self.database_connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
            schema: self.database_schema.clone(),
        };
        Some((url, options))
    }

    /// Returns the in-process cache settings, or `None` when it is off.
    pub fn cache(&self) -> Option<CacheOptions> {
        let capacity = usize::try_from(self.cache_capacity)
            .ok()
            .filter(|&n| n > 0)?;
        Some(CacheOptions {
            capacity,
            ttl: Duration::from_secs(self.cache_ttl),
            negative_ttl: Duration::from_secs(self.negative_cache_ttl),
            ..CacheOptions::default()
        })
    }

    /// Returns the Redis settings, or `None` without Redis.
    pub fn redis(&self) -> Option<RedisOptions> {
        let url = self.redis_url.as_deref()?;
        Some(RedisOptions {
            timeout: Duration::from_millis(self.redis_timeout_ms),
            key_prefix: self.redis_key_prefix.clone(),
            ..RedisOptions::new(url)
        })
    }

    /// Returns the rate limiter settings.
    pub fn limiter(&self) -> Result<LimiterOptions, tenet_core::Error> {
        let auth_failures = match self.auth_failure_rate {
            0 => None,
            rate => Some(Limit::new(
                rate,
                Duration::from_secs(60),
                self.auth_failure_burst,
            )?),
        };
        Ok(LimiterOptions {
            redis: self.redis(),
            replicas: self.replicas,
            refresh: Duration::from_secs(self.limit_refresh),
            auth_failures,
        })
    }

    /// Returns the shutdown drain timeout as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    /// Returns the usage flush interval as a duration.
    pub fn usage_flush_interval(&self) -> Duration {
        Duration::from_secs(self.usage_flush_interval)
    }

    /// Returns the `last_used_at` flush interval as a duration.
    pub fn key_use_flush_interval(&self) -> Duration {
        Duration::from_secs(self.key_use_flush_interval)
    }

    /// Returns the time to keep serving after SIGTERM as a duration.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay)
    }
}

/// Removes the environment fallback of every argument whose variable
/// `lookup` returns as empty, so that clap uses the argument's default.
///
/// clap reads each variable when the argument is defined and offers no
/// filter of its own. Changing the parsed command instead of the process
/// environment avoids `std::env::remove_var`, which is unsafe while other
/// threads may read the environment.
///
/// NOTE: `--help` omits the `[env: ...]` note of an argument while its
/// variable is set but empty.
pub fn without_empty_env(
    command: clap::Command,
    lookup: impl Fn(&std::ffi::OsStr) -> Option<std::ffi::OsString>,
) -> clap::Command {
    command.mut_args(|arg| {
        let empty = arg
            .get_env()
            .and_then(&lookup)
            .is_some_and(|value| value.is_empty());
        if empty { arg.env(None::<&str>) } else { arg }
    })
}

/// Returns the name of the first environment variable of `command`'s
/// arguments whose value, as `lookup` returns it, is not UTF-8.
///
/// clap rejects such a value with "invalid UTF-8 was detected in one or
/// more arguments", which names neither the variable nor the flag.
pub fn non_utf8_env(
    command: &clap::Command,
    lookup: impl Fn(&std::ffi::OsStr) -> Option<std::ffi::OsString>,
) -> Option<String> {
    command
        .get_arguments()
        .filter_map(clap::Arg::get_env)
        .find(|name| lookup(name).is_some_and(|value| value.to_str().is_none()))
        .map(|name| name.to_string_lossy().into_owned())
}

/// Adds the environment variable to a clap error about an invalid value
/// that came from that variable, because clap names only the flag, which
/// the operator may never have typed.
///
/// The value came from the variable when the flag is not among `arguments`
/// (the command line after the program name), as `--flag value` or
/// `--flag=value`, and clap read the variable: an error names only
/// arguments that have a value.
pub fn with_env_source(
    mut err: clap::Error,
    command: &clap::Command,
    arguments: &[String],
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};

    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let flag = shown.split([' ', '=']).next().unwrap_or_default();
    let Some(env) = command
        .get_arguments()
        .find(|arg| {
            arg.get_long()
                .is_some_and(|long| flag == format!("--{long}"))
        })
        .and_then(clap::Arg::get_env)
    else {
        return err;
    };
    let typed = arguments
        .iter()
        .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")));
    if typed {
        return err;
    }
    // clap writes the argument between quotes, so the message reads
    // "for '--listen <ADDR>' from 'TENET_LISTEN'".
    let named = format!("{shown}' from '{}", env.to_string_lossy());
    err.insert(ContextKind::InvalidArg, ContextValue::String(named));
    err
}

/// Parses a count that must be at least 1. clap's `range(1..)` would
/// reject 0 with "0 is not in 1..18446744073709551615", naming the type's
/// maximum as if it were a documented limit.
fn parse_at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + From<u8> + PartialOrd,
{
    let value = text.parse::<T>().map_err(|err| err.to_string())?;
    if value < T::from(1) {
        return Err("must be at least 1".to_owned());
    }
    Ok(value)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "Some(..)" } else { "None" };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("admin_token", &redacted(self.admin_token.is_some()))
            .field("log_format", &self.log_format)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("drain_delay", &self.drain_delay)
            .field("metrics_listen", &self.metrics_listen)
            .field("access_log_sample", &self.access_log_sample)
            .field("database_url", &redacted(self.database_url.is_some()))
            .field("database_pool_size", &self.database_pool_size)
            .field(
                "database_connect_timeout_ms",
                &self.database_connect_timeout_ms,
            )
            .field(
                "database_statement_timeout_ms",
                &self.database_statement_timeout_ms,
            )
            .field("database_schema", &self.database_schema)
            .field("skip_migrations", &self.skip_migrations)
            .field("redis_url", &redacted(self.redis_url.is_some()))
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("cache_capacity", &self.cache_capacity)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("replicas", &self.replicas)
            .field("limit_refresh", &self.limit_refresh)
            .field("auth_failure_rate", &self.auth_failure_rate)
            .field("auth_failure_burst", &self.auth_failure_burst)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("usage_flush_interval", &self.usage_flush_interval)
            .field("key_use_flush_interval", &self.key_use_flush_interval)
            .field("command", &self.command)
            .field("key_pepper", &redacted(self.key_pepper.is_some()))
            .field("from_env", &self.from_env)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_definition_is_valid() {
        Config::command().debug_assert();
    }

    #[test]
    fn open_ended_counts_say_at_least_one() {
        for flag in ["--access-log-sample", "--max-connections"] {
            let err =
                Config::try_parse_from(["tenet-server", flag, "0"]).expect_err("0 is rejected");

            let message = err.to_string();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(message.contains(flag), "{message}");
            assert!(message.contains("must be at least 1"), "{message}");
            assert!(!message.contains("4294967295"), "{message}");
            assert!(!message.contains("18446744073709551615"), "{message}");
        }
    }

    #[test]
    fn open_ended_counts_accept_large_values() {
        let config = Config::try_parse_from([
            "tenet-server",
            "--access-log-sample",
            "18446744073709551615",
            "--max-connections",
            "4294967295",
        ])
        .expect("valid counts");

        assert_eq!(config.access_log_sample, u64::MAX);
        assert_eq!(config.max_connections, u32::MAX);
    }

    #[test]
    fn empty_env_drops_only_that_fallback() {
        let lookup =
            |name: &std::ffi::OsStr| (name == "TENET_METRICS_LISTEN").then(std::ffi::OsString::new);

        let command = without_empty_env(Config::command(), lookup);

        let env_of = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .expect("argument exists")
                .get_env()
                .map(ToOwned::to_owned)
        };
        assert_eq!(env_of("metrics_listen"), None);
        assert_eq!(env_of("listen"), Some("TENET_LISTEN".into()));
        assert_eq!(env_of("database_url"), Some("TENET_DATABASE_URL".into()));
    }

    #[test]
    fn non_utf8_env_names_the_variable() {
        use std::os::unix::ffi::OsStringExt as _;

        let lookup = |name: &std::ffi::OsStr| match name.to_str() {
            Some("TENET_LISTEN") => Some("127.0.0.1:0".into()),
            Some("TENET_ADMIN_TOKEN") => Some(std::ffi::OsString::from_vec(vec![0xff; 40])),
            _ => None,
        };

        let found = non_utf8_env(&Config::command(), lookup);

        assert_eq!(found.as_deref(), Some("TENET_ADMIN_TOKEN"));
        assert_eq!(non_utf8_env(&Config::command(), |_| None), None);
    }

    #[test]
    fn invalid_env_value_names_the_variable() {
        let command =
            Config::command().mut_arg("listen", |arg| arg.env("TENET_TEST_LISTEN_SOURCE"));
        let err = command
            .clone()
            .try_get_matches_from(["tenet-server", "--listen", "nonsense"])
            .expect_err("invalid address");

        let from_env = with_env_source(err, &command, &[]).to_string();

        assert!(
            from_env.contains("'--listen <ADDR>' from 'TENET_TEST_LISTEN_SOURCE'"),
            "{from_env}"
        );
    }

    #[test]
    fn invalid_typed_value_names_only_the_flag() {
        let command = Config::command();
        let typed = ["--listen".to_owned(), "nonsense".to_owned()];
        let err = command
            .clone()
            .try_get_matches_from(["tenet-server", "--listen", "nonsense"])
            .expect_err("invalid address");

        let message = with_env_source(err, &command, &typed).to_string();

        assert!(!message.contains("TENET_LISTEN"), "{message}");
        assert!(message.contains("--listen"), "{message}");
    }

    #[test]
    fn setting_name_of_typed_value_is_the_flag() {
        let matches = Config::command()
            .try_get_matches_from(["tenet-server", "--admin-token", "x"])
            .expect("valid flags");
        let config = Config::from_matches(&matches).expect("valid configuration");

        assert_eq!(config.setting_name("admin_token"), "--admin-token");
        assert_eq!(config.setting_name("no_such_setting"), "no_such_setting");
        // The ids that start-up errors name must be argument ids, or the
        // message would show the id instead of the flag.
        for id in ["listen", "metrics_listen"] {
            assert!(config.setting_name(id).starts_with("--"), "{id}");
        }
    }

    #[test]
    fn skip_migrations_is_a_plain_flag() {
        let config = Config::try_parse_from(["tenet-server", "--skip-migrations"])
            .expect("flag without a value");

        assert!(config.skip_migrations);
    }

    #[test]
    fn debug_hides_secrets() {
        let mut config =
            Config::parse_from(["tenet-server", "--admin-token", "secret-admin-token"]);
        config.key_pepper = Some("secret-pepper".to_owned());

        let debug = format!("{config:?}");

        assert!(!debug.contains("secret-admin-token"));
        assert!(!debug.contains("secret-pepper"));
    }
}
