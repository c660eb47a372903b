"""The artifact store of the stand-in upload/download actions: $GITML_ARTIFACTS/<run id>/<name>.

A download names the run it reads (`run-id`, as pr-comment passes the triggering run's id) or
reads the current run's; a missing artifact fails the step, as the real action does."""

import os
import shutil
import sys
from pathlib import Path

store = Path(os.environ["GITML_ARTIFACTS"])
name, path = os.environ["ARTIFACT_NAME"] or "artifact", Path(os.environ["ARTIFACT_PATH"])
run_id = os.environ.get("ARTIFACT_RUN_ID") or os.environ["GITHUB_RUN_ID"]
where = store / run_id / name
if sys.argv[1] == "upload":
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    if not files:
        level = os.environ.get("IF_NO_FILES_FOUND", "warn")
        print(
            f"::{'error' if level == 'error' else 'warning'}::No files were found with the provided path: {path}"
        )
        sys.exit(1 if level == "error" else 0)
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(path, where)
    print(f"uploaded {len(files)} files as {name!r} (run {run_id})")
else:
    if not where.is_dir():
        print(f"::error::Unable to download artifact(s): Artifact not found for name: {name}")
        sys.exit(1)
    shutil.copytree(where, path, dirs_exist_ok=True)
    print(f"downloaded {name!r} of run {run_id} to {path}")
