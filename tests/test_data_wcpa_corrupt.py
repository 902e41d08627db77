"""The WCPA loader under corrupt files: every problem is a WCPADataError naming the file
(or, with on_error="skip", a skipped and counted sample), never another exception and never
a silently wrong sample."""

import io
import warnings
import zipfile

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyfacepnp.data.wcpa import dataset as wcpa_dataset
from pyfacepnp.data.wcpa import WCPADataError, WCPADataset, read_image, read_landmarks, read_list
from tests.test_data_wcpa import exported, fresh_copy  # noqa: F401  (the tiny exported WCPA folder)

LIST = "list/synthetic_val.csv"
RIGID = np.eye(4)
RIGID[3, :3] = [0.0, 0.0, -0.5]


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_declaring(key: str, header: dict, data: bytes = b"\0" * 64, **others) -> bytes:
    """An npz whose member ``key`` has the .npy ``header`` given, followed by ``data``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        h = io.BytesIO()
        np.lib.format.write_array_header_1_0(h, header)
        z.writestr(f"{key}.npy", h.getvalue() + data)
        for k, v in others.items():
            a = io.BytesIO()
            np.save(a, v)
            z.writestr(f"{k}.npy", a.getvalue())
    return buf.getvalue()


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    d = bytearray(data)
    sof = d.find(b"\xff\xc0")
    d[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(d)


def lines(n, fmt="{} {}"):
    return "".join(fmt.format(400 + i, 300 + (i * 7) % 50) + "\n" for i in range(n))


def expect_error_and_skip(root, kind, message, index=1):
    """Sample ``index`` raises a WCPADataError naming its ``kind`` file, and is skipped and
    counted under on_error="skip" while the others load."""
    ds = WCPADataset(root, LIST, crop_size=32, require_info=True, return_image=False)
    path = ds.paths(index)[kind]
    with pytest.raises(WCPADataError, match=message) as err:
        ds[index]
    assert err.value.path == str(path) and str(err.value).startswith(str(path))
    skip = WCPADataset(root, LIST, crop_size=32, require_info=True, return_image=False, on_error="skip")
    with pytest.warns(UserWarning, match=f"skipping sample {index}"):
        assert skip[index] is None
    assert skip.num_skipped == 1
    assert all(skip[i] is not None for i in range(len(skip)) if i != index) and skip.num_skipped == 1


INFO_CASES = [  # (npz bytes, message)
    (lambda: npz_bytes(verts=np.full((1220, 3), "a"), R_t=RIGID), r"verts must hold real numbers .* got dtype <U1"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3), "S3"), R_t=RIGID), r"verts must hold real numbers .* got dtype \|S3"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3)), R_t=np.full((4, 4), b"x")), r"R_t must hold real numbers"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3), [("a", "f4")]), R_t=RIGID), r"verts must hold real numbers"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3), "datetime64[s]"), R_t=RIGID), r"got dtype datetime64\[s\]"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3), complex), R_t=RIGID), r"got dtype complex128"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3), bool), R_t=RIGID), r"got dtype bool"),
    (lambda: (lambda b: (np.save(b, np.zeros((1220, 3))), b.getvalue())[1])(io.BytesIO()),
     r"a single \.npy array, not an \.npz archive"),
    (lambda: npz_declaring("verts", {"descr": "<f8", "fortran_order": False, "shape": (10 ** 10, 3)}, R_t=RIGID),
     r"verts must have shape \(1220, 3\), got \(10000000000, 3\)"),
    (lambda: npz_declaring("R_t", {"descr": "<f4", "fortran_order": False, "shape": (4, 4)}, b"\0" * 10,
                           verts=np.zeros((1220, 3))), r"R_t: array data is cut short \(10 of 64 bytes\)"),
    (lambda: npz_bytes(verts=np.full((1220, 3), 1e39), R_t=RIGID), r"verts are out of range"),
    (lambda: npz_bytes(verts=np.zeros((1220, 3)), R_t=np.where(np.eye(4) > 0, np.inf, 0)), r"R_t values contain NaN"),
]


@pytest.mark.parametrize("make, message", INFO_CASES)
def test_info_errors_name_the_file_and_are_skipped(exported, tmp_path, make, message):  # noqa: F811
    root = fresh_copy(exported, tmp_path)
    WCPADataset(root, LIST).paths(1)["info"].write_bytes(make())
    expect_error_and_skip(root, "info", message)


LANDMARK_CASES = [
    ("400 400\n" * 68, r"landmarks are degenerate: all 68 lie within 0 px"),
    ("400 400\n" * 67 + "400.5 400.5\n", r"landmarks are degenerate"),
    (lines(34) + "4e38 300\n" * 34, r"landmarks are out of range"),  # Inf after the float32 cast
    (lines(68, "{} {}e400"), r"NaN or infinite"),
    ("".join(f"{5000 + i} {5000 + i}\n" for i in range(68)), r"landmarks lie outside the 800x800 image"),
    (b"\xff\xfe" + lines(68).encode(), r"landmark file is not numeric text"),
    ("1 2\n" * (1 << 19), r"more than the 1048576 a landmark file may have"),
]


@pytest.mark.parametrize("content, message", LANDMARK_CASES)
def test_landmark_errors_name_the_file_and_are_skipped(exported, tmp_path, content, message):  # noqa: F811
    root = fresh_copy(exported, tmp_path)
    path = WCPADataset(root, LIST).paths(1)["landmarks"]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    expect_error_and_skip(root, "landmarks", message)


def test_non_finite_crop_is_never_returned(exported, tmp_path, monkeypatch):  # noqa: F811
    # The last guard: whatever slips through the checks, a non-finite item is an error.
    root = fresh_copy(exported, tmp_path)
    target, real = read_landmarks(WCPADataset(root, LIST).paths(1)["landmarks"]), wcpa_dataset.crop_affine_from_landmarks
    def affine(lm, *a, **k):
        return np.full((2, 3), np.nan) if np.array_equal(lm, target) else real(lm, *a, **k)

    monkeypatch.setattr(wcpa_dataset, "crop_affine_from_landmarks", affine)
    expect_error_and_skip(root, "landmarks", r"sample's 'crop_affine' is not finite")


def _image_bytes(exported):
    ds = WCPADataset(exported[0], LIST)
    return ds.paths(1)["image"].read_bytes()


def _image_damages(good: bytes):
    sos = good.find(b"\xff\xda")
    marker_in_scan = bytearray(good)
    marker_in_scan[sos + 400:sos + 402] = b"\xff\x12"
    return [
        (good[:-3000] + b"\xff\xd9", "decodes to the uniform grey"),  # truncated, padded with an end marker
        (good[:-64] + b"\xff\xd9", "decodes to the uniform grey"),
        (good[:len(good) // 2], "no end-of-image marker"),
        (jpeg_with_size(good, 60000, 60000), r"declares a 60000x60000 picture, above the loader's maximum"),
        (jpeg_with_size(good, 800, 0), r"declares an empty 800x0 picture"),
        (bytes(marker_in_scan), r"unexpected marker 0xFF12"),
        (good + b"trailing", r"bytes of data after the end-of-image marker"),
        (b"\xff\xd8\xff\xe0\x00\xff", "runs past the end of the file"),
    ]


def test_image_errors_name_the_file_and_are_skipped(exported, tmp_path):  # noqa: F811
    good = _image_bytes(exported)
    for i, (data, message) in enumerate(_image_damages(good)):
        root = fresh_copy(exported, tmp_path / str(i))
        WCPADataset(root, LIST).paths(1)["image"].write_bytes(data)
        expect_error_and_skip(root, "image", message)


def test_bit_flips_that_decode_to_grey_are_refused(exported, tmp_path):  # noqa: F811
    good = _image_bytes(exported)
    ref = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_GRAYSCALE)
    sos = good.find(b"\xff\xda")
    rng = np.random.default_rng(0)
    path, grey = tmp_path / "x_ar.jpg", 0
    for _ in range(300):
        d = bytearray(good)
        d[int(rng.integers(sos + 20, len(d) - 2))] ^= 1 << int(rng.integers(8))
        y = cv2.imdecode(np.frombuffer(bytes(d), np.uint8), cv2.IMREAD_GRAYSCALE)
        # the symptom: the end of the picture comes back as the decoder's grey fill
        if y is None or not ((y[-16:, -16:] == 128) & (ref[-16:, -16:] != 128)).all():
            continue
        grey += 1
        path.write_bytes(bytes(d))
        with pytest.raises(WCPADataError, match="truncated or corrupt") as err:
            read_image(path)
        assert err.value.path == str(path)
    assert grey >= 3  # the search did find such flips


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 3],
                                    [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
                                    [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
                                    [cv2.IMWRITE_JPEG_OPTIMIZE, 1]])
@pytest.mark.parametrize("gray", [False, True])
def test_real_jpegs_load_and_their_truncations_do_not(tmp_path, params, gray):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:203, :317]
    img = np.stack([np.sin(xx / 11.0), np.cos(yy / 9.0), np.sin((xx + yy) / 17.0)], -1) * 100 + 128
    img = (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray else img
    ok, buf = cv2.imencode(".jpg", img, params)
    data, path = buf.tobytes(), tmp_path / "x.jpg"
    path.write_bytes(data)
    got = read_image(path)
    want = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    np.testing.assert_array_equal(got, want)
    # A progressive file cut inside its last scan (a refinement pass) decodes to a complete,
    # slightly less precise picture, which no check can tell: cut off whole scans there.
    keep = data.rfind(b"\xff\xda") if cv2.IMWRITE_JPEG_PROGRESSIVE in params else len(data) - 300
    for damaged in (data[:keep] + b"\xff\xd9", data[:keep]):
        path.write_bytes(damaged)
        with pytest.raises(WCPADataError, match="truncated or corrupt"):
            read_image(path)


LIST_HEADER = "subject_id,facial_action,img_id\n"


@pytest.mark.parametrize("entry, message", [
    ("..,..,x", r"field 'subject_id' is not a plain name"),
    ("/etc,x,y", r"field 'subject_id' is not a plain name"),
    ("a,b/../../..,c", r"field 'facial_action' is not a plain name"),
    ("a,b,c\\d", r"field 'img_id' is not a plain name"),
    ("a" * 300 + ",b,c", r"field 'subject_id' is longer than 200 bytes"),
    ("a,,c", r"empty field"),
])
def test_list_entries_outside_the_root_are_refused(exported, tmp_path, entry, message):  # noqa: F811
    root = fresh_copy(exported, tmp_path)
    lst = root / LIST
    lst.write_text(lst.read_text() + entry + "\n")
    with pytest.raises(WCPADataError, match="line 5: .*" + message) as err:
        WCPADataset(root, LIST)
    shown = str(dict(zip(("subject_id", "facial_action", "img_id"), entry.split(","))))
    assert err.value.path == str(lst) and shown[:100] in str(err.value)
    with pytest.raises(WCPADataError, match=message):
        read_list(lst)
    ds = WCPADataset(root, LIST, crop_size=32, on_error="skip")  # the bad entry is a skipped sample
    assert len(ds) == 4
    with pytest.warns(UserWarning, match="skipping sample 3"):
        assert ds[3] is None
    assert ds.num_skipped == 1 and ds[0] is not None


@pytest.mark.parametrize("content, message", [
    (LIST_HEADER.encode() + b"a,b,c\na,b,\xff\xfe\n", r"list CSV is not UTF-8 text \(line 3, byte 42"),
    (LIST_HEADER.encode() + b'a,b,"' + b"c" * 200000 + b'"\n', r"list CSV cannot be read \(field larger"),
    (b"subject,img\n", r"list CSV lacks column"),
])
def test_unreadable_list_files_are_errors(exported, tmp_path, content, message):  # noqa: F811
    root = fresh_copy(exported, tmp_path)
    (root / LIST).write_bytes(content)
    for on_error in ("raise", "skip"):
        with pytest.raises(WCPADataError, match=message) as err:
            WCPADataset(root, LIST, on_error=on_error)
        assert err.value.path == str(root / LIST)


def test_list_with_a_byte_order_mark_is_read(exported, tmp_path):  # noqa: F811
    root = fresh_copy(exported, tmp_path)
    (root / LIST).write_bytes(b"\xef\xbb\xbf" + (root / LIST).read_bytes())
    assert len(WCPADataset(root, LIST)) == 3


# ---------------------------------------------------------------- property test
def _flip(data: bytes, flips) -> bytes:
    d = bytearray(data)
    for pos, bit in flips:
        d[pos % len(d)] ^= 1 << bit
    return bytes(d)


_finite = st.floats(-1e3, 1e3, allow_nan=False)
_bad_values = st.sampled_from([np.nan, np.inf, -np.inf, 1e39, -4e38])
# Each strategy draws (file kind, corrupt bytes given the good bytes, whether it must fail).
_corruptions = st.one_of(
    st.tuples(st.sampled_from(["image", "landmarks", "info", "list"]), st.floats(0, 0.999),
              st.booleans()).map(lambda t: (t[0], "truncate", t[1:])),
    st.tuples(st.sampled_from(["image", "landmarks", "info", "list"]),
              st.binary(max_size=300)).map(lambda t: (t[0], "random", t[1])),
    st.tuples(st.just("image"), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), min_size=1,
                                         max_size=4)).map(lambda t: ("image", "flip", t[1])),
    st.tuples(st.just("info"), st.sampled_from(["verts", "R_t"]),
              st.sampled_from(["<U2", "|S4", "<c16", "|b1", "<M8[s]", "<m8[s]", "<f8", "<i4"]),
              st.sampled_from([(1220, 3), (4, 4), (10 ** 12, 3), (3, 1220), (2 ** 40,), ()]),
              ).map(lambda t: ("info", "header", t[1:])),
    st.tuples(st.just("info"), st.sampled_from(["verts", "R_t"]), st.integers(0, 15),
              _bad_values).map(lambda t: ("info", "nonfinite", t[1:])),
    st.tuples(st.just("landmarks"), st.integers(0, 67), st.integers(0, 1), _bad_values,
              _finite).map(lambda t: ("landmarks", "nonfinite", t[1:])),
    st.tuples(st.just("list"), st.lists(st.sampled_from(["..", "/abs", "a/b", "", "x" * 256, "ok", "\\w", "."]),
                                        min_size=3, max_size=3)).map(lambda t: ("list", "entry", t[1])),
)


def _corrupt(kind, how, arg, good: bytes):
    """Corrupt bytes, and whether they can still be a valid file (only image bit flips can)."""
    if how == "truncate":
        frac, pad = arg
        cut = good[:int(frac * len(good))]
        if kind == "image" and pad:  # padded with an end marker: at least 64 bytes missing
            cut = good[:min(int(frac * len(good)), len(good) - 64)] + b"\xff\xd9"
        if kind == "landmarks":  # at least the whole last line missing
            cut = good[:int(frac * (len(good) - 40))]
        if kind == "list":  # a shorter list is a valid list: damage the rest of the line instead
            return cut + b"\xff", False
        return cut, False
    if how == "random":
        prefix = {"list": LIST_HEADER.encode(), "info": b"PK\x03\x04", "image": b"\xff\xd8\xff"}.get(kind, b"")
        data = prefix + arg
        if kind == "list":
            data += b",\xff\n"
        return data, False
    if how == "flip":
        return _flip(good, arg), True
    if how == "header":
        key, descr, shape = arg
        other = {"R_t": RIGID} if key == "verts" else {"verts": np.zeros((1220, 3))}
        valid_shape = shape == ((1220, 3) if key == "verts" else (4, 4))
        if descr in ("<f8", "<i4") and valid_shape:
            descr = ">f8" if descr == "<f8" else "<U1"  # keep it corrupt: big-endian verts are fine
            if descr == ">f8":
                return npz_declaring(key, {"descr": descr, "fortran_order": False, "shape": shape}, b"\0" * 10,
                                     **other), False  # data cut short
        return npz_declaring(key, {"descr": descr, "fortran_order": False, "shape": shape}, **other), False
    if how == "nonfinite":
        if kind == "info":
            key, i, value = arg
            with np.load(io.BytesIO(good)) as z:
                arrays = {k: z[k].astype(np.float64) for k in z.files}
            arrays[key].reshape(-1)[i] = value
            return npz_bytes(**arrays), False
        row, col, value, _ = arg
        pts = np.loadtxt(io.StringIO(good.decode()), ndmin=2)
        pts[row, col] = value
        return "".join(f"{x!r} {y!r}\n" for x, y in pts.tolist()).encode(), False
    if how == "entry":
        fields = arg if any(f != "ok" for f in arg) else ["..", *arg[1:]]
        return good + (",".join(fields) + "\n").encode(), False
    raise AssertionError(how)


@pytest.fixture(scope="module")
def corrupt_root(exported, tmp_path_factory):  # noqa: F811
    return fresh_copy(exported, tmp_path_factory.mktemp("prop"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_corruptions)
def test_property_corrupt_files_are_errors_naming_the_file_or_skipped(corrupt_root, case):
    kind, how, arg = case
    root = corrupt_root
    paths = WCPADataset(root, LIST).paths(1)
    path = root / LIST if kind == "list" else paths[kind]
    good = path.read_bytes()
    data, may_be_valid = _corrupt(kind, how, arg, good)
    try:
        path.write_bytes(data)
        for on_error in ("raise", "skip"):
            try:
                ds = WCPADataset(root, LIST, crop_size=16, require_info=True, return_image=False, on_error=on_error)
            except WCPADataError as exc:
                assert kind == "list" and exc.path == str(path) and str(path) in str(exc)
                continue
            indices = range(len(ds)) if kind == "list" else [1]
            for i in indices:
                if on_error == "raise":
                    try:
                        item = ds[i]
                    except WCPADataError as exc:
                        assert exc.path == str(path) and str(exc).startswith(str(path))
                        continue
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        before = ds.num_skipped
                        item = ds[i]
                    if item is None:
                        assert ds.num_skipped == before + 1
                        continue
                assert may_be_valid or (kind == "list" and i < 3), f"accepted a corrupt {kind} ({how})"
                assert all(torch.isfinite(v).all() for v in item.values()
                           if torch.is_tensor(v) and v.is_floating_point())
    finally:
        path.write_bytes(good)


def test_errors_pickle_and_cross_dataloader_workers(exported, tmp_path):  # noqa: F811
    import pickle

    from torch.utils.data import DataLoader

    e = pickle.loads(pickle.dumps(WCPADataError("/x/y.npz", "bad")))
    assert (e.path, e.problem, str(e)) == ("/x/y.npz", "bad", "/x/y.npz: bad")
    root = fresh_copy(exported, tmp_path)
    raising = WCPADataset(root, LIST, crop_size=32)
    raising.samples.append(("no", "such", "sample"))
    lst = root / LIST
    lst.write_text(lst.read_text() + "..,b,c\n")
    ds = pickle.loads(pickle.dumps(WCPADataset(root, LIST, crop_size=32, on_error="skip")))  # as spawned workers get it
    with pytest.warns(UserWarning, match="not a plain name"):
        assert ds[3] is None
    loader = DataLoader(raising, batch_size=1, num_workers=1, sampler=[3])
    with pytest.raises(WCPADataError, match=r"no/such/sample_ar\.jpg: image file is missing"):
        next(iter(loader))
