//! The subcommands: one API call each, then its output.

use std::io::{self, BufRead as _, Write};

use tenet_client::{Client, Credential};
use tenet_core::api::{
    AuditEntryResponse, InvalidKeyResponse, IssueKeyRequest, IssuedKeyResponse, KeyLimitBody,
    KeyResponse, LimitBody, LimitStateResponse, RotateKeyRequest, TenantLimitsBody, TenantResponse,
    UsageResponse, ValidKeyResponse,
};

use crate::args::{
    Command, KeysCommand, LimitArgs, LimitsCommand, RangeArgs, TenantsCommand, UsageArgs,
    UsageCommand,
};
use crate::output;

/// The failure of a command.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Api(#[from] tenet_client::Error),

    /// Invalid or unsupported arguments, found before any request.
    #[error("{0}")]
    Usage(String),

    #[error("failed to write the output: {0}")]
    Output(#[from] io::Error),

    #[error("{0}")]
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Returns whether `command` needs the admin token. `tenet verify` needs
/// it unless `--consume` lets it fall back to `GET /protected`.
pub fn needs_admin(command: &Command) -> bool {
    match command {
        Command::Verify { consume, .. } => !consume,
        Command::Ready => false,
        Command::Tenants(_) | Command::Keys(_) | Command::Limits(_) | Command::Usage(_) => true,
    }
}

pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match command {
        Command::Tenants(command) => tenants(client, command, json, &mut out).await,
        Command::Keys(command) => keys(client, command, json, &mut out).await,
        Command::Limits(command) => limits(client, command, json, &mut out).await,
        Command::Usage(args) => usage(client, args, json, &mut out).await,
        Command::Verify { key, consume } => verify(client, &key, consume, json, &mut out).await,
        Command::Ready => {
            let health = client.ready().await?;
            if json {
                output::json(&mut out, &health)?;
            } else {
                writeln!(out, "ready")?;
            }
            Ok(())
        }
    }
}

async fn tenants(
    client: &Client,
    command: TenantsCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        TenantsCommand::Create { name } => {
            let tenant = client.create_tenant(&name).await?;
            print_tenants(out, json, std::slice::from_ref(&tenant), Some(&tenant))
        }
        TenantsCommand::List => {
            let list = client.list_tenants().await?;
            if json {
                return Ok(output::json(out, &list)?);
            }
            print_tenants(out, json, &list.tenants, None)
        }
        TenantsCommand::Get { tenant } => {
            let tenant = client.tenant(tenant).await?;
            print_tenants(out, json, std::slice::from_ref(&tenant), Some(&tenant))
        }
        TenantsCommand::Rename { tenant, name } => {
            let tenant = client.rename_tenant(tenant, &name).await?;
            print_tenants(out, json, std::slice::from_ref(&tenant), Some(&tenant))
        }
        TenantsCommand::Suspend { tenant } => {
            let tenant = client.suspend_tenant(tenant).await?;
            print_tenants(out, json, std::slice::from_ref(&tenant), Some(&tenant))
        }
        TenantsCommand::Resume { tenant } => {
            let tenant = client.resume_tenant(tenant).await?;
            print_tenants(out, json, std::slice::from_ref(&tenant), Some(&tenant))
        }
        TenantsCommand::Delete { tenant } => {
            client.delete_tenant(tenant).await?;
            if json {
                output::json(out, &serde_json::json!({ "deleted": tenant }))?;
            } else {
                writeln!(out, "deleted tenant {tenant} and revoked its keys")?;
            }
            Ok(())
        }
        TenantsCommand::Audit { tenant } => {
            let list = client.list_audit(tenant).await?;
            if json {
                return Ok(output::json(out, &list)?);
            }
            print_audit(out, &list.entries)
        }
    }
}

/// Prints audit entries as a table.
fn print_audit(out: &mut impl Write, entries: &[AuditEntryResponse]) -> Result<(), Failure> {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                output::time(entry.at),
                entry.actor.clone(),
                entry.action.clone(),
                format!("{} {}", entry.target_type, entry.target_id),
            ]
        })
        .collect();
    Ok(output::table(
        out,
        &["AT", "ACTOR", "ACTION", "TARGET"],
        &rows,
    )?)
}

/// Prints tenants as a table, or `single` as a JSON object.
fn print_tenants(
    out: &mut impl Write,
    json: bool,
    tenants: &[TenantResponse],
    single: Option<&TenantResponse>,
) -> Result<(), Failure> {
    if let (true, Some(tenant)) = (json, single) {
        return Ok(output::json(out, tenant)?);
    }
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|tenant| {
            vec![
                tenant.id.to_string(),
                tenant.name.clone(),
                tenant.status.clone(),
                output::time(tenant.created_at),
            ]
        })
        .collect();
    Ok(output::table(
        out,
        &["ID", "NAME", "STATUS", "CREATED"],
        &rows,
    )?)
}

async fn limits(
    client: &Client,
    command: LimitsCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let limits = match command {
        LimitsCommand::Get { tenant } => client.get_limits(tenant).await?,
        LimitsCommand::Set {
            tenant,
            limit,
            monthly_quota,
        } => {
            let request = TenantLimitsBody {
                limit: limit_body(&limit),
                monthly_quota,
            };
            client.set_limits(tenant, &request).await?
        }
    };
    if json {
        return Ok(output::json(out, &limits)?);
    }
    let limit = limits.limit.as_ref().map(limit_text);
    Ok(output::fields(
        out,
        &[
            ("rate limit", output::optional(limit)),
            ("monthly quota", output::optional(limits.monthly_quota)),
        ],
    )?)
}

/// Builds the limit of `--rate`, `--period` and `--burst`, or `None`
/// without `--rate`. Clap requires the three flags together.
fn limit_body(args: &LimitArgs) -> Option<LimitBody> {
    match (args.rate, args.period, args.burst) {
        (Some(rate), Some(period_seconds), Some(burst)) => Some(LimitBody {
            rate,
            period_seconds,
            burst,
            shadow: args.shadow,
        }),
        _ => None,
    }
}

/// Formats a limit as `100 per 60 s, burst 20`.
fn limit_text(limit: &LimitBody) -> String {
    let shadow = if limit.shadow { " (shadow)" } else { "" };
    format!(
        "{} per {} s, burst {}{shadow}",
        limit.rate, limit.period_seconds, limit.burst
    )
}

async fn keys(
    client: &Client,
    command: KeysCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        KeysCommand::Issue {
            tenant,
            name,
            scopes,
            ttl,
            limit,
            metadata,
        } => {
            let request = IssueKeyRequest {
                name,
                ttl_seconds: ttl,
                scopes,
                limit: limit_body(&limit),
                metadata: metadata.map(serde_json::Value::Object),
                ..IssueKeyRequest::default()
            };
            let issued = client.issue_key(tenant, &request).await?;
            print_issued(out, json, &issued)
        }
        KeysCommand::Rotate { tenant, key, grace } => {
            let request = RotateKeyRequest {
                grace_seconds: grace,
            };
            let rotated = client.rotate_key(tenant, key, &request).await?;
            if json {
                return Ok(output::json(out, &rotated)?);
            }

            // A grace of 0 revokes the old key at once, and its expiry is
            // then empty, which would read as "never expires".
            let old_key = &rotated.old_key;
            match old_key.revoked_at {
                Some(revoked_at) => writeln!(
                    out,
                    "old key {} revoked: {}",
                    old_key.id,
                    output::time(revoked_at)
                )?,
                None => writeln!(
                    out,
                    "old key {} expires: {}",
                    old_key.id,
                    output::optional(old_key.expires_at.map(output::time))
                )?,
            }
            print_issued(out, false, &rotated.new_key)
        }
        KeysCommand::List { tenant } => {
            let list = client.list_keys(tenant).await?;
            if json {
                return Ok(output::json(out, &list)?);
            }
            print_keys(out, &list.keys)
        }
        KeysCommand::Revoke { tenant, key } => {
            client.revoke_key(tenant, key).await?;
            if json {
                output::json(
                    out,
                    &serde_json::json!({ "tenant_id": tenant, "key_id": key, "revoked": true }),
                )?;
            } else {
                writeln!(out, "revoked key {key}")?;
            }
            Ok(())
        }
        KeysCommand::Limit {
            tenant,
            key,
            limit,
            remove: _,
        } => {
            // Clap requires one of `--rate` and `--remove`, so a missing
            // `--rate` means `--remove`.
            let request = KeyLimitBody {
                limit: limit_body(&limit),
            };
            let stored = client.set_key_limit(tenant, key, &request).await?;
            if json {
                return Ok(output::json(out, &stored)?);
            }
            let text = stored.limit.as_ref().map(limit_text);
            Ok(output::fields(
                out,
                &[
                    ("key", key.to_string()),
                    ("rate limit", output::optional(text)),
                ],
            )?)
        }
    }
}

fn print_issued(
    out: &mut impl Write,
    json: bool,
    issued: &IssuedKeyResponse,
) -> Result<(), Failure> {
    if json {
        return Ok(output::json(out, issued)?);
    }
    output::fields(
        out,
        &[
            ("id", issued.id.to_string()),
            ("tenant", issued.tenant_id.to_string()),
            ("name", output::optional(issued.name.as_ref())),
            ("prefix", issued.prefix.clone()),
            ("created", output::time(issued.created_at)),
            (
                "expires",
                output::optional(issued.expires_at.map(output::time)),
            ),
            ("scopes", issued.scopes.join(" ")),
            (
                "rate limit",
                output::optional(issued.limit.as_ref().map(limit_text)),
            ),
            ("metadata", metadata_text(&issued.metadata)),
            ("api key", issued.api_key.clone()),
        ],
    )?;
    // Standard error, so that a script reading standard output gets only
    // the fields.
    let _ = writeln!(
        io::stderr(),
        "Store the API key now: the server keeps only its digest and cannot show it again."
    );
    Ok(())
}

/// Formats key metadata as compact JSON, or `-` when it is empty.
fn metadata_text(metadata: &serde_json::Map<String, serde_json::Value>) -> String {
    if metadata.is_empty() {
        return "-".to_owned();
    }
    serde_json::Value::Object(metadata.clone()).to_string()
}

fn print_keys(out: &mut impl Write, keys: &[KeyResponse]) -> Result<(), Failure> {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            vec![
                key.id.to_string(),
                output::optional(key.name.as_ref()),
                key.prefix.clone(),
                output::time(key.created_at),
                output::optional(key.expires_at.map(output::time)),
                output::optional(key.revoked_at.map(output::time)),
                output::optional(key.last_used_at.map(output::time)),
                key.scopes.join(" "),
            ]
        })
        .collect();
    Ok(output::table(
        out,
        &[
            "ID",
            "NAME",
            "PREFIX",
            "CREATED",
            "EXPIRES",
            "REVOKED",
            "LAST USED",
            "SCOPES",
        ],
        &rows,
    )?)
}

async fn verify(
    client: &Client,
    key: &str,
    consume: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let key = if key == "-" {
        read_key_from_stdin()?
    } else {
        Credential::new(key)
    };

    // Only `POST /verify` can check a key without counting it, and it
    // needs a credential. `needs_admin` ensures one unless `--consume`.
    if client.has_credential() {
        return match client.check_key(&key, &[], consume).await {
            Ok(valid) => print_valid(out, json, &valid),
            Err(err) => Err(rejected(out, json, err)),
        };
    }

    let principal = match client.verify_key(&key).await {
        Ok(principal) => principal,
        Err(err) => return Err(rejected(out, json, err)),
    };
    if json {
        let body = serde_json::json!({
            "valid": true,
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
        });
        output::json(out, &body)?;
    } else {
        writeln!(out, "valid")?;
        output::fields(
            out,
            &[
                ("tenant", principal.tenant_id.to_string()),
                ("key", principal.key_id.to_string()),
            ],
        )?;
    }
    Ok(())
}

/// Turns a failed verification into the command's failure. With `json`, a
/// key that the server rejected is also printed as `POST /verify` returns
/// it, `{"valid": false, "code": ...}`, so that a script reads every
/// verdict from standard output. The exit status and the line on standard
/// error stay those of any failed request.
fn rejected(out: &mut impl Write, json: bool, err: tenet_client::Error) -> Failure {
    let tenet_client::Error::KeyRejected { code, .. } = &err else {
        return err.into();
    };
    if !json {
        return err.into();
    }

    let body = InvalidKeyResponse {
        valid: false,
        code: code.clone(),
    };
    match output::json(out, &body) {
        Ok(()) => err.into(),
        Err(write) => write.into(),
    }
}

/// Prints a key that `POST /verify` accepted, with its limit state.
fn print_valid(out: &mut impl Write, json: bool, valid: &ValidKeyResponse) -> Result<(), Failure> {
    if json {
        return Ok(output::json(out, valid)?);
    }
    let mut pairs = vec![
        ("tenant", valid.tenant_id.to_string()),
        ("key", valid.key_id.to_string()),
        ("scopes", valid.scopes.join(" ")),
        (
            "expires",
            output::optional(valid.expires_at.map(output::time)),
        ),
    ];
    match &valid.rate_limit {
        Some(state) => pairs.extend(limit_state_fields(state)),
        None => pairs.push(("rate limit", "none".to_owned())),
    }
    writeln!(out, "valid")?;
    Ok(output::fields(out, &pairs)?)
}

/// Formats the limit state that `POST /verify` reports.
fn limit_state_fields(state: &LimitStateResponse) -> Vec<(&'static str, String)> {
    let allowed = if state.allowed { "yes" } else { "no" };
    let seconds = |value: Option<u64>| output::optional(value.map(|value| format!("{value} s")));
    vec![
        ("allowed", allowed.to_owned()),
        ("code", output::optional(state.code.as_ref())),
        ("limit", output::optional(state.limit)),
        ("remaining", output::optional(state.remaining)),
        ("reset", seconds(state.reset_seconds)),
        ("retry after", seconds(state.retry_after_seconds)),
        ("quota remaining", output::optional(state.quota_remaining)),
        (
            "quota resets",
            output::optional(state.quota_resets_at.map(output::time)),
        ),
    ]
}

async fn usage(
    client: &Client,
    args: UsageArgs,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if let Some(UsageCommand::Export { tenant, range }) = args.export {
        let (from, to) = range_bounds(&range)?;
        let records = client.export_usage(tenant, from, to).await?;
        for record in &records {
            serde_json::to_writer(&mut *out, record).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        return Ok(());
    }

    // Clap requires the tenant and the range when there is no subcommand.
    let Some(tenant) = args.tenant else {
        return Err(Failure::Usage("missing tenant id".to_owned()));
    };
    let (from, to) = range_bounds(&args.range)?;
    let usage = client.usage(tenant, from, to, args.granularity).await?;
    if json {
        return Ok(output::json(out, &usage)?);
    }
    print_usage(out, &usage)
}

fn range_bounds(
    range: &RangeArgs,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), Failure> {
    match (range.from, range.to) {
        (Some(from), Some(to)) => Ok((from, to)),
        _ => Err(Failure::Usage("missing --from or --to".to_owned())),
    }
}

/// Prints one row per period and key, then the totals.
fn print_usage(out: &mut impl Write, usage: &UsageResponse) -> Result<(), Failure> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for period in &usage.periods {
        for key in &period.keys {
            rows.push(vec![
                output::time(period.start),
                key.key_id.to_string(),
                key.accepted.to_string(),
                key.rejected.to_string(),
            ]);
        }
    }
    rows.push(vec![
        "total".to_owned(),
        "-".to_owned(),
        usage.totals.accepted.to_string(),
        usage.totals.rejected.to_string(),
    ]);
    Ok(output::table(
        out,
        &["START", "KEY", "ACCEPTED", "REJECTED"],
        &rows,
    )?)
}

/// Reads one line from standard input and trims the line break.
fn read_key_from_stdin() -> Result<Credential, Failure> {
    let mut line = zeroize::Zeroizing::new(String::new());
    io::stdin().lock().read_line(&mut line).map_err(|err| {
        Failure::Other(format!("failed to read the key from standard input: {err}"))
    })?;
    let key = line.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        return Err(Failure::Usage(
            "no API key on standard input; pipe the key in, or pass it as the argument".to_owned(),
        ));
    }
    Ok(Credential::new(key))
}
