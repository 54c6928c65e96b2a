//! A static token (`X-Auth-Token`) read from a file.
//!
//! Place in the data flow: called by the client for every attempt. The file is
//! checked (one `stat`) on every call and read again when its modification
//! time, size or inode changed, so a token rotated by a secret manager is used
//! from the next call on without a restart.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{AuthError, BoxFuture, Credential, OutgoingRequest};
use crate::hss::settings::Secret;

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// Sends the token held in a file.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(Version, Secret)>>,
}

impl TokenFile {
    /// Reads tokens from `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    fn error(&self, reason: impl Into<String>) -> AuthError {
        AuthError::TokenFile {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// The current token, from the cache while the file is unchanged.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let version = Version {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: inode(&meta),
        };
        if let Some((cached_version, token)) = &*self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            && *cached_version == version
        {
            return Ok(token.clone());
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(self.error("the file is empty"));
        }
        if token.contains(['\r', '\n']) {
            return Err(self.error("the token spans several lines"));
        }
        let token = Secret::new(token);
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((version, token.clone()));
        Ok(token)
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

impl Credential for TokenFile {
    fn authorize<'a>(
        &'a self,
        request: &'a mut OutgoingRequest,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let token = self.token().await?;
            request
                .headers
                .push(("X-Auth-Token".to_string(), token.expose().to_string()));
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "token_file"
    }

    fn project_source(&self) -> super::ProjectSource {
        // A token may not carry the permission to list projects; the
        // projects its own user can reach need none.
        super::ProjectSource::AuthProjects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_is_re_read_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("hss-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first-token\n").unwrap();
        let credential = TokenFile::new(path.clone());
        assert_eq!(credential.token().await.unwrap().expose(), "first-token");
        // A rotation writes a new file and renames it into place, as secret managers do.
        std::fs::write(dir.join("token.new"), "second-token-longer").unwrap();
        std::fs::rename(dir.join("token.new"), &path).unwrap();
        assert_eq!(
            credential.token().await.unwrap().expose(),
            "second-token-longer"
        );
        std::fs::write(&path, "  \n").unwrap();
        let err = credential.token().await.unwrap_err().to_string();
        assert!(err.ends_with("the file is empty"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert!(credential.token().await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_token_goes_into_x_auth_token() {
        let dir = std::env::temp_dir().join(format!("hss-token-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t"), "abc").unwrap();
        let credential = TokenFile::new(dir.join("t"));
        let mut req = OutgoingRequest {
            method: "GET",
            host: "h".into(),
            path: "/".into(),
            query: vec![],
            headers: vec![],
            body: vec![],
        };
        credential.authorize(&mut req).await.unwrap();
        assert_eq!(
            req.headers,
            vec![("X-Auth-Token".to_string(), "abc".to_string())]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
