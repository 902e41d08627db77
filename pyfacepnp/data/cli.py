"""``pyfacepnp data preview | export``: look at the synthetic data, write it in WCPA layout.

The main CLI registers these with :func:`add_data_commands`; ``python -m
pyfacepnp.data.cli preview --out sheet.png`` runs them directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_data_commands", "main"]


def cmd_preview(args) -> int:
    import cv2

    from pyfacepnp.data.preview import contact_sheet
    from pyfacepnp.data.synthetic import SyntheticFaceDataset

    ds = SyntheticFaceDataset(args.split, num_samples=args.start + args.num, seed=args.seed,
                              image_size=800, crop_size=args.size, render_image=False,
                              num_identities=args.start + args.num,  # a different person per tile
                              supersample=args.supersample)
    sheet = contact_sheet(ds, range(args.start, args.start + args.num), cols=args.cols, overlay=not args.no_overlay)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"could not write {out} (unsupported extension or unwritable folder)")
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {args.num} samples of split {args.split!r})")
    return 0


def cmd_export(args) -> int:
    from pyfacepnp.data.synthetic import SyntheticFaceDataset
    from pyfacepnp.data.wcpa import export_synthetic

    ds = SyntheticFaceDataset(args.split, num_samples=args.num_samples, seed=args.seed, image_size=800,
                              crop_size=64, render_image=True)
    path = export_synthetic(args.root, ds, list_name=args.list_name, jpeg_quality=args.jpeg_quality,
                            landmark_format=args.landmark_format, progress=True)
    print(f"wrote {args.num_samples} samples under {args.root}; list: {path}")
    return 0


def _add_subcommands(sub) -> None:
    p = sub.add_parser("preview", help="contact sheet of synthetic samples with landmarks and mesh")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=int, default=12, help="number of samples")
    p.add_argument("--start", type=int, default=0, help="first sample index")
    p.add_argument("--cols", type=int, default=3, help="samples per row")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels")
    p.add_argument("--no-overlay", action="store_true", help="crops only, without ground truth")
    p.add_argument("--supersample", type=int, default=2, help="anti-aliasing factor of the crops")
    p.set_defaults(func=cmd_preview)

    e = sub.add_parser("export", help="write a synthetic set in the WCPA track-2 folder layout")
    e.add_argument("--root", required=True, help="output folder")
    e.add_argument("--split", default="train", choices=["train", "val", "test"])
    e.add_argument("--num-samples", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--list-name", default=None, help="CSV name under list/ (default synthetic_<split>.csv)")
    e.add_argument("--jpeg-quality", type=int, default=95)
    e.add_argument("--landmark-format", default="float", choices=["float", "int"])
    e.set_defaults(func=cmd_export)


def add_data_commands(subparsers) -> None:
    """Register ``data preview`` and ``data export`` on an argparse subparsers object.

    Each command sets ``func``; call ``args.func(args)`` (returns an exit code).
    """
    data = subparsers.add_parser("data", help="synthetic data tools: preview sheet, WCPA-format export")
    _add_subcommands(data.add_subparsers(dest="data_command", required=True))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyfacepnp.data.cli", description=__doc__.splitlines()[0])
    _add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
