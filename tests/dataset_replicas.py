"""Miniature replicas of every dataset layout in DATASETS.md, in the real file formats.

``build_replica(name, root, with_split=True) -> dataset_root`` writes a few tiny images per class plus
the metadata the real dataset ships (``.mat`` labels, txt lists, ``classnames.txt``, idx files, split
json) under ``root`` and returns the value to use as ``DATASET.ROOT``. ``EXPECTED[name]`` holds the
class names and split sizes each replica must load to; the ``generated`` sizes apply when the
replica was built with ``with_split=False`` (no split file: the loader generates one).

Written independently of the ``datasets`` package (it must not share the code it checks).
"""
import gzip
import json
import os
import struct

import numpy as np
from PIL import Image

__all__ = ["REPLICA_NAMES", "REPLICA_OPTS", "EXPECTED", "build_replica", "write_image"]


def write_image(path, seed=0, fmt=None, size=(8, 8)):
    """A tiny real image (JPEG unless the extension says otherwise)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _write_text(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _split_rows(per_class, counts):
    """``per_class``: [(label, classname, [relpaths])]; take counts=(n_train, n_val, n_test) in order."""
    split = {"train": [], "val": [], "test": []}
    for label, cname, paths in per_class:
        a, b, c = counts
        for key, chunk in (("train", paths[:a]), ("val", paths[a:a + b]), ("test", paths[a + b:a + b + c])):
            split[key].extend([p, label, cname] for p in chunk)
    return split


# ---------------------------------------------------------------- folder-per-class datasets (50/20/30)

DTD_CLASSES = ["banded", "braided", "bubbly", "bumpy"]
FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"]
EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]
EUROSAT_NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                 "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River",
                 "Sea or Lake"]
# sorted() puts capitals first: Faces, Leopards, Motorbikes, accordion, airplanes, anchor
CALTECH_FOLDERS = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes", "anchor"]
CALTECH_NAMES = ["face", "leopard", "motorbike", "accordion", "airplane", "anchor"]


def _folder_dataset(dataset_dir, image_subdir, folders, names, n_images, split_name, split_counts, with_split,
                    ignored=(), ext=".jpg"):
    image_dir = os.path.join(dataset_dir, image_subdir)
    per_class = []
    label = 0
    for i, folder in enumerate(folders):
        paths = [f"{folder}/{folder}_{j + 1:04d}{ext}" for j in range(n_images)]
        for j, rel in enumerate(paths):
            write_image(os.path.join(image_dir, rel), seed=100 * i + j)
        if folder in ignored:
            continue
        per_class.append((label, names[label], paths))
        label += 1
    if with_split:
        _write_json(os.path.join(dataset_dir, split_name), _split_rows(per_class, split_counts))


def _dtd(root, with_split):
    _folder_dataset(os.path.join(root, "dtd"), "images", DTD_CLASSES, DTD_CLASSES, 10,
                    "split_zhou_DescribableTextures.json", (4, 2, 4), with_split)


def _food(root, with_split):
    _folder_dataset(os.path.join(root, "food-101"), "images", FOOD_CLASSES, FOOD_CLASSES, 10,
                    "split_zhou_Food101.json", (4, 2, 4), with_split)


def _eurosat(root, with_split):
    _folder_dataset(os.path.join(root, "eurosat"), "2750", EUROSAT_FOLDERS, EUROSAT_NAMES, 5,
                    "split_zhou_EuroSAT.json", (3, 1, 1), with_split)


def _caltech(root, with_split):
    _folder_dataset(os.path.join(root, "caltech-101"), "101_ObjectCategories", CALTECH_FOLDERS, CALTECH_NAMES, 10,
                    "split_zhou_Caltech101.json", (4, 2, 4), with_split, ignored=("BACKGROUND_Google", "Faces_easy"))


IMAGE_FOLDER_CLASSES = ["cat", "dog", "red fox"]


def _image_folder(root, with_split):
    tree = os.path.join(root, "my_images")
    _folder_dataset(tree, "", IMAGE_FOLDER_CLASSES, IMAGE_FOLDER_CLASSES, 6, "split_ImageFolder.json",
                    (2, 2, 2), with_split, ext=".png")
    return tree


# ---------------------------------------------------------------- datasets with their own annotation files

PETS = [("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 3), ("basset_hound", 4)]


def _pets(root, with_split):
    d = os.path.join(root, "oxford_pets")
    trainval, test, per_class = [], [], []
    for i, (breed, cid) in enumerate(PETS):
        species = 1 if breed[0].isupper() else 2  # cats are capitalised in the real file names
        names = [f"{breed}_{j + 1}" for j in range(8)]
        for j, n in enumerate(names):
            write_image(os.path.join(d, "images", n + ".jpg"), seed=10 * i + j)
        trainval += [f"{n} {cid} {species} {cid}" for n in names[:5]]
        test += [f"{n} {cid} {species} {cid}" for n in names[5:]]
        per_class.append((cid - 1, breed.lower(), [n + ".jpg" for n in names]))
    _write_text(os.path.join(d, "annotations", "trainval.txt"), ["#Image CLASS-ID SPECIES BREED ID"] + trainval)
    _write_text(os.path.join(d, "annotations", "test.txt"), test)
    if with_split:
        _write_json(os.path.join(d, "split_zhou_OxfordPets.json"), _split_rows(per_class, (3, 2, 3)))


FLOWERS = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells", "4": "sweet pea"}


def _flowers(root, with_split):
    from scipy.io import savemat

    d = os.path.join(root, "oxford_flowers")
    # labels interleaved and not sorted, like the real imagelabels.mat: first appearance 3, 1, 4, 2
    labels = [3, 1, 4, 2] * 10
    per_label = {}
    for i, y in enumerate(labels):
        name = f"image_{i + 1:05d}.jpg"
        write_image(os.path.join(d, "jpg", name), seed=i)
        per_label.setdefault(y, []).append(name)
    savemat(os.path.join(d, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    _write_json(os.path.join(d, "cat_to_name.json"), FLOWERS)
    if with_split:
        per_class = [(y - 1, FLOWERS[str(y)], per_label[y]) for y in sorted(per_label)]
        _write_json(os.path.join(d, "split_zhou_OxfordFlowers.json"), _split_rows(per_class, (6, 2, 2)))


AIRCRAFT = ["707-320", "A300B4", "Cessna 172", "F/A-18"]


def _aircraft(root, with_split):
    d = os.path.join(root, "fgvc_aircraft")
    _write_text(os.path.join(d, "variants.txt"), AIRCRAFT)
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for variant in AIRCRAFT:
            for _ in range(3):
                n += 1
                image_id = f"{1000000 + n:07d}"
                write_image(os.path.join(d, "images", image_id + ".jpg"), seed=n)
                lines.append(f"{image_id} {variant}")
        _write_text(os.path.join(d, f"images_variant_{split}.txt"), lines)


CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]
CARS_NAMES = ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Audi TTS Coupe"]


def _cars(root, with_split):
    from scipy.io import savemat

    d = os.path.join(root, "stanford_cars")
    anno_dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    per_class = {i: [] for i in range(len(CARS))}
    for folder, n_per_class, mat_path in (("cars_train", 5, os.path.join(d, "devkit", "cars_train_annos.mat")),
                                         ("cars_test", 3, os.path.join(d, "cars_test_annos_withlabels.mat"))):
        rows = []
        k = 0
        for j in range(n_per_class):
            for label in range(len(CARS)):  # interleaved, like the real annotations
                k += 1
                fname = f"{k:05d}.jpg"
                write_image(os.path.join(d, folder, fname), seed=k + 1000 * (folder == "cars_test"))
                rows.append((np.array([[1]]), np.array([[1]]), np.array([[7]]), np.array([[7]]),
                             np.array([[label + 1]], dtype=np.uint8), np.array([fname])))
                per_class[label].append(f"{folder}/{fname}")
        os.makedirs(os.path.dirname(mat_path), exist_ok=True)
        savemat(mat_path, {"annotations": np.array([rows], dtype=anno_dtype)})
    class_names = np.empty((1, len(CARS)), dtype=object)
    for i, c in enumerate(CARS):
        class_names[0, i] = np.array([c])
    savemat(os.path.join(d, "devkit", "cars_meta.mat"), {"class_names": class_names})
    if with_split:
        rows = [(label, CARS_NAMES[label], paths) for label, paths in per_class.items()]
        _write_json(os.path.join(d, "split_zhou_StanfordCars.json"), _split_rows(rows, (3, 2, 3)))


SUN = ["/a/abbey", "/a/airplane_cabin", "/a/apartment_building/outdoor", "/b/balcony/interior"]
SUN_NAMES = ["abbey", "airplane_cabin", "outdoor apartment_building", "interior balcony"]


def _sun(root, with_split):
    d = os.path.join(root, "sun397")
    _write_text(os.path.join(d, "ClassName.txt"), SUN)
    train, test, per_class = [], [], []
    for i, c in enumerate(SUN):
        names = [f"{c}/sun_{i}{j:03d}.jpg" for j in range(8)]
        for j, n in enumerate(names):
            write_image(os.path.join(d, "SUN397", n[1:]), seed=10 * i + j)
        train += names[:5]
        test += names[5:]
        per_class.append((i, SUN_NAMES[i], [n[1:] for n in names]))
    _write_text(os.path.join(d, "Training_01.txt"), train)
    _write_text(os.path.join(d, "Testing_01.txt"), test)
    if with_split:
        _write_json(os.path.join(d, "split_zhou_SUN397.json"), _split_rows(per_class, (3, 2, 3)))


UCF = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "YoYo"]
UCF_NAMES = ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Yo_Yo"]


def _ucf(root, with_split):
    d = os.path.join(root, "ucf101")
    lists = os.path.join(d, "ucfTrainTestlist")
    _write_text(os.path.join(lists, "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(UCF)])
    train, test, per_class = [], [], []
    for i, action in enumerate(UCF):
        videos = [f"v_{action}_g{g:02d}_c01" for g in range(1, 9)]
        for j, v in enumerate(videos):
            write_image(os.path.join(d, "UCF-101-midframes", UCF_NAMES[i], v + ".jpg"), seed=10 * i + j)
        train += [f"{action}/{v}.avi {i + 1}" for v in videos[:5]]
        test += [f"{action}/{v}.avi" for v in videos[5:]]
        per_class.append((i, UCF_NAMES[i], [f"{UCF_NAMES[i]}/{v}.jpg" for v in videos]))
    _write_text(os.path.join(lists, "trainlist01.txt"), train)
    _write_text(os.path.join(lists, "testlist01.txt"), test)
    if with_split:
        _write_json(os.path.join(d, "split_zhou_UCF101.json"), _split_rows(per_class, (3, 2, 3)))


# ---------------------------------------------------------------- ImageNet and its test-only variants

IMAGENET = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
            ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray")]
IMAGENET_A_ROWS = [1, 3, 4]  # positions in classnames.txt of the wnids the A replica holds
IMAGENET_R_ROWS = [0, 2, 5]


def _classnames(path):
    _write_text(path, [f"{w} {n}" for w, n in IMAGENET])


def _imagenet(root, with_split):
    d = os.path.join(root, "imagenet")
    _classnames(os.path.join(d, "classnames.txt"))
    for split, n in (("train", 4), ("val", 2)):
        for i, (wnid, _) in enumerate(IMAGENET):
            for j in range(n):
                write_image(os.path.join(d, "images", split, wnid, f"{wnid}_{j}.JPEG"), seed=10 * i + j, fmt="JPEG")


def _imagenetv2(root, with_split):
    d = os.path.join(root, "imagenetv2")
    _classnames(os.path.join(d, "classnames.txt"))
    for i in range(len(IMAGENET)):
        for j in range(2):
            write_image(os.path.join(d, "imagenetv2-matched-frequency-format-val", str(i), f"{j}abc.jpeg"),
                        seed=10 * i + j, fmt="JPEG")


def _sketch(root, with_split):
    d = os.path.join(root, "imagenet-sketch")
    _classnames(os.path.join(d, "classnames.txt"))
    for i, (wnid, _) in enumerate(IMAGENET):
        for j in range(2):
            write_image(os.path.join(d, "images", wnid, f"sketch_{j}.JPEG"), seed=i + j, fmt="JPEG")


def _subset(root, folder, image_subdir, rows):
    d = os.path.join(root, folder)
    _classnames(os.path.join(d, "classnames.txt"))
    _write_text(os.path.join(d, image_subdir, "README.txt"), ["not a class"])
    for r in rows:
        wnid = IMAGENET[r][0]
        for j in range(2):
            write_image(os.path.join(d, image_subdir, wnid, f"{j}.png"), seed=r + j, fmt="PNG")


def _imagenet_a(root, with_split):
    _subset(root, "imagenet-adversarial", "imagenet-a", IMAGENET_A_ROWS)


def _imagenet_r(root, with_split):
    _subset(root, "imagenet-rendition", "imagenet-r", IMAGENET_R_ROWS)


# ---------------------------------------------------------------- Fashion-MNIST (idx files)

def write_idx(path, array):
    """An idx file: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data; gzipped if ``.gz``."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _fashion(root, with_split, n_train=10, n_test=3):
    d = os.path.join(root, "fashion_mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.tile(np.arange(10), n)
        write_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 255, (len(labels), 28, 28)))
        write_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz"), labels)


FASHION_NAMES = ["T-shirt or top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle boot"]

# ---------------------------------------------------------------- ELEVATER (vision_datasets' download layout)

ELEVATER_CLASSES = ["airplane", "automobile", "bird"]


def _write_zip(path, members):
    """A zip holding ``{member name: seed}`` tiny PNG images."""
    import io
    import zipfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for member, seed in members.items():
            buf = io.BytesIO()
            rng = np.random.default_rng(seed)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr(member, buf.getvalue())


def elevater_iris(root, folder="classification/cifar_10_20211007", n_train=6, n_test=2):
    """IRIS layout as vision_datasets downloads cifar-10: labels.txt, train.txt/test.txt lines
    ``<zip>@<member> <label>`` (classes interleaved, like the real index), train.zip and val.zip."""
    d = os.path.join(root, folder)
    _write_text(os.path.join(d, "labels.txt"), ELEVATER_CLASSES)
    for index, archive, n in (("train.txt", "train.zip", n_train), ("test.txt", "val.zip", n_test)):
        members, lines = {}, []
        for j in range(n):
            for label, cname in enumerate(ELEVATER_CLASSES):
                member = f"{cname}/{archive[:-4]}_{j:04d}.png"
                members[member] = 100 * label + j + (1000 if archive == "val.zip" else 0)
                lines.append(f"{archive}@{member} {label}")
        _write_zip(os.path.join(d, archive), members)
        _write_text(os.path.join(d, index), lines)
    return d


def elevater_coco(root, folder="classification/resisc45_clip_20210924", n_train=5, n_test=2):
    """COCO layout as vision_datasets downloads resisc45_clip: train.json/test.json over images.zip,
    category ids from 1 listed out of order."""
    d = os.path.join(root, folder)
    categories = [{"id": 2, "name": "beach"}, {"id": 1, "name": "airport"}, {"id": 3, "name": "forest"}]
    members = {}
    for index, n in (("train.json", n_train), ("test.json", n_test)):
        images, annotations = [], []
        for j in range(n):
            for cat in categories:
                member = f"{index[:-5]}/{cat['name']}_{j}.png"
                members[member] = 10 * cat["id"] + j + (500 if index == "test.json" else 0)
                images.append({"id": len(images) + 1, "file_name": f"images.zip@{member}"})
                annotations.append({"id": len(images), "image_id": len(images), "category_id": cat["id"]})
        _write_json(os.path.join(d, index), {"images": images, "annotations": annotations, "categories": categories})
    _write_zip(os.path.join(d, "images.zip"), members)
    return d


def _elevater(root, with_split):
    elevater_iris(root)


# Config a replica needs beyond DATASET.NAME (as opts for train.py / keys for a cfg)
REPLICA_OPTS = {"Elevater": {"DATASET.ELEVATER_NAME": "cifar-10"}}

# ---------------------------------------------------------------- registry of builders and expectations

_BUILDERS = {
    "OxfordPets": _pets, "OxfordFlowers": _flowers, "FGVCAircraft": _aircraft, "DescribableTextures": _dtd,
    "EuroSAT": _eurosat, "StanfordCars": _cars, "Food101": _food, "SUN397": _sun, "Caltech101": _caltech,
    "UCF101": _ucf, "ImageNet": _imagenet, "ImageNetV2": _imagenetv2, "ImageNetSketch": _sketch,
    "ImageNetA": _imagenet_a, "ImageNetR": _imagenet_r, "FashionMNIST": _fashion, "ImageFolder": _image_folder,
    "Elevater": _elevater,
}
REPLICA_NAMES = sorted(_BUILDERS)

_IN = [n for _, n in IMAGENET]
# classnames, sizes with the replica's split file, sizes when the split is generated (None: no split file)
EXPECTED = {
    "OxfordPets": dict(classnames=[b.lower() for b, _ in PETS], split=(12, 8, 12), generated=(16, 4, 12)),
    "OxfordFlowers": dict(classnames=[FLOWERS[str(i)] for i in range(1, 5)], split=(24, 8, 8), generated=(20, 8, 12)),
    "FGVCAircraft": dict(classnames=AIRCRAFT, split=(12, 12, 12), generated=None),
    "DescribableTextures": dict(classnames=DTD_CLASSES, split=(16, 8, 16), generated=(20, 8, 12)),
    "EuroSAT": dict(classnames=EUROSAT_NAMES, split=(30, 10, 10), generated=(20, 10, 20)),
    "StanfordCars": dict(classnames=CARS_NAMES, split=(9, 6, 9), generated=(12, 3, 9)),
    "Food101": dict(classnames=FOOD_CLASSES, split=(16, 8, 16), generated=(20, 8, 12)),
    "SUN397": dict(classnames=SUN_NAMES, split=(12, 8, 12), generated=(16, 4, 12)),
    "Caltech101": dict(classnames=CALTECH_NAMES, split=(24, 12, 24), generated=(30, 12, 18)),
    "UCF101": dict(classnames=UCF_NAMES, split=(12, 8, 12), generated=(16, 4, 12)),
    "ImageNet": dict(classnames=_IN, split=(24, 12, 12), generated=None),
    "ImageNetV2": dict(classnames=_IN, split=(12, 0, 12), generated=None),
    "ImageNetSketch": dict(classnames=_IN, split=(12, 0, 12), generated=None),
    "ImageNetA": dict(classnames=[_IN[r] for r in IMAGENET_A_ROWS], split=(6, 0, 6), generated=None),
    "ImageNetR": dict(classnames=[_IN[r] for r in IMAGENET_R_ROWS], split=(6, 0, 6), generated=None),
    "FashionMNIST": dict(classnames=FASHION_NAMES, split=(80, 20, 30), generated=None),
    "ImageFolder": dict(classnames=IMAGE_FOLDER_CLASSES, split=(6, 6, 6), generated=(9, 3, 6)),
    # MVLPT's val: the first ceil(20 %) of each class of the train index (6 -> 2)
    "Elevater": dict(classnames=ELEVATER_CLASSES, split=(12, 6, 6), generated=None),
}
SPLIT_FILES = {
    "OxfordPets": "oxford_pets/split_zhou_OxfordPets.json",
    "OxfordFlowers": "oxford_flowers/split_zhou_OxfordFlowers.json",
    "DescribableTextures": "dtd/split_zhou_DescribableTextures.json",
    "EuroSAT": "eurosat/split_zhou_EuroSAT.json",
    "StanfordCars": "stanford_cars/split_zhou_StanfordCars.json",
    "Food101": "food-101/split_zhou_Food101.json",
    "SUN397": "sun397/split_zhou_SUN397.json",
    "Caltech101": "caltech-101/split_zhou_Caltech101.json",
    "UCF101": "ucf101/split_zhou_UCF101.json",
    "ImageFolder": "split_ImageFolder.json",  # relative to the returned root (the tree itself)
}


def build_replica(name, root, with_split=True):
    """Write the miniature replica of dataset ``name`` under ``root``; return its DATASET.ROOT.

    ``with_split=False`` leaves out the split json so the loader must generate it.
    """
    if name not in _BUILDERS:
        raise KeyError(f"No replica for {name!r}; known: {', '.join(REPLICA_NAMES)}")
    root = str(root)
    tree = _BUILDERS[name](root, with_split)
    return tree or root
