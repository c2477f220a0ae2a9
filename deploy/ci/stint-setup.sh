#!/bin/sh
# The Stint side of the CI recipe, run once by a Stint administrator (`stint login`):
# registers GitHub Actions' issuer (its keys are fetched from
# https://token.actions.githubusercontent.com/.well-known/openid-configuration) and creates
# the role `deploy`, trusted only by jobs of ORG/REPO on branch main with tokens for
# audience `stint`. Replace ORG/REPO in trust-policy.json (or set REPO=org/repo here).
set -eu
here=$(dirname "$0")
repo=${REPO:-ORG/REPO}

stint iam CreateOpenIDConnectProvider \
  '{"url":"https://token.actions.githubusercontent.com","client_id_list":["stint"]}'

trust=$(sed "s|ORG/REPO|$repo|g" "$here/trust-policy.json")
stint iam CreateRole "$(jq -n --arg doc "$trust" \
  '{role_name: "deploy", assume_role_policy_document: $doc}')"
