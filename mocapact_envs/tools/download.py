"""``mocapact-download``: MoCapAct's published files from the Hugging Face Hub (:mod:`mocapact_envs.hub`),
and with ``--convert`` its policies converted (:mod:`mocapact_envs.tools.convert_models`).

    mocapact-download --list
    mocapact-download experts-small rollouts-sample-small --local-dir mocapact_data --convert
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mocapact_envs.extras import needs_extra
from mocapact_envs.hub import ARTEFACTS, DownloadError, download


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mocapact-download", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"what to download: {', '.join(ARTEFACTS)}")
    parser.add_argument("--local-dir", type=Path, default=Path("mocapact_data"), help="where files are unpacked")
    parser.add_argument("--parts", type=int, nargs="+", help="only these numbered parts (experts-all, rollouts-*)")
    parser.add_argument("--revision", default="main", help="repo branch, tag or commit")
    parser.add_argument("--delete-archives", action="store_true", help="drop each cached archive once unpacked")
    parser.add_argument("--list", action="store_true", help="list the downloads and exit")
    parser.add_argument(
        "--convert", action="store_true", help="convert the multi-clip, GPT and transfer policies in --local-dir"
    )
    parser.add_argument("--converted-dir", type=Path, help="where converted policies go (<local-dir>/converted)")
    return parser


def convert_downloads(local_dir: str | Path, converted_dir: str | Path | None = None) -> int:
    """The ``--convert`` step: converts MoCapAct's models under ``local_dir``; returns how many failed."""
    local_dir = Path(local_dir).expanduser()
    converted_dir = Path(converted_dir) if converted_dir is not None else local_dir / "converted"
    print(f"Converting MoCapAct's policies in {local_dir} into {converted_dir}")
    with needs_extra("mocapact-download --convert"):  # torch: only the conversion needs it
        from mocapact_envs.tools.convert_models import convert_directory
    report = convert_directory(local_dir, converted_dir)
    converted, failed = len(report["converted"]), len(report["failed"])
    print(f"{converted} converted, {failed} not (see {converted_dir}/conversion_report.json)")
    return len(report["failed"])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list or not (args.names or args.convert):
        for name, item in ARTEFACTS.items():
            print(f"{name:22} {item.repo_id:26} {', '.join(item.allow_patterns()):32} {item.description}")
        return 0 if args.list else 2
    if not args.names:
        return 1 if convert_downloads(args.local_dir, args.converted_dir) else 0
    try:
        markers = download(
            args.names,
            args.local_dir,
            parts=args.parts,
            revision=args.revision,
            delete_archives=args.delete_archives,
        )
    except (ValueError, DownloadError) as error:
        print(f"mocapact-download: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(markers)} file(s) ready in {args.local_dir}")
    if args.convert:
        return 1 if convert_downloads(args.local_dir, args.converted_dir) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
