"""The data CLI: preview sheet and WCPA export, through the module entry point and argparse."""

import argparse
import subprocess
import sys

import cv2
import numpy as np

from pyfacepnp.data.cli import add_data_commands, main
from pyfacepnp.data.wcpa import WCPADataset


def test_preview_writes_a_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["preview", "--out", str(out), "--num", "2", "--cols", "2", "--size", "64"]) == 0
    img = cv2.imread(str(out))
    # Two samples in one row, each shown clean and annotated side by side (2 x 64 px) in a
    # 2 px white border.
    assert img.shape == (68, 2 * 132, 3)
    clean, annotated = img[2:66, 2:66].astype(int), img[2:66, 66:130].astype(int)
    assert np.abs(clean - annotated).mean() > 2  # the overlay changed the picture


def test_export_via_registered_subcommand(tmp_path):
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "export", "--root", str(tmp_path), "--num-samples", "2", "--split", "test"])
    assert args.func(args) == 0
    ds = WCPADataset(tmp_path, "list/synthetic_test.csv", crop_size=32, return_image=False)
    assert len(ds) == 2 and ds[1]["vertices"].shape == (1220, 3)


def test_module_entry_point_reports_errors(tmp_path):
    bad = tmp_path / "sheet.unknown_ext"
    proc = subprocess.run([sys.executable, "-m", "pyfacepnp.data.cli", "preview", "--out", str(bad), "--num", "1",
                           "--size", "32"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "could not write" in proc.stderr
