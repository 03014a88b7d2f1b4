"""Generates the protobuf and gRPC stubs of the contract into ``src/durable_iterator/v1``.

    python clients/python/scripts/generate.py            # rewrite the committed stubs
    python clients/python/scripts/generate.py --out DIR  # write them to DIR instead (the check)

Uses the protoc bundled with ``grpcio-tools`` (no system protoc) and the ``mypy-protobuf``
plugins for the ``.pyi`` files; both are pinned in the ``dev`` extra, because another version
writes other bytes and ``tests/test_generated.py`` compares the committed files with a fresh run.

protoc writes absolute imports named after the proto package (``from durable_iterator.v1
import ...``); they are rewritten to relative ones so that the stubs belong to this package
wherever it is installed, and cannot pick up another copy of the contract.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON_CLIENT = Path(__file__).resolve().parents[1]
REPO = PYTHON_CLIENT.parents[1]
DEFAULT_PROTO_ROOT = REPO / "proto"
PROTO_FILE = "durable_iterator/v1/durable_iterator.proto"
PACKAGE_DIR = PYTHON_CLIENT / "src" / "durable_iterator" / "v1"

#: The files protoc and the plugins write, in ``durable_iterator/v1/`` of the output.
GENERATED = (
    "durable_iterator_pb2.py",
    "durable_iterator_pb2.pyi",
    "durable_iterator_pb2_grpc.py",
    "durable_iterator_pb2_grpc.pyi",
)

_ABSOLUTE_IMPORT = re.compile(r"^from durable_iterator\.v1 import ", re.MULTILINE)


def _plugin(name: str) -> str:
    """The path of a protoc plugin installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def generate(out_dir: Path, proto_root: Path = DEFAULT_PROTO_ROOT) -> list[Path]:
    """Writes the stubs of ``proto_root/PROTO_FILE`` into ``out_dir``; returns their paths."""
    try:
        import grpc_tools
    except ImportError as error:  # pragma: no cover - only without the dev extra
        raise SystemExit("grpcio-tools is missing: pip install -e '.[dev]'") from error
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as raw:
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={raw}",
            f"--grpc_python_out={raw}",
            f"--mypy_out={raw}",
            f"--mypy_grpc_out={raw}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            PROTO_FILE,
        ]
        # mypy-protobuf reports each file it writes: shown only when something failed.
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise SystemExit(f"protoc failed ({run.returncode}):\n{run.stderr}{run.stdout}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            source = Path(raw) / "durable_iterator" / "v1" / name
            text = _ABSOLUTE_IMPORT.sub("from . import ", source.read_text(encoding="utf-8"))
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
        return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="where to write the stubs")
    parser.add_argument("--proto-root", type=Path, default=DEFAULT_PROTO_ROOT)
    args = parser.parse_args()
    for path in generate(args.out, args.proto_root):
        print(path)


if __name__ == "__main__":
    main()
