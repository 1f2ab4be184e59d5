"""Getting archives safely: download, checksum verification, path-traversal-safe extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing and could not (or may not) be downloaded.

    The message says which directory and files are expected and how to get them.
    """


class DatasetFormatError(ValueError):
    """A dataset file exists but does not have the official format."""


class ChecksumError(ValueError):
    """A file's checksum differs from the expected one (incomplete or wrong download)."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction directory."""


def md5sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of the file at ``path``."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless the file's MD5 is ``expected``."""
    actual = md5sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {Path(path).resolve()}: md5 is {actual}, expected {expected}; "
            "the file is incomplete or not the official archive")


def download_file(url: str, directory: str | Path, filename: str) -> Path:
    """Download ``url`` to ``directory/filename`` (torchvision's downloader: redirects, progress)."""
    from torchvision.datasets.utils import download_url

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    download_url(url, str(directory), filename=filename)
    path = directory / filename
    if not path.is_file():
        raise OSError(f"download of {url} produced no file at {path}")
    return path


def check_zip_members(zf: zipfile.ZipFile, dest: str | Path) -> None:
    """Raise :class:`UnsafeArchiveError` if any member would land outside ``dest``.

    Rejects absolute names, drive letters, ``..`` components that climb out of ``dest``
    and symbolic links (whose targets could point anywhere).
    """
    root = Path(os.path.realpath(dest))
    for info in zf.infolist():
        name = info.filename
        mode = info.external_attr >> 16
        if (mode & 0o170000) == 0o120000:
            raise UnsafeArchiveError(f"archive member {name!r} is a symbolic link; refusing to extract")
        target = Path(os.path.realpath(root / name))
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") \
                or not target.is_relative_to(root):
            raise UnsafeArchiveError(
                f"archive member {name!r} would be written to {target}, outside {root}; "
                "refusing to extract (path traversal)")


def safe_extract_zip(zip_path: str | Path, dest: str | Path) -> None:
    """Extract ``zip_path`` into ``dest`` after checking every member stays inside it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        check_zip_members(zf, dest)
        zf.extractall(dest)


def extract_zip_dir(zip_path: str | Path, root: str | Path, dirname: str) -> Path:
    """Extract an archive whose content is the folder ``dirname`` to ``root/dirname``, atomically.

    The archive is unpacked into a temporary folder inside ``root`` and the finished
    ``dirname`` is renamed into place, so an interrupted extraction never leaves a
    half-filled ``root/dirname`` behind.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / dirname
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{dirname}.extract-"))
    try:
        log.info("extracting %s into %s", zip_path, root)
        safe_extract_zip(zip_path, tmp)
        if not (tmp / dirname).is_dir():
            raise DatasetFormatError(f"{zip_path} does not contain the folder {dirname}/")
        if final.exists():
            raise FileExistsError(f"{final} appeared while extracting; remove one of them")
        os.replace(tmp / dirname, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
