"""Fetch the published CoOp split files, ImageNet's classnames.txt and TaskRes' enhanced bases (gdown).

    python -m datasets.download --root DATA --dataset OxfordPets DescribableTextures   # or --all
    python -m datasets.download --enhanced-bases strong_base

Images are not fetched (their licences ask for a manual download; DATASETS.md says from where).
An existing file is never overwritten. When a download fails (offline, quota, moved link) the
error is one sentence naming the file, its link, and where to put it by hand.
"""
import argparse
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from engine.errors import CheckpointError, DataError, UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name inside the dataset folder
    gdrive_id: str  # Google Drive file id, as linked from CoOp's DATASETS.md

    @property
    def url(self):
        return f"https://drive.google.com/file/d/{self.gdrive_id}/view"


CLASSNAMES = RemoteFile("classnames.txt", "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF")
# dataset class -> (folder under DATASET.ROOT, files)
REMOTE_FILES = {
    "OxfordPets": ("oxford_pets", [RemoteFile("split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs")]),
    "OxfordFlowers": ("oxford_flowers", [
        RemoteFile("split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        RemoteFile("cat_to_name.json", "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
    ]),
    "DescribableTextures": ("dtd", [RemoteFile("split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x")]),
    "EuroSAT": ("eurosat", [RemoteFile("split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o")]),
    "StanfordCars": ("stanford_cars", [RemoteFile("split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT")]),
    "Food101": ("food-101", [RemoteFile("split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl")]),
    "SUN397": ("sun397", [RemoteFile("split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq")]),
    "Caltech101": ("caltech-101", [RemoteFile("split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN")]),
    "UCF101": ("ucf101", [RemoteFile("split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y")]),
    "ImageNet": ("imagenet", [CLASSNAMES]),
    "ImageNetV2": ("imagenetv2", [CLASSNAMES]),
    "ImageNetSketch": ("imagenet-sketch", [CLASSNAMES]),
    "ImageNetA": ("imagenet-adversarial", [CLASSNAMES]),
    "ImageNetR": ("imagenet-rendition", [CLASSNAMES]),
}
UCF101_MIDFRAMES = RemoteFile("UCF-101-midframes.zip", "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O")
ENHANCED_BASES_FOLDER = "https://drive.google.com/drive/folders/1_ehtvBRWbbcYZRTAcvtCyUTD_tL4GUiV"


def download_file(remote, dest, error=DataError):
    """Download ``remote`` to ``dest`` (kept if it exists); a failure raises ``error`` naming both."""
    if os.path.exists(dest):
        logger.info("Keeping the existing %s", dest)
        return dest
    import gdown

    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = dest + ".part"
    try:
        result = gdown.download(id=remote.gdrive_id, output=tmp, quiet=False)
        if result is None or not os.path.exists(tmp):
            raise OSError("gdown returned no file")
    except Exception as e:  # gdown raises network, HTTP and Drive-quota errors of many types: all mean "get it by hand"
        if os.path.exists(tmp):
            os.remove(tmp)
        raise error(f"Could not download {remote.name} from {remote.url} ({type(e).__name__}: {e}); "
                    f"download it by hand and put it at {dest}.") from e
    os.replace(tmp, dest)
    logger.info("Downloaded %s to %s", remote.name, dest)
    return dest


def fetch_dataset_files(name, root):
    """Fetch the split/metadata files of dataset ``name`` into its folder under ``root``; returns their paths."""
    if name not in REMOTE_FILES:
        raise DataError(f'No published files to fetch for "{name}"; datasets with files: {", ".join(sorted(REMOTE_FILES))}.')
    folder, files = REMOTE_FILES[name]
    root = os.path.abspath(os.path.expanduser(root))
    paths = []
    for remote in files:
        dest = os.path.join(root, folder, remote.name)
        shared = os.path.join(root, "imagenet", remote.name)
        if remote is CLASSNAMES and not os.path.exists(dest) and os.path.exists(shared):
            shutil.copyfile(shared, dest)  # the variants use ImageNet's own copy (CoOp's instruction)
            logger.info("Copied %s to %s", shared, dest)
        paths.append(download_file(remote, dest))
    return paths


def fetch_enhanced_bases(dest="strong_base"):
    """Download the published ``strong_base/<Dataset>/rn50_<K>shots/model.pth.tar`` tree into ``dest``.

    Files already present are kept. Returns the paths of the checkpoint files now under ``dest``.
    """
    import gdown

    dest = os.path.abspath(os.path.expanduser(dest))
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".strong_base-") as tmp:
        try:
            result = gdown.download_folder(url=ENHANCED_BASES_FOLDER, output=tmp, quiet=False)
            if not result:
                raise OSError("gdown returned no files")
        except Exception as e:  # see download_file
            raise CheckpointError(
                f"Could not download the enhanced bases from {ENHANCED_BASES_FOLDER} ({type(e).__name__}: {e}); "
                f"download the strong_base folder by hand and put it at {dest}."
            ) from e
        # the shared folder may hold strong_base/ itself or its contents
        src = os.path.join(tmp, "strong_base") if os.path.isdir(os.path.join(tmp, "strong_base")) else tmp
        for dirpath, _, filenames in os.walk(src):
            for filename in filenames:
                source = os.path.join(dirpath, filename)
                target = os.path.join(dest, os.path.relpath(source, src))
                if not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.move(source, target)
    return sorted(
        os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f.startswith("model")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch CoOp's split files and TaskRes' enhanced bases.")
    parser.add_argument("--root", help="DATASET.ROOT, the folder holding the dataset folders")
    parser.add_argument("--dataset", nargs="*", default=[], help="dataset class names: " + ", ".join(sorted(REMOTE_FILES)))
    parser.add_argument("--all", action="store_true", help="every dataset with published files")
    parser.add_argument("--enhanced-bases", nargs="?", const="strong_base", default=None, metavar="DIR",
                        help="download the enhanced bases into DIR (default: strong_base)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = sorted(REMOTE_FILES) if args.all else args.dataset
    if names and not args.root:
        parser.error("--root is required with --dataset/--all")
    if not names and args.enhanced_bases is None:
        parser.error("nothing to do: give --dataset NAME, --all or --enhanced-bases")
    try:
        for name in names:
            for path in fetch_dataset_files(name, args.root):
                print(path)
        if args.enhanced_bases is not None:
            for path in fetch_enhanced_bases(args.enhanced_bases):
                print(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
