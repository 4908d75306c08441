"""``painvrl download``: public datasets into a folder, checksum-verified (needs internet).

    painvrl download movielens data/ml-latest-small   # GroupLens ml-latest-small (ratings, movies, tags)
    painvrl download tiktok data/tiktok               # MMSSL / DiffMM TikTok release, converted to MMRec layout

The TikTok release is fetched from the HKUDS/DiffMM repository at a fixed commit (painvrl.data.tiktok) and each
file is checked against its known sha256 before the pickled interaction matrices are read with the project's
restricted unpickler. ``--url`` points at a mirror of the same files (``file://`` folders work too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from painvrl.errors import PainvrlInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    movielens = datasets.add_parser("movielens", help="GroupLens ml-latest-small (checksum-verified zip)")
    movielens.add_argument("dest", help="folder to create, e.g. data/ml-latest-small")
    movielens.add_argument("--url", default=None, help="another archive URL (then pass --sha256 or --no-checksum)")
    movielens.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    movielens.add_argument("--no-checksum", action="store_true", help="skip the archive checksum (other URLs)")
    tiktok = datasets.add_parser("tiktok", help="the MMSSL / DiffMM TikTok release, converted to MMRec layout "
                                 "(tiktok.inter, image_feat.npy, audio_feat.npy); prints its summary")
    tiktok.add_argument("dest", help="folder to create, e.g. data/tiktok")
    tiktok.add_argument("--url", default=None,
                        help="base URL of the release files (URL/trnMat.pkl, ...; default: the HKUDS/DiffMM "
                             "repository at the pinned commit)")
    tiktok.add_argument("--no-checksum", action="store_true",
                        help="skip the per-file sha256 checks (a mirror whose files differ from the release)")


def run(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    if args.dataset == "movielens":
        from painvrl.data import movielens

        if args.url is not None and args.sha256 is None and not args.no_checksum:
            raise PainvrlInputError("download movielens: --url needs --sha256 (or --no-checksum)")
        url = args.url or movielens.OFFICIAL_ZIP_URL
        sha256 = None if args.no_checksum else (args.sha256 or movielens.OFFICIAL_ZIP_SHA256)
        print(movielens.download_movielens(dest, url=url, sha256=sha256))
        return 0
    from painvrl.config import load_config
    from painvrl.data import tiktok
    from painvrl.data.registry import load_dataset

    checks: dict[str, str | None] | None = dict.fromkeys(tiktok.RELEASE_FILES) if args.no_checksum else None
    folder = tiktok.download_tiktok(dest, url=args.url or tiktok.RELEASE_URL, sha256=checks)
    config = load_config(None, ["dataset.name=mmrec", f"dataset.path={folder.resolve()}", "dataset.split=explicit"])
    print(json.dumps(load_dataset(config.dataset).summary(), indent=2, default=str))
    print(f"wrote {folder}")
    return 0
