//! Start-up: checked settings, the data directory, the store, the pepper,
//! the admin token and the shared state built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tenet_core::{
    AdminToken, AdminTokenDigest, Pepper, PostgresStore, RedisOptions, SqliteStore, Store, Tenet,
};

use crate::body::BodyLimits;
use crate::config::{Config, PEPPER_ENV};
use crate::data_dir::{self, DataDirLock};
use crate::error::Error;
use crate::forwarded::TrustedProxies;
use crate::lifecycle::Lifecycle;
use crate::limiting::Limiter;
use crate::metrics::Metrics;
use crate::secret_file;
use crate::service::AccessLog;

/// Store setting that contains the digest of a generated admin token.
const ADMIN_TOKEN_DIGEST: &str = "admin_token_digest";

/// File in the data directory that contains a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// File in the data directory that contains a generated pepper.
pub const PEPPER_FILE: &str = "pepper";

/// File in the data directory that contains the SQLite database.
pub const DATABASE_FILE: &str = "tenet.db";

/// The state that every request handler shares.
#[derive(Debug)]
pub struct State {
    pub tenet: Tenet,
    /// Digest of the management API's bearer token.
    pub admin: AdminTokenDigest,
    /// Size and time limits of request bodies.
    pub body_limits: BodyLimits,
    pub metrics: Metrics,
    /// Decides which requests get an access log line.
    pub access_log: AccessLog,
    /// Whether shutdown has started, which fails `/readyz`.
    pub lifecycle: Lifecycle,
    /// Rate limits, quotas and the limit of failed authentications.
    pub limiter: Limiter,
    /// The proxies whose `X-Forwarded-For` entries name the client address.
    pub trusted_proxies: TrustedProxies,
}

/// The storage backends the server can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One SQLite file in the data directory.
    Sqlite,
    /// Postgres, shared with other replicas.
    Postgres,
}

impl StoreKind {
    /// Returns the backend that `config` selects.
    pub fn of(config: &Config) -> Self {
        if config.database_url.is_some() {
            StoreKind::Postgres
        } else {
            StoreKind::Sqlite
        }
    }

    /// Returns the name used in log lines and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// Settings and secret files checked before the server binds a port or
/// writes a file, so that a start that fails on one leaves nothing behind.
#[derive(Debug)]
pub struct Settings {
    kind: StoreKind,
    /// The pepper from `TENET_KEY_PEPPER`, or from the pepper file once
    /// [`Settings::read_secret_files`] has read it. With `None`, the pepper
    /// file is read or generated after the data directory is locked.
    pepper: Option<Pepper>,
    /// The digest of `--admin-token`; `None` uses the stored digest, the
    /// admin token file, or generates a token.
    admin: Option<AdminTokenDigest>,
    /// The token in the admin token file, when
    /// [`Settings::read_secret_files`] has read it.
    admin_token_file: Option<AdminToken>,
    limiter: Limiter,
}

impl Settings {
    /// Checks every setting that can be checked without the store or the
    /// file system.
    ///
    /// Settings are checked before the store is touched, so a replica that
    /// lacks one fails at once, even while Postgres is unreachable.
    pub fn check(config: &Config) -> Result<Self, Error> {
        // A fixed port given to both listeners would fail the second bind
        // with a bare "address in use".
        if config.metrics_listen == Some(config.listen) && config.listen.port() != 0 {
            return Err(Error::Config {
                setting: config.setting_name("metrics_listen"),
                reason: format!(
                    "{} is also the address of {}; give the metrics listener a port \
                     of its own, or leave it unset to serve /metrics on --listen",
                    config.listen,
                    config.setting_name("listen")
                ),
            });
        }
        check_urls(config)?;
        let kind = StoreKind::of(config);
        let pepper = configured_pepper(config, kind)?;
        let admin = configured_admin_token(config, kind)?;
        let limiter = config
            .limiter()
            .and_then(Limiter::new)
            .map_err(|err| Error::Config {
                setting: "rate limits".to_owned(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            kind,
            pepper,
            admin,
            admin_token_file: None,
            limiter,
        })
    }

    /// Returns the store backend that the settings select.
    pub fn store_kind(&self) -> StoreKind {
        self.kind
    }

    /// Reads and checks the secret files of an existing SQLite data
    /// directory without writing anything, so that a start that fails on
    /// an invalid one leaves the directory as it found it.
    ///
    /// It reads `<data-dir>/pepper` unless `TENET_KEY_PEPPER` is set, and
    /// `<data-dir>/admin-token` unless `--admin-token` is set or the
    /// database exists. An existing database may hold the digest of the
    /// token generated at the first start, and then the file is not used,
    /// so [`build_state`] reads it only when the store has no digest. A
    /// missing file is generated by [`build_state`] too.
    ///
    /// A server at its first start may not have finished writing a file,
    /// which then reads as invalid, so a failure is reported as
    /// [`Error::DataDirLocked`] while another process holds the lock.
    pub fn read_secret_files(&mut self, config: &Config) -> Result<(), Error> {
        let dir = &config.data_dir;
        // A missing directory has no secret files, and a path that is not
        // a directory fails in `lock_data_dir` with "not a directory".
        if self.kind != StoreKind::Sqlite || !dir.is_dir() {
            return Ok(());
        }
        self.read_files_in(dir)
            .map_err(|invalid| match data_dir::check_not_locked(dir) {
                Ok(()) => invalid,
                Err(locked) => locked,
            })
    }

    fn read_files_in(&mut self, dir: &Path) -> Result<(), Error> {
        if self.pepper.is_none() {
            self.pepper = read_pepper_file(&dir.join(PEPPER_FILE))?;
        }
        // When `try_exists` fails, the database counts as existing, and
        // `build_state` reads the token file if the store has no digest.
        let no_database = matches!(dir.join(DATABASE_FILE).try_exists(), Ok(false));
        if self.admin.is_none() && no_database {
            self.admin_token_file = read_admin_token_file(&dir.join(ADMIN_TOKEN_FILE))?;
        }
        Ok(())
    }
}

/// Parses `--database-url` and `--redis-url` without connecting, so that a
/// malformed one is named by its setting. Neither message contains the
/// URL, which may carry a password.
fn check_urls(config: &Config) -> Result<(), Error> {
    if let Some(url) = config.database_url.as_deref() {
        PostgresStore::check_url(url).map_err(|err| Error::Config {
            setting: config.setting_name("database_url"),
            reason: err.to_string(),
        })?;
    }
    if let Some(url) = config.redis_url.as_deref() {
        RedisOptions::check_url(url).map_err(|err| Error::Config {
            setting: config.setting_name("redis_url"),
            reason: err.to_string(),
        })?;
    }
    Ok(())
}

/// Creates the SQLite data directory with mode 0700 unless it exists,
/// warns when an existing one is accessible to group or others, and locks
/// it for this process. A second server on the same directory then fails
/// at start instead of sharing the database file. Returns `None` on
/// Postgres, which keeps nothing in the data directory, so replicas run
/// with a read-only file system.
pub fn lock_data_dir(config: &Config, kind: StoreKind) -> Result<Option<DataDirLock>, Error> {
    if kind != StoreKind::Sqlite {
        return Ok(None);
    }
    secret_file::create_dir(&config.data_dir).map_err(|source| Error::Io {
        action: "create the data directory",
        path: config.data_dir.clone(),
        source,
    })?;
    data_dir::warn_if_exposed(&config.data_dir)?;
    DataDirLock::acquire(&config.data_dir).map(Some)
}

/// Builds the shared state from checked settings: opens the store and
/// resolves the pepper and the admin token, writing the generated ones
/// into the data directory, which [`lock_data_dir`] must have locked.
pub async fn build_state(config: &Config, settings: Settings) -> Result<State, Error> {
    let Settings {
        kind,
        pepper,
        admin,
        admin_token_file,
        limiter,
    } = settings;
    // The store opens first, so that a store that fails to open (a
    // corrupt database file, say) leaves no generated pepper behind.
    let store = open_store(config).await?;
    // The admin token is found before a pepper is generated, so that an
    // invalid admin token file leaves no generated pepper behind either.
    let admin = match admin {
        Some(digest) => AdminTokenSource::Digest(digest),
        None => existing_admin_token(config, store.as_ref(), kind, admin_token_file).await?,
    };
    let pepper_path = config.data_dir.join(PEPPER_FILE);
    let (pepper, generated_pepper) = match pepper {
        Some(pepper) => (pepper, false),
        None => pepper_from_file(&pepper_path)?,
    };

    let mut builder = Tenet::builder(store, pepper);
    if let Some(cache) = config.cache() {
        builder = builder.cache(cache);
        if let Some(redis) = config.redis() {
            builder = builder.redis(redis);
        }
    }
    let tenet = match builder.build().await {
        Ok(tenet) => tenet,
        Err(source) => {
            // The store rejected a pepper generated just now, so its keys
            // were issued under another one. The file must not stay,
            // because the next start and back-ups would take it as valid.
            if generated_pepper {
                remove_generated_pepper(&pepper_path);
            }
            return Err(Error::OpenStore {
                kind: kind.as_str(),
                source,
            });
        }
    };
    let admin = match admin {
        AdminTokenSource::Digest(digest) => digest,
        AdminTokenSource::File(token) => {
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            let digest = store_admin_token(tenet.store().as_ref(), kind, &token).await?;
            tracing::info!(
                path = %path.display(),
                "stored the digest of the admin token read from this file"
            );
            digest
        }
        AdminTokenSource::Generate => {
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            let token = generate_admin_token_file(&path)?;
            let digest = store_admin_token(tenet.store().as_ref(), kind, &token).await?;
            tracing::info!(
                path = %path.display(),
                "generated the admin token; read it from this file"
            );
            digest
        }
    };

    Ok(State {
        metrics: Metrics::new(tenet.clone()),
        tenet,
        admin,
        body_limits: BodyLimits {
            max_bytes: config.max_body_bytes,
            read_timeout: config.header_read_timeout(),
        },
        access_log: AccessLog::new(config.access_log_sample),
        lifecycle: Lifecycle::default(),
        limiter,
        trusted_proxies: trusted_proxies(config),
    })
}

/// Returns the configured trusted proxies, warning about a range that
/// trusts every address: any client could then pick the address that the
/// limit of failed authentications counts, and so evade it.
fn trusted_proxies(config: &Config) -> TrustedProxies {
    let proxies = config.trusted_proxies.clone().unwrap_or_default();
    let catch_all = proxies.catch_all_ranges();
    if !catch_all.is_empty() {
        tracing::warn!(
            ranges = %catch_all.join(","),
            "--trusted-proxies trusts every address, so any client can set the address \
             that failed authentications are counted by; list only the proxies' addresses"
        );
    }
    proxies
}

/// Opens the store that the configuration selects: Postgres when
/// `--database-url` is set (migrated unless `--skip-migrations`), else the
/// SQLite file `<data-dir>/tenet.db`. This is the one place that chooses a
/// backend.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    if let Some(store) = connect_postgres(config).await? {
        if !config.skip_migrations {
            migrate_postgres(&store).await?;
        }
        return Ok(Arc::new(store));
    }

    let database = config.data_dir.join(DATABASE_FILE);
    data_dir::restrict_database_files(&database)?;
    let store = SqliteStore::open(database)
        .await
        .map_err(|source| Error::OpenStore {
            kind: StoreKind::Sqlite.as_str(),
            source,
        })?;
    Ok(Arc::new(store))
}

/// Connects to Postgres when `--database-url` is set.
pub async fn connect_postgres(config: &Config) -> Result<Option<PostgresStore>, Error> {
    let Some((url, options)) = config.postgres() else {
        return Ok(None);
    };
    let store = PostgresStore::connect(url, options)
        .await
        .map_err(|source| Error::OpenStore {
            kind: StoreKind::Postgres.as_str(),
            source,
        })?;
    Ok(Some(store))
}

/// Applies pending migrations; replicas starting together take turns.
pub async fn migrate_postgres(store: &PostgresStore) -> Result<(), Error> {
    let applied = store.migrate().await.map_err(|source| Error::OpenStore {
        kind: StoreKind::Postgres.as_str(),
        source,
    })?;
    if applied.is_empty() {
        tracing::info!("Postgres schema is up to date");
    } else {
        tracing::info!(versions = ?applied, "applied Postgres migrations");
    }
    Ok(())
}

/// Takes the pepper from `TENET_KEY_PEPPER`. When it is unset, the
/// embedded store reads `<data-dir>/pepper`, or generates that file on the
/// first start, so this returns `None`.
fn configured_pepper(config: &Config, kind: StoreKind) -> Result<Option<Pepper>, Error> {
    if let Some(text) = &config.key_pepper {
        return Pepper::from_config(text)
            .map(Some)
            .map_err(|err| Error::Config {
                setting: PEPPER_ENV.to_owned(),
                reason: err.to_string(),
            });
    }

    match kind {
        StoreKind::Sqlite => Ok(None),
        // A generated pepper would differ per replica and lock out keys
        // issued elsewhere.
        StoreKind::Postgres => Err(Error::Missing {
            setting: PEPPER_ENV,
            reason: "every replica on --database-url must digest keys with the same \
                     pepper; set it to the same random value of at least 32 bytes on \
                     every replica",
        }),
    }
}

/// Reads the pepper file, or generates a pepper and writes it there when
/// the file is missing. Returns the pepper and whether it was generated.
fn pepper_from_file(path: &Path) -> Result<(Pepper, bool), Error> {
    if let Some(pepper) = read_pepper_file(path)? {
        return Ok((pepper, false));
    }
    let generated = Pepper::generate_config();
    secret_file::create(path, &generated).map_err(|source| Error::Io {
        action: "write the generated pepper to",
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(path = %path.display(), "generated the key pepper");
    let pepper = Pepper::from_config(&generated).map_err(|err| invalid_pepper_file(path, err))?;
    Ok((pepper, true))
}

/// Reads and checks the pepper file; `None` when it is missing.
fn read_pepper_file(path: &Path) -> Result<Option<Pepper>, Error> {
    let Some(text) = secret_file::read(path).map_err(|source| read_error(path, source))? else {
        return Ok(None);
    };
    Pepper::from_config(&text)
        .map(Some)
        .map_err(|err| invalid_pepper_file(path, err))
}

fn invalid_pepper_file(path: &Path, err: tenet_core::Error) -> Error {
    Error::Config {
        setting: "pepper file".to_owned(),
        reason: format!("{}: {err}", path.display()),
    }
}

/// Removes a pepper file that this start generated, when the store refused
/// it. A failure is logged, and the start fails with the store's error
/// either way.
fn remove_generated_pepper(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(
            path = %path.display(),
            "removed the generated key pepper, which the store did not accept"
        ),
        Err(err) => tracing::error!(
            path = %path.display(),
            error = %err,
            "failed to remove the generated key pepper, which the store did not accept; \
             delete the file before the next start"
        ),
    }
}

/// Takes the admin token's digest from `--admin-token`. When that is unset
/// on SQLite, returns `None`, and the server uses a stored digest or
/// generates a token. Replicas on Postgres must have one configured,
/// because a generated token would live in one replica's data directory
/// only.
fn configured_admin_token(
    config: &Config,
    kind: StoreKind,
) -> Result<Option<AdminTokenDigest>, Error> {
    let Some(text) = &config.admin_token else {
        if kind == StoreKind::Postgres {
            return Err(Error::Missing {
                setting: "--admin-token (TENET_ADMIN_TOKEN)",
                reason: "replicas on --database-url cannot share a generated token; set \
                         the same token of at least 32 visible ASCII characters on every \
                         replica",
            });
        }
        return Ok(None);
    };

    let token = AdminToken::from_config(text).map_err(|err| Error::Config {
        setting: config.setting_name("admin_token"),
        reason: err.to_string(),
    })?;
    Ok(Some(token.digest()))
}

/// The admin token of a start, before anything is written for it.
enum AdminTokenSource {
    /// The digest of `--admin-token`, or the one that an earlier start
    /// stored.
    Digest(AdminTokenDigest),
    /// The token in `<data-dir>/admin-token`, whose digest is not stored
    /// yet.
    File(AdminToken),
    /// No token yet; one is generated into `<data-dir>/admin-token`.
    Generate,
}

/// Finds the admin token of a start without `--admin-token`, writing
/// nothing: the digest that an earlier start stored, else the token in
/// `<data-dir>/admin-token` (`file_token` when
/// [`Settings::read_secret_files`] has read it), else none yet.
async fn existing_admin_token(
    config: &Config,
    store: &dyn Store,
    kind: StoreKind,
    file_token: Option<AdminToken>,
) -> Result<AdminTokenSource, Error> {
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    let stored = store
        .setting(ADMIN_TOKEN_DIGEST)
        .await
        .map_err(|source| Error::OpenStore {
            kind: kind.as_str(),
            source,
        })?;
    if let Some(stored) = stored {
        // The file is not read again, but it may still hold the token.
        if path.exists() {
            secret_file::warn_if_exposed(&path);
        } else {
            tracing::info!(
                path = %path.display(),
                "the admin token file is gone; the token generated at the first start \
                 still works, and --admin-token replaces it while it is passed"
            );
        }
        return digest_from_setting(&stored).map(AdminTokenSource::Digest);
    }

    let token = match file_token {
        Some(token) => Some(token),
        None => read_admin_token_file(&path)?,
    };
    Ok(token.map_or(AdminTokenSource::Generate, AdminTokenSource::File))
}

/// Stores the digest of `token` as the admin token's, and returns the
/// stored digest, which is another start's when that one stored first.
async fn store_admin_token(
    store: &dyn Store,
    kind: StoreKind,
    token: &AdminToken,
) -> Result<AdminTokenDigest, Error> {
    let stored = store
        .init_setting(ADMIN_TOKEN_DIGEST, token.digest().as_bytes())
        .await
        .map_err(|source| Error::OpenStore {
            kind: kind.as_str(),
            source,
        })?;
    digest_from_setting(&stored)
}

/// Writes a new admin token to `path`, or reads the one that is there if
/// the file appeared since [`existing_admin_token`] looked.
fn generate_admin_token_file(path: &Path) -> Result<AdminToken, Error> {
    let generated = AdminToken::generate();
    match secret_file::create(path, generated.expose_secret()) {
        Ok(()) => return Ok(generated),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(Error::Io {
                action: "write the generated admin token to",
                path: path.to_path_buf(),
                source,
            });
        }
    }

    read_admin_token_file(path)?.ok_or_else(|| {
        read_error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the file was removed while the server started; start it again",
            ),
        )
    })
}

/// Reads and checks the admin token file; `None` when it is missing.
fn read_admin_token_file(path: &Path) -> Result<Option<AdminToken>, Error> {
    let Some(text) = secret_file::read(path).map_err(|source| read_error(path, source))? else {
        return Ok(None);
    };
    AdminToken::from_config(&text)
        .map(Some)
        .map_err(|err| Error::Config {
            setting: "admin token file".to_owned(),
            reason: format!("{}: {err}", path.display()),
        })
}

fn digest_from_setting(stored: &[u8]) -> Result<AdminTokenDigest, Error> {
    let bytes = <[u8; 32]>::try_from(stored).map_err(|_| Error::Config {
        setting: "stored admin token digest".to_owned(),
        reason: format!(
            "the store's {ADMIN_TOKEN_DIGEST} setting is {} bytes long instead of 32; \
             start with --admin-token, which takes precedence",
            stored.len()
        ),
    })?;
    Ok(AdminTokenDigest::from_bytes(bytes))
}

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action: "read",
        path: PathBuf::from(path),
        source,
    }
}
