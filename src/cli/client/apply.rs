//! `stint apply -f iam.json`: declarative users, groups, roles and policies.
//!
//! The file says what must exist; `apply` reads what does, and makes only the calls that
//! close the gap (create, new default policy version, trust update, attach, put inline,
//! add to group), each through the normal authorized and audited `Iam` RPCs. Running it
//! twice changes nothing the second time. It is additive: what the file does not mention
//! is left alone. `--dry-run` prints the plan without calling anything that changes state.
//!
//! ```json
//! {
//!   "policies": [{"policy_name": "ReadReports", "policy_document": {…}, "description": "…"}],
//!   "groups":   [{"group_name": "Developers", "attached_policies": ["PowerUserAccess"],
//!                 "inline_policies": {"ec2": {…}}}],
//!   "users":    [{"user_name": "carol", "groups": ["Developers"], "tags": {"team": "web"}}],
//!   "roles":    [{"role_name": "reports-reader", "assume_role_policy_document": {…},
//!                 "max_session_duration": 3600, "attached_policies": ["ReadReports"]}]
//! }
//! ```
//!
//! A policy reference is an ARN, a built-in name (`AdministratorAccess`, …) or the name of
//! a customer policy (in this file or on the server).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::{AuthFlags, Context, Env, bearer, status_error};
use crate::cli::CliError;
use crate::cli::runtime;
use crate::proto::{self, iam_client::IamClient, sts_client::StsClient};

const BUILTINS: [&str; 5] = [
    "AdministratorAccess",
    "PowerUserAccess",
    "ReadOnlyAccess",
    "IAMUserChangePassword",
    "SelfServiceMFA",
];

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The declaration (JSON).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A document given inline as JSON, or as a string holding JSON.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Json(Value),
}

impl Document {
    fn text(&self) -> String {
        match self {
            Document::Text(t) => t.clone(),
            Document::Json(v) => v.to_string(),
        }
    }
}

fn same_document(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    #[serde(default)]
    pub policies: Vec<PolicyDecl>,
    #[serde(default)]
    pub groups: Vec<GroupDecl>,
    #[serde(default)]
    pub users: Vec<UserDecl>,
    #[serde(default)]
    pub roles: Vec<RoleDecl>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecl {
    pub policy_name: String,
    pub policy_document: Document,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub path: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct GroupDecl {
    pub group_name: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, Document>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct UserDecl {
    pub user_name: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, Document>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RoleDecl {
    pub role_name: String,
    pub assume_role_policy_document: Document,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub max_session_duration: i32,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, Document>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
}

/// Parses a declaration; the error names the file and what is wrong.
pub fn parse(path: &std::path::Path, text: &str) -> Result<Declaration, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

/// Resolves a policy reference to an ARN.
fn policy_arn(reference: &str, partition: &str, account: &str) -> String {
    if reference.starts_with("arn:") {
        reference.to_string()
    } else if BUILTINS.contains(&reference) {
        format!("arn:{partition}:iam::aws:policy/{reference}")
    } else {
        format!("arn:{partition}:iam::{account}:policy/{reference}")
    }
}

fn tags(map: &BTreeMap<String, String>) -> Vec<proto::Tag> {
    map.iter()
        .map(|(key, value)| proto::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn missing(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// Which kind of identity a policy sync is for.
#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
    Role,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Role => "role",
        }
    }
}

struct Applier {
    iam: IamClient<Channel>,
    token: crate::core::secret::SecretString,
    partition: String,
    account: String,
    dry_run: bool,
    changes: Vec<String>,
}

impl Applier {
    fn req<T>(&self, message: T) -> Result<Request<T>, CliError> {
        bearer(message, &self.token)
    }

    fn arn(&self, reference: &str) -> String {
        policy_arn(reference, &self.partition, &self.account)
    }

    /// Records a change; returns whether to carry it out.
    fn change(&mut self, what: String) -> bool {
        println!("{}{what}", if self.dry_run { "would " } else { "" });
        self.changes.push(what);
        !self.dry_run
    }

    async fn policy(&mut self, decl: &PolicyDecl) -> Result<(), CliError> {
        let arn = self.arn(&decl.policy_name);
        let document = decl.policy_document.text();
        match self
            .iam
            .get_policy(self.req(proto::GetPolicyRequest {
                policy_arn: arn.clone(),
            })?)
            .await
        {
            Err(status) if missing(&status) => {
                if self.change(format!("create policy {}", decl.policy_name)) {
                    let request = proto::CreatePolicyRequest {
                        policy_name: decl.policy_name.clone(),
                        policy_document: document,
                        description: decl.description.clone(),
                        path: decl.path.clone(),
                        tags: vec![],
                    };
                    self.iam
                        .create_policy(self.req(request)?)
                        .await
                        .map_err(status_error)?;
                }
            }
            Err(status) => return Err(status_error(status)),
            Ok(found) => {
                let default = found
                    .into_inner()
                    .policy
                    .map(|p| p.default_version_id)
                    .unwrap_or_default();
                let current = self
                    .iam
                    .get_policy_version(self.req(proto::GetPolicyVersionRequest {
                        policy_arn: arn.clone(),
                        version_id: default,
                    })?)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .policy_version
                    .map(|v| v.document)
                    .unwrap_or_default();
                if !same_document(&current, &document)
                    && self.change(format!(
                        "new default version of policy {}",
                        decl.policy_name
                    ))
                {
                    self.make_room_for_version(&arn).await?;
                    let request = proto::CreatePolicyVersionRequest {
                        policy_arn: arn.clone(),
                        policy_document: document,
                        set_as_default: true,
                    };
                    self.iam
                        .create_policy_version(self.req(request)?)
                        .await
                        .map_err(status_error)?;
                }
            }
        }
        Ok(())
    }

    /// At five versions, the oldest non-default one goes (as `aws iam` users do by hand).
    async fn make_room_for_version(&mut self, arn: &str) -> Result<(), CliError> {
        let versions = self
            .iam
            .list_policy_versions(self.req(proto::ListPolicyVersionsRequest {
                policy_arn: arn.into(),
                ..Default::default()
            })?)
            .await
            .map_err(status_error)?
            .into_inner()
            .versions;
        if versions.len() >= 5
            && let Some(oldest) = versions
                .iter()
                .filter(|v| !v.is_default_version)
                .min_by_key(|v| {
                    v.version_id
                        .get(1..)
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or(0)
                })
        {
            let request = proto::DeletePolicyVersionRequest {
                policy_arn: arn.into(),
                version_id: oldest.version_id.clone(),
            };
            self.iam
                .delete_policy_version(self.req(request)?)
                .await
                .map_err(status_error)?;
        }
        Ok(())
    }

    /// Managed policies attached to `name` now (none when it does not exist yet).
    async fn attached(
        &mut self,
        kind: Kind,
        name: &str,
        exists: bool,
    ) -> Result<Vec<String>, CliError> {
        if !exists {
            return Ok(vec![]);
        }
        let name = name.to_string();
        let rows = match kind {
            Kind::User => {
                let r = self.req(proto::ListAttachedUserPoliciesRequest {
                    user_name: name,
                    max_items: 1000,
                    ..Default::default()
                })?;
                self.iam
                    .list_attached_user_policies(r)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .attached_policies
            }
            Kind::Group => {
                let r = self.req(proto::ListAttachedGroupPoliciesRequest {
                    group_name: name,
                    max_items: 1000,
                    ..Default::default()
                })?;
                self.iam
                    .list_attached_group_policies(r)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .attached_policies
            }
            Kind::Role => {
                let r = self.req(proto::ListAttachedRolePoliciesRequest {
                    role_name: name,
                    max_items: 1000,
                    ..Default::default()
                })?;
                self.iam
                    .list_attached_role_policies(r)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .attached_policies
            }
        };
        Ok(rows.into_iter().map(|p| p.policy_arn).collect())
    }

    async fn attach(&mut self, kind: Kind, name: &str, policy_arn: String) -> Result<(), CliError> {
        let name = name.to_string();
        match kind {
            Kind::User => self
                .iam
                .attach_user_policy(self.req(proto::AttachUserPolicyRequest {
                    user_name: name,
                    policy_arn,
                })?)
                .await
                .map(drop),
            Kind::Group => self
                .iam
                .attach_group_policy(self.req(proto::AttachGroupPolicyRequest {
                    group_name: name,
                    policy_arn,
                })?)
                .await
                .map(drop),
            Kind::Role => self
                .iam
                .attach_role_policy(self.req(proto::AttachRolePolicyRequest {
                    role_name: name,
                    policy_arn,
                })?)
                .await
                .map(drop),
        }
        .map_err(status_error)
    }

    /// The inline policy's document, if it exists.
    async fn inline(
        &mut self,
        kind: Kind,
        name: &str,
        policy_name: &str,
    ) -> Result<Option<String>, CliError> {
        let (name, policy_name) = (name.to_string(), policy_name.to_string());
        let found = match kind {
            Kind::User => self
                .iam
                .get_user_policy(self.req(proto::GetUserPolicyRequest {
                    user_name: name,
                    policy_name,
                })?)
                .await
                .map(|r| r.into_inner().policy_document),
            Kind::Group => self
                .iam
                .get_group_policy(self.req(proto::GetGroupPolicyRequest {
                    group_name: name,
                    policy_name,
                })?)
                .await
                .map(|r| r.into_inner().policy_document),
            Kind::Role => self
                .iam
                .get_role_policy(self.req(proto::GetRolePolicyRequest {
                    role_name: name,
                    policy_name,
                })?)
                .await
                .map(|r| r.into_inner().policy_document),
        };
        match found {
            Ok(document) => Ok(Some(document)),
            Err(status) if missing(&status) => Ok(None),
            Err(status) => Err(status_error(status)),
        }
    }

    async fn put_inline(
        &mut self,
        kind: Kind,
        name: &str,
        policy_name: &str,
        policy_document: String,
    ) -> Result<(), CliError> {
        let (name, policy_name) = (name.to_string(), policy_name.to_string());
        match kind {
            Kind::User => self
                .iam
                .put_user_policy(self.req(proto::PutUserPolicyRequest {
                    user_name: name,
                    policy_name,
                    policy_document,
                })?)
                .await
                .map(drop),
            Kind::Group => self
                .iam
                .put_group_policy(self.req(proto::PutGroupPolicyRequest {
                    group_name: name,
                    policy_name,
                    policy_document,
                })?)
                .await
                .map(drop),
            Kind::Role => self
                .iam
                .put_role_policy(self.req(proto::PutRolePolicyRequest {
                    role_name: name,
                    policy_name,
                    policy_document,
                })?)
                .await
                .map(drop),
        }
        .map_err(status_error)
    }

    /// Attaches missing managed policies and puts inline policies that differ.
    async fn sync_policies(
        &mut self,
        kind: Kind,
        name: &str,
        exists: bool,
        attached_policies: &[String],
        inline_policies: &BTreeMap<String, Document>,
    ) -> Result<(), CliError> {
        let attached = self.attached(kind, name, exists).await?;
        for reference in attached_policies {
            let arn = self.arn(reference);
            if !attached.contains(&arn)
                && self.change(format!("attach {arn} to {} {name}", kind.noun()))
            {
                self.attach(kind, name, arn).await?;
            }
        }
        for (policy_name, document) in inline_policies {
            let current = if exists {
                self.inline(kind, name, policy_name).await?
            } else {
                None
            };
            let text = document.text();
            if current.is_none_or(|c| !same_document(&c, &text))
                && self.change(format!(
                    "put inline policy {policy_name} on {} {name}",
                    kind.noun()
                ))
            {
                self.put_inline(kind, name, policy_name, text).await?;
            }
        }
        Ok(())
    }

    async fn group(&mut self, decl: &GroupDecl) -> Result<(), CliError> {
        let name = decl.group_name.clone();
        let exists = match self
            .iam
            .get_group(self.req(proto::GetGroupRequest {
                group_name: name.clone(),
                ..Default::default()
            })?)
            .await
        {
            Ok(_) => true,
            Err(status) if missing(&status) => false,
            Err(status) => return Err(status_error(status)),
        };
        if !exists && self.change(format!("create group {name}")) {
            self.iam
                .create_group(self.req(proto::CreateGroupRequest {
                    group_name: name.clone(),
                    path: decl.path.clone(),
                })?)
                .await
                .map_err(status_error)?;
        }
        self.sync_policies(
            Kind::Group,
            &name,
            exists,
            &decl.attached_policies,
            &decl.inline_policies,
        )
        .await?;
        Ok(())
    }

    async fn user(&mut self, decl: &UserDecl) -> Result<(), CliError> {
        let name = decl.user_name.clone();
        let exists = match self
            .iam
            .get_user(self.req(proto::GetUserRequest {
                user_name: name.clone(),
            })?)
            .await
        {
            Ok(_) => true,
            Err(status) if missing(&status) => false,
            Err(status) => return Err(status_error(status)),
        };
        let boundary = decl
            .permissions_boundary
            .as_deref()
            .map(|b| self.arn(b))
            .unwrap_or_default();
        if !exists && self.change(format!("create user {name}")) {
            let request = proto::CreateUserRequest {
                user_name: name.clone(),
                path: decl.path.clone(),
                tags: tags(&decl.tags),
                permissions_boundary: boundary,
            };
            self.iam
                .create_user(self.req(request)?)
                .await
                .map_err(status_error)?;
        }
        let groups: Vec<String> = if exists {
            let r = self.req(proto::ListGroupsForUserRequest {
                user_name: name.clone(),
                max_items: 1000,
                ..Default::default()
            })?;
            self.iam
                .list_groups_for_user(r)
                .await
                .map_err(status_error)?
                .into_inner()
                .groups
                .into_iter()
                .map(|g| g.group_name.to_ascii_lowercase())
                .collect()
        } else {
            vec![]
        };
        for group in &decl.groups {
            if !groups.contains(&group.to_ascii_lowercase())
                && self.change(format!("add user {name} to group {group}"))
            {
                self.iam
                    .add_user_to_group(self.req(proto::AddUserToGroupRequest {
                        group_name: group.clone(),
                        user_name: name.clone(),
                    })?)
                    .await
                    .map_err(status_error)?;
            }
        }
        self.sync_policies(
            Kind::User,
            &name,
            exists,
            &decl.attached_policies,
            &decl.inline_policies,
        )
        .await?;
        Ok(())
    }

    async fn role(&mut self, decl: &RoleDecl) -> Result<(), CliError> {
        let name = decl.role_name.clone();
        let trust = decl.assume_role_policy_document.text();
        let boundary = decl
            .permissions_boundary
            .as_deref()
            .map(|b| self.arn(b))
            .unwrap_or_default();
        let existing = match self
            .iam
            .get_role(self.req(proto::GetRoleRequest {
                role_name: name.clone(),
            })?)
            .await
        {
            Ok(r) => r.into_inner().role,
            Err(status) if missing(&status) => None,
            Err(status) => return Err(status_error(status)),
        };
        match &existing {
            None => {
                if self.change(format!("create role {name}")) {
                    let request = proto::CreateRoleRequest {
                        role_name: name.clone(),
                        assume_role_policy_document: trust,
                        max_session_duration: decl.max_session_duration,
                        description: decl.description.clone(),
                        tags: tags(&decl.tags),
                        path: decl.path.clone(),
                        permissions_boundary: boundary,
                    };
                    self.iam
                        .create_role(self.req(request)?)
                        .await
                        .map_err(status_error)?;
                }
            }
            Some(role) => {
                if !same_document(&role.assume_role_policy_document, &trust)
                    && self.change(format!("update trust policy of role {name}"))
                {
                    let request = proto::UpdateAssumeRolePolicyRequest {
                        role_name: name.clone(),
                        policy_document: trust,
                    };
                    self.iam
                        .update_assume_role_policy(self.req(request)?)
                        .await
                        .map_err(status_error)?;
                }
                let max_differs = decl.max_session_duration != 0
                    && decl.max_session_duration != role.max_session_duration;
                if (max_differs || role.description != decl.description)
                    && self.change(format!("update role {name}"))
                {
                    let request = proto::UpdateRoleRequest {
                        role_name: name.clone(),
                        description: decl.description.clone(),
                        max_session_duration: decl.max_session_duration,
                    };
                    self.iam
                        .update_role(self.req(request)?)
                        .await
                        .map_err(status_error)?;
                }
            }
        }
        let exists = existing.is_some();
        self.sync_policies(
            Kind::Role,
            &name,
            exists,
            &decl.attached_policies,
            &decl.inline_policies,
        )
        .await?;
        Ok(())
    }
}

pub fn apply(args: ApplyArgs, env: &Env) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", args.file.display())))?;
    let declaration = parse(&args.file, &text)?;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token.as_deref())?;
    runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        let identity = StsClient::new(channel.clone())
            .get_caller_identity(bearer(proto::GetCallerIdentityRequest {}, &token)?)
            .await
            .map_err(status_error)?
            .into_inner();
        let partition = identity
            .arn
            .split(':')
            .nth(1)
            .unwrap_or("stint")
            .to_string();
        let mut applier = Applier {
            iam: IamClient::new(channel),
            token,
            partition,
            account: identity.account,
            dry_run: args.dry_run,
            changes: vec![],
        };
        for policy in &declaration.policies {
            applier.policy(policy).await?;
        }
        for group in &declaration.groups {
            applier.group(group).await?;
        }
        for user in &declaration.users {
            applier.user(user).await?;
        }
        for role in &declaration.roles {
            applier.role(role).await?;
        }
        let verb = if args.dry_run { "would make" } else { "made" };
        println!("{verb} {} change(s)", applier.changes.len());
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_parse_and_unknown_keys_are_refused() {
        let path = std::path::Path::new("iam.json");
        let ok = r#"{"policies":[{"policy_name":"P","policy_document":{"Version":"2012-10-17","Statement":[]}}],
                    "roles":[{"role_name":"r","assume_role_policy_document":"{\"Version\":\"2012-10-17\",\"Statement\":[]}"}],
                    "users":[{"user_name":"u","groups":["g"],"tags":{"team":"web"}}]}"#;
        let d = parse(path, ok).unwrap();
        assert_eq!(d.policies[0].policy_name, "P");
        assert!(matches!(
            d.roles[0].assume_role_policy_document,
            Document::Text(_)
        ));
        assert_eq!(d.users[0].tags["team"], "web");
        let err = parse(path, r#"{"users":[{"user_name":"u","grops":[]}]}"#).unwrap_err();
        assert!(
            err.to_string().contains("iam.json") && err.to_string().contains("grops"),
            "{err}"
        );
    }

    #[test]
    fn references_resolve_to_arns() {
        let rows = [
            (
                "AdministratorAccess",
                "arn:stint:iam::aws:policy/AdministratorAccess",
            ),
            (
                "ReadReports",
                "arn:stint:iam::123456789012:policy/ReadReports",
            ),
            (
                "arn:stint:iam::123456789012:policy/x",
                "arn:stint:iam::123456789012:policy/x",
            ),
        ];
        for (reference, arn) in rows {
            assert_eq!(policy_arn(reference, "stint", "123456789012"), arn);
        }
    }

    #[test]
    fn documents_compare_as_json() {
        assert!(same_document(r#"{"a": 1, "b": [2]}"#, r#"{"b":[2],"a":1}"#));
        assert!(!same_document(r#"{"a": 1}"#, r#"{"a": 2}"#));
    }
}
