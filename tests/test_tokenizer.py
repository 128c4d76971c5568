"""SilcTokenizer: ids in the text tower's format, tf.data and eager, files, saving with the model."""

import io
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND
from conftest import to_numpy

import keras_silc
from keras_silc.data.tokenizer import SilcTokenizer

T = 16
COLORS = ["red", "blue", "green", "black", "white", "yellow", "pink", "brown"]
ITEMS = ["sneaker", "bag", "dress", "shirt", "coat", "sandal", "boot", "hat"]
PLACES = ["at the top left", "on the right", "in the middle", "at the bottom", "on the left"]
LONG = "a red sneaker at the top left and a blue bag on the right and a green hat in the middle"


def caption_corpus(count=300, seed=0):
    rng = random.Random(seed)

    def thing():
        return f"a {rng.choice(COLORS)} {rng.choice(ITEMS)} {rng.choice(PLACES)}"

    captions = [f"{thing()} and {thing()}" if i % 2 else thing() for i in range(count)]
    # Some capitals: the trained vocabulary and the tokenizer lower-case them.
    return [c.capitalize() if i % 5 == 0 else c for i, c in enumerate(captions)]


@pytest.fixture(scope="module")
def captions():
    return caption_corpus()


@pytest.fixture(scope="module", params=["unigram", "bpe", "wordpiece"])
def tokenizer(request, captions):
    return SilcTokenizer.from_captions(captions, 200, T, model_type=request.param)


def real_lengths(ids):
    return np.sum(ids != 0, axis=-1)


# ----------------------------------------------------------------- the id format
def test_ids_end_with_the_end_token_then_zeros(tokenizer):
    ids = tokenizer(["a red bag", "A blue sneaker on the left", ""])
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == (3, T)
    assert tokenizer.pad_token_id == 0 and tokenizer.vocabulary_size <= 200
    end = tokenizer.end_token_id
    for row, length in zip(ids, real_lengths(ids), strict=True):
        assert row[length - 1] == end and np.all(row[length:] == 0)
        assert np.all(row[: length - 1] != end) and np.all(row[: length - 1] != 0)
    np.testing.assert_array_equal(ids[2], [end] + [0] * (T - 1))  # "" is only the end token
    single = tokenizer("a red bag")
    assert single.shape == (T,) and single.dtype == np.int32
    np.testing.assert_array_equal(single, ids[0])


def test_truncation_keeps_the_end_token_last(tokenizer):
    ids = tokenizer([LONG])[0]
    assert np.all(ids != 0) and ids[-1] == tokenizer.end_token_id
    no_end = SilcTokenizer(tokenizer.tokenizer, T, add_end_token=False)
    long_ids = no_end([LONG])[0]
    assert np.all(long_ids != 0) and tokenizer.end_token_id not in long_ids
    np.testing.assert_array_equal(long_ids[:-1], ids[:-1])


def test_lowercase(tokenizer):
    np.testing.assert_array_equal(tokenizer("A RED Bag"), tokenizer("a red bag"))
    case_sensitive = SilcTokenizer(tokenizer.tokenizer, T, lowercase=False)
    assert not np.array_equal(case_sensitive("A RED Bag"), tokenizer("a red bag"))


def test_detokenize_round_trips(tokenizer):
    texts = ["a red bag", "a blue coat", ""]  # shorter than T: nothing truncated
    ids = tokenizer(texts)
    assert tokenizer.detokenize(ids) == texts
    assert tokenizer.detokenize(ids[1]) == texts[1]
    assert tokenizer.detokenize(keras.ops.convert_to_tensor(ids)) == texts
    assert tokenizer.detokenize([list(ids[0]), list(ids[1][:3])])[0] == texts[0]  # ragged
    assert tokenizer.detokenize([]) == ""


def test_detokenize_refuses_what_is_not_this_vocabulary(tokenizer):
    size = tokenizer.vocabulary_size
    for ids, bad in (([[3, size]], size), ([[-1, 3]], -1)):
        with pytest.raises(ValueError, match=rf"Token id {bad} is not in .* {size} tokens"):
            tokenizer.detokenize(ids)
    with pytest.raises(ValueError, match="got the text 'a red bag'"):
        tokenizer.detokenize("a red bag")
    with pytest.raises(ValueError, match="dtype float64"):
        tokenizer.detokenize([[3.5, 4.0]])
    with pytest.raises(ValueError, match="more than two axes"):
        tokenizer.detokenize(np.zeros((2, 3, 4), "int32"))


def test_input_types(tokenizer):
    expected = tokenizer(["a red bag", "a blue coat"])
    for texts in (
        np.array(["a red bag", "a blue coat"]),
        [b"a red bag", b"a blue coat"],
        ("a red bag", "a blue coat"),
        tf.constant(["a red bag", "a blue coat"]),
    ):
        np.testing.assert_array_equal(tokenizer(texts), expected)
    assert tokenizer([]).shape == (0, T)
    with pytest.raises(TypeError, match="str"):
        tokenizer([1, 2])


# ------------------------------------------------------------ graph and eager
def test_tf_data_matches_eager(tokenizer):
    texts = ["a red bag", "A blue sneaker on the left", LONG]
    eager = tokenizer(texts)
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(tokenizer)
    assert batched.element_spec.shape.as_list() == [None, T]
    assert batched.element_spec.dtype == tf.int32
    np.testing.assert_array_equal(next(iter(batched)).numpy(), eager)
    unbatched = tf.data.Dataset.from_tensor_slices(texts).map(tokenizer)
    np.testing.assert_array_equal(np.stack([x.numpy() for x in unbatched]), eager)


def test_tf_data_survives_keras_set_random_seed(captions):
    # keras.utils.set_random_seed clears TF's kernel cache, which holds tf-text's
    # SentencePiece resources: a pipeline built before the seed must still run after it.
    tokenizer = SilcTokenizer.from_captions(captions, 100, T, model_type="bpe")
    dataset = tf.data.Dataset.from_tensor_slices(["a red bag"]).batch(1).map(tokenizer)
    keras.utils.set_random_seed(1)
    np.testing.assert_array_equal(next(iter(dataset)).numpy(), tokenizer(["a red bag"]))


# -------------------------------------------------------------------- training
def test_training_from_a_dataset_gives_the_same_vocabulary(captions):
    scalars = tf.data.Dataset.from_tensor_slices(captions)
    for model_type, dataset in (
        ("bpe", scalars),
        ("bpe", scalars.batch(64)),
        ("wordpiece", scalars),
    ):
        from_list = SilcTokenizer.from_captions(captions, 120, T, model_type=model_type)
        from_dataset = SilcTokenizer.from_captions(dataset, 120, T, model_type=model_type)
        assert from_dataset.tokenizer.get_vocabulary() == from_list.tokenizer.get_vocabulary()
    with pytest.raises(ValueError, match="model_type"):
        SilcTokenizer.from_captions(captions, 100, T, model_type="char")


# ----------------------------------------------------------------------- files
def test_from_file(tokenizer, tmp_path):
    if isinstance(
        tokenizer.tokenizer, keras_silc.data.tokenizer.keras_hub.tokenizers.WordPieceTokenizer
    ):
        path = tmp_path / "vocabulary.txt"
        path.write_text("".join(f"{token}\n" for token in tokenizer.tokenizer.get_vocabulary()))
    else:
        path = tmp_path / "captions.model"
        path.write_bytes(tokenizer.tokenizer.proto)
    loaded = SilcTokenizer.from_file(path, T)
    np.testing.assert_array_equal(loaded([LONG, "a red bag"]), tokenizer([LONG, "a red bag"]))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No vocabulary file.*\.model.*\.txt"):
        SilcTokenizer.from_file(tmp_path / "missing.model", T)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ValueError, match=r"Unknown vocabulary file type.*\.model.*\.txt"):
        SilcTokenizer.from_file(tmp_path / "vocab.json", T)
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json.*save_to_preset"):
        SilcTokenizer.from_preset(tmp_path)
    # Files of the right type that hold something else.
    (tmp_path / "notes.txt").write_text("buy milk\ncall home\n")
    with pytest.raises(ValueError, match=r"notes.txt' is not a WordPiece vocabulary.*'\[UNK\]'"):
        SilcTokenizer.from_file(tmp_path / "notes.txt", T)
    (tmp_path / "twice.txt").write_text("[PAD]\n[UNK]\n[EOS]\nbag\nred\nbag\n")
    with pytest.raises(ValueError, match=r"twice.txt' lists the token 'bag' twice \(lines 4 and 6"):
        SilcTokenizer.from_file(tmp_path / "twice.txt", T)
    (tmp_path / "words.model").write_text("not a protobuf")
    with pytest.raises(ValueError, match=r"words.model' is not a SentencePiece model"):
        SilcTokenizer.from_file(tmp_path / "words.model", T)


@pytest.mark.parametrize("model_type", ["unigram", "wordpiece"])
def test_training_on_no_captions_says_so(model_type):
    for captions in ([], ["", "  "]):
        with pytest.raises(ValueError, match="No captions to train the"):
            SilcTokenizer.from_captions(captions, 64, T, model_type=model_type)


def test_training_mistakes_are_refused_before_training(captions):
    import tensorflow as tf

    with pytest.raises(ValueError, match="got a single string"):
        SilcTokenizer.from_captions("a red bag on the left", 40, T)
    with pytest.raises(ValueError, match="got None"):
        SilcTokenizer.from_captions(None, 40, T)
    pairs = tf.data.Dataset.from_tensor_slices({"image": [0, 1], "caption": ["a", "b"]})
    with pytest.raises(ValueError, match=r"pairs.map\(lambda pair: pair\['caption'\]\)"):
        SilcTokenizer.from_captions(pairs, 40, T, model_type="wordpiece")
    with pytest.raises(ValueError, match="dataset of strings, got int32"):
        SilcTokenizer.from_captions(
            tf.data.Dataset.range(5).map(lambda x: tf.cast(x, "int32")), 40, T
        )
    for size in (0, 2, 40.0):
        with pytest.raises(ValueError, match="vocabulary_size must be an int of at least 8"):
            SilcTokenizer.from_captions(captions, size, T)
    with pytest.raises(ValueError, match="sequence_length must be a positive integer"):
        SilcTokenizer.from_captions(captions, 40, 0)


def test_a_vocabulary_whose_padding_is_not_zero_is_refused(captions, tmp_path):
    path = tmp_path / "vocabulary.txt"
    path.write_text("\n".join(["[UNK]", "[PAD]", "[EOS]", "a", "bag"]))
    with pytest.raises(ValueError, match="padding token has id 1"):
        SilcTokenizer.from_file(path, T)
    # SentencePiece's defaults: unk 0, bos 1, eos 2, no padding.
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_writer=model,
        vocab_size=60,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = tmp_path / "default_ids.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(ValueError, match="padding token has id -1"):
        SilcTokenizer.from_file(path, T)


def test_the_wrapped_tokenizer_must_leave_packing_to_us(tokenizer):
    import keras_hub

    vocabulary = ["[PAD]", "[UNK]", "[EOS]", "a", "bag"]
    with pytest.raises(ValueError, match="sequence_length=None"):
        SilcTokenizer(keras_hub.tokenizers.WordPieceTokenizer(vocabulary, sequence_length=8), T)
    with pytest.raises(TypeError, match="SentencePieceTokenizer, WordPieceTokenizer or"):
        SilcTokenizer("vocabulary.txt", T)


# --------------------------------------------------------------- with the model
def model_with(tokenizer, **text):
    keras.utils.set_random_seed(0)
    text = {"vocabulary_size": tokenizer.vocabulary_size, **text}
    return keras_silc.SilcModel.from_preset("silc_tiny", text=text, tokenizer=tokenizer)


def test_the_tokenizer_travels_with_the_saved_model(tokenizer, tmp_path):
    model = model_with(tokenizer)
    assert model.tokenizer is tokenizer
    captions = ["a red bag on the left", "A white dress at the top", LONG]
    ids = model.preprocessor.tokenize(captions)
    embeddings = to_numpy(model.encode_text(ids))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.tokenizer, SilcTokenizer)
    np.testing.assert_array_equal(reloaded.preprocessor.tokenize(captions), ids)
    np.testing.assert_allclose(to_numpy(reloaded.encode_text(ids)), embeddings, atol=1e-6)
    if BACKEND == "torch":
        # Every Keras layer is a torch Module here: eval()/train() visit the tokenizer.
        reloaded.eval()
        reloaded.train()


def test_preset_round_trip(tokenizer, tmp_path):
    tokenizer.save_to_preset(tmp_path / "preset")
    again = SilcTokenizer.from_preset(tmp_path / "preset")
    np.testing.assert_array_equal(again([LONG, "a red bag"]), tokenizer([LONG, "a red bag"]))
    assert (again.lowercase, again.sequence_length) == (tokenizer.lowercase, T)


def test_the_model_checks_the_tokenizer(captions):
    tokenizer = SilcTokenizer.from_captions(captions, 100, T, model_type="bpe")
    size = tokenizer.vocabulary_size
    with pytest.raises(ValueError, match=rf"{size} tokens.*embeds 8.*'vocabulary_size': {size}"):
        model_with(tokenizer, vocabulary_size=8)
    with pytest.raises(ValueError, match="max_length is 8"):
        model_with(tokenizer, max_length=8)
    wrong_end = tokenizer.end_token_id + 1
    with pytest.raises(ValueError, match="eos_token_id"):
        model_with(tokenizer, pooling="eos", eos_token_id=wrong_end)
    model_with(tokenizer, pooling="eos", eos_token_id=tokenizer.end_token_id)
    with pytest.raises(ValueError, match="(?i)no tokenizer"):
        keras_silc.SilcModel.from_preset("silc_tiny").preprocessor.tokenize(["a red bag"])
