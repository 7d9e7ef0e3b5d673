"""The gradcheck command."""

from gradcheck.cli import main


def test_run_prints_a_row_per_op_with_every_source_pair_and_exits_zero(capsys):
    assert main(["run", "--ops", "tanh,conv2d,max_pool2d"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("op "))
    for label in ("ref~central", "ref~richardson", "ref~complex", "torch-cpu~ref", "torch-cpu~central"):
        assert label in header
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["tanh"], ["conv2d"], ["max_pool2d"])]
    assert len(rows) == 3
    for row in rows:
        assert all(float(cell) < 1e-8 for cell in row[1:])
    assert "0 failing checks" in out


def test_run_without_torch_and_in_float32(capsys):
    assert main(["run", "--ops", "softmax", "--no-torch", "--dtype", "float32"]) == 0
    assert "torch" not in capsys.readouterr().out.split("cells:")[1]


def test_an_unknown_op_is_refused_with_the_catalogue(capsys):
    assert main(["run", "--ops", "softmx"]) == 2
    assert "unknown op 'softmx'" in capsys.readouterr().err


def test_run_exits_one_and_explains_when_a_vjp_is_wrong(monkeypatch, capsys):
    import reference_impl
    from reference_impl import Op, activations

    def tanh_backward_wrong(y, g):
        return (g * (1 - y),)  # should be 1 - y**2

    monkeypatch.setitem(reference_impl.OPS, "tanh", Op(activations.tanh_forward, tanh_backward_wrong))
    assert main(["run", "--ops", "tanh", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "Mismatched elements" in out
    assert "replay: gradcheck run --ops tanh" in out
