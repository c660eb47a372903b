import pytest

from gitml.registry import stage_assignment


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_a_stage_tag_names_stage_and_version(stage: str) -> None:
    ref = {"tag": f"bike-demand#{stage}#4", "event": "assignment", "stage": stage,
           "version": "v0.0.2"}  # fmt: skip
    assert stage_assignment(ref) == (stage, "v0.0.2")


@pytest.mark.parametrize(
    "ref",
    [
        {"tag": "bike-demand@v1.0.0", "event": "registration", "version": "v1.0.0"},
        {"tag": "bike-demand#qa#1", "event": "assignment", "stage": "qa", "version": "v1"},
        # a stage tag that takes the stage away, or retires the model, must not deploy it
        {
            "tag": "bike-demand#production!#5",
            "event": "unassignment",
            "stage": "production",
            "version": "v0.0.2",
        },
        {
            "tag": "bike-demand@deprecated",
            "event": "deprecation",
            "stage": "production",
            "version": "v0.0.2",
        },
        {},
    ],
)
def test_other_refs_are_refused(ref: dict[str, str]) -> None:
    with pytest.raises(
        ValueError, match=r"does not assign one of \('staging', 'production'\)"
    ) as err:
        stage_assignment(ref)
    assert repr(ref.get("tag")) in str(err.value)
