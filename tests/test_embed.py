"""Embeddings through the official SDKs: every embedding type, quality, and bad input."""

import base64
import struct

import cohere
import numpy as np
import openai
import pytest

from conftest import EMBED_MODEL, start_server
from bert_reference import MiniLM

SENTENCES = [
    "hello world",
    "A man is eating food.",
    "The quarterly invoice from the supplier was paid late because finance had not approved it.",
]
ALL_TYPES = ["float", "int8", "uint8", "binary", "ubinary", "base64"]


def cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_v2_embed_all_types_agree_with_float(co):
    response = co.embed(model=EMBED_MODEL, texts=SENTENCES, input_type="search_document", embedding_types=ALL_TYPES)
    e = response.embeddings
    floats = np.array(e.float_)
    assert floats.shape == (3, 384)
    assert np.allclose(np.linalg.norm(floats, axis=1), 1.0, atol=1e-4)
    for row, vector in enumerate(floats):
        expected_int8 = np.round(vector / np.abs(vector).max() * 127).astype(int)
        assert np.array_equal(np.array(e.int8[row]), expected_int8)
        assert np.array_equal(np.array(e.uint8[row]), expected_int8 + 128)
        packed = np.packbits(vector > 0)
        assert np.array_equal(np.array(e.ubinary[row]), packed)
        assert np.array_equal(np.array(e.binary[row]), packed.astype(int) - 128)
        decoded = struct.unpack("<384f", base64.b64decode(e.base64[row]))
        assert np.allclose(decoded, vector)
        assert cos(e.int8[row], vector) > 0.999
    assert response.meta.billed_units.input_tokens > 10


def test_embeddings_match_full_precision_reference(co):
    """The session server runs what `auto` picks for this CPU (docs/embeddings.md)."""
    reference = MiniLM()
    response = co.embed(model=EMBED_MODEL, texts=SENTENCES, input_type="search_query", embedding_types=["float"])
    for text, ours in zip(SENTENCES, response.embeddings.float_):
        assert cos(ours, reference.embed(text)) >= 0.999, text


@pytest.mark.parametrize("engine,precision", [("llama", "q8"), ("native", "f32")])
def test_every_engine_and_precision_stays_near_full_precision(engine, precision):
    """The combinations `auto` does not pick on this CPU, each in its own server."""
    reference = MiniLM()
    extra = ["--encoder-engine", engine, "--encoder-precision", precision]
    with start_server([EMBED_MODEL], extra=extra) as (base_url, key):
        co = cohere.ClientV2(api_key=key, base_url=base_url)
        vectors = co.embed(model=EMBED_MODEL, texts=SENTENCES, input_type="search_query",
                           embedding_types=["float"]).embeddings.float_
    for text, ours in zip(SENTENCES, vectors):
        assert cos(ours, reference.embed(text)) >= 0.999, (engine, precision, text)


def test_paraphrases_score_higher_than_unrelated_pairs(co):
    pairs = [
        ("How do I reset my password?", "I forgot my password and need to change it."),
        ("The shipment will arrive next Tuesday.", "Delivery is expected early next week."),
        ("Our revenue grew by ten percent this quarter.", "Quarterly sales increased 10%."),
    ]
    texts = [t for pair in pairs for t in pair]
    v = co.embed(model=EMBED_MODEL, texts=texts, input_type="clustering", embedding_types=["float"]).embeddings.float_
    for i in range(len(pairs)):
        same = cos(v[2 * i], v[2 * i + 1])
        for j in range(len(pairs)):
            if j != i:
                assert same > cos(v[2 * i], v[2 * j + 1]) + 0.2


def test_v1_embed_floats_and_typed(co_v1):
    floats = co_v1.embed(texts=SENTENCES[:2], model=EMBED_MODEL)
    assert floats.response_type == "embeddings_floats"
    assert len(floats.embeddings) == 2 and len(floats.embeddings[0]) == 384
    typed = co_v1.embed(texts=SENTENCES[:2], model=EMBED_MODEL, input_type="classification", embedding_types=["int8"])
    assert typed.response_type == "embeddings_by_type"
    assert len(typed.embeddings.int8[1]) == 384


def test_openai_embeddings(oai):
    response = oai.embeddings.create(model=EMBED_MODEL, input=SENTENCES)
    assert [d.index for d in response.data] == [0, 1, 2]
    assert len(response.data[0].embedding) == 384
    assert response.usage.prompt_tokens > 10
    encoded = oai.embeddings.create(model=EMBED_MODEL, input="hello world", encoding_format="base64")
    # The SDK hands base64 back as a string when asked for it explicitly.
    raw = encoded.data[0].embedding
    values = struct.unpack("<384f", base64.b64decode(raw)) if isinstance(raw, str) else raw
    assert cos(values, response.data[0].embedding) > 0.9999


def test_embed_bad_inputs(co, oai):
    with pytest.raises(cohere.BadRequestError) as caught:
        co.embed(model=EMBED_MODEL, texts=["word " * 600], input_type="search_document", truncate="NONE")
    assert "input 0" in caught.value.body["message"]
    long = co.embed(model=EMBED_MODEL, texts=["word " * 600], input_type="search_document", truncate="END")
    assert len(long.embeddings.float_[0]) == 384
    with pytest.raises(cohere.BadRequestError):
        co.embed(model=EMBED_MODEL, texts=["x"] * 97, input_type="search_document")
    with pytest.raises(cohere.BadRequestError):
        co.embed(model=EMBED_MODEL, texts=["ok", ""], input_type="search_document")
    with pytest.raises(cohere.BadRequestError):
        co.embed(model=EMBED_MODEL, texts=["ok"], input_type="search_document", embedding_types=["float16"])
    with pytest.raises(cohere.BadRequestError):
        co.embed(model=EMBED_MODEL, texts=["ok"], input_type="image")
    with pytest.raises(cohere.NotFoundError):
        co.embed(model="no-such-embedder", texts=["ok"], input_type="search_document")
    with pytest.raises(openai.APIStatusError) as too_many:
        oai.embeddings.create(model=EMBED_MODEL, input=["x"] * 97)
    assert too_many.value.status_code == 413


def test_tokenize_with_the_embedding_models_vocabulary(co):
    # Documents can be sized in the embedding model's own tokens (bert-base-uncased ids).
    tokens = co.tokenize(text="Hello world", model=EMBED_MODEL)
    assert tokens.tokens == [7592, 2088]
    assert [s.strip() for s in tokens.token_strings] == ["hello", "world"]
    assert co.detokenize(tokens=tokens.tokens, model=EMBED_MODEL).text.strip() == "hello world"
    with pytest.raises(cohere.errors.BadRequestError):
        co.detokenize(tokens=[10**9], model=EMBED_MODEL)
