//! The audit log.

use crate::Result;

use super::{Actor, AuditEntry, AuditQuery, ControlStore, log_audit, record};

impl ControlStore {
    /// Writes an audit entry outside any other mutation (e.g. a data deletion performed by
    /// another component on behalf of an API call).
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database).
    pub async fn record_audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        let entry = record(actor, action, target, outcome, detail);
        self.backend().append_audit(entry).await?;
        log_audit(&entry);
        Ok(())
    }

    /// Reads the audit log, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database).
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.backend().audit_log(query).await
    }
}
