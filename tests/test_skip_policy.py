"""The skip policy of ``conftest.py``: ``blender`` and ``cuda_compile`` tests cannot skip in CI, nor where
their prerequisite is installed; ``gpu`` tests and unmarked tests still may."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = '''
import pytest

@pytest.mark.blender
def test_blender_skips():
    pytest.skip("bpy crashed")

@pytest.mark.cuda_compile("nvcc")
def test_nvcc_skips():
    pytest.skip("no nvcc")

@pytest.mark.cuda_compile("nvrtc")
@pytest.mark.skipif(True, reason="no NVRTC")
def test_nvrtc_skips():
    pass

@pytest.mark.gpu
def test_gpu_skips():
    pytest.skip("no GPU")

def test_plain_skips():
    pytest.skip("not here")

@pytest.mark.blender
def test_blender_passes():
    pass
'''


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, installed: bool) -> pytest.RunResult:
    import conftest

    monkeypatch.setenv("CI", ci)
    for name in conftest.PREREQUISITES:
        monkeypatch.setitem(conftest.PREREQUISITES, name, lambda installed=installed: installed)
    pytester.makepyfile(test_policy=TESTS)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rfs", plugins=[conftest])


@pytest.mark.parametrize(("ci", "installed", "outcomes"), [
    ("true", False, {"failed": 4, "skipped": 2}),  # in CI even the bpy-less skip of test_blender_passes fails
    ("1", True, {"passed": 1, "failed": 3, "skipped": 2}),
    ("", True, {"passed": 1, "failed": 3, "skipped": 2}),
])
def test_must_run_tests_fail_when_they_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                            ci: str, installed: bool, outcomes: dict[str, int]) -> None:
    result = _run(pytester, monkeypatch, ci, installed)
    counts = result.parseoutcomes()
    counts["failed"] = counts.get("failed", 0) + counts.pop("errors", 0)  # a setup-time skip fails as an error
    counts.pop("seconds", None)
    assert {k: v for k, v in counts.items() if v} == outcomes, result.stdout.str()
    assert result.ret != 0
    why = "this is CI" if ci else "blender is installed here"
    cause = "bpy crashed" if installed else "needs the bpy module*"
    result.stdout.fnmatch_lines([f"*test_blender_skips must not skip ({why}), but it skipped: {cause}"])
    result.stdout.fnmatch_lines(["*test_nvrtc_skips must not skip*no NVRTC*"])


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_they_may_skip_off_ci_where_the_tool_is_missing(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    result = _run(pytester, monkeypatch, ci, installed=False)
    result.assert_outcomes(skipped=6)
