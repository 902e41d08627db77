"""Throughput of the synthetic data pipeline (the renderer and the whole dataset item).

Rows:
  * dataset items per second at the target sizes (128 px crops; 800 px full frames, which
    also render the crop), in one process and through a DataLoader with worker processes;
  * the crop rendered directly with K_crop against its peer, rendering the full 800 px
    frame and cutting the crop with cv2.warpAffine (what a crop-less renderer must do);
  * a per-stage breakdown of one crop item.

Targets: >= 200 crops/s at 128x128 and >= 30 full frames/s at 800x800 on 2 cores.
Usage: python benchmarks/bench_render.py [--seconds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from pyfacepnp.data import appearance as ap
from pyfacepnp.data.synthetic import SyntheticFaceDataset
from pyfacepnp.geometry.camera import crop_intrinsics
from pyfacepnp.geometry.conventions import wcpa_to_opencv
from pyfacepnp.geometry.transforms import transform_points
from pyfacepnp.ops.render import render_mesh


def rate(fn, seconds, cpu=False):
    """Calls per second by the wall clock, or (``cpu=True``) also per second of this
    process's CPU time: the latter stays meaningful on a machine shared with other jobs."""
    fn(0)  # warm-up (caches, first-call overhead)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        fn(n + 1)
        n += 1
    wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return (n / wall, n / max(cpu_s, 1e-9)) if cpu else n / wall


def loader_rate(ds, workers, seconds, batch=32):
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False, persistent_workers=False)
    it = iter(loader)
    next(it)  # workers started and warm
    n, t0 = 0, time.perf_counter()
    for b in it:
        n += b["crop"].shape[0]
        if time.perf_counter() - t0 > seconds:
            break
    rate_ = n / (time.perf_counter() - t0)
    del it
    return rate_


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap_.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap_.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"opencv {cv2.__version__}; load average {os.getloadavg()[0]:.1f}")

    crops = SyntheticFaceDataset("train", num_samples=100000, image_size=800, crop_size=128, render_image=False)
    frames = SyntheticFaceDataset("train", num_samples=100000, image_size=800, crop_size=128, render_image=True)
    crop_wall, crop_cpu = rate(lambda i: crops[i], args.seconds, cpu=True)
    frame_wall, frame_cpu = rate(lambda i: frames[i], args.seconds, cpu=True)
    cores = os.cpu_count() or 2
    rows = [
        ("crop 128 px, 1 process (wall clock)", crop_wall, 200),
        (f"crop 128 px, DataLoader {args.workers} workers (wall clock)", loader_rate(crops, args.workers, 2 * args.seconds), 200),
        (f"crop 128 px, {cores} cores x 1/(CPU s per item)", cores * crop_cpu, 200),
        ("frame 800 px + crop, 1 process (wall clock)", frame_wall, 30),
        (f"frame 800 px + crop, DataLoader {args.workers} workers (wall clock)", loader_rate(frames, args.workers, 2 * args.seconds), 30),
        (f"frame 800 px + crop, {cores} cores x 1/(CPU s per item)", cores * frame_cpu, 30),
    ]
    print(f"\n{'dataset items':58s} {'items/s':>9s} {'target':>7s}")
    for name, r, target in rows:
        print(f"{name:58s} {r:9.1f} {target:7d} {'ok' if r >= target else 'BELOW'}")

    # Peers: the face crop rendered directly vs cut from a rendered full frame.
    model = crops.model
    scenes = [crops.scene(i) for i in range(64)]

    def prepared(i):
        sc = scenes[i % len(scenes)]
        V = model.vertices(sc.id_coeffs, sc.exp_coeffs)
        R, t = wcpa_to_opencv(sc.R_t)
        cam = transform_points(V, R, t).astype(np.float32)
        lm = crops._landmarks(sc.id_coeffs, sc.exp_coeffs, sc.R_t, sc.focal)
        A = crops.crop_affine(sc, lm)
        return sc, cam, A

    pre = [prepared(i) for i in range(len(scenes))]
    tex = ap.texture_from_palette(scenes[0].palette)
    K = crops.intrinsics().astype(np.float32)

    def direct(i):
        sc, cam, A = pre[i % len(pre)]
        render_mesh(cam, model.triangles, model.texcoords, tex, crop_intrinsics(K, A).astype(np.float32),
                    (128, 128), sc.lights, sc.material)

    def via_frame(i):
        sc, cam, A = pre[i % len(pre)]
        full = render_mesh(cam, model.triangles, model.texcoords, tex, K, (800, 800), sc.lights, sc.material)
        cv2.warpAffine(full.image.numpy(), A, (128, 128), flags=cv2.INTER_AREA)

    r_direct, r_frame = rate(direct, args.seconds), rate(via_frame, args.seconds)
    print(f"\n{'128 px face crop (render only, 1 thread)':58s} {'crops/s':>9s} {'ratio':>7s}")
    print(f"{'render_mesh with K_crop (ours)':58s} {r_direct:9.1f} {r_direct / r_frame:6.1f}x")
    print(f"{'render 800 px frame + cv2.warpAffine (peer)':58s} {r_frame:9.1f} {1.0:6.1f}x")

    # Stage breakdown of one crop item (as the dataset makes it: head, 2x supersampling).
    sc, cam, A = pre[0]
    V = model.vertices(sc.id_coeffs, sc.exp_coeffs)
    R, t = wcpa_to_opencv(sc.R_t)
    mesh = crops.scene_mesh(sc, V, R, t)
    K_crop = crop_intrinsics(K, A)
    stages = {
        "scene sampling (pose, expression, light, bg)": lambda i: crops.scene(i),
        "vertices (linear model)": lambda i: model.vertices(sc.id_coeffs, sc.exp_coeffs),
        "head and neck mesh": lambda i: crops.scene_mesh(sc, V, R, t),
        "albedo texture (palette -> 256^2)": lambda i: ap.texture_from_palette(sc.palette),
        "render_mesh 128 px, face only": direct,
        "render 128 px crop: face + head, 2x supersampled, blur/noise": lambda i: crops.render(
            sc, mesh, K_crop, A, 128, 1, tex, supersample=2),
    }
    print(f"\n{'stage of a 128 px crop item (CPU time)':58s} {'ms':>9s}")
    for name, fn in stages.items():
        print(f"{name:58s} {1000.0 / rate(fn, args.seconds / 3, cpu=True)[1]:9.2f}")


if __name__ == "__main__":
    main()
