"""Measure the synthetic-to-real gap on the real photographs installed packages ship.

    python scripts/real_photo_gap.py --checkpoint runs/demo/model.pt --tag demo \
        --img-dir docs/img --json runs/demo/real_gap.json

For each photograph of pyfacepnp.eval.real.PHOTOS that is installed: the reference 68
points of a pretrained detector (dlib unless --reference mediapipe), the learned detector's
landmarks against them, the pipeline's projected 68 landmark vertices (crop from the learned
detector, crop from the reference), the classical pose (mean shape + solve_pnp) and the
rotation between it and the pipeline's pose. Prints a markdown table; writes a figure per
photo (<img-dir>/real_<tag>_<photo>.png) and every number to --json. docs/real_photos.md
holds the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "runs", "demo", "model.pt"))
    p.add_argument("--reference", default="dlib", choices=["dlib", "mediapipe"])
    p.add_argument("--tag", default="demo", help="name of this measurement in the figure names")
    p.add_argument("--img-dir", default="", help="write the figures here (default: none)")
    p.add_argument("--json", default="", help="write every number here")
    p.add_argument("--net", default="stage2", choices=["stage1", "stage2"])
    args = p.parse_args()

    import cv2
    import numpy as np

    from pyfacepnp.data.face_model import get_face_model
    from pyfacepnp.eval.real import gap_figure, measure_photo, real_photos
    from pyfacepnp.models.bundle import load_bundle
    from pyfacepnp.models.pretrained import load_face68

    fm = get_face_model()
    bundle = load_bundle(args.checkpoint, fm)
    ref = load_face68(args.reference)
    rows = []
    for ph in real_photos():
        r = measure_photo(ph, bundle, fm, ref, net=args.net)
        if not r["face_found"]:
            print(f"{ph.name}: the {args.reference} detector found no face")
            continue
        if args.img_dir:
            os.makedirs(args.img_dir, exist_ok=True)
            fig = gap_figure(ph, r, fm)
            cv2.imwrite(os.path.join(args.img_dir, f"real_{args.tag}_{ph.name}.png"),
                        cv2.cvtColor(fig, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        r.pop("arrays")
        r["licence"] = ph.licence
        r["source"] = ph.source
        rows.append(r)
    print(f"reference: {args.reference}; checkpoint: {args.checkpoint}; errors: median over the 68 points, "
          "% of the reference's inter-ocular distance (outer eye corners)\n")
    print("| photo | IOD (px) | learned detector | pipeline, learned crop | pipeline, reference crop "
          "| classical fit | rotation vs classical (deg) | learned heatmap peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['photo']} | {r['interocular_px']:.0f} | {r['learned_detector']:.1f} | "
              f"{r['pipeline_learned_crop']:.1f} | {r['pipeline_reference_crop']:.1f} | {r['classical_fit']:.1f} | "
              f"{r['rotation_vs_classical_deg']:.1f} | {r['learned_peak']:.3f} |")
    print("\nper region (pipeline, reference crop / classical fit):")
    for r in rows:
        print(f"  {r['photo']}: " + ", ".join(f"{k} {v:.1f} / {r['classical_regions'][k]:.1f}"
                                            for k, v in r["pipeline_regions"].items()))
    if rows:
        keys = ("learned_detector", "pipeline_learned_crop", "pipeline_reference_crop", "classical_fit",
                "rotation_vs_classical_deg")
        print("\nmean over photos: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.2f}" for k in keys))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "reference": args.reference, "photos": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
