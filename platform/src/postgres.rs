//! The one way the services connect to PostgreSQL: a pool for `DATABASE_URL`, over TLS when the
//! URL asks for it (`sslmode=require`; the certificate is checked against `PGSSLROOTCERT` or the
//! system's roots), plain text otherwise (the local stack's loopback database).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("DATABASE_URL is not valid: {0}")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("connection pool: {0}")]
    Build(String),
}

pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, PoolError> {
    let mut pg: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| PoolError::Url(e.to_string()))?;
    // `prefer` (tokio-postgres' default) would try TLS against any server that offers it, and
    // fail on a self-signed one; TLS is used when asked for, and then verified.
    if pg.get_ssl_mode() != SslMode::Require {
        pg.ssl_mode(SslMode::Disable);
    }
    let manager = Manager::from_config(
        pg,
        crate::tls::postgres_tls()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|e| PoolError::Build(e.to_string()))
}
