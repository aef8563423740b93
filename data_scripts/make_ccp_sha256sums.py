"""Regenerate qparse_lite/data/ccp_sha256sums.txt from a CCP folder of the pinned upstream commit.

Usage (from the repository root):

    python data_scripts/make_ccp_sha256sums.py ROOT [--out qparse_lite/data/ccp_sha256sums.txt] [--check]

ROOT holds the upstream layout of bearpaw/clothing-co-parsing at commit fe34fb7 (e.g. the extracted
GitHub archive, or a read-only mirror such as the one ``QPARSE_CCP_ROOT`` names for the tests). Only the files the kit
reads are listed: LICENSE, label_list.mat, photos/0001.jpg … photos/1004.jpg and
annotations/pixel-level/0001.mat … 1004.mat (2,010 files). With --check the existing list is compared
with ROOT instead of being rewritten (exit status 1 on any difference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qparse_lite.data.download import CCP_SUMS_FILE, read_sums, sha256_file, write_sums  # noqa: E402


def listed_files(root: Path) -> list[str]:
    """The relative paths the kit reads, in sorted order; raises when one is missing."""
    rel = ["LICENSE", "label_list.mat"]
    rel += [f"photos/{i:04d}.jpg" for i in range(1, 1005)]
    rel += [f"annotations/pixel-level/{i:04d}.mat" for i in range(1, 1005)]
    missing = [r for r in rel if not (root / r).is_file()]
    if missing:
        raise SystemExit(f"{root}: {len(missing)} expected file(s) missing, e.g. {missing[0]}")
    return sorted(rel)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="CCP folder (upstream layout, commit fe34fb7)")
    ap.add_argument("--out", type=Path, default=CCP_SUMS_FILE, help="checksum list to write")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    sums = {r: sha256_file(args.root / r) for r in listed_files(args.root)}
    if args.check:
        old = read_sums(args.out)
        diff = sorted(set(old) ^ set(sums)) + sorted(k for k in set(old) & set(sums) if old[k] != sums[k])
        for k in diff[:20]:
            print(f"differs: {k}")
        print(f"{len(sums)} files, {len(diff)} difference(s)")
        return 1 if diff else 0
    write_sums(args.out, sums)
    print(f"wrote {len(sums)} checksums to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
