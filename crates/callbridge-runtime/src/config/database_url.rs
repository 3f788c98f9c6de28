//! The guide's database URLs (SQLAlchemy forms included) turned into the `postgres://`
//! URLs sqlx reads.

use super::ConfigError;

/// Schemes the guide and common tooling use for PostgreSQL; the driver suffix only
/// matters to SQLAlchemy.
const POSTGRES_SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgres+asyncpg",
    "postgres+psycopg",
    "postgres+psycopg2",
];

/// A database URL normalised to `postgres://…`, plus what identifies the database it
/// names (used to check that two URLs agree, and in messages: it has no password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub url: String,
    pub identity: DatabaseIdentity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseIdentity {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl std::fmt::Display for DatabaseIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

/// Accepts `postgres://`, `postgresql://` and the SQLAlchemy `postgresql+<driver>://`
/// forms; `variable` names the setting in errors, which never quote the URL (it may hold
/// a password).
pub fn normalise_database_url(raw: &str, variable: &str) -> Result<DatabaseUrl, ConfigError> {
    let raw = raw.trim();
    let invalid = |problem: String| ConfigError::Invalid {
        setting: variable.to_owned(),
        problem,
    };
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(invalid(
            "must be a URL such as postgresql+asyncpg://user:pass@host:5432/db".to_owned(),
        ));
    };
    if !POSTGRES_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(invalid(format!(
            "must be a PostgreSQL URL (postgres://, postgresql://, postgresql+asyncpg://, postgresql+psycopg://), got scheme {scheme:?}"
        )));
    }
    let url = format!("postgres://{rest}");
    let parsed =
        url::Url::parse(&url).map_err(|error| invalid(format!("is not a valid URL ({error})")))?;
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host.to_ascii_lowercase(),
        _ => return Err(invalid("must name a host".to_owned())),
    };
    let user = percent_decode(parsed.username());
    let database = percent_decode(parsed.path().trim_start_matches('/'));
    let identity = DatabaseIdentity {
        // libpq's defaults: the database is named after the user when the path is empty.
        database: if database.is_empty() {
            user.clone()
        } else {
            database
        },
        user,
        host,
        port: parsed.port().unwrap_or(5432),
    };
    Ok(DatabaseUrl { url, identity })
}

/// Decodes `%XX` escapes of a URL component (`+` stays `+`: this is a path, not a form).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_forms_become_postgres_urls() {
        for scheme in [
            "postgres",
            "postgresql",
            "postgresql+asyncpg",
            "postgresql+psycopg",
            "postgresql+psycopg2",
            "POSTGRESQL+ASYNCPG",
        ] {
            let parsed =
                normalise_database_url(&format!("{scheme}://u:p%40ss@DB.example:6543/calls"), "X")
                    .unwrap();
            assert_eq!(parsed.url, "postgres://u:p%40ss@DB.example:6543/calls");
            assert_eq!(parsed.identity.to_string(), "u@db.example:6543/calls");
        }
    }

    #[test]
    fn identity_decodes_escapes_but_keeps_plus_signs() {
        let parsed = normalise_database_url("postgres://a%2Bb@h/my%20db+x", "X").unwrap();
        assert_eq!(parsed.identity.user, "a+b");
        assert_eq!(parsed.identity.database, "my db+x");
    }

    #[test]
    fn default_port_and_database_follow_libpq() {
        let parsed = normalise_database_url("postgresql://client_user@host", "X").unwrap();
        assert_eq!(parsed.identity.port, 5432);
        assert_eq!(parsed.identity.database, "client_user");
    }

    #[test]
    fn other_schemes_are_refused_without_quoting_the_url() {
        let error = normalise_database_url("mysql://u:secretpw@h/db", "CLIENT_CALLING_DB_URL")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("CLIENT_CALLING_DB_URL must be a PostgreSQL URL"),
            "{error}"
        );
        assert!(!error.contains("secretpw"), "{error}");
        let error = normalise_database_url("not a url", "CLIENT_CALLING_DB_URL")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("CLIENT_CALLING_DB_URL must be a URL"),
            "{error}"
        );
    }
}
