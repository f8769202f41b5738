"""Registries: model families, known datasets, defaults. Plain data, no logic."""

# Extractive-QA model families loaded through the Auto classes. `token_type_ids`: whether the
# model was pre-trained with segment embeddings (question = 0, context = 1) and expects them.
MODEL_FAMILIES = {
    "albert": {"example": "albert-xxlarge-v2", "token_type_ids": True},
    "bert": {"example": "bert-large-uncased-whole-word-masking", "token_type_ids": True},
    "roberta": {"example": "roberta-large", "token_type_ids": False},
    "electra": {"example": "google/electra-large-discriminator", "token_type_ids": True},
    "distilbert": {"example": "distilbert-base-uncased", "token_type_ids": False},
}
DEFAULT_MODEL = "albert-xxlarge-v2"

# Known SQuAD files: size in bytes and sha256, from the checksums Hugging Face `datasets`
# recorded for these URLs (datasets/squad*/url*_checksums/checksums.txt in huggingface/datasets).
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
KNOWN_DATASETS = {
    SQUAD_URL + "train-v2.0.json": {
        "bytes": 42123633,
        "sha256": "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    },
    SQUAD_URL + "dev-v2.0.json": {
        "bytes": 4370528,
        "sha256": "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    },
    SQUAD_URL + "train-v1.1.json": {
        "bytes": 30288272,
        "sha256": "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    },
    SQUAD_URL + "dev-v1.1.json": {
        "bytes": 4854279,
        "sha256": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    },
}

# Bumped whenever the feature arrays or their meaning change, so old cache entries are not reused.
FEATURE_FORMAT_VERSION = 2

# Hyperparameter defaults: the values of Determined's original ALBERT-xxlarge SQuAD 2.0 example.
DEFAULT_HPARAMS = {
    "pretrained_model_name": DEFAULT_MODEL,
    "learning_rate": 5e-5,
    "optimizer": "adamw",
    "adam_epsilon": 1e-8,
    "weight_decay": 0.0,
    "warmup_fraction": 0.1,
    "max_grad_norm": 1.0,
    "aggregation_frequency": 1,
    "epochs": 2,
    "max_seq_length": 384,
    "doc_stride": 128,
    "max_query_length": 64,
    "n_best_size": 20,
    "max_answer_length": 30,
    "null_score_diff_threshold": 0.0,
    "do_lower_case": True,
    "pad_to_max_length": False,
    "bucket_by_length": True,
    "amp": "bf16",
    "gradient_checkpointing": False,
    "export_hf_model": False,
    "zero_optimizer": False,
    "seed": 42,
    "reporting_period_batches": 50,
    "validation_period_batches": 0,
    "checkpoint_period_batches": 0,
}
