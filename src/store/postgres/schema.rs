//! The key store's schema: versioned migrations embedded in the binary, applied only by
//! `sealgate keys migrate`, and the check the service makes before it uses a database.

use tokio_postgres::{Client, GenericClient};

use super::PgError;

/// The migrations, in order; the version of each is its position + 1. Append only: a
/// migration that has shipped is never edited.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_keys.sql")];

/// The schema version this binary reads and writes.
pub const CURRENT: i32 = MIGRATIONS.len() as i32;

/// Serialises `sealgate keys migrate` runs from several hosts (a transaction-level advisory
/// lock; the number is arbitrary but fixed: "sealgate" in ASCII).
const MIGRATE_LOCK: i64 = 0x7365_616c_6761_7465;

/// The newest applied version, or `None` when the database has no sealgate schema yet.
///
/// # Errors
/// The database could not be asked.
pub async fn applied(client: &impl GenericClient) -> Result<Option<i32>, PgError> {
    let exists = client
        .query_one(
            "SELECT to_regclass('sealgate.schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM sealgate.schema_version", &[])
        .await?;
    Ok(row.get::<_, Option<i32>>(0))
}

/// What the service says about a database's schema before it reads keys from it.
///
/// # Errors
/// [`PgError::Schema`] when the schema is missing, older or newer than [`CURRENT`].
pub async fn check(client: &Client) -> Result<(), PgError> {
    match applied(client).await? {
        Some(CURRENT) => Ok(()),
        None => Err(PgError::Schema(
            "the database has no sealgate schema: run `sealgate keys migrate`".into(),
        )),
        Some(v) if v < CURRENT => Err(PgError::Schema(format!(
            "the database has schema version {v}, this sealgate needs {CURRENT}: run \
             `sealgate keys migrate`"
        ))),
        Some(v) => Err(PgError::Schema(format!(
            "the database has schema version {v}, newer than this sealgate knows ({CURRENT}): \
             upgrade sealgate on this host"
        ))),
    }
}

/// Applies every migration the database lacks, in one transaction (all or none), and returns
/// the versions applied (empty when it was up to date).
///
/// # Errors
/// A migration failed (nothing was applied), or the database is newer than this binary.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, PgError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let from = applied(&transaction).await?.unwrap_or(0);
    if from > CURRENT {
        return Err(PgError::Schema(format!(
            "the database has schema version {from}, newer than this sealgate knows \
             ({CURRENT}): upgrade sealgate first"
        )));
    }
    let mut done = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let version = index as i32 + 1;
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO sealgate.schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await?;
        done.push(version);
    }
    transaction.commit().await?;
    Ok(done)
}
