import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gitml.pull_requests.comment import (
    REMOVED,
    WATERMARK,
    CommentError,
    cml_command,
    confine_links,
    main,
    stale_reports,
    verify_pr,
    with_run_status,
)
from tests.fake_github import FakeGitHub

PR = {"head": {"sha": "abc123", "repo": {"full_name": "team/project"}}}
COMMENTS = "/repos/team/project/issues/42/comments?per_page=100&page=1"


def comments_page(page: int) -> str:
    return COMMENTS.removesuffix("page=1") + f"page={page}"


def test_verified_pr_number() -> None:
    assert verify_pr("42\n", PR, "abc123", "team/project") == 42


@pytest.mark.parametrize(
    ("claimed", "sha", "repo", "message"),
    [
        ("42; rm -rf /", "abc123", "team/project", "not a number"),
        ("42", "other", "team/project", "head commit"),
        ("42", "abc123", "fork/project", "does not come from"),
    ],
)
def test_forged_or_stale_claims_are_refused(
    claimed: str, sha: str, repo: str, message: str
) -> None:
    with pytest.raises(CommentError, match=message):
        verify_pr(claimed, PR, sha, repo)


def test_a_pr_without_head_is_refused() -> None:
    with pytest.raises(CommentError, match="head commit"):
        verify_pr("42", {}, "abc123", "team/project")


def test_a_long_claim_is_quoted_cut_to_20_characters() -> None:
    with pytest.raises(CommentError, match=re.escape(f"{'9' * 19 + 'x'!r} is not a number")):
        verify_pr("9" * 19 + "x" * 30, PR, "abc123", "team/project")


def test_deleted_fork_repo_is_refused() -> None:
    with pytest.raises(CommentError, match="does not come from"):
        verify_pr("42", {"head": {"sha": "abc123", "repo": None}}, "abc123", "fork/project")


@pytest.mark.parametrize(("publish", "flag"), [(True, "--publish"), (False, "--no-publish")])
def test_cml_updates_one_watermarked_comment(publish: bool, flag: str) -> None:
    command = cml_command(Path("/r/comment.md"), 7, publish, "https://github.com/team/project")
    assert command[:4] == ["cml", "comment", "update", "/r/comment.md"]
    assert "--target=pr/7" in command and f"--watermark-title={WATERMARK}" in command
    # explicit: CML would otherwise read the repository from `git config` in its directory
    assert "--repo=https://github.com/team/project" in command
    assert command[-1] == flag


def report_comment(comment_id: int) -> dict[str, object]:
    mark = f'![](https://cml.dev/watermark.png#abc123 "CML watermark {WATERMARK}")'
    return {"id": comment_id, "body": f"## Model report\n\n{mark}"}


def test_only_the_report_cml_can_see_is_kept() -> None:
    others = [{"id": i, "body": f"note {i}"} for i in range(1, 6)]
    assert stale_reports([*others, report_comment(10)]) == []
    # two reports (an earlier race): the older goes, CML updates the later one
    assert stale_reports([report_comment(3), *others, report_comment(10)]) == [3]


def test_a_report_beyond_cmls_first_page_is_replaced() -> None:
    discussion = [{"id": i, "body": f"note {i}"} for i in range(1, 31)]  # 30 comments first
    assert stale_reports([*discussion, report_comment(40)]) == [40]
    assert stale_reports([*discussion[:29], report_comment(40)]) == []  # the 30th: seen


def test_other_watermarks_are_not_ours() -> None:
    other = {"id": 5, "body": '![](https://cml.dev/watermark.png#abc "CML watermark other")'}
    assert stale_reports([other, report_comment(6), report_comment(7)]) == [6]


def test_a_failed_run_is_marked_on_the_report() -> None:
    assert with_run_status("## R\n", "success", "u") == "## R\n"
    marked = with_run_status("## R\n", "failure", "https://github.com/t/p/actions/runs/9")
    assert marked.endswith("## R\n") and "**failed**" in marked
    assert "https://github.com/t/p/actions/runs/9" in marked
    # without the run's address, the note still says where to look
    assert "(see the pr workflow run)" in with_run_status("## R\n", "cancelled", "")


# --- links CML would upload: only files inside the report folder ----------------------------


@pytest.fixture
def report_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "report"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "mae.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("token")
    (folder / "figures" / "escape.png").symlink_to(tmp_path / "secret.txt")
    return folder


@pytest.mark.parametrize(
    "markdown",
    [
        "![mae](figures/mae.png)",
        '![mae](figures/mae.png "title")',
        "![mae](<figures/mae.png>)",
        "[mae]: figures/mae.png",
        "[docs](https://dvc.org/doc) and ![plot](https://example.com/p.png)",
        "[mail](mailto:team@example.com) [up](#metrics)",
        "no link at all (figures/../x)",
    ],
)
def test_links_to_the_reports_own_files_and_the_web_are_kept(
    report_folder: Path, markdown: str
) -> None:
    assert confine_links(markdown, report_folder) == (markdown, [])


@pytest.mark.parametrize(
    ("markdown", "target"),
    [
        ("![x](../secret.txt)", "../secret.txt"),
        ("![x](figures/../../secret.txt)", "figures/../../secret.txt"),
        ("[x](/etc/passwd)", "/etc/passwd"),
        ("![x](figures/escape.png)", "figures/escape.png"),  # a symlink out of the folder
        ("![x](figures/missing.png)", "figures/missing.png"),
        # a file inside, but by a path that is not plain: only plain paths are judged
        ("![x](figures/./mae.png)", "figures/./mae.png"),
        ("![x](< ../secret.txt >)", "../secret.txt"),
        ("![x](&#46;&#46;/secret.txt)", "&#46;&#46;/secret.txt"),  # remark decodes entities
        ("![x](..%2Fsecret.txt)", "..%2Fsecret.txt"),
        ("[x](file:///etc/passwd)", "file:///etc/passwd"),
        ("[ref]: ../secret.txt", "../secret.txt"),
        ("> [ref]:\n>   /etc/passwd", "/etc/passwd"),  # a definition in a quote, next line
        ("- [ref]:\n  ~/.ssh/id_rsa", "~/.ssh/id_rsa"),
        # an escaped bracket in the text: judged generously (`b` goes too), never missed
        ("[a\\](b)](/etc/passwd)", "/etc/passwd"),
    ],
)  # fmt: skip
def test_a_link_cml_would_upload_from_outside_the_folder_is_removed(
    report_folder: Path, markdown: str, target: str
) -> None:
    confined, removed = confine_links(markdown, report_folder)
    assert removed[-1:] == [target]
    assert REMOVED in confined and target not in confined
    assert confine_links(confined, report_folder) == (confined, [])  # nothing left to remove


def test_main_posts_the_report_without_links_out_of_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_dir = report_run(tmp_path, monkeypatch, github_api, "team/project")
    (report_dir / "figures").mkdir()
    (report_dir / "figures" / "mae.png").write_bytes(b"png")
    (report_dir / "report.md").write_text("![mae](figures/mae.png)\n![key](../../../etc/passwd)\n")
    main()
    assert (report_dir / "comment.md").read_text() == (
        f"![mae](figures/mae.png)\n![key]({REMOVED})\n"
    )
    assert "comment: removed a link to '../../../etc/passwd'" in capsys.readouterr().out


def test_cli_without_cml_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"pr_number": "1", "head_sha": "x"}))
    env = {"PATH": "/usr/bin:/bin", "REPORT_DIR": str(tmp_path), "PYTHONPATH": "src"}
    result = subprocess.run(
        [sys.executable, "-m", "gitml", "comment"], env=env, capture_output=True, text=True,
        cwd=Path(__file__).parents[2], check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "make install-cml" in result.stderr


@pytest.fixture
def fake_cml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `cml` first on PATH: records its arguments and working directory (the real
    one would post to GitHub, which the tests cannot reach)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "cml-calls.jsonl"
    bin_dir.mkdir()
    script = bin_dir / "cml"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'args': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def report_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    github: FakeGitHub,
    head_repo: str,
    **env: str,
) -> Path:
    """A report artifact claiming PR 42, the workflow_run's variables, and GitHub's answer."""
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "report.md").write_text("# report\n")
    (report_dir / "meta.json").write_text(json.dumps({"pr_number": "42", "head_sha": "abc123"}))
    github.routes["/repos/team/project/pulls/42"] = (
        200, {"number": 42, "head": {"sha": "abc123", "repo": {"full_name": head_repo}}},
    )  # fmt: skip
    github.routes[COMMENTS] = (200, [])  # no report posted yet
    for name in ("GITHUB_API_URL", "GITHUB_SERVER_URL"):  # github.com, as Actions sets them
        monkeypatch.delenv(name, raising=False)
    variables = {"REPORT_DIR": str(report_dir), "GITHUB_REPOSITORY": "team/project",
                 "RUN_HEAD_SHA": "abc123", "RUN_HEAD_REPO": head_repo, "REPO_TOKEN": "t0ken"}  # fmt: skip
    monkeypatch.delenv("CML_PUBLISH", raising=False)
    for name, value in {**variables, **env}.items():
        monkeypatch.setenv(name, value)
    return report_dir


def cml_calls(record: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.mark.parametrize(
    ("head_repo", "env", "flag"),
    [
        ("team/project", {}, "--publish"),
        ("team/project", {"CML_PUBLISH": "false"}, "--no-publish"),
        # a fork's report never goes to the public asset host, whatever CML_PUBLISH says
        ("someone/project", {}, "--no-publish"),
        ("someone/project", {"CML_PUBLISH": "true"}, "--no-publish"),
    ],
)
def test_main_posts_the_verified_report_publishing_only_same_repo_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    head_repo: str, env: dict[str, str], flag: str,
) -> None:  # fmt: skip
    report_dir = report_run(tmp_path, monkeypatch, github_api, head_repo, **env)
    main()
    assert github_api.requests == [
        ("GET", "/repos/team/project/pulls/42", "Bearer t0ken"),
        ("GET", COMMENTS, "Bearer t0ken"),
    ]
    assert set(github_api.accepted) == {"application/vnd.github+json"}  # REST's media type
    assert cml_calls(fake_cml) == [
        {
            "args": ["comment", "update", str(report_dir / "comment.md"),
                     "--repo=https://github.com/team/project", "--target=pr/42",
                     f"--watermark-title={WATERMARK}", flag],
            "cwd": os.getcwd(),  # the checkout: never the artifact's folder
        }
    ]  # fmt: skip
    assert (report_dir / "comment.md").read_text() == "# report\n"  # a passing run: as is


def test_main_refuses_a_pr_that_is_not_at_the_runs_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_run(tmp_path, monkeypatch, github_api, "team/project", RUN_HEAD_SHA="f00d")
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert "not at the run's head commit f00d" in capsys.readouterr().err
    assert not fake_cml.exists()  # nothing posted


@pytest.mark.parametrize(
    "missing", ["GITHUB_REPOSITORY", "RUN_HEAD_SHA", "RUN_HEAD_REPO", "REPO_TOKEN"]
)
def test_main_names_a_missing_variable_before_asking_github(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str], missing: str,
) -> None:  # fmt: skip
    report_run(tmp_path, monkeypatch, github_api, "team/project")
    monkeypatch.setenv(missing, "")
    with pytest.raises(SystemExit):
        main()
    assert f"environment variable {missing} is not set" in capsys.readouterr().err
    assert github_api.requests == [] and not fake_cml.exists()


def test_main_reports_a_pr_github_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_run(tmp_path, monkeypatch, github_api, "team/project")
    del github_api.routes["/repos/team/project/pulls/42"]  # GitHub answers 404
    with pytest.raises(SystemExit):
        main()
    assert "404" in capsys.readouterr().err and not fake_cml.exists()


def test_main_reads_reports_pr_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path
) -> None:
    report_dir = report_run(tmp_path, monkeypatch, github_api, "team/project")
    (tmp_path / "reports").mkdir()
    report_dir.rename(tmp_path / "reports" / "pr")
    monkeypatch.delenv("REPORT_DIR")
    monkeypatch.chdir(tmp_path)
    main()
    assert cml_calls(fake_cml)[0]["args"][2] == str(tmp_path / "reports" / "pr" / "comment.md")


def test_main_without_cml_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"pr_number": "1"}))
    monkeypatch.setenv("REPORT_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no cml here
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "comment: the cml CLI is not installed (make install-cml)\n"


def test_a_failing_cml_fails_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_run(tmp_path, monkeypatch, github_api, "team/project")
    (tmp_path / "bin" / "cml").write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "comment: cml comment update failed (exit 3)\n"


@pytest.mark.parametrize(
    ("env", "caution"),
    [
        ({"RUN_CONCLUSION": "failure", "RUN_URL": "https://github.com/team/project/runs/7"},
         "(https://github.com/team/project/runs/7)"),
        ({"RUN_CONCLUSION": "failure"}, "(see the pr workflow run)"),
        ({"RUN_URL": "https://github.com/team/project/runs/7"}, None),  # success by default
    ],
)  # fmt: skip
def test_main_marks_the_report_of_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    env: dict[str, str], caution: str | None,
) -> None:  # fmt: skip
    monkeypatch.delenv("RUN_CONCLUSION", raising=False)
    monkeypatch.delenv("RUN_URL", raising=False)
    report_dir = report_run(tmp_path, monkeypatch, github_api, "team/project", **env)
    main()
    comment = (report_dir / "comment.md").read_text()
    if caution is None:
        assert comment == "# report\n"
    else:
        assert comment.startswith("> [!CAUTION]") and comment.endswith("\n\n# report\n")
        assert caution in comment


def test_main_speaks_to_a_github_enterprise_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path
) -> None:
    # the stand-in answers for api.github.com; an Enterprise API lives under /api/v3
    report_run(tmp_path, monkeypatch, github_api, "team/project",
               GITHUB_API_URL="https://api.github.com/api/v3",
               GITHUB_SERVER_URL="https://ghe.example")  # fmt: skip
    for path in ("/repos/team/project/pulls/42", COMMENTS):
        github_api.routes["/api/v3" + path] = github_api.routes.pop(path)
    main()
    assert [path for _, path, _ in github_api.requests] == [
        "/api/v3/repos/team/project/pulls/42",
        "/api/v3" + COMMENTS,
    ]
    assert "--repo=https://ghe.example/team/project" in cml_calls(fake_cml)[0]["args"]  # type: ignore[operator]


def test_main_deletes_the_report_comments_cml_would_not_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_run(tmp_path, monkeypatch, github_api, "team/project")
    # a long discussion: two full pages and a third; reports at 3 and on page two
    discussion = [{"id": i, "body": f"note {i}"} for i in range(1, 251)]
    discussion[2], discussion[149] = report_comment(3), report_comment(150)
    for page in (1, 2, 3):
        github_api.routes[comments_page(page)] = (200, discussion[(page - 1) * 100 : page * 100])
    for stale in (3, 150):
        github_api.routes[f"DELETE /repos/team/project/issues/comments/{stale}"] = (204, None)
    main()
    assert github_api.requests[1:] == [
        ("GET", comments_page(page), "Bearer t0ken") for page in (1, 2, 3)
    ] + [
        ("DELETE", f"/repos/team/project/issues/comments/{stale}", "Bearer t0ken")
        for stale in (3, 150)
    ]
    assert capsys.readouterr().out.splitlines() == [
        f"comment: removed report comment {stale}, beyond what CML reads; it posts anew"
        for stale in (3, 150)
    ]
    assert len(cml_calls(fake_cml)) == 1  # then CML posts the one report


def test_a_comment_github_refuses_to_delete_stops_before_cml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github_api: FakeGitHub, fake_cml: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    report_run(tmp_path, monkeypatch, github_api, "team/project")
    github_api.routes[COMMENTS] = (200, [report_comment(3), report_comment(4)])
    with pytest.raises(SystemExit) as exit_:
        main()  # no DELETE route: GitHub answers 404
    assert exit_.value.code == 1
    assert "404" in capsys.readouterr().err and not fake_cml.exists()
