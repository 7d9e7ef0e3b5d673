"""``gradcheck run --workers N`` and ``--cluster``: the same records as one
process (Note [Shards] in gradcheck/parallel.py), and a lost worker costs at
most its shard."""

import textwrap
from pathlib import Path

import pytest

from gradcheck.cli import main
from gradcheck.report import read_records

pytestmark = [pytest.mark.xdist_group("parallel")]

# 35 graphs an op: two chunks each (run.CHUNK), so chunks are shards of their own
ARGS = ["--ops", "tanh,relu", "--examples", "70", "--no-torch", "--seed", "3"]
KEY = ["case_id", "seed", "op", "tensor", "source_a", "source_b", "dtype", "status", "check", "step", "pair_label",
       "index", "mismatched"]


def _records(out):
    (run,) = [p for p in Path(out).iterdir() if (p / "records.jsonl").is_file()]
    df = read_records(run)
    return df[[c for c in KEY if c in df]].astype(str).sort_values([c for c in KEY if c in df]).reset_index(drop=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    assert main(["run", *ARGS, "--out", str(out)]) == 0
    return _records(out)


def test_two_workers_give_the_records_of_one_process(serial, tmp_path):
    import pandas as pd

    assert main(["run", *ARGS, "--out", str(tmp_path), "--workers", "2"]) == 0
    assert len(serial) > 50
    pd.testing.assert_frame_equal(_records(tmp_path), serial)


def test_a_dask_local_cluster_gives_the_records_of_one_process(serial, tmp_path):
    import pandas as pd

    pytest.importorskip("distributed", reason="dask's distributed scheduler is not installed")
    assert main(["run", *ARGS, "--out", str(tmp_path), "--workers", "2", "--cluster", "local"]) == 0
    pd.testing.assert_frame_equal(_records(tmp_path), serial)


def _killer(tmp_path, once: bool) -> str:
    """A candidate whose softplus kills its process: the first time only, or always."""
    marker = tmp_path / "killed-once"
    path = tmp_path / "killer.py"
    path.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path

        from gradcheck import Candidate
        from reference_impl import activations

        candidate = Candidate("killer")


        @candidate.op("softplus")
        class Softplus:
            @staticmethod
            def forward(x, beta=1.0, threshold=20.0):
                marker = Path({str(marker)!r})
                if not ({once!r} and marker.exists()):
                    marker.touch()
                    os._exit(9)  # the worker dies: no exception, no record
                return activations.softplus_forward(x, beta, threshold)

            backward = staticmethod(activations.softplus_backward)
    """))
    return f"{path}:candidate"


def test_a_worker_killed_once_costs_nothing_its_shard_runs_again(tmp_path, capsys):
    target = _killer(tmp_path, once=True)
    assert main(["run", "--candidate", target, "--ops", "softplus", "--examples", "6", "--no-torch",
                 "--workers", "2", "--out", str(tmp_path / "out")]) == 0
    df = read_records(next((tmp_path / "out").iterdir()))
    assert len(df) > 20 and not df["status"].isin(["error", "fail"]).any()


def test_a_shard_whose_worker_dies_twice_is_one_error_and_the_run_completes(tmp_path, capsys):
    target = _killer(tmp_path, once=False)
    assert main(["run", "--candidate", target, "--ops", "softplus", "--examples", "6", "--no-torch",
                 "--workers", "2", "--out", str(tmp_path / "out")]) == 1
    df = read_records(next((tmp_path / "out").iterdir()))
    lost = df[df["case_id"].str.startswith("shard-")]
    # the candidate runs in the random graphs' shard; the sweep's (built-in sources only) is unharmed
    assert lost["case_id"].tolist() == ["shard-graphs-softplus-0"] and lost["status"].tolist() == ["error"]
    assert "a worker was lost 2 times running 6 random graphs holding softplus (chunk 0)" in lost["message"].iloc[0]
    assert (df["status"] == "pass").sum() > 10
    assert "lost" in capsys.readouterr().out
