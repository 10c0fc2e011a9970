"""The job directory beside the output (``OUTPUT.parts/``): finished parts, resume, final assembly.

Why: a long job killed at any moment (``kill -9``, a lost machine) must continue where it stopped and
end with the same output file as an uninterrupted run. Each part's data is written atomically, then
its meta (counts, bad rows) atomically: a part counts as done only when both exist, so a kill between
the two just redoes that part. ``job.json`` records what produced the parts (input size and mtime,
format, columns, part size, model); re-running with a different input or options is refused instead
of mixing two jobs. The output (and the rejects file) is assembled from the parts in order into a
temporary file and renamed into place; then the directory is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from spellfix.batch.formats import Layout, output_header
from spellfix.fsutil import write_bytes_atomic, write_json_atomic

JOB_FILE = "job.json"


class JobDir:
    def __init__(self, output: Path):
        self.output = output
        self.path = output.with_name(output.name + ".parts")

    def open(self, fingerprint: dict[str, Any]) -> set[int]:
        """Create the directory or check it belongs to this job; return the indices of done parts."""
        job = self.path / JOB_FILE
        fingerprint = json.loads(json.dumps(fingerprint))  # compared as it reads back (tuples -> lists)
        if job.is_file():
            previous = json.loads(job.read_text(encoding="utf-8"))
            if previous != fingerprint:
                diff = sorted(k for k in {*previous, *fingerprint} if previous.get(k) != fingerprint.get(k))
                raise ValueError(
                    f"{self.path} holds parts of a different job (differs in: {', '.join(diff)}); "
                    "re-run the same command to resume it, or delete that directory to start over"
                )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(job, fingerprint)
        for stale in self.path.glob(".*.tmp"):  # a write cut by a kill
            stale.unlink(missing_ok=True)
        return {int(p.stem.split("-")[1]) for p in self.path.glob("part-*.json") if self._data(int(p.stem.split("-")[1])).is_file()}

    def _data(self, index: int) -> Path:
        return self.path / f"part-{index:07d}.data"

    def _meta(self, index: int) -> Path:
        return self.path / f"part-{index:07d}.json"

    def write(self, index: int, data: bytes, meta: dict[str, Any]) -> None:
        write_bytes_atomic(self._data(index), data)
        write_json_atomic(self._meta(index), meta)

    def metas(self, n_parts: int) -> Iterator[dict[str, Any]]:
        for i in range(n_parts):
            yield json.loads(self._meta(i).read_text(encoding="utf-8"))

    def assemble(self, layout: Layout, n_parts: int, rejects: Path | None) -> None:
        """Concatenate the parts into the output (and the rejects), atomically, then clean up."""
        missing = [i for i in range(n_parts) if not (self._data(i).is_file() and self._meta(i).is_file())]
        if missing:
            raise RuntimeError(f"{self.path}: parts {missing[:5]} are missing; re-run the same command")
        with _atomic(self.output) as out:
            if layout.fmt == "parquet":
                self._assemble_parquet(out, n_parts)
            else:
                out.write(output_header(layout))
                for i in range(n_parts):
                    with open(self._data(i), "rb") as part:
                        shutil.copyfileobj(part, out)
        if rejects is not None:
            with _atomic(rejects) as out:
                for meta in self.metas(n_parts):
                    for bad in meta["bad"]:
                        out.write((json.dumps(bad, ensure_ascii=False) + "\n").encode("utf-8"))
        shutil.rmtree(self.path)

    def _assemble_parquet(self, out: Any, n_parts: int) -> None:
        import pyarrow.parquet as pq

        writer = None
        for i in range(n_parts):
            table = pq.read_table(self._data(i))
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()


class _atomic:
    """A binary file written under a temporary name beside ``path`` and renamed on success."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.handle = os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.handle.close()
        if kind is None:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self.tmp, 0o666 & ~mask)
            os.replace(self.tmp, self.path)
        else:
            Path(self.tmp).unlink(missing_ok=True)
