"""The WCPA track-2 folder format: the dataset (:mod:`~pyfacepnp.data.wcpa.dataset`), its
file readers (:mod:`~pyfacepnp.data.wcpa.files`) and checks (:mod:`~pyfacepnp.data.wcpa.checks`,
:mod:`~pyfacepnp.data.wcpa.jpeg`), the synthetic exporter and the submission array
(:mod:`~pyfacepnp.data.wcpa.export`); import them from here.

Layout (as distributed by the challenge)::

    root/image/{subject}/{action}/{id}_ar.jpg                800x800 RGB photographs
    root/68landmarks/{subject}/{action}/{id}_68landmarks.txt 68 lines "x y" (pixels)
    root/info/{subject}/{action}/{id}_info.npz               verts (1220, 3), R_t (4, 4)
    root/list/*.csv                                          subject_id,facial_action,img_id

``info`` exists for training samples only. Poses in ``R_t`` use the row-vector OpenGL
convention (see :mod:`pyfacepnp.geometry.conventions`); the loader also yields them in the
OpenCV convention, with the same keys as :class:`~pyfacepnp.data.synthetic.SyntheticFaceDataset`.

Every bad file is a :class:`WCPADataError` naming it (the checks are those of
:mod:`pyfacepnp.data.wcpa.checks`), never another exception or a silently wrong sample.
"""

from pyfacepnp.data.wcpa.checks import WCPADataError
from pyfacepnp.data.wcpa.dataset import WCPADataset, collate_skip_none
from pyfacepnp.data.wcpa.export import SUBMISSION_COLUMNS, export_synthetic, read_submission, write_submission
from pyfacepnp.data.wcpa.files import LIST_COLUMNS, read_image, read_info, read_landmarks, read_list, sample_paths

__all__ = [
    "LIST_COLUMNS",
    "SUBMISSION_COLUMNS",
    "WCPADataError",
    "WCPADataset",
    "collate_skip_none",
    "export_synthetic",
    "read_image",
    "read_info",
    "read_landmarks",
    "read_list",
    "read_submission",
    "sample_paths",
    "write_submission",
]
