"""Rules the GitHub workflows must keep. GitHub cannot be reached from here, so they are checked
statically: structure, pins, permissions, fork safety, and the linters."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.config import PROJ_ROOT, model_name

WORKFLOWS = sorted((PROJ_ROOT / ".github" / "workflows").glob("*.yml"))
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (PROJ_ROOT / "Makefile").read_text(), re.M))


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as True
    return dict(workflow)


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def by_name(name: str) -> dict[str, Any]:
    return load(PROJ_ROOT / ".github" / "workflows" / name)


def make_dry_run(*args: str) -> str:
    """What `make -n` would run (the Makefile's variables as make reads them)."""
    done = subprocess.run(["make", "-n", *args], cwd=PROJ_ROOT, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {
        "pr.yml",
        "pr-comment.yml",
        "main.yml",
        "release.yml",
        "monitor.yml",
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_and_time_limits(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {}, "grant permissions per job, none at the top"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"job {name} must declare its permissions"
        assert "timeout-minutes" in job, f"job {name} needs timeout-minutes"
        assert "write-all" not in str(job["permissions"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_pinned_by_sha_with_version_comment(path: Path) -> None:
    uses = re.findall(r"uses:\s*(\S+)(.*)", path.read_text())
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), (
            f"{action} is not SHA-pinned"
        )
        assert re.search(r"# v\d", comment), f"{action} needs a `# vX.Y.Z` comment"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_are_thin_and_call_make(path: Path) -> None:
    for step in steps(load(path)):
        if "run" in step:
            command = step["run"].strip()
            assert re.fullmatch(r"make( [a-z0-9-]+)+", command), f"step runs logic: {command!r}"
            assert set(command.split()[1:]) <= MAKE_TARGETS, f"unknown target in {command!r}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkout_never_persists_credentials(path: Path) -> None:
    for step in steps(load(path)):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_no_pull_request_target_anywhere() -> None:
    for path in WORKFLOWS:
        assert "pull_request_target" not in load(path)["on"]


def test_pr_training_never_gives_forks_a_gpu_or_a_secret() -> None:
    pr = by_name("pr.yml")
    assert set(pr["on"]) == {"pull_request"}
    jobs = pr["jobs"]
    guard = jobs["pick-runner"]["if"]
    assert "head.repo.full_name == github.repository" in guard and "safe-to-train" in guard
    pick_env = jobs["pick-runner"]["steps"][-1]["env"]
    assert (
        pick_env["IS_FORK"]
        == "${{ github.event.pull_request.head.repo.full_name != github.repository }}"
    )
    assert jobs["train"]["runs-on"] == "${{ fromJSON(needs.pick-runner.outputs.runs-on) }}"
    assert jobs["launch-runner"]["if"] == "needs.pick-runner.outputs.kind == 'cloud'"
    for job in jobs.values():  # PR jobs only read; the comment comes from pr-comment.yml
        assert set(job["permissions"].values()) <= {"read"}


def test_pr_training_uploads_the_report_with_full_history() -> None:
    train = by_name("pr.yml")["jobs"]["train"]
    checkout = train["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0
    upload = train["steps"][-1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["name"] == "pr-report" and upload["with"]["path"] == "reports/pr/"


def test_comment_workflow_treats_the_artifact_as_data() -> None:
    comment = by_name("pr-comment.yml")
    assert set(comment["on"]) == {"workflow_run"}
    assert comment["on"]["workflow_run"]["workflows"] == ["pr"]
    job = comment["jobs"]["comment"]
    assert job["permissions"]["pull-requests"] == "write"
    for step in job["steps"]:
        if step.get("uses", "").startswith("actions/checkout@"):
            assert "ref" not in step["with"] and "repository" not in step["with"]
        if "run" in step:
            assert step["run"].strip() in {"make install-cml", "make comment"}
    download = next(s for s in job["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    post = job["steps"][-1]["env"]
    assert post["RUN_HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    assert post["CML_PUBLISH"] == "${{ vars.CML_PUBLISH }}"


def test_runner_labels_are_declared_for_actionlint() -> None:
    config = yaml.safe_load((PROJ_ROOT / ".github" / "actionlint.yaml").read_text())
    assert {"gpu", "cml-gpu"} <= set(config["self-hosted-runner"]["labels"])


@pytest.mark.parametrize(
    "command",
    [
        ["actionlint"],
        ["zizmor", "--offline", "--persona", "pedantic", ".github/workflows"],
        ["zizmor", "--offline", "--persona", "auditor", ".github/workflows"],
    ],
    ids=["actionlint", "zizmor-pedantic", "zizmor-auditor"],
)
def test_linters_report_nothing(command: list[str]) -> None:
    tool = Path(sys.executable).parent / command[0]  # the environment's, whatever PATH says
    result = subprocess.run([str(tool), *command[1:]], cwd=PROJ_ROOT, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_release_promotes_one_digest_through_gated_stages() -> None:
    release = by_name("release.yml")
    # It ships only what main tested: it starts when main's checks and pipeline succeed.
    assert release["on"]["workflow_run"] == {
        "workflows": ["main"], "types": ["completed"], "branches": ["main"]
    }  # fmt: skip
    jobs = release["jobs"]
    assert "workflow_run.conclusion == 'success'" in jobs["build"]["if"]
    assert "workflow_run.event == 'push'" in jobs["build"]["if"]
    push = next(s for s in jobs["build"]["steps"] if "build-push-action" in s.get("uses", ""))
    assert push["with"]["provenance"] == "mode=max" and push["with"]["sbom"] is True
    assert jobs["staging"]["environment"] == "staging"
    assert jobs["production"]["environment"] == "production"
    assert set(jobs["production"]["needs"]) == {"build", "staging"}  # staging's checks gate it
    refs = [s["env"]["IMAGE_REF"] for j in ("staging", "production") for s in jobs[j]["steps"]
            if "IMAGE_REF" in s.get("env", {})]  # fmt: skip
    assert set(refs) == {"${{ needs.build.outputs.image }}@${{ needs.build.outputs.digest }}"}
    # a stage tag of any name starts it; release-from-tag checks the name (dvc.yaml's model)
    assert release["on"]["push"]["tags"] == ["*#staging#*", "*#production#*"]
    from_tag = next(s for s in jobs["from-tag"]["steps"] if s.get("id") == "tag")
    assert from_tag["run"] == "make release-from-tag"
    assert f"--name {model_name()} " in make_dry_run("release-from-tag", "TAG=x")


@pytest.mark.parametrize("job", ["staging", "production", "tag-deploy"])
def test_each_deploy_is_checked_before_its_pass_is_recorded(job: str) -> None:
    """Blue/green inside `make k8s-deploy`; then the environment's URL; a failure there returns
    to what served before (k8s-deploy's outputs), once; the pass is recorded last."""
    steps_ = by_name("release.yml")["jobs"][job]["steps"]
    runs = [s["run"] for s in steps_ if "run" in s]
    assert runs == ["make deploy-preflight golden kubeconfig", "make k8s-deploy", "make smoke",
                    "make k8s-rollback", "make stage-passed"]  # fmt: skip
    deploy = next(s for s in steps_ if s.get("run") == "make k8s-deploy")
    rollback = next(s for s in steps_ if s.get("run") == "make k8s-rollback")
    assert deploy["id"] == "deploy"
    assert rollback["if"] == "failure() && steps.deploy.outcome == 'success'"
    for name in ("image", "version"):
        value = f"${{{{ steps.deploy.outputs.previous-{name} }}}}"
        assert rollback["env"][f"PREVIOUS_{name.upper()}"] == value


def test_deploys_queue_per_environment_and_nothing_serialises_the_whole_release() -> None:
    release = by_name("release.yml")
    assert "concurrency" not in release  # a pending approval must not hold back later merges
    jobs = release["jobs"]
    assert jobs["staging"]["concurrency"]["group"] == "deploy-staging"
    assert jobs["production"]["concurrency"]["group"] == "deploy-production"
    assert (
        jobs["tag-deploy"]["concurrency"]["group"] == "deploy-${{ needs.from-tag.outputs.stage }}"
    )
    assert "head_sha" in jobs["build"]["concurrency"]["group"]  # per commit: never lost


def test_tags_are_pushed_with_the_job_token_so_no_deploy_runs_twice() -> None:
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    assert "GTO_TOKEN" not in text
    jobs = by_name("release.yml")["jobs"]
    for name, job in jobs.items():
        pushes = [s for s in job["steps"] if s.get("env", {}).get("PUSH") == "true"]
        assert all(s["env"]["GITHUB_TOKEN"] == "${{ github.token }}" for s in pushes), name
        assert (job["permissions"].get("contents") == "write") == bool(pushes), name


def test_setup_uv_installs_the_makefiles_uv() -> None:
    version = re.search(r"^UV_VERSION := (\S+)", (PROJ_ROOT / "Makefile").read_text(), re.M)
    assert version
    for path in WORKFLOWS:
        for step in steps(load(path)):
            if step.get("uses", "").startswith("astral-sh/setup-uv@"):
                assert step["with"]["version"] == version[1], path.name


def test_training_never_runs_inside_a_cancelled_run() -> None:
    condition = by_name("pr.yml")["jobs"]["train"]["if"]
    assert "always()" not in condition and "!cancelled()" in condition
    assert "needs.launch-runner.result == 'skipped'" in condition


GITHUB_HOSTED = {"ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04"}


def test_monitor_runs_daily_and_on_demand_per_environment() -> None:
    monitor = by_name("monitor.yml")
    assert set(monitor["on"]) == {"schedule", "workflow_dispatch"}
    [schedule] = monitor["on"]["schedule"]
    minute, hour, *every = schedule["cron"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"], "once a day"
    env_input = monitor["on"]["workflow_dispatch"]["inputs"]["env"]
    assert env_input["type"] == "choice" and set(env_input["options"]) == {"production", "staging"}
    # A scheduled run has no inputs: it watches production.
    assert monitor["env"]["ENV"] == "${{ inputs.env || 'production' }}"
    assert monitor["concurrency"] == {"group": "monitor", "cancel-in-progress": False}


def test_monitor_job_is_github_hosted_and_reads_only() -> None:
    monitor = by_name("monitor.yml")
    job = monitor["jobs"]["monitor"]
    assert job["runs-on"] in GITHUB_HOSTED, "the monitor never runs on a self-hosted runner"
    assert "self-hosted" not in str(job["runs-on"])
    assert job["permissions"] == {"contents": "read"}
    assert "environment" not in job  # production's reviewers must not gate a daily read
    runs = [step for step in job["steps"] if "run" in step]
    assert [step["run"] for step in runs] == ["make fetch-logs", "make monitor"]
    fetch, judge = runs
    assert fetch["env"]["PREDICTION_LOGS_URL"] == "${{ vars.PREDICTION_LOGS_URL }}"
    assert fetch["env"]["ACTUALS_URL"] == "${{ vars.ACTUALS_URL }}"
    for step in runs:  # read-only credentials, as pr.yml and release.yml pass them
        assert step["env"]["AWS_ACCESS_KEY_ID"] == "${{ secrets.DVC_READ_AWS_ACCESS_KEY_ID }}"
    # exit 1 is an alarm: the job goes on to upload the reports, the notify job decides
    assert judge["continue-on-error"] is True
    # unconfigured (no PREDICTION_LOGS_URL), the fetch step says so and the rest stands down
    assert judge["if"] == "steps.fetch.outputs.configured == 'true'"
    assert job["outputs"]["configured"] == "${{ steps.fetch.outputs.configured }}"
    # make fetch-logs writes where make monitor reads (both from the workflow's env)
    assert {"PREDICTION_LOGS", "ACTUALS"} <= set(monitor["env"])
    upload = job["steps"][-1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "${{ !cancelled() && steps.fetch.outputs.configured == 'true' }}"
    assert upload["with"]["name"] == "monitor-report"
    assert upload["with"]["path"].rstrip("/") == "reports/monitor"


def test_notify_job_may_only_write_issues_and_start_the_retrain_workflow() -> None:
    jobs = by_name("monitor.yml")["jobs"]
    notify = jobs["notify"]
    assert notify["needs"] == "monitor"
    assert notify["runs-on"] in GITHUB_HOSTED
    writes = {scope for scope, level in notify["permissions"].items() if level == "write"}
    assert writes == {"issues", "actions"}
    trigger = next(s for s in notify["steps"] if s.get("run") == "make retrain-trigger")
    assert trigger["if"] == "vars.RETRAIN_ON_ALARM != 'false'"
    assert set(notify["permissions"].values()) <= {"read", "write"}
    assert "environment" not in notify and "secrets." not in str(notify)
    download = next(s for s in notify["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"]["name"] == "monitor-report"
    assert download["with"]["path"].rstrip("/") == "reports/monitor"
    issue = next(s for s in notify["steps"] if s.get("run") == "make monitor-issue")
    assert issue["run"] == "make monitor-issue"
    assert issue["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    assert "needs.monitor.outputs.configured != 'false'" in notify["if"]
    for name, job in jobs.items():  # only the notify job writes anything
        if name != "notify":
            assert set(job["permissions"].values()) <= {"read"}, name


def test_monitor_variables_are_declared_for_actionlint() -> None:
    config = yaml.safe_load((PROJ_ROOT / ".github" / "actionlint.yaml").read_text())
    assert {"PREDICTION_LOGS_URL", "ACTUALS_URL"} <= set(config["config-variables"])


def test_no_permission_is_granted_that_nothing_uses() -> None:
    for path in WORKFLOWS:
        for name, job in load(path)["jobs"].items():
            # provenance and SBOM come from build-push-action; no attestation API is called
            assert not {"id-token", "attestations"} & set(job["permissions"]), (path.name, name)


def test_every_cloud_the_readme_offers_gets_its_credentials() -> None:
    launch = by_name("pr.yml")["jobs"]["launch-runner"]["steps"][-1]["env"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_CLIENT_ID",
                 "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID",
                 "GOOGLE_APPLICATION_CREDENTIALS_DATA"):  # fmt: skip
        assert name in launch and "secrets.CML_" in launch[name], name


def test_retrain_runs_only_by_hand_or_dispatch_on_github_hosted_with_least_privilege() -> None:
    workflow = by_name("retrain.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}  # never a pull request's code
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] in GITHUB_HOSTED
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    steps = {step.get("run"): step for step in job["steps"] if "run" in step}
    retrain = steps["make retrain-pr"]
    assert retrain["if"] == "steps.fetch.outputs.configured == 'true'"
    assert retrain["env"]["RETRAIN_TOKEN"] == "${{ secrets.RETRAIN_TOKEN }}"
    assert "DVC_WRITE" in retrain["env"]["AWS_ACCESS_KEY_ID"]
    for run in ("make gate report", "make install-cml", "make comment"):
        assert steps[run]["if"] == "steps.retrain.outputs.pr != ''"
    assert steps["make gate report"]["env"]["GATE_ADVISORY"] == "true"
    assert "DVC_READ" in steps["make gate report"]["env"]["AWS_ACCESS_KEY_ID"]


def test_the_release_gates_the_model_before_registering_it() -> None:
    build = by_name("release.yml")["jobs"]["build"]
    runs = [step.get("run") for step in build["steps"]]
    assert runs.index("make train-ci") < runs.index("make gate") < runs.index("make register")
    register = build["steps"][runs.index("make register")]
    assert register["env"]["REGISTER_MESSAGE"] == "${{ steps.gate.outputs.message }}"
    gate = build["steps"][runs.index("make gate")]
    assert gate["id"] == "gate" and "GATE_OVERRIDE" not in str(gate)  # only a commit overrides


def test_the_pull_request_report_compares_with_production_advisory_only() -> None:
    train = by_name("pr.yml")["jobs"]["train"]
    step = next(s for s in train["steps"] if s.get("run") == "make gate report")
    assert step["env"]["GATE_ADVISORY"] == "true"


def test_mutation_testing_runs_whole_every_week_and_reads_only() -> None:
    mutation = by_name("mutation.yml")
    assert set(mutation["on"]) == {"schedule", "workflow_dispatch"}
    [schedule] = mutation["on"]["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert minute.isdigit() and hour.isdigit() and (day, month) == ("*", "*")
    assert weekday.isdigit(), "once a week"
    [job] = mutation["jobs"].values()
    assert job["runs-on"] in GITHUB_HOSTED and job["permissions"] == {"contents": "read"}
    assert [step["run"] for step in job["steps"] if "run" in step] == ["make mutation"]
    mutation_target = re.search(
        r"^mutation:.*\n((?:\t.*\n)+)", (PROJ_ROOT / "Makefile").read_text(), re.M
    )
    assert mutation_target and "python -m benchmarks.mutation\n" in mutation_target[1]  # whole


# --- a team's own DVC remote: credentials wherever DVC reaches it -------------------------------

DVC_CREDENTIALS = {  # the variables DVC (or `make cloud-credentials`) reads -> the secret's name
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS_DATA": "GCP_CREDENTIALS",
    "AZURE_STORAGE_CONNECTION_STRING": "AZURE_CONNECTION_STRING",
}
# the make targets that use the DVC remote themselves; those that push it
REMOTE_TARGETS, PUSHING_TARGETS = {"data", "publish-outputs", "fetch-logs"}, {"publish-outputs",
                                                                              "retrain-pr"}  # fmt: skip


def make_prerequisites() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for target, deps in re.findall(
        r"^([a-z][a-z0-9-]*):([^=\n]*)$", (PROJ_ROOT / "Makefile").read_text(), re.M
    ):
        found.setdefault(target, set()).update(
            d for d in deps.replace("|", " ").split() if "$" not in d
        )
    return found


def reaches_remote(target: str, prerequisites: dict[str, set[str]]) -> bool:
    seen, todo = set(), [target]
    while todo:
        current = todo.pop()
        if current in REMOTE_TARGETS:
            return True
        if current not in seen:
            seen.add(current)
            todo += prerequisites.get(current, set())
    return False


def test_the_make_graph_is_read_as_make_reads_it() -> None:
    prerequisites = make_prerequisites()
    assert reaches_remote("test", prerequisites) and reaches_remote("image-context", prerequisites)
    assert not reaches_remote("register", prerequisites) and not reaches_remote(
        "comment", prerequisites
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_step_that_reaches_the_dvc_remote_gets_its_credentials_read_only_unless_it_pushes(
    path: Path,
) -> None:
    prerequisites = make_prerequisites()
    for name, job in load(path)["jobs"].items():
        for step in job.get("steps", []):
            targets = step.get("run", "").split()[1:]
            if not any(reaches_remote(t, prerequisites) for t in targets):
                continue
            kind = "WRITE" if PUSHING_TARGETS & set(targets) else "READ"
            env = step.get("env", {})
            for variable, secret in DVC_CREDENTIALS.items():
                assert env.get(variable) == f"${{{{ secrets.DVC_{kind}_{secret} }}}}", (
                    f"{path.name} job {name}: `{step['run']}` needs {variable} from "
                    f"secrets.DVC_{kind}_{secret}"
                )


def test_no_unsound_pseudo_ternaries() -> None:
    """`a && b || c` yields c whenever b is empty (a variable unset): production's smoke check
    reached staging that way. zizmor 1.32's unsound-ternary flags a literal falsy b only, so
    every `&& X ||` is refused here unless X is a non-empty string literal."""
    for path in WORKFLOWS:
        for expression in re.findall(r"\$\{\{(.*?)\}\}", path.read_text(), re.S):
            for middle in re.findall(r"&&\s*(.+?)\s*\|\|", expression, re.S):
                assert re.fullmatch(r"'[^']+'", middle), f"{path.name}: {expression.strip()}"


def test_the_cml_launcher_runs_where_cml_can_launch() -> None:
    # `cml runner launch` fails on ubuntu-latest (24.04): iterative/cml#1479
    assert by_name("pr.yml")["jobs"]["launch-runner"]["runs-on"] == "ubuntu-22.04"


def test_gpu_training_keeps_the_gpu_extra_in_every_make_of_its_job() -> None:
    train = by_name("pr.yml")["jobs"]["train"]
    assert train["env"]["UV_SYNC_ARGS"] == "${{ needs.pick-runner.outputs.sync-args }}"
    assert all("UV_SYNC_ARGS" not in step.get("env", {}) for step in train["steps"])
    assert "needs.pick-runner.outputs.train == 'true'" in train["if"]


def test_a_forks_checks_run_lint_and_audit_when_the_data_cannot_be_pulled() -> None:
    checks = by_name("pr.yml")["jobs"]["checks"]["steps"]
    runs = {s.get("run"): s.get("if") for s in checks if "run" in s}
    assert runs == {
        "make data-access": None,
        "make test": "steps.access.outputs.readable == 'true'",
        "make lint": "steps.access.outputs.readable != 'true'",
        "make audit": None,
    }


def test_retraining_mints_an_app_token_per_run_and_prefers_it() -> None:
    steps_ = by_name("retrain.yml")["jobs"]["retrain"]["steps"]
    app = next(s for s in steps_ if s.get("id") == "app")
    assert app["uses"].startswith("actions/create-github-app-token@")
    assert app["with"]["private-key"] == "${{ secrets.RETRAIN_APP_PRIVATE_KEY }}"
    assert {app["with"]["permission-contents"], app["with"]["permission-pull-requests"]} == {
        "write"
    }
    env = next(s for s in steps_ if s.get("id") == "retrain")["env"]
    assert env["RETRAIN_APP_TOKEN"] == "${{ steps.app.outputs.token }}"
    assert env["RETRAIN_TOKEN"] == "${{ secrets.RETRAIN_TOKEN }}"


@pytest.mark.parametrize("job", ["production", "tag-deploy"])
def test_production_preflight_can_compare_with_staging_and_read_the_environment(job: str) -> None:
    job_ = by_name("release.yml")["jobs"][job]
    assert job_["permissions"]["actions"] == "read"
    preflight = next(s for s in job_["steps"] if "deploy-preflight" in s.get("run", ""))
    assert preflight["env"]["STAGING_URL"] == "${{ vars.STAGING_URL }}"
    assert preflight["env"]["GITHUB_TOKEN"] == "${{ github.token }}"


def test_a_gcs_key_from_a_secret_becomes_the_owner_only_file_google_auth_reads(
    tmp_path: Path,
) -> None:
    key = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nx\\n"}'
    env = {"PATH": "/usr/bin:/bin", "RUNNER_TEMP": str(tmp_path), "HOME": str(tmp_path),
           "GOOGLE_APPLICATION_CREDENTIALS_DATA": key}  # fmt: skip
    command = ["make", "-s", "cloud-credentials", "print-gcs"]
    makefile = tmp_path / "print.mk"  # the variable as the Makefile exports it to every recipe
    makefile.write_text('print-gcs:\n\t@echo "$${GOOGLE_APPLICATION_CREDENTIALS:-}"\n')
    done = subprocess.run([*command, "-f", "Makefile", "-f", str(makefile)], cwd=PROJ_ROOT,
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = tmp_path / "dvc-gcp-credentials.json"
    assert done.stdout.strip() == str(written)
    assert written.read_text() == key and (written.stat().st_mode & 0o777) == 0o600
    without = subprocess.run(["make", "-s", "cloud-credentials", "-f", "Makefile", "-f",
                              str(makefile), "print-gcs"], cwd=PROJ_ROOT, capture_output=True,
                             text=True, env={**env, "GOOGLE_APPLICATION_CREDENTIALS_DATA": ""},
                             check=False)  # fmt: skip
    assert without.returncode == 0 and without.stdout.strip() == ""  # nothing written, nothing set
