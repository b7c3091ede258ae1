"""Every documented compose file combination validates, and the files say what users rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from tests.helpers.deploy_files import COMPOSE, ROOT, compose_config, rendered

COMBINATIONS = [
    ["docker-compose.yml"],
    ["docker-compose.gpu-cluster.yml"],
    ["docker-compose.yml", "docker-compose.gpu-cluster.yml"],
    ["docker-compose.yml", "docker-compose.chatui.yml"],
    ["docker-compose.gpu-cluster.yml", "docker-compose.chatui.yml"],
    ["docker-compose.yml", "docker-compose.gpu-cluster.yml", "docker-compose.chatui.yml"],
]


@pytest.mark.parametrize("files", COMBINATIONS, ids=lambda fs: "+".join(f.removesuffix(".yml") for f in fs))
def test_combination_validates(files):
    result = compose_config(files, "--quiet")
    assert result.returncode == 0, result.stderr


def test_gpu_cluster_pins_one_gpu_per_worker():
    """The GPU cluster file stands alone (rendered from its own deployment file), LLaVA on without a profile."""
    for files in (["docker-compose.gpu-cluster.yml"],):
        services = rendered(files, "transcription")["services"]
        gpus = {}
        for name in ("llm", "tinyllama", "multimodal", "embedding", "transcription"):
            devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
            assert devices[0]["driver"] == "nvidia"
            gpus[name] = devices[0]["device_ids"]
        assert gpus == {"llm": ["0"], "tinyllama": ["1"], "multimodal": ["2"], "embedding": ["3"],
                        "transcription": ["4"]}
        assert services["llm"]["environment"]["MODEL_NAME"] == "Qwen/Qwen2.5-0.5B-Instruct"
        assert "llm-primary" in services["llm"]["networks"]["default"]["aliases"]


def test_standard_stack_services_and_ports():
    services = rendered(["docker-compose.yml"])["services"]
    assert {"minio", "minio-init", "model-registry", "service-registry", "gateway", "llm", "tinyllama",
            "embedding"} <= set(services)
    published = {name: [p["published"] for p in s.get("ports", [])] for name, s in services.items()}
    assert published["gateway"] == ["8080"] and published["llm"] == ["8000"]
    assert published["embedding"] == ["8002"] and published["model-registry"] == ["8090"]
    # The platform uses the service account, never MinIO's root user.
    assert "MINIO_ROOT_PASSWORD" not in services["gateway"]["environment"]
    assert services["gateway"]["environment"]["GATEWAY_REGISTRY_URL"] == "http://service-registry:8070"


AUTH_VARIABLES = ("MODEL_SERVICE_AUTH", "MODEL_SERVICE_ADMIN_KEY", "MODEL_SERVICE_SERVICE_TOKEN")


@pytest.mark.parametrize("files", COMBINATIONS, ids=lambda fs: "+".join(f.removesuffix(".yml") for f in fs))
def test_every_platform_service_gets_the_api_keys(files):
    """Gateway, both registries and every worker (all profiles) get the same three auth variables."""
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    assert example["MODEL_SERVICE_AUTH"] == "true"  # on by default in the compose stacks
    assert all("change-me" in example[v] for v in AUTH_VARIABLES[1:])  # refused outside dev
    services = rendered(files, "multimodal", "transcription")["services"]
    platform = {name for name, s in services.items() if (s.get("command") or [""])[0] == "model-service"}
    assert {"gateway", "model-registry", "service-registry", "llm", "embedding", "multimodal",
            "transcription"} <= platform
    for name in platform:
        env = services[name]["environment"]
        assert {v: env.get(v) for v in AUTH_VARIABLES} == {v: example[v] for v in AUTH_VARIABLES}, name


def test_auth_is_on_even_without_its_env_line(tmp_path):
    env_file = tmp_path / "old.env"  # a .env copied before MODEL_SERVICE_AUTH existed
    env_file.write_text("".join(line for line in (ROOT / ".env.example").read_text().splitlines(keepends=True)
                                if not line.startswith("MODEL_SERVICE_AUTH=")))
    argv = [COMPOSE, "--project-directory", str(ROOT), "--env-file", str(env_file), "-f",
            str(ROOT / "docker-compose.yml"), "config", "--format", "json"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVICE_")}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["gateway"]["environment"]["MODEL_SERVICE_AUTH"] == "true"


def test_chatui_points_at_the_gateway():
    services = rendered(["docker-compose.yml", "docker-compose.chatui.yml"])["services"]
    assert services["chat-ui"]["image"].endswith(":" + CHATUI_VERSION)
    template = (ROOT / "chatui.env.template").read_text()
    assert "ENABLE_COMMUNITY_MODELS=false" in template and "PUBLIC_APP_NAME=" in template
    # Chat UI calls the gateway with a user key made for it, never the admin key or the service token.
    assert "model-service keys create --name chatui" in template
    assert re.search(r"^OPENAI_API_KEY=change-me", template, re.M)
    assert "MODEL_SERVICE_ADMIN_KEY" not in template and "MODEL_SERVICE_SERVICE_TOKEN" not in template
    models = json.loads(re.search(r"MODELS=`(.*?)`", template, re.S).group(1))
    assert all(m["endpoints"][0]["baseURL"] == "http://gateway:8080/v1" for m in models)
    assert [m["name"] for m in models if m.get("multimodal")] == ["llava-hf/llava-1.5-7b-hf"]
    # Plain-http use from another machine keeps its session (the release sets Secure cookies otherwise).
    assert re.search(r"^ALLOW_INSECURE_COOKIES=true$", template, re.M)


# What the pinned chat-ui release reads (huggingface/chat-ui at the tag CHATUI_VERSION):
#   variables: .env (the defaults file, every variable it reads) and src/hooks.server.ts (ALLOW_INSECURE_COOKIES)
#   a MODELS entry: src/lib/server/models.ts (modelConfig)
#   an openai endpoint: src/lib/server/endpoints/openai/endpointOai.ts (endpointOAIParametersSchema)
#   its multimodal.image: src/lib/server/endpoints/images.ts (createImageProcessorOptionsValidator)
CHATUI_VERSION = "0.9.4"
CHATUI_ENV = {"PUBLIC_APP_NAME", "PUBLIC_APP_DESCRIPTION", "PUBLIC_ORIGIN", "MONGODB_URL", "MONGODB_DB_NAME",
              "ENABLE_COMMUNITY_MODELS", "ALLOW_INSECURE_COOKIES", "OPENAI_API_KEY", "MODELS"}
CHATUI_MODEL = {"name", "id", "displayName", "description", "websiteUrl", "modelUrl", "logoUrl", "preprompt",
                "promptExamples", "parameters", "endpoints", "multimodal", "tools", "unlisted",
                "systemRoleSupported"}
CHATUI_PARAMETERS = {"temperature", "truncate", "max_new_tokens", "stop", "top_p", "top_k", "repetition_penalty"}
CHATUI_OPENAI_ENDPOINT = {"type", "weight", "baseURL", "apiKey", "completion", "defaultHeaders", "defaultQuery",
                          "extraBody", "multimodal"}
CHATUI_IMAGE = {"supportedMimeTypes", "preferredMimeType", "maxSizeInMB", "maxWidth", "maxHeight"}


def test_chatui_template_uses_only_fields_the_pinned_release_reads():
    """A misspelt or retired field is ignored by chat-ui without a word; this catches it here instead."""
    template = (ROOT / "chatui.env.template").read_text()
    assert set(re.findall(r"^([A-Z][A-Z0-9_]+)=", template, re.M)) <= CHATUI_ENV
    for model in json.loads(re.search(r"MODELS=`(.*?)`", template, re.S).group(1)):
        assert set(model) <= CHATUI_MODEL, model["name"]
        assert set(model["parameters"]) <= CHATUI_PARAMETERS, model["name"]
        for endpoint in model["endpoints"]:
            assert endpoint["type"] == "openai" and set(endpoint) <= CHATUI_OPENAI_ENDPOINT, model["name"]
            # The endpoint's multimodal option is what makes the release send image_url parts.
            assert ("multimodal" in endpoint) == bool(model.get("multimodal")), model["name"]
            assert set(endpoint.get("multimodal", {}).get("image", {})) <= CHATUI_IMAGE, model["name"]


def test_env_example_documents_every_variable():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    used = set()
    for f in ("docker-compose.yml", "docker-compose.gpu-cluster.yml", "docker-compose.chatui.yml"):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (ROOT / f).read_text()))
    missing = used - documented
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_yaml_files_parse():
    for f in ROOT.glob("docker-compose*.yml"):
        assert isinstance(yaml.safe_load(f.read_text().replace("!reset", "")), dict)
