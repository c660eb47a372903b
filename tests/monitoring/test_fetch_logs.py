"""`make fetch-logs`: the prediction log and actuals, copied from where production ships them
with `dvc get-url` (s3://, gs://, azure://, https:// or a folder). Run for real against a
folder URL: the same DVC code path, without a cloud account."""

import os
import subprocess
from pathlib import Path

from gitml.config import PROJ_ROOT

LOG_TREE = {
    "2024-10-01/gitml-serving-7d9f-abcde.jsonl": b'{"ts": "2024-10-01T08:00:00.000+00:00"}\n',
    "2024-10-02/gitml-serving-7d9f-fghij.jsonl": b'{"ts": "2024-10-02T09:30:00.000+00:00"}\n',
}
ACTUALS_TREE = {"2024-10-01/actuals.jsonl": b'{"request_id": "r1", "row": 0, "actual": 3}\n'}


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PREDICTION_LOGS_URL", "ACTUALS_URL"}}
    env["PATH"] = f"{PROJ_ROOT / '.venv' / 'bin'}:{env['PATH']}"
    return subprocess.run(
        ["make", "-s", "fetch-logs", *args],
        cwd=PROJ_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_copies_log_and_actuals_byte_for_byte(tmp_path: Path) -> None:
    logs_url = tree(tmp_path / "bucket" / "predictions", LOG_TREE)
    actuals_url = tree(tmp_path / "bucket" / "actuals", ACTUALS_TREE)
    logs, actuals = tmp_path / "build" / "predictions", tmp_path / "build" / "actuals"
    tree(logs, {"2024-09-30/stale.jsonl": b"from an earlier fetch\n"})
    result = make(
        f"PREDICTION_LOGS_URL={logs_url}",
        f"ACTUALS_URL={actuals_url}",
        f"PREDICTION_LOGS={logs}",
        f"ACTUALS={actuals}",
    )
    assert result.returncode == 0, result.stderr
    assert contents(logs) == LOG_TREE  # identical bytes, and the earlier copy is gone
    assert contents(actuals) == ACTUALS_TREE
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["actuals", "predictions"]


def test_without_actuals_url_only_the_log_is_fetched(tmp_path: Path) -> None:
    logs_url = tree(tmp_path / "bucket", LOG_TREE)
    logs, actuals = tmp_path / "out" / "predictions", tmp_path / "out" / "actuals"
    result = make(
        f"PREDICTION_LOGS_URL={logs_url}", f"PREDICTION_LOGS={logs}", f"ACTUALS={actuals}"
    )
    assert result.returncode == 0, result.stderr
    assert contents(logs) == LOG_TREE and not actuals.exists()


def test_unset_url_is_a_notice_not_a_failure(tmp_path: Path) -> None:
    logs, out = tmp_path / "predictions", tmp_path / "github-output"
    result = make(f"PREDICTION_LOGS={logs}", f"GITHUB_OUTPUT={out}")
    assert result.returncode == 0, result.stderr
    assert "::notice" in result.stdout and "PREDICTION_LOGS_URL" in result.stdout
    assert out.read_text() == "configured=false\n"
    assert not logs.exists()


def test_env_in_the_url_names_the_environment(tmp_path: Path) -> None:
    tree(tmp_path / "bucket" / "staging", LOG_TREE)
    logs, out = tmp_path / "out" / "predictions", tmp_path / "github-output"
    result = make(f"PREDICTION_LOGS_URL={tmp_path / 'bucket' / '{env}'}", "ENV=staging",
                  f"PREDICTION_LOGS={logs}", f"GITHUB_OUTPUT={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert contents(logs) == LOG_TREE
    assert out.read_text() == "configured=true\n"


def test_a_failed_fetch_keeps_the_previous_copy(tmp_path: Path) -> None:
    logs = tree(tmp_path / "predictions", LOG_TREE)
    result = make(f"PREDICTION_LOGS_URL={tmp_path / 'no-such-bucket'}", f"PREDICTION_LOGS={logs}")
    assert result.returncode != 0
    assert "no-such-bucket" in result.stderr
    assert contents(logs) == LOG_TREE
