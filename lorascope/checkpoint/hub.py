"""Hugging Face Hub ids where a path is accepted: an id resolves to a folder of the local Hub cache.

``resolve("meta-llama/Llama-2-7b-hf", revision=None)`` returns the cache's snapshot folder of that repo,
holding only what lorascope reads: ``config.json``, and the weights the folder readers would pick
(``adapter_config.json`` with its adapter weights; else the first of ``FOLDER_WEIGHTS`` that the repo has,
with every shard its index names). Resolution goes through ``huggingface_hub``:

- a revision that is a commit hash, and whose files are all in the cache, needs no network at all;
- online, the repo's file list gives the commit and the files; ``snapshot_download`` fetches the missing
  ones (with its progress bars) and reuses what is cached;
- with ``HF_HUB_OFFLINE=1`` (or when the Hub cannot be reached) the cache alone is used, and a snapshot
  that lacks a needed file is refused with the names of the missing files.

A local path wins over an id that reads the same (``runs/adapter`` is both); ``hf://org/name`` asks for
the Hub explicitly. ``origin(path)`` reads the repo id and commit back from a snapshot path, for
summary.json. Nothing here reads tensors.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LorascopeError

HF_PREFIX = "hf://"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
NEEDS = ("weights", "config")  # what a command reads: tensors, or a model's config.json alone
CONNECTION_ERRORS = {
    "ConnectError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "TimeoutException",
    "Timeout",
    "OfflineModeIsEnabled",
    "ProxyError",
    "NetworkError",
}
_TRUE = {"1", "on", "yes", "true"}


class HubNotice(UserWarning):
    """Which reading of an input was used: a local path that is also a Hub id, or the cache when offline."""


@dataclass(frozen=True)
class Resolved:
    """Where an input was found.

    Attributes:
        path: a local file or folder (for a Hub id: the snapshot folder in the cache).
        repo_id: the Hub repo, when the input was resolved on the Hub.
        commit: the repo's commit (40 hex digits) the snapshot holds.
        note: one sentence saying which reading was used, where the input reads both as a local path and
            as a Hub id, or where the Hub could not be reached and the cache was used.
    """

    path: Path
    repo_id: str | None = None
    commit: str | None = None
    note: str | None = None


# A local file with one of these suffixes is a weights file, not a Hub repo id that happens to match it: no
# note.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf"})


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub model id, ``name`` or ``namespace/name`` (its validator)."""
    text = str(text)
    if not text or text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1:
        return False
    try:
        from huggingface_hub.utils import validate_repo_id
    except ImportError:
        return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", text) is not None and "--" not in text and ".." not in text
    try:
        validate_repo_id(text)
    except ValueError:  # HFValidationError subclasses ValueError
        return False
    return True


def resolve(
    spec: str | Path, revision: str | None = None, need: str = "weights", progress: bool = True
) -> Resolved:
    """A local path as it is, or a Hub id resolved to its snapshot folder in the local cache.

    Args:
        spec: a path, a Hub id (``org/name``), or ``hf://org/name`` (the Hub even when a local path reads the
            same).
        revision: a branch, tag or commit of the Hub repo (default: its main branch).
        need: 'weights' (config and weight files) or 'config' (config.json alone; an adapter repo's adapter
            files).
        progress: show huggingface_hub's download progress bars.

    Raises:
        LorascopeError: the path does not exist and is no Hub id; the repo, revision or a needed file cannot
            be found (online or in the cache); ``revision`` is given for a local path.
    """
    if need not in NEEDS:
        raise ValueError(f"need must be one of {NEEDS}, got {need!r}")
    text = str(spec)
    if text.startswith(HF_PREFIX):
        repo_id = text[len(HF_PREFIX) :].strip("/")
        if not looks_like_repo_id(repo_id):
            raise LorascopeError(
                f"{text} is not a Hub model id: expected hf://namespace/name (e.g. hf://gpt2 or "
                "hf://meta-llama/Llama-2-7b-hf)."
            )
        return _from_hub(repo_id, revision, need, progress)
    local = Path(text).expanduser()
    if local.exists():
        if revision is not None:
            raise LorascopeError(
                f"--revision {revision} applies to Hugging Face Hub ids, but {text} is a local path (used as "
                f"found). Leave --revision out, or write hf://{text} to read the Hub repo of that name."
            )
        note = None
        if looks_like_repo_id(text) and not (local.is_file() and local.suffix in WEIGHT_SUFFIXES):
            note = (
                f"{text}: read the local {'folder' if local.is_dir() else 'file'} {local.resolve()}, not the "
                f"Hugging Face Hub repo of the same name (write hf://{text} for the Hub)"
            )
        return Resolved(local, note=note)
    if not looks_like_repo_id(text):
        raise LorascopeError(f"{local} does not exist.")
    return _from_hub(text, revision, need, progress)


def origin(path: str | Path) -> dict[str, str] | None:
    """{'repo_id', 'commit'} of a path inside a Hub cache snapshot (…/models--org--name/snapshots/<commit>/…),
    else None. Read from the path itself, as huggingface_hub lays out its cache."""
    parts = Path(path).parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots" and COMMIT.match(parts[i + 2]):
            return {"repo_id": parts[i][len("models--") :].replace("--", "/"), "commit": parts[i + 2]}
    return None


# ---- which files a format needs ------------------------------------------------------------------------


def select_files(files: list[str], need: str, read_json: Callable[[str], Any], where: str) -> list[str]:
    """The files of a repo (paths relative to its root) that lorascope's readers open, in the readers' order.

    An adapter repo (``adapter_config.json``): that file and the first adapter weight file. Otherwise
    ``config.json`` where present, and (for 'weights', or a repo without a config) the matches of the first
    ``FOLDER_WEIGHTS`` pattern that matches, with every shard an index names (``read_json`` reads the index).

    Raises:
        LorascopeError: the repo has no file the readers would open.
    """
    from .store import FOLDER_WEIGHTS
    from .peft_config import CONFIG as ADAPTER_CONFIG
    from .peft_config import WEIGHT_FILES as ADAPTER_WEIGHTS

    root = sorted(f for f in files if "/" not in f)
    if ADAPTER_CONFIG in root:
        weights = [f for f in ADAPTER_WEIGHTS if f in root][:1]
        if not weights:
            raise LorascopeError(
                f"{where} has an {ADAPTER_CONFIG} but no adapter weights: expected one of "
                f"{', '.join(ADAPTER_WEIGHTS)} at the top of the repo."
            )
        return [ADAPTER_CONFIG, *weights]
    chosen = ["config.json"] if "config.json" in root else []
    if need == "config" and chosen:
        return chosen
    for pattern in FOLDER_WEIGHTS:
        hits = fnmatch.filter(root, pattern)
        if not hits:
            continue
        if pattern.endswith(".json"):
            return [*chosen, hits[0], *_shards(read_json(hits[0]), hits[0], where)]
        return [*chosen, *hits]
    shown = ", ".join(root[:8]) + (" …" if len(root) > 8 else "") if root else "no files at its top level"
    raise LorascopeError(
        f"{where} holds no weights lorascope reads: expected model.safetensors (or a sharded index), "
        "pytorch_model.bin, an adapter_config.json with adapter weights, or *.safetensors files; "
        f"found {shown}."
    )


def _shards(index: Any, name: str, where: str) -> list[str]:
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise LorascopeError(f"{where}/{name} has no 'weight_map' naming its shards.")
    return sorted({str(v) for v in weight_map.values()})


# ---- the cache and the Hub -----------------------------------------------------------------------------


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def cache_dir() -> Path:
    """The Hub cache folder as the environment sets it now: HF_HUB_CACHE, else HF_HOME/hub, else default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise LorascopeError(
            "reading a Hugging Face Hub id needs the huggingface_hub package: "
            "pip install huggingface_hub (or give a local path)."
        ) from None
    return huggingface_hub


def _from_hub(repo_id: str, revision: str | None, need: str, progress: bool) -> Resolved:
    where = f"the Hugging Face Hub repo {repo_id}" + (f" at revision {revision}" if revision else "")
    if offline():
        return _from_cache(repo_id, revision, need, where, "HF_HUB_OFFLINE is set")
    if revision is not None and COMMIT.match(revision):
        try:  # a commit never changes: a complete cached snapshot needs no network
            return _from_cache(repo_id, revision, need, where, None)
        except LorascopeError:
            pass
    try:
        return _download(repo_id, revision, need, where, progress)
    except Exception as exc:  # noqa: BLE001 - connection failures of any HTTP client fall back to the cache
        if not _is_connection_error(exc) and type(exc).__name__ != "HfHubHTTPError":
            raise
        reason = f"the Hub could not be reached ({_first_line(exc)})"
        found = _from_cache(repo_id, revision, need, where, reason)
        return Resolved(
            found.path,
            found.repo_id,
            found.commit,
            f"{repo_id}: {reason}; used the cached snapshot {found.commit}",
        )


def _is_connection_error(exc: BaseException) -> bool:
    return any(cls.__name__ in CONNECTION_ERRORS for cls in type(exc).__mro__) or isinstance(
        exc, ConnectionError
    )


def _from_cache(repo_id: str, revision: str | None, need: str, where: str, why: str | None) -> Resolved:
    """The snapshot of ``repo_id`` at ``revision`` in the cache, holding every file the readers need."""
    hint = (
        "Run once with network access (unset HF_HUB_OFFLINE), or fetch it with "
        f"`hf download {repo_id}{' --revision ' + revision if revision else ''}`, or give a local path."
    )
    folder, reason = snapshot_folder(repo_id, revision)
    if folder is None:
        raise LorascopeError(
            f"{where} is not in the local Hugging Face cache ({cache_dir()})"
            + (f" and {why}" if why else "")
            + f": {reason}. {hint}"
        )
    present = sorted(p.name for p in folder.iterdir())
    try:
        wanted = select_files(present, need, lambda name: _read_json(folder / name), where)
    except LorascopeError:
        raise LorascopeError(
            f"the cached snapshot of {where} ({folder}) holds no weight file lorascope reads (it has "
            f"{', '.join(present[:6]) or 'no files'})" + (f", and {why}" if why else "") + f". {hint}"
        ) from None
    missing = [f for f in wanted if not (folder / f).exists()]
    if missing:
        raise LorascopeError(
            f"the cached snapshot of {where} ({folder}) lacks {', '.join(missing[:6])}"
            + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
            + (f", and {why}" if why else "")
            + f". {hint}"
        )
    return Resolved(folder, repo_id, folder.name)


def snapshot_folder(repo_id: str, revision: str | None) -> tuple[Path | None, str]:
    """(the cache's snapshot folder of ``repo_id`` at ``revision``, or None with the reason), as
    huggingface_hub lays out its cache: ``models--org--name/refs/<branch or tag>`` holds the commit of
    ``models--org--name/snapshots/<commit>/``. Files are not checked here (the caller checks the ones it
    needs: ``snapshot_download(local_files_only=True)`` would ask for every file of a repo it once listed)."""
    _hub()
    from huggingface_hub.file_download import repo_folder_name

    storage = cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = revision or "main"
    if COMMIT.match(ref):
        commit = ref
    elif (storage / "refs" / ref).is_file():
        commit = (storage / "refs" / ref).read_text().strip()
    else:
        return None, f"no cached revision {ref!r} ({storage / 'refs' / ref} not found)"
    folder = storage / "snapshots" / commit
    if not folder.is_dir():
        return None, f"no cached snapshot of commit {commit} ({folder} not found)"
    return folder, ""


def _download(repo_id: str, revision: str | None, need: str, where: str, progress: bool) -> Resolved:
    """Ask the Hub for the commit and file list, then fetch only the files the readers need."""
    hub = _hub()
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cache = cache_dir()
    try:
        info = hub.HfApi().model_info(repo_id, revision=revision)
        files = [s.rfilename for s in info.siblings or []]

        def read_json(name: str) -> Any:
            return _read_json(Path(hub.hf_hub_download(repo_id, name, revision=info.sha, cache_dir=cache)))

        wanted = select_files(files, need, read_json, where)
        with _progress_bars(hub, progress):
            folder = hub.snapshot_download(repo_id, revision=info.sha, cache_dir=cache, allow_patterns=wanted)
    except GatedRepoError:
        raise LorascopeError(
            f"{where} is gated: accept its terms on its Hub page (https://huggingface.co/{repo_id}) "
            "and log in (`hf auth login`, or set HF_TOKEN)."
        ) from None
    except RevisionNotFoundError:
        raise LorascopeError(
            f"{where} has no revision {revision!r}: give a branch, tag or commit it has."
        ) from None
    except RepositoryNotFoundError:
        raise LorascopeError(
            f"{repo_id} is neither a local path nor a model on the Hugging Face Hub (a private repo needs a "
            "login: `hf auth login` or HF_TOKEN)."
        ) from None
    return Resolved(Path(folder), repo_id, info.sha)


@contextmanager
def _progress_bars(hub: Any, enabled: bool) -> Iterator[None]:
    if enabled:
        yield
        return
    was_disabled = hub.utils.are_progress_bars_disabled()
    hub.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            hub.utils.enable_progress_bars()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LorascopeError(f"{path} is not readable JSON ({exc}).") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
