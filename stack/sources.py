"""Put every model of a deployment into the model store before any worker starts.

Workers load only from the store (fetch, verify sha256, load offline), so ``up`` first makes sure the
store holds what the file names: starter packages and local folders are imported (an unchanged folder
maps to the revision it already has, so later runs copy nothing), a GGUF file is converted once, a
Hugging Face repo is mirrored (needs the internet; without it ``up`` stops here, before any child
starts), and a ``store:`` source must already be there. The answer is the revision each worker loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.errors import APIError
from stack.deployment import Deployment, ModelSpec
from stack.starters import STARTERS, StarterModelError, prepare

if TYPE_CHECKING:
    from model_registry.catalog import Catalog
    from model_registry.settings import ModelRegistrySettings


class SourceProblem(RuntimeError):
    """A model of the file cannot be put into the store; the message names the model and why."""


def ensure_in_store(deployment: Deployment) -> dict[str, str]:
    """``{model id: revision}`` for every model, importing what the store lacks (one store, opened once)."""
    from model_registry.catalog import Catalog
    from model_registry.settings import ModelRegistrySettings
    from model_registry.storage import open_storage

    settings = ModelRegistrySettings()
    store = open_storage(settings)
    try:
        store.check()
        catalog = Catalog(store)
        revisions: dict[str, str] = {}
        for model in deployment.models:
            print(f"  {model.id} ({model.source.kind})", flush=True)
            try:
                revisions[model.id] = _ensure(catalog, settings, model)
            except (APIError, StarterModelError, OSError, ValueError) as exc:
                raise SourceProblem(f"model {model.id!r} ({model.source.kind} source): {_text(exc)}") from exc
        return revisions
    finally:
        store.close()


def _ensure(catalog: Catalog, settings: ModelRegistrySettings, model: ModelSpec) -> str:
    from model_registry.sources.folder import import_folder
    from model_registry.sources.gguf import import_gguf

    source = model.source
    if source.starter is not None:
        starter = next(s for s in STARTERS if s.model_type == source.starter)
        return import_folder(catalog, model.id, prepare(starter), model.type).revision  # type: ignore[arg-type]
    if source.folder is not None:
        return import_folder(catalog, model.id, source.folder, model.type).revision  # type: ignore[arg-type]
    if source.gguf is not None:
        return import_gguf(catalog, model.id, source.gguf, model.type).revision  # type: ignore[arg-type]
    if source.store is not None:
        return catalog.resolve(model.id, source.store)
    return _mirror(catalog, settings, model)


def _mirror(catalog: Catalog, settings: ModelRegistrySettings, model: ModelSpec) -> str:
    """A Hugging Face repo at a revision; an already-complete revision is not downloaded again."""
    from model_registry.sources.hf import HubConfig, download_hf

    assert model.source.huggingface is not None
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    hub = HubConfig(endpoint=settings.hf_endpoint, token=token)
    try:
        manifest = download_hf(catalog, hub, model.source.huggingface.repo, model.source.huggingface.revision,
                               model.type)  # type: ignore[arg-type]
    except Exception as exc:  # the hub client raises many kinds (offline, 401, 404): all stop the start
        raise SourceProblem(f"model {model.id!r}: cannot mirror {model.source.huggingface.repo} from Hugging "
                            f"Face ({_text(exc)}); with no internet, import it elsewhere and use a 'store:' "
                            "source") from exc
    return manifest.revision


def _text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message.splitlines()[0]
