#!/bin/sh
# The Stint side of the Kubernetes workload-identity recipe, run by a Stint administrator
# (logged in with `stint login`) with kubectl access to the cluster:
#   1. registers the cluster's service-account issuer as an OpenID Connect provider, with
#      its keys inline (`kubectl get --raw /openid/v1/jwks`), so Stint never has to reach
#      the issuer (for EKS/GKE issuers that Stint can reach over HTTPS, drop jwks_json);
#   2. creates the role `app`, trusted only by service account stint-demo/app with tokens
#      for audience `stint` (trust-policy.json, ISSUER_HOST_PATH filled in);
#   3. gives the role its permissions (edit permissions.json for your app).
# Then: kubectl apply -f serviceaccount.yaml -f deployment.yaml
set -eu
here=$(dirname "$0")
issuer=$(kubectl get --raw /.well-known/openid-configuration | jq -r .issuer)
issuer_host_path=${issuer#https://}
jwks=$(kubectl get --raw /openid/v1/jwks)

stint iam CreateOpenIDConnectProvider "$(jq -n --arg url "$issuer" --arg jwks "$jwks" \
  '{url: $url, client_id_list: ["stint"], jwks_json: $jwks}')"

trust=$(sed "s|ISSUER_HOST_PATH|$issuer_host_path|g" "$here/trust-policy.json")
stint iam CreateRole "$(jq -n --arg doc "$trust" \
  '{role_name: "app", assume_role_policy_document: $doc}')"

stint iam PutRolePolicy "$(jq -n --rawfile doc "$here/permissions.json" \
  '{role_name: "app", policy_name: "app", policy_document: $doc}')"
