"""The Chinese interface: every string wrapped and translated, every screen and every command group's help in
Chinese with no English left but names, the language switched in a running TUI, and what stays English (the
server's errors for programs)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from internlocal import i18n
from tests.test_tui import greedy_settings, ready, until
from tests.test_tui_layouts import SCREENS, _open, _rows, fixed_machine, seeded_home, seeded_template  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "internlocal" / "locale" / "zh_CN" / "LC_MESSAGES" / "internlocal.po"
COMPILED = CATALOG.with_suffix(".mo")

# what may stay in Latin letters on a Chinese screen: names of things, formats, units, keys, and the catalog's own
# data (model names, file names, chat titles typed in English, task and metric names)
ALLOWED = set(
    """
    internlocal InternLM SmolLM SmolLM2 smollm2 smollm GGUF gguf LoRA QLoRA lora qlora HF hf ModelScope modelscope
    OpenAI Ollama LMDeploy lmdeploy llama cpp transformers GPU CPU RAM MB GB KB MiB GiB GB/s ms tok token tokens API
    URL JSON JSONL YAML TOML CSV ID Ctrl ctrl Esc esc Enter enter Tab tab Shift shift Del PgUp PgDn Home End up down
    F1 F2 F3 F4 F5 F6 F7 F8 F9 F10 F11 F12 q4_1 q8_0 Q4_K_M Q8_0 Q4_1 fp16 bf16 f16 Instruct instruct cpu gpu
    NeedleBench MMLU GSM8K CEval CMMLU lm-eval DPO SFT BM25 KV sha256 PNG JPEG EOS AWQ NF4 MFU
    Hugging Face vLLM Axolotl preprocess HuixiangDou bubblewrap Python stdin stdout Bearer http https
    lm-evaluation-harness shell Ctrl-C Lines stop repetition
    """.split()  # noqa: SIM905 (a list of quoted words would hide them)
)


def english_words(text: str, also_allowed: set[str] = frozenset()) -> list[str]:
    """Latin-letter words in ``text`` that are not names: what a Chinese reader would see untranslated."""
    # model and file names, paths and versions read as one token; a word is two letters or more
    tokens = re.findall(r"[A-Za-z0-9_./:+@#=-]*[A-Za-z]{2,}[A-Za-z0-9_./:+@#=-]*", text)
    allowed = {w.lower() for w in ALLOWED | also_allowed}
    left = []
    for token in tokens:
        if any(ch in token for ch in "_./:@#=+") or re.search(r"\d", token):
            continue  # an identifier, a path, a version, a quantization, a file, a key (ctrl+n): not words
        if token.strip("-").lower() not in allowed:
            left.append(token)
    return left


# -- the catalogs -------------------------------------------------------------------------------------------------


def test_every_user_facing_string_is_wrapped_for_translation():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_i18n.py")], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-6000:]


def _extracted() -> set[str]:
    from babel.messages.extract import extract_from_dir

    keywords = {"_": None, "N_": None, "Np_": (1, 2), "ngettext": (1, 2)}
    method_map = [("internlocal/server/**", "ignore"), ("internlocal/**.py", "python")]
    found: set[str] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map=method_map, keywords=keywords
    ):
        if isinstance(message, tuple):
            found.update(m for m in message if m)
        elif message:
            found.add(message)
    return found


def _fields(text: str) -> set[str]:
    """The format fields of ``text`` ({name}, {n:.1f}, {}, %(prog)s): braces around other text are literal."""
    return set(re.findall(r"\{(?:[A-Za-z_][\w.]*)?(?:![rsa])?(?::[^{}]*)?\}|%\(\w+\)[sdr]|%[sd]", text))


def test_every_extracted_string_has_a_chinese_translation_that_keeps_its_fields():
    from babel.messages.pofile import read_po

    with CATALOG.open("rb") as file:
        catalog = read_po(file)
    translated: dict[str, str] = {}
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for msgid in ids:
            translated[msgid] = strings[0] if strings else ""
    missing = sorted(m for m in _extracted() if not translated.get(m))
    assert not missing, f"{len(missing)} strings have no translation (make i18n, then fill the .po): {missing[:20]}"
    broken = [(m, t) for m, t in translated.items() if t and _fields(m) != _fields(t)]
    assert not broken, f"translations that lose or add a {{field}}: {broken[:10]}"


def test_the_compiled_catalog_is_the_po_file_compiled():
    """The .mo the app reads is current: `make i18n` was run after the .po changed."""
    import gettext

    from babel.messages.pofile import read_po

    with CATALOG.open("rb") as file:
        catalog = read_po(file)
    with COMPILED.open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    for message in catalog:
        if not message.id or message.fuzzy or not message.string:
            continue
        if isinstance(message.id, tuple):
            assert compiled.ngettext(message.id[0], message.id[1], 1) == message.string[0], message.id
        else:
            assert compiled.gettext(message.id) == message.string, message.id


# -- choosing the language --------------------------------------------------------------------------------------


def test_the_language_comes_from_the_variable_then_the_settings_file_then_the_locale(tmp_path, monkeypatch):
    from internlocal.config import load_settings

    monkeypatch.setenv("INTERNLOCAL_HOME", str(tmp_path))
    for name in ("INTERNLOCAL_LANG", "INTERNLOCAL_LANGUAGE", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    assert i18n.resolve_language() == "en"
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert i18n.resolve_language() == "zh-CN"
    monkeypatch.setenv("LANG", "zh_TW.UTF-8")  # Traditional Chinese is not offered: English, not Simplified
    assert i18n.resolve_language() == "en"
    (tmp_path / "config.toml").write_text('language = "zh-CN"\n')
    assert i18n.resolve_language() == "zh-CN"
    monkeypatch.setenv("INTERNLOCAL_LANG", "en")
    assert i18n.resolve_language() == "en"

    # Chinese speakers pull from ModelScope unless they chose a hub
    monkeypatch.delenv("INTERNLOCAL_LANG")
    assert load_settings().hub == "modelscope"
    (tmp_path / "config.toml").write_text('language = "zh-CN"\nhub = "hf"\n')
    assert load_settings().hub == "hf"
    (tmp_path / "config.toml").write_text('language = "en"\n')
    assert load_settings().hub == "hf"


def test_an_unknown_language_is_refused_and_the_settings_file_is_kept(tmp_path, monkeypatch):
    from internlocal.errors import UserError

    with pytest.raises(UserError, match="Unknown language 'klingon'; choose one of: en, zh-CN"):
        i18n.set_language("klingon")
    assert i18n.current_language() == "en"

    monkeypatch.setenv("INTERNLOCAL_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text('context_length = 2048\nlanguage = "zh-CN"\n')
    env = dict(os.environ, INTERNLOCAL_HOME=str(tmp_path), COLUMNS="200", NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "internlocal.cli.entry", "config", "set", "language", "tlh"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert "language" in result.stderr and "nothing was written" in result.stderr
    assert (tmp_path / "config.toml").read_text() == 'context_length = 2048\nlanguage = "zh-CN"\n'


# -- the CLI ------------------------------------------------------------------------------------------------------

GROUPS = ["", "models", "jobs", "engines", "eval", "data", "train", "pretrain", "kb", "config"]
COMMANDS = ["chat", "agent", "doctor", "serve", "backup", "restore", "web", "tui"]


def _help(args: list[str], home: Path) -> str:
    env = dict(os.environ, INTERNLOCAL_HOME=str(home), INTERNLOCAL_LANG="zh-CN", COLUMNS="160", NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "internlocal.cli.entry", *args, "--help"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("group", GROUPS + COMMANDS)
def test_each_command_groups_help_is_chinese_but_for_names(group, tmp_path):
    text = _help([group] if group else [], tmp_path)
    assert re.search(r"[\u4e00-\u9fff]", text)
    # option names, metavars (typer's type descriptors: <int range>, {path}) and command names are what the user
    # types or reads as syntax: they stay
    options = re.findall(r"(?<![\w-])--?[\w-]+", text)
    typed = set(options) | {o.lstrip("-") for o in options} | {group}
    words = english_words(re.sub(r"(?<![\w-])--?[\w-]+|\b[A-Z][A-Z_]+\b|`[^`]*`|<[^<>]*>|\{[^{}]*\}", " ", text), typed)
    # the commands' and arguments' names (a required argument's row starts with "*")
    commands = set(re.findall(r"^[│|]?\s+\*?\s*([a-z][\w-]+)\s", text, flags=re.M))
    left = [w for w in words if w not in commands]
    assert not left, f"`internlocal {group} --help` still has English: {sorted(set(left))}\n{text}"


def test_a_cli_error_is_chinese_and_the_english_one_is_unchanged(tmp_path):
    env = dict(os.environ, INTERNLOCAL_HOME=str(tmp_path), COLUMNS="200", NO_COLOR="1")
    args = [sys.executable, "-m", "internlocal.cli.entry", "models", "show", "no-such-model"]
    english = subprocess.run(args, capture_output=True, text=True, env=env)
    chinese = subprocess.run(args, capture_output=True, text=True, env=dict(env, INTERNLOCAL_LANG="zh-CN"))
    assert english.returncode == chinese.returncode == 1
    assert "no-such-model" in english.stderr and "no-such-model" in chinese.stderr
    assert re.search(r"[\u4e00-\u9fff]", chinese.stderr) and not re.search(r"[\u4e00-\u9fff]", english.stderr)


def test_a_plain_cli_table_aligns_chinese_words_by_terminal_cells(tmp_path):
    """`train list` mixes "适合"-like words (two cells a character) with "?": its last column still starts in one
    terminal column on every row."""
    import json

    from rich.cells import cell_len

    env = dict(os.environ, INTERNLOCAL_HOME=str(tmp_path), INTERNLOCAL_LANG="zh-CN", COLUMNS="200")
    args = [sys.executable, "-m", "internlocal.cli.entry", "train", "list"]
    rows = json.loads(subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, check=True).stdout)
    lines = subprocess.run(args, capture_output=True, text=True, env=env, check=True).stdout.splitlines()
    starts = {
        cell_len(line[: line.index(row["description"])])
        for line, row in zip(lines, rows, strict=True)
        if "error" not in row
    }
    assert any(re.search(r"[\u4e00-\u9fff]", line) for line in lines), lines  # a translated verdict is there
    assert len(starts) == 1, lines


# -- the TUI ------------------------------------------------------------------------------------------------------


def screen_text(app) -> str:
    """What the terminal shows, line by line (read from Textual's own SVG screenshot)."""
    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, content in re.findall(r'<text[^>]*? x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(y), []).append((float(x), html.unescape(content).replace("\xa0", " ")))
    return "\n".join("".join(part for _x, part in sorted(parts)) for _y, parts in sorted(rows.items()))


def _catalog_names(home: Path) -> set[str]:
    """Words that come from the catalog's own data (chat titles, model and task names): shown as they are."""
    import sqlite3

    words: set[str] = set()
    db = sqlite3.connect(home / "catalog.sqlite")
    for table, column in (
        ("chat_session", "title"), ("chat_message", "content"), ("model", "name"), ("model", "metadata_json"),
        ("job", "title"), ("job", "error"), ("train_run", "name"), ("train_run", "recipe"), ("train_run", "status"),
    ):  # fmt: skip
        try:
            for (value,) in db.execute(f"SELECT {column} FROM {table}"):
                words.update(re.findall(r"[A-Za-z][\w-]+|[A-Za-z]{2,}", str(value or "")))
        except sqlite3.OperationalError:
            continue
    db.close()
    # the registry's and the recipes' entries and the built-in tasks are data the user may edit, in English
    # (resources/ links to the repository's models/ and recipes/), and a run's sample answers
    paths = [
        *ROOT.glob("models/*.yaml"), *ROOT.glob("recipes/*.yaml"), *ROOT.glob("internlocal/evals/builtin/*"),
        *home.glob("runs/*/*.jsonl"),
    ]  # fmt: skip
    for path in filter(Path.is_file, paths):
        text = path.read_text(encoding="utf-8", errors="replace")
        words.update(re.findall(r"[A-Za-z][\w-]+", text) + re.findall(r"[A-Za-z]{2,}", text))
    return words


LOADED = {
    # language-independent signs that a screen has loaded (the English snapshots' signs read English text)
    "eval": lambda s: _rows("#board", 1)(s),
}


async def test_every_screen_in_chinese_has_no_english_left_but_names(seeded_home, fixed_machine):  # noqa: F811
    from internlocal.tui.app import InternLocalApp

    i18n.set_language("zh-CN")
    # and the seeded jobs' progress messages, a method's and a metric's name
    names = _catalog_names(seeded_home) | {"pulled", "CircularEval", "acc"}
    app = InternLocalApp(greedy_settings(seeded_home))
    found: dict[str, list[str]] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        for name, (key, screen_class, loaded) in SCREENS.items():
            await _open(pilot, key, screen_class, LOADED.get(name, loaded))
            text = screen_text(app)
            assert re.search(r"[\u4e00-\u9fff]", text), f"{name}: no Chinese at all\n{text}"
            left = english_words(text, names)
            if left:
                found[name] = sorted(set(left))
            if name == "help":
                await pilot.press("escape")
            await pilot.press("f5")  # back to Chat: each screen is opened from there, as in the snapshots
            await until(pilot, lambda: type(app.screen).__name__ == "ChatScreen")
    assert not found, f"English left on the Chinese screens: {found}"


async def test_switching_the_language_in_a_running_tui_relabels_every_screen_in_place(home):
    from internlocal.tui.app import InternLocalApp

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(120, 40)) as pilot:
        chat = await ready(pilot)
        chat_id = chat.chat_id
        await pilot.press("f6")  # visit another screen first: it is rebuilt too
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        await pilot.press("f5")
        await until(pilot, lambda: type(app.screen).__name__ == "ChatScreen")
        app.screen.query_one("#prompt").value = "draft question"
        assert "Chats" in screen_text(app) and "New chat" in screen_text(app)

        await app.run_action("set_language('zh-CN')")
        await until(pilot, lambda: type(app.screen).__name__ == "ChatScreen" and app.screen._ready)
        text = screen_text(app)
        assert "对话列表" in text and "新建对话" in text, text
        assert "Chats" not in text and "New chat" not in text
        assert app.screen.chat_id == chat_id  # the same chat, and the draft, carried over
        assert app.screen.query_one("#prompt").value == "draft question"
        await pilot.press("f6")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        assert "任务" in screen_text(app)

        await app.run_action("set_language('en')")
        await until(pilot, lambda: "Jobs" in screen_text(app))
    assert 'language = "en"' in (home / "config.toml").read_text()


# -- what stays English ---------------------------------------------------------------------------------------------


def test_the_servers_errors_stay_english_for_its_clients_in_a_chinese_setup(internlocal_bin, cli_env):
    """OpenAI clients parse the server's messages: a Chinese interface does not change them."""
    import signal

    import requests

    from tests.test_server import free_port, wait_healthy

    port = free_port()
    proc = subprocess.Popen(
        [internlocal_bin, "serve", "--port", str(port)],
        env=dict(cli_env, INTERNLOCAL_LANG="zh-CN"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port)
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=60,
        )
        too_long = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi " * 5000}]},
            timeout=60,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert re.search(r"[\u4e00-\u9fff]", proc.stdout.read())  # the person's start-up lines are in Chinese
    for response in (answer, too_long):
        assert response.status_code in (400, 404), response.text
        message = response.json()["error"]["message"]
        assert not re.search(r"[\u4e00-\u9fff]", message), message
    assert "no-such-model" in answer.json()["error"]["message"]
    assert "context" in too_long.json()["error"]["message"]
