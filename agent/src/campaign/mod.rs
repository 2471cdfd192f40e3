//! FUOTA campaigns: planning ([`plan`]) today; the persisted campaign state machine and
//! its per-device results follow.

pub mod plan;

pub use plan::{plan, repair_round_size, CampaignPlan, PlanError, PlanInputs, Redundancy};
