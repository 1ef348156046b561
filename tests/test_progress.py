"""Progress bars show on a terminal and stay silent off one (systemd journal, CI log): one line per refresh there."""

from __future__ import annotations

import io
import subprocess
import sys

from edge_ad.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_draws_on_a_terminal_and_not_into_a_log():
    tty, log = Terminal(), io.StringIO()
    assert list(progress(range(50), file=tty, desc="tty")) == list(range(50))
    assert list(progress(range(50), file=log, desc="log")) == list(range(50))
    assert "tty" in tty.getvalue() and "50/50" in tty.getvalue()
    assert log.getvalue() == ""
    quiet = Terminal()
    list(progress(range(5), file=quiet, enabled=False))
    assert quiet.getvalue() == ""


def test_demo_data_writes_no_bar_lines_when_stderr_is_a_pipe(tmp_path):
    """As under systemd or CI: stderr is a pipe. make_demo_data asks for its bar (progress=True) and gets none."""
    code = ("import sys; from edge_ad.training.demo_data import make_demo_data; "
            "make_demo_data(sys.argv[1], n_train=4, n_test_good=2, n_test_bad=3, size=64, progress=True)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "part")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr[-2000:]
    assert len(list((tmp_path / "part" / "train" / "good").glob("*.png"))) == 4
