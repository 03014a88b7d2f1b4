"""The grpcurl commands of a README (Markdown), as a reader finds them: each with the section it
is in, the exports in force in the reader's terminal, and the answer the README prints after it;
and how an answer's shape compares with the one printed.

- Code is what indented (four spaces) or fenced blocks hold; a blank line splits a block into
  chunks (a command, then the JSON it answers, in one block).
- A command is a line of a chunk, ``\\``-continued lines joined, in which ``grpcurl`` is the
  word that starts a command (also after ``|``).
- The exports in force for a command are the ``export`` lines above it in its chunk and in
  the chunks with grpcurl commands before it: the terminal a reader types grpcurl commands in.
- Its answer is the first JSON object printed after its chunk (a chunk, or an inline code span
  in the text) before the next command or heading; the answer follows the last command of a
  chunk, the others have none."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Command:
    """One grpcurl command of the README."""

    #: Where it starts in the README (1-based).
    line: int
    #: The heading it is under.
    section: str
    #: The line as written, continuations included: what a reader pastes into a shell.
    script: str
    #: The ``export`` lines in force, in order.
    exports: tuple[str, ...]
    #: grpcurl's arguments (after the word ``grpcurl``).
    argv: tuple[str, ...]
    #: The JSON object the README prints as its answer, or None.
    answer: Any
    #: Where that answer is (1-based), or None.
    answer_line: int | None

    @property
    def text(self) -> str:
        """The command on one line."""
        return " ".join(part.strip() for part in self.script.split("\\\n"))


@dataclass(frozen=True)
class _Item:
    """A heading, a paragraph of text, or a chunk of code, and the line it starts on."""

    kind: str  # "heading", "text" or "code"
    line: int
    text: str


def _items(markdown: str) -> Iterator[_Item]:
    lines = markdown.splitlines()
    index = 0
    paragraph: list[str] = []
    paragraph_line = 0

    def flush_paragraph() -> Iterator[_Item]:
        if paragraph:
            yield _Item("text", paragraph_line, " ".join(paragraph))
            paragraph.clear()

    def chunks(block: list[tuple[int, str]]) -> Iterator[_Item]:
        chunk: list[tuple[int, str]] = []
        for number, text in [*block, (0, "")]:
            if text.strip():
                chunk.append((number, text))
            elif chunk:
                yield _Item("code", chunk[0][0], "\n".join(t for _, t in chunk))
                chunk = []

    while index < len(lines):
        line = lines[index]
        number = index + 1
        if _FENCE.match(line):
            yield from flush_paragraph()
            fence = _FENCE.match(line)
            assert fence is not None
            block: list[tuple[int, str]] = []
            index += 1
            while index < len(lines) and not lines[index].strip().startswith(fence.group(1)):
                block.append((index + 1, lines[index]))
                index += 1
            index += 1
            yield from chunks(block)
            continue
        if line.startswith("    ") and not paragraph:
            block = []
            while index < len(lines) and (
                lines[index].startswith("    ") or not lines[index].strip()
            ):
                block.append((index + 1, lines[index][4:]))
                index += 1
            yield from chunks(block)
            continue
        heading = _HEADING.match(line)
        if heading:
            yield from flush_paragraph()
            yield _Item("heading", number, heading.group(2))
        elif not line.strip():
            yield from flush_paragraph()
        else:
            if not paragraph:
                paragraph_line = number
            paragraph.append(line.strip())
        index += 1
    yield from flush_paragraph()


def _logical_lines(chunk: _Item) -> Iterator[tuple[int, str]]:
    """The chunk's lines, each with the lines its ``\\`` continues."""
    start, parts = 0, list[str]()
    for offset, line in enumerate(chunk.text.split("\n")):
        if not parts:
            start = chunk.line + offset
        parts.append(line)
        if not line.endswith("\\"):
            yield start, "\n".join(parts)
            parts = []
    if parts:
        yield start, "\n".join(parts)


def _grpcurl_argv(script: str) -> tuple[str, ...] | None:
    """grpcurl's arguments if ``grpcurl`` starts one of the line's commands."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None  # not shell (an unbalanced quote): not a command
    command: list[str] = []
    for word in [*words, ";"]:
        if word and set(word) <= set("|&;()<>"):
            if command and command[0] == "grpcurl":
                return tuple(command[1:])
            command = []
        else:
            command.append(word)
    return None


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _answer_after(items: list[_Item], start: int) -> tuple[Any, int | None]:
    """The first JSON object printed from ``items[start]`` on, before a command or a heading."""
    for item in items[start:]:
        if item.kind == "heading":
            break
        if item.kind == "code":
            if any(_grpcurl_argv(s) is not None for _, s in _logical_lines(item)):
                break
            value = _json_object(item.text)
            if value is not None:
                return value, item.line
        else:
            for span in _INLINE_CODE.findall(item.text):
                value = _json_object(span)
                if value is not None:
                    return value, item.line
    return None, None


def commands(readme: Path) -> list[Command]:
    """Every grpcurl command of ``readme``, in order."""
    items = list(_items(readme.read_text()))
    found: list[Command] = []
    section = ""
    terminal: list[str] = []  # the exports of the chunks with grpcurl commands so far
    for position, item in enumerate(items):
        if item.kind == "heading":
            section = item.text
            continue
        if item.kind != "code":
            continue
        lines = list(_logical_lines(item))
        in_chunk: list[tuple[int, str, tuple[str, ...], tuple[str, ...]]] = []
        exports = list(terminal)
        for number, script in lines:
            if script.lstrip().startswith("export "):
                exports.append(script.strip())
                continue
            argv = _grpcurl_argv(script)
            if argv is not None:
                in_chunk.append((number, script, tuple(exports), argv))
        if not in_chunk:
            continue
        terminal = exports
        answer, answer_line = _answer_after(items, position + 1)
        for index, (number, script, in_force, argv) in enumerate(in_chunk):
            last = index == len(in_chunk) - 1
            found.append(
                Command(
                    line=number,
                    section=section,
                    script=script.strip(),
                    exports=in_force,
                    argv=argv,
                    answer=answer if last else None,
                    answer_line=answer_line if last else None,
                )
            )
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    return "an object"


def shape_differences(printed: Any, answered: Any, path: str = "") -> list[str]:
    """Where ``answered`` differs in shape from ``printed``: the same keys at every level, lists
    of the same length (element by element), scalars of the same JSON kind (a 64-bit integer is
    a string, a 32-bit one a number); the values themselves may differ."""
    where = path or "the answer"
    if _kind(printed) != _kind(answered):
        return [f"{where}: the README prints {_kind(printed)}, the answer is {answered!r}"]
    if isinstance(printed, dict):
        differences = []
        missing = [key for key in printed if key not in answered]
        extra = [key for key in answered if key not in printed]
        if missing:
            differences.append(f"{where}: no {', '.join(missing)} in the answer")
        if extra:
            differences.append(f"{where}: the README does not print {', '.join(extra)}")
        for key in printed:
            if key in answered:
                differences += shape_differences(printed[key], answered[key], f"{path}.{key}")
        return differences
    if isinstance(printed, list):
        if len(printed) != len(answered):
            return [
                f"{where}: the README prints {len(printed)} items, the answer has {len(answered)}"
            ]
        differences = []
        for index, (shown, got) in enumerate(zip(printed, answered, strict=True)):
            differences += shape_differences(shown, got, f"{path}[{index}]")
        return differences
    return []
