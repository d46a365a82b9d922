"""Meshing benchmark: seconds per stage at several resolutions, and marching cubes alone per implementation.

    python benchmarks/mesh.py --threads 1 --out benchmarks/results/mesh_cpu_analytic.json   # analytic field
    python benchmarks/mesh.py --model aware3d-heads --seed 0 --device cuda --out /tmp/mesh_gpu.json  # a model
    python benchmarks/mesh.py --res 256 --c2f-res 1024 --out /tmp/mesh1024.json              # memory at 1024³
    python benchmarks/mesh.py --res --mc-res 256 512 --device cuda --check-cuda              # kernel vs CPU
    OMP_WAIT_POLICY=passive python benchmarks/mesh.py --model random:eg3d-ffhq512-128 --res 256 --mc-res \
        --coarse-to-fine-only --threads 2 --out benchmarks/results/mesh_eg3d-ffhq512-128_cpu.json  # kernels

Stages (best of ``--repeat``): ``grid`` (density queries, full and coarse-to-fine), ``marching_cubes``,
``cleanup`` (largest component, 10 Taubin iterations, decimation to ``--faces``), ``colours``, with
``--texture`` also ``texture`` (xatlas unwrap and bake), ``export`` (GLB). Marching cubes alone runs on one
grid (``--mc-res``) with scikit-image (Lewiner and Lorensen), PyMCubes, our CPU path (the numpy twin of the
CUDA kernel), and the CUDA kernel when a GPU exists; the CUDA mesh is compared with the CPU path's (they must
be the same mesh: same faces, vertices within float32 rounding), and ``--check-cuda`` makes a missing kernel
or any difference an error. Each resolution runs in a child process so that its peak resident memory is its
own. Prints one JSON object.

With a model, the field's query kernels (``GeneratorField(kernels=...)``, ``--kernels``): ``both`` (default
with ``--model``) measures the reference kernels (``G.query`` as before issue 17) and then the fast ones
(texel-row sampling, density-only decoder for the grid) in the same child process, and reports their
per-stage ratio (``kernels_speedup``) and both meshes' sizes; ``full``/``coarse_to_fine`` hold the fast
figures, ``*_reference`` the reference ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description, resolve_device
from backend.mesh.export import save_mesh
from backend.mesh.field import ANALYTIC_FIELDS, CountingField, Field, GeneratorField
from backend.mesh.marching_cubes import cuda_kernel_available, marching_cubes
from backend.mesh.metrics import same_mesh
from backend.mesh.pipeline import MeshSettings, extract_mesh
from benchmarks.record import Run

CPU_PATH = "aware3d_cpu (numpy twin of the kernel, welded)"
CUDA_PATH = "aware3d_cuda (kernel + weld)"


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def make_field(args: argparse.Namespace, device: torch.device, kernels: str = "fast") -> Field:
    if args.model:
        from backend.registry import load_generator
        from backend.sampling import make_latent

        G = load_generator(args.model, device).generator
        return GeneratorField(G, make_latent(G, args.seed, args.truncation).planes, kernels=kernels)
    field = ANALYTIC_FIELDS[args.field]()
    field.device = device
    return field


def kernel_fields(args: argparse.Namespace, device: torch.device) -> dict[str, Field]:
    """The fields to measure, by kernel name: one field (the fast one) unless a model is compared."""
    field = make_field(args, device)
    if not isinstance(field, GeneratorField) or args.kernels == "fast":
        return {"fast": field}
    reference = GeneratorField(field.G, field.planes, kernels="reference")
    return {"reference": reference} if args.kernels == "reference" else {"reference": reference, "fast": field}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pipeline(field: Field, res: int, c2f: bool, faces: int, repeat: int, texture: bool = False,
                 level: float = 10.0) -> dict[str, Any]:
    """Best-of-``repeat`` seconds per stage for one resolution, plus counts."""
    best: dict[str, float] = {}
    info: dict[str, Any] = {}
    for _ in range(repeat):
        counting = CountingField(field)
        settings = MeshSettings(resolution=res, level=level, coarse_to_fine=c2f, target_faces=faces,
                                texture=texture)
        t0 = time.perf_counter()
        mesh = extract_mesh(counting, settings)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            save_mesh(mesh, Path(tmp) / "head.glb")
            export = time.perf_counter() - t
            size = (Path(tmp) / "head.glb").stat().st_size
        total = time.perf_counter() - t0
        secs = dict(mesh.stats["seconds"], export=export, total=total)
        for k, v in secs.items():
            best[k] = min(best.get(k, float("inf")), v)
        info = {"queries": counting.density_points, "colour_queries": counting.colour_points,
                "mc_vertices": mesh.stats["mc_vertices"], "mc_faces": mesh.stats["mc_faces"],
                "faces": mesh.num_faces, "vertices": mesh.num_vertices, "glb_bytes": size,
                "mc_method": mesh.stats["mc_method"]}
    return {"seconds": {k: round(v, 4) for k, v in best.items()}, **info}


def mc_alone(field: Field, res: int, level: float, repeat: int) -> dict[str, Any]:
    """Marching cubes alone on one grid, per implementation (seconds, best of ``repeat``; output size)."""
    from backend.mesh.grid import GridSpec, official_border_pad, sample_grid

    spec = GridSpec(res, field.box_size)
    grid, _ = sample_grid(field, spec, level, official_border_pad(res))
    cpu = grid.float().cpu().numpy()
    out: dict[str, Any] = {"resolution": res}

    def timed(name: str, fn: Any) -> None:
        times = []
        result = None
        for _ in range(repeat):
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        v, f = result[0], result[1]
        out[name] = {"seconds": round(min(times), 4), "vertices": len(v), "faces": len(f)}

    from skimage import measure

    timed("skimage_lewiner", lambda: measure.marching_cubes(cpu, level)[:2])
    timed("skimage_lorensen", lambda: measure.marching_cubes(cpu, level, method="lorensen")[:2])
    import mcubes

    timed("pymcubes", lambda: mcubes.marching_cubes(cpu, level))
    reference = marching_cubes(cpu, level, "reference")
    timed(CPU_PATH, lambda: marching_cubes(cpu, level, "reference"))
    if cuda_kernel_available():
        g = torch.from_numpy(cpu).cuda()
        marching_cubes(g, level, "cuda")  # compile + warm up

        def cuda_run() -> tuple[torch.Tensor, torch.Tensor]:
            r = marching_cubes(g, level, "cuda")
            torch.cuda.synchronize()
            return r

        timed(CUDA_PATH, cuda_run)
        v, f = (t.cpu().numpy() for t in cuda_run())
        out[CUDA_PATH]["same_mesh_as_cpu_path"] = same_mesh(v, f, reference[0].numpy(), reference[1].numpy())
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One resolution (or the MC comparison), measured in this process."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = resolve_device(args.device)
    if args.child.startswith("mc:"):
        return mc_alone(make_field(args, device), int(args.child[3:]), args.level, args.repeat)
    res = int(args.child)
    out: dict[str, Any] = {}
    fields = kernel_fields(args, device)
    modes = ([] if args.coarse_to_fine_only else [("full", False)]) + [("coarse_to_fine", True)]
    for kernels, kfield in fields.items():  # reference first: it cannot profit from the fast one's warm-up
        suffix = "" if kernels == "fast" else f"_{kernels}"
        for name, c2f in modes:
            out[name + suffix] = run_pipeline(kfield, res, c2f, args.faces, args.repeat, args.texture,
                                              args.level)
    if len(fields) > 1:
        out["kernels_speedup"] = {
            name: {stage: round(out[name + "_reference"]["seconds"][stage] / max(secs, 1e-9), 2)
                   for stage, secs in out[name]["seconds"].items()}
            for name, _ in modes}
    out["peak_rss_bytes"] = peak_rss_bytes()
    if device.type == "cuda":
        out["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    record = Run(__file__, argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a model (registry name/path); default: an analytic field")
    p.add_argument("--field", default="bumpy-ellipsoid", choices=sorted(ANALYTIC_FIELDS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--level", type=float, default=10.0,
                   help="surface density (random-weight models never reach EG3D's 10: e.g. 1.2)")
    p.add_argument("--res", type=int, nargs="*", default=[128, 256, 512],
                   help="resolutions of the whole pipeline (none: marching cubes alone)")
    p.add_argument("--c2f-res", type=int, nargs="*", default=[],
                   help="extra resolutions measured coarse-to-fine only (e.g. 1024)")
    p.add_argument("--mc-res", type=int, nargs="*", default=[256, 512],
                   help="grids for the marching-cubes comparison (none: skip)")
    p.add_argument("--faces", type=int, default=50_000)
    p.add_argument("--texture", action="store_true", help="also UV-unwrap (xatlas) and bake a texture")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--coarse-to-fine-only", action="store_true")
    p.add_argument("--kernels", choices=["both", "fast", "reference"], default="both",
                   help="a model's query kernels: both compares reference and fast (analytic fields: fast)")
    p.add_argument("--check-cuda", action="store_true",
                   help="exit with status 1 unless the CUDA kernel ran and gave the CPU path's mesh")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child(args)
        print(json.dumps(result))
        return result

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "benchmark": "mesh",
        "hardware": hardware_description(device),
        "cpu_count": os.cpu_count(),
        "threads": args.threads or torch.get_num_threads(),
        "device": str(device),
        "field": args.model or f"analytic:{args.field}",
        "level": args.level,
        "target_faces": args.faces,
        "texture": args.texture,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "cuda_kernel": cuda_kernel_available(),
        "stages": {},
    }
    base = ["--field", args.field, "--seed", str(args.seed), "--truncation", str(args.truncation),
            "--level", str(args.level), "--faces", str(args.faces),
            "--repeat", str(args.repeat), "--device", args.device, "--kernels", args.kernels]
    base += ["--model", args.model] if args.model else []
    base += ["--threads", str(args.threads)] if args.threads else []
    base += ["--coarse-to-fine-only"] if args.coarse_to_fine_only else []
    base += ["--texture"] if args.texture else []
    for res in [*args.res, *args.c2f_res]:
        extra = ["--coarse-to-fine-only"] if res in args.c2f_res and res not in args.res else []
        cmd = [sys.executable, __file__, *base, *extra, "--child", str(res)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result["stages"][str(res)] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{res}³: {json.dumps(result['stages'][str(res)])}", file=sys.stderr)
    result["marching_cubes_alone"] = {}
    for res in args.mc_res:
        cmd = [sys.executable, __file__, *base, "--child", f"mc:{res}"]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result["marching_cubes_alone"][str(res)] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"MC {res}³: {json.dumps(result['marching_cubes_alone'][str(res)])}", file=sys.stderr)
    result = record.finish(result, args.out, device)
    print(json.dumps(result, indent=2))
    if args.check_cuda:
        problems = cuda_problems(result)
        if problems:
            raise SystemExit("CUDA marching cubes check failed: " + "; ".join(problems))
    return result


def cuda_problems(result: dict[str, Any]) -> list[str]:
    """Why the CUDA kernel does not stand in for the CPU path here (empty: it ran and matched everywhere)."""
    if not result["marching_cubes_alone"]:
        return ["no --mc-res grid was measured"]
    problems = []
    for res, entry in result["marching_cubes_alone"].items():
        check = entry.get(CUDA_PATH, {}).get("same_mesh_as_cpu_path")
        if check is None:
            problems.append(f"{res}³: the CUDA kernel did not run (cuda_kernel_available() is False)")
        elif not check["same"]:
            problems.append(f"{res}³: {check['why']}")
    return problems


if __name__ == "__main__":
    main()
