# SPDX-License-Identifier: GPL-3.0-or-later
"""The validation layer at the CLI and protocol boundary (``backend.validate``; issue 15, cases 1, 2, 4, 6, 7).

Every case here is refused *before* any work: the tests replace the model loaders (and the other first heavy
steps) by functions that fail the test if they are called, so "refused" also proves "refused first". Memory
is measured with tracemalloc (peak bytes), never with wall-clock time.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.cli.main import main
from backend.errors import Aware3DError
from backend.server import ops_invert, ops_mesh, ops_sample
from backend.server import protocol as P
from backend.server.server import Server
from backend.validate import (
    BOUNDS,
    bounded_float,
    bounded_int,
    bounds_markdown,
    check_output_dir,
    check_output_file,
    path_inside,
    safe_stem,
    sanitise_stem,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_server import Recorder, send

sys.path.pop(0)

SMALL_PEAK = 4 << 20  # bytes: a refusal allocates nothing in proportion to what was asked for


class LoadedTooEarly(AssertionError):
    """Raised by a stand-in for a model loader: the refusal should have come first."""


def _boom(*_: Any, **__: Any) -> Any:
    raise LoadedTooEarly("work started before the arguments were refused")


# --------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for module in (ops_sample, ops_mesh, ops_invert):
        monkeypatch.setattr(module, "load_model", _boom)
    s = Server(tmp_path / "jobs", heartbeat_s=5.0)
    yield s
    s.finish(10)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CLI command's first heavy step fails the test if it is reached."""
    import backend.invert.image
    import backend.registry
    import backend.texture.glb_read
    import backend.views.generate
    import train.synthetic.writer

    monkeypatch.setattr(backend.registry, "load_generator", _boom)
    monkeypatch.setattr(backend.views.generate, "load_view_models", _boom)
    monkeypatch.setattr(backend.texture.glb_read, "read_glb", _boom)
    monkeypatch.setattr(backend.invert.image, "load_photo", _boom)
    monkeypatch.setattr(train.synthetic.writer, "build_dataset", _boom)


def _writes_refused(folder: Path) -> bool:
    try:
        (folder / ".aware3d-write-test").write_bytes(b"")
    except OSError:
        return True
    (folder / ".aware3d-write-test").unlink()
    return False


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write to. chmod 0o500 does not stop root (these tests often run as root),
    so then a folder the kernel refuses even to root stands in: /sys/kernel (sysfs) or /proc/self."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for candidate in (ro, Path("/sys/kernel"), Path("/proc/self")):
            if candidate.is_dir() and _writes_refused(candidate):
                yield candidate
                return
        pytest.fail("found no folder this process cannot write to")  # never a silent skip
    finally:
        ro.chmod(0o700)


def _one_line_error(code: int, capsys: pytest.CaptureFixture[str], prog: str = "aware3d") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return lines[0]


def _error(rec: Recorder, rid: str) -> dict[str, Any]:
    ev = rec.terminal(rid, 60)
    assert ev["event"] == "error", ev
    assert ev["error"]["type"] != P.INTERNAL and "\n" not in ev["error"]["message"], ev
    return ev["error"]


# --------------------------------------------------------------------------------------------------------
# Case 1: path traversal through invert's name
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../../../somewhere/x", "ABSOLUTE", "..", "a\\b", "nul\x00name", "CON"])
def test_invert_name_cannot_leave_the_job_folder(name: str, server: Server, tmp_path: Path) -> None:
    from backend.invert.demo_photo import write_photo

    photo = write_photo(tmp_path / "photo" / "person.jpg")
    if name == "ABSOLUTE":
        name = str(tmp_path / "elsewhere" / "x")
    before = set(tmp_path.rglob("*"))
    rec = Recorder()
    send(server, rec, "inv", "invert", image=str(photo), name=name, preset="fast", resolution=64)
    err = _error(rec, "inv")
    assert "cannot be used as a file name" in err["message"] and err["hint"], err
    after = set(tmp_path.rglob("*"))
    jobs = tmp_path / "jobs"
    assert not [p for p in after - before if jobs not in p.parents and p != jobs], "wrote outside the jobs folder"
    assert not list(tmp_path.rglob("*.avatar.safetensors"))
    assert not (tmp_path / "somewhere").exists() and not (tmp_path / "elsewhere").exists()


def test_a_plain_invert_name_passes_the_check(server: Server, tmp_path: Path) -> None:
    """The refusal is of unsafe names only: a plain one gets as far as loading the model (stubbed here)."""
    rec = Recorder()
    send(server, rec, "ok", "invert", image=str(tmp_path / "missing.jpg"), name="my head-2")
    err = rec.terminal("ok", 60)["error"]
    assert "cannot be used as a file name" not in err["message"]  # it got past the name, to the photo


def test_path_inside_resolves_symlinks(tmp_path: Path) -> None:
    job, outside = tmp_path / "job", tmp_path / "outside"
    job.mkdir()
    outside.mkdir()
    (job / "link").symlink_to(outside, target_is_directory=True)
    assert path_inside(job, "a.png") == (job / "a.png").resolve()
    for bad in ("link/x.png", "../x.png", str(outside / "x.png"), "/etc/passwd"):
        with pytest.raises(Aware3DError, match="outside its folder"):
            path_inside(job, bad)


@pytest.mark.parametrize("name, why", [
    ("../x", "path separator"), ("/abs/x", "path separator"), ("C:\\x", "path separator"), ("..", "dot"),
    (".hidden", "dot"), ("", "empty"), ("x" * 101, "longer than 100"), ("a\x00b", "U+0000"),
    ("a\nb", "U+000A"), ("a\u202eb", "U+202E"), ("lpt1.txt", "device"), ("a:b", "Windows"),
    ("name.", "ends with a dot"), (" name", "space"),
])
def test_safe_stem_refuses_with_a_reason(name: str, why: str) -> None:
    with pytest.raises(Aware3DError) as info:
        safe_stem(name, "--name")
    assert why in info.value.message and info.value.hint and "\n" not in info.value.message


def test_safe_stem_keeps_plain_names_and_derived_names_are_sanitised() -> None:
    for ok in ("my head", "héllo", "a.b", "x" * 100, "con-artist"):
        assert safe_stem(ok) == ok
    assert sanitise_stem("../../x") == "_.._x"
    assert sanitise_stem(".profile") == "profile"
    assert sanitise_stem("CON") == "_CON"
    assert sanitise_stem("", "avatar") == "avatar" and sanitise_stem(" . ", "avatar") == "avatar"
    assert len(sanitise_stem("y" * 500)) == 100


# --------------------------------------------------------------------------------------------------------
# Case 2: huge seed ranges are refused before they are expanded
# --------------------------------------------------------------------------------------------------------


def _peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("seeds", ["0-100000000", "0-4294967295", "0-10,0-4294967295,5"])
def test_sample_request_with_a_huge_range_is_refused_in_constant_memory(seeds: str, server: Server) -> None:
    import backend.sampling  # noqa: F401  (imported before measuring: torch is not the request's memory)

    rec = Recorder()
    peak = _peak(lambda: (send(server, rec, "s", "sample", seeds=seeds), rec.terminal("s", 60)))
    err = _error(rec, "s")
    assert "the limit is 1024" in err["message"], err
    assert peak < SMALL_PEAK, f"{peak / 1e6:.1f} MB for a refusal"


def test_sample_request_seed_lists_are_counted_before_they_are_read(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "l", "sample", seeds=list(range(2000)))
    assert "the limit is 1024" in _error(rec, "l")["message"]
    send(server, rec, "n", "sample", seeds=[1, -1])
    assert "between 0 and 4294967295" in _error(rec, "n")["message"]


@pytest.mark.parametrize("text, needle", [
    ("5-1", "the range 5-1 is reversed"), ("-5", "between 0 and 2^32-1"), ("4294967296", "between 0 and 2^32-1"),
    ("9" * 5000, "between 0 and 2^32-1"), ("x", "cannot read seeds"), (",", "no seeds"),
    ("0-4294967295", "the limit is 1024"),
])
def test_parse_seeds_says_what_is_wrong(text: str, needle: str) -> None:
    from backend.sampling import parse_seeds

    with pytest.raises(Aware3DError) as info:
        parse_seeds(text, 1024)
    assert needle in info.value.one_line()


def test_parse_seeds_of_a_megabyte_request_stays_small() -> None:
    from backend.sampling import parse_seeds

    text = "1," * (P.MAX_REQUEST_BYTES // 2)
    assert parse_seeds("0-3,7, 10 - 11", 1024) == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(Aware3DError, match="the limit is 1024"):
        parse_seeds(text, 1024)

    def refuse() -> None:
        with pytest.raises(Aware3DError):
            parse_seeds(text, 1024)

    assert _peak(refuse) < SMALL_PEAK


def test_cli_sample_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    out = str(tmp_path / "o")
    line = _one_line_error(main(["sample", "--seeds", "5-1", "--out", out]), capsys)
    assert "the range 5-1 is reversed (write 1-5)" in line
    codes: list[int] = []
    peak = _peak(lambda: codes.append(main(["sample", "--seeds", "0-4294967295", "--out", out])))
    assert "the limit is 65536" in _one_line_error(codes[0], capsys) and peak < SMALL_PEAK


def test_views_trajectory_is_counted_before_it_is_built() -> None:
    from backend.views.trajectories import parse

    def refuse(spec: str) -> None:
        with pytest.raises(Aware3DError, match="the limit is 360"):
            parse(spec)

    for spec in ("ring:100000000", "yaw:0:1:1e-12", "0,0;" * 400):
        assert _peak(lambda spec=spec: refuse(spec)) < SMALL_PEAK
    with pytest.raises(Aware3DError, match="cannot read"):
        parse("yaw:0:inf:1")


# --------------------------------------------------------------------------------------------------------
# Case 4: numbers outside their bounds (level: -1e9, NaN)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op, args, needle", [
    ("mesh", {"level": -1e9}, "level must be between -1000 and 1000"),
    ("mesh", {"level": 1e9}, "level must be between -1000 and 1000"),
    ("mesh", {"resolution": 100000}, "mesh resolution must be between 32 and 1024"),
    ("mesh", {"faces": 10**12}, "target faces must be between 0 and 10000000"),
    ("mesh", {"formats": ["glb"] * 1000}, "more than once"),
    ("mesh", {"seed": 2**40}, "seed must be between 0 and 4294967295"),
    ("sample", {"yaw": 1e300}, "yaw must be between -180 and 180"),
    ("sample", {"pitch": 90}, "pitch must be between -89 and 89"),
    ("sample", {"resolution": 4096}, "resolution must be between 8 and 1024"),
    ("invert", {"image": "x.png", "level": -1e9}, "level must be between"),
    ("invert", {"image": "x.png", "orbit_frames": 10**9}, "orbit_frames must be between 2 and 3600"),
    ("invert", {"image": "x.png", "seed": -1}, "seed must be between"),
    ("invert", {"image": "x.png", "crop": [0, 0, 1e300]}, "crop size must be between"),
    ("invert", {"image": "x.png", "views": 100000}, "views must be between 2 and 360"),
])
def test_server_numbers_are_bounded(op: str, args: dict[str, Any], needle: str, server: Server) -> None:
    rec = Recorder()
    send(server, rec, "b", op, **args)
    assert needle in _error(rec, "b")["message"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_twice(value: str, server: Server) -> None:
    """JSON has no NaN, but Python's reader accepts it: the protocol refuses such a line, and the ops' bounds
    refuse a non-finite number again should one arrive some other way (a future transport, an in-process call)."""
    rec = Recorder()
    server.handle_line(rec.conn, f'{{"v": 1, "id": "m", "op": "mesh", "args": {{"level": {value}}}}}\n'.encode())
    err = rec.wait(lambda e: e.get("event") == "error", 60)["error"]
    assert err["type"] == P.BAD_REQUEST and "\n" not in err["message"], err
    x = float(value.lower().replace("infinity", "inf"))
    mesh_args = {"colour_mode": "vertex", "formats": [], "faces": 0, "resolution": 64, "level": 10.0, "seed": 0,
                 "truncation": 0.7, "texture_size": 1024}
    for key in ("level", "truncation"):
        with pytest.raises(Aware3DError, match="finite"):
            ops_mesh.check_mesh_args({**mesh_args, key: x})
    sample_args = {"seeds": [0], "truncation": 0.7, "yaw": 0.0, "pitch": 0.0, "resolution": None}
    for key in ("yaw", "pitch"):
        with pytest.raises(Aware3DError, match="finite"):
            ops_sample.check_sample_args({**sample_args, key: x})


def test_cli_mesh_level(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    line = _one_line_error(main(["mesh", "--level=-1e9", "--out", str(tmp_path / "h.glb")]), capsys)
    assert "--level must be between -1000 and 1000" in line
    line = _one_line_error(main(["mesh", "--level", "nan", "--out", str(tmp_path / "h.glb")]), capsys)
    assert "--level must be a finite number" in line
    assert not any(tmp_path.iterdir())


def test_helpers_and_the_table() -> None:
    assert bounded_int(5, 0, 9, "n") == 5 and bounded_float(2, 0, 9, "x") == 2.0
    for bad in (True, "3", 2.5, float("nan"), 10**400):
        with pytest.raises(Aware3DError):
            bounded_int(bad, 0, 9, "n")
    for bad in (True, "3", float("nan"), float("inf"), 10**400, -1e-9):
        with pytest.raises(Aware3DError):
            bounded_float(bad, 0, 9, "x")
    for key, b in BOUNDS.items():
        assert b.lo <= b.hi, key
        assert b.lo <= float(b.example) <= b.hi, key
        assert f"`{key}`" in bounds_markdown()
    assert BOUNDS["seeds_per_request"].hi == ops_sample.MAX_SEEDS == 1024


# --------------------------------------------------------------------------------------------------------
# Case 6: outputs are checked before any work, and refused in one line
# --------------------------------------------------------------------------------------------------------


def _cli_argv(command: str, out: Path) -> list[str]:
    return {
        "sample": ["sample", "--seeds", "0", "--out", str(out)],
        "views": ["views", "--out", str(out)],
        "texture": ["texture", "--mesh", "head.glb", "--cameras", "ring:2", "--out", str(out)],
        "invert": ["invert", "photo.jpg", "--out", str(out)],
    }[command]


def _bad_outputs(tmp_path: Path, read_only: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return {
        "existing file": (a_file, "is a file, not a folder"),
        "file as parent": (a_file / "sub", "is a file, not a folder"),
        "read-only folder": (read_only, "cannot write to"),
        "inside a read-only folder": (read_only / "new", "cannot create"),
        "/proc": (Path("/proc"), "cannot write to"),
        "under /proc": (Path("/proc/aware3d-out"), "cannot create"),
    }


@pytest.mark.parametrize("command", ["sample", "views", "texture", "invert"])
def test_cli_output_folders_are_checked_first(command: str, tmp_path: Path, read_only_folder: Path,
                                              capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    for case, (out, needle) in _bad_outputs(tmp_path, read_only_folder).items():
        line = _one_line_error(main(_cli_argv(command, out)), capsys)
        assert needle in line, (case, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "read-only"]  # nothing left behind


def test_cli_mesh_output_file_is_checked_first(tmp_path: Path, read_only_folder: Path,
                                               capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, needle in ((folder, "is a folder, not a file"), (a_file / "h.glb", "is a file, not a folder"),
                        (read_only_folder / "h.glb", "cannot write to"), (Path("/proc/h.glb"), "cannot write to"),
                        (tmp_path / "h.stl", "unknown mesh format")):
        line = _one_line_error(main(["mesh", "--out", str(out)]), capsys)
        assert needle in line, (out, line)


def test_check_output_dir_proves_and_leaves_nothing(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    assert check_output_dir(deep) == deep and not (tmp_path / "a").exists()  # created for the test, removed
    assert check_output_file(tmp_path / "x" / "m.glb", (".glb",)) and not (tmp_path / "x").exists()
    with pytest.raises(Aware3DError, match="too long"):
        check_output_dir(tmp_path / ("n" * 300))
    with pytest.raises(Aware3DError, match="empty"):
        check_output_dir("")


def test_cli_late_write_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up after the checks: still one line, exit 2 (random:tiny renders in a second)."""
    import backend.outputs

    def full(*_: Any, **__: Any) -> Any:
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "seed0000.png"))

    monkeypatch.setattr(backend.outputs, "save_view", full)
    code = main(["sample", "--model", "random:tiny", "--seeds", "0", "--resolution", "16", "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err  # the model line and the progress bar come first
    errors = [line for line in err.splitlines() if line.startswith("aware3d: error: ")]
    assert code == 2 and len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in err


# --------------------------------------------------------------------------------------------------------
# Case 7: wording (make-dataset --count -1)
# --------------------------------------------------------------------------------------------------------


def test_make_dataset_count_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_work: None) -> None:
    from train.cli import main as train_main

    line = _one_line_error(train_main(["make-dataset", "--count", "-1", "--out", str(tmp_path / "x.zip")]),
                           capsys, "aware3d-train")
    assert "--count must be between 1 and 10000000, got -1" in line and "e.g. --count" in line
    (tmp_path / "f").write_text("x")
    line = _one_line_error(train_main(["make-dataset", "--count", "4", "--out", str(tmp_path / "f" / "x.zip")]),
                           capsys, "aware3d-train")
    assert "is a file, not a folder" in line
    line = _one_line_error(train_main(["make-dataset", "--count", "4", "--out", "/proc/x.zip"]), capsys,
                           "aware3d-train")
    assert "cannot write to" in line


def _check_many(root: str, barrier: Any, errors: Any) -> None:
    from backend.validate import check_output_dir

    for i in range(150):
        barrier.wait()
        try:
            check_output_dir(Path(root) / f"run{i}" / "out")
        except Aware3DError as exc:
            errors.put(exc.one_line())


def test_two_processes_checking_the_same_new_folder_both_pass(tmp_path: Path) -> None:
    """torchrun's ranks check one --out at once; each creates, probes and removes it, and must not fail
    because the other removed it meanwhile (a random 'cannot write' at a multi-process start, seen in CI)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_check_many, args=(str(tmp_path), barrier, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found[:3]
    assert not list(tmp_path.rglob("*.aware3d-probe-*"))  # and no probe file is left behind
