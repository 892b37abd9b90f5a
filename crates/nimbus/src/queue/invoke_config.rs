//! The event invoke config of one function version or alias (lambda-wire.md §1.10) as a
//! validated domain type: retry attempts, maximum event age and destinations. Members that
//! were not given stay `None` (PutFunctionEventInvokeConfig removes what it does not name)
//! and Lambda's defaults apply to them.

use serde::{Deserialize, Serialize};

use super::destination::Destination;
use crate::model::InvalidParameter;

/// Lambda's default: two retries after a function error.
pub const DEFAULT_MAXIMUM_RETRY_ATTEMPTS: u32 = 2;
/// The model's bounds for `MaximumRetryAttempts`.
pub const MAXIMUM_RETRY_ATTEMPTS_MAX: i64 = 2;
/// Lambda's default and maximum event age: six hours.
pub const DEFAULT_MAXIMUM_EVENT_AGE_S: u32 = 21_600;
/// The model's bounds for `MaximumEventAgeInSeconds`.
pub const MAXIMUM_EVENT_AGE_MIN_S: i64 = 60;
pub const MAXIMUM_EVENT_AGE_MAX_S: i64 = 21_600;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_s: Option<u32>,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
    pub last_modified_ms: u64,
}

impl EventInvokeConfig {
    pub fn retries(&self) -> u32 {
        self.maximum_retry_attempts
            .unwrap_or(DEFAULT_MAXIMUM_RETRY_ATTEMPTS)
    }

    pub fn max_age_ms(&self) -> u64 {
        u64::from(
            self.maximum_event_age_s
                .unwrap_or(DEFAULT_MAXIMUM_EVENT_AGE_S),
        ) * 1000
    }
}

pub fn validate_retry_attempts(v: i64) -> Result<u32, InvalidParameter> {
    if v < 0 {
        return Err(InvalidParameter(format!(
            "1 validation error detected: Value '{v}' at 'maximumRetryAttempts' failed to satisfy constraint: \
             Member must have value greater than or equal to 0"
        )));
    }
    if v > MAXIMUM_RETRY_ATTEMPTS_MAX {
        return Err(InvalidParameter(format!(
            "1 validation error detected: Value '{v}' at 'maximumRetryAttempts' failed to satisfy constraint: \
             Member must have value less than or equal to {MAXIMUM_RETRY_ATTEMPTS_MAX}"
        )));
    }
    Ok(v as u32)
}

pub fn validate_event_age(v: i64) -> Result<u32, InvalidParameter> {
    if v < MAXIMUM_EVENT_AGE_MIN_S {
        return Err(InvalidParameter(format!(
            "1 validation error detected: Value '{v}' at 'maximumEventAgeInSeconds' failed to satisfy constraint: \
             Member must have value greater than or equal to {MAXIMUM_EVENT_AGE_MIN_S}"
        )));
    }
    if v > MAXIMUM_EVENT_AGE_MAX_S {
        return Err(InvalidParameter(format!(
            "1 validation error detected: Value '{v}' at 'maximumEventAgeInSeconds' failed to satisfy constraint: \
             Member must have value less than or equal to {MAXIMUM_EVENT_AGE_MAX_S}"
        )));
    }
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_members_not_given() {
        let c = EventInvokeConfig::default();
        assert_eq!(c.retries(), 2);
        assert_eq!(c.max_age_ms(), 21_600_000);
        let c = EventInvokeConfig {
            maximum_retry_attempts: Some(0),
            maximum_event_age_s: Some(60),
            ..Default::default()
        };
        assert_eq!((c.retries(), c.max_age_ms()), (0, 60_000));
    }

    #[test]
    fn bounds_follow_the_model_with_lambdas_wording() {
        assert_eq!(validate_retry_attempts(0).unwrap(), 0);
        assert_eq!(validate_retry_attempts(2).unwrap(), 2);
        let e = validate_retry_attempts(3).unwrap_err();
        assert_eq!(
            e.0,
            "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: \
             Member must have value less than or equal to 2"
        );
        assert!(validate_retry_attempts(-1).is_err());
        assert_eq!(validate_event_age(60).unwrap(), 60);
        assert_eq!(validate_event_age(21_600).unwrap(), 21_600);
        assert!(
            validate_event_age(59)
                .unwrap_err()
                .0
                .contains("greater than or equal to 60")
        );
        assert!(
            validate_event_age(21_601)
                .unwrap_err()
                .0
                .contains("less than or equal to 21600")
        );
    }
}
