//! Writing resources: create, merge-patch and delete through the API server, wait until
//! this replica's cache shows the write, and audit it with an Event on the object naming
//! the user. API-server refusals become the API's error codes.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Scope;
use crate::envelope::{ApiError, ErrorCode};
use crate::state::Caches;

/// The field manager of the console's writes.
pub const MANAGER: &str = "mq-console";

/// A resource kind the console writes.
pub trait Kind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// What an API-server error means to the caller; `exists` is the code of a 409.
pub fn refusal(e: kube::Error, exists: ErrorCode, what: &str) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 409 => {
            ApiError::new(exists, format!("{what} already exists"))
        }
        // The admission webhook or the schema refused: its message says why.
        kube::Error::Api(s) if s.code == 400 || s.code == 403 || s.code == 422 => {
            ApiError::new(ErrorCode::FieldCheckInvalid, s.message)
        }
        kube::Error::Api(s) if s.code == 404 => ApiError::invoke(format!(
            "{what}: the platform is not installed ({})",
            s.message
        )),
        other => ApiError::invoke(format!("{what}: the Kubernetes API failed: {other}")),
    }
}

impl Scope<'_> {
    /// Creates `obj`, waits until this replica's cache holds it, and audits it.
    pub async fn create<K: Kind>(
        &self,
        store: &Store<K>,
        obj: &K,
        exists: ErrorCode,
        what: &str,
    ) -> Result<K, ApiError> {
        let ns = obj.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.cx.client.clone(), &ns);
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let created = api
            .create(&pp, obj)
            .await
            .map_err(|e| refusal(e, exists, what))?;
        self.settle(store, &created).await;
        self.audit(&created, "Created", format!("{what} created"))
            .await;
        Ok(created)
    }

    /// Merge-patches `spec` fields of `obj`, waits for the cache, audits.
    pub async fn patch_spec<K: Kind>(
        &self,
        store: &Store<K>,
        obj: &K,
        spec: serde_json::Value,
        what: &str,
    ) -> Result<K, ApiError> {
        let api: Api<K> =
            Api::namespaced(self.cx.client.clone(), &obj.namespace().unwrap_or_default());
        let patched = api
            .patch(
                &obj.name_any(),
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .map_err(|e| refusal(e, ErrorCode::SystemError, what))?;
        self.settle(store, &patched).await;
        self.audit(&patched, "Updated", format!("{what} updated: {spec}"))
            .await;
        Ok(patched)
    }

    /// Deletes `obj` (a missing one counts as deleted), waits until the cache shows it
    /// going, audits.
    pub async fn delete<K: Kind>(
        &self,
        store: &Store<K>,
        obj: &K,
        what: &str,
    ) -> Result<(), ApiError> {
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        self.audit(obj, "Deleted", format!("{what} deleted")).await;
        let api: Api<K> = Api::namespaced(self.cx.client.clone(), &ns);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(refusal(e, ErrorCode::SystemError, what)),
        }
        if !Caches::until_deleting(store, &ns, &name, self.cx.settings.write_wait).await {
            tracing::warn!(%ns, %name, "the cache did not show the deletion in time");
        }
        Ok(())
    }

    /// Waits (bounded) until this replica's cache holds `written`.
    async fn settle<K: Kind>(&self, store: &Store<K>, written: &K) {
        if !Caches::until_cached(store, written, self.cx.settings.write_wait).await {
            tracing::warn!(name = %written.name_any(), "the cache did not show the write in time");
        }
    }

    /// An Event on `obj` naming the user and the request.
    async fn audit<K: Kind>(&self, obj: &K, reason: &str, note: String) {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(self.cx.client.clone(), reporter);
        let account = &self.caller.account;
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(format!(
                "{note} by user {} through the console (request {})",
                account.user_id, self.caller.request_id
            )),
            action: "ConsoleRequest".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "publishing the audit event failed");
        }
    }
}
