"""The Embedder protocol on the embedded all-MiniLM-L6-v2 (offline): plain transformers for folders of the common
shape, sentence-transformers for the rest, and the two agreeing vector for vector."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from internlocal.engines.base import Embedder
from internlocal.engines.sentence_transformers import SentenceTransformerEmbedder
from internlocal.engines.transformers_embedder import TransformersEmbedder, plain_layout
from internlocal.errors import UserError

TEXTS = [
    "Where is the Eiffel Tower?",
    "The Eiffel Tower is in Paris.",
    "Bananas are yellow.",
    "巴黎是法国的首都。",
    "",
    "A long passage that runs past the model's 256-token window. " * 40,  # truncated the same way by both
]


def test_minilm_embeds_and_ranks_by_meaning(minilm_path):
    embedder = TransformersEmbedder(minilm_path, plain_layout(minilm_path), model_name="all-minilm-l6-v2")
    assert isinstance(embedder, Embedder)
    assert embedder.dimension == 384
    query, near, far = embedder.embed(TEXTS[:3])
    assert len(query) == 384 and math.isclose(sum(x * x for x in query), 1.0, rel_tol=1e-4)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(query, near) > dot(query, far) + 0.2


def test_plain_transformers_gives_sentence_transformers_vectors_and_token_counts(minilm_path):
    ours = TransformersEmbedder(minilm_path, plain_layout(minilm_path))
    reference = SentenceTransformerEmbedder(minilm_path)
    assert ours.dimension == reference.dimension
    for mine, theirs in zip(ours.embed(TEXTS), reference.embed(TEXTS), strict=True):
        assert max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) < 1e-5
    assert ours.count_tokens(TEXTS) == reference.count_tokens(TEXTS)
    alone, in_batch = ours.embed(TEXTS[1:2])[0], ours.embed(TEXTS[:3])[1]  # padding in a batch changes nothing
    assert max(abs(a - b) for a, b in zip(alone, in_batch, strict=True)) < 1e-5


def _copy_with(minilm_path, tmp_path, **changes):
    folder = tmp_path / "model"
    shutil.copytree(minilm_path, folder)
    for name, content in changes.items():
        path = folder / name.replace("__", "/")
        path.write_text(json.dumps(content), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("mode", "flag"),
    [("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens"), ("lasttoken", "pooling_mode_lasttoken")],
)
def test_other_pooling_modes_agree_with_sentence_transformers(minilm_path, tmp_path, mode, flag):
    pooling = json.loads((minilm_path / "1_Pooling" / "config.json").read_text())
    pooling = {key: False if key.startswith("pooling_mode_") else value for key, value in pooling.items()}
    pooling[flag] = True
    folder = _copy_with(minilm_path, tmp_path, **{"1_Pooling__config.json": pooling})
    assert plain_layout(folder)["pooling"] == mode
    ours = TransformersEmbedder(folder, plain_layout(folder)).embed(TEXTS)
    theirs = SentenceTransformerEmbedder(folder).embed(TEXTS)
    for mine, reference in zip(ours, theirs, strict=True):
        assert max(abs(a - b) for a, b in zip(mine, reference, strict=True)) < 1e-5


def test_folders_of_another_shape_are_left_to_sentence_transformers(minilm_path, tmp_path):
    from internlocal.catalog.schema import Model
    from internlocal.engines.loader import load_embedder

    modules = json.loads((minilm_path / "modules.json").read_text())
    with_dense = [*modules, {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]
    folder = _copy_with(minilm_path, tmp_path, **{"modules.json": with_dense})
    assert plain_layout(folder) is None
    assert plain_layout(tmp_path / "nowhere") is None
    record = lambda path: Model(name="m", kind="embedding", format="sentence-transformers", path=str(path))  # noqa: E731
    assert isinstance(load_embedder(record(minilm_path)), TransformersEmbedder)
    (folder / "modules.json").write_text(json.dumps(modules))  # the same folder, back to the plain shape
    assert isinstance(load_embedder(record(folder)), TransformersEmbedder)


def test_a_knowledge_base_learns_the_vector_size_without_loading_the_model(services):
    """`kb create` reads the size from the folder's configuration: the command does not pay for loading MiniLM (the
    sync job loads it)."""
    from internlocal.kb import library

    library._embedders.pop("all-minilm-l6-v2", None)
    assert library.embedding_dimension(services.catalog, "all-minilm-l6-v2") == 384
    assert "all-minilm-l6-v2" not in library._embedders
    with pytest.raises(UserError, match="not an embedding model"):
        library.embedding_dimension(services.catalog, "smollm2-135m-instruct-q4_1")
