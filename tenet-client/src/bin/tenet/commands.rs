//! The subcommands: one API call each, then its output.

use std::io::{self, BufRead as _, Write};

use tenet_client::{Client, Credential};
use tenet_core::api::{
    AuditEntryResponse, IssueKeyRequest, IssuedKeyResponse, KeyResponse, LimitBody,
    RotateKeyRequest, TenantLimitsBody, TenantResponse,
};

use crate::args::{Command, KeysCommand, LimitsCommand, TenantsCommand};
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

pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), Failure> {
    let needs_admin = matches!(
        command,
        Command::Tenants(_) | Command::Keys(_) | Command::Limits(_)
    );
    if needs_admin && !client.has_credential() {
        return Err(Failure::Usage(
            "missing admin token: set TENET_ADMIN_TOKEN or pass --token".to_owned(),
        ));
    }

    let mut out = io::stdout().lock();
    match command {
        Command::Tenants(command) => tenants(client, command, json, &mut out).await,
        Command::Keys(command) => keys(client, command, json, &mut out).await,
        Command::Limits(command) => limits(client, command, json, &mut out).await,
        Command::Verify { key } => verify(client, &key, json, &mut out).await,
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
            rate,
            period,
            burst,
            shadow,
            monthly_quota,
        } => {
            // clap requires --period and --burst together with --rate.
            let limit = match (rate, period, burst) {
                (Some(rate), Some(period_seconds), Some(burst)) => Some(LimitBody {
                    rate,
                    period_seconds,
                    burst,
                    shadow,
                }),
                _ => None,
            };
            let request = TenantLimitsBody {
                limit,
                monthly_quota,
            };
            client.set_limits(tenant, &request).await?
        }
    };
    if json {
        return Ok(output::json(out, &limits)?);
    }
    let limit = limits.limit.map(|limit| {
        let shadow = if limit.shadow { " (shadow)" } else { "" };
        format!(
            "{} per {} s, burst {}{shadow}",
            limit.rate, limit.period_seconds, limit.burst
        )
    });
    Ok(output::fields(
        out,
        &[
            ("rate limit", output::optional(limit)),
            ("monthly quota", output::optional(limits.monthly_quota)),
        ],
    )?)
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
        } => {
            let request = IssueKeyRequest {
                name,
                ttl_seconds: ttl,
                scopes,
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
            writeln!(
                out,
                "old key {} expires: {}",
                rotated.old_key.id,
                output::optional(rotated.old_key.expires_at.map(output::time))
            )?;
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
                key.scopes.join(" "),
            ]
        })
        .collect();
    Ok(output::table(
        out,
        &[
            "ID", "NAME", "PREFIX", "CREATED", "EXPIRES", "REVOKED", "SCOPES",
        ],
        &rows,
    )?)
}

async fn verify(
    client: &Client,
    key: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let key = if key == "-" {
        read_key_from_stdin()?
    } else {
        Credential::new(key)
    };

    let principal = client.verify_key(&key).await?;

    if json {
        let mut body = serde_json::json!({
            "valid": true,
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
        });
        if let Some(scopes) = &principal.scopes {
            body["scopes"] = serde_json::json!(scopes);
        }
        output::json(out, &body)?;
    } else {
        let mut pairs = vec![
            ("tenant", principal.tenant_id.to_string()),
            ("key", principal.key_id.to_string()),
        ];
        if let Some(scopes) = &principal.scopes {
            pairs.push(("scopes", scopes.join(" ")));
        }
        writeln!(out, "valid")?;
        output::fields(out, &pairs)?;
    }
    Ok(())
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
