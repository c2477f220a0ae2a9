//! Wire ↔ domain conversions, done once at the edge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

use crate::broker::{Issued, Page};
use crate::core::model::{self, UnixMs};
use crate::core::policy::Decision;
use crate::proto;

pub fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

pub fn timestamp_ms(ms: UnixMs) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn optional_timestamp_ms(ms: Option<UnixMs>) -> Option<Timestamp> {
    ms.map(timestamp_ms)
}

pub fn ms_from_timestamp(ts: &Timestamp) -> UnixMs {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

pub fn system_time(ts: &Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms_from_timestamp(ts).max(0) as u64)
}

pub fn credentials(issued: Issued) -> proto::Credentials {
    proto::Credentials {
        access_key_id: issued.access_key_id,
        session_token: issued.session_token,
        expiration: Some(timestamp(issued.expiration)),
    }
}

pub fn decision(decision: Decision) -> proto::Decision {
    match decision {
        Decision::Allow => proto::Decision::Allow,
        Decision::ExplicitDeny => proto::Decision::ExplicitDeny,
        Decision::ImplicitDeny => proto::Decision::ImplicitDeny,
    }
}

pub fn tags_in(tags: Vec<proto::Tag>) -> Vec<model::Tag> {
    tags.into_iter()
        .map(|proto::Tag { key, value }| model::Tag { key, value })
        .collect()
}

pub fn tags_out(tags: &[model::Tag]) -> Vec<proto::Tag> {
    tags.iter()
        .map(|t| proto::Tag {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

pub fn page(marker: String, max_items: i32) -> Page {
    Page { marker, max_items }
}

/// `(is_truncated, marker)` for a response.
pub fn next(marker: Option<String>) -> (bool, String) {
    (marker.is_some(), marker.unwrap_or_default())
}

pub fn user(u: &model::User) -> proto::User {
    proto::User {
        arn: u.arn.clone(),
        user_id: u.id.clone(),
        user_name: u.name.clone(),
        path: u.path.clone(),
        create_date: Some(timestamp_ms(u.create_date)),
        tags: tags_out(&u.tags),
        password_last_used: optional_timestamp_ms(
            u.login_profile.as_ref().and_then(|p| p.last_used),
        ),
        permissions_boundary: u.permissions_boundary.clone().unwrap_or_default(),
    }
}

pub fn group(g: &model::Group) -> proto::Group {
    proto::Group {
        arn: g.arn.clone(),
        group_id: g.id.clone(),
        group_name: g.name.clone(),
        path: g.path.clone(),
        create_date: Some(timestamp_ms(g.create_date)),
    }
}

pub fn role(r: &model::Role) -> proto::Role {
    proto::Role {
        arn: r.arn.clone(),
        role_id: r.id.clone(),
        role_name: r.name.clone(),
        path: r.path.clone(),
        create_date: Some(timestamp_ms(r.create_date)),
        assume_role_policy_document: r.assume_role_policy_document.clone(),
        description: r.description.clone(),
        max_session_duration: r.max_session_duration,
        tags: tags_out(&r.tags),
        permissions_boundary: r.permissions_boundary.clone().unwrap_or_default(),
    }
}

pub fn policy(p: &model::ManagedPolicy, attachment_count: usize) -> proto::Policy {
    proto::Policy {
        arn: p.arn.clone(),
        policy_id: p.id.clone(),
        policy_name: p.name.clone(),
        path: p.path.clone(),
        create_date: Some(timestamp_ms(p.create_date)),
        update_date: Some(timestamp_ms(p.update_date)),
        default_version_id: p.default_version_id.clone(),
        attachment_count: attachment_count as i32,
        description: p.description.clone(),
        is_attachable: true,
    }
}

pub fn policy_version(v: &model::PolicyVersion, is_default: bool) -> proto::PolicyVersion {
    proto::PolicyVersion {
        version_id: v.version_id.clone(),
        document: v.document.clone(),
        is_default_version: is_default,
        create_date: Some(timestamp_ms(v.create_date)),
    }
}

pub fn password_policy_in(
    p: proto::PasswordPolicy,
) -> Result<model::PasswordPolicy, crate::broker::BrokerError> {
    let proto::PasswordPolicy {
        minimum_password_length,
        require_symbols,
        require_numbers,
        require_uppercase_characters,
        require_lowercase_characters,
        allow_users_to_change_password,
        max_password_age,
        password_reuse_prevention,
        hard_expiry,
        expire_passwords: _,
    } = p;
    let non_negative = |field: &str, v: i32| {
        u32::try_from(v)
            .map_err(|_| crate::broker::BrokerError::invalid(field, "must not be negative"))
    };
    Ok(model::PasswordPolicy {
        minimum_password_length: if minimum_password_length == 0 {
            6
        } else {
            non_negative("minimum_password_length", minimum_password_length)?
        },
        require_symbols,
        require_numbers,
        require_uppercase_characters,
        require_lowercase_characters,
        allow_users_to_change_password,
        max_password_age: non_negative("max_password_age", max_password_age)?,
        password_reuse_prevention: non_negative(
            "password_reuse_prevention",
            password_reuse_prevention,
        )?,
        hard_expiry,
    })
}

pub fn password_policy_out(p: &model::PasswordPolicy) -> proto::PasswordPolicy {
    proto::PasswordPolicy {
        minimum_password_length: p.minimum_password_length as i32,
        require_symbols: p.require_symbols,
        require_numbers: p.require_numbers,
        require_uppercase_characters: p.require_uppercase_characters,
        require_lowercase_characters: p.require_lowercase_characters,
        allow_users_to_change_password: p.allow_users_to_change_password,
        max_password_age: p.max_password_age as i32,
        password_reuse_prevention: p.password_reuse_prevention as i32,
        hard_expiry: p.hard_expiry,
        expire_passwords: p.max_password_age > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_extremes_saturate() {
        let ts = timestamp_ms(1_700_000_000_123);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
        assert_eq!(ms_from_timestamp(&ts), 1_700_000_000_123);
        let before_epoch = timestamp_ms(-1);
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_000_000)
        );
        let huge = Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        };
        assert_eq!(ms_from_timestamp(&huge), i64::MAX);
        let tiny = Timestamp {
            seconds: i64::MIN,
            nanos: 0,
        };
        assert_eq!(ms_from_timestamp(&tiny), i64::MIN);
    }
}
