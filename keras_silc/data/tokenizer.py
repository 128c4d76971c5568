"""`SilcTokenizer`: captions -> the model's `text` input, (N, T) int32 ids, 0 for padding.

A keras-hub SentencePiece, WordPiece or byte-pair (CLIP) tokenizer does the subword split;
this layer adds what the SILC text tower expects: optional lower-casing (or SigLIP's
canonicalisation), an optional start token, an end-of-sequence token after the text (kept
as the last real token when a caption is truncated), padding to `sequence_length`. It runs in a `tf.data` pipeline (graph mode, tf tensors in and out)
under every Keras backend, and eagerly on Python strings (numpy out).

    tokenizer = SilcTokenizer.from_captions(captions, vocabulary_size=2000, sequence_length=16)
    tokenizer(["a red bag on the right"])  # (1, 16) int32 numpy array
    model = SilcModel.from_preset(
        "silc_tiny", text={"vocabulary_size": tokenizer.vocabulary_size}, tokenizer=tokenizer
    )
"""

import io
import numbers
import os
import warnings

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_silc import preset_files
from keras_silc.checks import check_token_ids
from keras_silc.checks import holds_integers
from keras_silc.checks import positive_int

SENTENCE_PIECE_EXTENSIONS = (".model", ".spm")
WORD_PIECE_EXTENSIONS = (".txt",)
MODEL_TYPES = ("unigram", "bpe", "wordpiece")
# WordPiece vocabularies name their special tokens; these are the usual spellings.
WORD_PIECE_PAD_TOKENS = ("[PAD]", "<pad>")
WORD_PIECE_END_TOKENS = ("[EOS]", "[SEP]", "</s>", "<eos>")
WORD_PIECE_START_TOKENS = ("[BOS]", "[CLS]", "<s>", "<bos>")
# big_vision's prompt canonicalisation (SigLIP's; keras-hub's SigLIPPreprocessor
# `canonicalize_text`): lower-case, drop ASCII punctuation, collapse white space, strip.
PUNCTUATION = r"!|\"|#|\$|%|&|\\|'|\(|\)|\*|\+|,|-|\.|/|:|;|<|=|>|\?|@|\[|\\|\]|\^|_|`|{|\||}|~"


def _is_sentence_piece(tokenizer):
    return isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer)


def _is_byte_pair(tokenizer):
    return isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer)


def canonicalize(texts):
    """big_vision's (SigLIP's) caption canonicalisation of a tf string tensor, as keras-hub's
    `SigLIPPreprocessor(canonicalize_text=True)` does it (ASCII lower-casing included)."""
    texts = tf.strings.lower(texts)
    texts = tf.strings.regex_replace(texts, PUNCTUATION, "")
    texts = tf.strings.regex_replace(texts, r"\s+", " ")
    return tf.strings.strip(texts)


def _python_strings(texts):
    """(list of str, is_single) from a str, bytes, list, numpy array or eager tf tensor."""

    def as_str(text):
        if isinstance(text, bytes):
            return text.decode("utf-8")
        if isinstance(text, str):
            return text
        raise TypeError(f"Expected captions as str or bytes, got {type(text).__name__}: {text!r}.")

    if isinstance(texts, (str, bytes)):
        return [as_str(texts)], True
    if isinstance(texts, tf.Tensor):
        texts = texts.numpy()
    if isinstance(texts, np.ndarray):
        if texts.ndim > 1:
            raise ValueError(
                f"Expected a string or a 1-D batch of strings, got shape {texts.shape}."
            )
        if texts.ndim == 0:
            return [as_str(texts.item())], True
        return [as_str(text) for text in texts.tolist()], False
    if isinstance(texts, (list, tuple)):
        return [as_str(text) for text in texts], False
    raise TypeError(
        "SilcTokenizer expects a str, a list or 1-D array of str, or a tf string tensor; "
        f"got {type(texts).__name__}."
    )


NO_CAPTIONS = (
    "No captions to train the {kind} vocabulary on: `captions` is empty or holds only empty "
    "strings. Pass a sample of the training captions."
)


# Below this a vocabulary holds little beyond its special tokens.
MIN_VOCABULARY = 8


def _check_corpus(captions):
    """Refuses what `_caption_iterator` would read wrongly: one str, nothing, a dataset of
    pairs (dicts)."""
    if captions is None or isinstance(captions, str | bytes):
        what = "None" if captions is None else "a single string (read as its characters)"
        raise ValueError(
            f"captions must be many captions (a list of str, or a tf.data.Dataset of strings), "
            f"got {what}."
        )
    if isinstance(captions, tf.data.Dataset) and not isinstance(
        captions.element_spec, tf.TensorSpec
    ):
        raise ValueError(
            "captions must be a dataset of strings; this one yields "
            f"{captions.element_spec}. For image-text pairs pass "
            "pairs.map(lambda pair: pair['caption'])."
        )
    if isinstance(captions, tf.data.Dataset) and captions.element_spec.dtype != tf.string:
        raise ValueError(
            f"captions must be a dataset of strings, got {captions.element_spec.dtype.name}."
        )


def _caption_iterator(data, lowercase):
    """Python strings from an iterable of str/bytes or a (batched) tf.data.Dataset."""
    if isinstance(data, tf.data.Dataset):
        data = data.as_numpy_iterator()
    for element in data:
        batch = element.reshape(-1).tolist() if isinstance(element, np.ndarray) else [element]
        for text in batch:
            text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
            yield text.lower() if lowercase else text


@keras.saving.register_keras_serializable(package="keras_silc")
class SilcTokenizer(keras.layers.Layer):
    """Tokenizes captions into SILC's `text` input: int32 (N, T) ids, 0 for padding.

    Each caption is lower-cased (optional), split by the wrapped keras-hub tokenizer,
    truncated to leave room for the special tokens, framed by the (optional) start token
    and the end token, and padded with 0 (keras-hub's `StartEndPacker`). Called inside `tf.data` (graph mode) it takes and returns tf tensors;
    called eagerly it returns numpy arrays, ready for `SilcModel.encode_text`.

    Build one with `SilcTokenizer.from_captions` (a vocabulary trained on captions),
    `SilcTokenizer.from_file` (a SentencePiece `.model` or a WordPiece `.txt`) or
    `SilcTokenizer.from_preset` (a folder written by `save_to_preset`).
    `SilcModel.from_keras_hub(preset)` wraps a pretrained SigLIP's or CLIP's own tokenizer
    with the settings of keras-hub's preprocessor.

    Args:
        tokenizer: a `keras_hub.tokenizers.SentencePieceTokenizer`,
            `keras_hub.tokenizers.WordPieceTokenizer` or
            `keras_hub.tokenizers.BytePairTokenizer` (e.g. `CLIPTokenizer`), built
            without `sequence_length` (this layer pads) and without `add_eos` (this
            layer adds the end token). A SentencePiece or WordPiece vocabulary must put
            padding at id 0; a byte-pair tokenizer pads with its `pad_token_id`.
        sequence_length: int. T, the length of every output row. The text tower's
            `max_length` must be at least T.
        lowercase: bool. Lower-case captions before tokenizing (SigLIP's tokenizers
            do; captions are case-insensitive here). The wrapped tokenizer's own
            normalisation still runs after this. Defaults to True.
        add_end_token: bool. Append the end-of-sequence token. Defaults to True.
        pad_with_end_token: bool. Pad with the end token instead of 0, as SigLIP
            checkpoints were trained (big_vision's `eos="sticky"`, Hugging Face's
            `</s>` padding). Use it with a text tower that does not mask padding
            (`text={"pad_token_id": None}`, as converted SigLIP models have); the
            vocabulary's own padding id then does not matter. SentencePiece and
            byte-pair only.
        add_start_token: bool. Put the start token first (CLIP's `<|startoftext|>`).
            Defaults to False.
        canonicalize_text: bool. big_vision's prompt canonicalisation before
            tokenizing (SigLIP's): lower-case, drop punctuation, collapse white space.
            Defaults to False.

    Example:
    ```python
    tokenizer = SilcTokenizer.from_captions(captions, vocabulary_size=2000, sequence_length=16)
    ids = tokenizer(["a red sneaker at the top left"])  # (1, 16) int32
    dataset = tf.data.Dataset.from_tensor_slices(captions).batch(32).map(tokenizer)
    tokenizer.detokenize(ids)  # ["a red sneaker at the top left"]
    ```
    """

    def __init__(
        self,
        tokenizer,
        sequence_length,
        lowercase=True,
        add_end_token=True,
        pad_with_end_token=False,
        add_start_token=False,
        canonicalize_text=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(
            tokenizer,
            (
                keras_hub.tokenizers.SentencePieceTokenizer,
                keras_hub.tokenizers.WordPieceTokenizer,
                keras_hub.tokenizers.BytePairTokenizer,
            ),
        ):
            raise TypeError(
                "SilcTokenizer wraps a keras_hub.tokenizers.SentencePieceTokenizer, "
                f"WordPieceTokenizer or BytePairTokenizer; got {type(tokenizer).__name__}."
            )
        if not isinstance(sequence_length, int) or sequence_length < 1:
            raise ValueError(f"sequence_length must be a positive int, got {sequence_length!r}.")
        if getattr(tokenizer, "sequence_length", None):
            raise ValueError(
                f"The wrapped tokenizer pads to sequence_length={tokenizer.sequence_length}; "
                "build it with sequence_length=None: SilcTokenizer truncates, adds the end "
                "token and pads itself."
            )
        if getattr(tokenizer, "add_eos", False):
            raise ValueError(
                "The wrapped SentencePieceTokenizer has add_eos=True; build it with "
                "add_eos=False: SilcTokenizer appends the end token itself (add_end_token)."
            )
        if not keras.backend.is_int_dtype(tokenizer.compute_dtype):
            raise ValueError(
                f"The wrapped tokenizer outputs {tokenizer.compute_dtype}; it must output "
                "integer ids (dtype='int32')."
            )
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.add_end_token = add_end_token
        self.pad_with_end_token = pad_with_end_token
        self.add_start_token = add_start_token
        self.canonicalize_text = canonicalize_text
        if pad_with_end_token and not (
            add_end_token and (_is_sentence_piece(tokenizer) or _is_byte_pair(tokenizer))
        ):
            raise ValueError(
                "pad_with_end_token=True needs add_end_token=True and a SentencePiece or "
                "byte-pair vocabulary (SigLIP's padding)."
            )
        self._special_ids_key = None
        self._special_ids_value = None
        self.built = True
        # The wrapped layer has no weights and is called directly (not through
        # `Layer.__call__`), so nothing would build it; a model loaded with an unbuilt
        # layer is built by `fit` from a first pass over the dataset, and a resumed run
        # would then train on a second pass, shuffled in another order.
        self.tokenizer.built = True
        # A tokenizer rebuilt by `from_config` gets its vocabulary later, from the
        # saved assets; check the vocabulary now when it is already there.
        if self.has_vocabulary:
            self._special_ids()
            self.start_token_id  # noqa: B018 (checks that there is one when asked for)

    # ------------------------------------------------------------- vocabulary
    @property
    def has_vocabulary(self):
        """Whether the wrapped tokenizer has its vocabulary (False between `from_config`
        and the loading of the saved assets)."""
        if _is_sentence_piece(self.tokenizer):
            return self.tokenizer.proto is not None
        return self.tokenizer.vocabulary is not None

    @property
    def vocabulary_size(self):
        """int. Number of token ids; the text tower's `vocabulary_size` must be >= it."""
        return int(self.tokenizer.vocabulary_size())

    @property
    def pad_token_id(self):
        """int. 0 (the text tower masks id 0 as padding), or the end token's id with
        `pad_with_end_token`."""
        return self._special_ids()[0]

    @property
    def end_token_id(self):
        """int or None. The end-of-sequence id (None only without `add_end_token` when
        the vocabulary has no end token)."""
        return self._special_ids()[1]

    def _special_ids(self):
        """(pad id, end id) read from the vocabulary, checked, cached per vocabulary."""
        if not self.has_vocabulary:
            raise ValueError(
                "The tokenizer has no vocabulary yet: build it with SilcTokenizer.from_captions, "
                "from_file or from_preset, or load it with keras.models.load_model."
            )
        if _is_sentence_piece(self.tokenizer):
            key = hash(self.tokenizer.proto)
            if key != self._special_ids_key:
                self._special_ids_value = self._sentence_piece_special_ids()
                self._special_ids_key = key
            return self._special_ids_value
        if _is_byte_pair(self.tokenizer):
            return self._byte_pair_special_ids()
        return self._word_piece_special_ids()

    def _byte_pair_special_ids(self):
        end_id = getattr(self.tokenizer, "end_token_id", None)
        if end_id is None and (self.add_end_token or self.pad_with_end_token):
            raise ValueError(
                f"The byte-pair tokenizer {type(self.tokenizer).__name__} has no end token; "
                "use keras_hub.tokenizers.CLIPTokenizer (or one that defines end_token_id), "
                "or pass add_end_token=False."
            )
        if self.pad_with_end_token:
            return end_id, end_id
        return int(getattr(self.tokenizer, "pad_token_id", None) or 0), end_id

    @property
    def start_token_id(self):
        """int or None. The id put first with `add_start_token` (None without it)."""
        if not self.add_start_token:
            return None
        if _is_sentence_piece(self.tokenizer):
            import sentencepiece

            start = sentencepiece.SentencePieceProcessor(model_proto=self.tokenizer.proto).bos_id()
        elif _is_byte_pair(self.tokenizer):
            start = getattr(self.tokenizer, "start_token_id", None)
        else:
            vocabulary = self.tokenizer.get_vocabulary()
            found = [token for token in WORD_PIECE_START_TOKENS if token in vocabulary]
            start = vocabulary.index(found[0]) if found else None
        if start is None or start < 0:
            raise ValueError(
                "add_start_token=True, but the vocabulary has no start token (SentencePiece "
                f"bos_id, a byte-pair start_token or one of {WORD_PIECE_START_TOKENS}); pass "
                "add_start_token=False."
            )
        return int(start)

    def _sentence_piece_special_ids(self):
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_proto=self.tokenizer.proto)
        pad_id, end_id = processor.pad_id(), processor.eos_id()
        if self.pad_with_end_token:
            if end_id < 0:
                raise ValueError(
                    "pad_with_end_token=True, but the SentencePiece model has no "
                    "end-of-sequence token (eos_id=-1)."
                )
            return end_id, end_id
        if pad_id != 0:
            raise ValueError(
                f"The vocabulary's padding token has id {pad_id} (-1: none), but the text "
                "tower masks id 0 as padding. Use a SentencePiece model trained with "
                "pad_id=0 (SilcTokenizer.from_captions uses pad_id=0, unk_id=1, eos_id=2, "
                "bos_id=-1)."
            )
        if end_id < 0:
            if self.add_end_token:
                raise ValueError(
                    "The SentencePiece model has no end-of-sequence token (eos_id=-1); "
                    "train it with eos_id set, or pass add_end_token=False."
                )
            end_id = None
        return 0, end_id

    def _word_piece_special_ids(self):
        vocabulary = self.tokenizer.get_vocabulary()
        present = set(vocabulary)
        pads = [token for token in WORD_PIECE_PAD_TOKENS if token in present]
        if not pads or vocabulary[0] not in WORD_PIECE_PAD_TOKENS:
            found = (
                f"padding token has id {vocabulary.index(pads[0])} ({pads[0]!r})"
                if pads
                else f"padding token is missing (looked for {WORD_PIECE_PAD_TOKENS})"
            )
            raise ValueError(
                f"The vocabulary's {found}, but the text tower masks id 0 as padding. Put "
                "'[PAD]' on the first line of a WordPiece vocabulary."
            )
        ends = [token for token in WORD_PIECE_END_TOKENS if token in present]
        if not ends:
            if self.add_end_token:
                raise ValueError(
                    f"The WordPiece vocabulary has no end token (looked for "
                    f"{WORD_PIECE_END_TOKENS}); add '[EOS]' or pass add_end_token=False."
                )
            return 0, None
        return 0, self.tokenizer.token_to_id(ends[0])

    @property
    def unknown_token_id(self):
        """int or None. The id of unknown pieces ("[UNK]" / SentencePiece's unk; None for
        byte-pair vocabularies, which have none)."""
        if _is_byte_pair(self.tokenizer):
            return None
        if _is_sentence_piece(self.tokenizer):
            import sentencepiece

            unknown = sentencepiece.SentencePieceProcessor(
                model_proto=self.tokenizer.proto
            ).unk_id()
            return unknown if unknown >= 0 else None
        oov = getattr(self.tokenizer, "oov_token", "[UNK]")
        vocabulary = self.tokenizer.get_vocabulary()
        return vocabulary.index(oov) if oov in vocabulary else None

    def unknown_fraction(self, texts):
        """float. The fraction of `texts`' tokens (end and padding aside) that are unknown:
        near 1 when the vocabulary is too small for the captions."""
        texts = list(texts)
        unknown = self.unknown_token_id
        if not texts or unknown is None:
            return 0.0
        ids = np.asarray(self._tokenize_numpy(texts))
        pad_id, end_id = self._special_ids()
        real = (ids != pad_id) & (ids != (-1 if end_id is None else end_id))
        if not real.any():
            return 0.0
        return float(((ids == unknown) & real).sum() / real.sum())

    # ---------------------------------------------------------------- tokenize
    def __call__(self, texts):
        """Same as `call`. Keras's `Layer.__call__` is bypassed on purpose: it would turn
        string inputs into backend tensors, and the tf.data path needs tf tensors under
        every backend."""
        return self.call(texts)

    def call(self, texts):
        """Token ids of `texts`.

        Args:
            texts: a str, a list or 1-D numpy array of str, or a tf string tensor of
                rank 0 or 1.

        Returns:
            int32 ids, (T,) for one text, (N, T) for a batch: a tf tensor when traced
            (tf.data, tf.function), else a numpy array.
        """
        if tf.executing_eagerly():
            return self._tokenize_numpy(texts)
        return self._tokenize_tf(texts)

    def _packer(self):
        """keras-hub's `StartEndPacker` with this tokenizer's ids: the text truncated to
        leave room for the start and end tokens, framed by them, padded to T. It packs
        Python lists eagerly and ragged tensors in tf.data alike."""
        pad_id, end_id = self._special_ids()
        return keras_hub.layers.StartEndPacker(
            sequence_length=self.sequence_length,
            start_value=self.start_token_id,
            end_value=end_id if self.add_end_token else None,
            pad_value=pad_id,
        )

    def _tokenize_numpy(self, texts):
        texts, single = _python_strings(texts)
        if self.lowercase:
            texts = [text.lower() for text in texts]
        if self.canonicalize_text and texts:
            texts = [text.decode("utf-8") for text in canonicalize(tf.constant(texts)).numpy()]
        if not texts:
            return np.zeros((0, self.sequence_length), np.int32)
        pieces = self.tokenizer.tokenize(texts)
        if isinstance(pieces, tf.RaggedTensor):  # keras-hub < 0.22 has no Python path.
            pieces = pieces.to_list()
        pieces = [[int(token) for token in tokens] for tokens in pieces]
        ids = np.asarray(keras.ops.convert_to_numpy(self._packer()(pieces)), dtype=np.int32)
        check_token_ids(ids, self.vocabulary_size, "The tokenizer's ids")
        return ids[0] if single else ids

    # Plain TF ops on static shapes: autograph would only slow tracing down (by seconds
    # for keras-hub's WordPiece code).
    @tf.autograph.experimental.do_not_convert
    def _tokenize_tf(self, texts):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if texts.shape.rank not in (0, 1):
            raise ValueError(
                f"Expected a string or a 1-D batch of strings, got shape {texts.shape}."
            )
        single = texts.shape.rank == 0
        texts = tf.reshape(texts, [-1])
        if self.lowercase:
            texts = tf.strings.lower(texts, encoding="utf-8")
        if self.canonicalize_text:
            texts = canonicalize(texts)
        with tf.device("cpu"):
            if _is_sentence_piece(self.tokenizer):
                # The SentencePiece op is made inside the traced function rather than
                # reused from keras-hub's tokenizer: `keras.utils.set_random_seed` clears
                # TF's kernel cache, which deletes tf-text's SentencePiece resources made
                # earlier; a resource made by the graph itself is remade when needed.
                import tensorflow_text as tf_text

                pieces = tf_text.SentencepieceTokenizer(
                    model=self.tokenizer.proto,
                    out_type=tf.int32,
                    add_bos=self.tokenizer.add_bos,
                ).tokenize(texts)
            else:
                pieces = self.tokenizer.tokenize(texts)
        length = self.sequence_length
        ids = self._packer()(tf.cast(pieces, tf.int32))
        # Checked where the batch is made (on the host, in tf.data): an id past the text
        # tower's table would give NaN under JAX.
        vocabulary_size = self.vocabulary_size
        ids = tf.ensure_shape(ids, [None, length])
        with tf.control_dependencies(
            [
                tf.debugging.assert_non_negative(ids, message="negative token id"),
                tf.debugging.assert_less(
                    ids,
                    vocabulary_size,
                    message=f"token id >= the vocabulary size {vocabulary_size}",
                ),
            ]
        ):
            ids = tf.identity(ids)
        return ids[0] if single else ids

    def detokenize(self, ids):
        """Texts of token ids, without padding, the end token and what follows it.

        Runs eagerly (not inside tf.data).

        Args:
            ids: int ids (N, T) or (T,): numpy, a list, or a backend or tf tensor.

        Returns:
            A list of N str for (N, T) ids; one str for (T,) ids.
        """
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_list()
        elif isinstance(ids, tf.Tensor):
            ids = ids.numpy()
        elif keras.ops.is_tensor(ids):
            ids = keras.ops.convert_to_numpy(ids)
        if isinstance(ids, (list, tuple)) and ids and not np.isscalar(ids[0]):
            rows, single = ids, False  # possibly ragged rows
        else:
            single = np.ndim(ids) <= 1
            rows = [ids] if single else ids
        rows = [self._checked_row(row) for row in rows]
        pad_id, end_id = self._special_ids()
        start_id = self.start_token_id
        cleaned = []
        for row in rows:
            if start_id is not None and row[:1] == [start_id]:
                row = row[1:]
            if end_id is not None and end_id in row:
                row = row[: row.index(end_id)]  # the padding follows the end token
            else:
                row = [token for token in row if token != pad_id]
            cleaned.append(row)
        texts = self.tokenizer.detokenize(cleaned) if cleaned else []
        if isinstance(texts, tf.Tensor):  # keras-hub < 0.22 returns tf strings.
            texts = [text.decode("utf-8") for text in texts.numpy().tolist()]
        texts = [text.decode("utf-8") if isinstance(text, bytes) else text for text in texts]
        return texts[0] if single else list(texts)

    def _checked_row(self, row):
        """One row of ids as a list of ints, or a ValueError that says what is wrong."""
        usage = "detokenize takes int token ids, shape (N, T) or (T,), e.g. tokenizer(texts)"
        if isinstance(row, (str, bytes)):
            raise ValueError(f"{usage}; got the text {row!r}.")
        try:
            values = np.asarray(row)
        except ValueError:  # a row of rows of different lengths
            values = np.asarray(row, dtype=object)
        if values.ndim > 1 or values.dtype == object:
            raise ValueError(f"{usage}; got ids with more than two axes.")
        values = values.reshape(-1)
        if values.size and not holds_integers(values):
            raise ValueError(f"{usage}; got values of dtype {values.dtype}.")
        values = values.astype(np.int64)
        vocabulary_size = self.vocabulary_size
        outside = values[(values < 0) | (values >= vocabulary_size)]
        if outside.size:
            raise ValueError(
                f"Token id {int(outside[0])} is not in this tokenizer's vocabulary of "
                f"{vocabulary_size} tokens (ids 0..{vocabulary_size - 1}). Were the ids made "
                "by another tokenizer?"
            )
        return values.tolist()

    # ------------------------------------------------------------------ config
    def get_config(self):
        """The wrapped tokenizer's config (its vocabulary travels as an asset)."""
        config = super().get_config()
        config.update(
            {
                "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
                "sequence_length": self.sequence_length,
                "lowercase": self.lowercase,
                "add_end_token": self.add_end_token,
                "pad_with_end_token": self.pad_with_end_token,
                "add_start_token": self.add_start_token,
                "canonicalize_text": self.canonicalize_text,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuilds the layer; the vocabulary comes from the assets (`load_model`,
        `from_preset`)."""
        config = dict(config)
        if isinstance(config.get("tokenizer"), dict):
            config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)

    # ----------------------------------------------------------------- presets
    def save_to_preset(self, directory, overwrite=False):
        """Writes a preset folder as keras-hub's tokenizers do: `tokenizer.json` (the config)
        and `assets/tokenizer/` (the vocabulary file), plus `metadata.json`. Read it with
        `from_preset`. A folder that is not empty is refused unless `overwrite=True`."""
        return preset_files.save(directory, self, self._write_preset, overwrite)

    def _write_preset(self, directory):
        """Writes this tokenizer's files into `directory` (a model's or preprocessor's preset
        folder being written)."""
        preset_files.write_json(directory, preset_files.TOKENIZER_FILE, self)
        assets = os.path.join(directory, preset_files.TOKENIZER_ASSET_DIR)
        os.makedirs(assets, exist_ok=True)
        self.tokenizer.save_assets(assets)

    @classmethod
    def from_preset(cls, preset):
        """Loads the tokenizer of a preset folder or handle: one written by `save_to_preset`,
        or by `SilcModel.save_to_preset` / `SilcPreprocessor.save_to_preset`."""
        preset = preset_files.as_preset(preset)
        config = preset_files.read_json(
            preset,
            preset_files.TOKENIZER_FILE,
            " Write a tokenizer preset with SilcTokenizer.save_to_preset(folder); for a "
            "vocabulary file use SilcTokenizer.from_file.",
        )
        preset_files.registered_class(config, preset, preset_files.TOKENIZER_FILE, cls)
        tokenizer = keras.saving.deserialize_keras_object(config)
        tokenizer.load_preset_assets(preset)
        return tokenizer

    def load_preset_assets(self, preset):
        """Reads the vocabulary from `assets/tokenizer/` of a preset folder or handle."""
        folder = None
        for name in self.tokenizer.file_assets:
            path = f"{preset_files.TOKENIZER_ASSET_DIR}/{name}"
            local = preset_files.get_file(
                preset,
                path,
                " The tokenizer's vocabulary file is missing: copy it there, or write the "
                "preset again with save_to_preset.",
            )
            folder = os.path.dirname(local)
        if folder is not None:
            self.tokenizer.load_assets(folder)
        self._special_ids()  # a vocabulary without padding at id 0 fails here

    def save_to_directory(self, directory):
        """Deprecated: `save_to_preset`."""
        warnings.warn(
            "SilcTokenizer.save_to_directory is deprecated: use save_to_preset.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.save_to_preset(directory)

    @classmethod
    def from_directory(cls, directory):
        """Deprecated: `from_preset`."""
        warnings.warn(
            "SilcTokenizer.from_directory is deprecated: use from_preset.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_preset(directory)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_file(
        cls,
        path,
        sequence_length,
        lowercase=True,
        add_end_token=True,
        pad_with_end_token=False,
        **kwargs,
    ):
        """Wraps a user's vocabulary file.

        A pretrained SigLIP's vocabulary (keras-hub presets keep it in
        `assets/tokenizer/vocabulary.spm`) with its padding:
        `SilcTokenizer.from_file(path, 64, pad_with_end_token=True)`.

        Args:
            path: str. A SentencePiece model (`.model` or `.spm`, padding at id 0), or a
                WordPiece vocabulary (`.txt`, one token per line, "[PAD]" first, an
                "[EOS]" or "[SEP]" end token, "[UNK]" for unknown words).
            sequence_length, lowercase, add_end_token, pad_with_end_token: as in
                `SilcTokenizer`.
            **kwargs: passed to the keras-hub tokenizer (e.g. `oov_token` or
                `suffix_indicator` for WordPiece).
        """
        path = os.fspath(path)
        extension = os.path.splitext(path)[1].lower()
        expected = (
            f"a SentencePiece model ({', '.join(SENTENCE_PIECE_EXTENSIONS)}) or a WordPiece "
            f"vocabulary ({', '.join(WORD_PIECE_EXTENSIONS)}, one token per line)"
        )
        if os.path.isdir(path):
            raise ValueError(
                f"{path!r} is a directory; from_file expects {expected}. For a folder "
                "written by save_to_preset use SilcTokenizer.from_preset."
            )
        if extension not in SENTENCE_PIECE_EXTENSIONS + WORD_PIECE_EXTENSIONS:
            raise ValueError(f"Unknown vocabulary file type {path!r}: expected {expected}.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No vocabulary file at {path!r}: expected {expected}.")
        # Read the file here and pass its contents: keras-hub refuses file paths in
        # Keras's safe mode.
        if extension in SENTENCE_PIECE_EXTENSIONS:
            with open(path, "rb") as file:
                proto = file.read()
            try:
                inner = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto, **kwargs)
            except Exception as error:  # sentencepiece's own errors name no file
                raise ValueError(
                    f"{path!r} is not a SentencePiece model ({error}); expected {expected}."
                ) from None
        else:
            try:
                with open(path, encoding="utf-8") as file:
                    vocabulary = [line.rstrip("\r\n") for line in file]
            except UnicodeDecodeError:
                raise ValueError(f"{path!r} is not UTF-8 text; expected {expected}.") from None
            while vocabulary and not vocabulary[-1]:
                vocabulary.pop()
            unknown = kwargs.get("oov_token", "[UNK]")
            if unknown not in vocabulary:
                raise ValueError(
                    f"{path!r} is not a WordPiece vocabulary: it has no {unknown!r} token "
                    "for unknown words. A vocabulary lists one token per line: '[PAD]' "
                    "first, '[UNK]' and an end token ('[EOS]' or '[SEP]'); pass oov_token= "
                    "if yours names unknown words otherwise."
                )
            lines = {}
            for number, token in enumerate(vocabulary, start=1):
                if token in lines:
                    raise ValueError(
                        f"{path!r} lists the token {token!r} twice (lines {lines[token]} and "
                        f"{number}); a WordPiece vocabulary has one line per distinct token."
                    )
                lines[token] = number
            inner = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, **kwargs)
        return cls(
            inner,
            sequence_length,
            lowercase=lowercase,
            add_end_token=add_end_token,
            pad_with_end_token=pad_with_end_token,
        )

    # Not named `train`: under PyTorch every Keras layer is a torch.nn.Module, whose
    # `train(mode)` is called on each child by `model.train()` / `model.eval()`.
    @classmethod
    def from_captions(
        cls,
        captions,
        vocabulary_size,
        sequence_length,
        model_type="unigram",
        lowercase=True,
        **trainer_options,
    ):
        """Trains a vocabulary on captions and wraps it.

        SentencePiece ("unigram", "bpe") gets pad_id=0, unk_id=1, eos_id=2 and no BOS;
        WordPiece gets "[PAD]" (0), "[UNK]" (1) and "[EOS]" (2) first. On a small corpus
        the vocabulary may come out smaller than asked (SentencePiece's
        `hard_vocab_limit=False`); read `vocabulary_size` off the result.

        Args:
            captions: an iterable of str, or a tf.data.Dataset of strings (scalars or
                batches).
            vocabulary_size: int. The largest vocabulary to learn.
            sequence_length: int. T of the returned tokenizer.
            model_type: "unigram" or "bpe" (SentencePiece) or "wordpiece".
            lowercase: bool. Lower-case the corpus and, later, every caption.
            **trainer_options: extra `sentencepiece.SentencePieceTrainer.train`
                options (e.g. `input_sentence_size`, `character_coverage`).

        Returns:
            A `SilcTokenizer`.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
        _check_corpus(captions)
        if (
            isinstance(vocabulary_size, bool)
            or not isinstance(vocabulary_size, numbers.Integral)
            or vocabulary_size < MIN_VOCABULARY
        ):
            raise ValueError(
                f"vocabulary_size must be an int of at least {MIN_VOCABULARY} (the special "
                f"tokens and a few pieces), got {vocabulary_size!r}."
            )
        positive_int(sequence_length, "sequence_length")
        if model_type == "wordpiece":
            if trainer_options:
                raise ValueError(
                    f"{sorted(trainer_options)} are SentencePiece trainer options; "
                    "model_type='wordpiece' takes none."
                )
            inner = cls._train_word_piece(captions, vocabulary_size, lowercase)
        else:
            inner = cls._train_sentence_piece(
                captions, vocabulary_size, model_type, lowercase, trainer_options
            )
        return cls(inner, sequence_length, lowercase=lowercase)

    @staticmethod
    def _train_sentence_piece(captions, vocabulary_size, model_type, lowercase, options):
        # keras-hub's compute_sentence_piece_proto fixes its own special ids (pad 0,
        # unk 1, bos 2, eos 3) and takes no trainer options, so call the trainer.
        import sentencepiece

        proto = io.BytesIO()
        settings = {
            "model_type": model_type,
            "vocab_size": vocabulary_size,
            "pad_id": 0,
            "unk_id": 1,
            "eos_id": 2,
            "bos_id": -1,
            "hard_vocab_limit": False,
            "normalization_rule_name": "nmt_nfkc",
            "num_threads": os.cpu_count() or 1,
            "minloglevel": 2,
            **options,
        }
        seen = [0]

        def counted():
            for caption in _caption_iterator(captions, lowercase):
                seen[0] += bool(caption.strip())
                yield caption

        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=counted(), model_writer=proto, **settings
            )
        except RuntimeError as error:
            if not seen[0]:
                raise ValueError(NO_CAPTIONS.format(kind="SentencePiece")) from None
            raise ValueError(f"SentencePiece training failed: {error}") from error
        return keras_hub.tokenizers.SentencePieceTokenizer(proto=proto.getvalue())

    @staticmethod
    def _train_word_piece(captions, vocabulary_size, lowercase):
        if isinstance(captions, tf.data.Dataset):
            dataset = captions
            if dataset.element_spec.shape.rank == 0:
                dataset = dataset.batch(1024)
        else:
            # keras-hub reads a list as file names: hand it a dataset of the captions.
            texts = list(_caption_iterator(captions, lowercase=False))
            if not any(text.strip() for text in texts):
                raise ValueError(NO_CAPTIONS.format(kind="WordPiece"))
            dataset = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
        # Counting words element by element is ~15x slower than in batches.
        try:
            vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
                dataset,
                vocabulary_size,
                lowercase=lowercase,
                reserved_tokens=["[PAD]", "[UNK]", "[EOS]"],
            )
        except StopIteration:  # tensorflow-text's learner, on a dataset with no words
            raise ValueError(NO_CAPTIONS.format(kind="WordPiece")) from None
        return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary)
