"""The documentation's pictures, made from real runs (`make docs-pictures`).

In a scratch clone of the working tree (PICTURES_DIR, default build/docs-pictures; this
checkout is never touched):

 1. main's pipeline runs and its model is registered and assigned to production (GTO tags);
 2. a branch changes params.yaml as an experiment would, retrains, and writes the pull-request
    report exactly as the workflows do (`gate --advisory`, then `report --base main`); the
    report's markdown is rendered as a comment and photographed: docs/img/pr-comment.png;
 3. main's model serves local staging, the held-out production split is replayed to it as
    HTTP traffic with its actuals, and `monitor` judges the log; evidently's quality report and
    the issue body (summary.md) are photographed: docs/img/monitor-report.png,
    docs/img/monitor-summary.png.

Pictures are taken by Debian's chromium, headless (`apt-get install chromium`), and reduced
to a palette so that they stay small in git. The markdown is rendered locally with the
`markdown` package (GitHub is not reachable from CI): the text, tables and plots are CML's
comment as posted, the frame around them is only an approximation of GitHub's.
"""

import html
import os
import shutil
import subprocess
import sys
from pathlib import Path

import markdown
import yaml
from PIL import Image, ImageChops
from tests.e2e.clone import make_clone

from benchmarks.loop_demo import dvc, edit_params, gitml, sh
from gitml.config import PROJ_ROOT, model_name
from gitml.monitoring.notify import title as issue_title
from gitml.ports import free_port

IMG_DIR = PROJ_ROOT / "docs" / "img"
WIDTH = 900  # about GitHub's comment column
COLOURS = 96  # palette size of the saved PNGs: small files, text still crisp

# The experiment the pull request proposes: what a person tuning the model would try first.
EXPERIMENT = {"learning_rate": 0.05, "max_iter": 500}

CSS = """
body { font: 14px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1f2328;
       background: #fff; margin: 16px; }
.comment { border: 1px solid #d1d9e0; border-radius: 6px; max-width: 860px; }
.head { background: #f6f8fa; border-bottom: 1px solid #d1d9e0; padding: 8px 16px;
        color: #59636e; border-radius: 6px 6px 0 0; }
.head b { color: #1f2328; }
.body { padding: 4px 16px 12px; }
h2 { border-bottom: 1px solid #d1d9e0; padding-bottom: .3em; font-size: 1.5em; }
h3 { font-size: 1.25em; } h4 { font-size: 1em; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #d1d9e0; padding: 4px 10px; }
tr:nth-child(2n) { background: #f6f8fa; }
code { background: #eff1f3; border-radius: 4px; padding: .1em .3em; font-size: 85%; }
img { max-width: 100%; }
"""


class PicturesFailed(RuntimeError):
    """A step failed; the message says which."""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise PicturesFailed("no chromium on PATH: apt-get install chromium")


def as_page(markdown_file: Path, title: str, out: Path) -> Path:
    """The markdown as an HTML page beside it (its images are relative to it)."""
    body = markdown.markdown(markdown_file.read_text(), extensions=["tables", "fenced_code"])
    out.write_text(
        f"<!doctype html><meta charset=utf-8><style>{CSS}</style>"
        f"<div class=comment><div class=head>{title}</div><div class=body>{body}</div></div>"
    )
    return out


def photograph(page: Path, png: Path, height: int, wait_ms: int = 0) -> None:
    """A headless chromium screenshot of the page, cropped below its content, palettised."""
    raw = png.with_suffix(".raw.png")
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--force-device-scale-factor=1", f"--window-size={WIDTH},{height}",
               f"--screenshot={raw}", page.resolve().as_uri()]  # fmt: skip
    if wait_ms:  # evidently's report is drawn by its own script
        command.insert(-1, f"--virtual-time-budget={wait_ms}")
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=180)
    if done.returncode != 0 or not raw.exists():
        raise PicturesFailed(f"chromium failed on {page}:\n{done.stderr[-2000:]}")
    image = Image.open(raw).convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, background).getbbox()
    if box:
        image = image.crop((0, 0, image.width, min(image.height, box[3] + 16)))
    png.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    raw.unlink()
    print(f"docs-pictures: {png.relative_to(PROJ_ROOT)} ({png.stat().st_size // 1024} KB)")


def clone(work: Path) -> tuple[Path, dict[str, str]]:
    """A scratch clone with the data and a remote of its own, main's pipeline run, its model
    registered and in production."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    repo = make_clone(work / "repo")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # gto, dvc
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1",
           "GITML_STAGING_PORT": str(free_port()), "GITML_PRODUCTION_PORT": str(free_port()),
           **{f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER")
              for key, value in (("NAME", "Dana"), ("EMAIL", "dana@example.com"))}}  # fmt: skip
    env.pop("GITML_DEPLOY_DIR", None)
    shutil.copytree(PROJ_ROOT / "data", repo / "data")  # what data.dvc records (make data)
    dvc("remote", "modify", "local", "url", str(work / "remote"), cwd=repo, env=env)
    dvc("repro", cwd=repo, env=env)
    dvc("push", "--run-cache", cwd=repo, env=env)
    name = model_name(repo / "dvc.yaml")
    gitml("registry", "register", "--name", name, "--version", "v1.0.0", cwd=repo, env=env)
    gitml("registry", "assign", "--name", name, "--stage", "production", "--version", "v1.0.0",
          cwd=repo, env=env)  # fmt: skip
    return repo, env


def pull_request_picture(repo: Path, env: dict[str, str]) -> None:
    sh("git", "switch", "--quiet", "--create", "lower-learning-rate", cwd=repo, env=env)
    family = yaml.safe_load((repo / "params.yaml").read_text())["train"]["model"]
    edit_params(repo, lambda p: p["train"]["hyperparams"][family].update(EXPERIMENT))
    dvc("repro", "evaluate", cwd=repo, env=env)
    sh("git", "commit", "--quiet", "--all", "--no-verify", "--message", "A lower learning rate",
       cwd=repo, env=env)  # fmt: skip
    head = sh("git", "rev-parse", "HEAD", cwd=repo, env=env).strip()
    gitml("gate", "--name", model_name(repo / "dvc.yaml"), "--advisory", cwd=repo, env=env)
    # what pr.yml's train job sets on a fork with no GPU runner configured
    report_env = {**env, "RUNNER_KIND": "github-hosted", "PR_NUMBER": "7", "HEAD_SHA": head,
                  "RUNNER_REASON": "no GPU runner configured (repository variable "
                  "GPU_RUNNER_LABELS)"}  # fmt: skip
    gitml("report", "--base", "main", cwd=repo, env=report_env)
    report = repo / "reports" / "pr" / "report.md"
    title = "<b>github-actions</b> commented (CML) on #7, <i>A lower learning rate</i>"
    page = as_page(report, title, report.with_name("comment.html"))
    photograph(page, IMG_DIR / "pr-comment.png", height=4000)
    sh("git", "switch", "--quiet", "main", cwd=repo, env=env)
    dvc("checkout", cwd=repo, env=env)


def monitoring_pictures(repo: Path, env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{env['GITML_STAGING_PORT']}"
    try:
        gitml("deploy", "deploy", "--env", "staging", "--version", "v1.0.0", cwd=repo, env=env)
        gitml("replay", "--url", url, "--actuals", ".deploy/actuals/staging", cwd=repo, env=env)
    finally:
        gitml("deploy", "stop", "--env", "staging", cwd=repo, env=env, ok=(0, 1))
    # exit 1 is the alarm the example's held-out season raises: a result, not a failure
    gitml("monitor", "--logs", ".deploy/predictions/staging", "--actuals",
          ".deploy/actuals/staging", "--out", "reports/monitor", "--env", "staging",
          cwd=repo, env=env, ok=(0, 1))  # fmt: skip
    reports = repo / "reports" / "monitor"
    summary = reports / "summary.md"
    title = f"<b>{html.escape(issue_title('staging'))}</b> (the issue make monitor-issue keeps)"
    photograph(as_page(summary, title, reports / "summary.html"),
               IMG_DIR / "monitor-summary.png", height=2400)  # fmt: skip
    photograph(reports / "quality.html", IMG_DIR / "monitor-report.png", height=1400,
               wait_ms=15000)  # fmt: skip


def main() -> None:
    work = Path(os.environ.get("PICTURES_DIR", PROJ_ROOT / "build" / "docs-pictures")).resolve()
    try:
        repo, env = clone(work)
        pull_request_picture(repo, env)
        monitoring_pictures(repo, env)
    except (PicturesFailed, RuntimeError) as err:
        print(f"docs-pictures: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
