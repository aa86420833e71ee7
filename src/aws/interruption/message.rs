//! The EventBridge events an interruption queue carries, without I/O: which instance each is
//! about, and what Windlass does about it (Karpenter's interruption controller's kinds).

use serde::Deserialize;

/// What an event asks of Windlass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// EC2 takes the spot instance back in two minutes: drain it now, and leave its offering
    /// out for a while.
    SpotInterruption { instance: String },
    /// AWS Health scheduled maintenance that retires or reboots the instances: drain them now.
    ScheduledChange { instances: Vec<String> },
    /// The instance is stopping or gone: its NodeClaim goes.
    StateChange { instance: String, state: String },
    /// EC2 says the spot instance is at higher risk of interruption: an Event only.
    RebalanceRecommendation { instance: String },
    /// A well-formed event of a kind Windlass does not act on.
    Ignored { detail_type: String },
}

/// Why a message is not an event Windlass can read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not an EventBridge event: {0}")]
    NotAnEvent(#[from] serde_json::Error),
    #[error("{detail_type} event without an instance id")]
    NoInstance { detail_type: String },
}

#[derive(Deserialize)]
struct Event {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    detail: Detail,
}

#[derive(Default, Deserialize)]
struct Detail {
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
    state: Option<String>,
    service: Option<String>,
    #[serde(rename = "eventTypeCategory")]
    event_type_category: Option<String>,
    #[serde(rename = "affectedEntities", default)]
    affected_entities: Vec<AffectedEntity>,
}

#[derive(Deserialize)]
struct AffectedEntity {
    #[serde(rename = "entityValue")]
    entity_value: String,
}

/// The states an instance leaves service in.
const GONE: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];

pub fn parse(body: &str) -> Result<Interruption, ParseError> {
    let event: Event = serde_json::from_str(body)?;
    let detail_type = event.detail_type.clone();
    let instance = || {
        event
            .detail
            .instance_id
            .clone()
            .or_else(|| event.resources.iter().find_map(|r| instance_in_arn(r)))
            .ok_or(ParseError::NoInstance {
                detail_type: detail_type.clone(),
            })
    };
    Ok(match (event.source.as_str(), event.detail_type.as_str()) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => Interruption::SpotInterruption {
            instance: instance()?,
        },
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            Interruption::RebalanceRecommendation {
                instance: instance()?,
            }
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = event.detail.state.clone().unwrap_or_default();
            if GONE.contains(&state.as_str()) {
                Interruption::StateChange {
                    instance: instance()?,
                    state,
                }
            } else {
                Interruption::Ignored { detail_type }
            }
        }
        ("aws.health", "AWS Health Event")
            if event.detail.service.as_deref() == Some("EC2")
                && event.detail.event_type_category.as_deref() == Some("scheduledChange") =>
        {
            let instances: Vec<String> = event
                .detail
                .affected_entities
                .iter()
                .map(|e| e.entity_value.clone())
                .filter(|v| v.starts_with("i-"))
                .collect();
            if instances.is_empty() {
                return Err(ParseError::NoInstance { detail_type });
            }
            Interruption::ScheduledChange { instances }
        }
        _ => Interruption::Ignored { detail_type },
    })
}

/// `i-…` from `arn:aws:ec2:<region>:<account>:instance/i-…`.
fn instance_in_arn(arn: &str) -> Option<String> {
    let (_, id) = arn.rsplit_once("instance/")?;
    id.starts_with("i-").then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(source: &str, detail_type: &str, detail: serde_json::Value) -> String {
        json!({
            "version": "0", "id": "e", "source": source, "detail-type": detail_type,
            "account": "123456789012", "time": "2026-12-02T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"],
            "detail": detail
        })
        .to_string()
    }

    #[test]
    fn a_spot_interruption_warning_names_its_instance() {
        let body = event(
            "aws.ec2",
            "EC2 Spot Instance Interruption Warning",
            json!({"instance-id": "i-0abc", "instance-action": "terminate"}),
        );
        assert_eq!(
            parse(&body).unwrap(),
            Interruption::SpotInterruption {
                instance: "i-0abc".into()
            }
        );
    }

    #[test]
    fn a_state_change_acts_only_when_the_instance_leaves_service() {
        let change = |state: &str| {
            parse(&event(
                "aws.ec2",
                "EC2 Instance State-change Notification",
                json!({"instance-id": "i-0abc", "state": state}),
            ))
            .unwrap()
        };
        assert_eq!(
            change("stopping"),
            Interruption::StateChange {
                instance: "i-0abc".into(),
                state: "stopping".into()
            }
        );
        assert!(matches!(change("running"), Interruption::Ignored { .. }));
    }

    #[test]
    fn a_scheduled_change_names_every_affected_instance() {
        let body = event(
            "aws.health",
            "AWS Health Event",
            json!({"service": "EC2", "eventTypeCategory": "scheduledChange",
                   "affectedEntities": [{"entityValue": "i-1"}, {"entityValue": "i-2"}]}),
        );
        assert_eq!(
            parse(&body).unwrap(),
            Interruption::ScheduledChange {
                instances: vec!["i-1".into(), "i-2".into()]
            }
        );
    }

    #[test]
    fn a_rebalance_recommendation_takes_its_instance_from_the_resources() {
        let body = event(
            "aws.ec2",
            "EC2 Instance Rebalance Recommendation",
            json!({}),
        );
        assert_eq!(
            parse(&body).unwrap(),
            Interruption::RebalanceRecommendation {
                instance: "i-0abc".into()
            }
        );
    }

    #[test]
    fn other_events_are_ignored_and_garbage_is_an_error() {
        let other = event("aws.ec2", "EC2 AMI State Change", json!({}));
        assert!(matches!(
            parse(&other).unwrap(),
            Interruption::Ignored { .. }
        ));
        assert!(matches!(parse("not json"), Err(ParseError::NotAnEvent(_))));
        let no_instance = json!({"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning", "detail": {}});
        assert!(matches!(
            parse(&no_instance.to_string()),
            Err(ParseError::NoInstance { .. })
        ));
    }
}
