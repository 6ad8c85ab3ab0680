"""The gdown helpers: files land where the loaders look, existing files are kept, failures say what to do."""
import os

import pytest

from datasets import download
from engine.errors import CheckpointError, DataError


@pytest.fixture
def fake_gdown(monkeypatch):
    import gdown

    calls = []

    def fake_download(id=None, output=None, quiet=False, **kw):
        calls.append(id)
        with open(output, "w") as f:
            f.write(f'{{"from": "{id}"}}')
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    return calls


def test_split_files_go_into_the_dataset_folder(tmp_path, fake_gdown):
    paths = download.fetch_dataset_files("OxfordFlowers", tmp_path)
    assert paths == [str(tmp_path / "oxford_flowers" / "split_zhou_OxfordFlowers.json"),
                     str(tmp_path / "oxford_flowers" / "cat_to_name.json")]
    assert all(os.path.exists(p) for p in paths)
    assert fake_gdown == ["1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT", "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"]
    download.fetch_dataset_files("OxfordFlowers", tmp_path)
    assert len(fake_gdown) == 2  # present files are kept, not fetched again


def test_imagenet_variant_reuses_imagenets_classnames(tmp_path, fake_gdown):
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text("n01440764 tench\n")
    (tmp_path / "imagenet-rendition").mkdir()
    [path] = download.fetch_dataset_files("ImageNetR", tmp_path)
    assert open(path).read() == "n01440764 tench\n" and fake_gdown == []


def test_offline_failure_names_file_link_and_destination(tmp_path, monkeypatch):
    import gdown

    def offline(**kw):
        raise ConnectionError("Failed to resolve drive.google.com")

    monkeypatch.setattr(gdown, "download", offline)
    with pytest.raises(DataError) as e:
        download.fetch_dataset_files("DescribableTextures", tmp_path)
    msg = str(e.value)
    dest = str(tmp_path / "dtd" / "split_zhou_DescribableTextures.json")
    assert "split_zhou_DescribableTextures.json" in msg and "drive.google.com/file/d/1u3_" in msg
    assert f"put it at {dest}" in msg
    assert not os.listdir(tmp_path / "dtd")  # no partial file left behind


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="Caltech101"):
        download.fetch_dataset_files("FashionMNIST", tmp_path)


def test_enhanced_bases_land_in_strong_base_layout(tmp_path, monkeypatch):
    import gdown

    def fake_folder(url=None, output=None, quiet=False, **kw):
        target = os.path.join(output, "strong_base", "OxfordPets", "rn50_16shots", "model.pth.tar")
        os.makedirs(os.path.dirname(target))
        open(target, "wb").close()
        return [target]

    monkeypatch.setattr(gdown, "download_folder", fake_folder)
    dest = tmp_path / "strong_base"
    assert download.fetch_enhanced_bases(dest) == [str(dest / "OxfordPets" / "rn50_16shots" / "model.pth.tar")]
    assert [p for p in os.listdir(tmp_path) if p != "strong_base"] == []  # temporary folder removed


def test_enhanced_bases_offline(tmp_path, monkeypatch):
    import gdown

    def offline(**kw):
        raise ConnectionError("no route")

    monkeypatch.setattr(gdown, "download_folder", offline)
    with pytest.raises(CheckpointError, match=f"put it at {tmp_path / 'strong_base'}"):
        download.fetch_enhanced_bases(tmp_path / "strong_base")


def test_cli_reports_failure_in_one_line(tmp_path, monkeypatch, capsys):
    import gdown

    monkeypatch.setattr(gdown, "download", lambda **kw: None)
    assert download.main(["--root", str(tmp_path), "--dataset", "EuroSAT"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Could not download split_zhou_EuroSAT.json") and "\n" not in err
