use tokio_postgres::NoTls;

/// A fresh database for one test, dropped afterwards.
pub struct TestDb {
    pub name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("hie_test_{}", uuid::Uuid::new_v4().simple());
        let admin_url = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await.expect(
            "PostgreSQL at TEST_PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres)",
        );
        tokio::spawn(conn);
        client
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .expect("create test database");
        TestDb { name, admin_url }
    }

    pub fn url(&self) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => panic!("admin url has no database part"),
        }
    }

    /// A client for assertions on the views.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connect test db");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.admin_url.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                tokio::spawn(conn);
                client
                    .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
                    .await
                    .ok()
            })
        })
        .join();
    }
}
