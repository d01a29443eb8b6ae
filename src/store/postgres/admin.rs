//! The writes of `sealgate keys` against the key database: each change in one transaction,
//! so a half-applied import is impossible, and concurrent imports of one certificate from two
//! hosts merge instead of losing signatures (the row is locked while merging).

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::SerializeInto;
use tokio_postgres::{Client, GenericClient};

use std::sync::Arc;
use std::time::SystemTime;

use super::cache::{CertRow, decide};
use super::{Location, PgError, schema};
use crate::openpgp::{email_addresses, strip_third_party_certifications};
use crate::store::Lookup;

/// An administrative connection (short-lived: one `sealgate keys` command).
pub struct Admin {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
}

/// What an import did.
#[derive(Debug)]
pub enum Imported {
    /// Stored (new, or merged into the stored copy); the certificate as stored.
    Stored(Cert),
    /// Merged into the stored copy although the result is unusable: an update may carry the
    /// holder's revocation, and keeping the old copy would keep encrypting to a key its holder
    /// gave up. The reason says why it is unusable.
    MergedUnusable(Cert, String),
    /// Not stored, with the reason.
    Refused(String),
}

impl Admin {
    /// Connects and checks that the schema is the one this binary knows.
    ///
    /// # Errors
    /// Connection or schema problems, one line each.
    pub async fn connect(location: &Location) -> Result<Admin, PgError> {
        let admin = Admin::connect_unchecked(location).await?;
        schema::check(&admin.client).await?;
        Ok(admin)
    }

    /// Connects without looking at the schema (for `sealgate keys migrate`).
    ///
    /// # Errors
    /// Connection problems.
    pub async fn connect_unchecked(location: &Location) -> Result<Admin, PgError> {
        let (client, connection) = location.connect().await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Admin { client, driver })
    }

    /// Applies the missing migrations; returns the versions applied.
    ///
    /// # Errors
    /// See [`schema::migrate`].
    pub async fn migrate(&mut self) -> Result<Vec<i32>, PgError> {
        schema::migrate(&mut self.client).await
    }

    /// The schema version of the database (`None`: no sealgate schema).
    ///
    /// # Errors
    /// The database could not be asked.
    pub async fn schema_version(&self) -> Result<Option<i32>, PgError> {
        schema::applied(&self.client).await
    }

    /// Imports `cert`: secret material and third-party certifications stripped, merged with
    /// the stored copy (if any) under a row lock, judged by `judge` (`Some(reason)`: unusable),
    /// then the certificate, its own addresses and the address index written, all in one
    /// transaction. `imported_by` is recorded (who ran the import, where).
    ///
    /// # Errors
    /// The database failed; nothing was written.
    pub async fn import(
        &mut self,
        cert: &Cert,
        imported_by: &str,
        judge: impl Fn(&Cert) -> Option<String>,
    ) -> Result<Imported, PgError> {
        let fingerprint = cert.fingerprint().to_hex();
        let incoming = strip_third_party_certifications(cert.clone().strip_secret_key_material())
            .map_err(|err| PgError::Data(format!("certificate {fingerprint}: {err}")))?;
        let transaction = self.client.transaction().await?;
        let stored = transaction
            .query_opt(
                "SELECT certificate FROM sealgate.certificates WHERE fingerprint = $1 FOR UPDATE",
                &[&fingerprint],
            )
            .await?;
        let update = stored.is_some();
        let candidate = match stored {
            Some(row) => {
                let bytes: Vec<u8> = row.try_get(0)?;
                match Cert::from_bytes(&bytes) {
                    Ok(old) => match old.merge_public(incoming.clone()) {
                        Ok(merged) => strip_third_party_certifications(merged).map_err(|err| {
                            PgError::Data(format!("certificate {fingerprint}: {err}"))
                        })?,
                        Err(err) => {
                            return Ok(Imported::Refused(format!(
                                "cannot merge with the stored copy: {err}"
                            )));
                        }
                    },
                    // The stored copy is damaged: the new one replaces it (as cert-d does).
                    Err(_) => incoming.clone(),
                }
            }
            None => incoming.clone(),
        };
        let problem = judge(&candidate);
        if let (Some(reason), false) = (&problem, update) {
            // Nothing written: the transaction rolls back on drop.
            return Ok(Imported::Refused(reason.clone()));
        }
        let bytes = candidate
            .to_vec()
            .map_err(|err| PgError::Data(format!("certificate {fingerprint}: {err}")))?;
        transaction
            .execute(
                "INSERT INTO sealgate.certificates (fingerprint, certificate, imported_by)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (fingerprint) DO UPDATE
                   SET certificate = EXCLUDED.certificate, updated = now(),
                       imported_by = EXCLUDED.imported_by",
                &[&fingerprint, &bytes, &imported_by],
            )
            .await?;
        let addresses = email_addresses(&candidate);
        // User IDs the certificate no longer carries (revoked) leave the index by cascade.
        transaction
            .execute(
                "DELETE FROM sealgate.certificate_addresses
                  WHERE fingerprint = $1 AND NOT (address = ANY($2))",
                &[&fingerprint, &addresses],
            )
            .await?;
        transaction
            .execute(
                "INSERT INTO sealgate.certificate_addresses (fingerprint, address)
                 SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                &[&fingerprint, &addresses],
            )
            .await?;
        transaction
            .execute(
                "INSERT INTO sealgate.addresses (address, fingerprint)
                 SELECT unnest($2::text[]), $1 ON CONFLICT DO NOTHING",
                &[&fingerprint, &addresses],
            )
            .await?;
        transaction.commit().await?;
        Ok(match problem {
            None => Imported::Stored(candidate),
            Some(reason) => Imported::MergedUnusable(candidate, reason),
        })
    }

    /// The stored copy of the certificate with this fingerprint (upper-case hex).
    ///
    /// # Errors
    /// The database failed, or the stored bytes are not a certificate.
    pub async fn stored(&self, fingerprint: &str) -> Result<Option<Cert>, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT certificate FROM sealgate.certificates WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await?;
        row.map(|row| parse(fingerprint, &row.try_get::<_, Vec<u8>>(0)?))
            .transpose()
    }

    /// Removes a certificate (and with it its index entries); `false` when there was none.
    ///
    /// # Errors
    /// The database failed.
    pub async fn remove(&self, fingerprint: &str) -> Result<bool, PgError> {
        let n = self
            .client
            .execute(
                "DELETE FROM sealgate.certificates WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await?;
        Ok(n > 0)
    }

    /// Every certificate, ordered by fingerprint.
    ///
    /// # Errors
    /// The database failed, or a stored row is not a certificate.
    pub async fn certificates(&self) -> Result<Vec<Cert>, PgError> {
        certificates(
            &self.client,
            "SELECT fingerprint, certificate FROM sealgate.certificates ORDER BY fingerprint",
            &[],
        )
        .await
    }

    /// The certificates the index names for `address` (canonical), ordered by fingerprint.
    ///
    /// # Errors
    /// The database failed, or a stored row is not a certificate.
    pub async fn certificates_for(&self, address: &str) -> Result<Vec<Cert>, PgError> {
        certificates(
            &self.client,
            "SELECT c.fingerprint, c.certificate FROM sealgate.addresses a
               JOIN sealgate.certificates c USING (fingerprint)
              WHERE a.address = $1 ORDER BY c.fingerprint",
            &[&address],
        )
        .await
    }

    /// What the service would answer for `address` now (its canonical form, else without the
    /// subaddress), and every certificate the index names for it, readable or not shown.
    ///
    /// # Errors
    /// The database failed.
    pub async fn lookup(&self, address_text: &str) -> Result<(Lookup, Vec<Arc<Cert>>), PgError> {
        let (canonical, base) = super::forms(address_text);
        let wanted: Vec<String> = std::iter::once(canonical.clone())
            .chain(base.clone())
            .collect();
        let fetched = super::fetch(&self.client, &wanted).await?;
        let rows_of = |address: &str| -> Vec<CertRow> {
            fetched
                .iter()
                .find(|f| f.address == address)
                .map(|f| f.certs.clone())
                .unwrap_or_default()
        };
        let mut rows = rows_of(&canonical);
        if rows.is_empty()
            && let Some(base) = &base
        {
            rows = rows_of(base);
        }
        let certs = rows
            .iter()
            .filter_map(|row| match row {
                CertRow::Readable(key) => Some(Arc::clone(&key.cert)),
                CertRow::Damaged { .. } => None,
            })
            .collect();
        Ok((decide(&rows, SystemTime::now()), certs))
    }

    /// Closes the connection.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.driver.await;
    }
}

async fn certificates(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Cert>, PgError> {
    let rows = client.query(sql, params).await?;
    rows.iter()
        .map(|row| {
            let fingerprint: String = row.try_get(0)?;
            parse(&fingerprint, &row.try_get::<_, Vec<u8>>(1)?)
        })
        .collect()
}

fn parse(fingerprint: &str, bytes: &[u8]) -> Result<Cert, PgError> {
    Cert::from_bytes(bytes).map_err(|err| {
        PgError::Data(format!(
            "certificate {fingerprint} in the key database cannot be read: {err}"
        ))
    })
}
