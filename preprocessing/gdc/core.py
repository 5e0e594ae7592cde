"""What every part of the GDC client shares: the API address, the data kinds a cohort may ask for,
the client's errors, the check that a file record is safe to write to disk, byte sizes as the
portal shows them.

It exists so that the query, the plan and the transfer agree on these without importing each other.
"""
from __future__ import annotations

import re

from ..inventory import SLIDE_TYPE

GDC_API = "https://api.gdc.cancer.gov"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Data kinds a cohort may ask for: GDC file fields and the values they must have. Every kind names
# its data_type: a workflow's files are of several types (STAR - Counts also writes Splice Junction
# Quantification files, which are controlled), and access is filtered separately (file_filters).
KINDS: dict[str, dict[str, list[str]]] = {
    "slides": {"data_type": [SLIDE_TYPE], "data_format": ["SVS"], "experimental_strategy": ["Diagnostic Slide"]},
    "rna": {"data_type": ["Gene Expression Quantification"], "analysis.workflow_type": ["STAR - Counts"]},
    "cnv": {"data_type": ["Gene Level Copy Number"]},
    "mutations": {"data_type": ["Masked Somatic Mutation"], "data_format": ["MAF"]},
}
KIND_OF_TYPE = {v["data_type"][0]: k for k, v in KINDS.items()}
#: gene-level copy number pipelines in order of preference; AscatNGS (WGS) only when asked for
DEFAULT_CNV_WORKFLOWS = ["ASCAT3", "ASCAT2", "ABSOLUTE LiftOver"]
DEFAULT_SLIDE_CODES = ["01"]  # primary tumour
ACCESS = ("open", "controlled")


class GDCError(RuntimeError):
    """An answer from the GDC API that cannot be used, or a file that could not be fetched intact."""


class UnsafeRecord(GDCError, ValueError):
    """A file id that is not a UUID or a file name that could leave ``data_dir``: never written."""


class FileRefused(GDCError):
    """A fault of one file that retrying cannot fix (401/403, 404, md5 wrong every time): the file
    is marked failed with ``reason`` and the rest of the cohort goes on."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def check_file_record(file_id: str, file_name: str, source: str) -> None:
    """Refuse a file id that is not a lower-case UUID, or a file name with a path separator, ``..``
    or a control character: the file is written to ``{data_dir}/{file_id}/{file_name}``."""
    if not UUID.fullmatch(str(file_id)):
        raise UnsafeRecord(f"{source}: file id {file_id!r} is not a UUID; refused (files are written to "
                           "{data_dir}/{file_id}/{file_name})")
    name = str(file_name)
    if (not name or name in (".", "..") or "/" in name or "\\" in name or ".." in name
            or any(ord(ch) < 32 for ch in name)):
        raise UnsafeRecord(f"{source}: file {file_id}: file name {name!r} holds a path separator, '..' or a "
                           "control character; refused, nothing is written outside data_dir")


def human(n: float) -> str:
    """Bytes in decimal units (``1.23 GB``), as the GDC portal shows sizes."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def kind_of(data_type: str) -> str:
    """The cohort data kind of a GDC data type (``Slide Image`` → ``slides``); else the type itself."""
    return KIND_OF_TYPE.get(data_type, data_type)

