"""A service in Python: log in with an access key, assume a role, verify the token offline.

The gRPC client is generated from Stint's `proto/` with the standard tools (`generate`),
nothing hand-written: the service, RPC, message and field names are Stint's public contract.

    python stint_example.py generate                      # once: writes ./gen from ../../proto
    STINT_ENDPOINT=127.0.0.1:7420 \
    STINT_ACCESS_KEY_ID=AKIA... STINT_SECRET_ACCESS_KEY=... \
    STINT_ROLE_ARN=arn:stint:iam::000000000000:role/reports-reader \
    python stint_example.py run

`run` prints one JSON line: who the role session is, and the verified claims.
"""

import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
GEN = HERE / "gen"
PROTO = HERE.parent.parent / "proto"


def generate() -> None:
    """Generates the Python messages and stubs for every stint.v1 proto."""
    from grpc_tools import protoc
    import grpc_tools

    GEN.mkdir(exist_ok=True)
    includes = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "stint" / "v1").glob("*.proto"))
    code = protoc.main(
        ["protoc", f"-I{PROTO}", f"-I{includes}", f"--python_out={GEN}", f"--grpc_python_out={GEN}"]
        + protos
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")


def run() -> None:
    sys.path.insert(0, str(GEN))
    import grpc
    import jwt
    from stint.v1 import sts_pb2, sts_pb2_grpc, tokens_pb2, tokens_pb2_grpc

    endpoint = os.environ.get("STINT_ENDPOINT", "127.0.0.1:7420").removeprefix("http://")
    channel = grpc.insecure_channel(endpoint)
    sts = sts_pb2_grpc.StsStub(channel)

    # Long-term access key -> a session (GetSessionToken takes no bearer token).
    login = sts.GetSessionToken(
        sts_pb2.GetSessionTokenRequest(
            access_key=sts_pb2.AccessKeyCredential(
                access_key_id=os.environ["STINT_ACCESS_KEY_ID"],
                secret_access_key=os.environ["STINT_SECRET_ACCESS_KEY"],
            ),
            duration_seconds=900,
        )
    )
    session = [("authorization", f"Bearer {login.credentials.session_token}")]

    # The session assumes the role; the role's trust policy decides.
    assumed = sts.AssumeRole(
        sts_pb2.AssumeRoleRequest(
            role_arn=os.environ["STINT_ROLE_ARN"], role_session_name="python-example"
        ),
        metadata=session,
    )
    token = assumed.credentials.session_token
    role_session = [("authorization", f"Bearer {token}")]
    identity = sts.GetCallerIdentity(sts_pb2.GetCallerIdentityRequest(), metadata=role_session)

    # Offline verification: the public keys from Tokens.GetJwks (the same JWK Set that
    # GET /.well-known/jwks.json serves), the token's kid, EdDSA only.
    jwks = json.loads(
        tokens_pb2_grpc.TokensStub(channel).GetJwks(tokens_pb2.GetJwksRequest()).jwks_json
    )
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        token,
        key=jwt.PyJWK(key).key,
        algorithms=["EdDSA"],
        audience=os.environ.get("STINT_AUDIENCE", "stint"),
        issuer=os.environ.get("STINT_ISSUER") or None,
        options={"require": ["exp", "iat", "sub", "jti"]},
    )
    print(json.dumps({"arn": identity.arn, "claims": claims}))


if __name__ == "__main__":
    {"generate": generate, "run": run}[sys.argv[1] if len(sys.argv) > 1 else "run"]()
