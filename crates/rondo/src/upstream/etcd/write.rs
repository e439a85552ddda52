//! Admin API changes to an upstream that reads etcd: written to etcd rather than to the local
//! pool, so every instance of the fleet applies them (through its watch) and they survive
//! restarts. Each change reads the key and writes it back in one transaction conditional on
//! the key's revision, so two admins changing one backend at once cannot silently undo each
//! other: the second is told to retry. The call returns once this instance has applied the
//! change (or after a short wait), so the caller's next read of the stats shows it.

use std::time::Duration;

use super::{Etcd, GatewayError, Member};

/// How long a write waits for this instance's watch to apply it before answering anyway.
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// Why a change was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No such backend in etcd.
    #[error("no backend `{0}` in etcd for this upstream")]
    Unknown(String),
    /// A backend with that id exists already.
    #[error("backend `{0}` exists already in etcd")]
    Exists(String),
    /// The key changed between read and write.
    #[error("backend `{0}` was changed by someone else meanwhile; read it again and retry")]
    Conflict(String),
    /// Its value in etcd is not one rondo can change.
    #[error("the value of backend `{id}` in etcd is refused ({error}): rewrite it with etcdctl")]
    Bad {
        /// The backend.
        id: String,
        /// What is wrong with its value.
        error: String,
    },
    /// etcd could not be reached or refused the write.
    #[error("{0}; nothing was changed")]
    Gateway(#[from] GatewayError),
}

impl Etcd {
    /// Creates backend `id` of `upstream`.
    pub async fn add(&self, upstream: &str, id: &str, member: &Member) -> Result<(), WriteError> {
        let key = self.keys.backend(upstream, id);
        match self.gateway.put_if(&key, &member.to_json(), 0).await? {
            Some(revision) => {
                self.wait_applied(revision, APPLY_WAIT).await;
                Ok(())
            }
            None => Err(WriteError::Exists(id.to_owned())),
        }
    }

    /// Changes backend `id` of `upstream` with `change`.
    pub async fn change(
        &self,
        upstream: &str,
        id: &str,
        change: impl FnOnce(&mut Member),
    ) -> Result<(), WriteError> {
        let key = self.keys.backend(upstream, id);
        let Some(kv) = self.gateway.get(&key).await? else {
            return Err(WriteError::Unknown(id.to_owned()));
        };
        let mut member = Member::parse(&kv.value).map_err(|error| WriteError::Bad {
            id: id.to_owned(),
            error,
        })?;
        change(&mut member);
        match self
            .gateway
            .put_if(&key, &member.to_json(), kv.mod_revision)
            .await?
        {
            Some(revision) => {
                self.wait_applied(revision, APPLY_WAIT).await;
                Ok(())
            }
            None => Err(WriteError::Conflict(id.to_owned())),
        }
    }

    /// Deletes backend `id` of `upstream`.
    pub async fn remove(&self, upstream: &str, id: &str) -> Result<(), WriteError> {
        let key = self.keys.backend(upstream, id);
        match self.gateway.delete(&key).await? {
            Some(revision) => {
                self.wait_applied(revision, APPLY_WAIT).await;
                Ok(())
            }
            None => Err(WriteError::Unknown(id.to_owned())),
        }
    }
}
