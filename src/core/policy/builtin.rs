//! Managed policies shipped with Stint. The documents live in `policies/*.json` so they read
//! like any customer policy; a test compiles each one. They write `arn:*:` because Stint's
//! partition is configurable.

/// A built-in managed policy.
#[derive(Debug)]
pub struct BuiltinPolicy {
    pub name: &'static str,
    pub description: &'static str,
    pub document: &'static str,
}

static ALL: &[BuiltinPolicy] = &[
    BuiltinPolicy {
        name: "AdministratorAccess",
        description: "Full access to every action and resource.",
        document: include_str!("../../../policies/AdministratorAccess.json"),
    },
    BuiltinPolicy {
        name: "PowerUserAccess",
        description: "Full access except identity management (iam:*) and Stint administration (stint:*).",
        document: include_str!("../../../policies/PowerUserAccess.json"),
    },
    BuiltinPolicy {
        name: "ReadOnlyAccess",
        description: "Read-only access to IAM entities, the audit log and signing keys.",
        document: include_str!("../../../policies/ReadOnlyAccess.json"),
    },
    BuiltinPolicy {
        name: "IAMUserChangePassword",
        description: "Lets a user change their own password.",
        document: include_str!("../../../policies/IAMUserChangePassword.json"),
    },
    BuiltinPolicy {
        name: "SelfServiceMFA",
        description: "Lets a user manage their own MFA device and password; denies everything else until the session has MFA.",
        document: include_str!("../../../policies/SelfServiceMFA.json"),
    },
];

pub fn all() -> &'static [BuiltinPolicy] {
    ALL
}

pub fn get(name: &str) -> Option<&'static BuiltinPolicy> {
    ALL.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{
        Context, Decision, NamedPolicy, Policy, PolicyKind, PolicySet, Request, evaluate, validate,
    };

    #[test]
    fn every_builtin_is_a_valid_managed_policy() {
        assert_eq!(all().len(), 5);
        for p in all() {
            assert_eq!(
                validate(p.document, PolicyKind::Managed),
                vec![],
                "{}",
                p.name
            );
            assert!(get(p.name).is_some());
        }
        assert!(get("NoSuchPolicy").is_none());
    }

    fn decide(name: &str, action: &str, resource: &str, ctx: &Context) -> Decision {
        let policy = Policy::parse(get(name).unwrap().document, PolicyKind::Managed).unwrap();
        let identity = [NamedPolicy {
            name,
            policy: &policy,
        }];
        let set = PolicySet {
            identity: &identity,
            ..PolicySet::default()
        };
        let req = Request {
            principal: None,
            action,
            resource,
            context: ctx,
        };
        evaluate(&req, &set).decision
    }

    #[test]
    fn builtin_decisions() {
        use Decision::*;
        let mut alice = Context::new();
        alice.insert("aws:username", "alice");
        let mut alice_mfa = alice.clone();
        alice_mfa.insert("aws:MultiFactorAuthPresent", "true");
        let me = "arn:stint:iam::123456789012:user/alice";
        let bob = "arn:stint:iam::123456789012:user/bob";
        let my_mfa = "arn:stint:iam::123456789012:mfa/alice";
        let role = "arn:stint:iam::123456789012:role/Deploy";
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str, &Context, Decision)] = &[
            ("AdministratorAccess", "iam:CreateUser", bob, &alice, Allow),
            ("AdministratorAccess", "stint:RotateSigningKey", "*", &alice, Allow),
            ("PowerUserAccess", "sts:AssumeRole", role, &alice, Allow),
            ("PowerUserAccess", "iam:CreateUser", bob, &alice, ImplicitDeny),
            ("PowerUserAccess", "stint:RevokeSession", "*", &alice, ImplicitDeny),
            ("PowerUserAccess", "iam:ListRoles", "*", &alice, Allow),
            ("ReadOnlyAccess", "iam:GetUser", bob, &alice, Allow),
            ("ReadOnlyAccess", "iam:listusers", "*", &alice, Allow),
            ("ReadOnlyAccess", "stint:ReadAuditLog", "*", &alice, Allow),
            ("ReadOnlyAccess", "stint:RotateSigningKey", "*", &alice, ImplicitDeny),
            ("ReadOnlyAccess", "iam:CreateUser", bob, &alice, ImplicitDeny),
            ("IAMUserChangePassword", "iam:ChangePassword", me, &alice, Allow),
            ("IAMUserChangePassword", "iam:ChangePassword", bob, &alice, ImplicitDeny),
            ("IAMUserChangePassword", "iam:GetAccountPasswordPolicy", "*", &alice, Allow),
            ("SelfServiceMFA", "iam:CreateVirtualMFADevice", my_mfa, &alice, Allow),
            ("SelfServiceMFA", "iam:EnableMfaDevice", me, &alice, Allow),
            ("SelfServiceMFA", "iam:EnableMfaDevice", bob, &alice, ImplicitDeny),
            ("SelfServiceMFA", "iam:ChangePassword", me, &alice, Allow),
            ("SelfServiceMFA", "sts:GetSessionToken", "*", &alice, Allow),
            ("SelfServiceMFA", "iam:DeactivateMFADevice", my_mfa, &alice, ExplicitDeny),
            ("SelfServiceMFA", "iam:DeactivateMFADevice", my_mfa, &alice_mfa, Allow),
            ("SelfServiceMFA", "sts:AssumeRole", role, &alice, ExplicitDeny),
            ("SelfServiceMFA", "sts:AssumeRole", role, &alice_mfa, ImplicitDeny),
        ];
        for (name, action, resource, ctx, want) in rows {
            assert_eq!(
                decide(name, action, resource, ctx),
                *want,
                "{name} {action} {resource}"
            );
        }
    }
}
