"""The one settings object. Nothing else in readmit reads environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from readmit.layout import StoreLayout

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""Repository root when running from a checkout (src layout)."""


class Settings(BaseSettings):
    """Runtime configuration, from `READMIT_*` env vars or a `.env` file.

    Run parameters (search size, label, ...) stay typed flow parameters; this object only holds
    where things live and the few knobs every component must agree on.
    """

    model_config = SettingsConfigDict(env_prefix="READMIT_", env_file=".env", extra="ignore")

    artifacts_uri: str = Field(
        default=str(PROJECT_ROOT / "artifacts"),
        description="Artifact store root: a local path or any fsspec URL (s3://bucket/prefix).",
    )
    data_uri: str = Field(
        default=str(PROJECT_ROOT / "data" / "raw" / "diabetic_data.csv.gz"),
        description="Raw encounters used for training.",
    )
    data_sha256: str | None = Field(
        default="0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97",
        description="Expected sha256 of the uncompressed raw CSV; None disables the check.",
    )
    bentoml_home: str = Field(
        default=str(PROJECT_ROOT / ".bentoml"),
        validation_alias=AliasChoices("READMIT_BENTOML_HOME", "BENTOML_HOME"),
        description="BentoML model/bento store; inside the project by default.",
    )
    model_name: str = "readmission"
    model_tag: str | None = Field(
        default=None, description="Serve this tag instead of the model labelled production."
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr("readmit-local-pseudonym-key"),
        validation_alias=AliasChoices("READMIT_PSEUDONYM_KEY", "READMIT_HISTORY_SALT"),
        description="Secret key of the patient and encounter pseudonyms (HMAC-SHA256, "
        "`readmit.pseudonyms`): the service, the prediction log, the outcomes feed and the "
        "patient-history store. The local default is public: set a secret in production. "
        "READMIT_HISTORY_SALT is read too, for stacks configured before the rename.",
    )
    reference_fraction: float = Field(
        default=0.6,
        gt=0,
        lt=1,
        description="Share of encounters (oldest first) that is the "
        "reference window for training; the rest are future batches.",
    )
    seed: int = 42
    # Absolute promotion gates for a first model.
    min_roc_auc: float = 0.62
    max_subgroup_auc_gap: float = 0.08
    subgroup_min_size: int = 200
    s3_max_attempts: int = Field(
        default=8,
        ge=1,
        description="Attempts per S3 request (botocore standard retry mode: 5xx, SlowDown, "
        "throttling and dropped connections, with jittered exponential back-off).",
    )
    dask_address: str | None = Field(
        default=None,
        description="Where the training flow's XGBoost search runs: unset = in-process, "
        "sequential; 'local' = a Dask LocalCluster started for the run (one single-threaded "
        "worker process per core); 'tcp://host:8786' = an existing Dask scheduler.",
    )
    pushgateway_url: str | None = Field(
        default=None, description="Prometheus Pushgateway for monitoring metrics (unset: none)."
    )
    # Serving
    service_port: int = 3000
    serving_run_dir: str = Field(
        default=str(PROJECT_ROOT / ".run" / "serving"),
        description="Machine-local state of the locally deployed service (which server is live, "
        "per-server homes, logs).",
    )
    max_batch_size: int = 1000
    max_request_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Largest request body the service reads."
    )
    prediction_log_uri: str | None = Field(
        default=None,
        description="Where the service ships its prediction-log chunks (a folder or fsspec URL, "
        "S3 included); unset: <artifacts>/prediction_logs, where monitoring reads them.",
    )
    prediction_log_enabled: bool = Field(
        default=True,
        description="Log every answered prediction (the shipping prediction log). Turn it off "
        "only to benchmark the log's cost (benchmarks/feedback.py `logging_rps_ratio`): with it "
        "off nothing is logged or shipped, so monitoring sees none of the service's traffic.",
    )
    log_flush_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often each service worker ships its queued prediction-log rows as one "
        "chunk: the most a hard kill (SIGKILL, OOM) can lose, and part of the delay from a "
        "request to its row in monitoring.",
    )
    serve_workers: int = Field(
        default=2,
        ge=1,
        description="Worker processes of the local service: 2 on this 2-core machine "
        "(benchmarks/serving.py, c8 over four runs: up to 1,540 req/s with 2 workers, 664-999 "
        "with 1). In Kubernetes 1 per pod (deployments/k8s/): the HPA adds pods.",
    )
    adaptive_batching: bool = Field(
        default=True,
        description="Micro-batch concurrent /predict calls (BentoML's dispatcher). On, chosen by "
        "benchmarks/serving.py over four runs: with 1 worker (a Kubernetes pod) c8 834-999 req/s "
        "on against 664-738 off; with 2 workers c8 p50 averages 8.3 ms on and 8.7 ms off, each "
        "run decided by where keep-alive connections land (all on one worker, or shared). "
        "Re-measure when the scorer changes.",
    )

    monitor_window_seconds: int = Field(
        default=3600,
        gt=0,
        description="Length of the time windows monitoring cuts served traffic into (drift, "
        "estimated and realised performance, label coverage and skew per window; windows are "
        "aligned on UTC).",
    )
    log_grace_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How late a prediction-log chunk may land after a later one and still be "
        "read exactly once: monitoring remembers the chunks it read within this time.",
    )
    skew_rows_per_chunk: int = Field(
        default=10,
        ge=0,
        description="Logged rows per chunk that monitoring re-scores offline with the registered "
        "model (the skew check); 0 turns the check off.",
    )
    skew_tolerance: float = Field(
        default=1e-6,
        gt=0,
        description="Largest difference between a logged and a re-scored probability that still "
        "counts as the same answer.",
    )
    history_store: str | None = Field(
        default=None,
        description="Where served encounters reach the patient-history store the service reads "
        "(`readmit.features.served_history`): sqlite:///<abs path> (one machine) or "
        "redis://host:port/db (many pods). Unset: an SQLite file in a local artifact store "
        "(history/served.sqlite), else in READMIT_SERVING_RUN_DIR.",
    )

    # Backup and restore (`readmit.ops.backup`).
    backup_uri: str | None = Field(
        default=None,
        description="Where snapshots go (a folder or s3://): unset = <artifacts>/backups. In "
        "production put them apart from the artifact store (another bucket), so losing one "
        "does not lose the other.",
    )
    backup_keep: int = Field(
        default=7, ge=1, description="Complete snapshots the backup flow keeps (newest first)."
    )
    prefect_database: SecretStr | None = Field(
        default=None,
        description="The Prefect server's database, for backup and restore: "
        "sqlite+aiosqlite:///<path> (online backup) or a postgresql+asyncpg:// URL with user, "
        "password, host, port and database "
        "(pg_dump / pg_restore). Unset: snapshots say loudly that it is not included.",
    )

    # Approval of promotions (`readmit.model.approval`, `flows/approval.py`).
    approval: str | None = Field(
        default=None,
        pattern="^(required|auto)$",
        description="'required': a challenger that passed the gate (retraining) or won its "
        "experiment (promotion) waits for a person to approve it in the Prefect UI (the paused "
        "run's Resume form: decision, reviewer, rationale). 'auto': approved by policy, and the "
        "audit log says so. Unset: required in production (READMIT_ENV), auto elsewhere.",
    )
    approval_timeout_s: int = Field(
        default=3600,
        ge=5,
        description="How long a promotion waits for a reviewer; no answer means the challenger "
        "is not promoted (it is archived with that reason) and the run completes.",
    )

    model_retention: int = Field(
        default=10,
        ge=1,
        description="Models kept in service stages; older ones (never production or its "
        "rollback target) are archived after each retraining or promotion, exported to the "
        "artifact store first (`readmit models retire`).",
    )

    # Production mode and where secrets come from (`readmit.secret_sources`).
    env: str = Field(
        default="development",
        pattern="^(development|production)$",
        description="'production' refuses to start on a public default secret (the pseudonym "
        "key's default, its former READMIT_HISTORY_SALT default, the signing key's default or "
        "its public key as READMIT_VERIFY_KEY) or one shorter than 16 "
        "characters, naming the variable and how to set it. 'development' (the default) keeps "
        "the public defaults working, so `make run` needs no configuration.",
    )
    pseudonym_key_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the pseudonym key, read from the "
        "Prefect API (PREFECT_API_URL) when the key is first used, instead of "
        "READMIT_PSEUDONYM_KEY (setting both is refused).",
    )
    # Signed models (`readmit.model.signing`).
    signing_key: SecretStr = Field(
        default=SecretStr("readmit-local-signing-key"),
        description="Secret that models are signed with when registered (Ed25519; the private "
        "key's 32-byte seed is sha256 of this string, so any strong string is a key: "
        "`openssl rand -hex 32`). Needed where models are registered or signed (the training "
        "worker, `readmit sign`). The local default is public: set a secret in production.",
    )
    signing_key_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the signing key, read when the key "
        "is first used, instead of READMIT_SIGNING_KEY (setting both is refused).",
    )
    verify_key: str | None = Field(
        default=None,
        description="Public key models must be signed with (Ed25519, 64 hex characters or "
        "base64; `readmit keys public` prints it). Lets a component that only loads models "
        "(the service, a scoring job) verify them without the signing key; unset, the public "
        "half of the signing key is trusted.",
    )
    _secret_values: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @field_validator("verify_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        """A public key in hex or base64, kept as hex; blank = unset."""
        if value is None or not value.strip():
            return None
        from readmit.model import signing

        return signing.parse_public_key(value)

    def model_post_init(self, context: object, /) -> None:
        """Refuse, at start, a secret with two sources or, in production, a public value."""
        from readmit import secret_sources

        secret_sources.check_settings(self)

    def secret_bytes(self, name: str) -> bytes:
        """A secret setting's value as bytes: from its env var, or from the Prefect Secret block
        its `<name>_block` setting names (read once per block, here; `readmit.secret_sources`).
        """
        from readmit import secret_sources

        block = getattr(self, secret_sources.block_setting(name), None)
        if not block:  # the setting itself: nothing to cache (a copy may change it)
            return secret_sources.resolve(self, name).encode()
        cached = f"{name}@{block}"
        if cached not in self._secret_values:  # a new dict: copies never share a write
            value = secret_sources.resolve(self, name).encode()
            self._secret_values = {**self._secret_values, cached: value}
        return self._secret_values[cached]

    @property
    def pseudonym_key_bytes(self) -> bytes:
        """The pseudonym key (`readmit.pseudonyms`): READMIT_PSEUDONYM_KEY or its block."""
        return self.secret_bytes("pseudonym_key")

    @property
    def signing_key_bytes(self) -> bytes:
        """The models' signing secret (`readmit.model.signing`): READMIT_SIGNING_KEY or its
        block."""
        return self.secret_bytes("signing_key")

    @property
    def history_store_uri(self) -> str:
        """The served-history store: the setting, else an SQLite file on this machine."""
        if self.history_store:
            return self.history_store
        if "://" not in self.artifacts_uri or self.artifacts_uri.startswith("file://"):
            return f"sqlite://{self.layout.served_history_file()}"
        return f"sqlite://{Path(self.serving_run_dir).resolve() / 'history.sqlite'}"

    @property
    def layout(self) -> StoreLayout:
        """Every path of the artifact store (`readmit.layout`)."""
        return StoreLayout(self.artifacts_uri)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process; call `get_settings.cache_clear()` in tests."""
    return Settings()
