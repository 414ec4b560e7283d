//! Command-line arguments of `tenet`.

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use serde_json::{Map, Value};
use tenet_core::{Granularity, KeyId, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, time};

/// Manage the tenants and API keys of a Tenet server.
#[derive(Debug, Parser)]
#[command(name = "tenet", version)]
pub struct Cli {
    /// Base URL of the Tenet server. An empty TENET_URL counts as unset.
    #[arg(
        long,
        env = "TENET_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        global = true
    )]
    pub url: String,

    /// Admin token of the management API. Prefer the environment variable:
    /// other users of the machine can read command lines. An empty value
    /// counts as no token.
    #[arg(long, env = "TENET_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Time limit of each request, in seconds (at least 1).
    #[arg(
        long,
        default_value_t = 10,
        value_parser = parse_timeout,
        global = true
    )]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, read, rename, suspend, resume and delete tenants, and
    /// read their audit trail.
    #[command(subcommand)]
    Tenants(TenantsCommand),

    /// Issue, list, rotate and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Read and set a tenant's rate limit and monthly quota.
    #[command(subcommand)]
    Limits(LimitsCommand),

    /// Count a tenant's requests per period and key, or export them.
    Usage(UsageArgs),

    /// Verify an API key and print its tenant, key id, scopes and limit
    /// state.
    ///
    /// This uses `POST /verify` with the admin token and does not count
    /// the check against the key's rate limit or quota unless `--consume`
    /// is given.
    Verify {
        /// The API key, or `-` to read it from standard input, which keeps
        /// it out of the process list.
        key: String,

        /// Count the check as a request of the key, against its rate limit
        /// and quota. Without an admin token, this calls `GET /protected`,
        /// which prints neither scopes nor limit state.
        #[arg(long)]
        consume: bool,
    },

    /// Check that the server is up and its store responds.
    Ready,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Display name of the tenant.
        name: String,
    },

    /// List every tenant, oldest first.
    List,

    /// Read one tenant.
    Get {
        /// Tenant id.
        tenant: TenantId,
    },

    /// Rename a tenant.
    Rename {
        /// Tenant id.
        tenant: TenantId,

        /// New display name of the tenant.
        name: String,
    },

    /// Suspend a tenant: its keys are rejected until it is resumed.
    Suspend {
        /// Tenant id.
        tenant: TenantId,
    },

    /// Resume a suspended tenant, whose keys then work again.
    Resume {
        /// Tenant id.
        tenant: TenantId,
    },

    /// Revoke every key of a tenant and delete it; this cannot be undone.
    Delete {
        /// Tenant id.
        tenant: TenantId,
    },

    /// List a tenant's audit trail, oldest first: who changed what, when.
    Audit {
        /// Tenant id.
        tenant: TenantId,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue an API key; the output is the only time the key is shown.
    Issue {
        /// Id of the tenant that owns the key.
        tenant: TenantId,

        /// Display name of the key, such as "billing worker".
        #[arg(long)]
        name: Option<String>,

        /// Scope granted to the key, such as `billing:read`; repeat for
        /// several.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,

        /// Lifetime of the key, in seconds; without it the key never
        /// expires.
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,

        /// A rate limit of the key's own, applied together with the
        /// tenant's.
        #[command(flatten)]
        limit: LimitArgs,

        /// A JSON object stored with the key, such as `{"team":"billing"}`.
        #[arg(long, value_name = "JSON", value_parser = parse_metadata)]
        metadata: Option<Map<String, Value>>,
    },

    /// Set or remove a key's own rate limit, which applies together with
    /// its tenant's.
    #[command(group = clap::ArgGroup::new("change").required(true).args(["rate", "remove"]))]
    Limit {
        /// Tenant id.
        tenant: TenantId,

        /// Key id, as listed by `tenet keys list`.
        key: KeyId,

        #[command(flatten)]
        limit: LimitArgs,

        /// Remove the key's own limit; the tenant's still applies.
        #[arg(long, conflicts_with = "rate")]
        remove: bool,
    },

    /// Replace a key with a new one; the old key keeps working for the
    /// grace period. The output is the only time the new key is shown.
    Rotate {
        /// Tenant id.
        tenant: TenantId,

        /// Id of the key to replace.
        key: KeyId,

        /// Time the old key keeps working, in seconds; 0 ends it at once.
        /// The server's default, one day, applies without it.
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
    },

    /// List a tenant's keys, revoked ones included, without secrets.
    List {
        /// Tenant id.
        tenant: TenantId,
    },

    /// Revoke a key.
    Revoke {
        /// Tenant id.
        tenant: TenantId,

        /// Key id, as listed by `tenet keys list`.
        key: KeyId,
    },
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Print a tenant's rate limit and monthly quota.
    Get {
        /// Tenant id.
        tenant: TenantId,
    },
    /// Replace a tenant's rate limit and monthly quota; a value left out is
    /// removed.
    Set {
        /// Tenant id.
        tenant: TenantId,

        #[command(flatten)]
        limit: LimitArgs,

        /// Requests the tenant's keys may make per calendar month (UTC).
        #[arg(long)]
        monthly_quota: Option<u64>,
    },
}

/// A rate limit: `--rate` requests per `--period` seconds, up to `--burst`
/// at once. The three flags go together.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Requests per period.
    #[arg(long, requires_all = ["period", "burst"])]
    pub rate: Option<u32>,

    /// Period of the rate, in seconds.
    #[arg(long, requires = "rate", value_name = "SECS")]
    pub period: Option<u64>,

    /// Requests that may arrive at once.
    #[arg(long, requires = "rate")]
    pub burst: Option<u32>,

    /// Count requests over the rate limit without rejecting them.
    #[arg(long, requires = "rate")]
    pub shadow: bool,
}

/// `tenet usage TENANT --from --to`, or `tenet usage export ...`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub export: Option<UsageCommand>,

    /// Tenant id.
    #[arg(required = true)]
    pub tenant: Option<TenantId>,

    #[command(flatten)]
    pub range: RangeArgs,

    /// Length of each period: `hour` or `day` (UTC).
    #[arg(long, default_value = "hour", value_parser = parse_granularity)]
    pub granularity: Granularity,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Print one JSON line per key and hour with requests, oldest first,
    /// for billing.
    Export {
        /// Tenant id.
        tenant: TenantId,

        #[command(flatten)]
        range: RangeArgs,
    },
}

/// The hours that start at or after `--from` and before `--to`. The
/// server accepts at most 31 days.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// Start of the range: RFC 3339, or a date for midnight UTC.
    #[arg(long, required = true, value_parser = parse_time)]
    pub from: Option<OffsetDateTime>,

    /// End of the range, excluded: RFC 3339, or a date for midnight UTC.
    #[arg(long, required = true, value_parser = parse_time)]
    pub to: Option<OffsetDateTime>,
}

/// Parses the command line, exiting with status 2 on invalid arguments.
///
/// Clap's error usage lists the global flags that were given as if they
/// were required, so every command's usage is fixed to its generic form,
/// which shows them as `[OPTIONS]`.
pub fn parse() -> Cli {
    let mut command = without_empty_env(Cli::command());
    // clap would reject such a value without naming the variable.
    let non_utf8 = command
        .get_arguments()
        .filter_map(clap::Arg::get_env)
        .find(|name| std::env::var_os(name).is_some_and(|value| value.to_str().is_none()));
    if let Some(name) = non_utf8 {
        let message = format!(
            "{} is not valid UTF-8. Set it to UTF-8 text, or unset it",
            name.to_string_lossy()
        );
        command
            .error(clap::error::ErrorKind::InvalidUtf8, message)
            .exit();
    }
    command.build();
    let command = with_generic_usage(command);
    let matches = command.get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// Drops the environment fallback of every argument whose variable is set
/// but empty, so that `TENET_URL=` means the default URL, as an empty
/// variable means the default for tenet-server. `TENET_ADMIN_TOKEN` keeps
/// its fallback: an empty token gets its own message, which points at a
/// variable that was set from an empty file or command.
fn without_empty_env(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| {
        let empty = arg
            .get_env()
            .filter(|name| *name != "TENET_ADMIN_TOKEN")
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        if empty { arg.env(None::<&str>) } else { arg }
    })
}

fn with_generic_usage(mut command: clap::Command) -> clap::Command {
    let usage = command.render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ").trim().to_owned();
    command
        .override_usage(usage)
        .mut_subcommands(with_generic_usage)
}

/// Parses `--timeout`. clap's `range(1..)` would reject 0 with "0 is not
/// in 1..18446744073709551615", naming the type's maximum as if it were a
/// documented limit.
fn parse_timeout(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1 second".to_owned()),
        Ok(seconds) => Ok(seconds),
        Err(err) => Err(err.to_string()),
    }
}

/// Parses `--metadata`: a JSON object, checked before any request.
fn parse_metadata(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object, such as {\"team\":\"billing\"}".to_owned()),
        Err(err) => Err(format!("invalid JSON: {err}")),
    }
}

fn parse_granularity(text: &str) -> Result<Granularity, String> {
    Granularity::parse(text).map_err(|_| "expected hour or day".to_owned())
}

/// Parses an RFC 3339 time, or a `YYYY-MM-DD` date as midnight UTC.
fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let date_format = format_description!("[year]-[month]-[day]");
    match time::Date::parse(text, &date_format) {
        Ok(date) => Ok(date.with_time(time!(0:00)).assume_utc()),
        Err(_) => Err(
            "expected an RFC 3339 time, such as 2026-12-01T00:00:00Z, or a date, \
                such as 2026-12-01"
                .to_owned(),
        ),
    }
}
