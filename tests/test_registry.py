import pytest

from gitml.registry import stage_assignment


def test_a_stage_tag_names_stage_and_version() -> None:
    ref = {"tag": "bike-demand#production#4", "event": "assignment", "stage": "production",
           "version": "v0.0.2"}  # fmt: skip
    assert stage_assignment(ref) == ("production", "v0.0.2")


@pytest.mark.parametrize(
    "ref",
    [
        {"tag": "bike-demand@v1.0.0", "event": "registration", "version": "v1.0.0"},
        {"tag": "bike-demand#qa#1", "event": "assignment", "stage": "qa", "version": "v1"},
        {},
    ],
)
def test_other_refs_are_refused(ref: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="does not assign"):
        stage_assignment(ref)
