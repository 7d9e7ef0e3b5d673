"""The gradcheck command: the catalogue part of the main job, and bad input."""

import re

from gradcheck.cli import main


def _rows(out, ops):
    sweep = out.split("catalogue: worst relative error")[1].split("summary by op")[0]
    return {line.split()[1]: line for line in sweep.splitlines()
            if len(line.split()) > 1 and line.split()[1] in ops}


def test_run_prints_a_row_per_op_with_every_source_pair_and_exits_zero(capsys, tmp_path):
    assert main(["run", "--ops", "tanh,conv2d,max_pool2d", "--examples", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for label in ("ref~central", "ref~richardson", "ref~complex", "torch-cpu~ref", "torch-cpu~central"):
        assert label in out
    rows = _rows(out, {"tanh", "conv2d", "max_pool2d"})
    assert len(rows) == 3
    for line in rows.values():
        errors = [float(x) for x in re.findall(r"\d\.\de[-+]\d\d", line)]
        assert len(errors) == 5 and all(e < 1e-8 for e in errors), line
    assert "0 failing checks" in out


def test_run_without_torch_and_in_float32(capsys, tmp_path):
    assert main(["run", "--ops", "softmax", "--no-torch", "--dtype", "float32", "--examples", "0",
                 "--out", str(tmp_path)]) == 0
    assert "torch" not in capsys.readouterr().out.split("catalogue:")[1].split("summary")[0]


def test_an_unknown_op_is_refused_with_the_catalogue(capsys, tmp_path):
    assert main(["run", "--ops", "softmx", "--out", str(tmp_path)]) == 2
    assert "unknown op 'softmx'" in capsys.readouterr().err


def test_run_exits_one_and_explains_when_a_vjp_is_wrong(monkeypatch, capsys, tmp_path):
    import reference_impl
    from reference_impl import Op, activations

    def tanh_backward_wrong(y, g):
        return (g * (1 - y),)  # should be 1 - y**2

    monkeypatch.setitem(reference_impl.OPS, "tanh", Op(activations.tanh_forward, tanh_backward_wrong))
    assert main(["run", "--ops", "tanh", "--no-torch", "--examples", "0", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "failing checks" in out
    (run,) = list(tmp_path.iterdir())
    summary = (run / "summary.md").read_text()
    assert "Mismatched elements" in summary and "replay:\n```\ngradcheck repro " in summary
