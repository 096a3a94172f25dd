//! Naming customers: a request's `CustomerRef` (customer id, any identity
//! or profile id) or its plain `customer_id`, resolved to the profile to
//! read; and the LinkIdentities and UnlinkIdentity handlers.

use ulid::Ulid;

use super::{service::JourneyApi, status::ApiError};
use crate::{
    domain::{event::CUSTOMER_ID_IDENTITY, CustomerId, DomainError, Identity},
    storage::profiles,
    wire as pb,
};

impl JourneyApi {
    /// A new anonymous profile's id.
    pub(super) fn new_profile() -> CustomerId {
        CustomerId::anonymous(&Ulid::new().to_string())
    }

    /// An identity of a request, normalised; `field` names it.
    pub(super) fn identity(
        &self,
        field: &str,
        identity: Option<&pb::Identity>,
    ) -> Result<Identity, DomainError> {
        let identity = identity.ok_or_else(|| DomainError::invalid(field, "required"))?;
        self.taxonomy.identity(
            field,
            &identity.r#type,
            &identity.value,
            self.limits.event.phone_region,
        )
    }

    /// The profile a request names: its `customer` reference when set,
    /// otherwise its plain `customer_id`. An identity that leads nowhere is
    /// NOT_FOUND.
    pub(super) async fn profile_of(
        &self,
        customer_id: &str,
        customer: Option<&pb::CustomerRef>,
    ) -> Result<CustomerId, ApiError> {
        match self.reference(customer_id, customer, "customer")? {
            Named::Profile(profile) => Ok(profile),
            Named::Identity(identity) => self
                .store
                .resolve(std::slice::from_ref(&identity))
                .await?
                .pop()
                .flatten()
                .ok_or_else(|| ApiError::UnknownCustomer(identity.to_string())),
        }
    }

    /// What a reference names, checked, before any lookup.
    pub(super) fn reference(
        &self,
        customer_id: &str,
        customer: Option<&pb::CustomerRef>,
        field: &str,
    ) -> Result<Named, DomainError> {
        use pb::customer_ref::Ref;
        let limits = &self.limits.event;
        let Some(customer) = customer else {
            return Ok(Named::Profile(CustomerId::parse(
                "customer_id",
                customer_id,
                limits,
            )?));
        };
        match &customer.r#ref {
            Some(Ref::CustomerId(id)) => Ok(Named::Profile(CustomerId::parse(
                &format!("{field}.customer_id"),
                id,
                limits,
            )?)),
            Some(Ref::ProfileId(id)) => Ok(Named::Profile(CustomerId::profile(
                &format!("{field}.profile_id"),
                id,
                limits,
            )?)),
            Some(Ref::Identity(identity)) => {
                let identity = self.identity(&format!("{field}.identity"), Some(identity))?;
                if identity.kind == CUSTOMER_ID_IDENTITY {
                    let field = format!("{field}.identity.value");
                    return Ok(Named::Profile(CustomerId::parse(
                        &field,
                        &identity.value,
                        limits,
                    )?));
                }
                Ok(Named::Identity(identity))
            }
            None => Err(DomainError::invalid(
                field,
                "set one of customer_id, identity or profile_id",
            )),
        }
    }

    pub(super) async fn link(
        &self,
        request: pb::LinkIdentitiesRequest,
    ) -> Result<pb::LinkIdentitiesResponse, ApiError> {
        let max = self.limits.event.max_identities;
        if request.identities.len() > max {
            return Err(DomainError::TooMany {
                field: "identities".into(),
                got: request.identities.len(),
                max,
            }
            .into());
        }
        if request.identities.len() < 2 {
            return Err(
                DomainError::invalid("identities", "at least two identities are linked").into(),
            );
        }
        let identities = request
            .identities
            .iter()
            .enumerate()
            .map(|(i, identity)| self.identity(&format!("identities[{i}]"), Some(identity)))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, identity) in identities.iter().enumerate() {
            if identity.kind == CUSTOMER_ID_IDENTITY {
                CustomerId::parse(
                    &format!("identities[{i}].value"),
                    &identity.value,
                    &self.limits.event,
                )?;
            }
        }
        let (store, rules) = (self.store.clone(), self.rules.clone());
        let linked = self
            .identity_work
            .run(async move {
                profiles::link(
                    store.as_ref(),
                    &rules,
                    &identities,
                    crate::domain::Micros::now(),
                    Self::new_profile,
                )
                .await
            })
            .await??
            .map_err(ApiError::Conflict)?;
        Ok(pb::LinkIdentitiesResponse {
            profile_id: linked.profile.to_string(),
            merged_profile_ids: linked.merged.iter().map(ToString::to_string).collect(),
        })
    }

    pub(super) async fn forget(
        &self,
        request: pb::ForgetCustomerRequest,
    ) -> Result<pb::ForgetCustomerResponse, ApiError> {
        let named = self.reference(&request.customer_id, request.customer.as_ref(), "customer")?;
        let profile = self
            .profile_of(&request.customer_id, request.customer.as_ref())
            .await?;
        // Run to its end in a task of its own, as a link is: a call cut
        // short must not stop an erasure between its steps.
        let store = self.store.clone();
        let forgotten = self
            .identity_work
            .run(async move {
                let forgotten = store.forget(&profile).await.inspect_err(|error| {
                    // Finished by an erasure naming this profile again.
                    tracing::warn!(%profile, %error, "an erasure was cut short");
                })?;
                if forgotten.is_none() {
                    // Nothing held, yet the identity led here (an earlier
                    // erasure cut short, a link landing during it): the
                    // index entry goes too.
                    if let Named::Identity(identity) = &named {
                        store.unlink(&profile, identity).await?;
                    }
                }
                Ok::<_, crate::storage::StorageError>((profile, forgotten))
            })
            .await??;
        let (profile, forgotten) = forgotten;
        let forgotten = forgotten.ok_or_else(|| ApiError::UnknownCustomer(profile.to_string()))?;
        Ok(pb::ForgetCustomerResponse {
            profile_id: forgotten.profile.to_string(),
            events: forgotten.events,
            identities: forgotten.identities,
            merged_profile_ids: forgotten.merged.iter().map(ToString::to_string).collect(),
        })
    }

    pub(super) async fn unlink(
        &self,
        request: pb::UnlinkIdentityRequest,
    ) -> Result<pb::UnlinkIdentityResponse, ApiError> {
        let identity = self.identity("identity", request.identity.as_ref())?;
        if identity.kind == CUSTOMER_ID_IDENTITY {
            // As a link checks it: a value no customer id can have is
            // refused, not looked for.
            CustomerId::parse("identity.value", &identity.value, &self.limits.event)?;
        }
        let profile = self
            .profile_of(&request.customer_id, request.customer.as_ref())
            .await?;
        let profile = self
            .store
            .canonical(&profile)
            .await?
            .ok_or_else(|| ApiError::UnknownCustomer(profile.to_string()))?;
        if identity.kind == CUSTOMER_ID_IDENTITY && identity.value == profile.as_str() {
            return Err(ApiError::Conflict(format!(
                "{identity} is the profile's own id and cannot be unlinked"
            )));
        }
        if !self.store.unlink(&profile, &identity).await? {
            return Err(ApiError::NotLinked(format!(
                "{identity} is not linked to profile {profile}"
            )));
        }
        tracing::info!(%profile, kind = %identity.kind, "identity unlinked");
        Ok(pb::UnlinkIdentityResponse {})
    }
}

/// What a customer reference names.
pub(super) enum Named {
    Profile(CustomerId),
    Identity(Identity),
}
