"""The README's first command on a tiny corpus: segment, evaluate against the truth, preview."""


import pyarrow.dataset as ds
import ray
from PIL import Image

from jobs import demo


def test_demo_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    out = tmp_path / "demo"
    code = demo.main(["--out", str(out), "--short", "2", "--short-frames", "12", "--long", "1",
                      "--long-frames", "40", "--size", "96", "--actors", "2", "--segment-frames", "24"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert not ray.is_initialized(), "the private Ray the job started must be shut down with it"
    assert "short videos:" in text and "long videos:" in text and text.count("J&F ") >= 2
    table = ds.dataset(str(out / "masks" / "masklets"), format="parquet", partitioning="hive").to_table()
    assert set(table.column("video_id").to_pylist()) == {"test-100000", "test-100001", "test-200000"}
    sheet = Image.open(out / "preview" / "test-200000.png")
    assert sheet.size[0] > 0 and (out / "preview" / "test-200000.mp4").stat().st_size > 0
    # The pseudo-label step: the long video unprompted, 2 segments stitched, scored without ids.
    assert "pseudo-labels of test-200000" in text and "samstream evaluate --unsupervised: 1 videos" in text
    tracks = ds.dataset(str(out / "pseudo_labels" / "tracks.parquet")).to_table().to_pylist()
    assert (out / "pseudo_labels" / "_SUCCESS").exists() and (out / "preview" / "test-200000-pseudo.png").exists()
    assert {s for t in tracks for s in t["segments"]} <= {0, 1} and len({t["object_id"] for t in tracks}) == len(tracks)
