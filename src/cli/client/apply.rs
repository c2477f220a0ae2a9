//! `stint apply -f iam.yaml`: declarative users, groups, roles and policies.
//!
//! Three steps, so the hard part is testable without a server: [`read_snapshot`] reads what
//! exists (only what the file names, or everything with `--prune`); [`plan`] — pure, no
//! I/O — compares the declaration with the snapshot and returns the [`Change`]s, in an
//! order the server accepts (creations before attachments, detachments before deletions);
//! [`Applier::execute`] makes each change through the normal authorized and audited `Iam`
//! RPCs. For every entity the file declares, the file is the truth: tags, attached and
//! inline policies, group memberships, permissions boundary, trust policy, description and
//! maximum session duration converge to it. Entities the file does not mention are left
//! alone unless `--prune` (never the caller, the groups it is in, or built-in policies).
//! Running it twice changes nothing the second time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::{AuthFlags, Context, Env, bearer, status_error};
use crate::cli::{CliError, OutputFormat, runtime};
use crate::proto::{self, iam_client::IamClient, sts_client::StsClient};

const BUILTINS: [&str; 5] = [
    "AdministratorAccess",
    "PowerUserAccess",
    "ReadOnlyAccess",
    "IAMUserChangePassword",
    "SelfServiceMFA",
];

/// The file format, shown by `stint apply --help`.
pub const FORMAT_HELP: &str = r#"FILE FORMAT (JSON, YAML or TOML, by extension or --format):

  policies:                       # customer managed policies
    - policy_name: ReadReports
      description: Read the reports bucket     # used when created
      path: /                                  # used when created
      policy_document: {Version: "2012-10-17", Statement: [...]}
  groups:
    - group_name: Developers
      attached_policies: [PowerUserAccess]     # name, built-in name or ARN
      inline_policies: {ec2: {Version: "2012-10-17", Statement: [...]}}
  users:
    - user_name: carol
      groups: [Developers]
      tags: {team: web}
      attached_policies: []
      inline_policies: {}
      permissions_boundary: ReadReports        # omit for none
  roles:
    - role_name: reports-reader
      assume_role_policy_document: {Version: "2012-10-17", Statement: [...]}
      description: ""
      max_session_duration: 3600               # seconds; default 3600
      tags: {}
      attached_policies: [ReadReports]
      inline_policies: {}
      permissions_boundary: ReadReports

Policy documents are objects (preferred) or strings holding JSON. A policy reference is an
ARN, a built-in name (AdministratorAccess, PowerUserAccess, ReadOnlyAccess,
IAMUserChangePassword, SelfServiceMFA) or a customer policy's name.

For each declared user, group and role the file is the truth: tags, attached and inline
policies, group memberships, boundary, trust policy, description and max_session_duration
are made to match it (an omitted list or map means none). A changed policy document becomes
a new default version (the oldest non-default version goes when there are five). Entities
the file does not mention are left alone, unless --prune: then users, groups, roles and
customer policies it does not declare are deleted (after their memberships, attachments,
inline policies, login profile, access keys and MFA devices), except the caller, the groups
the caller is in, policies still attached to those, and built-in policies. Changes to the
caller's own user or role run last, so they cannot take away the rights the rest needs.
--dry-run prints the plan and changes nothing."#;

#[derive(Args, Debug)]
#[command(after_long_help = FORMAT_HELP)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The declaration: .json, .yaml/.yml or .toml.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// File format (default: from the extension, else JSON).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete users, groups, roles and customer policies the file does not declare.
    #[arg(long)]
    pub prune: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Yaml,
    Toml,
}

impl FileFormat {
    fn of(path: &Path) -> FileFormat {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("yaml" | "yml") => FileFormat::Yaml,
            Some("toml") => FileFormat::Toml,
            _ => FileFormat::Json,
        }
    }
}

/// A document given as an object, or as a string holding JSON.
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

#[derive(Deserialize, Debug, Default)]
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

#[derive(Deserialize, Debug, Default)]
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
    pub max_session_duration: Option<i32>,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, Document>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
}

/// A role's maximum session duration when the file names none (AWS's default).
const DEFAULT_MAX_SESSION: i32 = 3600;

/// Parses a declaration in `format`; the error names the file and what is wrong.
pub fn parse(path: &Path, text: &str, format: FileFormat) -> Result<Declaration, CliError> {
    let fail = |e: &dyn fmt::Display| CliError::new(format!("{}: {e}", path.display()));
    let value: Value = match format {
        FileFormat::Json => serde_json::from_str(text).map_err(|e| fail(&e))?,
        FileFormat::Yaml => serde_norway::from_str(text).map_err(|e| fail(&e))?,
        FileFormat::Toml => toml::from_str(text).map_err(|e| fail(&e))?,
    };
    if value.is_null() {
        return Ok(Declaration::default());
    }
    serde_json::from_value(value).map_err(|e| fail(&e))
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

/// Which kind of identity a change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    User,
    Group,
    Role,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Role => "role",
        })
    }
}

/// One call to make. Documents are JSON text, as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    CreatePolicy {
        name: String,
        document: String,
        description: String,
        path: String,
    },
    DeletePolicyVersion {
        policy_arn: String,
        version_id: String,
    },
    CreatePolicyVersion {
        policy_arn: String,
        document: String,
    },
    CreateGroup {
        name: String,
        path: String,
    },
    CreateUser {
        name: String,
        path: String,
        tags: BTreeMap<String, String>,
        boundary: String,
    },
    CreateRole {
        name: String,
        path: String,
        trust: String,
        description: String,
        max_session_duration: i32,
        tags: BTreeMap<String, String>,
        boundary: String,
    },
    UpdateTrust {
        role: String,
        document: String,
    },
    UpdateRole {
        role: String,
        description: String,
        max_session_duration: i32,
    },
    Untag {
        kind: Kind,
        name: String,
        keys: Vec<String>,
    },
    Tag {
        kind: Kind,
        name: String,
        tags: BTreeMap<String, String>,
    },
    PutBoundary {
        kind: Kind,
        name: String,
        policy_arn: String,
    },
    DeleteBoundary {
        kind: Kind,
        name: String,
    },
    AddToGroup {
        user: String,
        group: String,
    },
    RemoveFromGroup {
        user: String,
        group: String,
    },
    Attach {
        kind: Kind,
        name: String,
        policy_arn: String,
    },
    Detach {
        kind: Kind,
        name: String,
        policy_arn: String,
    },
    PutInline {
        kind: Kind,
        name: String,
        policy_name: String,
        document: String,
    },
    DeleteInline {
        kind: Kind,
        name: String,
        policy_name: String,
    },
    DeleteLoginProfile {
        user: String,
    },
    DeleteAccessKey {
        user: String,
        access_key_id: String,
    },
    DeleteMfaDevice {
        user: String,
        serial_number: String,
    },
    DeleteUser {
        name: String,
    },
    DeleteRole {
        name: String,
    },
    DeleteGroup {
        name: String,
    },
    DeletePolicy {
        policy_arn: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreatePolicy { name, .. } => write!(f, "create policy {name}"),
            Change::DeletePolicyVersion {
                policy_arn,
                version_id,
            } => write!(f, "delete version {version_id} of policy {policy_arn}"),
            Change::CreatePolicyVersion { policy_arn, .. } => {
                write!(f, "new default version of policy {policy_arn}")
            }
            Change::CreateGroup { name, .. } => write!(f, "create group {name}"),
            Change::CreateUser { name, .. } => write!(f, "create user {name}"),
            Change::CreateRole { name, .. } => write!(f, "create role {name}"),
            Change::UpdateTrust { role, .. } => write!(f, "update trust policy of role {role}"),
            Change::UpdateRole {
                role,
                description,
                max_session_duration,
            } => write!(
                f,
                "update role {role}: max_session_duration {max_session_duration}, description {description:?}"
            ),
            Change::Untag { kind, name, keys } => {
                write!(f, "untag {kind} {name}: {}", keys.join(", "))
            }
            Change::Tag { kind, name, tags } => {
                let pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "tag {kind} {name}: {}", pairs.join(", "))
            }
            Change::PutBoundary {
                kind,
                name,
                policy_arn,
            } => write!(
                f,
                "set permissions boundary of {kind} {name} to {policy_arn}"
            ),
            Change::DeleteBoundary { kind, name } => {
                write!(f, "clear permissions boundary of {kind} {name}")
            }
            Change::AddToGroup { user, group } => write!(f, "add user {user} to group {group}"),
            Change::RemoveFromGroup { user, group } => {
                write!(f, "remove user {user} from group {group}")
            }
            Change::Attach {
                kind,
                name,
                policy_arn,
            } => write!(f, "attach {policy_arn} to {kind} {name}"),
            Change::Detach {
                kind,
                name,
                policy_arn,
            } => write!(f, "detach {policy_arn} from {kind} {name}"),
            Change::PutInline {
                kind,
                name,
                policy_name,
                ..
            } => write!(f, "put inline policy {policy_name} on {kind} {name}"),
            Change::DeleteInline {
                kind,
                name,
                policy_name,
            } => write!(f, "delete inline policy {policy_name} of {kind} {name}"),
            Change::DeleteLoginProfile { user } => write!(f, "delete login profile of user {user}"),
            Change::DeleteAccessKey {
                user,
                access_key_id,
            } => write!(f, "delete access key {access_key_id} of user {user}"),
            Change::DeleteMfaDevice {
                user,
                serial_number,
            } => write!(f, "delete MFA device {serial_number} of user {user}"),
            Change::DeleteUser { name } => write!(f, "delete user {name}"),
            Change::DeleteRole { name } => write!(f, "delete role {name}"),
            Change::DeleteGroup { name } => write!(f, "delete group {name}"),
            Change::DeletePolicy { policy_arn } => write!(f, "delete policy {policy_arn}"),
        }
    }
}

/// Managed and inline policies of one identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    pub attached: BTreeSet<String>,
    pub inline: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct PolicyState {
    pub arn: String,
    pub document: String,
    /// `(version_id, is_default)`.
    pub versions: Vec<(String, bool)>,
}

#[derive(Clone, Debug, Default)]
pub struct GroupState {
    pub policies: Policies,
}

#[derive(Clone, Debug, Default)]
pub struct UserState {
    pub tags: BTreeMap<String, String>,
    pub groups: BTreeSet<String>,
    pub boundary: String,
    pub policies: Policies,
    pub login_profile: bool,
    pub access_keys: Vec<String>,
    pub mfa_devices: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RoleState {
    pub trust: String,
    pub description: String,
    pub max_session_duration: i32,
    pub tags: BTreeMap<String, String>,
    pub boundary: String,
    pub policies: Policies,
}

/// What exists on the server. Customer policies by name; identities by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub policies: BTreeMap<String, PolicyState>,
    pub groups: BTreeMap<String, GroupState>,
    pub users: BTreeMap<String, UserState>,
    pub roles: BTreeMap<String, RoleState>,
}

/// Where the plan runs: for resolving policy names, and who must never be pruned.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub partition: String,
    pub account: String,
    /// The caller's user name, when it is a user.
    pub caller_user: Option<String>,
    /// The role the caller's session belongs to, when it is one.
    pub caller_role: Option<String>,
    pub prune: bool,
}

impl Scope {
    fn arn(&self, reference: &str) -> String {
        policy_arn(reference, &self.partition, &self.account)
    }
}

/// The changes that make `snapshot` match `declaration`, in execution order.
pub fn plan(declaration: &Declaration, snapshot: &Snapshot, scope: &Scope) -> Vec<Change> {
    let mut changes = Vec::new();
    for decl in &declaration.policies {
        plan_policy(decl, snapshot, scope, &mut changes);
    }
    for decl in &declaration.groups {
        let current = snapshot.groups.get(&decl.group_name);
        if current.is_none() {
            changes.push(Change::CreateGroup {
                name: decl.group_name.clone(),
                path: decl.path.clone(),
            });
        }
        plan_policies(
            Kind::Group,
            &decl.group_name,
            &decl.attached_policies,
            &decl.inline_policies,
            current.map(|g| &g.policies),
            scope,
            &mut changes,
        );
    }
    for decl in &declaration.users {
        plan_user(
            decl,
            snapshot.users.get(&decl.user_name),
            scope,
            &mut changes,
        );
    }
    for decl in &declaration.roles {
        plan_role(
            decl,
            snapshot.roles.get(&decl.role_name),
            scope,
            &mut changes,
        );
    }
    if scope.prune {
        plan_prune(declaration, snapshot, scope, &mut changes);
    }
    // What the file changes about the caller itself (a detached policy, a left group) could
    // take away the rights the rest of the plan needs: it goes last.
    let (own, others): (Vec<Change>, Vec<Change>) =
        changes.into_iter().partition(|c| touches_caller(c, scope));
    others.into_iter().chain(own).collect()
}

fn touches_caller(change: &Change, scope: &Scope) -> bool {
    let is = |kind: Kind, name: &str| match kind {
        Kind::User => scope.caller_user.as_deref() == Some(name),
        Kind::Role => scope.caller_role.as_deref() == Some(name),
        Kind::Group => false,
    };
    match change {
        Change::Detach { kind, name, .. }
        | Change::DeleteInline { kind, name, .. }
        | Change::PutInline { kind, name, .. }
        | Change::PutBoundary { kind, name, .. }
        | Change::DeleteBoundary { kind, name } => is(*kind, name),
        Change::RemoveFromGroup { user, .. } => is(Kind::User, user),
        Change::UpdateTrust { role, .. } => is(Kind::Role, role),
        _ => false,
    }
}

fn plan_policy(decl: &PolicyDecl, snapshot: &Snapshot, scope: &Scope, out: &mut Vec<Change>) {
    let document = decl.policy_document.text();
    let Some(current) = snapshot.policies.get(&decl.policy_name) else {
        out.push(Change::CreatePolicy {
            name: decl.policy_name.clone(),
            document,
            description: decl.description.clone(),
            path: decl.path.clone(),
        });
        return;
    };
    if same_document(&current.document, &document) {
        return;
    }
    // At five versions, the oldest non-default one goes (as `aws iam` users do by hand).
    if current.versions.len() >= 5
        && let Some((oldest, _)) = current
            .versions
            .iter()
            .filter(|(_, default)| !default)
            .min_by_key(|(id, _)| version_number(id))
    {
        out.push(Change::DeletePolicyVersion {
            policy_arn: current.arn.clone(),
            version_id: oldest.clone(),
        });
    }
    let arn = if current.arn.is_empty() {
        scope.arn(&decl.policy_name)
    } else {
        current.arn.clone()
    };
    out.push(Change::CreatePolicyVersion {
        policy_arn: arn,
        document,
    });
}

fn version_number(id: &str) -> u32 {
    id.get(1..).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn plan_tags(
    kind: Kind,
    name: &str,
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
    out: &mut Vec<Change>,
) {
    let remove: Vec<String> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    if !remove.is_empty() {
        out.push(Change::Untag {
            kind,
            name: name.into(),
            keys: remove,
        });
    }
    let set: BTreeMap<String, String> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !set.is_empty() {
        out.push(Change::Tag {
            kind,
            name: name.into(),
            tags: set,
        });
    }
}

fn plan_boundary(
    kind: Kind,
    name: &str,
    want: Option<&str>,
    have: &str,
    scope: &Scope,
    out: &mut Vec<Change>,
) {
    match want.map(|b| scope.arn(b)) {
        Some(arn) if arn != have => out.push(Change::PutBoundary {
            kind,
            name: name.into(),
            policy_arn: arn,
        }),
        None if !have.is_empty() => out.push(Change::DeleteBoundary {
            kind,
            name: name.into(),
        }),
        _ => {}
    }
}

/// Attachments and inline policies of one identity; `current` is `None` for one being created.
fn plan_policies(
    kind: Kind,
    name: &str,
    attached: &[String],
    inline: &BTreeMap<String, Document>,
    current: Option<&Policies>,
    scope: &Scope,
    out: &mut Vec<Change>,
) {
    let empty = Policies::default();
    let current = current.unwrap_or(&empty);
    let want: BTreeSet<String> = attached.iter().map(|r| scope.arn(r)).collect();
    for arn in current.attached.difference(&want) {
        out.push(Change::Detach {
            kind,
            name: name.into(),
            policy_arn: arn.clone(),
        });
    }
    for arn in want.difference(&current.attached) {
        out.push(Change::Attach {
            kind,
            name: name.into(),
            policy_arn: arn.clone(),
        });
    }
    for policy_name in current.inline.keys() {
        if !inline.contains_key(policy_name) {
            out.push(Change::DeleteInline {
                kind,
                name: name.into(),
                policy_name: policy_name.clone(),
            });
        }
    }
    for (policy_name, document) in inline {
        let text = document.text();
        if current
            .inline
            .get(policy_name)
            .is_none_or(|c| !same_document(c, &text))
        {
            out.push(Change::PutInline {
                kind,
                name: name.into(),
                policy_name: policy_name.clone(),
                document: text,
            });
        }
    }
}

fn plan_user(decl: &UserDecl, current: Option<&UserState>, scope: &Scope, out: &mut Vec<Change>) {
    let name = &decl.user_name;
    match current {
        None => out.push(Change::CreateUser {
            name: name.clone(),
            path: decl.path.clone(),
            tags: decl.tags.clone(),
            boundary: decl
                .permissions_boundary
                .as_deref()
                .map(|b| scope.arn(b))
                .unwrap_or_default(),
        }),
        Some(user) => {
            plan_tags(Kind::User, name, &decl.tags, &user.tags, out);
            plan_boundary(
                Kind::User,
                name,
                decl.permissions_boundary.as_deref(),
                &user.boundary,
                scope,
                out,
            );
        }
    }
    let have = current.map(|u| u.groups.clone()).unwrap_or_default();
    let want: BTreeSet<String> = decl.groups.iter().cloned().collect();
    for group in have.difference(&want) {
        out.push(Change::RemoveFromGroup {
            user: name.clone(),
            group: group.clone(),
        });
    }
    for group in want.difference(&have) {
        out.push(Change::AddToGroup {
            user: name.clone(),
            group: group.clone(),
        });
    }
    plan_policies(
        Kind::User,
        name,
        &decl.attached_policies,
        &decl.inline_policies,
        current.map(|u| &u.policies),
        scope,
        out,
    );
}

fn plan_role(decl: &RoleDecl, current: Option<&RoleState>, scope: &Scope, out: &mut Vec<Change>) {
    let name = &decl.role_name;
    let trust = decl.assume_role_policy_document.text();
    let max = decl.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION);
    match current {
        None => out.push(Change::CreateRole {
            name: name.clone(),
            path: decl.path.clone(),
            trust,
            description: decl.description.clone(),
            max_session_duration: max,
            tags: decl.tags.clone(),
            boundary: decl
                .permissions_boundary
                .as_deref()
                .map(|b| scope.arn(b))
                .unwrap_or_default(),
        }),
        Some(role) => {
            if !same_document(&role.trust, &trust) {
                out.push(Change::UpdateTrust {
                    role: name.clone(),
                    document: trust,
                });
            }
            if role.max_session_duration != max || role.description != decl.description {
                out.push(Change::UpdateRole {
                    role: name.clone(),
                    description: decl.description.clone(),
                    max_session_duration: max,
                });
            }
            plan_tags(Kind::Role, name, &decl.tags, &role.tags, out);
            plan_boundary(
                Kind::Role,
                name,
                decl.permissions_boundary.as_deref(),
                &role.boundary,
                scope,
                out,
            );
        }
    }
    plan_policies(
        Kind::Role,
        name,
        &decl.attached_policies,
        &decl.inline_policies,
        current.map(|r| &r.policies),
        scope,
        out,
    );
}

/// Strips an identity's policies and memberships, then deletes it.
fn strip(kind: Kind, name: &str, policies: &Policies, out: &mut Vec<Change>) {
    for arn in &policies.attached {
        out.push(Change::Detach {
            kind,
            name: name.into(),
            policy_arn: arn.clone(),
        });
    }
    for policy_name in policies.inline.keys() {
        out.push(Change::DeleteInline {
            kind,
            name: name.into(),
            policy_name: policy_name.clone(),
        });
    }
}

/// Deletes what the file does not declare: users (memberships, policies and credentials
/// first), roles, groups (members first), then customer policies no one keeps attached.
fn plan_prune(
    declaration: &Declaration,
    snapshot: &Snapshot,
    scope: &Scope,
    out: &mut Vec<Change>,
) {
    let declared_users: BTreeSet<&str> = declaration
        .users
        .iter()
        .map(|u| u.user_name.as_str())
        .collect();
    let declared_groups: BTreeSet<&str> = declaration
        .groups
        .iter()
        .map(|g| g.group_name.as_str())
        .collect();
    let declared_roles: BTreeSet<&str> = declaration
        .roles
        .iter()
        .map(|r| r.role_name.as_str())
        .collect();
    let declared_policies: BTreeSet<&str> = declaration
        .policies
        .iter()
        .map(|p| p.policy_name.as_str())
        .collect();
    let caller_user = scope.caller_user.as_deref();
    let caller_role = scope.caller_role.as_deref();
    // The caller keeps its own groups, whatever the file says about them.
    let protected_groups: BTreeSet<&str> = caller_user
        .and_then(|u| snapshot.users.get(u))
        .map(|u| u.groups.iter().map(String::as_str).collect())
        .unwrap_or_default();
    // Policies still attached (or used as boundaries) once the plan has run.
    let mut kept_arns: BTreeSet<String> = BTreeSet::new();
    let refs = declaration
        .groups
        .iter()
        .flat_map(|g| g.attached_policies.iter())
        .chain(declaration.users.iter().flat_map(|u| {
            u.attached_policies
                .iter()
                .chain(u.permissions_boundary.iter())
        }))
        .chain(declaration.roles.iter().flat_map(|r| {
            r.attached_policies
                .iter()
                .chain(r.permissions_boundary.iter())
        }));
    kept_arns.extend(refs.map(|r| scope.arn(r)));

    for (name, user) in &snapshot.users {
        if declared_users.contains(name.as_str()) {
            continue;
        }
        if Some(name.as_str()) == caller_user {
            kept_arns.extend(user.policies.attached.iter().cloned());
            if !user.boundary.is_empty() {
                kept_arns.insert(user.boundary.clone());
            }
            continue;
        }
        for group in &user.groups {
            out.push(Change::RemoveFromGroup {
                user: name.clone(),
                group: group.clone(),
            });
        }
        strip(Kind::User, name, &user.policies, out);
        if user.login_profile {
            out.push(Change::DeleteLoginProfile { user: name.clone() });
        }
        for key in &user.access_keys {
            out.push(Change::DeleteAccessKey {
                user: name.clone(),
                access_key_id: key.clone(),
            });
        }
        for serial in &user.mfa_devices {
            out.push(Change::DeleteMfaDevice {
                user: name.clone(),
                serial_number: serial.clone(),
            });
        }
        out.push(Change::DeleteUser { name: name.clone() });
    }
    for (name, role) in &snapshot.roles {
        if declared_roles.contains(name.as_str()) {
            continue;
        }
        if Some(name.as_str()) == caller_role {
            kept_arns.extend(role.policies.attached.iter().cloned());
            if !role.boundary.is_empty() {
                kept_arns.insert(role.boundary.clone());
            }
            continue;
        }
        strip(Kind::Role, name, &role.policies, out);
        out.push(Change::DeleteRole { name: name.clone() });
    }
    for (name, group) in &snapshot.groups {
        if declared_groups.contains(name.as_str()) {
            continue;
        }
        if protected_groups.contains(name.as_str()) {
            kept_arns.extend(group.policies.attached.iter().cloned());
            continue;
        }
        // Members that stay (declared users were already moved out by their own plan).
        strip(Kind::Group, name, &group.policies, out);
        out.push(Change::DeleteGroup { name: name.clone() });
    }
    for (name, policy) in &snapshot.policies {
        if declared_policies.contains(name.as_str())
            || kept_arns.contains(&policy.arn)
            || BUILTINS.contains(&name.as_str())
        {
            continue;
        }
        for (version_id, default) in &policy.versions {
            if !default {
                out.push(Change::DeletePolicyVersion {
                    policy_arn: policy.arn.clone(),
                    version_id: version_id.clone(),
                });
            }
        }
        out.push(Change::DeletePolicy {
            policy_arn: policy.arn.clone(),
        });
    }
}

fn missing(status: &Status) -> bool {
    status.code() == Code::NotFound
}

fn tag_list(map: &BTreeMap<String, String>) -> Vec<proto::Tag> {
    map.iter()
        .map(|(key, value)| proto::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn tag_map(tags: Vec<proto::Tag>) -> BTreeMap<String, String> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

/// Every page of a list call: `$call` on `$request` (with `marker`/`max_items` fields),
/// collecting `$field`.
macro_rules! all_pages {
    ($self:ident, $call:ident, $($ty:ident)::+ { $($f:ident: $v:expr),* $(,)? }, $field:ident) => {{
        let mut items = Vec::new();
        let mut marker = String::new();
        loop {
            #[allow(clippy::needless_update)] // some list requests have no other fields
            let request = $($ty)::+ {
                $($f: $v,)*
                marker: marker.clone(),
                max_items: 1000,
                ..Default::default()
            };
            let page = $self
                .iam
                .$call($self.req(request)?)
                .await
                .map_err(status_error)?
                .into_inner();
            items.extend(page.$field);
            if !page.is_truncated || page.marker.is_empty() || page.marker == marker {
                break;
            }
            marker = page.marker;
        }
        items
    }};
}

pub struct Applier {
    iam: IamClient<Channel>,
    token: crate::core::secret::SecretString,
}

impl Applier {
    fn req<T>(&self, message: T) -> Result<Request<T>, CliError> {
        bearer(message, &self.token)
    }

    async fn policies_of(&mut self, kind: Kind, name: &str) -> Result<Policies, CliError> {
        let name = name.to_string();
        let (attached, inline_names) = match kind {
            Kind::User => (
                all_pages!(
                    self,
                    list_attached_user_policies,
                    proto::ListAttachedUserPoliciesRequest {
                        user_name: name.clone(),
                    },
                    attached_policies
                ),
                all_pages!(
                    self,
                    list_user_policies,
                    proto::ListUserPoliciesRequest {
                        user_name: name.clone(),
                    },
                    policy_names
                ),
            ),
            Kind::Group => (
                all_pages!(
                    self,
                    list_attached_group_policies,
                    proto::ListAttachedGroupPoliciesRequest {
                        group_name: name.clone(),
                    },
                    attached_policies
                ),
                all_pages!(
                    self,
                    list_group_policies,
                    proto::ListGroupPoliciesRequest {
                        group_name: name.clone(),
                    },
                    policy_names
                ),
            ),
            Kind::Role => (
                all_pages!(
                    self,
                    list_attached_role_policies,
                    proto::ListAttachedRolePoliciesRequest {
                        role_name: name.clone(),
                    },
                    attached_policies
                ),
                all_pages!(
                    self,
                    list_role_policies,
                    proto::ListRolePoliciesRequest {
                        role_name: name.clone(),
                    },
                    policy_names
                ),
            ),
        };
        let mut inline = BTreeMap::new();
        for policy_name in inline_names {
            let document = self.inline(kind, &name, &policy_name).await?;
            inline.insert(policy_name, document);
        }
        Ok(Policies {
            attached: attached.into_iter().map(|p| p.policy_arn).collect(),
            inline,
        })
    }

    async fn inline(
        &mut self,
        kind: Kind,
        name: &str,
        policy_name: &str,
    ) -> Result<String, CliError> {
        let (name, policy_name) = (name.to_string(), policy_name.to_string());
        match kind {
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
        }
        .map_err(status_error)
    }

    async fn policy_state(&mut self, arn: &str) -> Result<Option<PolicyState>, CliError> {
        let found = self
            .iam
            .get_policy(self.req(proto::GetPolicyRequest {
                policy_arn: arn.into(),
            })?)
            .await;
        let policy = match found {
            Ok(r) => r.into_inner().policy.unwrap_or_default(),
            Err(status) if missing(&status) => return Ok(None),
            Err(status) => return Err(status_error(status)),
        };
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
        let document = match versions.iter().find(|v| v.is_default_version) {
            Some(v) if !v.document.is_empty() => v.document.clone(),
            _ => self
                .iam
                .get_policy_version(self.req(proto::GetPolicyVersionRequest {
                    policy_arn: arn.into(),
                    version_id: policy.default_version_id.clone(),
                })?)
                .await
                .map_err(status_error)?
                .into_inner()
                .policy_version
                .map(|v| v.document)
                .unwrap_or_default(),
        };
        Ok(Some(PolicyState {
            arn: arn.into(),
            document,
            versions: versions
                .into_iter()
                .map(|v| (v.version_id, v.is_default_version))
                .collect(),
        }))
    }

    async fn user_state(
        &mut self,
        name: &str,
        credentials: bool,
    ) -> Result<Option<UserState>, CliError> {
        let user = match self
            .iam
            .get_user(self.req(proto::GetUserRequest {
                user_name: name.into(),
            })?)
            .await
        {
            Ok(r) => r.into_inner().user.unwrap_or_default(),
            Err(status) if missing(&status) => return Ok(None),
            Err(status) => return Err(status_error(status)),
        };
        let groups = all_pages!(
            self,
            list_groups_for_user,
            proto::ListGroupsForUserRequest {
                user_name: name.into(),
            },
            groups
        );
        let mut state = UserState {
            tags: tag_map(user.tags),
            groups: groups.into_iter().map(|g| g.group_name).collect(),
            boundary: user.permissions_boundary,
            policies: self.policies_of(Kind::User, name).await?,
            ..UserState::default()
        };
        if credentials {
            state.login_profile = match self
                .iam
                .get_login_profile(self.req(proto::GetLoginProfileRequest {
                    user_name: name.into(),
                })?)
                .await
            {
                Ok(_) => true,
                Err(status) if missing(&status) => false,
                Err(status) => return Err(status_error(status)),
            };
            let keys = all_pages!(
                self,
                list_access_keys,
                proto::ListAccessKeysRequest {
                    user_name: name.into(),
                },
                access_key_metadata
            );
            state.access_keys = keys.into_iter().map(|k| k.access_key_id).collect();
            let devices = all_pages!(
                self,
                list_mfa_devices,
                proto::ListMfaDevicesRequest {
                    user_name: name.into(),
                },
                mfa_devices
            );
            state.mfa_devices = devices.into_iter().map(|d| d.serial_number).collect();
        }
        Ok(Some(state))
    }

    async fn role_state(&mut self, name: &str) -> Result<Option<RoleState>, CliError> {
        let role = match self
            .iam
            .get_role(self.req(proto::GetRoleRequest {
                role_name: name.into(),
            })?)
            .await
        {
            Ok(r) => r.into_inner().role.unwrap_or_default(),
            Err(status) if missing(&status) => return Ok(None),
            Err(status) => return Err(status_error(status)),
        };
        Ok(Some(RoleState {
            trust: role.assume_role_policy_document,
            description: role.description,
            max_session_duration: role.max_session_duration,
            tags: tag_map(role.tags),
            boundary: role.permissions_boundary,
            policies: self.policies_of(Kind::Role, name).await?,
        }))
    }

    async fn group_exists(&mut self, name: &str) -> Result<bool, CliError> {
        match self
            .iam
            .get_group(self.req(proto::GetGroupRequest {
                group_name: name.into(),
                max_items: 1,
                ..Default::default()
            })?)
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if missing(&status) => Ok(false),
            Err(status) => Err(status_error(status)),
        }
    }

    /// Reads what the declaration names, or (for `--prune`) everything.
    pub async fn read_snapshot(
        &mut self,
        declaration: &Declaration,
        scope: &Scope,
    ) -> Result<Snapshot, CliError> {
        let mut snapshot = Snapshot::default();
        // Customer policies by name → ARN (with the declared or listed path).
        let mut policy_names: BTreeMap<String, String> = declaration
            .policies
            .iter()
            .map(|p| {
                let path = p.path.trim_matches('/');
                let qualified = if path.is_empty() {
                    p.policy_name.clone()
                } else {
                    format!("{path}/{}", p.policy_name)
                };
                (p.policy_name.clone(), scope.arn(&qualified))
            })
            .collect();
        let mut group_names: BTreeSet<String> = declaration
            .groups
            .iter()
            .map(|g| g.group_name.clone())
            .collect();
        let mut user_names: BTreeSet<String> = declaration
            .users
            .iter()
            .map(|u| u.user_name.clone())
            .collect();
        let mut role_names: BTreeSet<String> = declaration
            .roles
            .iter()
            .map(|r| r.role_name.clone())
            .collect();
        if scope.prune {
            let policies = all_pages!(
                self,
                list_policies,
                proto::ListPoliciesRequest {
                    scope: "Local".into(),
                },
                policies
            );
            policy_names.extend(policies.into_iter().map(|p| (p.policy_name, p.arn)));
            let groups = all_pages!(self, list_groups, proto::ListGroupsRequest {}, groups);
            group_names.extend(groups.into_iter().map(|g| g.group_name));
            let users = all_pages!(self, list_users, proto::ListUsersRequest {}, users);
            user_names.extend(users.into_iter().map(|u| u.user_name));
            let roles = all_pages!(self, list_roles, proto::ListRolesRequest {}, roles);
            role_names.extend(roles.into_iter().map(|r| r.role_name));
        }
        for (name, arn) in policy_names {
            if let Some(state) = self.policy_state(&arn).await? {
                snapshot.policies.insert(name, state);
            }
        }
        for name in group_names {
            if self.group_exists(&name).await? {
                let policies = self.policies_of(Kind::Group, &name).await?;
                snapshot.groups.insert(name, GroupState { policies });
            }
        }
        for name in user_names {
            if let Some(state) = self.user_state(&name, scope.prune).await? {
                snapshot.users.insert(name, state);
            }
        }
        for name in role_names {
            if let Some(state) = self.role_state(&name).await? {
                snapshot.roles.insert(name, state);
            }
        }
        Ok(snapshot)
    }

    /// Makes one change.
    pub async fn execute(&mut self, change: &Change) -> Result<(), CliError> {
        let change = change.clone();
        let done = match change {
            Change::CreatePolicy {
                name,
                document,
                description,
                path,
            } => {
                let r = self.req(proto::CreatePolicyRequest {
                    policy_name: name,
                    policy_document: document,
                    description,
                    path,
                    tags: vec![],
                })?;
                self.iam.create_policy(r).await.map(drop)
            }
            Change::DeletePolicyVersion {
                policy_arn,
                version_id,
            } => {
                let r = self.req(proto::DeletePolicyVersionRequest {
                    policy_arn,
                    version_id,
                })?;
                self.iam.delete_policy_version(r).await.map(drop)
            }
            Change::CreatePolicyVersion {
                policy_arn,
                document,
            } => {
                let r = self.req(proto::CreatePolicyVersionRequest {
                    policy_arn,
                    policy_document: document,
                    set_as_default: true,
                })?;
                self.iam.create_policy_version(r).await.map(drop)
            }
            Change::CreateGroup { name, path } => {
                let r = self.req(proto::CreateGroupRequest {
                    group_name: name,
                    path,
                })?;
                self.iam.create_group(r).await.map(drop)
            }
            Change::CreateUser {
                name,
                path,
                tags,
                boundary,
            } => {
                let r = self.req(proto::CreateUserRequest {
                    user_name: name,
                    path,
                    tags: tag_list(&tags),
                    permissions_boundary: boundary,
                })?;
                self.iam.create_user(r).await.map(drop)
            }
            Change::CreateRole {
                name,
                path,
                trust,
                description,
                max_session_duration,
                tags,
                boundary,
            } => {
                let r = self.req(proto::CreateRoleRequest {
                    role_name: name,
                    assume_role_policy_document: trust,
                    max_session_duration,
                    description,
                    tags: tag_list(&tags),
                    path,
                    permissions_boundary: boundary,
                })?;
                self.iam.create_role(r).await.map(drop)
            }
            Change::UpdateTrust { role, document } => {
                let r = self.req(proto::UpdateAssumeRolePolicyRequest {
                    role_name: role,
                    policy_document: document,
                })?;
                self.iam.update_assume_role_policy(r).await.map(drop)
            }
            Change::UpdateRole {
                role,
                description,
                max_session_duration,
            } => {
                let r = self.req(proto::UpdateRoleRequest {
                    role_name: role,
                    description,
                    max_session_duration,
                })?;
                self.iam.update_role(r).await.map(drop)
            }
            Change::Untag { kind, name, keys } => match kind {
                Kind::Role => {
                    let r = self.req(proto::UntagRoleRequest {
                        role_name: name,
                        tag_keys: keys,
                    })?;
                    self.iam.untag_role(r).await.map(drop)
                }
                _ => {
                    let r = self.req(proto::UntagUserRequest {
                        user_name: name,
                        tag_keys: keys,
                    })?;
                    self.iam.untag_user(r).await.map(drop)
                }
            },
            Change::Tag { kind, name, tags } => match kind {
                Kind::Role => {
                    let r = self.req(proto::TagRoleRequest {
                        role_name: name,
                        tags: tag_list(&tags),
                    })?;
                    self.iam.tag_role(r).await.map(drop)
                }
                _ => {
                    let r = self.req(proto::TagUserRequest {
                        user_name: name,
                        tags: tag_list(&tags),
                    })?;
                    self.iam.tag_user(r).await.map(drop)
                }
            },
            Change::PutBoundary {
                kind,
                name,
                policy_arn,
            } => match kind {
                Kind::Role => {
                    let r = self.req(proto::PutRolePermissionsBoundaryRequest {
                        role_name: name,
                        permissions_boundary: policy_arn,
                    })?;
                    self.iam.put_role_permissions_boundary(r).await.map(drop)
                }
                _ => {
                    let r = self.req(proto::PutUserPermissionsBoundaryRequest {
                        user_name: name,
                        permissions_boundary: policy_arn,
                    })?;
                    self.iam.put_user_permissions_boundary(r).await.map(drop)
                }
            },
            Change::DeleteBoundary { kind, name } => match kind {
                Kind::Role => {
                    let r =
                        self.req(proto::DeleteRolePermissionsBoundaryRequest { role_name: name })?;
                    self.iam.delete_role_permissions_boundary(r).await.map(drop)
                }
                _ => {
                    let r =
                        self.req(proto::DeleteUserPermissionsBoundaryRequest { user_name: name })?;
                    self.iam.delete_user_permissions_boundary(r).await.map(drop)
                }
            },
            Change::AddToGroup { user, group } => {
                let r = self.req(proto::AddUserToGroupRequest {
                    group_name: group,
                    user_name: user,
                })?;
                self.iam.add_user_to_group(r).await.map(drop)
            }
            Change::RemoveFromGroup { user, group } => {
                let r = self.req(proto::RemoveUserFromGroupRequest {
                    group_name: group,
                    user_name: user,
                })?;
                self.iam.remove_user_from_group(r).await.map(drop)
            }
            Change::Attach {
                kind,
                name,
                policy_arn,
            } => match kind {
                Kind::User => {
                    let r = self.req(proto::AttachUserPolicyRequest {
                        user_name: name,
                        policy_arn,
                    })?;
                    self.iam.attach_user_policy(r).await.map(drop)
                }
                Kind::Group => {
                    let r = self.req(proto::AttachGroupPolicyRequest {
                        group_name: name,
                        policy_arn,
                    })?;
                    self.iam.attach_group_policy(r).await.map(drop)
                }
                Kind::Role => {
                    let r = self.req(proto::AttachRolePolicyRequest {
                        role_name: name,
                        policy_arn,
                    })?;
                    self.iam.attach_role_policy(r).await.map(drop)
                }
            },
            Change::Detach {
                kind,
                name,
                policy_arn,
            } => match kind {
                Kind::User => {
                    let r = self.req(proto::DetachUserPolicyRequest {
                        user_name: name,
                        policy_arn,
                    })?;
                    self.iam.detach_user_policy(r).await.map(drop)
                }
                Kind::Group => {
                    let r = self.req(proto::DetachGroupPolicyRequest {
                        group_name: name,
                        policy_arn,
                    })?;
                    self.iam.detach_group_policy(r).await.map(drop)
                }
                Kind::Role => {
                    let r = self.req(proto::DetachRolePolicyRequest {
                        role_name: name,
                        policy_arn,
                    })?;
                    self.iam.detach_role_policy(r).await.map(drop)
                }
            },
            Change::PutInline {
                kind,
                name,
                policy_name,
                document,
            } => match kind {
                Kind::User => {
                    let r = self.req(proto::PutUserPolicyRequest {
                        user_name: name,
                        policy_name,
                        policy_document: document,
                    })?;
                    self.iam.put_user_policy(r).await.map(drop)
                }
                Kind::Group => {
                    let r = self.req(proto::PutGroupPolicyRequest {
                        group_name: name,
                        policy_name,
                        policy_document: document,
                    })?;
                    self.iam.put_group_policy(r).await.map(drop)
                }
                Kind::Role => {
                    let r = self.req(proto::PutRolePolicyRequest {
                        role_name: name,
                        policy_name,
                        policy_document: document,
                    })?;
                    self.iam.put_role_policy(r).await.map(drop)
                }
            },
            Change::DeleteInline {
                kind,
                name,
                policy_name,
            } => match kind {
                Kind::User => {
                    let r = self.req(proto::DeleteUserPolicyRequest {
                        user_name: name,
                        policy_name,
                    })?;
                    self.iam.delete_user_policy(r).await.map(drop)
                }
                Kind::Group => {
                    let r = self.req(proto::DeleteGroupPolicyRequest {
                        group_name: name,
                        policy_name,
                    })?;
                    self.iam.delete_group_policy(r).await.map(drop)
                }
                Kind::Role => {
                    let r = self.req(proto::DeleteRolePolicyRequest {
                        role_name: name,
                        policy_name,
                    })?;
                    self.iam.delete_role_policy(r).await.map(drop)
                }
            },
            Change::DeleteLoginProfile { user } => {
                let r = self.req(proto::DeleteLoginProfileRequest { user_name: user })?;
                self.iam.delete_login_profile(r).await.map(drop)
            }
            Change::DeleteAccessKey {
                user,
                access_key_id,
            } => {
                let r = self.req(proto::DeleteAccessKeyRequest {
                    user_name: user,
                    access_key_id,
                })?;
                self.iam.delete_access_key(r).await.map(drop)
            }
            Change::DeleteMfaDevice {
                user,
                serial_number,
            } => {
                let r = self.req(proto::DeactivateMfaDeviceRequest {
                    user_name: user,
                    serial_number: serial_number.clone(),
                })?;
                match self.iam.deactivate_mfa_device(r).await {
                    Ok(_) => {}
                    Err(status) if missing(&status) => {}
                    Err(status) => return Err(status_error(status)),
                }
                let r = self.req(proto::DeleteVirtualMfaDeviceRequest { serial_number })?;
                self.iam.delete_virtual_mfa_device(r).await.map(drop)
            }
            Change::DeleteUser { name } => {
                let r = self.req(proto::DeleteUserRequest { user_name: name })?;
                self.iam.delete_user(r).await.map(drop)
            }
            Change::DeleteRole { name } => {
                let r = self.req(proto::DeleteRoleRequest { role_name: name })?;
                self.iam.delete_role(r).await.map(drop)
            }
            Change::DeleteGroup { name } => {
                let r = self.req(proto::DeleteGroupRequest { group_name: name })?;
                self.iam.delete_group(r).await.map(drop)
            }
            Change::DeletePolicy { policy_arn } => {
                let r = self.req(proto::DeletePolicyRequest { policy_arn })?;
                self.iam.delete_policy(r).await.map(drop)
            }
        };
        done.map_err(status_error)
    }
}

/// The caller's user name or role name, from its ARN (`…:user/path/name`,
/// `…:assumed-role/name/session`).
fn caller_names(arn: &str) -> (Option<String>, Option<String>) {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    if let Some(rest) = resource.strip_prefix("user/") {
        (rest.rsplit('/').next().map(str::to_string), None)
    } else if let Some(rest) = resource.strip_prefix("assumed-role/") {
        (None, rest.split('/').next().map(str::to_string))
    } else {
        (None, None)
    }
}

pub fn apply(args: ApplyArgs, env: &Env, output: OutputFormat) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", args.file.display())))?;
    let format = args.format.unwrap_or_else(|| FileFormat::of(&args.file));
    let declaration = parse(&args.file, &text, format)?;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token_flag())?;
    runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        let identity = StsClient::new(channel.clone())
            .get_caller_identity(bearer(proto::GetCallerIdentityRequest {}, &token)?)
            .await
            .map_err(status_error)?
            .into_inner();
        let (caller_user, caller_role) = caller_names(&identity.arn);
        let scope = Scope {
            partition: identity
                .arn
                .split(':')
                .nth(1)
                .unwrap_or("stint")
                .to_string(),
            account: identity.account,
            caller_user,
            caller_role,
            prune: args.prune,
        };
        let mut applier = Applier {
            iam: IamClient::new(channel),
            token,
        };
        let snapshot = applier.read_snapshot(&declaration, &scope).await?;
        let changes = plan(&declaration, &snapshot, &scope);
        let json = output == OutputFormat::Json;
        for change in &changes {
            if !json {
                let prefix = if args.dry_run { "would " } else { "" };
                super::say(format_args!("{prefix}{change}"))?;
            }
            if !args.dry_run {
                applier.execute(change).await?;
            }
        }
        if json {
            let report = serde_json::json!({
                "dry_run": args.dry_run,
                "changes": changes,
            });
            super::say(format_args!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            ))?;
        } else {
            let verb = if args.dry_run { "would make" } else { "made" };
            super::say(format_args!("{verb} {} change(s)", changes.len()))?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_A: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
    const DOC_B: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}]}"#;
    const ACCOUNT: &str = "123456789012";

    fn scope() -> Scope {
        Scope {
            partition: "stint".into(),
            account: ACCOUNT.into(),
            caller_user: Some("admin".into()),
            caller_role: None,
            prune: false,
        }
    }

    fn arn(name: &str) -> String {
        policy_arn(name, "stint", ACCOUNT)
    }

    fn doc(text: &str) -> Document {
        Document::Json(serde_json::from_str(text).unwrap())
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn user(name: &str) -> UserDecl {
        UserDecl {
            user_name: name.into(),
            ..UserDecl::default()
        }
    }

    fn role(name: &str, trust: &str) -> RoleDecl {
        RoleDecl {
            role_name: name.into(),
            assume_role_policy_document: doc(trust),
            path: String::new(),
            description: String::new(),
            max_session_duration: None,
            attached_policies: vec![],
            inline_policies: BTreeMap::new(),
            tags: BTreeMap::new(),
            permissions_boundary: None,
        }
    }

    fn role_state(trust: &str) -> RoleState {
        RoleState {
            trust: trust.into(),
            max_session_duration: 3600,
            ..RoleState::default()
        }
    }

    fn policy_state(name: &str, document: &str, versions: &[(&str, bool)]) -> PolicyState {
        PolicyState {
            arn: arn(name),
            document: document.into(),
            versions: versions
                .iter()
                .map(|(id, d)| (id.to_string(), *d))
                .collect(),
        }
    }

    struct Case {
        name: &'static str,
        declaration: Declaration,
        snapshot: Snapshot,
        prune: bool,
        want: Vec<Change>,
    }

    fn cases() -> Vec<Case> {
        let mut cases = Vec::new();

        // Creation: a user with tags and boundary, its group memberships and policies.
        let mut d = Declaration::default();
        d.users.push(UserDecl {
            groups: vec!["dev".into()],
            tags: map(&[("team", "web")]),
            attached_policies: vec!["ReadOnlyAccess".into()],
            inline_policies: BTreeMap::from([("s3".to_string(), doc(DOC_A))]),
            permissions_boundary: Some("Boundary".into()),
            ..user("carol")
        });
        cases.push(Case {
            name: "create user with everything",
            declaration: d,
            snapshot: Snapshot::default(),
            prune: false,
            want: vec![
                Change::CreateUser {
                    name: "carol".into(),
                    path: String::new(),
                    tags: map(&[("team", "web")]),
                    boundary: arn("Boundary"),
                },
                Change::AddToGroup {
                    user: "carol".into(),
                    group: "dev".into(),
                },
                Change::Attach {
                    kind: Kind::User,
                    name: "carol".into(),
                    policy_arn: "arn:stint:iam::aws:policy/ReadOnlyAccess".into(),
                },
                Change::PutInline {
                    kind: Kind::User,
                    name: "carol".into(),
                    policy_name: "s3".into(),
                    document: doc(DOC_A).text(),
                },
            ],
        });

        // Tags converge: add, change, remove.
        let mut d = Declaration::default();
        d.users.push(UserDecl {
            tags: map(&[("team", "api"), ("cost", "42")]),
            ..user("carol")
        });
        let mut s = Snapshot::default();
        s.users.insert(
            "carol".into(),
            UserState {
                tags: map(&[("team", "web"), ("old", "x")]),
                ..UserState::default()
            },
        );
        cases.push(Case {
            name: "tags add change remove",
            declaration: d,
            snapshot: s,
            prune: false,
            want: vec![
                Change::Untag {
                    kind: Kind::User,
                    name: "carol".into(),
                    keys: vec!["old".into()],
                },
                Change::Tag {
                    kind: Kind::User,
                    name: "carol".into(),
                    tags: map(&[("team", "api"), ("cost", "42")]),
                },
            ],
        });

        // Attachments, inline policies and memberships converge; equal documents are left.
        let mut d = Declaration::default();
        d.users.push(UserDecl {
            groups: vec!["ops".into()],
            attached_policies: vec!["Keep".into(), "New".into()],
            inline_policies: BTreeMap::from([
                ("same".to_string(), doc(DOC_A)),
                ("changed".to_string(), doc(DOC_B)),
            ]),
            ..user("carol")
        });
        let mut s = Snapshot::default();
        s.users.insert(
            "carol".into(),
            UserState {
                groups: ["dev".to_string(), "ops".to_string()].into(),
                policies: Policies {
                    attached: [arn("Keep"), arn("Old")].into(),
                    inline: BTreeMap::from([
                        // Same JSON, other spacing and key order: no change.
                        (
                            "same".to_string(),
                            serde_json::to_string_pretty(
                                &serde_json::from_str::<Value>(DOC_A).unwrap(),
                            )
                            .unwrap(),
                        ),
                        ("changed".to_string(), DOC_A.to_string()),
                        ("gone".to_string(), DOC_A.to_string()),
                    ]),
                },
                ..UserState::default()
            },
        );
        cases.push(Case {
            name: "attach detach inline put delete membership add remove",
            declaration: d,
            snapshot: s,
            prune: false,
            want: vec![
                Change::RemoveFromGroup {
                    user: "carol".into(),
                    group: "dev".into(),
                },
                Change::Detach {
                    kind: Kind::User,
                    name: "carol".into(),
                    policy_arn: arn("Old"),
                },
                Change::Attach {
                    kind: Kind::User,
                    name: "carol".into(),
                    policy_arn: arn("New"),
                },
                Change::DeleteInline {
                    kind: Kind::User,
                    name: "carol".into(),
                    policy_name: "gone".into(),
                },
                Change::PutInline {
                    kind: Kind::User,
                    name: "carol".into(),
                    policy_name: "changed".into(),
                    document: doc(DOC_B).text(),
                },
            ],
        });

        // Boundary set on one user, cleared on another.
        let mut d = Declaration::default();
        d.users.push(UserDecl {
            permissions_boundary: Some("B2".into()),
            ..user("a")
        });
        d.users.push(user("b"));
        let mut s = Snapshot::default();
        s.users.insert(
            "a".into(),
            UserState {
                boundary: arn("B1"),
                ..UserState::default()
            },
        );
        s.users.insert(
            "b".into(),
            UserState {
                boundary: arn("B1"),
                ..UserState::default()
            },
        );
        cases.push(Case {
            name: "boundary set and clear",
            declaration: d,
            snapshot: s,
            prune: false,
            want: vec![
                Change::PutBoundary {
                    kind: Kind::User,
                    name: "a".into(),
                    policy_arn: arn("B2"),
                },
                Change::DeleteBoundary {
                    kind: Kind::User,
                    name: "b".into(),
                },
            ],
        });

        // Role: trust policy, max_session_duration and tags.
        let mut d = Declaration::default();
        d.roles.push(RoleDecl {
            max_session_duration: Some(7200),
            tags: map(&[("env", "prod")]),
            ..role("deploy", DOC_B)
        });
        d.roles.push(role("same", DOC_A));
        let mut s = Snapshot::default();
        s.roles.insert("deploy".into(), role_state(DOC_A));
        s.roles.insert("same".into(), role_state(DOC_A));
        cases.push(Case {
            name: "role trust and max session duration",
            declaration: d,
            snapshot: s,
            prune: false,
            want: vec![
                Change::UpdateTrust {
                    role: "deploy".into(),
                    document: doc(DOC_B).text(),
                },
                Change::UpdateRole {
                    role: "deploy".into(),
                    description: String::new(),
                    max_session_duration: 7200,
                },
                Change::Tag {
                    kind: Kind::Role,
                    name: "deploy".into(),
                    tags: map(&[("env", "prod")]),
                },
            ],
        });

        // Policies: new version only when the document changed; room made at five.
        let mut d = Declaration::default();
        for (name, text) in [
            ("Same", DOC_A),
            ("Changed", DOC_B),
            ("Full", DOC_B),
            ("New", DOC_A),
        ] {
            d.policies.push(PolicyDecl {
                policy_name: name.into(),
                policy_document: Document::Text(text.into()),
                description: String::new(),
                path: String::new(),
            });
        }
        let mut s = Snapshot::default();
        s.policies
            .insert("Same".into(), policy_state("Same", DOC_A, &[("v1", true)]));
        s.policies.insert(
            "Changed".into(),
            policy_state("Changed", DOC_A, &[("v1", false), ("v2", true)]),
        );
        s.policies.insert(
            "Full".into(),
            policy_state(
                "Full",
                DOC_A,
                &[
                    ("v3", false),
                    ("v4", false),
                    ("v5", false),
                    ("v6", true),
                    ("v7", false),
                ],
            ),
        );
        cases.push(Case {
            name: "policy versions",
            declaration: d,
            snapshot: s,
            prune: false,
            want: vec![
                Change::CreatePolicyVersion {
                    policy_arn: arn("Changed"),
                    document: DOC_B.into(),
                },
                Change::DeletePolicyVersion {
                    policy_arn: arn("Full"),
                    version_id: "v3".into(),
                },
                Change::CreatePolicyVersion {
                    policy_arn: arn("Full"),
                    document: DOC_B.into(),
                },
                Change::CreatePolicy {
                    name: "New".into(),
                    document: DOC_A.into(),
                    description: String::new(),
                    path: String::new(),
                },
            ],
        });

        // A group is created before its policies are attached.
        let mut d = Declaration::default();
        d.groups.push(GroupDecl {
            group_name: "dev".into(),
            attached_policies: vec!["PowerUserAccess".into()],
            ..GroupDecl::default()
        });
        cases.push(Case {
            name: "create group then attach",
            declaration: d,
            snapshot: Snapshot::default(),
            prune: false,
            want: vec![
                Change::CreateGroup {
                    name: "dev".into(),
                    path: String::new(),
                },
                Change::Attach {
                    kind: Kind::Group,
                    name: "dev".into(),
                    policy_arn: "arn:stint:iam::aws:policy/PowerUserAccess".into(),
                },
            ],
        });

        // Without --prune, what the file does not mention is left alone.
        let mut s = Snapshot::default();
        s.users.insert("stranger".into(), UserState::default());
        s.roles.insert("old".into(), role_state(DOC_A));
        cases.push(Case {
            name: "no prune leaves undeclared",
            declaration: Declaration::default(),
            snapshot: s,
            prune: false,
            want: vec![],
        });

        // --prune: dependency order; never the caller, its group or policies it keeps.
        let mut d = Declaration::default();
        d.users.push(user("carol"));
        d.policies.push(PolicyDecl {
            policy_name: "Declared".into(),
            policy_document: Document::Text(DOC_A.into()),
            description: String::new(),
            path: String::new(),
        });
        let mut s = Snapshot::default();
        s.users.insert("carol".into(), UserState::default());
        s.users.insert(
            "admin".into(),
            UserState {
                groups: ["admins".to_string()].into(),
                policies: Policies {
                    attached: [arn("CallerKeeps")].into(),
                    inline: BTreeMap::new(),
                },
                ..UserState::default()
            },
        );
        s.users.insert(
            "old".into(),
            UserState {
                groups: ["legacy".to_string()].into(),
                tags: map(&[("a", "b")]),
                policies: Policies {
                    attached: [arn("Legacy")].into(),
                    inline: BTreeMap::from([("x".to_string(), DOC_A.to_string())]),
                },
                login_profile: true,
                access_keys: vec!["AKIAOLD".into()],
                mfa_devices: vec!["arn:stint:iam::123456789012:mfa/old".into()],
                ..UserState::default()
            },
        );
        s.groups.insert("admins".into(), GroupState::default());
        s.groups.insert(
            "legacy".into(),
            GroupState {
                policies: Policies {
                    attached: [arn("Legacy")].into(),
                    inline: BTreeMap::new(),
                },
            },
        );
        s.roles.insert(
            "oldrole".into(),
            RoleState {
                policies: Policies {
                    attached: [arn("Legacy")].into(),
                    inline: BTreeMap::new(),
                },
                ..role_state(DOC_A)
            },
        );
        s.policies.insert(
            "Declared".into(),
            policy_state("Declared", DOC_A, &[("v1", true)]),
        );
        s.policies.insert(
            "Legacy".into(),
            policy_state("Legacy", DOC_A, &[("v1", false), ("v2", true)]),
        );
        s.policies.insert(
            "CallerKeeps".into(),
            policy_state("CallerKeeps", DOC_A, &[("v1", true)]),
        );
        cases.push(Case {
            name: "prune in dependency order",
            declaration: d,
            snapshot: s,
            prune: true,
            want: vec![
                Change::RemoveFromGroup {
                    user: "old".into(),
                    group: "legacy".into(),
                },
                Change::Detach {
                    kind: Kind::User,
                    name: "old".into(),
                    policy_arn: arn("Legacy"),
                },
                Change::DeleteInline {
                    kind: Kind::User,
                    name: "old".into(),
                    policy_name: "x".into(),
                },
                Change::DeleteLoginProfile { user: "old".into() },
                Change::DeleteAccessKey {
                    user: "old".into(),
                    access_key_id: "AKIAOLD".into(),
                },
                Change::DeleteMfaDevice {
                    user: "old".into(),
                    serial_number: "arn:stint:iam::123456789012:mfa/old".into(),
                },
                Change::DeleteUser { name: "old".into() },
                Change::Detach {
                    kind: Kind::Role,
                    name: "oldrole".into(),
                    policy_arn: arn("Legacy"),
                },
                Change::DeleteRole {
                    name: "oldrole".into(),
                },
                Change::Detach {
                    kind: Kind::Group,
                    name: "legacy".into(),
                    policy_arn: arn("Legacy"),
                },
                Change::DeleteGroup {
                    name: "legacy".into(),
                },
                Change::DeletePolicyVersion {
                    policy_arn: arn("Legacy"),
                    version_id: "v1".into(),
                },
                Change::DeletePolicy {
                    policy_arn: arn("Legacy"),
                },
            ],
        });

        // Changes to the caller itself run after everything else.
        let mut d = Declaration::default();
        d.users.push(UserDecl {
            attached_policies: vec!["ReadOnlyAccess".into()],
            ..user("admin")
        });
        d.users.push(user("bob"));
        let mut s = Snapshot::default();
        s.users.insert(
            "admin".into(),
            UserState {
                policies: Policies {
                    attached: ["arn:stint:iam::aws:policy/AdministratorAccess".to_string()].into(),
                    inline: BTreeMap::new(),
                },
                ..UserState::default()
            },
        );
        cases.push(Case {
            name: "caller's own changes last",
            declaration: d,
            snapshot: s,
            prune: false,
            want: vec![
                Change::Attach {
                    kind: Kind::User,
                    name: "admin".into(),
                    policy_arn: "arn:stint:iam::aws:policy/ReadOnlyAccess".into(),
                },
                Change::CreateUser {
                    name: "bob".into(),
                    path: String::new(),
                    tags: BTreeMap::new(),
                    boundary: String::new(),
                },
                Change::Detach {
                    kind: Kind::User,
                    name: "admin".into(),
                    policy_arn: "arn:stint:iam::aws:policy/AdministratorAccess".into(),
                },
            ],
        });

        // A caller in a role session keeps that role.
        let mut s = Snapshot::default();
        s.roles.insert("admin-role".into(), role_state(DOC_A));
        cases.push(Case {
            name: "prune spares the caller's role",
            declaration: Declaration::default(),
            snapshot: s,
            prune: true,
            want: vec![],
        });
        cases
    }

    #[test]
    fn plan_table() {
        for case in cases() {
            let mut scope = scope();
            scope.prune = case.prune;
            if case.name == "prune spares the caller's role" {
                scope.caller_user = None;
                scope.caller_role = Some("admin-role".into());
            }
            let got = plan(&case.declaration, &case.snapshot, &scope);
            assert_eq!(got, case.want, "case: {}", case.name);
        }
    }

    #[test]
    fn plan_of_applied_state_is_empty() {
        // After the changes of a creation, the same declaration plans nothing.
        let mut d = Declaration::default();
        d.users.push(UserDecl {
            groups: vec!["dev".into()],
            tags: map(&[("team", "web")]),
            attached_policies: vec!["ReadOnlyAccess".into()],
            inline_policies: BTreeMap::from([("s3".to_string(), doc(DOC_A))]),
            ..user("carol")
        });
        d.roles.push(role("r", DOC_A));
        let mut s = Snapshot::default();
        s.users.insert(
            "carol".into(),
            UserState {
                tags: map(&[("team", "web")]),
                groups: ["dev".to_string()].into(),
                policies: Policies {
                    attached: ["arn:stint:iam::aws:policy/ReadOnlyAccess".to_string()].into(),
                    inline: BTreeMap::from([("s3".to_string(), DOC_A.to_string())]),
                },
                ..UserState::default()
            },
        );
        s.roles.insert("r".into(), role_state(DOC_A));
        assert_eq!(plan(&d, &s, &scope()), vec![]);
    }

    #[test]
    fn declarations_parse_in_three_formats_and_unknown_keys_are_refused() {
        let json = r#"{"policies":[{"policy_name":"P","policy_document":{"Version":"2012-10-17","Statement":[]}}],
                    "roles":[{"role_name":"r","assume_role_policy_document":"{\"Version\":\"2012-10-17\",\"Statement\":[]}"}],
                    "users":[{"user_name":"u","groups":["g"],"tags":{"team":"web"}}]}"#;
        let yaml = "policies:\n  - policy_name: P\n    policy_document: {Version: '2012-10-17', Statement: []}\nroles:\n  - role_name: r\n    assume_role_policy_document: '{\"Version\":\"2012-10-17\",\"Statement\":[]}'\nusers:\n  - user_name: u\n    groups: [g]\n    tags: {team: web}\n";
        let toml = "[[policies]]\npolicy_name = \"P\"\npolicy_document = { Version = \"2012-10-17\", Statement = [] }\n\n[[roles]]\nrole_name = \"r\"\nassume_role_policy_document = '{\"Version\":\"2012-10-17\",\"Statement\":[]}'\n\n[[users]]\nuser_name = \"u\"\ngroups = [\"g\"]\ntags = { team = \"web\" }\n";
        for (file, text) in [("iam.json", json), ("iam.yaml", yaml), ("iam.toml", toml)] {
            let path = Path::new(file);
            let d =
                parse(path, text, FileFormat::of(path)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(d.policies[0].policy_name, "P", "{file}");
            assert!(
                matches!(d.policies[0].policy_document, Document::Json(_)),
                "{file}"
            );
            assert!(
                matches!(d.roles[0].assume_role_policy_document, Document::Text(_)),
                "{file}"
            );
            assert_eq!(d.users[0].tags["team"], "web", "{file}");
            assert_eq!(d.users[0].groups, ["g"], "{file}");
        }
        let path = Path::new("iam.yml");
        let err = parse(
            path,
            "users:\n  - user_name: u\n    grops: []\n",
            FileFormat::of(path),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("iam.yml") && err.contains("grops"), "{err}");
        assert!(parse(Path::new("x.toml"), "users = 3", FileFormat::Toml).is_err());
        assert!(parse(Path::new("empty.yaml"), "", FileFormat::Yaml).is_ok());
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
    fn caller_names_from_arns() {
        let rows = [
            ("arn:stint:iam::1:user/admin", (Some("admin"), None)),
            ("arn:stint:iam::1:user/eng/bob", (Some("bob"), None)),
            (
                "arn:stint:sts::1:assumed-role/deploy/s1",
                (None, Some("deploy")),
            ),
            ("garbage", (None, None)),
        ];
        for (arn, (user, role)) in rows {
            let (u, r) = caller_names(arn);
            assert_eq!((u.as_deref(), r.as_deref()), (user, role), "{arn}");
        }
    }

    #[test]
    fn documents_compare_as_json() {
        assert!(same_document(r#"{"a": 1, "b": [2]}"#, r#"{"b":[2],"a":1}"#));
        assert!(!same_document(r#"{"a": 1}"#, r#"{"a": 2}"#));
    }
}
