import io

from mnistgen_jax.progress import PLAIN_LINES, progress


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_plain_lines_when_not_on_a_terminal():
  stream = io.StringIO()
  assert list(progress(range(10), "IWAE bound", unit="batch", stream=stream)) == list(range(10))
  lines = stream.getvalue().splitlines()
  assert len(lines) == PLAIN_LINES and "\r" not in stream.getvalue()
  assert [line.split(" (")[0] for line in lines] == [
      "IWAE bound: 3/10 batch", "IWAE bound: 5/10 batch", "IWAE bound: 8/10 batch",
      "IWAE bound: 10/10 batch"]
  assert all(line.endswith(" s)") for line in lines)


def test_a_loop_without_a_length_ends_with_one_line_and_a_short_one_has_no_repeats():
  stream = io.StringIO()
  assert list(progress(iter("abc"), "sampling", stream=stream)) == ["a", "b", "c"]
  assert stream.getvalue().startswith("sampling: 3 it (")
  stream = io.StringIO()
  list(progress(range(2), "sampling", stream=stream))
  assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == [
      "sampling: 1/2 it", "sampling: 2/2 it"]


def test_a_bar_on_a_terminal_and_nothing_when_disabled():
  terminal = _Terminal()
  assert list(progress(range(5), "features", stream=terminal)) == list(range(5))
  assert "\r" in terminal.getvalue() and "features" in terminal.getvalue()
  quiet = io.StringIO()
  assert list(progress(range(5), "features", disable=True, stream=quiet)) == list(range(5))
  assert quiet.getvalue() == ""
