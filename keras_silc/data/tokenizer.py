"""`SilcTokenizer`: captions to the text tower's token ids, with keras-hub's tokenizers.

Token ids are int32 (N, T): the caption's pieces, an end-of-sequence token, then padding with
id 0 (the text tower's `pad_token_id`). A caption longer than T keeps its first T - 1 pieces and
the end token, so the last real token is always the end token. The text tower's default
pooling ("last", as big_vision's SigLIP) reads the final position, which attends to the whole
caption; "eos" pooling needs the tower's `eos_token_id` to equal `end_token_id`.

SentencePiece vocabularies live in a tf-text resource that `tf.random.set_seed` (called by
`keras.utils.set_random_seed`) destroys: eager calls rebuild it, but seed before building a
`tf.data` pipeline that tokenizes with SentencePiece (WordPiece has no such trap).

The tokenizer is a Keras layer: passed to `SilcModel(tokenizer=...)` it is saved inside the
`.keras` file with its vocabulary, so a reloaded model encodes text exactly as before. It runs
inside `tf.data` (graph mode, tf tensors) and eagerly (numpy out) under every backend.
"""

import io
import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
WORDPIECE_RESERVED = ["[PAD]", "[UNK]", "[EOS]"]


def _as_strings(texts):
    if isinstance(texts, tf.data.Dataset):
        return [t.decode("utf-8") for t in texts.as_numpy_iterator()]
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]


@keras.saving.register_keras_serializable(package="keras_silc")
class SilcTokenizer(keras.layers.Layer):
    """Wraps a keras-hub SentencePiece or WordPiece tokenizer for the SILC text tower.

    Args:
        tokenizer: a `keras_hub.tokenizers.SentencePieceTokenizer` or `WordPieceTokenizer`
            whose padding token has id 0.
        sequence_length: T, the padded length (at most the text tower's `max_length`).
        lowercase: lower-case captions before tokenizing.

    Build one with `SilcTokenizer.train(captions, vocabulary_size, sequence_length)` or
    `SilcTokenizer.from_file(path, sequence_length)`.
    """

    def __init__(self, tokenizer, sequence_length, lowercase=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.lowercase = lowercase
        # Strings in, ids out: no conversion of inputs to backend tensors.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True
        if sequence_length < 2:
            raise ValueError(f"sequence_length must be at least 2, got {sequence_length}.")
        self._check_vocabulary()

    # ------------------------------------------------------------ vocabulary
    def _vocabulary_ready(self):
        if isinstance(self.tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
            return self.tokenizer.proto is not None
        return getattr(self.tokenizer, "vocabulary", None) is not None

    def _check_vocabulary(self):
        if not self._vocabulary_ready():
            return  # loaded later from the saved assets
        pad = self._special_ids()[0]
        if pad != 0:
            raise ValueError(
                f"The vocabulary's padding token has id {pad}, but the text tower masks id 0 as "
                "padding. Train the vocabulary with SilcTokenizer.train (padding = 0) or put "
                "'[PAD]' first in a WordPiece vocabulary."
            )

    def _special_ids(self):
        if isinstance(self.tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
            return self.tokenizer.token_to_id(PAD), self.tokenizer.token_to_id(EOS)
        vocabulary = self.tokenizer.get_vocabulary()
        return vocabulary.index("[PAD]"), vocabulary.index("[EOS]")

    @property
    def vocabulary_size(self):
        return int(self.tokenizer.vocabulary_size())

    @property
    def pad_token_id(self):
        return 0

    @property
    def end_token_id(self):
        return int(self._special_ids()[1])

    def load_assets(self, dir_path):
        # The inner tokenizer loads its vocabulary; nothing of ours to load.
        return None

    # ------------------------------------------------------------ tokenizing
    def _tokenize(self, texts):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        scalar = texts.shape.rank == 0
        texts = tf.reshape(texts, [-1])
        if self.lowercase:
            texts = tf.strings.lower(texts, encoding="utf-8")
        pieces = self.tokenizer(texts)
        if not isinstance(pieces, tf.RaggedTensor):
            pieces = tf.RaggedTensor.from_tensor(pieces)
        pieces = tf.cast(pieces, tf.int32)[:, : self.sequence_length - 1]
        ends = tf.fill([tf.shape(texts)[0], 1], tf.constant(self.end_token_id, tf.int32))
        ids = tf.concat([pieces, tf.RaggedTensor.from_tensor(ends)], axis=1)
        ids = ids.to_tensor(default_value=0, shape=[None, self.sequence_length])
        return ids[0] if scalar else ids

    def call(self, texts):
        if not tf.executing_eagerly():
            return self._tokenize(texts)  # inside tf.data or a tf.function
        if isinstance(texts, (str, bytes)):
            return self.call([texts])[0]
        if not isinstance(texts, tf.Tensor):
            texts = np.asarray(_as_strings(np.ravel(np.asarray(texts, dtype=object))))
        if getattr(self, "_eager_tokenize", None) is None:
            # keras-hub tokenizers give Python lists eagerly; a tf.function keeps tensors.
            self._eager_tokenize = tf.function(
                self._tokenize, input_signature=[tf.TensorSpec([None], tf.string)]
            )
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        try:
            return self._eager_tokenize(texts).numpy()
        except tf.errors.NotFoundError:
            # `tf.random.set_seed` (keras.utils.set_random_seed) clears TF's kernel cache,
            # which deletes tf-text's SentencePiece resource: rebuild it and retry.
            self.tokenizer.set_proto(self.tokenizer.proto)
            self._eager_tokenize = None
            return self.call(texts)

    def __call__(self, texts):
        # A tokenizer has no weights and takes strings: skip Keras's tensor plumbing.
        return self.call(texts)

    def detokenize(self, ids):
        """Token ids (N, T) -> list of N strings (padding and the end token removed)."""
        ids = np.asarray(
            keras.ops.convert_to_numpy(ids) if not isinstance(ids, np.ndarray) else ids
        )
        ids = np.atleast_2d(ids)
        texts = []
        for row in ids:
            row = [int(i) for i in row if i not in (0, self.end_token_id)]
            text = self.tokenizer.detokenize(row)
            text = text.numpy() if hasattr(text, "numpy") else text
            texts.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
        return texts

    # ------------------------------------------------------------- building
    @classmethod
    def train(
        cls,
        captions,
        vocabulary_size,
        sequence_length,
        model_type="unigram",
        lowercase=True,
    ):
        """Trains a vocabulary on a caption corpus (an iterable of str or a tf.data.Dataset).

        model_type: "unigram" or "bpe" (SentencePiece, ids: 0 pad, 1 unk, 2 end), or
        "wordpiece" (ids: 0 [PAD], 1 [UNK], 2 [EOS]).
        """
        captions = _as_strings(captions)
        if lowercase:
            captions = [c.lower() for c in captions]
        if not captions:
            raise ValueError("No captions to train a vocabulary on.")
        if model_type == "wordpiece":
            vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
                tf.data.Dataset.from_tensor_slices(captions).batch(1000),
                vocabulary_size,
                lowercase=False,
                reserved_tokens=WORDPIECE_RESERVED,
            )
            tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
                vocabulary=vocabulary, lowercase=False, oov_token="[UNK]"
            )
            return cls(tokenizer, sequence_length, lowercase=lowercase)
        if model_type not in ("unigram", "bpe"):
            raise ValueError(
                f"model_type must be 'unigram', 'bpe' or 'wordpiece', got {model_type!r}."
            )
        import sentencepiece

        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(captions),
            model_writer=model,
            vocab_size=vocabulary_size,
            model_type=model_type,
            pad_id=0,
            unk_id=1,
            eos_id=2,
            bos_id=-1,
            pad_piece=PAD,
            unk_piece=UNK,
            eos_piece=EOS,
            # Small corpora may not support the requested size: use what they support.
            hard_vocab_limit=False,
            character_coverage=1.0,
            minloglevel=2,
        )
        tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=model.getvalue())
        return cls(tokenizer, sequence_length, lowercase=lowercase)

    @classmethod
    def from_file(cls, path, sequence_length, lowercase=True):
        """A SentencePiece `.model` file or a WordPiece vocabulary `.txt` (a token per line)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No vocabulary file at {path!r} (expected a SentencePiece .model or a "
                "WordPiece .txt)."
            )
        if path.endswith(".model") or path.endswith(".spm"):
            tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=path)
        elif path.endswith(".txt"):
            tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
                vocabulary=path, lowercase=False, oov_token="[UNK]"
            )
        else:
            raise ValueError(
                f"Unknown vocabulary format {path!r}: use a SentencePiece .model or a WordPiece "
                ".txt."
            )
        return cls(tokenizer, sequence_length, lowercase=lowercase)

    def save_to_directory(self, directory):
        """Writes `tokenizer.json` and the vocabulary asset into a preset folder."""
        os.makedirs(directory, exist_ok=True)
        self.tokenizer.save_assets(directory)
        with open(os.path.join(directory, "tokenizer.json"), "w") as handle:
            import json

            json.dump(keras.saving.serialize_keras_object(self), handle, indent=2)

    @classmethod
    def from_directory(cls, directory):
        import json

        path = os.path.join(directory, "tokenizer.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"No tokenizer.json in {directory!r}.")
        with open(path) as handle:
            tokenizer = keras.saving.deserialize_keras_object(json.load(handle))
        tokenizer.tokenizer.load_assets(directory)
        tokenizer._check_vocabulary()
        return tokenizer

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
                "sequence_length": self.sequence_length,
                "lowercase": self.lowercase,
            }
        )
        return config
