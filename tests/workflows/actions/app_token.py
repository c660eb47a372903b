"""The stand-in create-github-app-token's work, as the real action does it: a JWT (RS256) signed
with the App's private key (by openssl), the repository's installation, then an installation
token with the permissions asked for (all the App has when none are named)."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(client_id: str, key: str) -> str:
    now = int(time.time())
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"iat": now - 30, "exp": now + 540, "iss": client_id}).encode())
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as pem:
        pem.write(key.replace("\\n", "\n"))
        pem.flush()
        signed = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", pem.name],
            input=f"{head}.{body}".encode(),
            capture_output=True,
            check=True,
        )
    return f"{head}.{body}.{b64url(signed.stdout)}"


def call(method: str, url: str, token: str, payload: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        sys.exit(f"::error::{method} {url} failed ({err.code}): {err.read().decode()[:300]}")


client_id = os.environ["CLIENT_ID"].strip()
if not client_id:
    sys.exit("::error::[@octokit/auth-app] appId or clientId option is required")
api = os.environ["API_URL"].rstrip("/")
signed = jwt(client_id, os.environ["PRIVATE_KEY"])
installation = call("GET", f"{api}/repos/{os.environ['GITHUB_REPOSITORY']}/installation", signed)
wanted = {k: v for k, v in json.loads(os.environ["PERMISSIONS"]).items() if v}
minted = call(
    "POST",
    f"{api}/app/installations/{installation['id']}/access_tokens",
    signed,
    {"permissions": wanted} if wanted else {},
)
print(f"::add-mask::{minted['token']}")
with open(os.environ["GITHUB_OUTPUT"], "a") as out:
    out.write(
        f"token={minted['token']}\ninstallation-id={installation['id']}\n"
        f"app-slug={installation['app_slug']}\n"
    )
print(f"installation token for {installation['app_slug']}, expires {minted['expires_at']}")
