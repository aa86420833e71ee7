//! The NodeClaim lifecycle, one stage per module: `launch` through the cloud boundary,
//! `registration` (a Node with the claim's providerID), `initialization` (that Node Ready,
//! startup taints gone), `liveness` (deadlines, a deleted Node), `drift` (still what its pool
//! and class would launch), `consolidatable` (no pod came or went for a while), `disrupting` (being replaced or
//! drained); `controller` runs them and
//! hands deletion to `termination`; `garbage_collection` removes instances no NodeClaim
//! accounts for and NodeClaims whose instance is gone.

pub mod consolidatable;
pub mod controller;
mod disrupting;
pub mod drift;
mod garbage_collection;
mod initialization;
mod launch;
mod liveness;
mod registration;

pub use controller::{NodeClaims, run};

use jiff::Timestamp;

use crate::apis::conditions::condition;
use crate::apis::node_claim::{NodeClaim, NodeClaimStatus};

/// Sets condition `type_` in `status`, keeping its transition time if its state is unchanged.
fn set_condition(
    status: &mut NodeClaimStatus,
    claim: &NodeClaim,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let new = condition(
        &status.conditions,
        type_,
        ok,
        reason,
        message,
        claim.metadata.generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(new);
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}
