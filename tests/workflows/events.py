"""Event payloads shaped like GitHub's (the fields the workflows and act read)."""

from typing import Any


def repository(full_name: str) -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {"full_name": full_name, "name": name, "owner": {"login": owner},
            "default_branch": "main"}  # fmt: skip


def pull_request(
    action: str, number: int, base_repo: str, head_repo: str, head_sha: str, base_sha: str,
    labels: list[str] = (), label: str | None = None,  # type: ignore[assignment]
) -> dict[str, Any]:  # fmt: skip
    payload: dict[str, Any] = {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": "experiment", "sha": head_sha, "repo": repository(head_repo)},
            "base": {"ref": "main", "sha": base_sha, "repo": repository(base_repo)},
            "labels": [{"name": name} for name in labels],
        },
        "repository": repository(base_repo),
    }
    if label:
        payload["label"] = {"name": label}
    return payload


def workflow_run(
    run_id: int, conclusion: str, head_sha: str, head_repo: str, base_repo: str, number: int
) -> dict[str, Any]:
    return {
        "action": "completed",
        "workflow_run": {
            "id": run_id,
            "name": "pr",
            "event": "pull_request",
            "conclusion": conclusion,
            "head_sha": head_sha,
            "head_branch": "experiment",
            "head_repository": repository(head_repo),
            "pull_requests": [{"number": number}] if head_repo == base_repo else [],
        },
        "repository": repository(base_repo),
    }


def push(ref: str, before: str, after: str, base_repo: str) -> dict[str, Any]:
    return {"ref": ref, "before": before, "after": after, "repository": repository(base_repo),
            "head_commit": {"id": after}, "pusher": {"name": "dana"}}  # fmt: skip


def schedule(base_repo: str) -> dict[str, Any]:
    return {"schedule": "17 5 * * *", "repository": repository(base_repo)}


def workflow_dispatch(base_repo: str, inputs: dict[str, str]) -> dict[str, Any]:
    return {"inputs": inputs, "ref": "refs/heads/main", "repository": repository(base_repo),
            "sender": {"login": "octocat"}}  # fmt: skip
