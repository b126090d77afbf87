"""Images in chat through llama.cpp: the engine, the batched server engine, the chat service and its image store,
the CLI, the OpenAI server (official client, ``image_url`` parts) and the TUI, on a tiny random vision model.

Random weights answer noise, so the tests assert what holds anyway: an image's tokens are evaluated (the prompt
grows by them), different images change the first token's distribution, the same image gives the same output on
every path, and text-only models, oversized images and URLs the server was not allowed to read are refused with a
sentence.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import warnings
from contextlib import contextmanager

import openai
import pytest
from PIL import Image

from internlocal.engines.base import Capability, GenerationParams
from internlocal.engines.images import fit_image, image_part, prepare_image
from internlocal.errors import Unsupported

QUESTION = "What is in this picture?"


def png(color: str, size: tuple[int, int] = (96, 64), stripes: bool = True) -> bytes:
    image = Image.new("RGB", size, color)
    if stripes:  # some structure, so two images differ in more than their mean colour
        for x in range(0, size[0], 8):
            for y in range(size[1]):
                image.putpixel((x, y), (255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def ask(engine, image: bytes | None, *, max_tokens: int = 4):
    content = [{"type": "text", "text": QUESTION}]
    if image is not None:
        content.append(image_part(prepare_image(image)))
    params = GenerationParams.greedy(max_tokens=max_tokens, logprobs=5)
    return engine.chat([{"role": "user", "content": content}], params).collect()


@pytest.fixture(scope="module")
def vision_engine(tiny_vlm):
    from internlocal.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(tiny_vlm.gguf, projector_path=tiny_vlm.mmproj, n_ctx=1024, model_name="tiny-vlm")
    yield engine
    engine.close()


def register_vlm(services, tiny_vlm, name: str = "tiny-vlm"):
    from internlocal.hub.library import import_model
    from internlocal.hub.store import Store

    return import_model(
        services.catalog, Store(services.settings.store_dir), tiny_vlm.gguf, name=name, mmproj=tiny_vlm.mmproj
    )


def test_an_image_is_evaluated_and_changes_the_answer(vision_engine, tiny_vlm):
    assert Capability.VISION in vision_engine.capabilities
    text = ask(vision_engine, None)
    red = ask(vision_engine, png("red"))
    blue = ask(vision_engine, png("blue", (64, 128)))
    # the image's tokens are in the prompt: the marker becomes the image's chunks (tiles and their framing)
    assert red.prompt_tokens - text.prompt_tokens == tiny_vlm.image_tokens
    assert blue.prompt_tokens == red.prompt_tokens
    assert red.logprobs[0].top != blue.logprobs[0].top  # a different picture, a different first-token distribution
    again = ask(vision_engine, png("red"))
    assert (again.text, again.logprobs[0].top) == (red.text, red.logprobs[0].top)
    # a text turn after an image turn is not answered from the image's KV (placeholders never match text)
    assert ask(vision_engine, None).logprobs[0].top == text.logprobs[0].top


def test_the_next_turn_reuses_the_images_kv_and_answers_the_same(vision_engine):
    image = image_part(prepare_image(png("green")))
    first = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, image]}]
    params = GenerationParams.greedy(max_tokens=3, logprobs=3)
    reply = vision_engine.chat(first, params).collect()
    second = [*first, {"role": "assistant", "content": reply.text}, {"role": "user", "content": "And the colour?"}]
    warm = vision_engine.chat(second, params).collect()
    vision_engine._llm.reset()  # nothing cached: the images are put again from the start
    cold = vision_engine.chat(second, params).collect()
    assert warm.prompt_tokens == cold.prompt_tokens > reply.prompt_tokens
    assert warm.text == cold.text
    assert warm.logprobs[0].top.keys() == cold.logprobs[0].top.keys()


def test_the_batched_engine_puts_images_into_its_slots_like_the_engine(vision_engine):
    from concurrent.futures import ThreadPoolExecutor

    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp

    alone = {color: ask(vision_engine, png(color), max_tokens=3) for color in ("red", "blue")}
    batched = BatchedLlamaCpp(vision_engine, slots=3)
    try:
        assert Capability.VISION in batched.capabilities
        with ThreadPoolExecutor(4) as pool:  # images and plain text in the same batches
            futures = {c: pool.submit(ask, batched, png(c), max_tokens=3) for c in ("red", "blue")}
            plain = pool.submit(ask, batched, None, max_tokens=3)
            results = {c: f.result() for c, f in futures.items()}
            assert plain.result().prompt_tokens < results["red"].prompt_tokens
        for color, result in results.items():
            assert result.prompt_tokens == alone[color].prompt_tokens
            assert result.text == alone[color].text
            assert result.logprobs[0].top.keys() == alone[color].logprobs[0].top.keys()
            for token, value in alone[color].logprobs[0].top.items():
                # the batched context computes attention with flash attention, the engine here without
                assert result.logprobs[0].top[token] == pytest.approx(value, abs=1e-2)
    finally:
        batched.close()


def test_a_text_only_model_refuses_an_image_with_a_sentence(engine):
    with pytest.raises(Unsupported, match="reads text only and cannot see images"):
        ask(engine, png("red"))
    # text parts alone are fine for a text model (OpenAI clients send them as lists too)
    reply = engine.chat(
        [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France? Answer in one word."}]}],
        GenerationParams.greedy(max_tokens=8),
    ).collect()
    assert "Paris" in reply.text


def test_images_are_upright_scaled_and_unreadable_ones_refused():
    from internlocal.engines.images import ImageError, open_image

    # EXIF orientation 6: stored sideways, shown rotated a quarter turn
    wide = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    wide.save(out, format="JPEG", exif=exif)
    assert open_image(out.getvalue()).size == (20, 40)
    big = prepare_image(png("red", (3000, 1500), stripes=False), max_side=512)
    assert (big.width, big.height) == (512, 256)
    with pytest.raises(ImageError, match="not an image"):
        prepare_image(b"not an image at all")
    bomb = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(bomb, format="PNG")  # 50 megapixels in a small file
    with pytest.raises(ImageError, match="pixels") as refused:
        prepare_image(bomb.getvalue())
    assert refused.value.status == 413
    # past Pillow's own bomb limit (its warning or error): the same 413 sentence, nothing on stderr
    giant = io.BytesIO()
    Image.new("1", (20_000, 10_000)).save(giant, format="PNG")
    for read in (prepare_image, fit_image):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ImageError, match="too many pixels") as refused:
                read(giant.getvalue())
        assert refused.value.status == 413
    from internlocal.engines.images import decode_data_uri

    with pytest.raises(ImageError, match="larger than 20 MiB") as huge:
        decode_data_uri("data:image/png;base64," + "A" * (28 << 20))
    assert huge.value.status == 413
    with pytest.raises(ImageError, match="data: URIs"):
        decode_data_uri("ftp://example.com/cat.png")


def test_a_chat_keeps_its_images_and_deleting_it_frees_them(services, tiny_vlm):
    model = register_vlm(services, tiny_vlm)
    assert model.vision and model.projector_path == str(tiny_vlm.mmproj)
    chats = services.chats
    chat = chats.new_chat(model_name=model.name)
    picture = png("purple")
    reply = chats.send(chat.id, QUESTION, images=[("purple.png", picture)])
    list(reply)
    stored = chats.message_images(chat.id)
    [[image]] = stored.values()
    assert image.name == "purple.png" and (image.width, image.height) == (96, 64)
    path = chats.images.path(image.sha256)
    assert path.is_file()
    history = chats.history(services.catalog.get_chat(chat.id))
    assert history[-2]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    # the chat goes on with a text-only model: earlier pictures become a note naming them, not a refusal
    services.catalog.update_chat(chat.id, model_name="smollm2-135m-instruct-q4_1")
    list(chats.send(chat.id, "What is the capital of France? Answer in one word."))
    assert chats.history(services.catalog.get_chat(chat.id), images=False)[1]["content"].endswith("[image purple.png]")
    services.catalog.update_chat(chat.id, model_name=model.name)
    # the same picture in a second chat is one file; deleting the first chat keeps it for the second
    other = chats.new_chat(model_name=model.name)
    list(chats.send(other.id, "Again?", images=[("copy.png", picture)]))
    chats.delete_chat(chat.id)
    assert path.is_file()
    chats.delete_chat(other.id)
    assert not path.exists()


def test_a_backup_keeps_the_chats_pictures_and_a_restore_brings_them_back(services, tmp_path):
    from internlocal.chat.images import ImageStore
    from internlocal.config import Settings
    from internlocal.services.backup import backup, restore

    chat = services.chats.new_chat()
    image = services.chats.images.put("red.png", png("red"))  # stored as a message's picture, as send() does
    message = services.catalog.add_message(chat.id, "user", QUESTION)
    services.catalog.add_images(message.id, [image])
    made = backup(services.settings, tmp_path / "backup")
    assert json.loads((tmp_path / "backup" / "manifest.json").read_text())["images"] == 1 and made
    elsewhere = Settings(home=tmp_path / "elsewhere")
    restore(elsewhere, tmp_path / "backup")
    restored = ImageStore(elsewhere.home).path(image.sha256)
    assert restored.read_bytes() == services.chats.images.path(image.sha256).read_bytes()


def test_a_text_only_chat_refuses_an_image_before_storing_anything(services):
    chat = services.chats.new_chat()
    with pytest.raises(Unsupported, match="cannot see images"):
        services.chats.send(chat.id, QUESTION, images=[("red.png", png("red"))])
    assert services.catalog.messages(chat.id) == []
    assert not (services.settings.home / "images").exists()


def test_cli_image_question_matches_the_engine(services, tiny_vlm, internlocal_bin, cli_env, tmp_path, vision_engine):
    register_vlm(services, tiny_vlm)
    picture = tmp_path / "red.png"
    picture.write_bytes(png("red"))
    run = subprocess.run(
        [internlocal_bin, "chat", QUESTION, "-m", "tiny-vlm", "--image", str(picture), "--system", "",
         "--temperature", "0", "--top-k", "1", "--repeat-penalty", "1", "--max-tokens", "4", "--json"],
        env=cli_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    expected = ask(vision_engine, png("red"))
    assert (answer["text"], answer["prompt_tokens"]) == (expected.text, expected.prompt_tokens)
    # a text-only model and a missing file: one sentence each, exit code 1
    refused = subprocess.run(
        [internlocal_bin, "chat", QUESTION, "--image", str(picture)], env=cli_env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "cannot see images" in refused.stderr
    missing = subprocess.run(
        [internlocal_bin, "chat", QUESTION, "-m", "tiny-vlm", "--image", str(tmp_path / "nope.png")],
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "There is no image file" in missing.stderr


@contextmanager
def image_site(folder):
    """``folder`` served over HTTP on 127.0.0.1 for the block."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def vision_server(services, tiny_vlm, tmp_path):
    from internlocal.server.serve import ServeOptions, build
    from tests.test_server import Running, free_port

    register_vlm(services, tiny_vlm)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    engine, base, app = build(
        ServeOptions(model="tiny-vlm", slots=2, context_length=1024, image_folders=(allowed,)), services
    )
    running = Running(app, engine, base, free_port())
    running.allowed = allowed
    try:
        yield running
    finally:
        running.stop()


def test_server_answers_image_url_parts_like_the_engine(vision_server, vision_engine):
    client = vision_server.client()

    def completion(url: str, model: str = "tiny-vlm"):
        return client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}],
                }
            ],
            temperature=0,
            top_p=1,
            max_tokens=4,
            extra_body={"top_k": 1, "repeat_penalty": 1.0},
        )

    expected = ask(vision_engine, png("red"))
    answer = completion(data_uri(png("red")))
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.prompt_tokens == expected.prompt_tokens  # the image's tokens are counted
    # an assistant turn that only called tools has content null: it reaches the template as empty text
    from internlocal.server.images import resolve_content

    assert resolve_content(None, None, where="messages[1]") == ""
    # file:// inside an allowed folder is read; outside it, and http(s) without --allow-image-urls, refused
    (vision_server.allowed / "red.png").write_bytes(png("red"))
    assert completion((vision_server.allowed / "red.png").as_uri()).choices[0].message.content == expected.text
    with pytest.raises(openai.BadRequestError, match="outside the folders"):
        completion("file:///etc/passwd")
    with pytest.raises(openai.BadRequestError, match="outside the folders"):  # .. is resolved before the check
        completion((vision_server.allowed / ".." / ".." / "etc" / "passwd").as_posix().join(["file://", ""]))
    with pytest.raises(openai.BadRequestError, match="cannot be read"):
        completion("file://" + (vision_server.allowed / "a%00b.png").as_posix())
    with pytest.raises(openai.BadRequestError, match="--allow-image-urls"):
        completion("http://127.0.0.1:9/cat.png")
    # with --allow-image-urls an http URL is fetched (a real server on 127.0.0.1), and its failures are sentences
    from internlocal.server.state import ServerState

    ServerState.of(vision_server.app).config.allow_image_urls = True
    with image_site(vision_server.allowed) as site:
        assert completion(f"{site}/red.png").choices[0].message.content == expected.text
        with pytest.raises(openai.BadRequestError, match="HTTP 404"):
            completion(f"{site}/missing.png")
    with pytest.raises(openai.BadRequestError, match="not an image"):
        completion("data:image/png;base64," + base64.b64encode(b"garbage").decode())
    bomb = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(bomb, format="PNG")
    with pytest.raises(openai.APIStatusError) as too_big:
        completion(data_uri(bomb.getvalue()))
    assert too_big.value.status_code == 413 and "pixels" in str(too_big.value)
    # the embedded text model, served beside it, refuses the image with a sentence
    with pytest.raises(openai.BadRequestError, match="cannot see images"):
        completion(data_uri(png("red")), model="smollm2-135m-instruct-q4_1")
    # Ollama's API on the same port: images as base64 beside the text, through Ollama's own client
    import ollama

    greedy = {"temperature": 0, "top_k": 1, "top_p": 1, "repeat_penalty": 1.0, "num_predict": 4}
    client = ollama.Client(host=vision_server.url)
    asked = [{"role": "user", "content": QUESTION, "images": [png("red")]}]
    reply = client.chat(model="tiny-vlm", messages=asked, options=greedy)
    assert (reply.message.content, reply.prompt_eval_count) == (expected.text, expected.prompt_tokens)
    generated = client.generate(model="tiny-vlm", prompt=QUESTION, images=[png("red")], options=greedy)
    assert generated.response == expected.text
    with pytest.raises(ollama.ResponseError, match="cannot see images"):
        client.chat(model="smollm2-135m-instruct-q4_1", messages=asked, options=greedy)


async def test_tui_shows_attached_images_and_a_reopened_chat_still_shows_them(home, tiny_vlm, tmp_path, vision_engine):
    from textual.widgets import Input

    from internlocal.tui.app import InternLocalApp
    from internlocal.tui.widgets.messages import ImageView, MessageView
    from tests.test_tui import SIZE, greedy_settings, ready, until

    picture = tmp_path / "red.png"
    picture.write_bytes(png("red"))
    expected = ask(vision_engine, png("red"))
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        services = screen.services
        model = register_vlm(services, tiny_vlm)
        chat = services.chats.new_chat(
            model_name=model.name, system_prompt="", params=GenerationParams.greedy(max_tokens=4)
        )
        await screen.open_chat(chat.id)
        prompt = screen.query_one("#prompt", Input)
        prompt.value = str(picture)  # a path pasted into the prompt is attached, and the prompt cleared
        await until(pilot, lambda: bool(screen.attached))
        assert [name for name, _ in screen.attached] == ["red.png"] and prompt.value == ""
        assert "red.png" in str(screen.query_one("#attachments").render())
        prompt.value = QUESTION
        await pilot.press("enter")
        await until(pilot, lambda: not screen.generating and len(list(screen.query(MessageView))) == 2)
        assert not screen.attached
        [view] = list(screen.query(ImageView))
        assert "red.png" in str(view.query_one(".caption").render())
        # reopened: the stored image is shown again, from the image store
        await screen.open_chat(chat.id)
        await pilot.pause()
        [user_view] = [v for v in screen.query(MessageView) if v.role == "user"]
        assert len(user_view.images) == 1 and user_view.images[0].data is not None
        assert len(list(screen.query(ImageView))) == 1
    messages = services.catalog.messages(chat.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert (messages[1].content, messages[1].prompt_tokens) == (expected.text, expected.prompt_tokens)
