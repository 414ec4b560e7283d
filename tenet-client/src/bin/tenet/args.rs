//! Command-line arguments of `tenet`.

use clap::{Parser, Subcommand};
use tenet_core::{KeyId, TenantId};

/// Manage the tenants and API keys of a Tenet server.
#[derive(Debug, Parser)]
#[command(name = "tenet", version)]
pub struct Cli {
    /// Base URL of the Tenet server.
    #[arg(
        long,
        env = "TENET_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,

    /// Admin token of the management API. Prefer the environment variable:
    /// other users of the machine can read command lines.
    #[arg(long, env = "TENET_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Time limit of each request, in seconds (at least 1).
    #[arg(
        long,
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
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

    /// Verify an API key and print its tenant and key id.
    ///
    /// With an admin token this uses `POST /verify`, which also prints the
    /// key's scopes and why a key is rejected.
    Verify {
        /// The API key, or `-` to read it from standard input, which keeps
        /// it out of the process list.
        key: String,
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
        /// Requests per period that the tenant's keys may make together.
        #[arg(long, requires_all = ["period", "burst"])]
        rate: Option<u32>,
        /// Period of the rate, in seconds.
        #[arg(long, requires = "rate")]
        period: Option<u64>,
        /// Requests that may arrive at once.
        #[arg(long, requires = "rate")]
        burst: Option<u32>,
        /// Count requests over the rate limit without rejecting them.
        #[arg(long, requires = "rate")]
        shadow: bool,
        /// Requests the tenant's keys may make per calendar month (UTC).
        #[arg(long)]
        monthly_quota: Option<u64>,
    },
}
