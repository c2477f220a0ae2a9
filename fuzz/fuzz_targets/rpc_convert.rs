//! Every request of every service: the first byte picks the message, the rest is decoded
//! with prost (as tonic would) and handed to the real handler in `src/rpc/`, so the
//! conversion into broker inputs and the broker's own validation run on it, as the
//! signed-in administrator (a freshly bootstrapped one, on a fresh in-memory server, per
//! input: a crash never depends on what an earlier input left behind).
//! A message that decodes must also survive an encode/decode round trip unchanged.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ring::rand::SystemRandom;
use stint::broker::{LoginCredential, ManualClock, RequestMeta, SessionTokenInput};
use stint::config::Config;
use stint::core::authn::totp;
use stint::core::secret::SecretString;
use stint::daemon::Daemon;
use stint::proto::{
    self, audit_server::Audit, iam_server::Iam, keys_server::Keys, sts_server::Sts,
    tokens_server::Tokens,
};
use stint::rpc::{audit, iam, keys, sts, tokens};
use stint::store::memory::MemoryStore;
use stint::store::seal::MasterKey;

/// Request message names, in selector order (used to name the seed files).
pub const MESSAGES: &[&str] = &[
    "GetSessionTokenRequest",
    "AssumeRoleRequest",
    "GetCallerIdentityRequest",
    "AssumeRoleWithWebIdentityRequest",
    "GetJwksRequest",
    "IntrospectRequest",
    "AuthorizeRequest",
    "RevokeSessionRequest",
    "WatchRevocationsRequest",
    "CreateUserRequest",
    "GetUserRequest",
    "ListUsersRequest",
    "DeleteUserRequest",
    "TagUserRequest",
    "UntagUserRequest",
    "CreateLoginProfileRequest",
    "UpdateLoginProfileRequest",
    "DeleteLoginProfileRequest",
    "GetLoginProfileRequest",
    "UpdateAccountPasswordPolicyRequest",
    "GetAccountPasswordPolicyRequest",
    "CreateGroupRequest",
    "GetGroupRequest",
    "ListGroupsRequest",
    "DeleteGroupRequest",
    "AddUserToGroupRequest",
    "RemoveUserFromGroupRequest",
    "ListGroupsForUserRequest",
    "CreateRoleRequest",
    "GetRoleRequest",
    "ListRolesRequest",
    "DeleteRoleRequest",
    "UpdateRoleRequest",
    "UpdateAssumeRolePolicyRequest",
    "TagRoleRequest",
    "UntagRoleRequest",
    "CreatePolicyRequest",
    "GetPolicyRequest",
    "ListPoliciesRequest",
    "DeletePolicyRequest",
    "CreatePolicyVersionRequest",
    "GetPolicyVersionRequest",
    "ListPolicyVersionsRequest",
    "DeletePolicyVersionRequest",
    "SetDefaultPolicyVersionRequest",
    "AttachUserPolicyRequest",
    "DetachUserPolicyRequest",
    "ListAttachedUserPoliciesRequest",
    "AttachGroupPolicyRequest",
    "DetachGroupPolicyRequest",
    "ListAttachedGroupPoliciesRequest",
    "AttachRolePolicyRequest",
    "DetachRolePolicyRequest",
    "ListAttachedRolePoliciesRequest",
    "PutUserPolicyRequest",
    "GetUserPolicyRequest",
    "DeleteUserPolicyRequest",
    "ListUserPoliciesRequest",
    "PutGroupPolicyRequest",
    "GetGroupPolicyRequest",
    "DeleteGroupPolicyRequest",
    "ListGroupPoliciesRequest",
    "PutRolePolicyRequest",
    "GetRolePolicyRequest",
    "DeleteRolePolicyRequest",
    "ListRolePoliciesRequest",
    "PutUserPermissionsBoundaryRequest",
    "DeleteUserPermissionsBoundaryRequest",
    "PutRolePermissionsBoundaryRequest",
    "DeleteRolePermissionsBoundaryRequest",
    "CreateVirtualMfaDeviceRequest",
    "EnableMfaDeviceRequest",
    "ResyncMfaDeviceRequest",
    "DeactivateMfaDeviceRequest",
    "DeleteVirtualMfaDeviceRequest",
    "ListMfaDevicesRequest",
    "CreateAccessKeyRequest",
    "UpdateAccessKeyRequest",
    "DeleteAccessKeyRequest",
    "ListAccessKeysRequest",
    "GetAccessKeyLastUsedRequest",
    "ChangePasswordRequest",
    "GetCredentialReportRequest",
    "SimulatePrincipalPolicyRequest",
    "WhoCanRequest",
    "CreateOpenIdConnectProviderRequest",
    "GetOpenIdConnectProviderRequest",
    "ListOpenIdConnectProvidersRequest",
    "DeleteOpenIdConnectProviderRequest",
    "AddClientIdToOpenIdConnectProviderRequest",
    "RemoveClientIdFromOpenIdConnectProviderRequest",
    "UpdateOpenIdConnectProviderThumbprintRequest",
    "TagOpenIdConnectProviderRequest",
    "UntagOpenIdConnectProviderRequest",
    "ListEventsRequest",
    "WatchEventsRequest",
    "VerifyChainRequest",
    "ListRotationsRequest",
    "ListSigningKeysRequest",
    "RotateSigningKeyRequest",
];

fn master() -> MasterKey {
    static MASTER: OnceLock<MasterKey> = OnceLock::new();
    MASTER
        .get_or_init(|| MasterKey::generate(&SystemRandom::new()).expect("master key"))
        .clone()
}

struct Server {
    broker: Arc<stint::broker::Broker>,
    bearer: String,
}

/// A fresh server over memory with a signed-in administrator (cheap argon2, as in tests).
async fn server() -> Server {
    let mut config = Config::default();
    config.argon2.memory_kib = 8;
    config.argon2.iterations = 1;
    config.argon2.parallelism = 1;
    config.account.id = "123456789012".into();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let daemon = Daemon::assemble(
        config,
        Arc::new(MemoryStore::new()),
        master(),
        clock.clone(),
    )
    .expect("assemble");
    let broker = daemon.broker;
    let password = SecretString::new("fuzz-admin-Password-1!".into());
    let (_, _, seed) = broker
        .bootstrap_admin("admin", &password)
        .await
        .expect("bootstrap");
    let code = totp::code_at(seed.expose(), totp::step_at(broker.now()));
    let issued = broker
        .get_session_token(
            &RequestMeta::default(),
            SessionTokenInput {
                credential: LoginCredential::Password {
                    user_name: "admin".into(),
                    password,
                },
                token_code: Some(SecretString::new(code)),
                duration_seconds: 0,
            },
        )
        .await
        .expect("admin login");
    let bearer = format!("Bearer {}", issued.session_token);
    // A role the account may assume, so AssumeRole and role requests get past the lookup.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    let iam = iam::IamService {
        broker: broker.clone(),
    };
    iam.create_role(request(
        proto::CreateRoleRequest {
            role_name: "deploy".into(),
            assume_role_policy_document: trust.into(),
            ..Default::default()
        },
        &bearer,
    ))
    .await
    .expect("role");
    Server { broker, bearer }
}

fn request<T>(message: T, bearer: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = bearer.parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

macro_rules! call {
    ($body:ident, $module:ident :: $service:ident, $method:ident, $message:ident) => {{
        let Ok(message) = proto::$message::decode($body) else {
            return;
        };
        let again = proto::$message::decode(message.encode_to_vec().as_slice())
            .expect("a decoded message re-encodes");
        assert_eq!(again, message, "prost round trip");
        // A runtime per input: dropping it ends the server's background tasks.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let server = server().await;
            let handler = $module::$service {
                broker: server.broker.clone(),
            };
            let _ = handler.$method(request(message, &server.bearer)).await;
        });
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match usize::from(selector) % MESSAGES.len() {
        0 => call!(
            body,
            sts::StsService,
            get_session_token,
            GetSessionTokenRequest
        ),
        1 => call!(body, sts::StsService, assume_role, AssumeRoleRequest),
        2 => call!(
            body,
            sts::StsService,
            get_caller_identity,
            GetCallerIdentityRequest
        ),
        3 => call!(
            body,
            sts::StsService,
            assume_role_with_web_identity,
            AssumeRoleWithWebIdentityRequest
        ),
        4 => call!(body, tokens::TokensService, get_jwks, GetJwksRequest),
        5 => call!(body, tokens::TokensService, introspect, IntrospectRequest),
        6 => call!(body, tokens::TokensService, authorize, AuthorizeRequest),
        7 => call!(
            body,
            tokens::TokensService,
            revoke_session,
            RevokeSessionRequest
        ),
        8 => call!(
            body,
            tokens::TokensService,
            watch_revocations,
            WatchRevocationsRequest
        ),
        9 => call!(body, iam::IamService, create_user, CreateUserRequest),
        10 => call!(body, iam::IamService, get_user, GetUserRequest),
        11 => call!(body, iam::IamService, list_users, ListUsersRequest),
        12 => call!(body, iam::IamService, delete_user, DeleteUserRequest),
        13 => call!(body, iam::IamService, tag_user, TagUserRequest),
        14 => call!(body, iam::IamService, untag_user, UntagUserRequest),
        15 => call!(
            body,
            iam::IamService,
            create_login_profile,
            CreateLoginProfileRequest
        ),
        16 => call!(
            body,
            iam::IamService,
            update_login_profile,
            UpdateLoginProfileRequest
        ),
        17 => call!(
            body,
            iam::IamService,
            delete_login_profile,
            DeleteLoginProfileRequest
        ),
        18 => call!(
            body,
            iam::IamService,
            get_login_profile,
            GetLoginProfileRequest
        ),
        19 => call!(
            body,
            iam::IamService,
            update_account_password_policy,
            UpdateAccountPasswordPolicyRequest
        ),
        20 => call!(
            body,
            iam::IamService,
            get_account_password_policy,
            GetAccountPasswordPolicyRequest
        ),
        21 => call!(body, iam::IamService, create_group, CreateGroupRequest),
        22 => call!(body, iam::IamService, get_group, GetGroupRequest),
        23 => call!(body, iam::IamService, list_groups, ListGroupsRequest),
        24 => call!(body, iam::IamService, delete_group, DeleteGroupRequest),
        25 => call!(
            body,
            iam::IamService,
            add_user_to_group,
            AddUserToGroupRequest
        ),
        26 => call!(
            body,
            iam::IamService,
            remove_user_from_group,
            RemoveUserFromGroupRequest
        ),
        27 => call!(
            body,
            iam::IamService,
            list_groups_for_user,
            ListGroupsForUserRequest
        ),
        28 => call!(body, iam::IamService, create_role, CreateRoleRequest),
        29 => call!(body, iam::IamService, get_role, GetRoleRequest),
        30 => call!(body, iam::IamService, list_roles, ListRolesRequest),
        31 => call!(body, iam::IamService, delete_role, DeleteRoleRequest),
        32 => call!(body, iam::IamService, update_role, UpdateRoleRequest),
        33 => call!(
            body,
            iam::IamService,
            update_assume_role_policy,
            UpdateAssumeRolePolicyRequest
        ),
        34 => call!(body, iam::IamService, tag_role, TagRoleRequest),
        35 => call!(body, iam::IamService, untag_role, UntagRoleRequest),
        36 => call!(body, iam::IamService, create_policy, CreatePolicyRequest),
        37 => call!(body, iam::IamService, get_policy, GetPolicyRequest),
        38 => call!(body, iam::IamService, list_policies, ListPoliciesRequest),
        39 => call!(body, iam::IamService, delete_policy, DeletePolicyRequest),
        40 => call!(
            body,
            iam::IamService,
            create_policy_version,
            CreatePolicyVersionRequest
        ),
        41 => call!(
            body,
            iam::IamService,
            get_policy_version,
            GetPolicyVersionRequest
        ),
        42 => call!(
            body,
            iam::IamService,
            list_policy_versions,
            ListPolicyVersionsRequest
        ),
        43 => call!(
            body,
            iam::IamService,
            delete_policy_version,
            DeletePolicyVersionRequest
        ),
        44 => call!(
            body,
            iam::IamService,
            set_default_policy_version,
            SetDefaultPolicyVersionRequest
        ),
        45 => call!(
            body,
            iam::IamService,
            attach_user_policy,
            AttachUserPolicyRequest
        ),
        46 => call!(
            body,
            iam::IamService,
            detach_user_policy,
            DetachUserPolicyRequest
        ),
        47 => call!(
            body,
            iam::IamService,
            list_attached_user_policies,
            ListAttachedUserPoliciesRequest
        ),
        48 => call!(
            body,
            iam::IamService,
            attach_group_policy,
            AttachGroupPolicyRequest
        ),
        49 => call!(
            body,
            iam::IamService,
            detach_group_policy,
            DetachGroupPolicyRequest
        ),
        50 => call!(
            body,
            iam::IamService,
            list_attached_group_policies,
            ListAttachedGroupPoliciesRequest
        ),
        51 => call!(
            body,
            iam::IamService,
            attach_role_policy,
            AttachRolePolicyRequest
        ),
        52 => call!(
            body,
            iam::IamService,
            detach_role_policy,
            DetachRolePolicyRequest
        ),
        53 => call!(
            body,
            iam::IamService,
            list_attached_role_policies,
            ListAttachedRolePoliciesRequest
        ),
        54 => call!(body, iam::IamService, put_user_policy, PutUserPolicyRequest),
        55 => call!(body, iam::IamService, get_user_policy, GetUserPolicyRequest),
        56 => call!(
            body,
            iam::IamService,
            delete_user_policy,
            DeleteUserPolicyRequest
        ),
        57 => call!(
            body,
            iam::IamService,
            list_user_policies,
            ListUserPoliciesRequest
        ),
        58 => call!(
            body,
            iam::IamService,
            put_group_policy,
            PutGroupPolicyRequest
        ),
        59 => call!(
            body,
            iam::IamService,
            get_group_policy,
            GetGroupPolicyRequest
        ),
        60 => call!(
            body,
            iam::IamService,
            delete_group_policy,
            DeleteGroupPolicyRequest
        ),
        61 => call!(
            body,
            iam::IamService,
            list_group_policies,
            ListGroupPoliciesRequest
        ),
        62 => call!(body, iam::IamService, put_role_policy, PutRolePolicyRequest),
        63 => call!(body, iam::IamService, get_role_policy, GetRolePolicyRequest),
        64 => call!(
            body,
            iam::IamService,
            delete_role_policy,
            DeleteRolePolicyRequest
        ),
        65 => call!(
            body,
            iam::IamService,
            list_role_policies,
            ListRolePoliciesRequest
        ),
        66 => call!(
            body,
            iam::IamService,
            put_user_permissions_boundary,
            PutUserPermissionsBoundaryRequest
        ),
        67 => call!(
            body,
            iam::IamService,
            delete_user_permissions_boundary,
            DeleteUserPermissionsBoundaryRequest
        ),
        68 => call!(
            body,
            iam::IamService,
            put_role_permissions_boundary,
            PutRolePermissionsBoundaryRequest
        ),
        69 => call!(
            body,
            iam::IamService,
            delete_role_permissions_boundary,
            DeleteRolePermissionsBoundaryRequest
        ),
        70 => call!(
            body,
            iam::IamService,
            create_virtual_mfa_device,
            CreateVirtualMfaDeviceRequest
        ),
        71 => call!(
            body,
            iam::IamService,
            enable_mfa_device,
            EnableMfaDeviceRequest
        ),
        72 => call!(
            body,
            iam::IamService,
            resync_mfa_device,
            ResyncMfaDeviceRequest
        ),
        73 => call!(
            body,
            iam::IamService,
            deactivate_mfa_device,
            DeactivateMfaDeviceRequest
        ),
        74 => call!(
            body,
            iam::IamService,
            delete_virtual_mfa_device,
            DeleteVirtualMfaDeviceRequest
        ),
        75 => call!(
            body,
            iam::IamService,
            list_mfa_devices,
            ListMfaDevicesRequest
        ),
        76 => call!(
            body,
            iam::IamService,
            create_access_key,
            CreateAccessKeyRequest
        ),
        77 => call!(
            body,
            iam::IamService,
            update_access_key,
            UpdateAccessKeyRequest
        ),
        78 => call!(
            body,
            iam::IamService,
            delete_access_key,
            DeleteAccessKeyRequest
        ),
        79 => call!(
            body,
            iam::IamService,
            list_access_keys,
            ListAccessKeysRequest
        ),
        80 => call!(
            body,
            iam::IamService,
            get_access_key_last_used,
            GetAccessKeyLastUsedRequest
        ),
        81 => call!(
            body,
            iam::IamService,
            change_password,
            ChangePasswordRequest
        ),
        82 => call!(
            body,
            iam::IamService,
            get_credential_report,
            GetCredentialReportRequest
        ),
        83 => call!(
            body,
            iam::IamService,
            simulate_principal_policy,
            SimulatePrincipalPolicyRequest
        ),
        84 => call!(body, iam::IamService, who_can, WhoCanRequest),
        85 => call!(
            body,
            iam::IamService,
            create_open_id_connect_provider,
            CreateOpenIdConnectProviderRequest
        ),
        86 => call!(
            body,
            iam::IamService,
            get_open_id_connect_provider,
            GetOpenIdConnectProviderRequest
        ),
        87 => call!(
            body,
            iam::IamService,
            list_open_id_connect_providers,
            ListOpenIdConnectProvidersRequest
        ),
        88 => call!(
            body,
            iam::IamService,
            delete_open_id_connect_provider,
            DeleteOpenIdConnectProviderRequest
        ),
        89 => call!(
            body,
            iam::IamService,
            add_client_id_to_open_id_connect_provider,
            AddClientIdToOpenIdConnectProviderRequest
        ),
        90 => call!(
            body,
            iam::IamService,
            remove_client_id_from_open_id_connect_provider,
            RemoveClientIdFromOpenIdConnectProviderRequest
        ),
        91 => call!(
            body,
            iam::IamService,
            update_open_id_connect_provider_thumbprint,
            UpdateOpenIdConnectProviderThumbprintRequest
        ),
        92 => call!(
            body,
            iam::IamService,
            tag_open_id_connect_provider,
            TagOpenIdConnectProviderRequest
        ),
        93 => call!(
            body,
            iam::IamService,
            untag_open_id_connect_provider,
            UntagOpenIdConnectProviderRequest
        ),
        94 => call!(body, audit::AuditService, list_events, ListEventsRequest),
        95 => call!(body, audit::AuditService, watch_events, WatchEventsRequest),
        96 => call!(body, audit::AuditService, verify_chain, VerifyChainRequest),
        97 => call!(
            body,
            audit::AuditService,
            list_rotations,
            ListRotationsRequest
        ),
        98 => call!(
            body,
            keys::KeysService,
            list_signing_keys,
            ListSigningKeysRequest
        ),
        99 => call!(
            body,
            keys::KeysService,
            rotate_signing_key,
            RotateSigningKeyRequest
        ),
        _ => {}
    }
});
